/* Inside the metrics module: samples, the pod mapping and rendering. */
#ifndef GPULET_METRICS_INTERNAL_H
#define GPULET_METRICS_INTERNAL_H

#include <stdio.h>
#include <time.h>

#include "fields.h"
#include "metrics.h"

struct device_sample {
    bool present[FIELD_COUNT];
    double value[FIELD_COUNT];
};

/* A process using a GPU, as NVML listed it. */
struct process_sample {
    unsigned int pid;
    unsigned long long used_bytes;
    char name[32]; /* /proc/PID/comm, "" when gone or hidden */
};

/* Processes kept per GPU: each is a series per scrape. */
#define MAX_PROCESSES 64
/* The longest process list read (24 bytes each); a longer one is a failed
 * collection. */
#define PROCESSES_READ_MAX 4096

/* What a GPU says of itself once: read when the sampler starts, copied
 * into every sample so rendering needs nothing else. */
struct gpu_facts {
    char vbios_version[32];     /* "" when NVML does not say */
    char pci_sub_device_id[16]; /* nvidia-smi's form, "0x16C110DE"; "" when unknown */
    bool reasons_supported_known;
    unsigned long long reasons_supported;
};

struct gpu_sample {
    bool lost;
    struct gpu_facts facts;
    bool processes_read; /* the process list was read whole (maybe empty) */
    size_t process_count; /* in processes: the first MAX_PROCESSES */
    size_t process_total; /* on the GPU */
    struct process_sample *processes;
    struct device_sample gpu;
    struct device_sample *migs; /* one per MIG device of the inventory */
};

#define MAX_ERROR_CALLS 48

struct nvml_error_count {
    char call[64];
    unsigned long count;
};

/* Everything one sampling round read; immutable once posted. */
struct sample {
    unsigned long seq;
    struct timespec taken; /* CLOCK_MONOTONIC */
    double taken_unix;     /* the same moment, seconds since the epoch */
    unsigned long failed_rounds; /* rounds with a failed NVML call, since start */
    double duration_s;
    size_t gpu_count;
    struct gpu_sample *gpus;
    size_t error_calls;
    struct nvml_error_count errors[MAX_ERROR_CALLS]; /* since start */
};

void sample_free(struct sample *s);

/* The pods using one device; the strings belong to the pod map. */
struct pod_ref {
    const char *pod, *namespace, *container;
};

struct pod_list {
    size_t count;
    const struct pod_ref *items; /* sorted by pod, namespace, container */
};

/* Per GPU and MIG device: who uses it. */
struct pod_map {
    size_t gpu_count;
    struct pod_list *gpus;   /* whole GPUs (and replicas); every list of the map */
    struct pod_list **migs;  /* [gpu][mig], inside gpus' allocation */
    size_t *mig_count;       /* per GPU */
    struct pod_ref *refs;    /* every list's items */
    char *strings;
    size_t dropped;          /* references left out beyond POD_MAP_MAX_REFS */
};

/* Each reference is a series per field in every scrape: a node has a few
 * hundred pods at most, and the scrape stays bounded whatever the kubelet
 * answers. */
#define POD_MAP_MAX_REFS 1024

void pod_map_free(struct pod_map *map);

#define MAX_XID_KINDS 32

/* The XIDs one GPU has seen since gpulet started. */
struct xid_stats {
    unsigned long long last;
    double last_unix; /* when the last one came, seconds since the epoch */
    size_t kinds;
    struct {
        unsigned long long code;
        unsigned long count;
    } items[MAX_XID_KINDS];
};

/* What rendering needs beyond the sample. */
struct render_input {
    const struct gpu_inventory *inv;
    const struct field_selection *fields;
    const struct sample *sample;
    const struct pod_map *pods;    /* may be NULL */
    const struct xid_stats *xids;  /* per GPU */
    enum hostname_label hostname_label;
    const char *hostname;
    /* Sliced containers whose memory the interposer counts, sorted by
     * render_usage_compare: their own DCGM_FI_DEV_FB_USED. */
    const struct metrics_limit *usage;
    size_t usage_count;
};

int render_usage_compare(const void *a, const void *b);

/* The GPU series of a sample (the part that changes only with the sample,
 * the pods or the XIDs). */
void render_series(const struct render_input *in, FILE *out);

/* The pods using a GPU (mig < 0) or one of its MIG devices; NULL without a map. */
const struct pod_list *render_pods_of(const struct render_input *in, size_t gpu, int mig);

/* The same sample in nvidia_gpu_exporter's names (nvidia_smi_*). */
void render_smi(const struct render_input *in, FILE *out);

/* Prometheus text: a label value with \ " and newline escaped. */
void render_label_value(FILE *out, const char *value);
/* Numbers as Prometheus reads them: integers without a fraction. */
void render_number(FILE *out, double v);

#endif
