#include "daemon.h"

#include <errno.h>
#include <limits.h>
#include <pthread.h>
#include <signal.h>
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/inotify.h>
#include <sys/resource.h>
#include <sys/stat.h>
#include <unistd.h>

#include <event2/event.h>

#include "devices/devices.h"
#include "dra/dra.h"
#include "fileio/fileio.h"
#include "gpu/gpu.h"
#include "health/health.h"
#include "labels/labels.h"
#include "metrics/metrics.h"
#include "log/log.h"
#include "plugin/plugin.h"

/* Three priorities on the loop: signals, the device plugin and the rest
 * take the middle one (libevent's default); the metrics port takes the
 * lowest, so that nothing sent to it delays the kubelet's calls. */
#define LOOP_PRIORITIES 3

/* Everything the running daemon holds; the only mutable state it has. */
struct daemon {
    const struct daemon_options *opts;
    struct event_base *base;
    struct config cfg;
    struct nvml *nvml;
    struct gpu_inventory *inv;
    struct plugin *plugin;
    struct dra *dra;
    struct kube_config kube;
    struct health *health;
    struct devices_health health_news; /* health's verdicts, to the plugin and DRA */
    struct metrics *metrics;
    int inotify_fd;
    struct event *inotify_event;
    struct event *signals[4];
    /* The caller's signal mask, set again before the handlers go. */
    sigset_t caller_mask;
    bool unblocked;
    struct event *labels_timer;
    char labels_problem[GPULET_ERROR_MSG_MAX]; /* logged once until it changes */
    struct log_limit limits_log;                /* sliced containers past the bound */
    int exit_code;
};

static void allocated(void *user)
{
    struct daemon *d = user;
    metrics_refresh_pods(d->metrics);
}

struct limits_list {
    struct metrics_limit *items;
    size_t count, room;
    unsigned long dropped; /* past METRICS_LIMITS_MAX, or out of memory */
};

static void limit_seen(const struct metrics_limit *l, void *user)
{
    struct limits_list *list = user;
    if (list->count == list->room) {
        size_t room = list->room ? 2 * list->room : 64;
        struct metrics_limit *items =
            room <= METRICS_LIMITS_MAX ? realloc(list->items, room * sizeof *items) : NULL;
        if (items == NULL) {
            list->dropped++;
            return;
        }
        list->items = items;
        list->room = room;
    }
    list->items[list->count++] = *l;
}

/* After each pod-resources answer: the plugin prunes the folders of
 * sliced containers gone, and the metrics show the limits of the others. */
static void pods_listed(const V1__ListPodResourcesResponse *resp, void *user)
{
    struct daemon *d = user;
    if (d->plugin == NULL)
        return;
    struct limits_list list = {0};
    plugin_pods_listed(d->plugin, resp, limit_seen, &list);
    metrics_set_limits(d->metrics, list.items, list.count);
    free(list.items);
    unsigned long held;
    if (list.dropped && log_limit_pass(&d->limits_log, &held))
        log_warn("sliced containers' limits left out of /metrics", "shown=%zu left_out=%lu "
                 "bound=%d earlier_lines_held=%lu", list.count, list.dropped,
                 METRICS_LIMITS_MAX, held);
}

static void xid_seen(unsigned int gpu, unsigned long long xid, void *user)
{
    struct daemon *d = user;
    metrics_record_xid(d->metrics, gpu, xid);
}

static int start_plugin(struct daemon *d, const struct config *cfg)
{
    struct gpulet_error err = {0};
    if (plugin_start(d->base, d->opts->device_plugin_dir, cfg, d->inv, &d->health_news,
                     &d->plugin, &err) < 0) {
        log_error("cannot start the device plugin", "error=\"%s\"", err.msg);
        return -1;
    }
    if (d->health)
        health_replay(d->health);
    plugin_on_allocate(d->plugin, allocated, d);
    return 0;
}

static void health_changed(unsigned int gpu, int mig, bool healthy, const char *reason,
                           void *user)
{
    struct daemon *d = user;
    devices_health_set(&d->health_news, gpu, mig, healthy, reason);
}

static int start_dra(struct daemon *d)
{
    struct gpulet_error err = {0};
    if (kube_config_load(d->opts->kubeconfig, &d->kube, &err) < 0) {
        log_error("cannot start the DRA driver", "error=\"%s\"", err.msg);
        return -1;
    }
    const char *root = d->opts->nvml.driver_root ? d->opts->nvml.driver_root : d->cfg.driver_root;
    struct dra_options o = {.kubelet_root = d->opts->kubelet_root,
                            .node_name = d->opts->node_name,
                            .kube = &d->kube,
                            .state_dir = d->cfg.state_dir,
                            .cdi_root = d->opts->cdi_dir,
                            .sysfs = nvml_sysfs_root(d->nvml),
                            .cdi = {.driver_root = root, .dev_root = root,
                                    .hook_path = d->opts->cdi_hook,
                                    .host_root = d->opts->host_driver_root},
                            .cfg = &d->cfg,
                            .health = &d->health_news};
    if (dra_start(d->base, &o, d->inv, &d->dra, &err) < 0) {
        log_error("cannot start the DRA driver", "error=\"%s\"", err.msg);
        return -1;
    }
    if (d->health)
        health_replay(d->health);
    return 0;
}

static int start_health(struct daemon *d)
{
    struct health_options opts = {.on_xid = xid_seen,
                                  .disable = getenv("DP_DISABLE_HEALTHCHECKS"),
                                  .enable = getenv("DP_ENABLE_HEALTHCHECKS"),
                                  .recovery_ms = d->opts->health_recovery_ms};
    struct gpulet_error err = {0};
    if (health_start(d->base, d->nvml, d->inv, &opts, health_changed, d, &d->health, &err) < 0) {
        fprintf(stderr, "gpulet: %s\n", err.msg);
        return -1;
    }
    return 0;
}

static void write_labels(struct daemon *d)
{
    if (d->opts->labels_file == NULL)
        return;
    struct label_set set = {0};
    struct gpulet_error err = {0};
    int rc = labels_compute(d->inv, &d->cfg, d->opts->labels_timestamp, time(NULL), &set, &err);
    if (rc == 0)
        rc = labels_write(&set, d->opts->labels_file, &err);
    size_t count = set.count;
    labels_free(&set);
    if (rc < 0) {
        /* Retried every interval; said once until the problem changes. */
        if (strcmp(d->labels_problem, err.msg) != 0)
            log_error("cannot write the node labels", "file=%s error=\"%s\"",
                      d->opts->labels_file, err.msg);
        snprintf(d->labels_problem, sizeof d->labels_problem, "%s", err.msg);
        log_debug("node labels not written; will retry", "file=%s", d->opts->labels_file);
        return;
    }
    if (d->labels_problem[0])
        log_info("node labels written again", "file=%s", d->opts->labels_file);
    d->labels_problem[0] = '\0';
    log_debug("node labels written", "file=%s labels=%zu", d->opts->labels_file, count);
}

static void labels_cb(evutil_socket_t fd, short what, void *arg)
{
    (void)fd;
    (void)what;
    write_labels(arg);
}

static void reload(struct daemon *d)
{
    struct config cfg;
    struct gpulet_error err = {0};
    if (config_load(&d->opts->flags, config_process_env, &cfg, &err) < 0) {
        log_error("SIGHUP: the new configuration is refused; keeping the running one",
                  "error=\"%s\"", err.msg);
        return;
    }
    /* DRA's devices are fixed while it runs: its GPUs stay its own. */
    cfg.dra_enabled = d->cfg.dra_enabled;
    cfg.dra_gpus_set = d->cfg.dra_gpus_set;
    cfg.dra_gpu_count = d->cfg.dra_gpu_count;
    memcpy(cfg.dra_gpus, d->cfg.dra_gpus, sizeof cfg.dra_gpus);
    if (!d->opts->device_plugin) {
        d->cfg = cfg;
        write_labels(d);
        return;
    }
    struct plugin *old = d->plugin;
    plugin_stop(old);
    plugin_free(old);
    d->plugin = NULL;
    if (start_plugin(d, &cfg) < 0) {
        log_error("SIGHUP: the new configuration cannot be served; going back to the old one",
                  "file=%s", cfg.file[0] ? cfg.file : "none");
        if (start_plugin(d, &d->cfg) < 0) {
            d->exit_code = 1;
            event_base_loopbreak(d->base);
        }
        return;
    }
    d->cfg = cfg;
    write_labels(d);
    log_info("SIGHUP: configuration reloaded", "file=%s mig_strategy=%s sharing=%s",
             cfg.file[0] ? cfg.file : "none", config_mig_strategy_name(cfg.mig_strategy),
             config_sharing_name(cfg.sharing));
}

static void signal_cb(evutil_socket_t sig, short what, void *arg)
{
    (void)what;
    struct daemon *d = arg;
    if (sig == SIGHUP) {
        reload(d);
        return;
    }
    log_info("stopping", "signal=%s",
             sig == SIGTERM ? "SIGTERM" : sig == SIGINT ? "SIGINT" : "SIGQUIT");
    event_base_loopbreak(d->base);
}

static void inotify_cb(evutil_socket_t fd, short what, void *arg)
{
    (void)what;
    struct daemon *d = arg;
    char buf[4096] __attribute__((aligned(__alignof__(struct inotify_event))));
    for (;;) {
        ssize_t n = read(fd, buf, sizeof buf);
        if (n <= 0)
            return;
        for (char *p = buf; p < buf + n;) {
            const struct inotify_event *ev = (const struct inotify_event *)p;
            p += sizeof *ev + ev->len;
            if (ev->len == 0 || d->plugin == NULL)
                continue;
            if ((ev->mask & (IN_CREATE | IN_MOVED_TO)) &&
                strcmp(ev->name, PLUGIN_KUBELET_SOCKET) == 0)
                plugin_kubelet_restarted(d->plugin);
            else if (ev->mask & (IN_DELETE | IN_MOVED_FROM))
                plugin_file_removed(d->plugin, ev->name);
        }
    }
}

static int watch_directory(struct daemon *d)
{
    const char *dir = d->opts->device_plugin_dir;
    struct stat st;
    if (stat(dir, &st) != 0) {
        /* gpulet may start before the kubelet: make the folder as the
         * kubelet does (0750), and its parents (/var/lib/kubelet) too. */
        struct gpulet_error err = {0};
        if (fileio_mkdirs(dir, 0755, 0750, &err) < 0) {
            log_error("cannot create the device-plugin directory", "dir=%s error=\"%s\"", dir,
                      err.msg);
            return -1;
        }
        log_info("created the device-plugin directory", "dir=%s", dir);
    }
    d->inotify_fd = inotify_init1(IN_NONBLOCK | IN_CLOEXEC);
    if (d->inotify_fd < 0 ||
        inotify_add_watch(d->inotify_fd, dir, IN_CREATE | IN_DELETE | IN_MOVED_TO | IN_MOVED_FROM) <
            0) {
        log_error("cannot watch the device-plugin directory", "dir=%s error=\"%s\"", dir,
                  strerror(errno));
        return -1;
    }
    d->inotify_event = event_new(d->base, d->inotify_fd, EV_READ | EV_PERSIST, inotify_cb, d);
    event_add(d->inotify_event, NULL);
    return 0;
}

static void cleanup(struct daemon *d)
{
    if (d->plugin) {
        plugin_stop(d->plugin);
        /* Let the goodbyes (GOAWAY, stream ends) reach the kubelet. */
        struct timeval flush = {0, 100000};
        event_base_loopexit(d->base, &flush);
        event_base_dispatch(d->base);
        plugin_free(d->plugin);
        d->plugin = NULL;
    }
    dra_free(d->dra);
    kube_config_clear(&d->kube);
    health_stop(d->health);
    metrics_stop(d->metrics);
    if (d->labels_timer) {
        event_free(d->labels_timer);
        /* The labels describe a node gpulet serves; without it they go. */
        if (unlink(d->opts->labels_file) != 0 && errno != ENOENT)
            log_warn("cannot remove the node labels", "file=%s error=\"%s\"",
                     d->opts->labels_file, strerror(errno));
    }
    if (d->inotify_event)
        event_free(d->inotify_event);
    if (d->inotify_fd >= 0)
        close(d->inotify_fd);
    if (d->unblocked)
        pthread_sigmask(SIG_SETMASK, &d->caller_mask, NULL);
    for (size_t i = 0; i < sizeof d->signals / sizeof d->signals[0]; i++)
        if (d->signals[i])
            event_free(d->signals[i]);
    gpu_inventory_free(d->inv);
    nvml_close(d->nvml);
    if (d->base)
        event_base_free(d->base);
}

/* libevent's own messages (a failing accept, a broken socket ...) as
 * gpulet log lines, one per interval whatever their rate. libevent's
 * callback takes no argument, so the limit is the one process-wide state
 * here; only the loop's thread uses libevent. */
static struct log_limit libevent_limit = {.interval_s = 60};

static void libevent_log(int severity, const char *msg)
{
    unsigned long held;
    if (severity < EVENT_LOG_WARN || !log_limit_pass(&libevent_limit, &held))
        return;
    log_warn("libevent", "message=\"%s\" times_before=%lu", msg, held);
}

/* Each connection takes a descriptor; the kernel's soft limit (often
 * 1024) is a default for programs that never asked, the hard limit is
 * what the operator allows. */
static void raise_descriptor_limit(void)
{
    struct rlimit rl;
    if (getrlimit(RLIMIT_NOFILE, &rl) != 0 || rl.rlim_cur >= rl.rlim_max)
        return;
    rlim_t soft = rl.rlim_cur;
    rl.rlim_cur = rl.rlim_max;
    if (setrlimit(RLIMIT_NOFILE, &rl) != 0)
        log_warn("cannot raise the descriptor limit", "soft=%llu hard=%llu error=\"%s\"",
                 (unsigned long long)soft, (unsigned long long)rl.rlim_max, strerror(errno));
    else
        log_debug("descriptor limit raised", "soft=%llu now=%llu", (unsigned long long)soft,
                  (unsigned long long)rl.rlim_cur);
}

static void log_inventory(const struct daemon *d)
{
    log_info("GPU inventory", "gpus=%zu driver=%s cuda=%d simulated=%s", d->inv->gpu_count,
             d->inv->driver_version, d->inv->cuda_driver_version,
             d->inv->simulated_node[0] ? d->inv->simulated_node : "no");
}

int daemon_run(const struct daemon_options *opts)
{
    struct daemon d = {.opts = opts, .inotify_fd = -1};
    struct gpulet_error err = {0};
    signal(SIGPIPE, SIG_IGN);
    raise_descriptor_limit();
    event_set_log_callback(libevent_log);
    if (config_load(&opts->flags, config_process_env, &d.cfg, &err) < 0) {
        fprintf(stderr, "gpulet: %s\n", err.msg);
        return 2;
    }
    d.cfg.dra_enabled |= opts->dra;
    if (d.cfg.dra_enabled && opts->device_plugin && !d.cfg.dra_gpus_set) {
        fprintf(stderr, "gpulet: with both the device plugin and DRA on, every GPU would be "
                        "offered twice: list the GPUs DRA takes in the config file's dra.gpus "
                        "(the device plugin offers the others), or give --no-device-plugin\n");
        return 2;
    }
    struct nvml_options nvml_opts = opts->nvml;
    if (nvml_opts.driver_root == NULL && strcmp(d.cfg.driver_root, "/") != 0)
        nvml_opts.driver_root = d.cfg.driver_root;
    d.base = event_base_new();
    if (d.base == NULL || event_base_priority_init(d.base, LOOP_PRIORITIES) != 0) {
        fprintf(stderr, "gpulet: cannot create the event loop\n");
        return 1;
    }
    static const int sigs[] = {SIGTERM, SIGINT, SIGHUP, SIGQUIT};
    sigset_t handled;
    sigemptyset(&handled);
    for (size_t i = 0; i < (opts->stop_on_quit ? 4u : 3u); i++) {
        d.signals[i] = evsignal_new(d.base, sigs[i], signal_cb, &d);
        event_add(d.signals[i], NULL);
        sigaddset(&handled, sigs[i]);
    }
    /* A caller may hold them blocked until they are handled here, so that
     * none arriving meanwhile skips its own cleanup (--simulate's folder). */
    d.unblocked = pthread_sigmask(SIG_UNBLOCK, &handled, &d.caller_mask) == 0;
    if (nvml_open(&nvml_opts, &d.nvml, &err) < 0 ||
        gpu_inventory_load(d.nvml, &d.inv, &err) < 0) {
        if (d.cfg.fail_on_init_error) {
            fprintf(stderr, "gpulet: %s\n", err.msg);
            cleanup(&d);
            return 2;
        }
        /* failOnInitError: false, as NVIDIA's plugin: stay up, serve nothing. */
        log_error("no GPUs available; idling (failOnInitError is false)", "error=\"%s\"", err.msg);
        event_base_dispatch(d.base);
        cleanup(&d);
        return 0;
    }
    log_inventory(&d);
    if (opts->metrics_on &&
        metrics_start(d.base, d.nvml, d.inv, &opts->metrics, &d.metrics, &err) < 0) {
        fprintf(stderr, "gpulet: %s\n", err.msg);
        cleanup(&d);
        return 2;
    }
    metrics_on_pods(d.metrics, pods_listed, &d);
    if (start_health(&d) < 0) {
        cleanup(&d);
        return 2;
    }
    if (opts->device_plugin) {
        if (watch_directory(&d) < 0 || start_plugin(&d, &d.cfg) < 0) {
            cleanup(&d);
            return 2;
        }
    }
    bool dra = d.cfg.dra_enabled;
    if (dra && start_dra(&d) < 0) {
        cleanup(&d);
        return 2;
    }
    if (opts->labels_file) {
        write_labels(&d);
        d.labels_timer = event_new(d.base, -1, EV_PERSIST, labels_cb, &d);
        struct timeval tv = {opts->labels_interval_ms / 1000,
                             (opts->labels_interval_ms % 1000) * 1000};
        event_add(d.labels_timer, &tv);
    }
    log_info("gpulet running", "device_plugin=%s dra=%s dir=%s labels=%s mig_strategy=%s "
             "sharing=%s", opts->device_plugin ? "on" : "off", dra ? "on" : "off",
             opts->device_plugin_dir,
             opts->labels_file ? opts->labels_file : "off",
             config_mig_strategy_name(d.cfg.mig_strategy), config_sharing_name(d.cfg.sharing));
    event_base_dispatch(d.base);
    int code = d.exit_code;
    cleanup(&d);
    log_info("gpulet stopped", "exit=%d", code);
    return code;
}
