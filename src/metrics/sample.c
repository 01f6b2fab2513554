/* The sampler's reads: one round over every GPU and MIG device. Runs on
 * the sampler thread; only NVML and the immutable inventory are touched. */
#include "sampler.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "log/log.h"

#define MIB (1024.0 * 1024.0)

void sample_free(struct sample *s)
{
    if (s == NULL)
        return;
    for (size_t i = 0; i < s->gpu_count; i++) {
        free(s->gpus[i].migs);
        free(s->gpus[i].processes);
    }
    free(s->gpus);
    free(s);
}

/* Counts a failed call by name ("nvmlDeviceGetPowerUsage on GPU 3 failed:
 * ..." -> nvmlDeviceGetPowerUsage); NOT_SUPPORTED is an answer, not an error. */
static void count_error(struct sampler *sm, const struct gpulet_error *err)
{
    if (nvml_unsupported(err))
        return;
    sm->round_failed = true;
    char call[64];
    size_t n = strcspn(err->msg, " ");
    if (n >= sizeof call)
        n = sizeof call - 1;
    memcpy(call, err->msg, n);
    call[n] = '\0';
    for (size_t i = 0; i < sm->error_calls; i++) {
        if (strcmp(sm->errors[i].call, call) == 0) {
            sm->errors[i].count++;
            return;
        }
    }
    if (sm->error_calls < MAX_ERROR_CALLS) {
        snprintf(sm->errors[sm->error_calls].call, sizeof sm->errors[0].call, "%s", call);
        sm->errors[sm->error_calls++].count = 1;
    }
}

static void set(struct device_sample *d, enum field_id f, double v)
{
    d->present[f] = true;
    d->value[f] = v;
}

/* rc 0: store; NOT_SUPPORTED: leave out; else count the error. */
#define READ(call, then)                                                                      \
    do {                                                                                      \
        if ((call) == 0) {                                                                    \
            then;                                                                             \
        } else {                                                                              \
            count_error(sm, &err);                                                            \
        }                                                                                     \
    } while (0)

/* The field values read in one call per GPU (NVML field id -> gpulet
 * field). The NVLink throughput pair comes first: its rate needs both. */
static const struct field_read {
    unsigned int nvml;
    enum field_id field; /* FIELD_COUNT: used by hand */
    bool all_links;      /* scopeId UINT_MAX: the sum over the links */
} field_reads[] = {
    {NVML_FI_DEV_NVLINK_THROUGHPUT_DATA_TX, FIELD_COUNT, true},
    {NVML_FI_DEV_NVLINK_THROUGHPUT_DATA_RX, FIELD_COUNT, true},
    {NVML_FI_DEV_MEMORY_TEMP, F_MEMORY_TEMP, false},
    {NVML_FI_DEV_REMAPPED_COR, F_REMAP_COR, false},
    {NVML_FI_DEV_REMAPPED_UNC, F_REMAP_UNC, false},
    {NVML_FI_DEV_REMAPPED_FAILURE, F_REMAP_FAILURE, false},
    {NVML_FI_DEV_ECC_CURRENT, F_ECC_MODE_CURRENT, false},
    {NVML_FI_DEV_ECC_PENDING, F_ECC_MODE_PENDING, false},
    {NVML_FI_DEV_ECC_SBE_VOL_TOTAL, F_ECC_SBE_VOL, false},
    {NVML_FI_DEV_ECC_DBE_VOL_TOTAL, F_ECC_DBE_VOL, false},
    {NVML_FI_DEV_ECC_SBE_AGG_TOTAL, F_ECC_SBE_AGG, false},
    {NVML_FI_DEV_ECC_DBE_AGG_TOTAL, F_ECC_DBE_AGG, false},
    {NVML_FI_DEV_RETIRED_SBE, F_RETIRED_SBE, false},
    {NVML_FI_DEV_RETIRED_DBE, F_RETIRED_DBE, false},
    {NVML_FI_DEV_RETIRED_PENDING, F_RETIRED_PENDING, false},
    {NVML_FI_DEV_NVLINK_CRC_FLIT_ERROR_COUNT_TOTAL, F_NVLINK_CRC_FLIT, false},
    {NVML_FI_DEV_NVLINK_CRC_DATA_ERROR_COUNT_TOTAL, F_NVLINK_CRC_DATA, false},
    {NVML_FI_DEV_NVLINK_REPLAY_ERROR_COUNT_TOTAL, F_NVLINK_REPLAY, false},
    {NVML_FI_DEV_NVLINK_RECOVERY_ERROR_COUNT_TOTAL, F_NVLINK_RECOVERY, false},
    {NVML_FI_DEV_GET_GPU_RECOVERY_ACTION, F_RECOVERY_ACTION, false},
};

_Static_assert(sizeof field_reads / sizeof field_reads[0] == N_FIELD_READS,
               "sampler.h's N_FIELD_READS is the table's length");

static double field_value(const nvmlFieldValue_t *f)
{
    switch (f->valueType) {
    case NVML_VALUE_TYPE_DOUBLE: return f->value.dVal;
    case NVML_VALUE_TYPE_UNSIGNED_LONG: return (double)f->value.ulVal;
    case NVML_VALUE_TYPE_UNSIGNED_LONG_LONG: return (double)f->value.ullVal;
    case NVML_VALUE_TYPE_SIGNED_LONG_LONG: return (double)f->value.sllVal;
    case NVML_VALUE_TYPE_SIGNED_INT: return f->value.siVal;
    case NVML_VALUE_TYPE_UNSIGNED_SHORT: return f->value.usVal;
    default: return f->value.uiVal;
    }
}

static double seconds_between(const struct timespec *a, const struct timespec *b)
{
    return (double)(b->tv_sec - a->tv_sec) + (double)(b->tv_nsec - a->tv_nsec) / 1e9;
}

struct gpm_map {
    unsigned int metric;
    enum field_id field;
    double scale;
};

/* Takes the next GPM sample of a GPU (gi < 0) or of one of its GPU
 * instances and, from the second sample on, fills the metrics of map. */
static void gpm_round(struct sampler *sm, const struct nvml_device *dev, struct gpm_state *g,
                      long gi, const struct gpm_map *map, size_t n, struct device_sample *d)
{
    struct gpulet_error err = {0};
    nvmlGpmSample_t next = g->samples[g->current ^ 1];
    int rc = gi < 0 ? nvml_device_gpm_sample(sm->nvml, dev, next, &err)
                    : nvml_device_gpm_mig_sample(sm->nvml, dev, (unsigned int)gi, next, &err);
    if (rc < 0) {
        count_error(sm, &err);
        return;
    }
    bool had = g->filled;
    g->filled = true;
    g->current ^= 1;
    if (!had)
        return; /* the metrics need two samples */
    nvmlGpmMetricsGet_t *m = &sm->gpm_request;
    memset(m, 0, sizeof *m);
    m->numMetrics = (unsigned int)n;
    m->sample1 = g->samples[g->current ^ 1];
    m->sample2 = g->samples[g->current];
    for (size_t k = 0; k < n; k++)
        m->metrics[k].metricId = map[k].metric;
    if (nvml_gpm_metrics(sm->nvml, dev, m, &err) < 0) {
        count_error(sm, &err);
        return;
    }
    for (size_t k = 0; k < n; k++)
        if (m->metrics[k].nvmlReturn == NVML_SUCCESS)
            set(d, map[k].field, m->metrics[k].value * map[k].scale);
}

static void read_gpm(struct sampler *sm, size_t i, const struct nvml_device *dev,
                     struct device_sample *d)
{
    static const struct gpm_map map[] = {
        {NVML_GPM_METRIC_GRAPHICS_UTIL, F_PROF_GR_ENGINE, 0.01},
        {NVML_GPM_METRIC_ANY_TENSOR_UTIL, F_PROF_TENSOR, 0.01},
        {NVML_GPM_METRIC_DRAM_BW_UTIL, F_PROF_DRAM, 0.01},
        {NVML_GPM_METRIC_PCIE_TX_PER_SEC, F_PROF_PCIE_TX, MIB},
        {NVML_GPM_METRIC_PCIE_RX_PER_SEC, F_PROF_PCIE_RX, MIB},
        {NVML_GPM_METRIC_SM_UTIL, F_PROF_SM_ACTIVE, 0.01},
        {NVML_GPM_METRIC_SM_OCCUPANCY, F_PROF_SM_OCCUPANCY, 0.01},
        {NVML_GPM_METRIC_FP64_UTIL, F_PROF_FP64, 0.01},
        {NVML_GPM_METRIC_FP32_UTIL, F_PROF_FP32, 0.01},
        {NVML_GPM_METRIC_FP16_UTIL, F_PROF_FP16, 0.01},
    };
    if (sm->gpm[i].supported)
        gpm_round(sm, dev, &sm->gpm[i], -1, map, sizeof map / sizeof map[0], d);
}

/* Per MIG device, its GPU instance's SM and tensor activity (the
 * nvidia-smi schema's mig_sm_activity and mig_tensor_activity). */
static void read_mig_gpm(struct sampler *sm, size_t i, const struct nvml_device *dev,
                         struct gpu_sample *out)
{
    static const struct gpm_map map[] = {
        {NVML_GPM_METRIC_SM_UTIL, F_PROF_SM_ACTIVE, 0.01},
        {NVML_GPM_METRIC_ANY_TENSOR_UTIL, F_PROF_TENSOR, 0.01},
    };
    const struct gpu_device *g = &sm->inv->gpus[i];
    for (size_t m = 0; sm->mig_gpm[i] && m < g->mig_count; m++)
        if (sm->mig_gpm[i][m].supported)
            gpm_round(sm, dev, &sm->mig_gpm[i][m], g->migs[m].gpu_instance_id, map,
                      sizeof map / sizeof map[0], &out->migs[m]);
}

/* The fields nvidia-smi's users chart beyond dcgm-exporter's defaults. */
static void read_more(struct sampler *sm, const struct nvml_device *dev, struct device_sample *d)
{
    struct gpulet_error err = {0};
    unsigned int u, u2;
    int v;
    unsigned long long ull;
    READ(nvml_device_clock(sm->nvml, dev, NVML_CLOCK_GRAPHICS, &u, &err),
         set(d, F_GRAPHICS_CLOCK, u));
    READ(nvml_device_clock(sm->nvml, dev, NVML_CLOCK_VIDEO, &u, &err), set(d, F_VIDEO_CLOCK, u));
    READ(nvml_device_max_clock(sm->nvml, dev, NVML_CLOCK_GRAPHICS, &u, &err),
         set(d, F_MAX_GRAPHICS_CLOCK, u));
    READ(nvml_device_max_clock(sm->nvml, dev, NVML_CLOCK_SM, &u, &err), set(d, F_MAX_SM_CLOCK, u));
    READ(nvml_device_max_clock(sm->nvml, dev, NVML_CLOCK_MEM, &u, &err),
         set(d, F_MAX_MEM_CLOCK, u));
    READ(nvml_device_power_management_limit(sm->nvml, dev, &u, &err),
         set(d, F_POWER_LIMIT, u / 1000.0));
    READ(nvml_device_power_default_limit(sm->nvml, dev, &u, &err),
         set(d, F_POWER_DEFAULT_LIMIT, u / 1000.0));
    READ(nvml_device_power_limit_range(sm->nvml, dev, &u, &u2, &err),
         (set(d, F_POWER_MIN_LIMIT, u / 1000.0), set(d, F_POWER_MAX_LIMIT, u2 / 1000.0)));
    READ(nvml_device_power_limit(sm->nvml, dev, &u, &err),
         set(d, F_ENFORCED_POWER_LIMIT, u / 1000.0));
    /* 32 is NVML's "unknown" P-state: left out, as nvidia-smi's [N/A] */
    READ(nvml_device_pstate(sm->nvml, dev, &v, &err),
         if (v >= 0 && v <= 15) set(d, F_PSTATE, v));
    READ(nvml_device_fan_speed(sm->nvml, dev, &u, &err), set(d, F_FAN_SPEED, u));
    READ(nvml_device_compute_mode(sm->nvml, dev, &v, &err), set(d, F_COMPUTE_MODE, v));
    READ(nvml_device_clock_event_reasons(sm->nvml, dev, &ull, &err),
         set(d, F_CLOCK_EVENT_REASONS, (double)ull));
    unsigned int corr, unc, pending, failed;
    READ(nvml_device_remapped_rows(sm->nvml, dev, &corr, &unc, &pending, &failed, &err),
         set(d, F_REMAP_PENDING, pending));
    READ(nvml_device_mig_mode(sm->nvml, dev, &u, &u2, &err),
         (set(d, F_MIG_MODE_CURRENT, u), set(d, F_MIG_MODE_PENDING, u2)));
    /* 0 is NVML's "not supported" state: left out, as nvidia-smi's [N/A] */
    struct nvml_fabric fabric;
    READ(nvml_device_fabric(sm->nvml, dev, &fabric, &err),
         if (fabric.state >= 1 && fabric.state <= 3) set(d, F_FABRIC_STATE, fabric.state));
}

/* /proc/PID/comm, or "" when the process is gone or in another namespace. */
static void process_name(unsigned int pid, char *buf, size_t len)
{
    char path[32];
    buf[0] = '\0';
    snprintf(path, sizeof path, "/proc/%u/comm", pid);
    FILE *f = fopen(path, "re");
    if (f == NULL)
        return;
    if (fgets(buf, (int)len, f) == NULL)
        buf[0] = '\0';
    buf[strcspn(buf, "\n")] = '\0';
    fclose(f);
}

/* A GPU busier than sm->processes holds: NVML answers INSUFFICIENT_SIZE
 * with the count and fills nothing, so the list is read again into a
 * buffer that holds it (a few more for processes starting meanwhile),
 * PROCESSES_READ_MAX at most. Returns the list (to free), or NULL. */
static nvmlProcessInfo_t *read_long_list(struct sampler *sm, const struct nvml_device *dev,
                                         unsigned int *n, struct gpulet_error *err)
{
    for (int attempt = 0; attempt < 3; attempt++) {
        if (*n > PROCESSES_READ_MAX)
            return NULL;
        unsigned int room = *n + 16 < PROCESSES_READ_MAX ? *n + 16 : PROCESSES_READ_MAX;
        nvmlProcessInfo_t *list = malloc(room * sizeof *list);
        if (list == NULL)
            return NULL;
        *n = room;
        gpulet_error_clear(err);
        if (nvml_device_compute_processes(sm->nvml, dev, n, list, err) == 0)
            return list;
        free(list);
        if (err->kind != GPULET_ERR_NVML || err->nvml != NVML_ERROR_INSUFFICIENT_SIZE)
            return NULL;
    }
    return NULL;
}

/* The first MAX_PROCESSES processes get their series; process_total
 * counts them all. */
static void read_processes(struct sampler *sm, const struct nvml_device *dev,
                           struct gpu_sample *out)
{
    struct gpulet_error err = {0};
    unsigned int n = MAX_PROCESSES;
    nvmlProcessInfo_t *list = sm->processes, *long_list = NULL;
    if (nvml_device_compute_processes(sm->nvml, dev, &n, list, &err) < 0) {
        if (err.kind == GPULET_ERR_NVML && err.nvml == NVML_ERROR_INSUFFICIENT_SIZE)
            list = long_list = read_long_list(sm, dev, &n, &err);
        if (long_list == NULL) {
            count_error(sm, &err);
            return;
        }
    }
    out->processes_read = n == 0;
    out->process_total = n;
    unsigned int kept = n < MAX_PROCESSES ? n : MAX_PROCESSES;
    if (kept > 0)
        out->processes = calloc(kept, sizeof *out->processes);
    if (out->processes) {
        out->processes_read = true;
        for (unsigned int k = 0; k < kept; k++) {
            struct process_sample *p = &out->processes[k];
            p->pid = list[k].pid;
            p->used_bytes = list[k].usedGpuMemory;
            process_name(p->pid, p->name, sizeof p->name);
        }
        out->process_count = kept;
    }
    free(long_list);
}

static void read_gpu(struct sampler *sm, size_t i, const struct timespec *now,
                     struct gpu_sample *out)
{
    const struct gpu_device *g = &sm->inv->gpus[i];
    struct device_sample *d = &out->gpu;
    struct gpulet_error err = {0};
    struct nvml_device dev;
    if (nvml_device_by_index(sm->nvml, (unsigned)i, &dev, &err) < 0) {
        out->lost = nvml_gpu_lost(&err);
        count_error(sm, &err);
        return;
    }
    unsigned int u;
    unsigned long long ull;
    READ(nvml_device_clock(sm->nvml, &dev, NVML_CLOCK_SM, &u, &err), set(d, F_SM_CLOCK, u));
    if (nvml_gpu_lost(&err)) {
        out->lost = true;
        return;
    }
    READ(nvml_device_clock(sm->nvml, &dev, NVML_CLOCK_MEM, &u, &err), set(d, F_MEM_CLOCK, u));
    READ(nvml_device_temperature(sm->nvml, &dev, &u, &err),
         if (u <= 200) set(d, F_GPU_TEMP, u));
    READ(nvml_device_power_usage(sm->nvml, &dev, &u, &err), set(d, F_POWER_USAGE, u / 1000.0));
    READ(nvml_device_energy(sm->nvml, &dev, &ull, &err), set(d, F_TOTAL_ENERGY, (double)ull));
    READ(nvml_device_pcie_replays(sm->nvml, &dev, &u, &err), set(d, F_PCIE_REPLAY, u));
    nvmlUtilization_t util;
    READ(nvml_device_utilization(sm->nvml, &dev, &util, &err),
         (set(d, F_GPU_UTIL, util.gpu), set(d, F_MEM_COPY_UTIL, util.memory)));
    READ(nvml_device_encoder_utilization(sm->nvml, &dev, &u, &err), set(d, F_ENC_UTIL, u));
    READ(nvml_device_decoder_utilization(sm->nvml, &dev, &u, &err), set(d, F_DEC_UTIL, u));
    struct nvml_memory mem;
    READ(nvml_device_memory(sm->nvml, &dev, &mem, &err),
         (set(d, F_FB_FREE, (double)(mem.free / (1024 * 1024))),
          set(d, F_FB_USED, (double)(mem.used / (1024 * 1024))),
          set(d, F_FB_RESERVED, (double)(mem.reserved / (1024 * 1024))),
          set(d, F_FB_TOTAL, (double)(mem.total / (1024 * 1024)))));

    nvmlFieldValue_t *fv = sm->fields;
    memset(fv, 0, sizeof sm->fields);
    for (size_t k = 0; k < N_FIELD_READS; k++) {
        fv[k].fieldId = field_reads[k].nvml;
        fv[k].scopeId = field_reads[k].all_links ? 0xFFFFFFFFU : 0;
    }
    if (nvml_device_field_values(sm->nvml, &dev, (int)N_FIELD_READS, fv, &err) == 0) {
        for (size_t k = 0; k < N_FIELD_READS; k++)
            if (fv[k].nvmlReturn == NVML_SUCCESS && field_reads[k].field != FIELD_COUNT)
                set(d, field_reads[k].field, field_value(&fv[k]));
        if (d->present[F_MEMORY_TEMP] && d->value[F_MEMORY_TEMP] > 200)
            d->present[F_MEMORY_TEMP] = false;
        /* fields 0 and 1 of the table: NVLink data sent and received */
        if (fv[0].nvmlReturn == NVML_SUCCESS && fv[1].nvmlReturn == NVML_SUCCESS) {
            /* As DCGM: a rate, (delta KiB / delta seconds) / 1000. */
            unsigned long long total = fv[0].value.ullVal + fv[1].value.ullVal;
            struct nvlink_state *nl = &sm->nvlink[i];
            if (nl->seen && total >= nl->kib) {
                double dt = seconds_between(&nl->at, now);
                if (dt > 0)
                    set(d, F_NVLINK_BANDWIDTH, (double)(total - nl->kib) / dt / 1000.0);
            }
            nl->seen = true;
            nl->kib = total;
            nl->at = *now;
        }
    } else {
        count_error(sm, &err);
    }
    read_gpm(sm, i, &dev, d);
    read_more(sm, &dev, d);
    read_processes(sm, &dev, out);
    read_mig_gpm(sm, i, &dev, out);
    out->facts = sm->facts[i];
    if (out->facts.reasons_supported_known)
        set(d, F_CLOCK_EVENT_REASONS_SUPPORTED, (double)out->facts.reasons_supported);

    for (size_t m = 0; m < g->mig_count; m++) {
        struct nvml_device mig;
        if (nvml_device_mig_by_index(sm->nvml, &dev, g->migs[m].index, &mig, &err) < 0) {
            count_error(sm, &err);
            continue;
        }
        struct device_sample *md = &out->migs[m];
        READ(nvml_device_memory(sm->nvml, &mig, &mem, &err),
             (set(md, F_FB_FREE, (double)(mem.free / (1024 * 1024))),
              set(md, F_FB_USED, (double)(mem.used / (1024 * 1024))),
              set(md, F_FB_RESERVED, (double)(mem.reserved / (1024 * 1024))),
              set(md, F_FB_TOTAL, (double)(mem.total / (1024 * 1024)))));
    }
}

struct sample *sampler_take(struct sampler *sm)
{
    struct sample *s = calloc(1, sizeof *s);
    if (s == NULL)
        return NULL;
    size_t n = sm->inv->gpu_count;
    s->gpus = calloc(n + 1, sizeof *s->gpus);
    if (s->gpus == NULL) {
        free(s);
        return NULL;
    }
    s->gpu_count = n;
    for (size_t i = 0; i < n; i++) {
        s->gpus[i].migs = calloc(sm->inv->gpus[i].mig_count + 1, sizeof *s->gpus[i].migs);
        if (s->gpus[i].migs == NULL) {
            sample_free(s);
            return NULL;
        }
    }
    struct timespec start, end, wall;
    clock_gettime(CLOCK_MONOTONIC, &start);
    sm->round_failed = false;
    for (size_t i = 0; i < n; i++)
        read_gpu(sm, i, &start, &s->gpus[i]);
    clock_gettime(CLOCK_MONOTONIC, &end);
    clock_gettime(CLOCK_REALTIME, &wall);
    sm->failed_rounds += sm->round_failed;
    s->failed_rounds = sm->failed_rounds;
    s->taken_unix = (double)wall.tv_sec + (double)wall.tv_nsec / 1e9;
    s->seq = ++sm->seq;
    s->taken = end;
    s->duration_s = seconds_between(&start, &end);
    s->error_calls = sm->error_calls;
    memcpy(s->errors, sm->errors, sizeof s->errors);
    return s;
}

/* Both samples of a GPM state; marks it supported. */
static int gpm_alloc(struct sampler *sm, struct gpm_state *g)
{
    struct gpulet_error err = {0};
    if (nvml_gpm_sample_alloc(sm->nvml, &g->samples[0], &err) < 0 ||
        nvml_gpm_sample_alloc(sm->nvml, &g->samples[1], &err) < 0)
        return -1;
    g->supported = true;
    return 0;
}

static void gpm_free(struct sampler *sm, struct gpm_state *g)
{
    nvml_gpm_sample_free(sm->nvml, g->samples[0]);
    nvml_gpm_sample_free(sm->nvml, g->samples[1]);
}

/* What does not change while the driver runs: read once, not per round. */
static void read_facts(struct sampler *sm, const struct nvml_device *dev, struct gpu_facts *f)
{
    struct gpulet_error err = {0};
    if (nvml_device_vbios_version(sm->nvml, dev, f->vbios_version, sizeof f->vbios_version,
                                  &err) < 0)
        f->vbios_version[0] = '\0';
    nvmlPciInfo_t pci;
    if (nvml_device_pci(sm->nvml, dev, &pci, &err) == 0)
        snprintf(f->pci_sub_device_id, sizeof f->pci_sub_device_id, "0x%08X",
                 pci.pciSubSystemId);
    f->reasons_supported_known =
        nvml_device_supported_clock_event_reasons(sm->nvml, dev, &f->reasons_supported, &err) ==
        0;
}

int sampler_init(struct sampler *sm, struct nvml *nvml, const struct gpu_inventory *inv)
{
    memset(sm, 0, sizeof *sm);
    sm->nvml = nvml;
    sm->inv = inv;
    size_t n = inv->gpu_count;
    sm->nvlink = calloc(n + 1, sizeof *sm->nvlink);
    sm->gpm = calloc(n + 1, sizeof *sm->gpm);
    sm->mig_gpm = calloc(n + 1, sizeof *sm->mig_gpm);
    sm->facts = calloc(n + 1, sizeof *sm->facts);
    if (sm->nvlink == NULL || sm->gpm == NULL || sm->mig_gpm == NULL || sm->facts == NULL)
        return -1;
    for (size_t i = 0; i < n; i++) {
        struct gpulet_error err = {0};
        struct nvml_device dev;
        if (nvml_device_by_index(nvml, (unsigned)i, &dev, &err) < 0)
            continue;
        read_facts(sm, &dev, &sm->facts[i]);
        bool supported = false;
        if (nvml_device_gpm_supported(nvml, &dev, &supported, &err) < 0 || !supported)
            continue;
        if (gpm_alloc(sm, &sm->gpm[i]) < 0) {
            log_warn("GPM samples cannot be allocated; no profiling metrics", "gpu=%zu", i);
            continue;
        }
        size_t migs = inv->gpus[i].mig_count;
        if (migs == 0 || (sm->mig_gpm[i] = calloc(migs, sizeof *sm->mig_gpm[i])) == NULL)
            continue;
        for (size_t m = 0; m < migs; m++)
            if (gpm_alloc(sm, &sm->mig_gpm[i][m]) < 0)
                log_warn("GPM samples cannot be allocated; no MIG activity metrics",
                         "gpu=%zu mig=%zu", i, m);
    }
    return 0;
}

void sampler_release(struct sampler *sm)
{
    for (size_t i = 0; sm->gpm && i < sm->inv->gpu_count; i++)
        gpm_free(sm, &sm->gpm[i]);
    for (size_t i = 0; sm->mig_gpm && i < sm->inv->gpu_count; i++) {
        for (size_t m = 0; sm->mig_gpm[i] && m < sm->inv->gpus[i].mig_count; m++)
            gpm_free(sm, &sm->mig_gpm[i][m]);
        free(sm->mig_gpm[i]);
    }
    free(sm->mig_gpm);
    free(sm->facts);
    free(sm->gpm);
    free(sm->nvlink);
    sm->gpm = NULL;
    sm->mig_gpm = NULL;
    sm->facts = NULL;
    sm->nvlink = NULL;
}
