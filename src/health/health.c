#include "health.h"

#include <errno.h>
#include <fcntl.h>
#include <pthread.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <time.h>
#include <unistd.h>

#include "log/log.h"

#define WAIT_MS 200
#define PROBE_EVERY_MS 500
#define MAX_XID 1024

enum report_kind { REPORT_XID, REPORT_LOST, REPORT_BACK };

/* What the thread tells the loop; small enough to be written atomically. */
struct report {
    enum report_kind kind;
    unsigned int gpu;
    unsigned int gpu_instance, compute_instance;
    unsigned long long xid;
};

/* Per device the loop keeps: index 0 is the whole GPU, 1 + m MIG device m. */
struct device_health {
    bool healthy;
    bool lost;
    struct timespec last_bad;
    char reason[64]; /* why it went unhealthy, told again on replay */
};

struct health {
    struct event_base *base;
    struct nvml *nvml;
    const struct gpu_inventory *inv;
    health_change_fn on_change;
    void *user;
    long recovery_ms;
    health_xid_fn on_xid;
    bool xids_on, all_on;
    bool ignored[MAX_XID];
    struct device_health **devices; /* [gpu][1 + mig] */
    int pipe[2];
    struct event *pipe_event;
    struct event *recovery_timer;
    pthread_t thread;
    bool thread_started;
    atomic_bool stop;
};

static const unsigned int default_ignored[] = {13, 31, 43, 45, 68, 109};

static int parse_xid_list(const char *text, const char *var, bool *set, bool value,
                          struct gpulet_error *err)
{
    char buf[512];
    snprintf(buf, sizeof buf, "%s", text);
    char *save;
    for (char *t = strtok_r(buf, ", ", &save); t; t = strtok_r(NULL, ", ", &save)) {
        char *end;
        long x = strtol(t, &end, 10);
        if (*end != '\0' || x < 0 || x >= MAX_XID)
            return gpulet_error_set(err, GPULET_ERR_USAGE,
                                    "%s must be all, xids or a list of XID numbers, not \"%s\"",
                                    var, text);
        set[x] = value;
    }
    return 0;
}

int health_parse_options(const struct health_options *opts, bool *xids_on, bool *all_on,
                         bool ignored[MAX_XID], struct gpulet_error *err)
{
    memset(ignored, 0, MAX_XID * sizeof *ignored);
    for (size_t i = 0; i < sizeof default_ignored / sizeof default_ignored[0]; i++)
        ignored[default_ignored[i]] = true;
    *xids_on = *all_on = true;
    const char *dis = opts->disable;
    if (dis && dis[0]) {
        if (strcasecmp(dis, "all") == 0)
            *all_on = *xids_on = false;
        else if (strcasecmp(dis, "xids") == 0)
            *xids_on = false;
        else if (parse_xid_list(dis, "DP_DISABLE_HEALTHCHECKS", ignored, true, err) < 0)
            return -1;
    }
    const char *en = opts->enable;
    if (en && en[0]) {
        *all_on = *xids_on = true;
        if (strcasecmp(en, "all") == 0 || strcasecmp(en, "xids") == 0)
            memset(ignored, 0, MAX_XID * sizeof *ignored);
        else if (parse_xid_list(en, "DP_ENABLE_HEALTHCHECKS", ignored, false, err) < 0)
            return -1;
    }
    return 0;
}

static void post(struct health *h, const struct report *r)
{
    /* A report is far below PIPE_BUF, so the write is atomic or fails whole. */
    ssize_t n = write(h->pipe[1], r, sizeof *r);
    (void)n;
}

static long ms_since(const struct timespec *t)
{
    struct timespec now;
    clock_gettime(CLOCK_MONOTONIC, &now);
    return (long)((now.tv_sec - t->tv_sec) * 1000 + (now.tv_nsec - t->tv_nsec) / 1000000);
}

/* ---- the thread: blocking NVML waits live here ---- */

static void *watch_thread(void *arg)
{
    struct health *h = arg;
    size_t n = h->inv->gpu_count;
    nvmlDevice_t *handles = calloc(n + 1, sizeof *handles);
    bool *lost = calloc(n + 1, sizeof *lost);
    nvmlEventSet_t set = NULL;
    struct gpulet_error err = {0};
    if (handles == NULL || lost == NULL)
        goto done;
    for (size_t i = 0; i < n; i++)
        lost[i] = h->inv->gpus[i].lost;
    if (h->xids_on && nvml_event_set_create(h->nvml, &set, &err) < 0) {
        log_warn("XID health checks are off: cannot create an NVML event set", "error=\"%s\"",
                 err.msg);
        set = NULL;
    }
    for (size_t i = 0; i < n && set; i++) {
        struct nvml_device d;
        unsigned long long types = 0;
        if (nvml_device_by_index(h->nvml, (unsigned)i, &d, &err) < 0)
            continue;
        handles[i] = d.handle;
        if (nvml_device_supported_events(h->nvml, &d, &types, &err) < 0)
            types = nvmlEventTypeXidCriticalError;
        types &= nvmlEventTypeXidCriticalError | nvmlEventTypeDoubleBitEccError |
                 nvmlEventTypeSingleBitEccError;
        if (nvml_device_register_events(h->nvml, &d, types, set, &err) < 0)
            log_warn("XID health checks are off for this GPU", "gpu=%zu error=\"%s\"", i, err.msg);
    }
    struct timespec last_probe = {0, 0};
    while (!atomic_load(&h->stop)) {
        if (set) {
            nvmlEventData_t ev;
            if (nvml_event_wait(h->nvml, set, &ev, WAIT_MS, &err) == 0) {
                if (ev.eventType & nvmlEventTypeXidCriticalError) {
                    struct report r = {.kind = REPORT_XID,
                                       .gpu = UINT32_MAX,
                                       .gpu_instance = ev.gpuInstanceId,
                                       .compute_instance = ev.computeInstanceId,
                                       .xid = ev.eventData};
                    for (size_t i = 0; i < n; i++)
                        if (handles[i] == ev.device)
                            r.gpu = (unsigned)i;
                    post(h, &r);
                }
                continue;
            }
        } else {
            struct timespec tick = {0, WAIT_MS * 1000000L};
            nanosleep(&tick, NULL);
        }
        if (!h->all_on || ms_since(&last_probe) < PROBE_EVERY_MS)
            continue;
        clock_gettime(CLOCK_MONOTONIC, &last_probe);
        for (size_t i = 0; i < n; i++) {
            struct nvml_device d;
            char uuid[96];
            bool gone = nvml_device_by_index(h->nvml, (unsigned)i, &d, &err) < 0 ||
                        nvml_device_uuid(h->nvml, &d, uuid, sizeof uuid, &err) < 0;
            gone = gone && nvml_gpu_lost(&err);
            if (gone != lost[i]) {
                lost[i] = gone;
                struct report r = {.kind = gone ? REPORT_LOST : REPORT_BACK, .gpu = (unsigned)i};
                post(h, &r);
            }
        }
    }
done:
    if (set)
        nvml_event_set_free(h->nvml, set);
    free(handles);
    free(lost);
    return NULL;
}

/* ---- the loop: the policy ---- */

static struct device_health *device(struct health *h, unsigned int gpu, int mig)
{
    return &h->devices[gpu][mig + 1];
}

static void mark(struct health *h, unsigned int gpu, int mig, bool healthy, const char *reason)
{
    struct device_health *dh = device(h, gpu, mig);
    if (!healthy)
        clock_gettime(CLOCK_MONOTONIC, &dh->last_bad);
    if (dh->healthy == healthy)
        return;
    dh->healthy = healthy;
    snprintf(dh->reason, sizeof dh->reason, "%s", reason);
    if (healthy)
        log_info("device healthy again", "gpu=%u mig=%d reason=\"%s\"", gpu, mig, reason);
    else
        log_warn("device unhealthy", "gpu=%u mig=%d reason=\"%s\"", gpu, mig, reason);
    h->on_change(gpu, mig, healthy, reason, h->user);
}

static void handle_xid(struct health *h, const struct report *r)
{
    if (r->gpu >= h->inv->gpu_count) {
        log_warn("XID event for an unknown device", "xid=%llu", r->xid);
        return;
    }
    bool ignored = r->xid < MAX_XID && h->ignored[r->xid];
    if (h->on_xid)
        h->on_xid(r->gpu, r->xid, h->user);
    log_info("XID event", "gpu=%u xid=%llu gpu_instance=%d compute_instance=%d ignored=%s",
             r->gpu, r->xid, r->gpu_instance == NVML_INSTANCE_ID_NONE ? -1 : (int)r->gpu_instance,
             r->compute_instance == NVML_INSTANCE_ID_NONE ? -1 : (int)r->compute_instance,
             ignored ? "yes" : "no");
    if (ignored)
        return;
    char reason[64];
    snprintf(reason, sizeof reason, "XID %llu", r->xid);
    const struct gpu_device *g = &h->inv->gpus[r->gpu];
    if (r->gpu_instance != NVML_INSTANCE_ID_NONE && g->mig_count > 0) {
        for (size_t m = 0; m < g->mig_count; m++) {
            const struct gpu_mig_device *md = &g->migs[m];
            if (md->gpu_instance_id == r->gpu_instance &&
                (r->compute_instance == NVML_INSTANCE_ID_NONE ||
                 md->compute_instance_id == r->compute_instance)) {
                mark(h, r->gpu, (int)m, false, reason);
                return;
            }
        }
    }
    mark(h, r->gpu, -1, false, reason);
    for (size_t m = 0; m < g->mig_count; m++)
        mark(h, r->gpu, (int)m, false, reason);
}

static void pipe_cb(evutil_socket_t fd, short what, void *arg)
{
    (void)what;
    struct health *h = arg;
    struct report r;
    while (read(fd, &r, sizeof r) == (ssize_t)sizeof r) {
        const struct gpu_device *g = r.gpu < h->inv->gpu_count ? &h->inv->gpus[r.gpu] : NULL;
        switch (r.kind) {
        case REPORT_XID: handle_xid(h, &r); break;
        case REPORT_LOST:
            if (g == NULL)
                break;
            device(h, r.gpu, -1)->lost = true;
            mark(h, r.gpu, -1, false, "GPU is lost (fell off the bus)");
            for (size_t m = 0; m < g->mig_count; m++)
                mark(h, r.gpu, (int)m, false, "GPU is lost (fell off the bus)");
            break;
        case REPORT_BACK:
            if (g == NULL)
                break;
            device(h, r.gpu, -1)->lost = false;
            /* the recovery period counts normal answers: from now, not
             * from when it was lost (a GPU lost longer than the period
             * would be offered again at once) */
            for (int m = -1; m < (int)g->mig_count; m++)
                clock_gettime(CLOCK_MONOTONIC, &device(h, r.gpu, m)->last_bad);
            log_info("GPU answers again", "gpu=%u", r.gpu);
            break;
        }
    }
}

static void recovery_cb(evutil_socket_t fd, short what, void *arg)
{
    (void)fd;
    (void)what;
    struct health *h = arg;
    for (size_t i = 0; i < h->inv->gpu_count; i++) {
        const struct gpu_device *g = &h->inv->gpus[i];
        if (device(h, (unsigned)i, -1)->lost)
            continue;
        for (int m = -1; m < (int)g->mig_count; m++) {
            struct device_health *dh = device(h, (unsigned)i, m);
            if (!dh->healthy && ms_since(&dh->last_bad) >= h->recovery_ms)
                mark(h, (unsigned)i, m, true, "no new critical XID for the recovery period");
        }
    }
}

void health_replay(struct health *h)
{
    for (size_t i = 0; i < h->inv->gpu_count; i++)
        for (int m = -1; m < (int)h->inv->gpus[i].mig_count; m++)
            if (!device(h, (unsigned)i, m)->healthy)
                h->on_change((unsigned)i, m, false, device(h, (unsigned)i, m)->reason, h->user);
}

void health_stop(struct health *h)
{
    if (h == NULL)
        return;
    if (h->thread_started) {
        atomic_store(&h->stop, true);
        pthread_join(h->thread, NULL);
    }
    if (h->pipe_event)
        event_free(h->pipe_event);
    if (h->recovery_timer)
        event_free(h->recovery_timer);
    if (h->pipe[0] >= 0)
        close(h->pipe[0]);
    if (h->pipe[1] >= 0)
        close(h->pipe[1]);
    for (size_t i = 0; h->devices && i < h->inv->gpu_count; i++)
        free(h->devices[i]);
    free(h->devices);
    free(h);
}

int health_start(struct event_base *base, struct nvml *nvml, const struct gpu_inventory *inv,
                 const struct health_options *opts, health_change_fn on_change, void *user,
                 struct health **out, struct gpulet_error *err)
{
    struct health *h = calloc(1, sizeof *h);
    if (h == NULL)
        return gpulet_error_errno(err, ENOMEM, "cannot start the health checks");
    h->base = base;
    h->nvml = nvml;
    h->inv = inv;
    h->on_change = on_change;
    h->user = user;
    h->recovery_ms = opts->recovery_ms;
    h->on_xid = opts->on_xid;
    h->pipe[0] = h->pipe[1] = -1;
    if (health_parse_options(opts, &h->xids_on, &h->all_on, h->ignored, err) < 0) {
        health_stop(h);
        return -1;
    }
    h->devices = calloc(inv->gpu_count + 1, sizeof *h->devices);
    if (h->devices == NULL) {
        health_stop(h);
        return gpulet_error_errno(err, ENOMEM, "cannot start the health checks");
    }
    for (size_t i = 0; i < inv->gpu_count; i++) {
        h->devices[i] = calloc(inv->gpus[i].mig_count + 1, sizeof **h->devices);
        if (h->devices[i] == NULL) {
            health_stop(h);
            return gpulet_error_errno(err, ENOMEM, "cannot start the health checks");
        }
        for (size_t m = 0; m <= inv->gpus[i].mig_count; m++) {
            h->devices[i][m].healthy = !inv->gpus[i].lost;
            snprintf(h->devices[i][m].reason, sizeof h->devices[i][m].reason, "%s",
                     inv->gpus[i].lost ? "GPU is lost (fell off the bus)" : "");
        }
        h->devices[i][0].lost = inv->gpus[i].lost;
    }
    if (pipe2(h->pipe, O_NONBLOCK | O_CLOEXEC) != 0) {
        int e = errno;
        health_stop(h);
        return gpulet_error_errno(err, e, "cannot create the health pipe");
    }
    h->pipe_event = event_new(base, h->pipe[0], EV_READ | EV_PERSIST, pipe_cb, h);
    event_add(h->pipe_event, NULL);
    if (h->recovery_ms > 0) {
        h->recovery_timer = event_new(base, -1, EV_PERSIST, recovery_cb, h);
        long tick = h->recovery_ms < 1000 ? h->recovery_ms : 1000;
        struct timeval tv = {tick / 1000, (tick % 1000) * 1000};
        event_add(h->recovery_timer, &tv);
    }
    if (!h->all_on) {
        log_warn("health checks are off (DP_DISABLE_HEALTHCHECKS=all)", "gpus=%zu", inv->gpu_count);
    } else if (pthread_create(&h->thread, NULL, watch_thread, h) != 0) {
        health_stop(h);
        return gpulet_error_set(err, GPULET_ERR_SYSTEM, "cannot start the health thread");
    } else {
        h->thread_started = true;
    }
    *out = h;
    return 0;
}
