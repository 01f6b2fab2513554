/* The pod mapping: which pod's container uses which GPU or MIG device,
 * from a kubelet pod-resources List answer. Built in O(n log n) in the
 * answer's device IDs whatever their spread: look-ups in a sorted table of
 * device names, one sort of all references, no per-item growth. */
#include "pods.h"

#include "dra/dra.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

void pod_map_free(struct pod_map *map)
{
    if (map == NULL)
        return;
    free(map->gpus);
    free(map->migs);
    free(map->mig_count);
    free(map->refs);
    free(map->strings);
    free(map);
}

/* A name the device plugin hands out for a device: GPU UUID, index, MIG
 * UUID or "gpu:mig"; the list it leads to. */
struct device_name {
    char name[96];
    size_t list;
};

static int by_name(const void *a, const void *b)
{
    return strcmp(((const struct device_name *)a)->name, ((const struct device_name *)b)->name);
}

/* A reference before it is deduplicated: strings still in the answer. */
struct candidate {
    size_t list;
    const char *pod, *ns, *container;
};

static int by_list_then_names(const void *a, const void *b)
{
    const struct candidate *x = a, *y = b;
    if (x->list != y->list)
        return x->list < y->list ? -1 : 1;
    int c = strcmp(x->pod, y->pod);
    if (c == 0)
        c = strcmp(x->ns, y->ns);
    return c ? c : strcmp(x->container, y->container);
}

static struct device_name *device_names(const struct gpu_inventory *inv, size_t lists,
                                        size_t *count)
{
    struct device_name *names = calloc(3 * lists + 1, sizeof *names);
    if (names == NULL)
        return NULL;
    size_t n = 0, list = inv->gpu_count;
    for (size_t i = 0; i < inv->gpu_count; i++) {
        const struct gpu_device *g = &inv->gpus[i];
        if (g->uuid[0]) {
            snprintf(names[n].name, sizeof names[n].name, "%s", g->uuid);
            names[n++].list = i;
        }
        snprintf(names[n].name, sizeof names[n].name, "%u", g->index);
        names[n++].list = i;
        /* DRA's names ("gpu-3", "gpu-0-mig-1g5gb-19-0") never look like
         * the device plugin's, so one table serves both. */
        dra_device_name(g, -1, names[n].name, sizeof names[n].name);
        names[n++].list = i;
        for (size_t m = 0; m < g->mig_count; m++, list++) {
            snprintf(names[n].name, sizeof names[n].name, "%s", g->migs[m].uuid);
            names[n++].list = list;
            snprintf(names[n].name, sizeof names[n].name, "%u:%u", g->index, g->migs[m].index);
            names[n++].list = list;
            dra_device_name(g, (int)m, names[n].name, sizeof names[n].name);
            names[n++].list = list;
        }
    }
    qsort(names, n, sizeof *names, by_name);
    *count = n;
    return names;
}

/* The list of a device ID, any "::replica" suffix aside; false: not ours. */
static bool find_device(const struct device_name *names, size_t count, const char *id,
                        size_t *list)
{
    struct device_name key;
    snprintf(key.name, sizeof key.name, "%s", id);
    char *suffix = strstr(key.name, "::");
    if (suffix)
        *suffix = '\0';
    const struct device_name *hit = bsearch(&key, names, count, sizeof *names, by_name);
    if (hit)
        *list = hit->list;
    return hit != NULL;
}

/* Every nvidia.com device ID of the answer, and every device of a DRA
 * claim of gpu.nvidia.com, to fn; the only walk over it. */
typedef void (*id_fn)(const V1__PodResources *pr, const V1__ContainerResources *cr,
                      const char *id, void *arg);

static void each_id(const V1__ListPodResourcesResponse *resp, id_fn fn, void *arg)
{
    for (size_t p = 0; p < resp->n_pod_resources; p++) {
        const V1__PodResources *pr = resp->pod_resources[p];
        for (size_t c = 0; c < pr->n_containers; c++) {
            const V1__ContainerResources *cr = pr->containers[c];
            for (size_t d = 0; d < cr->n_devices; d++) {
                const V1__ContainerDevices *cd = cr->devices[d];
                if (strncmp(cd->resource_name, "nvidia.com/", 11) != 0)
                    continue;
                for (size_t k = 0; k < cd->n_device_ids; k++)
                    fn(pr, cr, cd->device_ids[k], arg);
            }
            for (size_t d = 0; d < cr->n_dynamic_resources; d++) {
                const V1__DynamicResource *dr = cr->dynamic_resources[d];
                for (size_t k = 0; k < dr->n_claim_resources; k++) {
                    const V1__ClaimResource *res = dr->claim_resources[k];
                    if (res->driver_name && strcmp(res->driver_name, DRA_DRIVER) == 0 &&
                        res->device_name)
                        fn(pr, cr, res->device_name, arg);
                }
            }
        }
    }
}

static void count_id(const V1__PodResources *pr, const V1__ContainerResources *cr,
                     const char *id, void *arg)
{
    (void)pr;
    (void)cr;
    (void)id;
    ++*(size_t *)arg;
}

struct collect {
    const struct device_name *names;
    size_t name_count;
    struct candidate *cand;
    size_t n;
};

static void collect_id(const V1__PodResources *pr, const V1__ContainerResources *cr,
                       const char *id, void *arg)
{
    struct collect *c = arg;
    size_t list;
    if (find_device(c->names, c->name_count, id, &list))
        c->cand[c->n++] = (struct candidate){list, pr->name, pr->namespace_, cr->name};
}

static char *copy(char **at, const char *s)
{
    size_t n = strlen(s) + 1;
    memcpy(*at, s, n);
    char *r = *at;
    *at += n;
    return r;
}

struct pod_map *pod_map_build(const struct gpu_inventory *inv,
                              const V1__ListPodResourcesResponse *resp)
{
    struct pod_map *map = calloc(1, sizeof *map);
    if (map == NULL)
        return NULL;
    size_t lists = inv->gpu_count;
    for (size_t i = 0; i < inv->gpu_count; i++)
        lists += inv->gpus[i].mig_count;
    map->gpu_count = inv->gpu_count;
    map->gpus = calloc(lists + 1, sizeof *map->gpus);
    map->migs = calloc(inv->gpu_count + 1, sizeof *map->migs);
    map->mig_count = calloc(inv->gpu_count + 1, sizeof *map->mig_count);
    size_t name_count = 0;
    struct device_name *names = device_names(inv, lists, &name_count);
    struct candidate *cand = NULL;
    if (map->gpus == NULL || map->migs == NULL || map->mig_count == NULL || names == NULL)
        goto fail;
    for (size_t i = 0, list = inv->gpu_count; i < inv->gpu_count; i++) {
        map->migs[i] = &map->gpus[list];
        map->mig_count[i] = inv->gpus[i].mig_count;
        list += inv->gpus[i].mig_count;
    }
    size_t total = 0;
    each_id(resp, count_id, &total);
    cand = malloc((total + 1) * sizeof *cand);
    if (cand == NULL)
        goto fail;
    struct collect col = {names, name_count, cand, 0};
    each_id(resp, collect_id, &col);
    size_t n = col.n;
    qsort(cand, n, sizeof *cand, by_list_then_names);
    /* Unique references, within the bound, and the room their strings take. */
    size_t kept = 0, bytes = 1;
    for (size_t i = 0; i < n; i++) {
        if (kept && by_list_then_names(&cand[kept - 1], &cand[i]) == 0)
            continue;
        if (kept == POD_MAP_MAX_REFS) {
            map->dropped++;
            continue;
        }
        cand[kept++] = cand[i];
        bytes += strlen(cand[i].pod) + strlen(cand[i].ns) + strlen(cand[i].container) + 3;
    }
    map->refs = calloc(kept + 1, sizeof *map->refs);
    map->strings = malloc(bytes);
    if (map->refs == NULL || map->strings == NULL)
        goto fail;
    char *at = map->strings;
    for (size_t i = 0; i < kept; i++) {
        struct pod_ref *r = &map->refs[i];
        r->pod = copy(&at, cand[i].pod);
        r->namespace = copy(&at, cand[i].ns);
        r->container = copy(&at, cand[i].container);
        struct pod_list *l = &map->gpus[cand[i].list];
        if (l->count++ == 0)
            l->items = r;
    }
    free(cand);
    free(names);
    return map;
fail:
    free(cand);
    free(names);
    pod_map_free(map);
    return NULL;
}
