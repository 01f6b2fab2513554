#include "metrics.h"

#include <errno.h>
#include <fcntl.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/resource.h>
#include <unistd.h>

#include <event2/buffer.h>
#include <zlib.h>

#include "grpc/grpc.h"
#include "http/http.h"
#include "log/log.h"
#include "pods.h"
#include "sampler.h"

#define PODS_TIMEOUT_MS 5000

/* The HTTP bounds (docs/metrics.md). A scrape is one short GET; anything
 * longer or slower is not Prometheus. */
static const struct http_limits HTTP_LIMITS = {
    .parse = {.max_line = 4096, .max_head = 8192, .max_headers = 64, .max_body = 1024},
    .max_connections = 128,
    .request_timeout_ms = 10000,
    .idle_timeout_ms = 90000, /* longer than a 60 s scrape interval */
    .accept_backoff_ms = 100,
    .log_interval_s = 60,
};

/* The rendered series, shared by every answer still being written that
 * shows them: a slow reader holds a reference, not a copy. */
struct rendered {
    unsigned long refs;
    char *text;
    size_t len;
    /* The same text gzipped, made by the first scrape that asks for it and
     * shared like the text: a gzip header and deflate blocks ending on a
     * byte boundary (a sync flush), to which each answer appends its own
     * series as a stored final block and the trailer. */
    bool gz_tried;
    unsigned char *gz;
    size_t gz_len;
    unsigned long crc; /* CRC-32 of text */
};

struct metrics {
    struct event_base *base;
    struct metrics_options opts;
    char address_host[256];
    int port;
    const struct gpu_inventory *inv;
    struct field_selection fields;
    /* the sampler thread and what it hands over */
    struct sampler sampler;
    pthread_t thread;
    bool thread_started;
    pthread_mutex_t stop_lock;
    pthread_cond_t stop_cond;
    bool stopping;
    int pipe[2];
    struct event *pipe_event;
    struct sample *sample;          /* the latest, owned by the loop */
    /* pods */
    struct pod_map *pods;
    struct grpc_channel *pods_channel;
    struct grpc_client_call *pods_call;
    struct event *pods_timer; /* every interval */
    struct event *pods_soon;  /* once, after an allocation */
    void (*on_pods)(const V1__ListPodResourcesResponse *resp, void *user);
    void *on_pods_user;
    unsigned long pods_version;
    bool pods_ok;
    char pods_problem[GPULET_ERROR_MSG_MAX];
    size_t pods_error_kinds;
    struct {
        char reason[32];
        unsigned long count;
    } pods_errors[16];
    /* xids */
    struct xid_stats *xids;
    unsigned long xid_version;
    /* the rendered series, reused while nothing they show changed */
    struct rendered *cache;
    unsigned long cache_sample, cache_pods, cache_xids;
    unsigned long scrapes;
    struct evbuffer *tail; /* a gzip answer's own series, before they are framed */
    struct http_server *http;
    char *limits_text; /* the sliced containers' series, rendered when set */
    size_t limits_len;
    struct metrics_limit *usage; /* those with a known memory use, for render_input */
    size_t usage_count;
    unsigned long usage_clamped; /* container figures above their limit or their GPU, ever */
};

int metrics_parse_schema(const char *text, unsigned int *schemas, struct gpulet_error *err)
{
    unsigned int bits = 0;
    for (const char *p = text; bits != ~0u;) {
        size_t n = strcspn(p, ",");
        if (n == 4 && strncmp(p, "dcgm", 4) == 0)
            bits |= METRICS_SCHEMA_DCGM;
        else if (n == 10 && strncmp(p, "nvidia-smi", 10) == 0)
            bits |= METRICS_SCHEMA_SMI;
        else
            bits = ~0u; /* an empty or unknown name */
        if (p[n] == '\0')
            break;
        p += n + 1;
    }
    if (bits == ~0u)
        return gpulet_error_set(err, GPULET_ERR_USAGE,
                                "the metrics schema must be dcgm, nvidia-smi or dcgm,nvidia-smi, "
                                "not '%s'",
                                text);
    *schemas = bits;
    return 0;
}

/* ---- the sampler thread ---- */

/* The rate series (GPM, NVLink bandwidth) need two samples. The first
 * round only primes them and the second follows after this gap, so the
 * first sample a scrape sees is complete; then the interval holds. */
#define FIRST_GAP_MS 200

static void *sampler_thread(void *arg)
{
    struct metrics *m = arg;
    bool primed = false;
    pthread_mutex_lock(&m->stop_lock);
    while (!m->stopping) {
        pthread_mutex_unlock(&m->stop_lock);
        struct sample *s = sampler_take(&m->sampler);
        long wait_ms = m->opts.interval_ms;
        if (!primed) {
            sample_free(s);
            s = NULL;
            primed = true;
            if (wait_ms > FIRST_GAP_MS)
                wait_ms = FIRST_GAP_MS;
        }
        /* The pointer goes through the pipe: 8 bytes, written whole. */
        if (s && write(m->pipe[1], &s, sizeof s) != (ssize_t)sizeof s)
            sample_free(s);
        pthread_mutex_lock(&m->stop_lock);
        struct timespec until;
        clock_gettime(CLOCK_REALTIME, &until);
        until.tv_sec += wait_ms / 1000;
        until.tv_nsec += (wait_ms % 1000) * 1000000L;
        if (until.tv_nsec >= 1000000000L) {
            until.tv_sec++;
            until.tv_nsec -= 1000000000L;
        }
        while (!m->stopping &&
               pthread_cond_timedwait(&m->stop_cond, &m->stop_lock, &until) != ETIMEDOUT)
            ;
    }
    pthread_mutex_unlock(&m->stop_lock);
    return NULL;
}

static void pipe_cb(evutil_socket_t fd, short what, void *arg)
{
    (void)what;
    struct metrics *m = arg;
    struct sample *s;
    while (read(fd, &s, sizeof s) == (ssize_t)sizeof s) {
        sample_free(m->sample);
        m->sample = s;
    }
}

/* ---- limits of sliced containers ---- */

static void limit_labels(FILE *f, const struct metrics *m, const struct metrics_limit *l)
{
    const struct gpu_device *g = l->gpu < m->inv->gpu_count ? &m->inv->gpus[l->gpu] : NULL;
    fprintf(f, "{gpu=\"%u\",UUID=\"", l->gpu);
    render_label_value(f, g ? g->uuid : "");
    fputs("\",pod=\"", f);
    render_label_value(f, l->pod);
    fputs("\",namespace=\"", f);
    render_label_value(f, l->namespace);
    fputs("\",container=\"", f);
    render_label_value(f, l->container);
    fputs("\"} ", f);
}

/* A container's usage comes from a file its processes write: a figure
 * above its limit, or above its GPU's memory, is a lie (or a bug) and is
 * shown as that bound, so one pod cannot fill a GPU's series, fire its
 * alerts or dominate per-GPU sums. Called once per pod-resources listing,
 * so the log line comes once per interval, not per scrape. */
static void clamp_usage(struct metrics *m, struct metrics_limit *l, size_t n)
{
    size_t count = 0, first = 0;
    unsigned long long first_seen = 0;
    for (size_t i = 0; i < n; i++) {
        if (!l[i].has_usage)
            continue;
        unsigned long long bound = l[i].memory_limit;
        if (l[i].gpu < m->inv->gpu_count) {
            unsigned long long whole = m->inv->gpus[l[i].gpu].memory_total_bytes;
            if (whole && (bound == 0 || whole < bound))
                bound = whole;
        }
        if (bound == 0 || l[i].memory_used <= bound)
            continue;
        if (count++ == 0) {
            first = i;
            first_seen = l[i].memory_used;
        }
        l[i].memory_used = bound;
    }
    if (count == 0)
        return;
    m->usage_clamped += count;
    /* No pod names: pod-resources is not trusted to give printable ones. */
    log_warn("container GPU memory usage above its limit or its GPU's memory; shown as that bound",
             "count=%zu first_gpu=%u first_read=%llu first_shown=%llu", count, l[first].gpu,
             first_seen, l[first].memory_used);
}

void metrics_set_limits(struct metrics *m, const struct metrics_limit *l, size_t n)
{
    if (m == NULL)
        return;
    free(m->limits_text);
    m->limits_text = NULL;
    m->limits_len = 0;
    free(m->usage);
    m->usage = NULL;
    m->usage_count = 0;
    m->pods_version++; /* DCGM_FI_DEV_FB_USED of sliced GPUs follows the usage */
    if (n == 0)
        return;
    if (n > METRICS_LIMITS_MAX)
        n = METRICS_LIMITS_MAX;
    struct metrics_limit *clamped = malloc(n * sizeof *clamped);
    if (clamped == NULL)
        return;
    memcpy(clamped, l, n * sizeof *clamped);
    l = clamped;
    clamp_usage(m, clamped, n);
    m->usage = calloc(n, sizeof *m->usage);
    for (size_t i = 0; m->usage && i < n; i++)
        if (l[i].has_usage)
            m->usage[m->usage_count++] = l[i];
    if (m->usage)
        qsort(m->usage, m->usage_count, sizeof *m->usage, render_usage_compare);
    FILE *f = open_memstream(&m->limits_text, &m->limits_len);
    if (f == NULL) {
        free(clamped);
        return;
    }
    static const struct {
        const char *name, *type, *help;
    } families[] = {
        {"gpulet_container_memory_limit_bytes", "gauge",
         "GPU memory limit of a container given GPU slices, enforced by the CUDA interposer."},
        {"gpulet_container_compute_share_percent", "gauge",
         "Share of the GPU's compute given to a container with GPU slices."},
        {"gpulet_container_memory_used_bytes", "gauge",
         "GPU memory a container given GPU slices holds, as the CUDA interposer counts it."},
        {"gpulet_container_compute_seconds_total", "counter",
         "GPU time charged to a container's compute share by the CUDA interposer (measured, "
         "or predicted from measurements); its rate is the share achieved."},
    };
    for (size_t k = 0; k < sizeof families / sizeof families[0]; k++) {
        bool any = false;
        for (size_t i = 0; i < n; i++) {
            if ((k == 2 && !l[i].has_usage) || (k == 3 && !l[i].has_compute))
                continue;
            if (!any)
                fprintf(f, "# HELP %s %s\n# TYPE %s %s\n", families[k].name, families[k].help,
                        families[k].name, families[k].type);
            any = true;
            fputs(families[k].name, f);
            limit_labels(f, m, &l[i]);
            double v = k == 0   ? (double)l[i].memory_limit
                       : k == 1 ? l[i].compute_share
                       : k == 2 ? (double)l[i].memory_used
                                : (double)l[i].compute_ns / 1e9;
            render_number(f, v);
            fputc('\n', f);
        }
    }
    fclose(f);
    free(clamped);
}

/* ---- pod-resources ---- */

static void pods_error(struct metrics *m, const char *reason, const char *message)
{
    size_t i = 0;
    while (i < m->pods_error_kinds && strcmp(m->pods_errors[i].reason, reason) != 0)
        i++;
    if (i == m->pods_error_kinds && i < sizeof m->pods_errors / sizeof m->pods_errors[0]) {
        snprintf(m->pods_errors[i].reason, sizeof m->pods_errors[i].reason, "%s", reason);
        m->pods_error_kinds++;
    }
    if (i < m->pods_error_kinds)
        m->pods_errors[i].count++;
    if (strcmp(m->pods_problem, message) != 0)
        log_warn("no pod labels: pod-resources unavailable", "socket=%s error=\"%s\"",
                 m->opts.podresources, message);
    snprintf(m->pods_problem, sizeof m->pods_problem, "%s", message);
    /* Without an answer, no pod labels rather than stale ones. */
    metrics_set_limits(m, NULL, 0);
    if (m->pods) {
        pod_map_free(m->pods);
        m->pods = NULL;
        m->pods_version++;
    }
    m->pods_ok = false;
}

static void pods_done(enum grpc_status status, const char *message, const uint8_t *reply,
                      size_t len, void *user)
{
    struct metrics *m = user;
    m->pods_call = NULL;
    grpc_channel_close(m->pods_channel);
    m->pods_channel = NULL;
    if (status != GRPC_OK) {
        char text[GPULET_ERROR_MSG_MAX];
        snprintf(text, sizeof text, "List answered %s: %s", grpc_status_name(status),
                 message && message[0] ? message : "no message");
        pods_error(m, status == GRPC_DEADLINE_EXCEEDED ? "timeout" : "rpc", text);
        return;
    }
    V1__ListPodResourcesResponse *resp = v1__list_pod_resources_response__unpack(NULL, len, reply);
    if (resp == NULL) {
        pods_error(m, "decode", "cannot decode the ListPodResourcesResponse");
        return;
    }
    if (m->on_pods)
        m->on_pods(resp, m->on_pods_user);
    struct pod_map *map = pod_map_build(m->inv, resp);
    v1__list_pod_resources_response__free_unpacked(resp, NULL);
    if (map == NULL)
        return;
    if (map->dropped && (m->pods == NULL || m->pods->dropped == 0))
        log_warn("pod-resources: more pod references than the metrics show; the rest are "
                 "left out",
                 "socket=%s max=%d dropped=%zu", m->opts.podresources, POD_MAP_MAX_REFS,
                 map->dropped);
    pod_map_free(m->pods);
    m->pods = map;
    m->pods_version++;
    if (!m->pods_ok && m->pods_problem[0])
        log_info("pod labels available again", "socket=%s", m->opts.podresources);
    m->pods_ok = true;
    m->pods_problem[0] = '\0';
}

static void pods_list(struct metrics *m)
{
    if (m->opts.podresources == NULL || m->pods_call)
        return;
    struct gpulet_error err = {0};
    if (grpc_channel_open(m->base, m->opts.podresources, &m->pods_channel, &err) < 0) {
        pods_error(m, "connect", err.msg);
        return;
    }
    uint8_t empty[1];
    m->pods_call = grpc_channel_call(m->pods_channel, "/v1.PodResourcesLister/List", empty, 0,
                                     PODS_TIMEOUT_MS, NULL, pods_done, m);
    if (m->pods_call == NULL) {
        grpc_channel_close(m->pods_channel);
        m->pods_channel = NULL;
        pods_error(m, "connect", "the connection closed");
    }
}

static void pods_timer_cb(evutil_socket_t fd, short what, void *arg)
{
    (void)fd;
    (void)what;
    pods_list(arg);
}

void metrics_refresh_pods(struct metrics *m)
{
    if (m == NULL || m->opts.podresources == NULL)
        return;
    /* Soon, not now: the kubelet records the allocation after our answer. */
    struct timeval soon = {0, 200000};
    evtimer_add(m->pods_soon, &soon);
}

void metrics_on_pods(struct metrics *m,
                     void (*fn)(const V1__ListPodResourcesResponse *resp, void *user), void *user)
{
    if (m == NULL)
        return;
    m->on_pods = fn;
    m->on_pods_user = user;
}

/* ---- XIDs ---- */

void metrics_record_xid(struct metrics *m, unsigned int gpu, unsigned long long xid)
{
    if (m == NULL || gpu >= m->inv->gpu_count)
        return;
    struct xid_stats *x = &m->xids[gpu];
    x->last = xid;
    struct timespec now;
    clock_gettime(CLOCK_REALTIME, &now);
    x->last_unix = (double)now.tv_sec + (double)now.tv_nsec / 1e9;
    size_t i = 0;
    while (i < x->kinds && x->items[i].code != xid)
        i++;
    if (i == x->kinds) {
        if (x->kinds == MAX_XID_KINDS)
            return;
        x->items[x->kinds].code = xid;
        x->items[x->kinds++].count = 0;
    }
    x->items[i].count++;
    m->xid_version++;
}

/* ---- HTTP ---- */

static double sample_age(const struct metrics *m)
{
    if (m->sample == NULL)
        return -1;
    struct timespec now;
    clock_gettime(CLOCK_MONOTONIC, &now);
    return (double)(now.tv_sec - m->sample->taken.tv_sec) +
           (double)(now.tv_nsec - m->sample->taken.tv_nsec) / 1e9;
}

static void rendered_unref(struct rendered *r)
{
    if (r && --r->refs == 0) {
        free(r->text);
        free(r->gz);
        free(r);
    }
}

/* Compresses the rendered series once; NULL gz (identity answers) when
 * zlib cannot. */
static void rendered_gzip(struct rendered *r)
{
    r->gz_tried = true;
    z_stream z;
    memset(&z, 0, sizeof z);
    /* 15 + 16: a 32 KiB window and a gzip header instead of zlib's */
    if (deflateInit2(&z, Z_DEFAULT_COMPRESSION, Z_DEFLATED, 15 + 16, 8, Z_DEFAULT_STRATEGY) !=
        Z_OK)
        return;
    size_t cap = deflateBound(&z, (uLong)r->len) + 64;
    unsigned char *out = malloc(cap);
    if (out) {
        z.next_in = (Bytef *)r->text;
        z.avail_in = (uInt)r->len;
        z.next_out = out;
        z.avail_out = (uInt)cap;
        if (deflate(&z, Z_SYNC_FLUSH) == Z_OK && z.avail_in == 0 && z.avail_out > 0) {
            r->gz_len = cap - z.avail_out;
            unsigned char *fit = realloc(out, r->gz_len);
            r->gz = fit ? fit : out;
            out = NULL;
            r->crc = crc32(crc32(0L, Z_NULL, 0), (const Bytef *)r->text, (uInt)r->len);
        }
    }
    free(out);
    deflateEnd(&z); /* the stream is left unfinished on purpose: Z_DATA_ERROR here */
}

static void put_le32(unsigned char *p, unsigned long v)
{
    for (int i = 0; i < 4; i++)
        p[i] = (unsigned char)(v >> (8 * i));
}

/* Ends the shared gzip prefix with `tail` (this answer's own series) as
 * stored deflate blocks, then the trailer: no compression per scrape. */
static void gzip_finish(const struct rendered *r, struct evbuffer *tail, struct evbuffer *out)
{
    size_t len = evbuffer_get_length(tail);
    const unsigned char *p = evbuffer_pullup(tail, -1);
    uLong crc = crc32(0L, Z_NULL, 0);
    size_t done = 0;
    do {
        size_t n = len - done > 65535 ? 65535 : len - done;
        bool last = done + n == len;
        unsigned char block[5] = {last ? 1 : 0, (unsigned char)n, (unsigned char)(n >> 8),
                                  (unsigned char)~n, (unsigned char)(~n >> 8)};
        evbuffer_add(out, block, sizeof block);
        evbuffer_add(out, p + done, n);
        crc = crc32(crc, p + done, (uInt)n);
        done += n;
    } while (done < len);
    unsigned char trailer[8];
    put_le32(trailer, crc32_combine(r->crc, crc, (z_off_t)len));
    put_le32(trailer + 4, (unsigned long)(r->len + len));
    evbuffer_add(out, trailer, sizeof trailer);
}

/* evbuffer's cleanup for a reference to the rendered series */
static void rendered_release(const void *data, size_t len, void *arg)
{
    (void)data;
    (void)len;
    rendered_unref(arg);
}

static void refresh_cache(struct metrics *m)
{
    if (m->cache && m->cache_sample == m->sample->seq && m->cache_pods == m->pods_version &&
        m->cache_xids == m->xid_version)
        return;
    rendered_unref(m->cache);
    m->cache = calloc(1, sizeof *m->cache);
    if (m->cache == NULL)
        return;
    m->cache->refs = 1;
    FILE *f = open_memstream(&m->cache->text, &m->cache->len);
    if (f == NULL) {
        free(m->cache);
        m->cache = NULL;
        return;
    }
    struct render_input in = {.inv = m->inv,
                              .fields = &m->fields,
                              .sample = m->sample,
                              .pods = m->pods,
                              .xids = m->xids,
                              .hostname_label = m->opts.hostname_label,
                              .hostname = m->opts.hostname,
                              .usage = m->usage,
                              .usage_count = m->usage_count};
    if (m->opts.schemas & METRICS_SCHEMA_DCGM)
        render_series(&in, f);
    if (m->opts.schemas & METRICS_SCHEMA_SMI)
        render_smi(&in, f);
    fclose(f);
    m->cache_sample = m->sample->seq;
    m->cache_pods = m->pods_version;
    m->cache_xids = m->xid_version;
}

static void self_metrics(struct metrics *m, struct evbuffer *out)
{
    evbuffer_add_printf(out,
                        "# HELP gpulet_build_info gpulet's version.\n"
                        "# TYPE gpulet_build_info gauge\n"
                        "gpulet_build_info{version=\"%s\"} 1\n",
                        GPULET_VERSION);
    if (m->sample) {
        evbuffer_add_printf(out,
                            "# HELP gpulet_sample_duration_seconds Time the last NVML sample took.\n"
                            "# TYPE gpulet_sample_duration_seconds gauge\n"
                            "gpulet_sample_duration_seconds %.6f\n"
                            "# HELP gpulet_sample_age_seconds Age of the sample this scrape shows.\n"
                            "# TYPE gpulet_sample_age_seconds gauge\n"
                            "gpulet_sample_age_seconds %.3f\n",
                            m->sample->duration_s, sample_age(m));
        if (m->sample->error_calls)
            evbuffer_add_printf(out, "# HELP gpulet_nvml_errors_total NVML calls that failed, by "
                                     "call.\n# TYPE gpulet_nvml_errors_total counter\n");
        for (size_t i = 0; i < m->sample->error_calls; i++)
            evbuffer_add_printf(out, "gpulet_nvml_errors_total{call=\"%s\"} %lu\n",
                                m->sample->errors[i].call, m->sample->errors[i].count);
    }
    evbuffer_add_printf(out,
                        "# HELP gpulet_scrapes_total Scrapes of /metrics served.\n"
                        "# TYPE gpulet_scrapes_total counter\n"
                        "gpulet_scrapes_total %lu\n",
                        m->scrapes);
    if (m->usage_clamped)
        evbuffer_add_printf(out,
                            "# HELP gpulet_container_memory_used_clamped_total Container GPU "
                            "memory figures above the container's limit or its GPU's memory, "
                            "shown as that bound.\n"
                            "# TYPE gpulet_container_memory_used_clamped_total counter\n"
                            "gpulet_container_memory_used_clamped_total %lu\n",
                            m->usage_clamped);
    if (m->opts.podresources) {
        evbuffer_add_printf(out,
                            "# HELP gpulet_podresources_up Whether the last pod-resources List "
                            "answered (1) or not (0).\n"
                            "# TYPE gpulet_podresources_up gauge\n"
                            "gpulet_podresources_up %d\n",
                            m->pods_ok ? 1 : 0);
        if (m->pods_error_kinds)
            evbuffer_add_printf(out, "# HELP gpulet_podresources_errors_total pod-resources List "
                                     "calls that failed, by reason.\n"
                                     "# TYPE gpulet_podresources_errors_total counter\n");
        for (size_t i = 0; i < m->pods_error_kinds; i++)
            evbuffer_add_printf(out, "gpulet_podresources_errors_total{reason=\"%s\"} %lu\n",
                                m->pods_errors[i].reason, m->pods_errors[i].count);
    }
}

static const char TEXT[] = "text/plain; charset=utf-8";

static void serve_metrics(struct metrics *m, const struct http_request *req,
                          struct http_answer *a)
{
    m->scrapes++;
    a->status = 200;
    a->content_type = "text/plain; version=0.0.4; charset=utf-8";
    a->vary_encoding = true;
    if (m->sample)
        refresh_cache(m);
    struct rendered *r = m->sample ? m->cache : NULL;
    if (r && req->accepts_gzip && !r->gz_tried)
        rendered_gzip(r);
    if (r && req->accepts_gzip && r->gz) {
        if (evbuffer_add_reference(a->body, r->gz, r->gz_len, rendered_release, r) != 0)
            return; /* out of memory: 200 with nothing beats a half gzip stream */
        r->refs++;
        if (m->limits_text)
            evbuffer_add(m->tail, m->limits_text, m->limits_len);
        self_metrics(m, m->tail);
        gzip_finish(r, m->tail, a->body);
        evbuffer_drain(m->tail, evbuffer_get_length(m->tail));
        a->content_encoding = "gzip";
        return;
    }
    if (r && evbuffer_add_reference(a->body, r->text, r->len, rendered_release, r) == 0)
        r->refs++;
    if (m->limits_text)
        evbuffer_add(a->body, m->limits_text, m->limits_len);
    self_metrics(m, a->body);
}

static void serve_health(struct metrics *m, struct http_answer *a)
{
    double age = sample_age(m);
    double limit = 2.0 * (double)m->opts.interval_ms / 1000.0 + 5.0;
    a->content_type = TEXT;
    a->status = 503;
    if (age < 0) {
        evbuffer_add_printf(a->body, "no complete NVML sample yet (the rate series need two)\n");
    } else if (age > limit) {
        evbuffer_add_printf(a->body, "the last NVML sample is %.0f s old (limit %.0f s)\n", age,
                            limit);
    } else {
        evbuffer_add_printf(a->body, "OK");
        a->status = 200;
    }
}

static void http_cb(const struct http_request *req, struct http_answer *a, void *arg)
{
    struct metrics *m = arg;
    if (req->method == HTTP_OTHER) {
        evbuffer_add_printf(a->body, "method not allowed: use GET\n");
        a->status = 405;
        a->allow = "GET, HEAD";
        a->content_type = TEXT;
    } else if (strcmp(req->path, "/metrics") == 0) {
        serve_metrics(m, req, a);
    } else if (strcmp(req->path, "/health") == 0) {
        serve_health(m, a);
    } else if (strcmp(req->path, "/") == 0) {
        evbuffer_add_printf(a->body, "<html><head><title>gpulet</title></head><body><h1>gpulet</h1>"
                                     "<p><a href=\"/metrics\">/metrics</a> &middot; "
                                     "<a href=\"/health\">/health</a></p></body></html>\n");
        a->status = 200;
        a->content_type = "text/html; charset=utf-8";
    } else {
        evbuffer_add_printf(a->body, "not found: try /metrics or /health\n");
        a->status = 404;
        a->content_type = TEXT;
    }
}

static int parse_address(const char *address, char *host, size_t len, int *port,
                         struct gpulet_error *err)
{
    const char *colon = strrchr(address, ':');
    if (colon == NULL)
        return gpulet_error_set(err, GPULET_ERR_USAGE,
                                "the metrics address \"%s\" needs a port, like :9400", address);
    char *end;
    long p = strtol(colon + 1, &end, 10);
    if (*end != '\0' || colon[1] == '\0' || p < 0 || p > 65535)
        return gpulet_error_set(err, GPULET_ERR_USAGE,
                                "the metrics address \"%s\" has no valid port (0-65535)", address);
    size_t hl = (size_t)(colon - address);
    if (hl == 0) {
        snprintf(host, len, "0.0.0.0");
    } else {
        if (address[0] == '[' && hl >= 2 && address[hl - 1] == ']') /* [::1]:9400 */
            snprintf(host, len, "%.*s", (int)hl - 2, address + 1);
        else
            snprintf(host, len, "%.*s", (int)hl, address);
    }
    *port = (int)p;
    return 0;
}

/* The connection cap, at most a quarter of the descriptors the process
 * may open, so that the device plugin's sockets always find one. */
static size_t max_connections(void)
{
    struct rlimit rl;
    size_t cap = HTTP_LIMITS.max_connections;
    if (getrlimit(RLIMIT_NOFILE, &rl) == 0 && rl.rlim_cur != RLIM_INFINITY &&
        rl.rlim_cur / 4 < cap)
        cap = rl.rlim_cur / 4 > 4 ? (size_t)(rl.rlim_cur / 4) : 4;
    return cap;
}

int metrics_start(struct event_base *base, struct nvml *nvml, const struct gpu_inventory *inv,
                  const struct metrics_options *opts, struct metrics **out,
                  struct gpulet_error *err)
{
    struct metrics *m = calloc(1, sizeof *m);
    if (m == NULL)
        return gpulet_error_errno(err, ENOMEM, "cannot start the metrics");
    m->base = base;
    m->opts = *opts;
    if (m->opts.schemas == 0)
        m->opts.schemas = METRICS_SCHEMA_DCGM;
    m->inv = inv;
    m->pipe[0] = m->pipe[1] = -1;
    pthread_mutex_init(&m->stop_lock, NULL);
    pthread_cond_init(&m->stop_cond, NULL);
    if (opts->counters_file) {
        if (fields_load(opts->counters_file, &m->fields, err) < 0) {
            metrics_stop(m);
            return -1;
        }
        for (size_t i = 0; i < m->fields.unavailable_count; i++)
            log_warn("counters file: NVML cannot provide this field; it is left out",
                     "file=%s field=%s", opts->counters_file, m->fields.unavailable[i]);
    } else {
        fields_default(&m->fields);
    }
    m->xids = calloc(inv->gpu_count + 1, sizeof *m->xids);
    m->tail = evbuffer_new();
    int port = 0;
    if (m->xids == NULL || m->tail == NULL ||
        parse_address(opts->address, m->address_host, sizeof m->address_host, &port, err) < 0) {
        metrics_stop(m);
        return -1;
    }
    struct http_limits limits = HTTP_LIMITS;
    limits.max_connections = max_connections();
    /* Scrapes run at the loop's lowest priority: whatever arrives on the
     * metrics port, the device plugin's calls are served first. */
    m->http = http_server_start(base, m->address_host, port, &limits,
                                event_base_get_npriorities(base) - 1, http_cb, m, err);
    if (m->http == NULL) {
        char why[GPULET_ERROR_MSG_MAX];
        snprintf(why, sizeof why, "%s", err->msg);
        gpulet_error_set(err, GPULET_ERR_SYSTEM,
                         "cannot serve metrics on %s: %s (is another exporter on that port? set "
                         "--metrics-address)",
                         opts->address, why);
        metrics_stop(m);
        return -1;
    }
    m->port = http_server_port(m->http);
    if (sampler_init(&m->sampler, nvml, inv) < 0 || pipe2(m->pipe, O_NONBLOCK | O_CLOEXEC) != 0) {
        gpulet_error_errno(err, errno ? errno : ENOMEM, "cannot start the sampler");
        metrics_stop(m);
        return -1;
    }
    m->pipe_event = event_new(base, m->pipe[0], EV_READ | EV_PERSIST, pipe_cb, m);
    event_add(m->pipe_event, NULL);
    if (opts->podresources) {
        /* The first List at once, then every interval. */
        m->pods_timer = event_new(base, -1, EV_PERSIST, pods_timer_cb, m);
        m->pods_soon = evtimer_new(base, pods_timer_cb, m);
        struct timeval tv = {opts->pods_interval_ms / 1000, (opts->pods_interval_ms % 1000) * 1000};
        event_add(m->pods_timer, &tv);
        pods_list(m);
    }
    if (pthread_create(&m->thread, NULL, sampler_thread, m) != 0) {
        gpulet_error_set(err, GPULET_ERR_SYSTEM, "cannot start the sampler thread");
        metrics_stop(m);
        return -1;
    }
    m->thread_started = true;
    log_info("serving metrics",
             "address=%s port=%d interval_ms=%ld schema=%s fields=%zu pods=%s "
             "max_connections=%zu",
             opts->address, m->port, opts->interval_ms,
             m->opts.schemas == METRICS_SCHEMA_DCGM  ? "dcgm"
             : m->opts.schemas == METRICS_SCHEMA_SMI ? "nvidia-smi"
                                                     : "dcgm,nvidia-smi",
             m->fields.count,
             opts->podresources ? opts->podresources : "off", limits.max_connections);
    *out = m;
    return 0;
}

int metrics_port(const struct metrics *m)
{
    return m->port;
}

void metrics_stop(struct metrics *m)
{
    if (m == NULL)
        return;
    if (m->thread_started) {
        pthread_mutex_lock(&m->stop_lock);
        m->stopping = true;
        pthread_cond_signal(&m->stop_cond);
        pthread_mutex_unlock(&m->stop_lock);
        pthread_join(m->thread, NULL);
    }
    sampler_release(&m->sampler);
    if (m->pipe_event)
        event_free(m->pipe_event);
    if (m->pipe[0] >= 0) {
        struct sample *s;
        while (read(m->pipe[0], &s, sizeof s) == (ssize_t)sizeof s)
            sample_free(s);
        close(m->pipe[0]);
    }
    if (m->pipe[1] >= 0)
        close(m->pipe[1]);
    if (m->pods_call)
        grpc_client_call_cancel(m->pods_call);
    grpc_channel_close(m->pods_channel);
    if (m->pods_timer)
        event_free(m->pods_timer);
    if (m->pods_soon)
        event_free(m->pods_soon);
    http_server_free(m->http);
    free(m->limits_text);
    free(m->usage);
    pod_map_free(m->pods);
    sample_free(m->sample);
    fields_free(&m->fields);
    free(m->xids);
    rendered_unref(m->cache);
    if (m->tail)
        evbuffer_free(m->tail);
    pthread_mutex_destroy(&m->stop_lock);
    pthread_cond_destroy(&m->stop_cond);
    free(m);
}
