/* Prometheus text for a sample in nvidia_gpu_exporter's schema: its names
 * (nvidia_smi_ + the nvidia-smi field, unit suffix), its scaling (MiB to
 * bytes, MHz to Hz, % to a ratio), its HELP texts (the nvidia-smi field and
 * unit), the lower-case `uuid` label without "GPU-", enums as numbers and
 * unsupported fields left out. Pod labels as in the dcgm schema. */
#include "metrics_internal.h"

#include <ctype.h>
#include <string.h>

#define MIB 1048576.0

struct smi_series {
    const char *name;
    const char *help;
    enum field_id field;
    double scale;
    bool counter;
};

/* Per GPU, in nvidia-smi's order of fields. */
static const struct smi_series gpu_series[] = {
    {"nvidia_smi_pstate", "pstate", F_PSTATE, 1, false},
    {"nvidia_smi_temperature_gpu", "temperature.gpu", F_GPU_TEMP, 1, false},
    {"nvidia_smi_temperature_memory", "temperature.memory", F_MEMORY_TEMP, 1, false},
    {"nvidia_smi_utilization_gpu_ratio", "utilization.gpu [%]", F_GPU_UTIL, 0.01, false},
    {"nvidia_smi_utilization_memory_ratio", "utilization.memory [%]", F_MEM_COPY_UTIL, 0.01, false},
    {"nvidia_smi_utilization_encoder_ratio", "utilization.encoder [%]", F_ENC_UTIL, 0.01, false},
    {"nvidia_smi_utilization_decoder_ratio", "utilization.decoder [%]", F_DEC_UTIL, 0.01, false},
    {"nvidia_smi_memory_total_bytes", "memory.total [MiB]", F_FB_TOTAL, MIB, false},
    {"nvidia_smi_memory_reserved_bytes", "memory.reserved [MiB]", F_FB_RESERVED, MIB, false},
    {"nvidia_smi_memory_used_bytes", "memory.used [MiB]", F_FB_USED, MIB, false},
    {"nvidia_smi_memory_free_bytes", "memory.free [MiB]", F_FB_FREE, MIB, false},
    {"nvidia_smi_fan_speed_ratio", "fan.speed [%]", F_FAN_SPEED, 0.01, false},
    {"nvidia_smi_power_draw_watts", "power.draw [W]", F_POWER_USAGE, 1, false},
    {"nvidia_smi_power_limit_watts", "power.limit [W]", F_POWER_LIMIT, 1, false},
    {"nvidia_smi_enforced_power_limit_watts", "enforced.power.limit [W]", F_ENFORCED_POWER_LIMIT, 1,
     false},
    {"nvidia_smi_power_default_limit_watts", "power.default_limit [W]", F_POWER_DEFAULT_LIMIT, 1,
     false},
    {"nvidia_smi_power_min_limit_watts", "power.min_limit [W]", F_POWER_MIN_LIMIT, 1, false},
    {"nvidia_smi_power_max_limit_watts", "power.max_limit [W]", F_POWER_MAX_LIMIT, 1, false},
    {"nvidia_smi_clocks_current_graphics_clock_hz", "clocks.current.graphics [MHz]",
     F_GRAPHICS_CLOCK, 1e6, false},
    {"nvidia_smi_clocks_current_sm_clock_hz", "clocks.current.sm [MHz]", F_SM_CLOCK, 1e6, false},
    {"nvidia_smi_clocks_current_memory_clock_hz", "clocks.current.memory [MHz]", F_MEM_CLOCK, 1e6,
     false},
    {"nvidia_smi_clocks_current_video_clock_hz", "clocks.current.video [MHz]", F_VIDEO_CLOCK, 1e6,
     false},
    {"nvidia_smi_clocks_max_graphics_clock_hz", "clocks.max.graphics [MHz]", F_MAX_GRAPHICS_CLOCK,
     1e6, false},
    {"nvidia_smi_clocks_max_sm_clock_hz", "clocks.max.sm [MHz]", F_MAX_SM_CLOCK, 1e6, false},
    {"nvidia_smi_clocks_max_memory_clock_hz", "clocks.max.memory [MHz]", F_MAX_MEM_CLOCK, 1e6,
     false},
    {"nvidia_smi_compute_mode", "compute_mode", F_COMPUTE_MODE, 1, false},
    {"nvidia_smi_fabric_state", "fabric.state", F_FABRIC_STATE, 1, false},
    {"nvidia_smi_clocks_event_reasons_supported", "clocks_event_reasons.supported",
     F_CLOCK_EVENT_REASONS_SUPPORTED, 1, false},
    {"nvidia_smi_mig_mode_current", "mig.mode.current", F_MIG_MODE_CURRENT, 1, false},
    {"nvidia_smi_mig_mode_pending", "mig.mode.pending", F_MIG_MODE_PENDING, 1, false},
    {"nvidia_smi_remapped_rows_correctable", "remapped_rows.correctable", F_REMAP_COR, 1, false},
    {"nvidia_smi_remapped_rows_uncorrectable", "remapped_rows.uncorrectable", F_REMAP_UNC, 1,
     false},
    {"nvidia_smi_remapped_rows_pending", "remapped_rows.pending", F_REMAP_PENDING, 1, false},
    {"nvidia_smi_remapped_rows_failure", "remapped_rows.failure", F_REMAP_FAILURE, 1, false},
    {"nvidia_smi_ecc_mode_current", "ecc.mode.current", F_ECC_MODE_CURRENT, 1, false},
    {"nvidia_smi_ecc_mode_pending", "ecc.mode.pending", F_ECC_MODE_PENDING, 1, false},
    /* typed counter, not gauge as nvidia_gpu_exporter has them: they are
     * counters, and Prometheus's lint refuses a gauge named _total */
    {"nvidia_smi_ecc_errors_corrected_volatile_total", "ecc.errors.corrected.volatile.total",
     F_ECC_SBE_VOL, 1, true},
    {"nvidia_smi_ecc_errors_corrected_aggregate_total", "ecc.errors.corrected.aggregate.total",
     F_ECC_SBE_AGG, 1, true},
    {"nvidia_smi_ecc_errors_uncorrected_volatile_total", "ecc.errors.uncorrected.volatile.total",
     F_ECC_DBE_VOL, 1, true},
    {"nvidia_smi_ecc_errors_uncorrected_aggregate_total",
     "ecc.errors.uncorrected.aggregate.total", F_ECC_DBE_AGG, 1, true},
    {"nvidia_smi_retired_pages_single_bit_ecc_count", "retired_pages.single_bit_ecc.count",
     F_RETIRED_SBE, 1, false},
    {"nvidia_smi_retired_pages_double_bit_count", "retired_pages.double_bit.count", F_RETIRED_DBE,
     1, false},
    {"nvidia_smi_retired_pages_pending", "retired_pages.pending", F_RETIRED_PENDING, 1, false},
    {"nvidia_smi_gpu_recovery_action", "gpu_recovery_action", F_RECOVERY_ACTION, 1, false},
    /* nvidia-smi has no query field for these: named in its style */
    {"nvidia_smi_nvlink_crc_flit_errors_total", "nvlink.errors.crc_flit.total", F_NVLINK_CRC_FLIT,
     1, true},
    {"nvidia_smi_nvlink_crc_data_errors_total", "nvlink.errors.crc_data.total", F_NVLINK_CRC_DATA,
     1, true},
    {"nvidia_smi_nvlink_replay_errors_total", "nvlink.errors.replay.total", F_NVLINK_REPLAY, 1,
     true},
    {"nvidia_smi_nvlink_recovery_errors_total", "nvlink.errors.recovery.total",
     F_NVLINK_RECOVERY, 1, true},
    {"nvidia_smi_pcie_throughput_tx_bytes_per_second", "pcie.throughput.tx [B/s]",
     F_PROF_PCIE_TX, 1, false},
    {"nvidia_smi_pcie_throughput_rx_bytes_per_second", "pcie.throughput.rx [B/s]",
     F_PROF_PCIE_RX, 1, false},
    {"nvidia_smi_energy_joules_total", "total_energy_consumption [J]", F_TOTAL_ENERGY, 0.001,
     true},
};

/* NVML's clock event reason bits, as nvidia-smi names them. */
static const struct {
    const char *reason;
    unsigned long long bit;
} reasons[] = {
    {"gpu_idle", 0x1},
    {"applications_clocks_setting", 0x2},
    {"sw_power_cap", 0x4},
    {"hw_slowdown", 0x8},
    {"sync_boost", 0x10},
    {"sw_thermal_slowdown", 0x20},
    {"hw_thermal_slowdown", 0x40},
    {"hw_power_brake_slowdown", 0x80},
};

/* "GPU-5FD4..." -> "5fd4...": nvidia_gpu_exporter's uuid label. */
static void smi_uuid(const char *uuid, char *out, size_t len)
{
    if (strncmp(uuid, "GPU-", 4) == 0)
        uuid += 4;
    size_t i = 0;
    for (; uuid[i] && i + 1 < len; i++)
        out[i] = (char)tolower((unsigned char)uuid[i]);
    out[i] = '\0';
}

static void header(FILE *out, const char *name, const char *help, bool counter)
{
    fprintf(out, "# HELP %s %s\n# TYPE %s %s\n", name, help, name, counter ? "counter" : "gauge");
}

static void pair(FILE *out, const char *key, const char *value)
{
    fprintf(out, ",%s=\"", key);
    render_label_value(out, value);
    fputc('"', out);
}

/* name{uuid="..."<extra>[,pod labels]} value: one line per pod using the
 * device, or one plain line. `extra` is rendered label text (",k=\"v\""). */
static void line(FILE *out, const char *name, const char *uuid, const char *extra,
                 const struct pod_list *pods, double value)
{
    size_t n = pods && pods->count ? pods->count : 1;
    for (size_t p = 0; p < n; p++) {
        fprintf(out, "%s{uuid=\"%s\"%s", name, uuid, extra);
        if (pods && pods->count) {
            pair(out, "container", pods->items[p].container);
            pair(out, "namespace", pods->items[p].namespace);
            pair(out, "pod", pods->items[p].pod);
        }
        fputs("} ", out);
        render_number(out, value);
        fputc('\n', out);
    }
}

static bool usable(const struct render_input *in, size_t i)
{
    return i < in->sample->gpu_count && !in->sample->gpus[i].lost;
}

static void info_series(const struct render_input *in, FILE *out)
{
    const struct gpu_inventory *inv = in->inv;
    char cuda[16] = "";
    if (inv->cuda_driver_version > 0)
        snprintf(cuda, sizeof cuda, "%d.%d", inv->cuda_driver_version / 1000,
                 inv->cuda_driver_version % 1000 / 10);
    header(out, "nvidia_smi_gpu_info",
           "A metric with a constant '1' value labeled by gpu uuid, name, "
           "driver_model_current, driver_model_pending, vbios_version, driver_version, "
           "pci_bus_id, serial, compute_cap, pci_sub_device_id, index and cuda_version.",
           false);
    for (size_t i = 0; i < inv->gpu_count; i++) {
        const struct gpu_device *g = &inv->gpus[i];
        if (g->lost)
            continue;
        char uuid[96], index[16], cc[16] = "";
        smi_uuid(g->uuid, uuid, sizeof uuid);
        snprintf(index, sizeof index, "%u", g->index);
        if (g->cc_major >= 0)
            snprintf(cc, sizeof cc, "%d.%d", g->cc_major, g->cc_minor);
        fprintf(out, "nvidia_smi_gpu_info{uuid=\"%s\"", uuid);
        pair(out, "name", g->name);
        /* Windows driver models: nvidia-smi says [N/A] on Linux. */
        pair(out, "driver_model_current", "[N/A]");
        pair(out, "driver_model_pending", "[N/A]");
        const struct gpu_facts *f = usable(in, i) ? &in->sample->gpus[i].facts : NULL;
        pair(out, "vbios_version", f ? f->vbios_version : "");
        pair(out, "driver_version", inv->driver_version);
        pair(out, "pci_bus_id", g->pci_bus_id);
        pair(out, "serial", g->serial);
        pair(out, "compute_cap", cc);
        pair(out, "pci_sub_device_id", f ? f->pci_sub_device_id : "");
        pair(out, "index", index);
        pair(out, "cuda_version", cuda);
        fputs("} 1\n", out);
    }
    header(out, "nvidia_smi_index", "index", false);
    for (size_t i = 0; i < inv->gpu_count; i++) {
        char uuid[96];
        if (inv->gpus[i].lost)
            continue;
        smi_uuid(inv->gpus[i].uuid, uuid, sizeof uuid);
        line(out, "nvidia_smi_index", uuid, "", NULL, inv->gpus[i].index);
    }
}

static void gpu_values(const struct render_input *in, FILE *out)
{
    for (size_t k = 0; k < sizeof gpu_series / sizeof gpu_series[0]; k++) {
        const struct smi_series *s = &gpu_series[k];
        bool shown = false;
        for (size_t i = 0; i < in->inv->gpu_count; i++) {
            if (!usable(in, i) || !in->sample->gpus[i].gpu.present[s->field])
                continue;
            if (!shown)
                header(out, s->name, s->help, s->counter);
            shown = true;
            char uuid[96];
            smi_uuid(in->inv->gpus[i].uuid, uuid, sizeof uuid);
            line(out, s->name, uuid, "", render_pods_of(in, i, -1),
                 in->sample->gpus[i].gpu.value[s->field] * s->scale);
        }
    }
    /* The reasons: the mask as a number, and one 0/1 series per reason. */
    for (size_t r = 0; r <= sizeof reasons / sizeof reasons[0]; r++) {
        char name[96], help[96];
        if (r == 0) {
            snprintf(name, sizeof name, "nvidia_smi_clocks_event_reasons_active");
            snprintf(help, sizeof help, "clocks_event_reasons.active");
        } else {
            snprintf(name, sizeof name, "nvidia_smi_clocks_event_reasons_%s",
                     reasons[r - 1].reason);
            snprintf(help, sizeof help, "clocks_event_reasons.%s", reasons[r - 1].reason);
        }
        bool shown = false;
        for (size_t i = 0; i < in->inv->gpu_count; i++) {
            const struct device_sample *d = &in->sample->gpus[i].gpu;
            if (!usable(in, i) || !d->present[F_CLOCK_EVENT_REASONS])
                continue;
            if (!shown)
                header(out, name, help, false);
            shown = true;
            char uuid[96];
            smi_uuid(in->inv->gpus[i].uuid, uuid, sizeof uuid);
            unsigned long long mask = (unsigned long long)d->value[F_CLOCK_EVENT_REASONS];
            double v = r == 0 ? (double)mask : (mask & reasons[r - 1].bit) != 0;
            line(out, name, uuid, "", render_pods_of(in, i, -1), v);
        }
    }
}

static void mig_series(const struct render_input *in, FILE *out)
{
    static const struct smi_series mig_values[] = {
        {"nvidia_smi_mig_memory_total_bytes", "mig.memory.total [MiB]", F_FB_TOTAL, MIB, false},
        {"nvidia_smi_mig_memory_reserved_bytes", "mig.memory.reserved [MiB]", F_FB_RESERVED, MIB,
         false},
        {"nvidia_smi_mig_memory_used_bytes", "mig.memory.used [MiB]", F_FB_USED, MIB, false},
        {"nvidia_smi_mig_memory_free_bytes", "mig.memory.free [MiB]", F_FB_FREE, MIB, false},
        /* GPM per GPU instance: the sampler stores ratios */
        {"nvidia_smi_mig_sm_activity_ratio", "mig.sm_activity [%]", F_PROF_SM_ACTIVE, 1, false},
        {"nvidia_smi_mig_tensor_activity_ratio", "mig.tensor_activity [%]", F_PROF_TENSOR, 1,
         false},
    };
    bool shown = false;
    for (size_t i = 0; i < in->inv->gpu_count; i++) {
        const struct gpu_device *g = &in->inv->gpus[i];
        if (!usable(in, i))
            continue;
        char uuid[96];
        smi_uuid(g->uuid, uuid, sizeof uuid);
        for (size_t m = 0; m < g->mig_count; m++) {
            if (!shown)
                header(out, "nvidia_smi_mig_info",
                       "A metric with a constant '1' value labeled by gpu uuid, gpu instance id, "
                       "profile and MIG device uuid.",
                       false);
            shown = true;
            const struct gpu_mig_device *mig = &g->migs[m];
            fprintf(out, "nvidia_smi_mig_info{uuid=\"%s\",gpu_instance_id=\"%u\"", uuid,
                    mig->gpu_instance_id);
            /* nvidia-smi names a compute instance's profile "1c.1g.10gb" */
            char profile[48];
            snprintf(profile, sizeof profile, "%uc.%s", mig->ci_slices, mig->profile);
            pair(out, "profile", profile);
            pair(out, "mig_uuid", mig->uuid);
            fputs("} 1\n", out);
        }
    }
    for (size_t k = 0; k < sizeof mig_values / sizeof mig_values[0]; k++) {
        const struct smi_series *s = &mig_values[k];
        shown = false;
        for (size_t i = 0; i < in->inv->gpu_count; i++) {
            const struct gpu_device *g = &in->inv->gpus[i];
            if (!usable(in, i))
                continue;
            char uuid[96];
            smi_uuid(g->uuid, uuid, sizeof uuid);
            for (size_t m = 0; m < g->mig_count; m++) {
                const struct device_sample *d = &in->sample->gpus[i].migs[m];
                if (!d->present[s->field])
                    continue;
                if (!shown)
                    header(out, s->name, s->help, false);
                shown = true;
                char extra[48];
                snprintf(extra, sizeof extra, ",gpu_instance_id=\"%u\"",
                         g->migs[m].gpu_instance_id);
                line(out, s->name, uuid, extra, render_pods_of(in, i, (int)m),
                     d->value[s->field] * s->scale);
            }
        }
    }
}

/* As nvidia_gpu_exporter's per-process collection: it succeeds only when
 * every GPU's process list was read; when it fails, only the success gauge
 * (0) is shown, so "could not look" never reads as "no processes". */
static void process_series(const struct render_input *in, FILE *out)
{
    bool ok = in->sample->gpu_count == in->inv->gpu_count;
    for (size_t i = 0; ok && i < in->inv->gpu_count; i++)
        ok = usable(in, i) && in->sample->gpus[i].processes_read;
    header(out, "nvidia_smi_compute_apps_last_collect_success",
           "Whether the most recent per-process collection succeeded (1) or not (0).", false);
    fprintf(out, "nvidia_smi_compute_apps_last_collect_success %d\n", ok ? 1 : 0);
    if (!ok || in->inv->gpu_count == 0)
        return;
    for (int pass = 0; pass < 2; pass++) {
        bool shown = false;
        for (size_t i = 0; i < in->inv->gpu_count; i++) {
            const struct gpu_sample *gs = &in->sample->gpus[i];
            char uuid[96];
            smi_uuid(in->inv->gpus[i].uuid, uuid, sizeof uuid);
            for (size_t p = 0; p < gs->process_count; p++) {
                const struct process_sample *ps = &gs->processes[p];
                if (!shown)
                    header(out,
                           pass == 0 ? "nvidia_smi_compute_app_info"
                                     : "nvidia_smi_compute_app_used_memory_bytes",
                           pass == 0 ? "A metric with a constant '1' value labeled by gpu uuid, "
                                       "pid and process_name."
                                     : "used_memory [MiB]",
                           false);
                shown = true;
                fprintf(out, "%s{uuid=\"%s\",pid=\"%u\"",
                        pass == 0 ? "nvidia_smi_compute_app_info"
                                  : "nvidia_smi_compute_app_used_memory_bytes",
                        uuid, ps->pid);
                pair(out, "process_name", ps->name);
                fputs("} ", out);
                render_number(out, pass == 0 ? 1 : (double)ps->used_bytes);
                fputc('\n', out);
            }
        }
    }
    header(out, "nvidia_smi_compute_apps", "Number of processes with a compute context on the GPU.",
           false);
    for (size_t i = 0; i < in->inv->gpu_count; i++) {
        char uuid[96];
        smi_uuid(in->inv->gpus[i].uuid, uuid, sizeof uuid);
        fprintf(out, "nvidia_smi_compute_apps{uuid=\"%s\"} %zu\n", uuid,
                in->sample->gpus[i].process_total);
    }
}

static void xid_series(const struct render_input *in, FILE *out)
{
    bool shown = false;
    for (size_t i = 0; i < in->inv->gpu_count; i++) {
        const struct xid_stats *x = &in->xids[i];
        char uuid[96];
        smi_uuid(in->inv->gpus[i].uuid, uuid, sizeof uuid);
        for (size_t k = 0; k < x->kinds; k++) {
            if (!shown)
                header(out, "nvidia_smi_xid_errors_total", "xid_errors, by xid", true);
            shown = true;
            char extra[40];
            snprintf(extra, sizeof extra, ",xid=\"%llu\"", x->items[k].code);
            line(out, "nvidia_smi_xid_errors_total", uuid, extra, render_pods_of(in, i, -1),
                 (double)x->items[k].count);
        }
    }
    shown = false;
    for (size_t i = 0; i < in->inv->gpu_count; i++) {
        const struct xid_stats *x = &in->xids[i];
        if (x->kinds == 0)
            continue;
        if (!shown)
            header(out, "nvidia_smi_xid_last_timestamp_seconds", "xid_errors.last_timestamp [s]",
                   false);
        shown = true;
        char uuid[96];
        smi_uuid(in->inv->gpus[i].uuid, uuid, sizeof uuid);
        line(out, "nvidia_smi_xid_last_timestamp_seconds", uuid, "", render_pods_of(in, i, -1),
             x->last_unix);
    }
}

void render_smi(const struct render_input *in, FILE *out)
{
    info_series(in, out);
    gpu_values(in, out);
    mig_series(in, out);
    process_series(in, out);
    xid_series(in, out);
    const struct sample *s = in->sample;
    bool ok = s->gpu_count == in->inv->gpu_count;
    for (size_t i = 0; i < s->gpu_count; i++)
        ok = ok && !s->gpus[i].lost;
    fprintf(out,
            "# HELP nvidia_smi_last_collect_success Whether the last NVML sample read every GPU.\n"
            "# TYPE nvidia_smi_last_collect_success gauge\n"
            "nvidia_smi_last_collect_success %d\n"
            "# HELP nvidia_smi_last_collect_timestamp_seconds When the last NVML sample was "
            "taken.\n"
            "# TYPE nvidia_smi_last_collect_timestamp_seconds gauge\n"
            "nvidia_smi_last_collect_timestamp_seconds %.3f\n"
            "# HELP nvidia_smi_last_collect_duration_seconds Time the last NVML sample took.\n"
            "# TYPE nvidia_smi_last_collect_duration_seconds gauge\n"
            "nvidia_smi_last_collect_duration_seconds %.6f\n"
            "# HELP nvidia_smi_failed_scrapes_total NVML samples in which a call failed.\n"
            "# TYPE nvidia_smi_failed_scrapes_total counter\n"
            "nvidia_smi_failed_scrapes_total %lu\n",
            ok ? 1 : 0, s->taken_unix, s->duration_s, s->failed_rounds);
}
