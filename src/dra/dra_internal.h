/* Inside the dra module: the pure parts (devices and their JSON, claims,
 * the checkpoint), exposed for the unit tests. */
#ifndef GPULET_DRA_INTERNAL_H
#define GPULET_DRA_INTERNAL_H

#include <jansson.h>
#include <stdbool.h>
#include <stddef.h>
#include <time.h>

#include "dra.h"
#include "gpu/gpu.h"
#include "plugin/plugin.h"
#include "podresources/v1/api.pb-c.h"

#define DRA_NAME_MAX 64     /* a device name is a DNS label */
#define DRA_UID_MAX 64      /* a claim UID (36 characters) */
#define DRA_REQUEST_MAX 128 /* "request" or "request/subrequest" */
#define DRA_SLICE_DEVICES 128
#define DRA_MAX_CLAIMS 4096      /* prepared claims kept in the checkpoint */
#define DRA_CLAIM_DEVICES 64     /* devices per claim */
#define DRA_CHECKPOINT_MAX (8u << 20)

/* A device as published: a whole GPU (mig -1) or a MIG device. */
struct dra_device {
    char name[DRA_NAME_MAX];
    unsigned int gpu;      /* index in the inventory */
    int mig;               /* index in the GPU's migs, -1 for the GPU */
    bool healthy;
    /* dra.slices: claims share the GPU, each consuming part of its memory
     * (allowMultipleAllocations, DRAConsumableCapacity). */
    bool shared;
    /* dra.deviceTaints: the taint an unhealthy device is published with;
     * key "" while healthy. */
    char taint_key[64];
    char taint_value[32];
    char taint_time[32]; /* RFC 3339: when it became unhealthy */
};

/* The taint of a device made unhealthy for reason (the health checks'
 * words: "XID 79", "GPU is lost …"), as NVIDIA's driver keys them:
 * gpu.nvidia.com/xid=<XID>, gpu.nvidia.com/gpu-lost, else
 * gpu.nvidia.com/unhealthy; effect NoSchedule. reason NULL: healthy, no
 * taint. */
void dra_device_taint(struct dra_device *d, const char *reason, time_t when);

/* The requestPolicy of a shared GPU's memory: claims get whole GiB. */
#define DRA_MEMORY_STEP (1ULL << 30)

/* The devices of an inventory, in name order: GPUs not in MIG mode and
 * not lost, and the MIG devices of those in MIG mode; of the GPUs
 * devices_gpu_front gives DRA, all when cfg is NULL; shared as dra.slices
 * says. */
int dra_devices_build(const struct gpu_inventory *inv, const struct config *cfg,
                      struct dra_device **out, size_t *count, struct gpulet_error *err);
const struct dra_device *dra_device_find(const struct dra_device *devs, size_t count,
                                         const char *name);

/* The ResourceSlice device object of one device (new reference). sysfs:
 * where /sys is, for the PCIe root ("/sys" on a node). */
json_t *dra_device_json(const struct gpu_inventory *inv, const struct dra_device *d,
                        const char *sysfs);
/* The ResourceSlices of a pool: devices (an array, borrowed) cut in slices
 * of at most DRA_SLICE_DEVICES. Returns a new array of slice objects.
 * node_uid NULL or "": no owner reference. hash: a mark of the content,
 * kept as an annotation to tell a slice that needs no republishing. */
json_t *dra_slices_json(const char *node, const char *node_uid, long long generation,
                        json_t *devices, const char *hash);
/* Whether a device of a slice object has field: true, or a non-empty list
 * ("allowMultipleAllocations", "taints": what an API server without the
 * feature gate drops). */
bool dra_slice_has(json_t *slice, const char *field);

/* A short, stable hash (16 hex digits) of a JSON value's compact, sorted text. */
void dra_json_hash(json_t *value, char out[17]);

/* "80Gi", "4864Mi", "7": the canonical binary-suffix quantity of n. */
void dra_quantity(unsigned long long n, char *buf, size_t len);

/* One allocated device of a claim, for this driver. */
struct dra_result {
    char request[DRA_REQUEST_MAX];
    char device[DRA_NAME_MAX];
    unsigned long long memory; /* consumedCapacity.memory in bytes; 0: none (whole device) */
    /* NVIDIA's GpuConfig for it: whether a time slice is set on its GPU
     * (not on a MIG device) and which (interval: 0 Default .. 3 Long, as
     * nvidia-smi numbers them), and whether it is served by the claim's
     * MPS control daemon. All false (zeroed): nothing asked. */
    bool timeslice;
    unsigned char interval;
    bool mps;
};

/* sharing.mpsConfig of NVIDIA's GpuConfig / MigDeviceConfig (one MPS
 * control daemon per claim, these as its defaults). */
#define DRA_MPS_LIMITS 16 /* defaultPerDevicePinnedMemoryLimit entries */
struct dra_mps {
    bool on;
    int thread_percentage;   /* defaultActiveThreadPercentage 0..100; -1: not set */
    unsigned long long pinned; /* defaultPinnedDeviceMemoryLimit, bytes; 0: not set */
    size_t n_limits;
    struct {
        char device[DRA_NAME_MAX]; /* a UUID, or an index among the claim's GPUs */
        unsigned long long bytes;
    } limits[DRA_MPS_LIMITS];
};

/* One opaque GpuConfig or MigDeviceConfig (resource.nvidia.com/v1beta1),
 * as NVIDIA's driver reads it: unknown fields, a wrong interval, a
 * percentage out of 0..100 or a limit under 1 MiB fail with the reason. */
struct dra_gpu_config {
    bool mig;       /* MigDeviceConfig */
    int timeslice;  /* TimeSlicing: 0 Default .. 3 Long; -1: not TimeSlicing */
    struct dra_mps mps;
};
int dra_gpu_config_parse(json_t *params, struct dra_gpu_config *out, struct gpulet_error *err);

/* Applies the claim's opaque configs for this driver (status.allocation.
 * devices.config, in order: a later one wins for a request) to its
 * results; one MPS configuration a claim (its daemon's) into mps. */
int dra_sharing_apply(json_t *configs, struct dra_result *results, size_t count,
                      struct dra_mps *mps, struct gpulet_error *err);

/* A claim's MPS settings in the checkpoint, and back (-1: malformed). */
json_t *dra_mps_json(const struct dra_mps *mps);
int dra_mps_from_json(json_t *obj, struct dra_mps *out);

/* "1024M": an MPS pinned-memory limit as nvidia-cuda-mps-control takes it
 * (whole MiB). */
void dra_mps_megabytes(unsigned long long bytes, char *buf, size_t len);

/* The results of a ResourceClaim (JSON from the API server) for driver
 * DRA_DRIVER, with the memory each consumes of a shared GPU. Fails with a message fit for the kubelet's error field when
 * the claim is not the one asked (uid), not allocated, or allocated
 * devices of this driver in another pool than pool. */
int dra_claim_parse(const char *json, size_t len, const char *uid, const char *pool,
                    struct dra_result **out, size_t *count, struct dra_mps *mps,
                    struct gpulet_error *err);

/* A claim UID is a lower-case UUID: letters, digits and '-', at most 63. */
bool dra_uid_valid(const char *uid);

/* A prepared claim, as remembered in the checkpoint. */
struct dra_claim {
    char uid[DRA_UID_MAX];
    char namespace[DRA_NAME_MAX * 4];
    char name[DRA_NAME_MAX * 4];
    size_t count;
    struct dra_result *results;
    char alloc[24]; /* its slice folder <state dir>/dra/alloc/<alloc>, or "" */
    struct dra_mps mps; /* its MPS control daemon's settings, when on */
};

/* The checkpoint (<state dir>/dra-checkpoint.json): read and written whole. */
int dra_checkpoint_read(const char *path, struct dra_claim **out, size_t *count,
                        struct gpulet_error *err);
int dra_checkpoint_write(const char *path, const struct dra_claim *claims, size_t count,
                         struct gpulet_error *err);
void dra_claims_free(struct dra_claim *claims, size_t count);

/* What the slice metrics need of the driver: its devices, its prepared
 * claims and where their slice folders are. */
struct dra_claim_view {
    const struct gpu_inventory *inv;
    const struct dra_device *devs;
    size_t n_devs;
    const struct dra_claim *claims;
    size_t n_claims;
    const char *slice_dir; /* <state dir>/dra */
};
/* Per container of the pod-resources answer that names a prepared claim
 * with a slice folder (dynamic_resources: namespace and name), per GPU of
 * the claim: its limits and usage to fn, as the device plugin's slices. */
void dra_claim_limits(const struct dra_claim_view *v, const V1__ListPodResourcesResponse *resp,
                      void (*fn)(const struct metrics_limit *l, void *user), void *user);

/* "k8s.gpu.nvidia.com/claim=<uid>-<device>" */
void dra_cdi_id(const char *uid, const char *device, char *buf, size_t len);

#endif
