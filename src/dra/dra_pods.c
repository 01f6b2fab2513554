/* The limits and usage of GPU slices given by claims, for /metrics: the
 * kubelet's pod-resources answer says which container holds which claim
 * (dynamic_resources), the checkpoint which claim has a slice folder. */
#include "dra_internal.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

static int by_claim_name(const void *a, const void *b)
{
    const struct dra_claim *x = *(const struct dra_claim *const *)a;
    const struct dra_claim *y = *(const struct dra_claim *const *)b;
    int c = strcmp(x->namespace, y->namespace);
    return c ? c : strcmp(x->name, y->name);
}

/* The claim's GPUs, each once. */
static size_t claim_gpus(const struct dra_device *devs, size_t n_devs, const struct dra_claim *c,
                         unsigned int *gpus, size_t max)
{
    size_t n = 0;
    for (size_t i = 0; i < c->count; i++) {
        const struct dra_device *d = dra_device_find(devs, n_devs, c->results[i].device);
        bool seen = false;
        for (size_t k = 0; d && k < n && !seen; k++)
            seen = gpus[k] == d->gpu;
        if (d && !seen && n < max)
            gpus[n++] = d->gpu;
    }
    return n;
}

/* Whether the container named the same claim earlier in its list (the
 * kubelet's answer is not trusted to be free of repeats: a repeat would
 * give /metrics two series with one label set). */
static bool named_before(const V1__ContainerResources *cr, size_t d)
{
    const V1__DynamicResource *dr = cr->dynamic_resources[d];
    for (size_t k = 0; k < d; k++) {
        const V1__DynamicResource *o = cr->dynamic_resources[k];
        if (o->claim_name && o->claim_namespace && strcmp(o->claim_name, dr->claim_name) == 0 &&
            strcmp(o->claim_namespace, dr->claim_namespace) == 0)
            return true;
    }
    return false;
}

void dra_claim_limits(const struct dra_claim_view *v, const V1__ListPodResourcesResponse *resp,
                      void (*fn)(const struct metrics_limit *l, void *user), void *user)
{
    const struct dra_claim **sliced = malloc((v->n_claims + 1) * sizeof *sliced);
    if (sliced == NULL)
        return;
    size_t n = 0;
    for (size_t i = 0; i < v->n_claims; i++)
        if (v->claims[i].alloc[0])
            sliced[n++] = &v->claims[i];
    if (n == 0) {
        free(sliced);
        return;
    }
    qsort(sliced, n, sizeof *sliced, by_claim_name);
    struct plugin_slice_problems problems = {0};
    for (size_t p = 0; p < resp->n_pod_resources; p++) {
        const V1__PodResources *pr = resp->pod_resources[p];
        for (size_t c = 0; c < pr->n_containers; c++) {
            const V1__ContainerResources *cr = pr->containers[c];
            for (size_t d = 0; d < cr->n_dynamic_resources; d++) {
                const V1__DynamicResource *dr = cr->dynamic_resources[d];
                if (dr->claim_name == NULL || dr->claim_namespace == NULL ||
                    strlen(dr->claim_name) >= sizeof sliced[0]->name ||
                    strlen(dr->claim_namespace) >= sizeof sliced[0]->namespace ||
                    named_before(cr, d))
                    continue;
                struct dra_claim key = {0};
                const struct dra_claim *kp = &key;
                snprintf(key.namespace, sizeof key.namespace, "%s", dr->claim_namespace);
                snprintf(key.name, sizeof key.name, "%s", dr->claim_name);
                const struct dra_claim **hit = bsearch(&kp, sliced, n, sizeof *sliced,
                                                       by_claim_name);
                if (hit == NULL)
                    continue;
                unsigned int gpus[DRA_CLAIM_DEVICES];
                size_t n_gpus = claim_gpus(v->devs, v->n_devs, *hit, gpus, DRA_CLAIM_DEVICES);
                char dir[4400];
                snprintf(dir, sizeof dir, "%s/alloc/%s", v->slice_dir, (*hit)->alloc);
                plugin_slice_report(v->inv, dir, gpus, n_gpus, pr, cr, &problems, fn, user);
            }
        }
    }
    plugin_slice_problems_log(&problems);
    free(sliced);
}
