/*
 * nvml: the only module that talks to the NVIDIA driver's management
 * library. Everything else in gpulet reads NVML through these functions.
 *
 * nvml_open() finds libnvidia-ml.so.1 (an explicit path, then the driver
 * root's library folders, then the dynamic loader), loads it with dlopen,
 * binds the newest version of each symbol it has (falling back to older
 * ones; an optional symbol that is absent makes its wrapper answer
 * NOT_SUPPORTED) and initialises it.
 *
 * Every wrapper returns 0 on success, -1 on failure with `err->kind` =
 * GPULET_ERR_NVML, `err->nvml` = the NVML return code and a message naming
 * the call, the device and what to do. NOT_SUPPORTED is an ordinary answer
 * for a field a GPU lacks: test for it with nvml_unsupported(err).
 */
#ifndef GPULET_NVML_H
#define GPULET_NVML_H

#include <stdbool.h>
#include <stddef.h>

#include "error/error.h"
#include "nvml/nvml_abi.h"

#define NVML_LIBRARY_NAME "libnvidia-ml.so.1"

struct nvml_options {
    const char *library_path; /* --nvml-lib: use exactly this file */
    const char *driver_root;  /* --driver-root / NVIDIA_DRIVER_ROOT, may be NULL */
};

struct nvml;

/* A device as the wrappers see it: the handle, and how to name it. */
struct nvml_device {
    nvmlDevice_t handle;
    unsigned int gpu; /* index of the GPU (the parent, for a MIG device) */
    int mig;          /* index of the MIG device on that GPU, or -1 */
};

struct nvml_memory {
    unsigned long long total, reserved, free, used; /* bytes */
};

int nvml_open(const struct nvml_options *opts, struct nvml **out, struct gpulet_error *err);
void nvml_close(struct nvml *nvml);

/* The file the library was loaded from. */
const char *nvml_library(const struct nvml *nvml);
/* The simulated node's name when the library is gpulet's simulator, else NULL. */
const char *nvml_simulated_node(const struct nvml *nvml);
/* The simulated node's machine (DMI product) name, or NULL. */
const char *nvml_simulated_machine(const struct nvml *nvml);
/* Where the GPUs' sysfs files are: "/sys" for a real driver, the folder
 * the simulator made for a simulated node (made on the first call); NULL
 * when there is none. */
const char *nvml_sysfs_root(struct nvml *nvml);

/* True when err holds an NVML NOT_SUPPORTED answer (or an absent symbol). */
bool nvml_unsupported(const struct gpulet_error *err);
/* True when err says the GPU fell off the bus. */
bool nvml_gpu_lost(const struct gpulet_error *err);

/* The search order for the library, written into buf for messages and docs. */
void nvml_describe_search(const struct nvml_options *opts, char *buf, size_t len);

int nvml_system_driver_version(struct nvml *n, char *buf, unsigned int len, struct gpulet_error *err);
int nvml_system_nvml_version(struct nvml *n, char *buf, unsigned int len, struct gpulet_error *err);
int nvml_system_cuda_driver_version(struct nvml *n, int *version, struct gpulet_error *err);

int nvml_device_count(struct nvml *n, unsigned int *count, struct gpulet_error *err);
int nvml_device_by_index(struct nvml *n, unsigned int index, struct nvml_device *out,
                         struct gpulet_error *err);
int nvml_device_name(struct nvml *n, const struct nvml_device *d, char *buf, unsigned int len,
                     struct gpulet_error *err);
int nvml_device_uuid(struct nvml *n, const struct nvml_device *d, char *buf, unsigned int len,
                     struct gpulet_error *err);
int nvml_device_serial(struct nvml *n, const struct nvml_device *d, char *buf, unsigned int len,
                       struct gpulet_error *err);
int nvml_device_minor(struct nvml *n, const struct nvml_device *d, unsigned int *minor,
                      struct gpulet_error *err);
int nvml_device_pci(struct nvml *n, const struct nvml_device *d, nvmlPciInfo_t *pci,
                    struct gpulet_error *err);
int nvml_device_memory(struct nvml *n, const struct nvml_device *d, struct nvml_memory *mem,
                       struct gpulet_error *err);
int nvml_device_compute_capability(struct nvml *n, const struct nvml_device *d, int *major,
                                   int *minor, struct gpulet_error *err);
int nvml_device_numa_node(struct nvml *n, const struct nvml_device *d, unsigned int *node,
                          struct gpulet_error *err);
int nvml_device_utilization(struct nvml *n, const struct nvml_device *d, nvmlUtilization_t *util,
                            struct gpulet_error *err);
int nvml_device_temperature(struct nvml *n, const struct nvml_device *d, unsigned int *celsius,
                            struct gpulet_error *err);
int nvml_device_power_usage(struct nvml *n, const struct nvml_device *d, unsigned int *milliwatts,
                            struct gpulet_error *err);
int nvml_device_power_limit(struct nvml *n, const struct nvml_device *d, unsigned int *milliwatts,
                            struct gpulet_error *err);
int nvml_device_power_management_limit(struct nvml *n, const struct nvml_device *d,
                                       unsigned int *milliwatts, struct gpulet_error *err);
int nvml_device_power_default_limit(struct nvml *n, const struct nvml_device *d,
                                    unsigned int *milliwatts, struct gpulet_error *err);
int nvml_device_power_limit_range(struct nvml *n, const struct nvml_device *d, unsigned int *min_mw,
                                  unsigned int *max_mw, struct gpulet_error *err);
/* 0-15 for P0-P15; NVML_PSTATE_UNKNOWN (32) when the driver does not know */
int nvml_device_pstate(struct nvml *n, const struct nvml_device *d, int *pstate,
                       struct gpulet_error *err);
int nvml_device_fan_speed(struct nvml *n, const struct nvml_device *d, unsigned int *pct,
                          struct gpulet_error *err);
int nvml_device_max_clock(struct nvml *n, const struct nvml_device *d, int type, unsigned int *mhz,
                          struct gpulet_error *err);
int nvml_device_compute_mode(struct nvml *n, const struct nvml_device *d, int *mode,
                             struct gpulet_error *err);
int nvml_device_energy(struct nvml *n, const struct nvml_device *d, unsigned long long *millijoules,
                       struct gpulet_error *err);
int nvml_device_clock(struct nvml *n, const struct nvml_device *d, int type, unsigned int *mhz,
                      struct gpulet_error *err);
int nvml_device_pcie_replays(struct nvml *n, const struct nvml_device *d, unsigned int *count,
                             struct gpulet_error *err);
int nvml_device_encoder_utilization(struct nvml *n, const struct nvml_device *d, unsigned int *pct,
                                    struct gpulet_error *err);
int nvml_device_decoder_utilization(struct nvml *n, const struct nvml_device *d, unsigned int *pct,
                                    struct gpulet_error *err);
/* Fills values[i].nvmlReturn per field; fails only when the call as a whole does. */
int nvml_device_field_values(struct nvml *n, const struct nvml_device *d, int count,
                             nvmlFieldValue_t *values, struct gpulet_error *err);
int nvml_device_remapped_rows(struct nvml *n, const struct nvml_device *d, unsigned int *corr,
                              unsigned int *unc, unsigned int *pending, unsigned int *failed,
                              struct gpulet_error *err);
int nvml_device_clock_event_reasons(struct nvml *n, const struct nvml_device *d,
                                    unsigned long long *reasons, struct gpulet_error *err);
/* *count in: capacity of infos; out: processes found. */
int nvml_device_compute_processes(struct nvml *n, const struct nvml_device *d, unsigned int *count,
                                  nvmlProcessInfo_t *infos, struct gpulet_error *err);
int nvml_device_common_ancestor(struct nvml *n, const struct nvml_device *a,
                                const struct nvml_device *b, int *level, struct gpulet_error *err);
int nvml_device_nvlink_active(struct nvml *n, const struct nvml_device *d, unsigned int link,
                              bool *active, struct gpulet_error *err);
int nvml_device_nvlink_remote_pci(struct nvml *n, const struct nvml_device *d, unsigned int link,
                                  nvmlPciInfo_t *pci, struct gpulet_error *err);
int nvml_device_mig_mode(struct nvml *n, const struct nvml_device *d, unsigned int *current,
                         unsigned int *pending, struct gpulet_error *err);
int nvml_device_max_mig_count(struct nvml *n, const struct nvml_device *d, unsigned int *count,
                              struct gpulet_error *err);
/* NOT_FOUND is the answer for an empty slot: MIG indexes need not be dense. */
int nvml_device_mig_by_index(struct nvml *n, const struct nvml_device *parent, unsigned int index,
                             struct nvml_device *out, struct gpulet_error *err);
int nvml_device_gpu_instance_id(struct nvml *n, const struct nvml_device *mig, unsigned int *id,
                                struct gpulet_error *err);
int nvml_device_compute_instance_id(struct nvml *n, const struct nvml_device *mig,
                                    unsigned int *id, struct gpulet_error *err);
int nvml_device_attributes(struct nvml *n, const struct nvml_device *mig,
                           nvmlDeviceAttributes_t *attr, struct gpulet_error *err);

int nvml_event_set_create(struct nvml *n, nvmlEventSet_t *set, struct gpulet_error *err);
int nvml_device_supported_events(struct nvml *n, const struct nvml_device *d,
                                 unsigned long long *types, struct gpulet_error *err);
int nvml_device_register_events(struct nvml *n, const struct nvml_device *d,
                                unsigned long long types, nvmlEventSet_t set,
                                struct gpulet_error *err);
/* TIMEOUT (err->nvml) when no event came within timeout_ms. */
int nvml_event_wait(struct nvml *n, nvmlEventSet_t set, nvmlEventData_t *data,
                    unsigned int timeout_ms, struct gpulet_error *err);
void nvml_event_set_free(struct nvml *n, nvmlEventSet_t set);

int nvml_device_gpm_supported(struct nvml *n, const struct nvml_device *d, bool *supported,
                              struct gpulet_error *err);
int nvml_gpm_sample_alloc(struct nvml *n, nvmlGpmSample_t *sample, struct gpulet_error *err);
void nvml_gpm_sample_free(struct nvml *n, nvmlGpmSample_t sample);
int nvml_device_gpm_sample(struct nvml *n, const struct nvml_device *d, nvmlGpmSample_t sample,
                           struct gpulet_error *err);
int nvml_gpm_metrics(struct nvml *n, const struct nvml_device *d, nvmlGpmMetricsGet_t *metrics,
                     struct gpulet_error *err);
/* A GPM sample of one MIG GPU instance: `gpu` is the parent GPU. */
int nvml_device_gpm_mig_sample(struct nvml *n, const struct nvml_device *gpu,
                               unsigned int gpu_instance_id, nvmlGpmSample_t sample,
                               struct gpulet_error *err);

/* The clock event reasons the GPU can report (a mask of the same bits). */
int nvml_device_supported_clock_event_reasons(struct nvml *n, const struct nvml_device *d,
                                              unsigned long long *reasons,
                                              struct gpulet_error *err);
int nvml_device_vbios_version(struct nvml *n, const struct nvml_device *d, char *buf,
                              unsigned int len, struct gpulet_error *err);
/* The NVLink fabric a GPU is registered in. state: NVML_GPU_FABRIC_STATE_*
 * (0 not supported, 1 not started, 2 in progress, 3 completed); status:
 * the registration's result, meaningful once completed; cluster_uuid and
 * clique_id: the fabric manager's ids (all zero where the GPU is in no
 * multi-node NVLink domain). */
struct nvml_fabric {
    unsigned int state;
    nvmlReturn_t status;
    unsigned char cluster_uuid[NVML_GPU_FABRIC_UUID_LEN];
    unsigned int clique_id;
};
int nvml_device_fabric(struct nvml *n, const struct nvml_device *d, struct nvml_fabric *out,
                       struct gpulet_error *err);

#endif
