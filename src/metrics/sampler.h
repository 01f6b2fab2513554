/* Inside the metrics module: the sampler's own state, kept between rounds
 * on the sampler thread (GPM samples, NVLink counters, error counts). */
#ifndef GPULET_METRICS_SAMPLER_H
#define GPULET_METRICS_SAMPLER_H

#include "metrics_internal.h"

struct gpm_state {
    bool supported;
    bool filled;
    unsigned int current;
    nvmlGpmSample_t samples[2];
};

struct nvlink_state {
    bool seen;
    unsigned long long kib;
    struct timespec at;
};

/* NVML field values read per GPU in one call (sample.c's table). */
#define N_FIELD_READS 20

struct sampler {
    struct nvml *nvml;
    const struct gpu_inventory *inv;
    unsigned long seq;
    struct gpm_state *gpm;
    /* per GPU: one per MIG device of the inventory, NULL without GPM MIG */
    struct gpm_state **mig_gpm;
    struct gpu_facts *facts;
    struct nvlink_state *nvlink;
    size_t error_calls;
    struct nvml_error_count errors[MAX_ERROR_CALLS];
    nvmlGpmMetricsGet_t gpm_request; /* large: kept here, not on the stack */
    nvmlProcessInfo_t processes[MAX_PROCESSES];
    nvmlFieldValue_t fields[N_FIELD_READS];
    bool round_failed;
    unsigned long failed_rounds;
};

int sampler_init(struct sampler *sm, struct nvml *nvml, const struct gpu_inventory *inv);
/* One round; NULL only when out of memory. */
struct sample *sampler_take(struct sampler *sm);
void sampler_release(struct sampler *sm);

#endif
