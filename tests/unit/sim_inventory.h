/* One simulated node's inventory per test program, for the tests that work
 * on devices built from it (plugin, DRA): load() replaces it, teardown()
 * frees it. Include after helpers.h. */
#ifndef GPULET_TEST_SIM_INVENTORY_H
#define GPULET_TEST_SIM_INVENTORY_H

#include "gpu/gpu.h"

static struct nvml *nvml;
static struct gpu_inventory *inv;

static void load(const char *node)
{
    if (inv)
        gpu_inventory_free(inv);
    if (nvml)
        nvml_close(nvml);
    nvml = open_sim(node, SIM_LIB_CURRENT);
    struct gpulet_error err = {0};
    if (gpu_inventory_load(nvml, &inv, &err) < 0)
        fail_msg("%s", err.msg);
}

static int teardown(void **state)
{
    (void)state;
    gpu_inventory_free(inv);
    nvml_close(nvml);
    inv = NULL;
    nvml = NULL;
    return 0;
}

#endif
