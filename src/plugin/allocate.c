#include "plugin_internal.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#define VOLUME_MOUNT_DIR "/var/run/nvidia-container-devices"
#define MPS_ROOT "/run/nvidia/mps"
#define CDI_KIND "nvidia.com/gpu"

void *arena_alloc(struct arena *a, size_t size)
{
    if (a->count == a->cap) {
        size_t cap = a->cap ? a->cap * 2 : 32;
        void **ptrs = realloc(a->ptrs, cap * sizeof *ptrs);
        if (ptrs == NULL)
            abort(); /* a few bytes for a reply; nothing sensible to do without them */
        a->ptrs = ptrs;
        a->cap = cap;
    }
    void *p = calloc(1, size ? size : 1);
    if (p == NULL)
        abort();
    a->ptrs[a->count++] = p;
    return p;
}

char *arena_strdup(struct arena *a, const char *s)
{
    size_t n = strlen(s) + 1;
    char *p = arena_alloc(a, n);
    memcpy(p, s, n);
    return p;
}

void arena_free(struct arena *a)
{
    for (size_t i = 0; i < a->count; i++)
        free(a->ptrs[i]);
    free(a->ptrs);
    a->ptrs = NULL;
    a->count = a->cap = 0;
}

/* A copy of a pointer array with room for one more (protobuf-c lists). */
static void *grow(struct arena *a, const void *old, size_t n)
{
    void **list = arena_alloc(a, (n + 1) * sizeof *list);
    if (n)
        memcpy(list, old, n * sizeof *list);
    return list;
}

/* An Allocate answer being filled, for the slice sink. */
struct arena_reply {
    struct arena *a;
    V1beta1__ContainerAllocateResponse *out;
};

static void add_env(struct arena *a, V1beta1__ContainerAllocateResponse *r, const char *key,
                    const char *value)
{
    V1beta1__ContainerAllocateResponse__EnvsEntry **list = grow(a, r->envs, r->n_envs);
    V1beta1__ContainerAllocateResponse__EnvsEntry *e = arena_alloc(a, sizeof *e);
    v1beta1__container_allocate_response__envs_entry__init(e);
    e->key = arena_strdup(a, key);
    e->value = arena_strdup(a, value);
    list[r->n_envs++] = e;
    r->envs = list;
}

static void add_annotation(struct arena *a, V1beta1__ContainerAllocateResponse *r,
                           const char *key, const char *value)
{
    V1beta1__ContainerAllocateResponse__AnnotationsEntry **list =
        grow(a, r->annotations, r->n_annotations);
    V1beta1__ContainerAllocateResponse__AnnotationsEntry *e = arena_alloc(a, sizeof *e);
    v1beta1__container_allocate_response__annotations_entry__init(e);
    e->key = arena_strdup(a, key);
    e->value = arena_strdup(a, value);
    list[r->n_annotations++] = e;
    r->annotations = list;
}

static void add_device_spec(struct arena *a, V1beta1__ContainerAllocateResponse *r,
                            const char *host, const char *container)
{
    V1beta1__DeviceSpec **list = grow(a, r->devices, r->n_devices);
    V1beta1__DeviceSpec *d = arena_alloc(a, sizeof *d);
    v1beta1__device_spec__init(d);
    d->host_path = arena_strdup(a, host);
    d->container_path = arena_strdup(a, container);
    d->permissions = arena_strdup(a, "rw");
    list[r->n_devices++] = d;
    r->devices = list;
}

/* host path of a device node under the driver root ("/" adds nothing) */
static void host_dev_path(const struct config *cfg, const char *dev, char *buf, size_t len)
{
    const char *root = strcmp(cfg->driver_root, "/") == 0 ? "" : cfg->driver_root;
    snprintf(buf, len, "%s%s", root, dev);
}

static void add_mig_caps(const struct config *cfg, const struct devices_device *d,
                         struct arena *a, V1beta1__ContainerAllocateResponse *r)
{
    char paths[2][64], host[4200];
    size_t n = gpu_mig_cap_nodes(cfg->driver_root, d->minor, d->gpu_instance,
                                 d->compute_instance, paths);
    for (size_t i = 0; i < n; i++) {
        host_dev_path(cfg, paths[i], host, sizeof host);
        add_device_spec(a, r, host, paths[i]);
    }
}

static void add_device_specs(const struct config *cfg, const struct devices_device *const *devs,
                             size_t n, struct arena *a, V1beta1__ContainerAllocateResponse *r)
{
    char host[4200];
    for (size_t i = 0; gpu_control_nodes[i]; i++) {
        host_dev_path(cfg, gpu_control_nodes[i], host, sizeof host);
        if (access(host, F_OK) == 0)
            add_device_spec(a, r, host, gpu_control_nodes[i]);
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
            add_device_spec(a, r, host, dev);
        }
        /* A MIG device also needs its GPU and compute instance capabilities. */
        if (devs[i]->mig >= 0 && !same_device)
            add_mig_caps(cfg, devs[i], a, r);
    }
}

static void add_mount(struct arena *a, V1beta1__ContainerAllocateResponse *r, const char *host,
                      const char *container, bool read_only)
{
    V1beta1__Mount **list = grow(a, r->mounts, r->n_mounts);
    V1beta1__Mount *m = arena_alloc(a, sizeof *m);
    v1beta1__mount__init(m);
    m->host_path = arena_strdup(a, host);
    m->container_path = arena_strdup(a, container);
    m->read_only = read_only;
    list[r->n_mounts++] = m;
    r->mounts = list;
}

/* MPS clients find the control daemon of their resource through its pipe
 * folder and share its memory segment. */
static void add_mps(const struct devices_pool *res, struct arena *a,
                    V1beta1__ContainerAllocateResponse *r)
{
    char pipe[160], host[200];
    snprintf(pipe, sizeof pipe, "/mps/%s/pipe", res->name);
    add_env(a, r, "CUDA_MPS_PIPE_DIRECTORY", pipe);
    snprintf(host, sizeof host, MPS_ROOT "/%s/pipe", res->name);
    add_mount(a, r, host, pipe, false);
    add_mount(a, r, MPS_ROOT "/shm", "/dev/shm", false);
}

static int compare_gpu_order(const void *x, const void *y)
{
    const struct devices_device *a = *(const struct devices_device *const *)x;
    const struct devices_device *b = *(const struct devices_device *const *)y;
    if (a->gpu != b->gpu)
        return a->gpu < b->gpu ? -1 : 1;
    return (a->mig > b->mig) - (a->mig < b->mig);
}

static void sink_env(void *user, const char *key, const char *value)
{
    struct arena_reply *r = user;
    add_env(r->a, r->out, key, value);
}

static void sink_mount(void *user, const char *host, const char *container, bool read_only)
{
    struct arena_reply *r = user;
    add_mount(r->a, r->out, host, container, read_only);
}

/* Per GPU received (ordinal i in NVIDIA_VISIBLE_DEVICES order): a memory
 * limit, the sum of its slices, and a compute share, likewise. */
static int add_slice_limits(const struct devices_pool *res, const struct config *cfg,
                            const struct devices_device *const *devs, size_t n,
                            const struct devices_device *const *phys, size_t n_base,
                            struct arena *a, V1beta1__ContainerAllocateResponse *out,
                            struct gpulet_error *err)
{
    struct plugin_slice_gpu *gpus = arena_alloc(a, (n_base + 1) * sizeof *gpus);
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
    struct arena_reply reply = {a, out};
    struct plugin_slice_sink sink = {sink_env, sink_mount, &reply};
    char dir[4400];
    return plugin_slice_grant(cfg, cfg->state_dir, res->name, ids, n, gpus, n_base, context,
                              NULL, &sink, dir, sizeof dir, err);
}

int plugin_allocate_container(const struct devices_pool *res, const struct config *cfg,
                              char *const *ids, size_t n_ids, unsigned long serial,
                              struct arena *a, V1beta1__ContainerAllocateResponse *out,
                              struct gpulet_error *err)
{
    v1beta1__container_allocate_response__init(out);
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
        add_env(a, out, "NVIDIA_VISIBLE_DEVICES", VOLUME_MOUNT_DIR);
        for (size_t i = 0; i < n_listed; i++) {
            bool again = false;
            for (size_t j = 0; j < i && !again; j++)
                again = strcmp(names[j], names[i]) == 0;
            char path[DEVICES_ID_MAX + sizeof VOLUME_MOUNT_DIR + 1];
            snprintf(path, sizeof path, "%s/%s", VOLUME_MOUNT_DIR, names[i]);
            if (!again)
                add_mount(a, out, "/dev/null", path, true);
        }
    } else if (lists & DEVICE_LIST_ENVVAR) {
        char *joined = arena_alloc(a, joined_len);
        for (size_t i = 0; i < n_listed; i++) {
            if (i)
                strcat(joined, ",");
            strcat(joined, names[i]);
        }
        add_env(a, out, "NVIDIA_VISIBLE_DEVICES", joined);
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
        snprintf(key, sizeof key, "cdi.k8s.io/gpulet_%s_%lu", strchr(res->name, '/') + 1, serial);
        add_annotation(a, out, key, joined);
    }
    if (lists & DEVICE_LIST_CDI_CRI) {
        out->cdi_devices = arena_alloc(a, n_listed * sizeof *out->cdi_devices);
        for (size_t i = 0; i < n_listed; i++) {
            V1beta1__CDIDevice *c = arena_alloc(a, sizeof *c);
            v1beta1__cdidevice__init(c);
            char name[DEVICES_ID_MAX + sizeof CDI_KIND + 1];
            snprintf(name, sizeof name, CDI_KIND "=%s", names[i]);
            c->name = arena_strdup(a, name);
            out->cdi_devices[out->n_cdi_devices++] = c;
        }
    }
    if (cfg->pass_device_specs)
        add_device_specs(cfg, devs, n, a, out);
    if (res->sharing == SHARING_MPS)
        add_mps(res, a, out);
    if (res->sharing == SHARING_SLICES)
        return add_slice_limits(res, cfg, devs, n, phys, n_base, a, out, err);
    return 0;
}

void plugin_device_list(const struct devices_pool *r, struct arena *a,
                        V1beta1__ListAndWatchResponse *out)
{
    v1beta1__list_and_watch_response__init(out);
    out->devices = arena_alloc(a, (r->count + 1) * sizeof *out->devices);
    for (size_t i = 0; i < r->count; i++) {
        const struct devices_device *d = &r->devices[i];
        V1beta1__Device *dev = arena_alloc(a, sizeof *dev);
        v1beta1__device__init(dev);
        dev->id = (char *)d->id;
        dev->health = d->healthy ? "Healthy" : "Unhealthy";
        if (d->numa_node >= 0) {
            V1beta1__TopologyInfo *t = arena_alloc(a, sizeof *t);
            v1beta1__topology_info__init(t);
            t->nodes = arena_alloc(a, sizeof *t->nodes);
            t->nodes[0] = arena_alloc(a, sizeof **t->nodes);
            v1beta1__numanode__init(t->nodes[0]);
            t->nodes[0]->id = d->numa_node;
            t->n_nodes = 1;
            dev->topology = t;
        }
        out->devices[out->n_devices++] = dev;
    }
}

void plugin_status(const struct devices_pool *r, bool registered, unsigned streams,
                   const char *problem, struct arena *a, Gpulet__V1__StatusResponse *out)
{
    gpulet__v1__status_response__init(out);
    out->resource_name = (char *)r->name;
    out->registered = registered;
    out->streams = streams;
    out->problem = registered ? "" : (char *)problem;
    out->devices = arena_alloc(a, (r->count + 1) * sizeof *out->devices);
    for (size_t i = 0; i < r->count; i++) {
        const struct devices_device *d = &r->devices[i];
        Gpulet__V1__DeviceStatus *dev = arena_alloc(a, sizeof *dev);
        gpulet__v1__device_status__init(dev);
        dev->id = (char *)d->id;
        dev->health = d->healthy ? "Healthy" : "Unhealthy";
        dev->reason = (char *)d->reason;
        out->devices[out->n_devices++] = dev;
    }
}
