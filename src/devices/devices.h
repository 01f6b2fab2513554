/*
 * devices: the node's device model, whatever protocol offers it.
 *
 * From the GPU inventory and the configuration it builds the catalog: pools
 * of devices (nvidia.com/gpu, nvidia.com/mig-<profile>, names by model,
 * time-shared replicas, GPU slices), each device tied to its GPU or MIG
 * device. It finds a device by id and chooses which devices to prefer for a
 * request (NVIDIA's topology policy for whole GPUs, spreading for replicas,
 * packing for slices). The device plugin serves these pools over its wire
 * protocol; nothing here knows a protobuf type.
 */
#ifndef GPULET_DEVICES_H
#define GPULET_DEVICES_H

#include <stdbool.h>
#include <stddef.h>
#include <time.h>

#include "config/config.h"
#include "error/error.h"
#include "gpu/gpu.h"

#define DEVICES_ID_MAX 128

/* A device as a pool offers it: a whole GPU, a MIG device, or one replica
 * or slice of either. */
struct devices_device {
    char id[DEVICES_ID_MAX];      /* what the kubelet sees: "GPU-…", "0", "GPU-…::3" */
    char base_id[DEVICES_ID_MAX]; /* the physical device: no replica suffix */
    const char *uuid;             /* of the GPU or MIG device, the inventory's */
    unsigned int gpu;
    int mig;                      /* MIG device index on the GPU, -1 for a whole GPU */
    unsigned int replica;         /* 0 when the device is not shared */
    int numa_node;                /* -1 when unknown */
    unsigned int minor;           /* /dev/nvidia<minor> of the GPU */
    unsigned int gpu_instance, compute_instance; /* MIG devices only */
    bool healthy;
    char reason[64];              /* why it is unhealthy, for gpulet doctor */
    /* A slice (id "GPU-…::s3"): its memory and its compute share in
     * hundredths of a percent of the GPU; both 0 for other devices. */
    unsigned long long slice_memory;
    unsigned int slice_share;
    unsigned long long slice_context; /* contextMemory; 0: the interposer's default */
};

/* A pool: the devices offered under one name, all alike. */
struct devices_pool {
    char name[CONFIG_NAME_MAX];     /* nvidia.com/gpu */
    char socket_name[96];           /* nvidia-gpu.sock */
    enum sharing_strategy sharing;  /* NONE unless the devices are replicas or slices */
    unsigned int replicas;
    bool packed;                    /* replica policy: packed, else distributed */
    unsigned long line;             /* slices: their sharing.slices entry's, for errors */
    size_t count;
    struct devices_device *devices;
    const struct devices_device **by_id; /* the devices in id order, for lookups */
};

/* The front ends that offer devices to the kubelet. */
enum devices_front {
    DEVICES_FRONT_PLUGIN, /* the device plugin */
    DEVICES_FRONT_DRA,    /* the DRA driver */
};

/* Which front end offers GPU g and its MIG devices: with DRA on, DRA takes
 * the GPUs dra.gpus names (every GPU when the list is not given), the
 * device plugin the others. This is the one place it is decided, so that
 * no GPU is ever offered, and allocatable, twice. */
enum devices_front devices_gpu_front(const struct config *cfg, const struct gpu_device *g);

/* Works out the pools for an inventory and configuration, in name order:
 * of the GPUs devices_gpu_front gives the device plugin. */
int devices_catalog_build(const struct gpu_inventory *inv, const struct config *cfg,
                          struct devices_pool **out, size_t *count, struct gpulet_error *err);
void devices_catalog_free(struct devices_pool *pools, size_t count);

/* The device with that id, in O(log count); NULL when there is none. */
const struct devices_device *devices_find(const struct devices_pool *r, const char *id);

/* Marks every device of a pool on a GPU (mig = -1) or on one MIG device
 * healthy or not (reason: why, kept for gpulet doctor). Returns how many
 * devices changed. */
size_t devices_pool_set_health(struct devices_pool *r, unsigned int gpu, int mig, bool healthy,
                               const char *reason);

/* Allocations for short-lived answers: everything freed together.
 * arena_alloc never returns NULL: it aborts when out of memory. Every size
 * asked for is bounded by what one request can name (a gRPC message is at
 * most GRPC_MAX_MESSAGE; a claim, DRA's bounds), so a failure means the
 * process has no memory left at all, and the builders of replies stay
 * free of a check per field. */
struct arena {
    void **ptrs;
    size_t count, cap;
};
void *arena_alloc(struct arena *a, size_t size);
char *arena_strdup(struct arena *a, const char *s);
void arena_free(struct arena *a);

/* What a container receives for its devices, whatever protocol carries it
 * (a device-plugin Allocate answer, a DRA claim's CDI spec): every string
 * and list lives in the arena. Each kind keeps the order it was added in. */
struct devices_pair {
    const char *key, *value;
};
struct devices_mount {
    const char *host, *container;
    bool read_only;
};
struct devices_node {
    const char *host, *container; /* opened read-write */
};
struct devices_edits {
    struct arena *arena;
    struct devices_pair *env;
    size_t n_env, cap_env;
    struct devices_mount *mounts;
    size_t n_mounts, cap_mounts;
    struct devices_node *nodes;
    size_t n_nodes, cap_nodes;
    struct devices_pair *annotations;
    size_t n_annotations, cap_annotations;
    const char **cdi_devices; /* fully qualified CDI device names */
    size_t n_cdi_devices, cap_cdi_devices;
};
void devices_edits_env(struct devices_edits *e, const char *key, const char *value);
void devices_edits_mount(struct devices_edits *e, const char *host, const char *container,
                         bool read_only);
void devices_edits_node(struct devices_edits *e, const char *host, const char *container);
void devices_edits_annotation(struct devices_edits *e, const char *key, const char *value);
void devices_edits_cdi_device(struct devices_edits *e, const char *name);

/* A GPU a container holds slices of (or memory of, through a DRA claim):
 * its memory limit and compute share, as the CUDA interposer applies
 * them to the GPU with this CUDA ordinal (its place in the list). */
struct devices_slice_gpu {
    const char *uuid;
    unsigned long long memory; /* bytes */
    unsigned long share;       /* hundredths of a percent of the GPU */
};
/* The limits of a container's slices, for the front end to write where
 * the interposer reads them. */
struct devices_slices {
    struct devices_slice_gpu *gpus; /* in GPU order, as CUDA numbers them */
    size_t n_gpus;
    unsigned long long context;    /* what a CUDA context costs; 0: the interposer's default */
    char **ids;                    /* the slices' device ids */
    size_t n_ids;
};

/* Prepares devices ids of pool r for one container (owner: the serial of
 * the allocation, which names its CDI annotation): e receives the
 * container's edits, slices (for a pool of slices; else n_gpus 0) the
 * limits to hand the interposer. -1 with GPULET_ERR_INPUT for a request
 * that should not have been made (unknown id, too many of a shared
 * device). */
int devices_prepare(const struct devices_pool *r, const struct config *cfg, char *const *ids,
                    size_t n_ids, unsigned long owner, struct devices_edits *e,
                    struct devices_slices *slices, struct gpulet_error *err);

/* Health news about the node's GPUs and MIG devices, heard in one place
 * (the daemon's health policy sets it) and passed on to every front end
 * that offers devices (the device plugin, DRA): each subscribes when it
 * starts and unsubscribes when it is freed. */
#define DEVICES_HEALTH_SUBSCRIBERS 4
typedef void devices_health_fn(unsigned int gpu, int mig, bool healthy, const char *reason,
                               void *user);
struct devices_health {
    struct {
        devices_health_fn *changed;
        void *user;
    } subscribers[DEVICES_HEALTH_SUBSCRIBERS];
    size_t count;
};
/* -1 when DEVICES_HEALTH_SUBSCRIBERS already listen. */
int devices_health_subscribe(struct devices_health *h, devices_health_fn *changed, void *user,
                             struct gpulet_error *err);
void devices_health_unsubscribe(struct devices_health *h, devices_health_fn *changed,
                                void *user);
/* A GPU (mig -1: with its MIG devices) or one MIG device became healthy or
 * not (reason: why); every subscriber hears it. */
void devices_health_set(const struct devices_health *h, unsigned int gpu, int mig, bool healthy,
                        const char *reason);

/* The preferred allocation for one request: writes into out (room for
 * n_available entries, pointing at the given strings) the devices to
 * prefer, or nothing when the request cannot be met. Whole GPUs follow
 * NVIDIA's best-effort policy over the topology; replicas are spread over
 * the least-used GPUs. Returns -1 (and nothing) when the CLOCK_MONOTONIC
 * time `until` (NULL: none) passes before it is done. */
int devices_preferred(const struct devices_pool *r, const struct gpu_inventory *inv,
                      char *const *available, size_t n_available, char *const *must,
                      size_t n_must, int size, const struct timespec *until, char **out,
                      size_t *n_out);

/* The score of a pair of GPUs: how they connect over PCIe, plus 100 per NVLink. */
int devices_pair_score(const struct gpu_inventory *inv, unsigned int a, unsigned int b);

#endif
