/*
 * How long a full inventory read takes on each simulated node (NVML load
 * and init excluded). Prints one line per node; not a timed test.
 *
 *   build/bench/bench_inventory [ROUNDS]
 */
#include <stdio.h>
#include <stdlib.h>
#include <time.h>

#include "gpu/gpu.h"

static double now_seconds(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (double)ts.tv_sec + (double)ts.tv_nsec / 1e9;
}

int main(int argc, char **argv)
{
    int rounds = argc > 1 ? atoi(argv[1]) : 200;
    if (rounds < 1)
        rounds = 1;
    static const char *const nodes[] = {"dgx1-v100", "dgx-a100", "h100-sxm", "t4-pcie",
                                        "a100-mig"};
    printf("%-10s %6s %12s\n", "node", "rounds", "µs/inventory");
    for (size_t i = 0; i < sizeof nodes / sizeof nodes[0]; i++) {
        char path[4096];
        snprintf(path, sizeof path, "%s/%s.yaml", SIM_NODES_DIR, nodes[i]);
        setenv("GPULET_SIM_NODE", path, 1);
        struct nvml_options opts = {.library_path = SIM_LIB};
        struct gpulet_error err = {0};
        struct nvml *nvml;
        if (nvml_open(&opts, &nvml, &err) < 0) {
            fprintf(stderr, "bench: %s\n", err.msg);
            return 1;
        }
        double start = now_seconds();
        for (int r = 0; r < rounds; r++) {
            struct gpu_inventory *inv;
            if (gpu_inventory_load(nvml, &inv, &err) < 0) {
                fprintf(stderr, "bench: %s\n", err.msg);
                nvml_close(nvml);
                return 1;
            }
            gpu_inventory_free(inv);
        }
        double per = (now_seconds() - start) / rounds * 1e6;
        printf("%-10s %6d %12.1f\n", nodes[i], rounds, per);
        nvml_close(nvml);
    }
    return 0;
}
