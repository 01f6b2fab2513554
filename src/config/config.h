/*
 * config: what the daemon is told to do, from NVIDIA's device plugin
 * configuration file (version v1, YAML or JSON), the environment and the
 * command line, with NVIDIA's precedence: command line, then environment,
 * then file, then defaults.
 *
 * config_load() validates everything and fails with a message that names
 * the file, line and key, or the flag / variable, so a bad configuration
 * is refused at start (exit 2) and a bad reload keeps the running one.
 */
#ifndef GPULET_CONFIG_H
#define GPULET_CONFIG_H

#include <stdbool.h>
#include <stddef.h>

#include "error/error.h"

enum mig_strategy { MIG_STRATEGY_NONE, MIG_STRATEGY_SINGLE, MIG_STRATEGY_MIXED };
enum device_id_strategy { DEVICE_ID_UUID, DEVICE_ID_INDEX };
/* SHARING_SLICES: a resource's devices are slices (sharing.slices). */
enum sharing_strategy { SHARING_NONE, SHARING_TIME_SLICING, SHARING_MPS, SHARING_SLICES };

/* deviceListStrategy: any combination */
enum {
    DEVICE_LIST_ENVVAR = 1 << 0,
    DEVICE_LIST_VOLUME_MOUNTS = 1 << 1,
    DEVICE_LIST_CDI_ANNOTATIONS = 1 << 2,
    DEVICE_LIST_CDI_CRI = 1 << 3,
};

#define CONFIG_NAME_MAX 64
#define CONFIG_MAX_SHARED 16
#define CONFIG_MAX_DEVICE_SELECTORS 64
#define CONFIG_MAX_NAMED 32
#define CONFIG_PATTERN_MAX 128
#define CONFIG_MAX_SLICES 1024 /* slices per GPU */
#define CONFIG_MAX_CONTEXT_BYTES (16ULL << 30) /* sharing.slices contextMemory */
#define CONFIG_DEFAULT_INTERPOSER "/usr/local/gpulet/lib/libgpulet-cuda.so"
#define CONFIG_DEFAULT_STATE_DIR "/var/lib/gpulet"

/* sharing.<strategy>.resources[], and gpulet's sharing.slices.resources[]:
 * GPUs cut into slices of memory and compute, each limit enforced in the
 * container by the CUDA interposer. */
struct shared_resource {
    char name[CONFIG_NAME_MAX]; /* nvidia.com/gpu, nvidia.com/mig-1g.5gb, ... */
    char rename[CONFIG_NAME_MAX];
    bool slices;                     /* from sharing.slices, else time-slicing / MPS */
    unsigned int replicas;           /* slices: 0 when cut by memory */
    unsigned long long slice_bytes;  /* slices: memory: 10Gi; 0 when cut by replicas */
    unsigned long long context_bytes; /* slices: contextMemory; 0: the interposer's default */
    unsigned long line, size_line, devices_line; /* in the file, for errors on this node */
    size_t index;                    /* in its section's resources list, for errors */
    bool all_devices;      /* devices: all (the default) */
    unsigned int count;    /* devices: N, the first N; 0 when not given */
    size_t selector_count; /* devices: [0, "1:0", GPU-..., MIG-...] */
    char selectors[CONFIG_MAX_DEVICE_SELECTORS][96];
};

/* resources.gpus[] / resources.mig[]: a GPU whose product name (or a MIG
 * device whose profile) matches the glob pattern is advertised as name. */
struct named_resource {
    char pattern[CONFIG_PATTERN_MAX];
    char name[CONFIG_NAME_MAX]; /* nvidia.com/v100 */
    unsigned long line;         /* in the file, for the warning when it matches nothing */
};

struct config {
    char file[4096]; /* the config file read, or "" */
    enum mig_strategy mig_strategy;
    bool fail_on_init_error;
    char driver_root[4096];
    bool pass_device_specs;
    unsigned int device_list_strategies;
    enum device_id_strategy device_id_strategy;
    enum sharing_strategy sharing;
    bool rename_by_default;
    bool fail_requests_greater_than_one;
    bool replicas_packed; /* gpulet's own: pack replicas onto busy GPUs */
    bool short_labels;    /* gpulet's own: also nvidia.com/gpu.model=V100 and the like */
    char cuda_interposer[4096]; /* host path of libgpulet-cuda.so, mounted into sliced containers */
    char state_dir[4096];       /* gpulet's host state: alloc/<id> per sliced container */
    bool dra_enabled;           /* gpulet's own: dra.enabled, serve as a DRA driver */
    /* dra.gpus: the GPUs (indexes or UUIDs) DRA offers while the device
     * plugin offers the others; unset: DRA offers every GPU. */
    bool dra_gpus_set;
    size_t dra_gpu_count;
    char dra_gpus[CONFIG_MAX_DEVICE_SELECTORS][96];
    /* dra.slices: DRA's GPUs shared by memory, claims consuming part of it
     * (DRAConsumableCapacity), each held to it by the CUDA interposer. */
    size_t dra_slice_count;
    char dra_slices[CONFIG_MAX_DEVICE_SELECTORS][96];
    /* dra.deviceTaints: an unhealthy device stays in the ResourceSlice
     * with a taint (DRADeviceTaints) instead of leaving it. */
    bool dra_device_taints;
    size_t gpu_name_count, mig_name_count;
    struct named_resource gpu_names[CONFIG_MAX_NAMED];
    struct named_resource mig_names[CONFIG_MAX_NAMED];
    size_t shared_count;
    struct shared_resource shared[CONFIG_MAX_SHARED];
};

/* Values given on the command line; NULL = not given. */
struct config_flags {
    const char *config_file;
    const char *mig_strategy;
    const char *fail_on_init_error;
    const char *driver_root;
    const char *pass_device_specs;
    const char *device_list_strategy;
    const char *device_id_strategy;
    const char *replica_policy;
    const char *short_labels;
    const char *cuda_interposer;
    const char *state_dir;
    /* Not a flag: the state folder when no flag, variable or file names
     * one; NULL for CONFIG_DEFAULT_STATE_DIR (--simulate gives its own). */
    const char *default_state_dir;
};

/* getenv, or a stand-in for tests. */
typedef const char *(*config_getenv_fn)(const char *name);
/* The process environment, as a config_getenv_fn. */
const char *config_process_env(const char *name);

int config_load(const struct config_flags *flags, config_getenv_fn getenv_fn, struct config *out,
                struct gpulet_error *err);

void config_defaults(struct config *cfg);
const char *config_mig_strategy_name(enum mig_strategy s);
const char *config_sharing_name(enum sharing_strategy s);

/* The resource a whole GPU with this product name (NVML's) is advertised
 * under: the first resources.gpus[] pattern it matches, else
 * nvidia.com/gpu. The same for a MIG profile ("1g.5gb") and
 * resources.mig[], else nvidia.com/mig-<profile> ('+' becoming '.'). */
const char *config_gpu_resource(const struct config *cfg, const char *product);
void config_mig_resource(const struct config *cfg, const char *profile, char *buf, size_t len);

/* The time-slicing / MPS entry that applies to a resource name, or NULL. */
const struct shared_resource *config_shared_for(const struct config *cfg, const char *resource);

/* Whether a sharing entry's devices select a whole GPU: position is its
 * place among the GPUs of the entry's resource (for "devices: N"). */
bool config_selects_gpu(const struct shared_resource *s, size_t position, unsigned int index,
                        const char *uuid);

/* Whether DRA offers this GPU: dra.gpus lists it, or there is no list.
 * The device plugin leaves out what DRA offers while DRA is on. */
bool config_dra_gpu(const struct config *cfg, unsigned int index, const char *uuid);
/* Whether DRA shares this GPU by memory: dra.slices lists it. */
bool config_dra_slice(const struct config *cfg, unsigned int index, const char *uuid);

/* "10Gi", "512Mi", "1T", "1048576" -> bytes; -1 when not a size. */
int config_parse_size(const char *text, unsigned long long *out);

#endif
