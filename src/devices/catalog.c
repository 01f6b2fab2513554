#include "devices.h"

#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "log/log.h"

enum devices_front devices_gpu_front(const struct config *cfg, const struct gpu_device *g)
{
    return cfg->dra_enabled && config_dra_gpu(cfg, g->index, g->uuid) ? DEVICES_FRONT_DRA
                                                                      : DEVICES_FRONT_PLUGIN;
}

/* A physical device before sharing: a whole GPU or a MIG device. */
struct phys {
    char resource[CONFIG_NAME_MAX];
    char base_id[DEVICES_ID_MAX];
    const char *uuid; /* the inventory's, which outlives the plugin */
    unsigned int gpu;
    int mig;
    int numa_node;
    unsigned int minor;
    unsigned int gpu_instance, compute_instance;
    unsigned long long memory_bytes;   /* what slices are cut from; 0 when unknown */
    unsigned long long reserved_bytes; /* by the driver, besides memory_bytes */
    bool healthy;
};

struct phys_list {
    struct phys *items;
    size_t count, cap;
};

static int add_phys(struct phys_list *l, const struct phys *p, struct gpulet_error *err)
{
    if (l->count == l->cap) {
        size_t cap = l->cap ? l->cap * 2 : 16;
        struct phys *items = realloc(l->items, cap * sizeof *items);
        if (items == NULL)
            return gpulet_error_errno(err, ENOMEM, "cannot list the devices");
        l->items = items;
        l->cap = cap;
    }
    l->items[l->count++] = *p;
    return 0;
}

static void whole_gpu(const struct gpu_device *g, const struct config *cfg, struct phys *p)
{
    memset(p, 0, sizeof *p);
    snprintf(p->resource, sizeof p->resource, "%s", config_gpu_resource(cfg, g->name));
    p->uuid = g->uuid;
    snprintf(p->base_id, sizeof p->base_id, "%s", g->uuid);
    p->gpu = g->index;
    p->mig = -1;
    p->numa_node = g->numa_node;
    p->minor = g->minor;
    p->memory_bytes = gpu_slice_memory(g);
    p->reserved_bytes = g->memory_reserved_bytes;
    p->healthy = !g->lost;
}

static void mig_device(const struct gpu_device *g, const struct gpu_mig_device *m,
                       const char *resource, struct phys *p)
{
    memset(p, 0, sizeof *p);
    snprintf(p->resource, sizeof p->resource, "%s", resource);
    p->uuid = m->uuid;
    snprintf(p->base_id, sizeof p->base_id, "%s", m->uuid);
    p->gpu = g->index;
    p->mig = (int)m->index;
    p->gpu_instance = m->gpu_instance_id;
    p->compute_instance = m->compute_instance_id;
    p->numa_node = g->numa_node;
    p->minor = g->minor;
    p->memory_bytes = m->memory_mib << 20;
    p->healthy = !g->lost;
}

static int collect_single(const struct gpu_inventory *inv, const struct config *cfg,
                          struct phys_list *l, struct gpulet_error *err)
{
    size_t mig_gpus = 0;
    const char *profile = NULL;
    for (size_t i = 0; i < inv->gpu_count; i++) {
        const struct gpu_device *g = &inv->gpus[i];
        if (!g->mig_enabled)
            continue;
        mig_gpus++;
        for (size_t m = 0; m < g->mig_count; m++) {
            if (profile && strcmp(profile, g->migs[m].profile) != 0)
                return gpulet_error_set(err, GPULET_ERR_USAGE,
                                        "migStrategy single needs every MIG device to have the same "
                                        "profile, but GPU %u has %s and another GPU has %s; use "
                                        "migStrategy mixed",
                                        g->index, g->migs[m].profile, profile);
            profile = g->migs[m].profile;
        }
    }
    if (mig_gpus > 0 && mig_gpus < inv->gpu_count)
        return gpulet_error_set(err, GPULET_ERR_USAGE,
                                "migStrategy single needs MIG on every GPU or on none, but %zu of "
                                "%zu GPUs have MIG enabled; use migStrategy mixed",
                                mig_gpus, inv->gpu_count);
    for (size_t i = 0; i < inv->gpu_count; i++) {
        const struct gpu_device *g = &inv->gpus[i];
        struct phys p;
        if (devices_gpu_front(cfg, g) != DEVICES_FRONT_PLUGIN)
            continue;
        if (!g->mig_enabled) {
            whole_gpu(g, cfg, &p);
            if (add_phys(l, &p, err) < 0)
                return -1;
            continue;
        }
        for (size_t m = 0; m < g->mig_count; m++) {
            mig_device(g, &g->migs[m], "nvidia.com/gpu", &p);
            if (add_phys(l, &p, err) < 0)
                return -1;
        }
    }
    return 0;
}

static int collect(const struct gpu_inventory *inv, const struct config *cfg, struct phys_list *l,
                   struct gpulet_error *err)
{
    if (cfg->mig_strategy == MIG_STRATEGY_SINGLE)
        return collect_single(inv, cfg, l, err);
    for (size_t i = 0; i < inv->gpu_count; i++) {
        const struct gpu_device *g = &inv->gpus[i];
        struct phys p;
        if (devices_gpu_front(cfg, g) != DEVICES_FRONT_PLUGIN)
            continue;
        if (g->lost && g->uuid[0] == '\0') {
            log_warn("GPU lost before its UUID was read; not advertised", "gpu=%u", g->index);
            continue;
        }
        if (cfg->mig_strategy == MIG_STRATEGY_MIXED && g->mig_enabled) {
            for (size_t m = 0; m < g->mig_count; m++) {
                char name[CONFIG_NAME_MAX];
                config_mig_resource(cfg, g->migs[m].profile, name, sizeof name);
                mig_device(g, &g->migs[m], name, &p);
                if (add_phys(l, &p, err) < 0)
                    return -1;
            }
            continue;
        }
        whole_gpu(g, cfg, &p);
        if (add_phys(l, &p, err) < 0)
            return -1;
    }
    return 0;
}

/* A resources.gpus[] / .mig[] entry no device ends up under (none matches,
 * or an earlier entry takes them all) is likely a typo: say where it is. */
static void warn_unused_names(const struct config *cfg, const struct phys_list *l)
{
    for (int mig = 0; mig < 2; mig++) {
        const struct named_resource *names = mig ? cfg->mig_names : cfg->gpu_names;
        size_t count = mig ? cfg->mig_name_count : cfg->gpu_name_count;
        for (size_t i = 0; i < count; i++) {
            bool used = false;
            for (size_t k = 0; k < l->count && !used; k++)
                used = (l->items[k].mig >= 0) == (mig == 1) &&
                       strcmp(l->items[k].resource, names[i].name) == 0;
            if (!used)
                log_warn("resource name pattern matches no device on this node",
                         "file=%s line=%lu key=resources.%s[%zu].pattern pattern=\"%s\" name=%s",
                         cfg->file, names[i].line, mig ? "mig" : "gpus", i, names[i].pattern,
                         names[i].name);
        }
    }
}

static bool selector_matches(const char *sel, const struct phys *p)
{
    char index[32];
    if (strcmp(sel, p->uuid) == 0)
        return true;
    snprintf(index, sizeof index, "%u", p->gpu);
    if (strcmp(sel, index) == 0) /* a GPU index selects the GPU, or all its MIG devices */
        return true;
    if (p->mig >= 0) {
        snprintf(index, sizeof index, "%u:%d", p->gpu, p->mig);
        return strcmp(sel, index) == 0;
    }
    return false;
}

/* Which devices of `resource` the shared entry selects (in list order). */
static void select_shared(const struct shared_resource *s, const struct phys_list *l,
                          const char *resource, bool *selected)
{
    size_t seen = 0;
    for (size_t i = 0; i < l->count; i++) {
        selected[i] = false;
        if (strcmp(l->items[i].resource, resource) != 0)
            continue;
        if (s->all_devices && s->count == 0 && s->selector_count == 0)
            selected[i] = true;
        else if (s->count > 0)
            selected[i] = seen < s->count;
        for (size_t k = 0; k < s->selector_count && !selected[i]; k++)
            selected[i] = selector_matches(s->selectors[k], &l->items[i]);
        seen++;
    }
    for (size_t k = 0; k < s->selector_count; k++) {
        bool any = false;
        for (size_t i = 0; i < l->count && !any; i++)
            any = strcmp(l->items[i].resource, resource) == 0 &&
                  selector_matches(s->selectors[k], &l->items[i]);
        if (!any)
            log_warn("sharing selector names no device on this node", "resource=%s device=%s",
                     resource, s->selectors[k]);
    }
}

static struct devices_pool *resource_named(struct devices_pool *res, size_t *count,
                                              const char *name)
{
    for (size_t i = 0; i < *count; i++)
        if (strcmp(res[i].name, name) == 0)
            return &res[i];
    struct devices_pool *r = &res[(*count)++];
    memset(r, 0, sizeof *r);
    snprintf(r->name, sizeof r->name, "%s", name);
    snprintf(r->socket_name, sizeof r->socket_name, "nvidia-%s.sock", strchr(name, '/') + 1);
    return r;
}

/* How a physical device is advertised: whole (replicas 0), as time-shared
 * replicas, or as slices of slice_memory bytes and slice_share hundredths
 * of a percent each. */
struct cut {
    unsigned int replicas;
    bool slices;
    unsigned long long slice_memory;
    unsigned int slice_share;
    unsigned long long slice_context;
};

static int add_device(struct devices_pool *r, const struct phys *p, unsigned int replica,
                      const struct cut *c, struct gpulet_error *err)
{
    /* Room doubles when the count reaches a power of two: 8 GPUs x 1024
     * replicas take 14 reallocations, not 8192. */
    if ((r->count & (r->count - 1)) == 0) {
        struct devices_device *devs =
            realloc(r->devices, (r->count ? 2 * r->count : 1) * sizeof *devs);
        if (devs == NULL)
            return gpulet_error_errno(err, ENOMEM, "cannot list the devices");
        r->devices = devs;
    }
    struct devices_device *devs = r->devices;
    struct devices_device *d = &devs[r->count++];
    memset(d, 0, sizeof *d);
    snprintf(d->base_id, sizeof d->base_id, "%s", p->base_id);
    if (c->slices)
        snprintf(d->id, sizeof d->id, "%s::s%u", p->base_id, replica);
    else if (c->replicas)
        snprintf(d->id, sizeof d->id, "%s::%u", p->base_id, replica);
    else
        snprintf(d->id, sizeof d->id, "%s", p->base_id);
    d->uuid = p->uuid;
    d->slice_memory = c->slice_memory;
    d->slice_share = c->slice_share;
    d->slice_context = c->slice_context;
    d->gpu = p->gpu;
    d->mig = p->mig;
    d->replica = replica;
    d->numa_node = p->numa_node;
    d->minor = p->minor;
    d->gpu_instance = p->gpu_instance;
    d->compute_instance = p->compute_instance;
    d->healthy = p->healthy;
    if (!d->healthy)
        snprintf(d->reason, sizeof d->reason, "GPU is lost (fell off the bus)");
    return 0;
}

static int compare_ids(const void *a, const void *b)
{
    return strcmp((*(const struct devices_device *const *)a)->id,
                  (*(const struct devices_device *const *)b)->id);
}

static int index_ids(struct devices_pool *r, struct gpulet_error *err)
{
    r->by_id = calloc(r->count + 1, sizeof *r->by_id);
    if (r->by_id == NULL)
        return gpulet_error_errno(err, ENOMEM, "cannot index the devices");
    for (size_t i = 0; i < r->count; i++)
        r->by_id[i] = &r->devices[i];
    qsort(r->by_id, r->count, sizeof *r->by_id, compare_ids);
    return 0;
}

static int compare_resources(const void *a, const void *b)
{
    return strcmp(((const struct devices_pool *)a)->name,
                  ((const struct devices_pool *)b)->name);
}

/* How entry s cuts device p: into replicas or memory-sized slices. */
static int slice_cut(const struct config *cfg, const struct shared_resource *s,
                     const struct phys *p, struct cut *c, struct gpulet_error *err)
{
    if (p->memory_bytes == 0) {
        log_warn("GPU memory unknown; its slices are not advertised", "gpu=%u", p->gpu);
        return 0;
    }
    unsigned long long n = s->replicas ? s->replicas : p->memory_bytes / s->slice_bytes;
    const char *key = s->replicas ? "replicas" : "memory";
    if (n == 0)
        return gpulet_error_set(err, GPULET_ERR_USAGE,
                                "%s line %lu: sharing.slices.resources[%zu].%s: slices of %llu MiB "
                                "are bigger than the %llu MiB GPU %u can hand out (%llu MiB less "
                                "%llu MiB the driver reserves)",
                                cfg->file, s->size_line, s->index, key, s->slice_bytes >> 20,
                                p->memory_bytes >> 20, p->gpu,
                                (p->memory_bytes + p->reserved_bytes) >> 20,
                                p->reserved_bytes >> 20);
    if (n > CONFIG_MAX_SLICES)
        return gpulet_error_set(err, GPULET_ERR_USAGE,
                                "%s line %lu: sharing.slices.resources[%zu].%s: GPU %u would be cut "
                                "into %llu slices, more than %d; give larger slices",
                                cfg->file, s->size_line, s->index, key, p->gpu, n,
                                CONFIG_MAX_SLICES);
    c->slices = true;
    c->replicas = (unsigned int)n;
    /* Slices by count get whole MiB, so limits read well. */
    c->slice_memory = s->replicas ? (p->memory_bytes / n) & ~((1ULL << 20) - 1) : s->slice_bytes;
    c->slice_share = (unsigned int)(10000 / n);
    c->slice_context = s->context_bytes;
    /* A slice's limit holds its container's first context. */
    if (s->context_bytes >= c->slice_memory)
        return gpulet_error_set(err, GPULET_ERR_USAGE,
                                "%s line %lu: sharing.slices.resources[%zu].contextMemory: a "
                                "context of %llu MiB fills a whole slice of GPU %u (%llu MiB); give "
                                "larger slices",
                                cfg->file, s->line, s->index, s->context_bytes >> 20, p->gpu,
                                c->slice_memory >> 20);
    return 0;
}

/* Which sharing entry applies to device i (selected: one row of
 * l->count per entry); NULL for none. Two entries selecting the same
 * device (an index and the UUID of one GPU) is a configuration error. */
static int entry_for(const struct config *cfg, const bool *selected, const struct phys_list *l,
                     size_t i, const struct shared_resource **out, struct gpulet_error *err)
{
    *out = NULL;
    for (size_t e = 0; e < cfg->shared_count; e++) {
        if (!selected[e * l->count + i])
            continue;
        const struct shared_resource *s = &cfg->shared[e];
        if (*out)
            return gpulet_error_set(err, GPULET_ERR_USAGE,
                                    "%s line %lu: sharing.%s.resources[%zu].devices: GPU %u (%s) is "
                                    "already shared by the entry at line %lu; give each entry its "
                                    "own GPUs",
                                    cfg->file, s->devices_line ? s->devices_line : s->line,
                                    s->slices ? "slices" : "timeSlicing", s->index,
                                    l->items[i].gpu, l->items[i].uuid, (*out)->line);
        *out = s;
    }
    return 0;
}

int devices_catalog_build(const struct gpu_inventory *inv, const struct config *cfg,
                          struct devices_pool **out, size_t *count, struct gpulet_error *err)
{
    struct phys_list l = {0};
    if (collect(inv, cfg, &l, err) < 0) {
        free(l.items);
        return -1;
    }
    warn_unused_names(cfg, &l);
    /* One target resource per physical device at most, so the list size
     * bounds them. */
    struct devices_pool *res = calloc(l.count + 1, sizeof *res);
    bool *selected = calloc(cfg->shared_count * l.count + 1, sizeof *selected);
    size_t n = 0;
    if (res == NULL || selected == NULL) {
        free(l.items);
        free(res);
        free(selected);
        return gpulet_error_errno(err, ENOMEM, "cannot list the resources");
    }
    for (size_t e = 0; e < cfg->shared_count; e++)
        select_shared(&cfg->shared[e], &l, cfg->shared[e].name, selected + e * l.count);
    int rc = 0;
    for (size_t i = 0; i < l.count && rc == 0; i++) {
        const struct phys *p = &l.items[i];
        const struct shared_resource *s;
        struct cut c = {0};
        char target[CONFIG_NAME_MAX];
        if ((rc = entry_for(cfg, selected, &l, i, &s, err)) < 0)
            break;
        if (s && s->rename[0])
            snprintf(target, sizeof target, "%s", s->rename);
        else if (s && !s->slices && cfg->rename_by_default)
            snprintf(target, sizeof target, "%s.shared", p->resource);
        else
            snprintf(target, sizeof target, "%s", p->resource);
        if (s && !s->slices) {
            c.replicas = s->replicas;
        } else if (s) {
            if ((rc = slice_cut(cfg, s, p, &c, err)) < 0)
                break;
            if (c.replicas == 0)
                continue;
        }
        if (strlen(target) > 63) {
            rc = gpulet_error_set(err, GPULET_ERR_USAGE,
                                  "the shared resource name %s is longer than 63 characters", target);
            break;
        }
        struct devices_pool *r = resource_named(res, &n, target);
        if (r->count > 0 && (r->sharing == SHARING_SLICES) != c.slices) {
            /* The scheduler counts a resource's devices as equals: a slice
             * and a whole GPU under one name would be a lottery. */
            rc = gpulet_error_set(err, GPULET_ERR_USAGE,
                                  "%s line %lu: sharing.slices: %s would have both slices and "
                                  "whole or time-shared GPUs; give the slices their own name "
                                  "(rename: nvidia.com/gpu-10gb, say)",
                                  cfg->file, c.slices ? s->line : r->line, target);
            break;
        }
        if (c.slices) {
            r->sharing = SHARING_SLICES;
            r->line = s->line;
            r->replicas = c.replicas;
            r->packed = cfg->replicas_packed;
        } else if (c.replicas) {
            r->sharing = cfg->sharing;
            r->replicas = c.replicas;
            r->packed = cfg->replicas_packed;
        }
        for (unsigned int k = 0; k < (c.replicas ? c.replicas : 1) && rc == 0; k++)
            rc = add_device(r, p, k, &c, err);
    }
    free(l.items);
    free(selected);
    for (size_t i = 0; i < n && rc == 0; i++)
        rc = index_ids(&res[i], err);
    if (rc < 0) {
        devices_catalog_free(res, n);
        return -1;
    }
    qsort(res, n, sizeof *res, compare_resources);
    *out = res;
    *count = n;
    return 0;
}

void devices_catalog_free(struct devices_pool *res, size_t count)
{
    if (res == NULL)
        return;
    for (size_t i = 0; i < count; i++) {
        free(res[i].devices);
        free((void *)res[i].by_id);
    }
    free(res);
}

const struct devices_device *devices_find(const struct devices_pool *r, const char *id)
{
    size_t lo = 0, hi = r->count;
    while (lo < hi) {
        size_t mid = lo + (hi - lo) / 2;
        const struct devices_device *d = r->by_id[mid];
        int cmp = strcmp(d->id, id);
        if (cmp == 0)
            return d;
        if (cmp < 0)
            lo = mid + 1;
        else
            hi = mid;
    }
    return NULL;
}

size_t devices_pool_set_health(struct devices_pool *r, unsigned int gpu, int mig, bool healthy,
                               const char *reason)
{
    size_t changed = 0;
    for (size_t d = 0; d < r->count; d++) {
        struct devices_device *dev = &r->devices[d];
        /* A whole GPU's trouble is its MIG devices' too. */
        if (dev->gpu != gpu || (mig >= 0 && dev->mig != mig) || dev->healthy == healthy)
            continue;
        dev->healthy = healthy;
        snprintf(dev->reason, sizeof dev->reason, "%s", healthy ? "" : reason);
        changed++;
    }
    return changed;
}
