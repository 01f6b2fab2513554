#include "devices.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "cdi/cdi.h"

#define VOLUME_MOUNT_DIR "/var/run/nvidia-container-devices"
#define MPS_ROOT "/run/nvidia/mps"

/* host path of a device node under the driver root ("/" adds nothing) */
static void host_dev_path(const struct config *cfg, const char *dev, char *buf, size_t len)
{
    const char *root = strcmp(cfg->driver_root, "/") == 0 ? "" : cfg->driver_root;
    snprintf(buf, len, "%s%s", root, dev);
}

static void add_mig_caps(const struct config *cfg, const struct devices_device *d,
                         struct devices_edits *e)
{
    char paths[2][64], host[4200];
    size_t n = gpu_mig_cap_nodes(cfg->driver_root, d->minor, d->gpu_instance,
                                 d->compute_instance, paths);
    for (size_t i = 0; i < n; i++) {
        host_dev_path(cfg, paths[i], host, sizeof host);
        devices_edits_node(e, host, paths[i]);
    }
}

static void add_device_nodes(const struct config *cfg, const struct devices_device *const *devs,
                             size_t n, struct devices_edits *e)
{
    char host[4200];
    const char *control[CDI_CONTROL_NODES_MAX + 1];
    cdi_control_nodes(cfg->driver_root, control);
    for (size_t i = 0; control[i]; i++) {
        host_dev_path(cfg, control[i], host, sizeof host);
        devices_edits_node(e, host, control[i]);
    }
    for (size_t i = 0; i < n; i++) {
        bool same_gpu = false, same_device = false;
        for (size_t j = 0; j < i; j++) {
            same_gpu |= devs[j]->minor == devs[i]->minor;
            same_device |= devs[j]->minor == devs[i]->minor && devs[j]->mig == devs[i]->mig;
        }
        if (!same_gpu) {
            char dev[32];
            snprintf(dev, sizeof dev, "/dev/nvidia%u", devs[i]->minor);
            host_dev_path(cfg, dev, host, sizeof host);
            devices_edits_node(e, host, dev);
        }
        /* A MIG device also needs its GPU and compute instance capabilities. */
        if (devs[i]->mig >= 0 && !same_device)
            add_mig_caps(cfg, devs[i], e);
    }
}

/* MPS clients find the control daemon of their resource through its pipe
 * folder and share its memory segment. */
static void add_mps(const struct devices_pool *res, struct devices_edits *e)
{
    char pipe[160], host[200];
    snprintf(pipe, sizeof pipe, "/mps/%s/pipe", res->name);
    devices_edits_env(e, "CUDA_MPS_PIPE_DIRECTORY", pipe);
    snprintf(host, sizeof host, MPS_ROOT "/%s/pipe", res->name);
    devices_edits_mount(e, host, pipe, false);
    devices_edits_mount(e, MPS_ROOT "/shm", "/dev/shm", false);
}

static int compare_gpu_order(const void *x, const void *y)
{
    const struct devices_device *a = *(const struct devices_device *const *)x;
    const struct devices_device *b = *(const struct devices_device *const *)y;
    if (a->gpu != b->gpu)
        return a->gpu < b->gpu ? -1 : 1;
    return (a->mig > b->mig) - (a->mig < b->mig);
}

/* Per GPU received (ordinal i in NVIDIA_VISIBLE_DEVICES order): a memory
 * limit, the sum of its slices, and a compute share, likewise. */
static void slice_limits(const struct devices_device *const *devs, size_t n,
                         const struct devices_device *const *phys, size_t n_base,
                         struct arena *a, struct devices_slices *out)
{
    struct devices_slice_gpu *gpus = arena_alloc(a, (n_base + 1) * sizeof *gpus);
    for (size_t i = 0; i < n_base; i++) {
        gpus[i].uuid = phys[i]->uuid;
        for (size_t k = 0; k < n; k++)
            if (strcmp(devs[k]->base_id, phys[i]->base_id) == 0) {
                gpus[i].memory += devs[k]->slice_memory;
                gpus[i].share += devs[k]->slice_share;
            }
    }
    /* What the interposer charges a context: what the operator measured,
     * the largest of the container's slices' when they differ. */
    unsigned long long context = 0;
    for (size_t k = 0; k < n; k++)
        if (devs[k]->slice_context > context)
            context = devs[k]->slice_context;
    char **ids = arena_alloc(a, (n + 1) * sizeof *ids);
    for (size_t k = 0; k < n; k++)
        ids[k] = (char *)devs[k]->id;
    *out = (struct devices_slices){gpus, n_base, context, ids, n};
}

int devices_prepare(const struct devices_pool *res, const struct config *cfg, char *const *ids,
                    size_t n_ids, unsigned long owner, struct devices_edits *e,
                    struct devices_slices *slices, struct gpulet_error *err)
{
    struct arena *a = e->arena;
    *slices = (struct devices_slices){0};
    const struct devices_device **devs = arena_alloc(a, (n_ids + 1) * sizeof *devs);
    size_t n = 0;
    for (size_t i = 0; i < n_ids; i++) {
        bool dup = false;
        for (size_t j = 0; j < i && !dup; j++)
            dup = strcmp(ids[i], ids[j]) == 0;
        if (dup)
            continue;
        const struct devices_device *d = devices_find(res, ids[i]);
        if (d == NULL)
            return gpulet_error_set(err, GPULET_ERR_INPUT, "unknown device ID \"%.128s\" for %s",
                                    ids[i], res->name);
        devs[n++] = d;
    }
    if (n == 0)
        return gpulet_error_set(err, GPULET_ERR_INPUT, "the request for %s names no device",
                                res->name);
    /* MPS: one replica a container whatever failRequestsGreaterThanOne
     * says, as NVIDIA's plugin (the daemon's limits are per client). */
    if (n > 1 && (res->sharing == SHARING_MPS ||
                  (res->sharing == SHARING_TIME_SLICING && cfg->fail_requests_greater_than_one)))
        return gpulet_error_set(err, GPULET_ERR_INPUT,
                                "maximum request size for shared resources is 1");

    /* The physical devices, each once, in request order; slices in GPU
     * order, which CUDA's ordinals follow on GPUs of one model. */
    const struct devices_device **phys = arena_alloc(a, (n + 1) * sizeof *phys);
    size_t n_base = 0;
    for (size_t i = 0; i < n; i++) {
        bool seen = false;
        for (size_t j = 0; j < n_base && !seen; j++)
            seen = strcmp(phys[j]->base_id, devs[i]->base_id) == 0;
        if (!seen)
            phys[n_base++] = devs[i];
    }
    if (res->sharing == SHARING_SLICES)
        qsort(phys, n_base, sizeof *phys, compare_gpu_order);
    /* What the container is told: a replica's GPU once per replica, as
     * NVIDIA's plugin does; by index with deviceIDStrategy index (the
     * kubelet still sees UUIDs). */
    bool per_replica = res->sharing == SHARING_TIME_SLICING || res->sharing == SHARING_MPS;
    const struct devices_device *const *listed = per_replica ? devs : phys;
    size_t n_listed = per_replica ? n : n_base;
    char **names = arena_alloc(a, (n_listed + 1) * sizeof *names);
    size_t joined_len = 1;
    for (size_t i = 0; i < n_listed; i++) {
        char index[32];
        const struct devices_device *d = listed[i];
        if (cfg->device_id_strategy == DEVICE_ID_INDEX && d->mig >= 0)
            snprintf(index, sizeof index, "%u:%d", d->gpu, d->mig);
        else if (cfg->device_id_strategy == DEVICE_ID_INDEX)
            snprintf(index, sizeof index, "%u", d->gpu);
        names[i] = arena_strdup(a, cfg->device_id_strategy == DEVICE_ID_INDEX ? index : d->base_id);
        joined_len += strlen(names[i]) + sizeof CDI_KIND + 2;
    }

    unsigned int lists = cfg->device_list_strategies;
    if (lists & DEVICE_LIST_VOLUME_MOUNTS) {
        /* The variable then names the folder, so a pod cannot widen its own
         * list by setting NVIDIA_VISIBLE_DEVICES itself. One mount per
         * device: a path mounted twice is refused by some engines. */
        devices_edits_env(e, "NVIDIA_VISIBLE_DEVICES", VOLUME_MOUNT_DIR);
        for (size_t i = 0; i < n_listed; i++) {
            bool again = false;
            for (size_t j = 0; j < i && !again; j++)
                again = strcmp(names[j], names[i]) == 0;
            char path[DEVICES_ID_MAX + sizeof VOLUME_MOUNT_DIR + 1];
            snprintf(path, sizeof path, "%s/%s", VOLUME_MOUNT_DIR, names[i]);
            if (!again)
                devices_edits_mount(e, "/dev/null", path, true);
        }
    } else if (lists & DEVICE_LIST_ENVVAR) {
        char *joined = arena_alloc(a, joined_len);
        for (size_t i = 0; i < n_listed; i++) {
            if (i)
                strcat(joined, ",");
            strcat(joined, names[i]);
        }
        devices_edits_env(e, "NVIDIA_VISIBLE_DEVICES", joined);
    }
    if (lists & DEVICE_LIST_CDI_ANNOTATIONS) {
        char *joined = arena_alloc(a, joined_len);
        for (size_t i = 0; i < n_listed; i++) {
            if (i)
                strcat(joined, ",");
            strcat(joined, CDI_KIND "=");
            strcat(joined, names[i]);
        }
        char key[96];
        snprintf(key, sizeof key, "cdi.k8s.io/gpulet_%s_%lu", strchr(res->name, '/') + 1, owner);
        devices_edits_annotation(e, key, joined);
    }
    if (lists & DEVICE_LIST_CDI_CRI) {
        for (size_t i = 0; i < n_listed; i++) {
            char name[DEVICES_ID_MAX + sizeof CDI_KIND + 1];
            snprintf(name, sizeof name, CDI_KIND "=%s", names[i]);
            devices_edits_cdi_device(e, name);
        }
    }
    if (cfg->pass_device_specs)
        add_device_nodes(cfg, devs, n, e);
    if (res->sharing == SHARING_MPS)
        add_mps(res, e);
    if (res->sharing == SHARING_SLICES)
        slice_limits(devs, n, phys, n_base, a, slices);
    return 0;
}
