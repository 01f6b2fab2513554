/* Prometheus text format 0.0.4 for a sample: dcgm-exporter's series and
 * labels, one series per pod for a shared device. */
#include "metrics_internal.h"

#include <math.h>
#include <stdlib.h>
#include <string.h>

void render_label_value(FILE *out, const char *value)
{
    for (const char *p = value; *p; p++) {
        if (*p == '\\' || *p == '"')
            fputc('\\', out), fputc(*p, out);
        else if (*p == '\n')
            fputs("\\n", out);
        else
            fputc(*p, out);
    }
}

void render_number(FILE *out, double v)
{
    if (v == floor(v) && fabs(v) < 1e15) {
        fprintf(out, "%.0f", v);
        return;
    }
    /* The shortest of 15 or 17 digits that reads back as v: 0.91 stays
     * 0.91, and a Unix time keeps its milliseconds. */
    char text[32];
    snprintf(text, sizeof text, "%.15g", v);
    if (strtod(text, NULL) != v)
        snprintf(text, sizeof text, "%.17g", v);
    fputs(text, out);
}

static void label(FILE *out, bool *first, const char *key, const char *value)
{
    fprintf(out, "%s%s=\"", *first ? "" : ",", key);
    render_label_value(out, value);
    fputc('"', out);
    *first = false;
}

/* The labels every sample of a device carries. */
static void device_labels(FILE *out, const struct render_input *in, const struct gpu_device *g,
                          const struct gpu_mig_device *m, const struct pod_ref *pod)
{
    char index[16], device[32], id[16];
    bool first = true;
    snprintf(index, sizeof index, "%u", g->index);
    snprintf(device, sizeof device, "nvidia%u", g->minor);
    label(out, &first, "gpu", index);
    label(out, &first, "UUID", g->uuid);
    label(out, &first, "pci_bus_id", g->pci_bus_id);
    label(out, &first, "device", device);
    label(out, &first, "modelName", g->name);
    if (m) {
        snprintf(id, sizeof id, "%u", m->gpu_instance_id);
        label(out, &first, "GPU_I_PROFILE", m->profile);
        label(out, &first, "GPU_I_ID", id);
    }
    if (in->hostname_label != HOSTNAME_LABEL_NONE)
        label(out, &first, in->hostname_label == HOSTNAME_LABEL_UPPER ? "Hostname" : "hostname",
              in->hostname);
    for (size_t i = 0; i < in->fields->count; i++) {
        const struct field *f = &in->fields->items[i];
        if (f->type != FIELD_LABEL)
            continue;
        const char *v = f->id == F_LABEL_DRIVER_VERSION ? in->inv->driver_version
                        : f->id == F_LABEL_DEV_NAME     ? g->name
                        : f->id == F_LABEL_DEV_SERIAL   ? g->serial
                        : f->id == F_LABEL_DEV_UUID     ? (m ? m->uuid : g->uuid)
                                                        : g->pci_bus_id;
        label(out, &first, f->name, v);
    }
    if (pod) {
        label(out, &first, "container", pod->container);
        label(out, &first, "namespace", pod->namespace);
        label(out, &first, "pod", pod->pod);
    }
}

/* One line per pod using the device, or one plain line. */
static void series(FILE *out, const struct render_input *in, const char *name,
                   const struct gpu_device *g, const struct gpu_mig_device *m,
                   const struct pod_list *pods, const char *extra_key, const char *extra_value,
                   double value)
{
    size_t n = pods && pods->count ? pods->count : 1;
    for (size_t p = 0; p < n; p++) {
        fprintf(out, "%s{", name);
        device_labels(out, in, g, m, pods && pods->count ? &pods->items[p] : NULL);
        if (extra_key) {
            fprintf(out, ",%s=\"", extra_key);
            render_label_value(out, extra_value);
            fputc('"', out);
        }
        fputs("} ", out);
        render_number(out, value);
        fputc('\n', out);
    }
}

int render_usage_compare(const void *a, const void *b)
{
    const struct metrics_limit *x = a, *y = b;
    if (x->gpu != y->gpu)
        return x->gpu < y->gpu ? -1 : 1;
    int c = strcmp(x->pod, y->pod);
    if (c == 0)
        c = strcmp(x->namespace, y->namespace);
    return c ? c : strcmp(x->container, y->container);
}

/* DCGM_FI_DEV_FB_USED of a GPU shared by slices: each pod whose container
 * the interposer counts shows its own memory, not the whole GPU's. */
static void fb_used_series(FILE *out, const struct render_input *in, const char *name,
                           const struct gpu_device *g, const struct pod_list *pods, double whole)
{
    for (size_t p = 0; p < pods->count; p++) {
        const struct pod_ref *r = &pods->items[p];
        struct metrics_limit key = {.gpu = (unsigned int)(g - in->inv->gpus)};
        snprintf(key.pod, sizeof key.pod, "%s", r->pod);
        snprintf(key.namespace, sizeof key.namespace, "%s", r->namespace);
        snprintf(key.container, sizeof key.container, "%s", r->container);
        const struct metrics_limit *u =
            in->usage_count ? bsearch(&key, in->usage, in->usage_count, sizeof *in->usage,
                                      render_usage_compare)
                            : NULL;
        struct pod_list one = {1, r};
        series(out, in, name, g, NULL, &one, NULL, NULL,
               u ? (double)(u->memory_used >> 20) : whole);
    }
}

const struct pod_list *render_pods_of(const struct render_input *in, size_t gpu, int mig)
{
    if (in->pods == NULL || gpu >= in->pods->gpu_count)
        return NULL;
    return mig < 0 ? &in->pods->gpus[gpu] : &in->pods->migs[gpu][mig];
}

void render_series(const struct render_input *in, FILE *out)
{
    const struct sample *s = in->sample;
    for (size_t k = 0; k < in->fields->count; k++) {
        const struct field *f = &in->fields->items[k];
        if (f->type == FIELD_LABEL)
            continue;
        bool header = false;
        for (size_t i = 0; i < in->inv->gpu_count && i < s->gpu_count; i++) {
            const struct gpu_device *g = &in->inv->gpus[i];
            const struct gpu_sample *gs = &s->gpus[i];
            if (gs->lost)
                continue;
            bool have = f->id == F_XID_ERRORS || gs->gpu.present[f->id];
            size_t migs_with = 0;
            for (size_t m = 0; f->mig && m < g->mig_count; m++)
                migs_with += gs->migs[m].present[f->id];
            if (!have && migs_with == 0)
                continue;
            if (!header) {
                fprintf(out, "# HELP %s %s\n# TYPE %s %s\n", f->name, f->help, f->name,
                        f->type == FIELD_COUNTER ? "counter" : "gauge");
                header = true;
            }
            double v = f->id == F_XID_ERRORS ? (double)in->xids[i].last : gs->gpu.value[f->id];
            /* A MIG GPU's own memory series would double-count its slices. */
            const struct pod_list *pods = render_pods_of(in, i, -1);
            if (have && f->id == F_FB_USED && g->mig_count == 0 && pods && pods->count &&
                in->usage_count)
                fb_used_series(out, in, f->name, g, pods, v);
            else if (have && !(f->mig && g->mig_count > 0))
                series(out, in, f->name, g, NULL, render_pods_of(in, i, -1), NULL, NULL, v);
            for (size_t m = 0; f->mig && m < g->mig_count; m++)
                if (gs->migs[m].present[f->id])
                    series(out, in, f->name, g, &g->migs[m], render_pods_of(in, i, (int)m), NULL, NULL,
                           gs->migs[m].value[f->id]);
        }
    }
    bool header = false;
    for (size_t i = 0; i < in->inv->gpu_count; i++) {
        const struct xid_stats *x = &in->xids[i];
        for (size_t k = 0; k < x->kinds; k++) {
            if (!header) {
                fputs("# HELP gpulet_xid_errors_total Number of XID errors seen, by XID.\n"
                      "# TYPE gpulet_xid_errors_total counter\n",
                      out);
                header = true;
            }
            char code[24];
            snprintf(code, sizeof code, "%llu", x->items[k].code);
            series(out, in, "gpulet_xid_errors_total", &in->inv->gpus[i], NULL,
                   render_pods_of(in, i, -1), "xid", code, (double)x->items[k].count);
        }
    }
    header = false;
    for (size_t i = 0; i < in->inv->gpu_count; i++) {
        if (in->xids[i].kinds == 0)
            continue;
        if (!header) {
            fputs("# HELP gpulet_xid_last_timestamp_seconds When the last XID came (Unix time).\n"
                  "# TYPE gpulet_xid_last_timestamp_seconds gauge\n",
                  out);
            header = true;
        }
        series(out, in, "gpulet_xid_last_timestamp_seconds", &in->inv->gpus[i], NULL,
               render_pods_of(in, i, -1), NULL, NULL, in->xids[i].last_unix);
    }
}
