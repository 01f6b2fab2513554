/*
 * metrics: a dcgm-exporter-compatible /metrics endpoint read from NVML.
 *
 * A sampler thread reads every GPU and MIG device on its own schedule
 * (--collect-interval) into an immutable sample and posts it to the loop.
 * A scrape renders the latest sample — reusing the text while neither the
 * sample nor the pod mapping changed — and never calls NVML or waits for
 * the kubelet. Pod, namespace and container labels come from the
 * kubelet's pod-resources API, listed in the background.
 *
 * The series, their names, types, help texts and labels are
 * dcgm-exporter's (docs/metrics.md); a user's counters CSV picks fields.
 * The same sample can also be shown in nvidia_gpu_exporter's nvidia_smi_*
 * names, for dashboards and alerts written for that exporter.
 */
#ifndef GPULET_METRICS_H
#define GPULET_METRICS_H

#include <stdbool.h>

#include <event2/event.h>

#include "error/error.h"
#include "gpu/gpu.h"
#include "nvml/nvml.h"
#include "podresources/v1/api.pb-c.h"

#define METRICS_DEFAULT_ADDRESS ":9400"
/* Under --simulate: loopback only, nobody else can reach a trial run. */
#define METRICS_SIMULATE_ADDRESS "127.0.0.1:9400"
#define METRICS_DEFAULT_PODRESOURCES "/var/lib/kubelet/pod-resources/kubelet.sock"

/* Which names the series carry: dcgm-exporter's, nvidia_gpu_exporter's, or both. */
#define METRICS_SCHEMA_DCGM 1u
#define METRICS_SCHEMA_SMI 2u

/* "dcgm", "nvidia-smi" or "dcgm,nvidia-smi" (either order) -> METRICS_SCHEMA_* bits. */
int metrics_parse_schema(const char *text, unsigned int *schemas, struct gpulet_error *err);

enum hostname_label { HOSTNAME_LABEL_UPPER, HOSTNAME_LABEL_LOWER, HOSTNAME_LABEL_NONE };

struct metrics_options {
    const char *address;         /* "[host]:port" */
    long interval_ms;            /* sampling period */
    const char *counters_file;   /* dcgm-exporter counters CSV, NULL: the defaults */
    const char *podresources;    /* socket, NULL: no pod labels */
    long pods_interval_ms;
    enum hostname_label hostname_label;
    const char *hostname;        /* value of the Hostname label */
    unsigned int schemas;        /* METRICS_SCHEMA_*; 0 means dcgm */
};

struct metrics;

int metrics_start(struct event_base *base, struct nvml *nvml, const struct gpu_inventory *inv,
                  const struct metrics_options *opts, struct metrics **out,
                  struct gpulet_error *err);
/* An XID event seen by the health checks (counted, and the last kept). */
void metrics_record_xid(struct metrics *m, unsigned int gpu, unsigned long long xid);
/* Ask pod-resources again soon (the device plugin just allocated). */
void metrics_refresh_pods(struct metrics *m);
/* Called with every pod-resources answer (the device plugin prunes the
 * folders of sliced containers that are gone). */
void metrics_on_pods(struct metrics *m,
                     void (*fn)(const V1__ListPodResourcesResponse *resp, void *user), void *user);
/* The limits of containers given GPU slices (the device plugin reads
 * them from their limits files after each pod-resources answer): one
 * container on one GPU. */
struct metrics_limit {
    char pod[128], namespace[128], container[128];
    unsigned int gpu;                 /* index */
    unsigned long long memory_limit;  /* bytes */
    double compute_share;             /* percent */
    bool has_usage, has_compute;      /* whether the two below are known */
    unsigned long long memory_used;   /* bytes */
    unsigned long long compute_ns;    /* GPU time charged, ever */
};
/* Replaces the limits shown (copied; at most METRICS_LIMITS_MAX). */
#define METRICS_LIMITS_MAX 4096
void metrics_set_limits(struct metrics *m, const struct metrics_limit *l, size_t n);
void metrics_stop(struct metrics *m);

/* The port actually bound (for ":0" in tests). */
int metrics_port(const struct metrics *m);

#endif
