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
