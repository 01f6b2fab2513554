/*
 * gpu: the node's GPU inventory, one immutable snapshot that every other
 * module reads instead of asking NVML itself.
 *
 * gpu_inventory_load() asks NVML (through src/nvml/) for the driver, every
 * GPU, its MIG devices and the pairwise topology, and returns a snapshot
 * owned by the caller (gpu_inventory_free). A GPU that has fallen off the
 * bus stays in the snapshot with `lost` set and what could be read of it,
 * so one bad GPU never hides the others. gpu_inventory_to_json() gives the
 * whole snapshot as the JSON `gpulet info --json` prints.
 */
#ifndef GPULET_GPU_H
#define GPULET_GPU_H

#include <stdbool.h>
#include <stddef.h>

#include <jansson.h>

#include "error/error.h"
#include "nvml/nvml.h"

struct gpu_mig_device {
    unsigned int index;            /* NVML MIG device index on its GPU */
    char uuid[96];
    unsigned int gpu_instance_id;
    unsigned int compute_instance_id;
    char profile[32];              /* e.g. "1g.10gb" */
    unsigned long long memory_mib;
    unsigned int multiprocessors;
    unsigned int gi_slices, ci_slices;
    unsigned int copy_engines, decoders, encoders, jpegs, ofas;
    int gi_profile_id;             /* NVML GPU instance profile id; -1 when unknown */
    int placement_start;           /* first memory slice of its GPU instance */
    unsigned int placement_size;   /* memory slices of its GPU instance */
};

struct gpu_device {
    unsigned int index;
    unsigned int minor;            /* /dev/nvidia<minor> */
    bool lost;                     /* fell off the bus: only index is sure */
    char uuid[96];
    char name[96];
    char serial[32];
    char brand[24];                /* "Nvidia", "Tesla", … as NVIDIA's DRA driver spells NVML's */
    char addressing_mode[8];       /* "HMM", "ATS", "None"; "" where the platform has none */
    char pci_bus_id[32];           /* NVML's form, "00000000:07:00.0" */
    unsigned int pci_device_id;
    unsigned int pci_class;        /* from sysfs, 0x0302 3D controller; 0 when unknown */
    int numa_node;                 /* -1 when unknown */
    unsigned long long memory_total_bytes;
    unsigned long long memory_reserved_bytes; /* the driver's own; 0 when NVML cannot say */
    int cc_major, cc_minor;        /* compute capability; -1 when unknown */
    bool mig_capable;
    bool mig_enabled;
    bool mig_pending_enabled;
    /* "<cluster uuid>.<clique id>" of the multi-node NVLink domain the
     * fabric manager registered the GPU in; "" when it is in none (no
     * NVSwitch fabric, registration not done or failed, or the all-zero
     * cluster UUID a single HGX board reports). */
    char fabric_clique[64];
    /* A vGPU guest's GPU (NVIDIA's vendor capability in its PCI config
     * space): the host driver's version and branch, "" when not said. */
    bool vgpu;
    char vgpu_host_driver_version[16], vgpu_host_driver_branch[16];
    size_t mig_count;
    struct gpu_mig_device *migs;
};

/* PCIe relation and NVLink count of one pair of GPUs. */
struct gpu_link {
    int pcie_level;                /* NVML_TOPOLOGY_*, -1 when unknown */
    unsigned int nvlinks;
};

struct gpu_inventory {
    char driver_version[80];
    char nvml_version[80];
    int cuda_driver_version;       /* 12040 = 12.4; 0 when unknown */
    char simulated_node[256];      /* empty unless the simulator answered */
    char machine[96];              /* DMI product name ("DGX A100"), "" when unknown */
    size_t gpu_count;
    struct gpu_device *gpus;
    struct gpu_link *links;        /* gpu_count × gpu_count, row-major */
};

int gpu_inventory_load(struct nvml *nvml, struct gpu_inventory **out, struct gpulet_error *err);
void gpu_inventory_free(struct gpu_inventory *inv);

/* What GPU slices are cut from: the memory the driver can hand out, the
 * total less what it reserves for itself (docs/sharing.md). */
unsigned long long gpu_slice_memory(const struct gpu_device *g);

const struct gpu_link *gpu_inventory_link(const struct gpu_inventory *inv, size_t a, size_t b);

/* "NV12", "PIX", "PXB", "PHB", "NODE", "SYS", "BRD"; "X" on the diagonal. */
const char *gpu_link_label(const struct gpu_link *link, char *buf, size_t len);
/* "SINGLE" etc., the NVML level's short name, or "UNKNOWN". */
const char *gpu_pcie_level_name(int level);

/* New reference; NULL only when out of memory. */
json_t *gpu_inventory_to_json(const struct gpu_inventory *inv);

/* The driver's control device nodes every GPU container gets beside its
 * GPUs' (those present on the node), NULL-terminated: one list for the
 * CDI spec and the device plugin's device specs. */
extern const char *const gpu_control_nodes[];

/* The device nodes a MIG device needs besides its GPU's: its GPU and
 * compute instance capabilities, /dev/nvidia-caps/nvidia-cap<N>, numbered
 * as <driver_root>/proc/driver/nvidia-caps/mig-minors says. Writes up to
 * two paths (without the root) and returns how many it found. */
size_t gpu_mig_cap_nodes(const char *driver_root, unsigned int gpu_minor, unsigned int gi,
                         unsigned int ci, char paths[2][64]);

/* The name of an NVML brand (nvmlBrandType_t), "Unknown" for others. */
const char *gpu_brand_name(int brand);

/* "<slices>g.<ceil(memory_mib/1024)>gb", as NVIDIA names MIG profiles. */
void gpu_mig_profile_name(unsigned int slices, unsigned long long memory_mib, char *buf,
                          size_t len);

#endif
