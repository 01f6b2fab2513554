#include "plugin_internal.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

/* Copies a list of edits into a protobuf-c list of messages (pointers). */
#define ENCODE(a, list, n, type, init, fill)                                                  \
    do {                                                                                      \
        type **out_ = arena_alloc(a, ((n) + 1) * sizeof *out_);                               \
        for (size_t i = 0; i < (n); i++) {                                                    \
            type *m = arena_alloc(a, sizeof *m);                                              \
            init(m);                                                                          \
            fill;                                                                             \
            out_[i] = m;                                                                      \
        }                                                                                     \
        list = out_;                                                                          \
    } while (0)

/* The v1beta1 answer for a container's edits: the only place it is built. */
static void encode(const struct devices_edits *e, struct arena *a,
                   V1beta1__ContainerAllocateResponse *out)
{
    if (e->n_env)
        ENCODE(a, out->envs, e->n_env, V1beta1__ContainerAllocateResponse__EnvsEntry,
               v1beta1__container_allocate_response__envs_entry__init,
               (m->key = (char *)e->env[i].key, m->value = (char *)e->env[i].value));
    out->n_envs = e->n_env;
    if (e->n_mounts)
        ENCODE(a, out->mounts, e->n_mounts, V1beta1__Mount, v1beta1__mount__init,
               (m->host_path = (char *)e->mounts[i].host,
                m->container_path = (char *)e->mounts[i].container,
                m->read_only = e->mounts[i].read_only));
    out->n_mounts = e->n_mounts;
    if (e->n_nodes)
        ENCODE(a, out->devices, e->n_nodes, V1beta1__DeviceSpec, v1beta1__device_spec__init,
               (m->host_path = (char *)e->nodes[i].host,
                m->container_path = (char *)e->nodes[i].container, m->permissions = "rw"));
    out->n_devices = e->n_nodes;
    if (e->n_annotations)
        ENCODE(a, out->annotations, e->n_annotations,
               V1beta1__ContainerAllocateResponse__AnnotationsEntry,
               v1beta1__container_allocate_response__annotations_entry__init,
               (m->key = (char *)e->annotations[i].key,
                m->value = (char *)e->annotations[i].value));
    out->n_annotations = e->n_annotations;
    if (e->n_cdi_devices)
        ENCODE(a, out->cdi_devices, e->n_cdi_devices, V1beta1__CDIDevice,
               v1beta1__cdidevice__init, m->name = (char *)e->cdi_devices[i]);
    out->n_cdi_devices = e->n_cdi_devices;
}

int plugin_allocate_container(const struct devices_pool *res, const struct config *cfg,
                              char *const *ids, size_t n_ids, unsigned long serial,
                              struct arena *a, V1beta1__ContainerAllocateResponse *out,
                              struct gpulet_error *err)
{
    v1beta1__container_allocate_response__init(out);
    struct devices_edits edits = {.arena = a};
    struct devices_slices slices;
    if (devices_prepare(res, cfg, ids, n_ids, serial, &edits, &slices, err) < 0)
        return -1;
    char dir[4400];
    if (slices.n_gpus &&
        plugin_slice_grant(cfg, cfg->state_dir, res->name, slices.ids, slices.n_ids, slices.gpus,
                           slices.n_gpus, slices.context, NULL, &edits, dir, sizeof dir,
                           err) < 0)
        return -1;
    encode(&edits, a, out);
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
