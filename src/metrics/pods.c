/* The pod mapping: which pod's container uses which GPU or MIG device,
 * from a kubelet pod-resources List answer. */
#include "pods.h"

#include <stdlib.h>
#include <string.h>

void pod_map_free(struct pod_map *map)
{
    if (map == NULL)
        return;
    for (size_t i = 0; i < map->gpu_count; i++) {
        if (map->gpus)
            free(map->gpus[i].items);
        if (map->migs && map->migs[i]) {
            for (size_t m = 0; m < map->mig_count[i]; m++)
                free(map->migs[i][m].items);
            free(map->migs[i]);
        }
    }
    free(map->gpus);
    free(map->migs);
    free(map->mig_count);
    free(map);
}

static void add_pod(struct pod_list *l, const char *pod, const char *ns, const char *container)
{
    for (size_t i = 0; i < l->count; i++)
        if (strcmp(l->items[i].pod, pod) == 0 && strcmp(l->items[i].namespace, ns) == 0 &&
            strcmp(l->items[i].container, container) == 0)
            return;
    struct pod_ref *items = realloc(l->items, (l->count + 1) * sizeof *items);
    if (items == NULL)
        return;
    l->items = items;
    struct pod_ref *r = &l->items[l->count++];
    snprintf(r->pod, sizeof r->pod, "%s", pod);
    snprintf(r->namespace, sizeof r->namespace, "%s", ns);
    snprintf(r->container, sizeof r->container, "%s", container);
}

/* A device ID as the device plugin hands them out: GPU UUID, index, MIG
 * UUID or "gpu:mig", any of them with a "::replica" suffix. */
static bool match_device(const struct gpu_inventory *inv, const char *id, size_t *gpu, int *mig)
{
    char base[160];
    snprintf(base, sizeof base, "%s", id);
    char *suffix = strstr(base, "::");
    if (suffix)
        *suffix = '\0';
    for (size_t i = 0; i < inv->gpu_count; i++) {
        const struct gpu_device *g = &inv->gpus[i];
        char index[16];
        snprintf(index, sizeof index, "%u", g->index);
        if ((g->uuid[0] && strcmp(base, g->uuid) == 0) || strcmp(base, index) == 0) {
            *gpu = i;
            *mig = -1;
            return true;
        }
        for (size_t m = 0; m < g->mig_count; m++) {
            char pair[32];
            snprintf(pair, sizeof pair, "%u:%u", g->index, g->migs[m].index);
            if (strcmp(base, g->migs[m].uuid) == 0 || strcmp(base, pair) == 0) {
                *gpu = i;
                *mig = (int)m;
                return true;
            }
        }
    }
    return false;
}

struct pod_map *pod_map_build(const struct gpu_inventory *inv,
                              const V1__ListPodResourcesResponse *resp)
{
    struct pod_map *map = calloc(1, sizeof *map);
    if (map == NULL)
        return NULL;
    map->gpu_count = inv->gpu_count;
    map->gpus = calloc(inv->gpu_count + 1, sizeof *map->gpus);
    map->migs = calloc(inv->gpu_count + 1, sizeof *map->migs);
    map->mig_count = calloc(inv->gpu_count + 1, sizeof *map->mig_count);
    if (map->gpus == NULL || map->migs == NULL || map->mig_count == NULL) {
        pod_map_free(map);
        return NULL;
    }
    for (size_t i = 0; i < inv->gpu_count; i++) {
        map->migs[i] = calloc(inv->gpus[i].mig_count + 1, sizeof **map->migs);
        if (map->migs[i] == NULL) {
            pod_map_free(map);
            return NULL;
        }
        map->mig_count[i] = inv->gpus[i].mig_count;
    }
    for (size_t p = 0; p < resp->n_pod_resources; p++) {
        const V1__PodResources *pr = resp->pod_resources[p];
        for (size_t c = 0; c < pr->n_containers; c++) {
            const V1__ContainerResources *cr = pr->containers[c];
            for (size_t d = 0; d < cr->n_devices; d++) {
                const V1__ContainerDevices *cd = cr->devices[d];
                if (strncmp(cd->resource_name, "nvidia.com/", 11) != 0)
                    continue;
                for (size_t k = 0; k < cd->n_device_ids; k++) {
                    size_t gpu;
                    int mig;
                    if (!match_device(inv, cd->device_ids[k], &gpu, &mig))
                        continue;
                    struct pod_list *l = mig < 0 ? &map->gpus[gpu] : &map->migs[gpu][mig];
                    add_pod(l, pr->name, pr->namespace_, cr->name);
                }
            }
        }
    }
    return map;
}
