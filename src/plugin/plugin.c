#include "plugin_internal.h"

#include <dirent.h>
#include <errno.h>
#include <fcntl.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include "cuda/cuda_limits.h"
#include "fileio/fileio.h"
#include "grpc/grpc.h"
#include "log/log.h"

#define REGISTER_TIMEOUT_MS 10000
/* kubelet.sock appears at bind(), a moment before the kubelet listens: the
 * first Register may be refused, so the first retry comes quickly. */
#define RETRY_FIRST_MS 10
#define RETRY_MAX_MS 30000
/* A watcher more than this many lists behind is dropped: the kubelet reads
 * each list as it comes; one that stopped reading would hold one more list
 * per change (the grpc budget would end it later, at more cost). */
#define WATCH_MAX_LAG_LISTS 2
/* The longest GetPreferredAllocation may hold the event loop (less when
 * the caller's deadline comes sooner): the search for the best GPU sets
 * stops there, and the call fails rather than delay every other one. */
#define PREFERRED_BUDGET_MS 250

struct watcher {
    struct grpc_call *call;
    struct watcher *next;
};

enum reg_state { REG_IDLE, REG_PENDING, REG_DONE, REG_WAITING };

/* A resource as served: its socket, its streams, its registration. */
struct served {
    struct plugin *plugin;
    struct devices_pool *res;
    struct grpc_server *server;
    struct watcher *watchers;
    struct event *changed; /* changes within one loop turn go out as one list */
    struct grpc_channel *reg_channel;
    struct grpc_client_call *reg_call;
    struct event *retry;
    long backoff_ms;
    enum reg_state reg;
    char last_problem[GPULET_ERROR_MSG_MAX]; /* logged once until it changes */
};

struct plugin {
    struct event_base *base;
    struct grpc_budget *budget; /* shared by the resources' servers */
    char dir[4096];
    struct config cfg;
    const struct gpu_inventory *inv;
    struct devices_pool *resources;
    size_t count;
    struct served *served;
    unsigned long serial;
    bool stopped;
    void (*on_allocate)(void *user);
    void *on_allocate_user;
    struct allocdir_reaper *reaping; /* removes gone containers' folders */
    struct devices_health *health;   /* subscribed to; NULL until started */
};

static void reap_soon(struct plugin *p)
{
    if (p->cfg.state_dir[0])
        allocdir_reaper_kick(p->reaping);
}

static void socket_path(const struct served *s, char *buf, size_t len)
{
    snprintf(buf, len, "%s/%s", s->plugin->dir, s->res->socket_name);
}

/* ---- the DevicePlugin service ---- */

static void get_options(struct grpc_call *call, const uint8_t *req, size_t len, void *user)
{
    (void)req;
    (void)len;
    (void)user;
    V1beta1__DevicePluginOptions opts = V1BETA1__DEVICE_PLUGIN_OPTIONS__INIT;
    opts.pre_start_required = false;
    opts.get_preferred_allocation_available = true;
    grpc_call_reply_message(call, &opts.base);
}

/* The current device list, packed. */
static uint8_t *pack_list(struct served *s, struct arena *a, size_t *len)
{
    V1beta1__ListAndWatchResponse msg;
    plugin_device_list(s->res, a, &msg);
    *len = v1beta1__list_and_watch_response__get_packed_size(&msg);
    uint8_t *buf = arena_alloc(a, *len);
    v1beta1__list_and_watch_response__pack(&msg, buf);
    return buf;
}

/* Sends the current list to every watcher, or to `only`. */
static void send_lists(struct served *s, struct grpc_call *only)
{
    struct arena a = {0};
    size_t len;
    uint8_t *buf = pack_list(s, &a, &len);
    struct watcher **w = &s->watchers;
    while (*w) {
        struct watcher *cur = *w;
        if (only && cur->call != only) {
            w = &cur->next;
            continue;
        }
        if (grpc_call_queued(cur->call) <= WATCH_MAX_LAG_LISTS * (len + 5)) {
            /* A send that fails for want of room ends the call, and
             * watcher_closed unlinks it: then *w moved on already. */
            grpc_call_send(cur->call, buf, len);
            if (*w == cur)
                w = &cur->next;
            continue;
        }
        log_warn("dropping a ListAndWatch stream that does not keep up",
                 "resource=%s queued=%zu", s->res->name, grpc_call_queued(cur->call));
        grpc_call_drop(cur->call, "the client does not read the device lists");
        *w = cur->next;
        free(cur);
    }
    arena_free(&a);
}

static void watcher_closed(struct grpc_call *call, enum grpc_status why, void *user)
{
    struct served *s = user;
    for (struct watcher **w = &s->watchers; *w; w = &(*w)->next) {
        if ((*w)->call == call) {
            struct watcher *gone = *w;
            *w = gone->next;
            free(gone);
            break;
        }
    }
    log_info("ListAndWatch stream ended", "resource=%s why=%s", s->res->name,
             grpc_status_name(why));
}

static void list_and_watch(struct grpc_call *call, const uint8_t *req, size_t len, void *user)
{
    (void)req;
    (void)len;
    struct served *s = user;
    struct watcher *w = calloc(1, sizeof *w);
    if (w == NULL) {
        grpc_call_finish(call, GRPC_RESOURCE_EXHAUSTED, "out of memory");
        return;
    }
    w->call = call;
    w->next = s->watchers;
    s->watchers = w;
    grpc_call_on_close(call, watcher_closed, s);
    log_info("ListAndWatch stream opened", "resource=%s devices=%zu", s->res->name, s->res->count);
    send_lists(s, call);
}

static void broadcast(struct served *s)
{
    event_active(s->changed, EV_TIMEOUT, 0);
}

static void changed_cb(evutil_socket_t fd, short what, void *arg)
{
    (void)fd;
    (void)what;
    send_lists(arg, NULL);
}

static void allocate(struct grpc_call *call, const uint8_t *req, size_t len, void *user)
{
    struct served *s = user;
    V1beta1__AllocateRequest *in = v1beta1__allocate_request__unpack(NULL, len, req);
    if (in == NULL) {
        grpc_call_finish(call, GRPC_INVALID_ARGUMENT, "cannot decode the AllocateRequest");
        return;
    }
    struct arena a = {0};
    V1beta1__AllocateResponse out = V1BETA1__ALLOCATE_RESPONSE__INIT;
    out.container_responses = arena_alloc(&a, (in->n_container_requests + 1) *
                                                  sizeof *out.container_responses);
    struct gpulet_error err = {0};
    int rc = 0;
    for (size_t i = 0; i < in->n_container_requests && rc == 0; i++) {
        const V1beta1__ContainerAllocateRequest *cr = in->container_requests[i];
        V1beta1__ContainerAllocateResponse *r = arena_alloc(&a, sizeof *r);
        rc = plugin_allocate_container(s->res, &s->plugin->cfg, cr->devices_ids,
                                       cr->n_devices_ids, ++s->plugin->serial, &a, r, &err);
        out.container_responses[out.n_container_responses++] = r;
    }
    if (rc < 0) {
        log_warn("Allocate refused", "resource=%s error=\"%s\"", s->res->name, err.msg);
        grpc_call_finish(call, GRPC_INVALID_ARGUMENT, err.msg);
    } else {
        grpc_call_reply_message(call, &out.base);
        if (s->res->sharing == SHARING_SLICES)
            reap_soon(s->plugin); /* what the allocation took back */
        if (s->plugin->on_allocate)
            s->plugin->on_allocate(s->plugin->on_allocate_user);
    }
    arena_free(&a);
    v1beta1__allocate_request__free_unpacked(in, NULL);
}

static void preferred_allocation(struct grpc_call *call, const uint8_t *req, size_t len,
                                 void *user)
{
    struct served *s = user;
    V1beta1__PreferredAllocationRequest *in =
        v1beta1__preferred_allocation_request__unpack(NULL, len, req);
    if (in == NULL) {
        grpc_call_finish(call, GRPC_INVALID_ARGUMENT,
                         "cannot decode the PreferredAllocationRequest");
        return;
    }
    long remaining = grpc_call_remaining_ms(call);
    bool by_caller = remaining >= 0 && remaining < PREFERRED_BUDGET_MS;
    long budget = by_caller ? remaining : PREFERRED_BUDGET_MS;
    struct timespec until;
    clock_gettime(CLOCK_MONOTONIC, &until);
    until.tv_sec += budget / 1000;
    until.tv_nsec += (budget % 1000) * 1000000L;
    if (until.tv_nsec >= 1000000000L) {
        until.tv_sec++;
        until.tv_nsec -= 1000000000L;
    }
    struct arena a = {0};
    V1beta1__PreferredAllocationResponse out = V1BETA1__PREFERRED_ALLOCATION_RESPONSE__INIT;
    out.container_responses = arena_alloc(&a, (in->n_container_requests + 1) *
                                                  sizeof *out.container_responses);
    int rc = 0;
    for (size_t i = 0; i < in->n_container_requests && rc == 0; i++) {
        const V1beta1__ContainerPreferredAllocationRequest *cr = in->container_requests[i];
        V1beta1__ContainerPreferredAllocationResponse *r = arena_alloc(&a, sizeof *r);
        v1beta1__container_preferred_allocation_response__init(r);
        r->deviceids = arena_alloc(&a, (cr->n_available_deviceids + 1) * sizeof *r->deviceids);
        rc = devices_preferred(s->res, s->plugin->inv, cr->available_deviceids,
                               cr->n_available_deviceids, cr->must_include_deviceids,
                               cr->n_must_include_deviceids, cr->allocation_size, &until,
                               r->deviceids, &r->n_deviceids);
        out.container_responses[out.n_container_responses++] = r;
    }
    if (rc < 0) {
        log_warn("GetPreferredAllocation ran out of time", "resource=%s budget_ms=%ld by=%s",
                 s->res->name, budget, by_caller ? "caller" : "gpulet");
        char msg[96];
        snprintf(msg, sizeof msg, "the preferred allocation takes longer than gpulet allows "
                 "(%d ms)", PREFERRED_BUDGET_MS);
        if (by_caller)
            grpc_call_finish(call, GRPC_DEADLINE_EXCEEDED,
                             "the preferred allocation was not found within the deadline");
        else
            grpc_call_finish(call, GRPC_RESOURCE_EXHAUSTED, msg);
    } else {
        grpc_call_reply_message(call, &out.base);
    }
    arena_free(&a);
    v1beta1__preferred_allocation_request__free_unpacked(in, NULL);
}

static void pre_start(struct grpc_call *call, const uint8_t *req, size_t len, void *user)
{
    (void)req;
    (void)len;
    (void)user;
    V1beta1__PreStartContainerResponse out = V1BETA1__PRE_START_CONTAINER_RESPONSE__INIT;
    grpc_call_reply_message(call, &out.base);
}

static void status(struct grpc_call *call, const uint8_t *req, size_t len, void *user)
{
    (void)req;
    (void)len;
    struct served *s = user;
    unsigned streams = 0;
    for (const struct watcher *w = s->watchers; w; w = w->next)
        streams++;
    struct arena a = {0};
    Gpulet__V1__StatusResponse out;
    plugin_status(s->res, s->reg == REG_DONE, streams, s->last_problem, &a, &out);
    grpc_call_reply_message(call, &out.base);
    arena_free(&a);
}

static int serve(struct served *s, struct gpulet_error *err)
{
    char path[4200];
    socket_path(s, path, sizeof path);
    if (grpc_server_listen(s->plugin->base, path, s->plugin->budget, &s->server, err) < 0)
        return -1;
    static const struct {
        const char *method;
        grpc_handler_fn fn;
    } methods[] = {
        {"/v1beta1.DevicePlugin/GetDevicePluginOptions", get_options},
        {"/v1beta1.DevicePlugin/ListAndWatch", list_and_watch},
        {"/v1beta1.DevicePlugin/GetPreferredAllocation", preferred_allocation},
        {"/v1beta1.DevicePlugin/Allocate", allocate},
        {"/v1beta1.DevicePlugin/PreStartContainer", pre_start},
        {"/gpulet.v1.Status/Get", status},
    };
    for (size_t i = 0; i < sizeof methods / sizeof methods[0]; i++)
        if (grpc_server_handle(s->server, methods[i].method, methods[i].fn, s, err) < 0)
            return -1;
    log_info("serving device plugin", "resource=%s socket=%s devices=%zu", s->res->name, path,
             s->res->count);
    return 0;
}

/* ---- registration with the kubelet ---- */

static void register_start(struct served *s);

static void retry_cb(evutil_socket_t fd, short what, void *arg)
{
    (void)fd;
    (void)what;
    register_start(arg);
}

static void close_registration(struct served *s)
{
    if (s->reg_call) {
        grpc_client_call_cancel(s->reg_call);
        s->reg_call = NULL;
    }
    if (s->reg_channel) {
        grpc_channel_close(s->reg_channel);
        s->reg_channel = NULL;
    }
    if (s->retry)
        event_del(s->retry);
}

/* Logs a problem only when it differs from the last one, then retries
 * with a doubling delay. */
static void register_later(struct served *s, const char *problem)
{
    if (strcmp(s->last_problem, problem) != 0) {
        log_warn("cannot register with the kubelet; will keep trying", "resource=%s error=\"%s\"",
                 s->res->name, problem);
        snprintf(s->last_problem, sizeof s->last_problem, "%s", problem);
    }
    s->reg = REG_WAITING;
    log_debug("registration retry scheduled", "resource=%s in_ms=%ld", s->res->name,
              s->backoff_ms);
    struct timeval tv = {s->backoff_ms / 1000, (s->backoff_ms % 1000) * 1000};
    event_add(s->retry, &tv);
    s->backoff_ms = s->backoff_ms * 2 > RETRY_MAX_MS ? RETRY_MAX_MS : s->backoff_ms * 2;
}

static void register_done(enum grpc_status status, const char *message, const uint8_t *reply,
                          size_t len, void *user)
{
    (void)reply;
    (void)len;
    struct served *s = user;
    s->reg_call = NULL;
    grpc_channel_close(s->reg_channel);
    s->reg_channel = NULL;
    if (status == GRPC_OK) {
        s->reg = REG_DONE;
        s->backoff_ms = RETRY_FIRST_MS;
        s->last_problem[0] = '\0';
        log_info("registered with the kubelet", "resource=%s endpoint=%s", s->res->name,
                 s->res->socket_name);
        return;
    }
    char problem[GPULET_ERROR_MSG_MAX];
    snprintf(problem, sizeof problem, "Register answered %s: %s", grpc_status_name(status),
             message && message[0] ? message : "no message");
    register_later(s, problem);
}

static void register_start(struct served *s)
{
    if (s->plugin->stopped || s->server == NULL)
        return;
    close_registration(s);
    char kubelet[4200];
    snprintf(kubelet, sizeof kubelet, "%s/%s", s->plugin->dir, PLUGIN_KUBELET_SOCKET);
    struct gpulet_error err = {0};
    if (grpc_channel_open(s->plugin->base, kubelet, &s->reg_channel, &err) < 0) {
        register_later(s, err.msg);
        return;
    }
    V1beta1__DevicePluginOptions opts = V1BETA1__DEVICE_PLUGIN_OPTIONS__INIT;
    opts.get_preferred_allocation_available = true;
    V1beta1__RegisterRequest req = V1BETA1__REGISTER_REQUEST__INIT;
    req.version = "v1beta1";
    req.endpoint = s->res->socket_name;
    req.resource_name = s->res->name;
    req.options = &opts;
    uint8_t buf[512];
    size_t len = v1beta1__register_request__get_packed_size(&req);
    v1beta1__register_request__pack(&req, buf);
    s->reg = REG_PENDING;
    /* The kubelet calls GetDevicePluginOptions on our socket before it
     * answers: the call must not block the loop, and it does not. */
    s->reg_call = grpc_channel_call(s->reg_channel, "/v1beta1.Registration/Register", buf, len,
                                    REGISTER_TIMEOUT_MS, NULL, register_done, s);
    if (s->reg_call == NULL)
        register_later(s, "the connection to the kubelet closed");
}

/* ---- the plugin ---- */

static void health_changed(unsigned int gpu, int mig, bool healthy, const char *reason,
                           void *user);

int plugin_start(struct event_base *base, const char *dir, const struct config *cfg,
                 const struct gpu_inventory *inv, struct devices_health *health,
                 struct plugin **out, struct gpulet_error *err)
{
    struct plugin *p = calloc(1, sizeof *p);
    if (p == NULL)
        return gpulet_error_errno(err, ENOMEM, "cannot start the device plugin");
    p->base = base;
    p->budget = grpc_budget_new();
    if (p->budget == NULL) {
        free(p);
        return gpulet_error_errno(err, ENOMEM, "cannot start the device plugin");
    }
    snprintf(p->dir, sizeof p->dir, "%s", dir);
    p->cfg = *cfg;
    p->inv = inv;
    if (devices_catalog_build(inv, cfg, &p->resources, &p->count, err) < 0) {
        grpc_budget_free(p->budget);
        free(p);
        return -1;
    }
    p->served = calloc(p->count + 1, sizeof *p->served);
    p->reaping = allocdir_reaper_new(cfg->state_dir);
    if (p->served == NULL || p->reaping == NULL || allocdir_reaper_start(p->reaping) < 0) {
        allocdir_reaper_free(p->reaping);
        free(p->served);
        devices_catalog_free(p->resources, p->count);
        grpc_budget_free(p->budget);
        free(p);
        return gpulet_error_errno(err, ENOMEM, "cannot start the device plugin");
    }
    for (size_t i = 0; i < p->count; i++) {
        struct served *s = &p->served[i];
        s->plugin = p;
        s->res = &p->resources[i];
        s->backoff_ms = RETRY_FIRST_MS;
        s->retry = evtimer_new(base, retry_cb, s);
        s->changed = event_new(base, -1, 0, changed_cb, s);
        if (s->retry == NULL || s->changed == NULL) {
            gpulet_error_errno(err, ENOMEM, "cannot start the device plugin");
            plugin_stop(p);
            plugin_free(p);
            return -1;
        }
        if (serve(s, err) < 0) {
            gpulet_error_prefix(err, "cannot serve %s", s->res->name);
            plugin_stop(p);
            plugin_free(p);
            return -1;
        }
    }
    if (devices_health_subscribe(health, health_changed, p, err) < 0) {
        plugin_stop(p);
        plugin_free(p);
        return -1;
    }
    p->health = health;
    if (p->count == 0)
        log_warn("no GPU to advertise; the device plugin serves nothing", "gpus=%zu",
                 inv->gpu_count);
    for (size_t i = 0; i < p->count; i++)
        register_start(&p->served[i]);
    reap_soon(p); /* what an earlier run left */
    *out = p;
    return 0;
}

void plugin_kubelet_restarted(struct plugin *p)
{
    log_info("kubelet.sock appeared: registering again", "resources=%zu", p->count);
    for (size_t i = 0; i < p->count; i++) {
        struct served *s = &p->served[i];
        char path[4200];
        struct stat st;
        socket_path(s, path, sizeof path);
        if (stat(path, &st) != 0)
            plugin_file_removed(p, s->res->socket_name);
        s->backoff_ms = RETRY_FIRST_MS;
        register_start(s);
    }
}

void plugin_file_removed(struct plugin *p, const char *name)
{
    if (p->stopped)
        return;
    for (size_t i = 0; i < p->count; i++) {
        struct served *s = &p->served[i];
        if (strcmp(s->res->socket_name, name) != 0)
            continue;
        char path[4200];
        struct stat st;
        socket_path(s, path, sizeof path);
        if (stat(path, &st) == 0)
            return; /* already back (our own replacement) */
        log_warn("our socket was deleted: serving it again", "resource=%s socket=%s",
                 s->res->name, path);
        close_registration(s);
        if (s->server)
            grpc_server_free(s->server);
        s->server = NULL;
        struct gpulet_error err = {0};
        if (serve(s, &err) < 0) {
            log_error("cannot serve the socket again", "resource=%s error=\"%s\"", s->res->name,
                      err.msg);
            return;
        }
        register_start(s);
        return;
    }
}

/* Marks the devices, and streams the new list to the kubelet where
 * anything changed. */
static void health_changed(unsigned int gpu, int mig, bool healthy, const char *reason,
                           void *user)
{
    struct plugin *p = user;
    for (size_t i = 0; i < p->count; i++) {
        struct served *s = &p->served[i];
        size_t changed = devices_pool_set_health(s->res, gpu, mig, healthy, reason);
        if (changed)
            broadcast(s);
    }
}

void plugin_on_allocate(struct plugin *p, void (*fn)(void *user), void *user)
{
    p->on_allocate = fn;
    p->on_allocate_user = user;
}

size_t plugin_resource_count(const struct plugin *p)
{
    return p->count;
}

const char *plugin_resource_name(const struct plugin *p, size_t i)
{
    return p->resources[i].name;
}

void plugin_stop(struct plugin *p)
{
    if (p->stopped)
        return;
    p->stopped = true;
    for (size_t i = 0; i < p->count; i++) {
        struct served *s = &p->served[i];
        close_registration(s);
        if (s->server)
            grpc_server_shutdown(s->server);
    }
}

void plugin_free(struct plugin *p)
{
    if (p == NULL)
        return;
    plugin_stop(p);
    if (p->health)
        devices_health_unsubscribe(p->health, health_changed, p);
    for (size_t i = 0; i < p->count; i++) {
        struct served *s = &p->served[i];
        if (s->server)
            grpc_server_free(s->server);
        while (s->watchers) {
            struct watcher *w = s->watchers;
            s->watchers = w->next;
            free(w);
        }
        if (s->retry)
            event_free(s->retry);
        if (s->changed)
            event_free(s->changed);
    }
    free(p->served);
    allocdir_reaper_free(p->reaping);
    grpc_budget_free(p->budget);
    devices_catalog_free(p->resources, p->count);
    free(p);
}

/* "resource\nid" of every device pod-resources lists, sorted, with the
 * container holding it. */
struct held_key {
    char *key;
    const V1__PodResources *pod;
    const V1__ContainerResources *container;
};

struct held_set {
    struct held_key *keys;
    size_t count;
    const struct plugin *plugin;
    void (*fn)(const struct metrics_limit *l, void *user);
    void *user;
    struct plugin_slice_problems problems; /* state files skipped in this listing */
};

/* A container names at most a few files in its state/ folder; past this
 * many entries the rest are not looked at. */
#define STATE_ENTRIES_MAX 256

/* The interposer's usage of each of the folder's GPUs, from the files in
 * its state/ folder. */
static void read_usage(const struct gpu_inventory *inv, const char *dir, const unsigned int *gpus,
                       size_t n_gpus, struct metrics_limit *limits, struct plugin_slice_problems *pr)
{
    char path[4400];
    snprintf(path, sizeof path, "%s/state", dir);
    int fd = open(path, O_RDONLY | O_DIRECTORY | O_NOFOLLOW | O_CLOEXEC);
    if (fd < 0)
        return;
    int fd2 = dup(fd);
    DIR *d = fd2 < 0 ? NULL : fdopendir(fd2);
    if (d == NULL) {
        if (fd2 >= 0)
            close(fd2);
        close(fd);
        return;
    }
    struct dirent *e;
    for (size_t seen = 0; (e = readdir(d)) != NULL && seen < STATE_ENTRIES_MAX; seen++) {
        for (size_t i = 0; i < n_gpus; i++) {
            if (gpus[i] >= inv->gpu_count || !glc_same_uuid(e->d_name, inv->gpus[gpus[i]].uuid))
                continue;
            struct glc_usage u;
            char msg[256];
            if (glc_peek(fd, e->d_name, &u, msg, sizeof msg) < 0) {
                if (pr->unusable++ == 0)
                    snprintf(pr->first, sizeof pr->first, "%s: %s", dir, msg);
                continue;
            }
            limits[i].has_usage = true;
            limits[i].memory_used = u.used;
            limits[i].has_compute = u.counted;
            limits[i].compute_ns = u.charged_ns;
        }
    }
    closedir(d);
    close(fd);
}

static int compare_uint(const void *a, const void *b)
{
    unsigned int x = *(const unsigned int *)a, y = *(const unsigned int *)b;
    return (x > y) - (x < y);
}

void plugin_slice_report(const struct gpu_inventory *inv, const char *dir, unsigned int *gpus,
                         size_t n_gpus, const V1__PodResources *pod,
                         const V1__ContainerResources *container,
                         struct plugin_slice_problems *pr,
                         void (*fn)(const struct metrics_limit *l, void *user), void *user)
{
    char path[4400], msg[256];
    snprintf(path, sizeof path, "%s/limits", dir);
    /* Read as the interposer reads it: a file it would refuse limits
     * nothing, so it shows nothing. */
    struct glc_limits file;
    if (glc_read_limits(path, &file, msg, sizeof msg) != 0)
        return;
    if (n_gpus > GLC_MAX_DEVS)
        n_gpus = GLC_MAX_DEVS;
    /* The folder's ordinals count its GPUs in index order, as the grant did. */
    qsort(gpus, n_gpus, sizeof *gpus, compare_uint);
    struct metrics_limit limits[GLC_MAX_DEVS] = {0};
    for (size_t i = 0; i < n_gpus; i++) {
        limits[i].memory_limit = file.dev[i].limit;
        /* gpulet writes a share with every limit; the parser reads 100 %
         * as none */
        if (file.dev[i].share)
            limits[i].compute_share = file.dev[i].share / 100.0;
        else if (file.dev[i].limit)
            limits[i].compute_share = 100.0;
    }
    read_usage(inv, dir, gpus, n_gpus, limits, pr);
    for (size_t i = 0; i < n_gpus; i++) {
        limits[i].gpu = gpus[i];
        snprintf(limits[i].pod, sizeof limits[i].pod, "%s", pod->name ? pod->name : "");
        snprintf(limits[i].namespace, sizeof limits[i].namespace, "%s",
                 pod->namespace_ ? pod->namespace_ : "");
        snprintf(limits[i].container, sizeof limits[i].container, "%s",
                 container->name ? container->name : "");
        fn(&limits[i], user);
    }
}

void plugin_slice_problems_log(const struct plugin_slice_problems *pr)
{
    if (pr->unusable)
        log_warn("unusable CUDA state files skipped; no usage metrics for them",
                 "count=%zu first=\"%s\"", pr->unusable, pr->first);
}

static int compare_keys(const void *a, const void *b)
{
    return strcmp(((const struct held_key *)a)->key, ((const struct held_key *)b)->key);
}

static const void *held(const char *resource, const char *id, void *user)
{
    const struct held_set *set = user;
    char key[CONFIG_NAME_MAX + DEVICES_ID_MAX + 2];
    snprintf(key, sizeof key, "%s\n%s", resource, id);
    struct held_key k = {.key = key};
    return set->count ? bsearch(&k, set->keys, set->count, sizeof *set->keys, compare_keys)
                      : NULL;
}

/* A held folder: its limits, GPU by GPU, to fn. */
static void kept(const char *dir, const char *resource, char *const *ids, size_t n,
                 const void *holder, void *user)
{
    struct held_set *set = user;
    const struct held_key *h = holder;
    const struct devices_pool *r = NULL;
    for (size_t i = 0; i < set->plugin->count && r == NULL; i++)
        if (strcmp(set->plugin->resources[i].name, resource) == 0)
            r = &set->plugin->resources[i];
    if (set->fn == NULL || r == NULL)
        return;
    unsigned int gpus[GLC_MAX_DEVS];
    size_t n_gpus = 0;
    for (size_t i = 0; i < n; i++) {
        const struct devices_device *d = devices_find(r, ids[i]);
        bool seen = false;
        for (size_t k = 0; d && k < n_gpus && !seen; k++)
            seen = gpus[k] == d->gpu;
        if (d && !seen && n_gpus < GLC_MAX_DEVS)
            gpus[n_gpus++] = d->gpu;
    }
    plugin_slice_report(set->plugin->inv, dir, gpus, n_gpus, h->pod, h->container,
                        &set->problems, set->fn, set->user);
}

/* More than any node holds; past it nothing is pruned (the set would be
 * incomplete and a held folder could look free). */
#define HELD_MAX 65536

void plugin_pods_listed(struct plugin *p, const V1__ListPodResourcesResponse *resp,
                        void (*fn)(const struct metrics_limit *l, void *user), void *user)
{
    bool sliced = false;
    for (size_t i = 0; i < p->count; i++)
        sliced |= p->resources[i].sharing == SHARING_SLICES;
    if (!sliced)
        return;
    struct held_set set = {.plugin = p, .fn = fn, .user = user};
    size_t total = 0;
    for (size_t i = 0; i < resp->n_pod_resources; i++)
        for (size_t j = 0; j < resp->pod_resources[i]->n_containers; j++)
            for (size_t k = 0; k < resp->pod_resources[i]->containers[j]->n_devices; k++)
                total += resp->pod_resources[i]->containers[j]->devices[k]->n_device_ids;
    if (total > HELD_MAX) {
        log_warn("pod-resources lists more devices than gpulet checks; slice folders not pruned",
                 "devices=%zu max=%d", total, HELD_MAX);
        return;
    }
    set.keys = calloc(total + 1, sizeof *set.keys);
    if (set.keys == NULL)
        return;
    for (size_t i = 0; i < resp->n_pod_resources; i++) {
        const V1__PodResources *pod = resp->pod_resources[i];
        for (size_t j = 0; j < pod->n_containers; j++)
            for (size_t k = 0; k < pod->containers[j]->n_devices; k++) {
                const V1__ContainerDevices *d = pod->containers[j]->devices[k];
                for (size_t x = 0; x < d->n_device_ids && d->resource_name; x++) {
                    size_t len = strlen(d->resource_name) + strlen(d->device_ids[x]) + 2;
                    char *key = malloc(len);
                    if (key == NULL)
                        goto done;
                    snprintf(key, len, "%s\n%s", d->resource_name, d->device_ids[x]);
                    set.keys[set.count++] = (struct held_key){key, pod, pod->containers[j]};
                }
            }
    }
    qsort(set.keys, set.count, sizeof *set.keys, compare_keys);
    struct allocdir_visitor v = {.held = held, .kept = kept, .user = &set};
    allocdir_prune(p->cfg.state_dir, &v, time(NULL), PLUGIN_ALLOC_GRACE_S);
    reap_soon(p);
    /* Once per listing, which comes once per interval. */
    plugin_slice_problems_log(&set.problems);
done:
    for (size_t i = 0; i < set.count; i++)
        free(set.keys[i].key);
    free(set.keys);
}
