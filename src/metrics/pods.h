/* Inside the metrics module: building the pod mapping. */
#ifndef GPULET_METRICS_PODS_H
#define GPULET_METRICS_PODS_H

#include "metrics_internal.h"
#include "podresources/v1/api.pb-c.h"

/* NULL only when out of memory. */
struct pod_map *pod_map_build(const struct gpu_inventory *inv,
                              const V1__ListPodResourcesResponse *resp);

#endif
