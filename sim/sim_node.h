/*
 * sim_node: the description of a simulated GPU node and its changing state.
 *
 * A node file (YAML, sim/nodes/NAME.yaml, named by GPULET_SIM_NODE) gives the
 * fixed facts of a machine: driver, GPUs, MIG devices, PCIe and NVLink
 * topology, and the baselines the moving values swing around. A state file
 * (GPULET_SIM_STATE, optional) overrides values while a program runs,
 * injects events and makes GPUs fall off the bus; the simulated library
 * rereads it whenever it changes. docs/simulator.md describes both formats.
 */
#ifndef GPULET_SIM_NODE_H
#define GPULET_SIM_NODE_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "error/error.h"

#define SIM_MAX_GPUS 64
#define SIM_MAX_MIGS 8
#define SIM_MAX_LINKS 18
#define SIM_MAX_SWITCHES 8

struct sim_mig {
    char uuid[96];
    unsigned int gpu_instance_id, compute_instance_id;
    unsigned int slices, ci_slices;
    unsigned long long memory_mib;
    unsigned int multiprocessors;
    unsigned int copy_engines, decoders, encoders, jpegs, ofas;
};

struct sim_gpu {
    char name[96];
    char uuid[96];
    char serial[32];
    char pci_bus_id[32];
    unsigned int minor;
    unsigned int pci_device_id, pci_subsystem_id; /* device << 16 | vendor, as NVML gives them */
    unsigned int pci_class;        /* class << 16 | subclass << 8 | prog-if, as sysfs shows it */
    int numa_node; /* -1: NVML answers NOT_SUPPORTED */
    int fan_speed_pct; /* -1: no fan of its own (NOT_SUPPORTED), as on passive boards */
    unsigned long long memory_mib, memory_reserved_mib;
    int cc_major, cc_minor;
    unsigned int multiprocessors;
    bool mig_capable, mig_enabled;
    bool gpm;
    bool ecc;
    bool nvswitch; /* has NVLinks to an NVSwitch (topology.nvswitch_links) */
    char vbios_version[32];
    /* A vGPU guest's GPU: the host driver's version and branch, which its
     * PCI config space carries in NVIDIA's vendor capability; "" when not
     * a vGPU. */
    char vgpu_host_driver_version[11], vgpu_host_driver_branch[11];
    unsigned int power_limit_w, idle_power_w;
    unsigned int max_sm_clock_mhz, mem_clock_mhz;
    /* Baselines the moving values swing around. */
    unsigned int utilization_pct;
    unsigned int temperature_c;
    unsigned long long memory_used_mib;
    size_t mig_count;
    struct sim_mig migs[SIM_MAX_MIGS];
    /* Filled from the topology: the far end of each NVLink. */
    unsigned int link_count;
    char link_remote[SIM_MAX_LINKS][32];
};

struct sim_node {
    char name[64];
    char machine[96];
    bool driver_loaded;
    char driver_version[80];
    char nvml_version[80];
    int cuda_driver_version;
    unsigned long long context_mib; /* device memory a CUDA context holds */
    /* fabric: the multi-node NVLink domain (GB200 NVL72, GH200 NVL32) the
     * fabric manager put the NVSwitch-attached GPUs in; all zero, as on a
     * single HGX board, when the node file names none. */
    unsigned char fabric_cluster_uuid[16];
    unsigned int fabric_clique_id;
    size_t gpu_count;
    struct sim_gpu gpus[SIM_MAX_GPUS];
    int pcie_level[SIM_MAX_GPUS][SIM_MAX_GPUS];
    unsigned int nvlinks[SIM_MAX_GPUS][SIM_MAX_GPUS]; /* direct GPU-to-GPU links */
};

/* What the state file may set for one GPU; `has` marks each field given. */
enum sim_override {
    SIM_SET_TEMPERATURE,
    SIM_SET_MEMORY_TEMPERATURE,
    SIM_SET_UTILIZATION,
    SIM_SET_MEMORY_UTILIZATION,
    SIM_SET_MEMORY_USED,
    SIM_SET_POWER,
    SIM_SET_SM_CLOCK,
    SIM_SET_MEM_CLOCK,
    SIM_SET_ENCODER,
    SIM_SET_DECODER,
    SIM_SET_PCIE_REPLAYS,
    SIM_SET_REMAPPED_CORRECTABLE,
    SIM_SET_REMAPPED_UNCORRECTABLE,
    SIM_SET_REMAPPED_PENDING,
    SIM_SET_REMAPPED_FAILURE,
    SIM_SET_CLOCK_EVENT_REASONS,
    SIM_OVERRIDE_COUNT
};

#define SIM_MAX_PROCESSES 128 /* more than gpulet keeps a series for (64) */

struct sim_process {
    unsigned int pid;
    unsigned long long used_mib;
    int mig; /* index of the MIG device it runs on, -1 for the whole GPU */
};

struct sim_gpu_state {
    bool lost;
    bool has[SIM_OVERRIDE_COUNT];
    unsigned long long value[SIM_OVERRIDE_COUNT];
    size_t process_count;
    struct sim_process processes[SIM_MAX_PROCESSES];
};

struct sim_event {
    unsigned int gpu;
    unsigned long long type;   /* nvmlEventType* */
    unsigned long long data;   /* the XID */
    unsigned int gpu_instance_id, compute_instance_id; /* 0xFFFFFFFF: none */
};

#define SIM_MAX_EVENTS 256

struct sim_state {
    bool frozen;          /* time stands at frozen_seconds */
    double frozen_seconds;
    struct sim_gpu_state gpus[SIM_MAX_GPUS];
    size_t event_count;
    struct sim_event events[SIM_MAX_EVENTS];
};

/* Loads a node file. The node's name is its `name:` or the file's base name. */
int sim_node_load(const char *path, struct sim_node *node, struct gpulet_error *err);
int sim_node_parse(const char *name, const char *text, size_t len, struct sim_node *node,
                   struct gpulet_error *err);

/* Loads a state file for node; an absent file is an empty state. */
int sim_state_load(const char *path, const struct sim_node *node, struct sim_state *state,
                   struct gpulet_error *err);
int sim_state_parse(const char *name, const char *text, size_t len, const struct sim_node *node,
                    struct sim_state *state, struct gpulet_error *err);

#endif
