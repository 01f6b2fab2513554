#include "doctor.h"

#include <dirent.h>
#include <stdarg.h>
#include <errno.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <sys/sysmacros.h>
#include <unistd.h>

#include <event2/event.h>
#include <jansson.h>

#include "fileio/fileio.h"
#include "gpu/gpu.h"
#include "grpc/grpc.h"
#include "gpulet/v1/status.pb-c.h"
#include "podresources/v1/api.pb-c.h"

enum verdict { OK, WARN, FAIL };

struct report {
    json_t *checks;
    bool all_ok;
};

static void say(struct report *r, enum verdict v, const char *check, const char *fix,
                const char *fmt, ...) __attribute__((format(printf, 5, 6)));

static void say(struct report *r, enum verdict v, const char *check, const char *fix,
                const char *fmt, ...)
{
    char msg[1024];
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(msg, sizeof msg, fmt, ap);
    va_end(ap);
    static const char *const names[] = {"ok", "warn", "fail"};
    json_t *c = json_pack("{s:s, s:s, s:s}", "check", check, "status", names[v], "message", msg);
    if (v != OK && fix)
        json_object_set_new(c, "fix", json_string(fix));
    json_array_append_new(r->checks, c);
    if (v != OK)
        r->all_ok = false;
}

static char *slurp(const char *path)
{
    char *text;
    size_t len;
    return fileio_read(path, 16u << 20, &text, &len, NULL) == 0 ? text : NULL;
}

static void check_devices(struct report *r, const struct doctor_options *o,
                          const struct gpu_inventory *inv)
{
    const char *root = strcmp(o->dev_root, "/") == 0 ? "" : o->dev_root;
    char path[4200], missing[2048] = "";
    size_t used = 0;
    unsigned want = 1 + (unsigned)inv->gpu_count;
    unsigned found = 0;
    for (size_t i = 0; i <= inv->gpu_count; i++) {
        char dev[64];
        if (i == inv->gpu_count)
            snprintf(dev, sizeof dev, "/dev/nvidiactl");
        else
            snprintf(dev, sizeof dev, "/dev/nvidia%u", inv->gpus[i].minor);
        snprintf(path, sizeof path, "%s%s", root, dev);
        struct stat st;
        if (stat(path, &st) == 0 && S_ISCHR(st.st_mode) && major(st.st_rdev) == 195)
            found++;
        else if (used < sizeof missing)
            used += (size_t)snprintf(missing + used, sizeof missing - used, "%s%s",
                                     used ? ", " : "", path);
    }
    if (found == want)
        say(r, OK, "device nodes", NULL, "%u device nodes present (nvidiactl and one per GPU)",
            found);
    else
        say(r, FAIL, "device nodes",
            "load the driver's kernel modules (modprobe nvidia) and create the nodes "
            "(nvidia-modprobe); on systemd hosts also the /dev/char/195:N links, or containers "
            "lose their GPUs after a daemon-reload",
            "missing or not NVIDIA character devices: %s", missing);
}

static bool containerd_has_runtime(const char *main_path, char *where, size_t len)
{
    char *text = slurp(main_path);
    bool has = text && strstr(text, "runtimes.nvidia") != NULL;
    if (has)
        snprintf(where, len, "%s", main_path);
    free(text);
    char dir[4200];
    snprintf(dir, sizeof dir, "%s", main_path);
    char *slash = strrchr(dir, '/');
    if (slash == NULL)
        return has;
    snprintf(slash, sizeof dir - (size_t)(slash - dir), "/conf.d");
    DIR *d = opendir(dir);
    struct dirent *e;
    while (!has && d && (e = readdir(d)) != NULL) {
        char p[4500];
        snprintf(p, sizeof p, "%s/%s", dir, e->d_name);
        char *t = strstr(e->d_name, ".toml") ? slurp(p) : NULL;
        if (t && strstr(t, "runtimes.nvidia")) {
            has = true;
            snprintf(where, len, "%s", p);
        }
        free(t);
    }
    if (d)
        closedir(d);
    return has;
}

static void check_engines(struct report *r, const struct doctor_options *o)
{
    int engines = 0;
    char where[4500];
    if (access(o->containerd_config, F_OK) == 0) {
        engines++;
        if (containerd_has_runtime(o->containerd_config, where, sizeof where))
            say(r, OK, "containerd", NULL, "the nvidia runtime is configured (%s)", where);
        else
            say(r, FAIL, "containerd",
                "gpulet runtime configure --runtime containerd; if another tool rewrites "
                "config.toml (an operator, k3s), configure it there or use a conf.d drop-in",
                "%s has no nvidia runtime: pods with runtimeClassName nvidia fail with \"no "
                "runtime for nvidia is configured\"",
                o->containerd_config);
    }
    char *docker = slurp(o->docker_config);
    if (docker) {
        engines++;
        json_t *j = json_loads(docker, 0, NULL);
        if (j == NULL)
            say(r, FAIL, "docker", "fix the JSON syntax of the file", "%s does not parse",
                o->docker_config);
        else if (json_object_get(json_object_get(j, "runtimes"), "nvidia"))
            say(r, OK, "docker", NULL, "the nvidia runtime is configured (%s)", o->docker_config);
        else
            say(r, FAIL, "docker", "gpulet runtime configure --runtime docker",
                "%s has no nvidia runtime", o->docker_config);
        json_decref(j);
        free(docker);
    }
    DIR *d = opendir(o->crio_dir);
    if (d) {
        engines++;
        bool has = false;
        struct dirent *e;
        while (!has && (e = readdir(d)) != NULL) {
            char p[4500];
            snprintf(p, sizeof p, "%s/%s", o->crio_dir, e->d_name);
            char *t = slurp(p);
            has = t && strstr(t, "crio.runtime.runtimes.nvidia");
            free(t);
        }
        closedir(d);
        if (has)
            say(r, OK, "cri-o", NULL, "the nvidia runtime is configured (%s)", o->crio_dir);
        else
            say(r, WARN, "cri-o", "gpulet runtime configure --runtime crio (or use CDI)",
                "no drop-in in %s defines the nvidia runtime", o->crio_dir);
    }
    if (engines == 0)
        say(r, WARN, "container engine", "pass --containerd-config, --docker-config or --crio-dir",
            "no containerd, Docker or CRI-O configuration found");
}

static void check_cdi(struct report *r, const struct doctor_options *o,
                      const struct gpu_inventory *inv)
{
    char dirs[4096];
    snprintf(dirs, sizeof dirs, "%s", o->cdi_dirs);
    char *save;
    for (char *dir = strtok_r(dirs, ":", &save); dir; dir = strtok_r(NULL, ":", &save)) {
        static const char *const names[] = {"nvidia.yaml", "nvidia.json", NULL};
        for (size_t i = 0; names[i]; i++) {
            char path[4200];
            snprintf(path, sizeof path, "%s/%s", dir, names[i]);
            char *text = slurp(path);
            if (text == NULL)
                continue;
            size_t missing = 0;
            for (size_t g = 0; g < inv->gpu_count; g++) {
                char needle[128];
                snprintf(needle, sizeof needle, "%s", inv->gpus[g].uuid);
                missing += strstr(text, needle) == NULL;
            }
            bool version = strstr(text, inv->driver_version) != NULL || inv->gpu_count == 0;
            free(text);
            if (missing == 0 && version)
                say(r, OK, "cdi spec", NULL, "%s lists every GPU of driver %s", path,
                    inv->driver_version);
            else
                say(r, FAIL, "cdi spec",
                    "gpulet cdi generate --output /var/run/cdi/nvidia.yaml",
                    "%s is stale: %zu GPU(s) missing%s", path, missing,
                    version ? "" : ", and the driver version differs");
            return;
        }
    }
    say(r, WARN, "cdi spec", "gpulet cdi generate --output /var/run/cdi/nvidia.yaml",
        "no nvidia CDI spec in %s (gpulet-runtime then works it out at each start)", o->cdi_dirs);
}

/* ---- gRPC: one unary call on a fresh loop, with a short deadline ---- */

#define CALL_TIMEOUT_MS 2000
#define MAX_SOCKETS 32
#define MAX_DEVICES 4096

struct unary {
    struct event_base *base;
    enum grpc_status status;
    uint8_t *reply;
    size_t len;
    char message[512];
};

static void unary_done(enum grpc_status st, const char *msg, const uint8_t *reply, size_t len,
                       void *user)
{
    struct unary *u = user;
    u->status = st;
    snprintf(u->message, sizeof u->message, "%s", msg ? msg : "");
    if (st == GRPC_OK && (u->reply = malloc(len ? len : 1)) != NULL) {
        memcpy(u->reply, reply, len);
        u->len = len;
    }
    event_base_loopbreak(u->base);
}

/* Calls method on the socket at path with an empty request. On GRPC_OK
 * *reply (malloc'ed) holds the answer; otherwise problem says why.
 * refused (may be NULL) is set when nobody listens there. */
static enum grpc_status call_unary(const char *path, const char *method, uint8_t **reply,
                                   size_t *len, char *problem, size_t plen, bool *refused)
{
    struct unary u = {.base = event_base_new(), .status = GRPC_UNAVAILABLE};
    struct gpulet_error err = {0};
    struct grpc_channel *ch = NULL;
    uint8_t empty[1];
    *reply = NULL;
    *len = 0;
    if (refused)
        *refused = false;
    if (u.base == NULL) {
        snprintf(problem, plen, "cannot create an event loop");
        return GRPC_INTERNAL;
    }
    if (grpc_channel_open(u.base, path, &ch, &err) < 0) {
        snprintf(u.message, sizeof u.message, "%s", err.msg);
        if (refused)
            *refused = err.sys_errno == ECONNREFUSED || err.sys_errno == ENOENT;
    } else if (grpc_channel_call(ch, method, empty, 0, CALL_TIMEOUT_MS, NULL, unary_done, &u)) {
        event_base_dispatch(u.base);
    } else {
        snprintf(u.message, sizeof u.message, "the connection to %s closed", path);
    }
    grpc_channel_close(ch);
    event_base_free(u.base);
    if (u.status == GRPC_OK && u.reply == NULL) {
        snprintf(problem, plen, "out of memory");
        return GRPC_RESOURCE_EXHAUSTED;
    }
    if (u.status != GRPC_OK)
        snprintf(problem, plen, "%s", u.message);
    *reply = u.reply;
    *len = u.len;
    return u.status;
}

/* ---- is gpulet serving, and does the kubelet see its devices? ---- */

/* What the kubelet says it offers, from the best source it has. */
struct kubelet_view {
    const char *source; /* for the report; NULL when no source answered */
    V1__AllocatableResourcesResponse *allocatable;
    json_t *registered; /* the checkpoint's RegisteredDevices */
    char problem[1200]; /* why no source answered */
};

static void kubelet_view_load(const struct doctor_options *o, struct kubelet_view *v)
{
    uint8_t *reply;
    size_t len;
    char why[512];
    enum grpc_status st =
        call_unary(o->podresources, "/v1.PodResourcesLister/GetAllocatableResources", &reply,
                   &len, why, sizeof why, NULL);
    if (st == GRPC_OK) {
        v->allocatable = v1__allocatable_resources_response__unpack(NULL, len, reply);
        free(reply);
        if (v->allocatable) {
            v->source = "pod-resources GetAllocatableResources";
            return;
        }
        snprintf(why, sizeof why, "its answer does not decode");
    }
    /* Kubelets before 1.23 have no GetAllocatableResources; their device
     * manager writes the healthy devices of each resource to its
     * checkpoint at every update from a plugin. */
    char path[4200], *text = NULL;
    snprintf(path, sizeof path, "%s/kubelet_internal_checkpoint", o->device_plugin_dir);
    struct gpulet_error err = {0};
    if (fileio_read(path, 16u << 20, &text, &len, &err) == 0) {
        json_t *doc = json_loadb(text, len, 0, NULL);
        free(text);
        json_t *reg = json_object_get(json_object_get(doc, "Data"), "RegisteredDevices");
        if (json_is_object(reg)) {
            v->registered = json_incref(reg);
            v->source = st == GRPC_UNIMPLEMENTED
                            ? "the kubelet's checkpoint kubelet_internal_checkpoint; this "
                              "kubelet has no GetAllocatableResources (1.23+)"
                            : "the kubelet's checkpoint kubelet_internal_checkpoint";
            json_decref(doc);
            return;
        }
        json_decref(doc);
        snprintf(err.msg, sizeof err.msg, "%s has no Data.RegisteredDevices object", path);
    }
    snprintf(v->problem, sizeof v->problem, "GetAllocatableResources: %s; checkpoint: %s", why,
             err.msg);
}

static bool listed(char *const *ids, size_t n, const char *id)
{
    for (size_t i = 0; i < n; i++)
        if (strcmp(ids[i], id) == 0)
            return true;
    return false;
}

/* Counts the kubelet's devices of a resource and whether they are exactly
 * the given ones (compared while they can be: at most n_want² steps,
 * whatever the kubelet's answer holds). Returns -1 when the source does
 * not know the resource. */
static int kubelet_devices(const struct kubelet_view *v, const char *resource,
                           char *const *want, size_t n_want, size_t *count, bool *same)
{
    *count = 0;
    *same = true;
    bool known = false;
    if (v->allocatable) {
        for (size_t i = 0; i < v->allocatable->n_devices; i++) {
            const V1__ContainerDevices *cd = v->allocatable->devices[i];
            if (strcmp(cd->resource_name, resource) != 0)
                continue;
            known = true;
            for (size_t k = 0; k < cd->n_device_ids; k++, (*count)++)
                *same = *same && *count < n_want && listed(want, n_want, cd->device_ids[k]);
        }
    } else {
        json_t *ids = json_object_get(v->registered, resource), *id;
        size_t k;
        known = json_is_array(ids);
        json_array_foreach(ids, k, id) {
            *same = *same && *count < n_want && json_is_string(id) &&
                    listed(want, n_want, json_string_value(id));
            (*count)++;
        }
    }
    *same = *same && *count == n_want;
    return known ? 0 : -1;
}

static void check_kubelet(struct report *r, const Gpulet__V1__StatusResponse *st,
                          const struct kubelet_view *v)
{
    char **healthy = calloc(st->n_devices + 1, sizeof *healthy);
    size_t n = 0;
    for (size_t i = 0; healthy && i < st->n_devices; i++)
        if (strcmp(st->devices[i]->health, "Healthy") == 0)
            healthy[n++] = st->devices[i]->id;
    size_t count;
    bool same;
    if (healthy == NULL)
        say(r, FAIL, "kubelet", NULL, "out of memory");
    else if (v->source == NULL)
        say(r, WARN, "kubelet",
            "let doctor reach the kubelet's pod-resources socket and device-plugins folder "
            "(--pod-resources-socket, --device-plugin-dir)",
            "%s: cannot ask the kubelet what it offers (%s)", st->resource_name, v->problem);
    else if (kubelet_devices(v, st->resource_name, healthy, n, &count, &same) < 0)
        say(r, FAIL, "kubelet", "restart gpulet run; then look at the kubelet's log",
            "%s: the kubelet does not list it (from %s)", st->resource_name, v->source);
    else if (!same)
        say(r, FAIL, "kubelet", "look at the kubelet's log for the device plugin's errors",
            "%s: the kubelet offers %zu device(s) but gpulet has %zu healthy (from %s)",
            st->resource_name, count, n, v->source);
    else
        say(r, OK, "kubelet", NULL, "%s: the kubelet offers all %zu healthy device(s) (from %s)",
            st->resource_name, count, v->source);
    free(healthy);
}

static void check_health(struct report *r, const Gpulet__V1__StatusResponse *st)
{
    char list[900] = "";
    size_t used = 0, bad = 0;
    for (size_t i = 0; i < st->n_devices; i++) {
        const Gpulet__V1__DeviceStatus *d = st->devices[i];
        if (strcmp(d->health, "Healthy") == 0)
            continue;
        bad++;
        if (used < sizeof list)
            used += (size_t)snprintf(list + used, sizeof list - used, "%s%s (%s)",
                                     used ? ", " : "", d->id,
                                     d->reason[0] ? d->reason : "no reason recorded");
    }
    if (bad == 0)
        say(r, OK, "gpu health", NULL, "%s: all %zu device(s) healthy", st->resource_name,
            st->n_devices);
    else
        say(r, WARN, "gpu health",
            "look at dmesg and nvidia-smi -q; after an XID a device is offered again once the "
            "recovery period passes without another (--health-recovery-period); a lost GPU "
            "needs a reset or a reboot",
            "%s: %zu of %zu device(s) unhealthy, not allocatable: %s", st->resource_name, bad,
            st->n_devices, list);
}

/* Asks gpulet itself, through its Status service, about one socket. */
static void check_socket(struct report *r, const char *path, const struct kubelet_view *v)
{
    uint8_t *reply;
    size_t len;
    char why[512];
    bool refused;
    enum grpc_status rc =
        call_unary(path, "/gpulet.v1.Status/Get", &reply, &len, why, sizeof why, &refused);
    Gpulet__V1__StatusResponse *st =
        rc == GRPC_OK ? gpulet__v1__status_response__unpack(NULL, len, reply) : NULL;
    free(reply);
    if (st && st->n_devices > MAX_DEVICES) { /* more than any node has: not gpulet */
        gpulet__v1__status_response__free_unpacked(st, NULL);
        st = NULL;
        snprintf(why, sizeof why, "its answer lists more than %d devices", MAX_DEVICES);
        rc = GRPC_DATA_LOSS;
    }
    if (refused)
        say(r, FAIL, "device plugin",
            "start gpulet run (the DaemonSet) on this node; it replaces the stale socket",
            "%s is left behind but nobody listens: gpulet is not running (%s)", path, why);
    else if (rc == GRPC_UNIMPLEMENTED)
        say(r, WARN, "device plugin", "is another device plugin serving NVIDIA GPUs here?",
            "%s is served, but not by gpulet (no gpulet.v1.Status)", path);
    else if (st == NULL)
        say(r, FAIL, "device plugin", "restart gpulet run; then look at its log",
            "%s does not answer as gpulet: %s", path,
            rc == GRPC_OK ? "the answer does not decode" : why);
    else if (!st->registered)
        say(r, FAIL, "device plugin", "is the kubelet running? look at gpulet's and its log",
            "%s: gpulet serves it but the kubelet has not registered it%s%s",
            st->resource_name, st->problem[0] ? ": " : "", st->problem);
    else if (st->streams == 0)
        say(r, FAIL, "device plugin", "look at the kubelet's log for \"listAndWatch ended\"",
            "%s: registered, but the kubelet holds no ListAndWatch stream, so it sees none of "
            "its devices (capacity 0)",
            st->resource_name);
    else
        say(r, OK, "device plugin", NULL,
            "%s: gpulet serves %zu device(s), registered, the kubelet watching (from gpulet's "
            "Status on %s)",
            st->resource_name, st->n_devices, path);
    if (st && st->registered && st->streams > 0)
        check_kubelet(r, st, v);
    if (st)
        check_health(r, st);
    gpulet__v1__status_response__free_unpacked(st, NULL);
}

static int by_name(const void *a, const void *b)
{
    return strcmp(*(char *const *)a, *(char *const *)b);
}

static void check_plugin(struct report *r, const struct doctor_options *o)
{
    char path[4200];
    snprintf(path, sizeof path, "%s/kubelet.sock", o->device_plugin_dir);
    if (access(path, F_OK) != 0)
        say(r, FAIL, "kubelet", "is the kubelet running? (--device-plugin-dir)",
            "no kubelet.sock in %s", o->device_plugin_dir);
    char *names[MAX_SOCKETS];
    size_t count = 0, more = 0;
    DIR *d = opendir(o->device_plugin_dir);
    struct dirent *e;
    while (d && (e = readdir(d)) != NULL) {
        size_t n = strlen(e->d_name);
        if (strncmp(e->d_name, "nvidia-", 7) != 0 || strcmp(e->d_name + n - 5, ".sock") != 0)
            continue;
        if (count < MAX_SOCKETS && (names[count] = strdup(e->d_name)) != NULL)
            count++;
        else
            more++;
    }
    if (d)
        closedir(d);
    if (count == 0) {
        say(r, FAIL, "device plugin", "start gpulet run (the DaemonSet) on this node",
            "no nvidia-*.sock in %s: gpulet is not serving", o->device_plugin_dir);
        return;
    }
    qsort(names, count, sizeof *names, by_name);
    struct kubelet_view v = {0};
    kubelet_view_load(o, &v);
    for (size_t i = 0; i < count; i++) {
        snprintf(path, sizeof path, "%s/%s", o->device_plugin_dir, names[i]);
        check_socket(r, path, &v);
        free(names[i]);
    }
    if (more)
        say(r, WARN, "device plugin", "remove the sockets no plugin serves",
            "%zu more nvidia-*.sock in %s left unchecked (at most %d are checked)", more,
            o->device_plugin_dir, MAX_SOCKETS);
    v1__allocatable_resources_response__free_unpacked(v.allocatable, NULL);
    json_decref(v.registered);
}

static void check_idle(struct report *r, const struct doctor_options *o, struct nvml *nvml,
                       const struct gpu_inventory *inv)
{
    uint8_t *reply;
    size_t len;
    char why[512];
    V1__ListPodResourcesResponse *resp = NULL;
    if (call_unary(o->podresources, "/v1.PodResourcesLister/List", &reply, &len, why,
                   sizeof why, NULL) == GRPC_OK &&
        (resp = v1__list_pod_resources_response__unpack(NULL, len, reply)) == NULL)
        snprintf(why, sizeof why, "its answer to List does not decode");
    free(reply);
    if (resp == NULL) {
        say(r, WARN, "idle gpus", "is the kubelet's pod-resources socket mounted?",
            "cannot ask the kubelet which pods hold GPUs: %s", why);
        return;
    }
    struct gpulet_error err = {0};
    size_t idle = 0, held = 0;
    for (size_t p = 0; p < resp->n_pod_resources; p++) {
        const V1__PodResources *pr = resp->pod_resources[p];
        for (size_t c = 0; c < pr->n_containers; c++)
            for (size_t d = 0; d < pr->containers[c]->n_devices; d++) {
                const V1__ContainerDevices *cd = pr->containers[c]->devices[d];
                if (strncmp(cd->resource_name, "nvidia.com/", 11) != 0)
                    continue;
                for (size_t k = 0; k < cd->n_device_ids; k++) {
                    char base[160];
                    snprintf(base, sizeof base, "%s", cd->device_ids[k]);
                    char *sfx = strstr(base, "::");
                    if (sfx)
                        *sfx = '\0';
                    for (size_t g = 0; g < inv->gpu_count; g++) {
                        char index[16];
                        snprintf(index, sizeof index, "%zu", g);
                        if (strcmp(base, inv->gpus[g].uuid) != 0 && strcmp(base, index) != 0)
                            continue;
                        held++;
                        struct nvml_device dev;
                        unsigned int count = 0;
                        if (nvml_device_by_index(nvml, (unsigned)g, &dev, &err) == 0 &&
                            nvml_device_compute_processes(nvml, &dev, &count, NULL, &err) == 0 &&
                            count == 0) {
                            idle++;
                            say(r, WARN, "idle gpus",
                                "delete the pod, or give finished Jobs ttlSecondsAfterFinished",
                                "GPU %zu (%s) is held by pod %s/%s (container %s) but runs no "
                                "process",
                                g, inv->gpus[g].uuid, pr->namespace_, pr->name,
                                pr->containers[c]->name);
                        }
                    }
                }
            }
    }
    if (idle == 0)
        say(r, OK, "idle gpus", NULL, "%zu GPU(s) held by pods, none idle", held);
    v1__list_pod_resources_response__free_unpacked(resp, NULL);
}

static void check_mig(struct report *r, const struct doctor_options *o,
                      const struct gpu_inventory *inv)
{
    size_t mig_on = 0;
    const char *first = NULL;
    bool uniform = true;
    for (size_t i = 0; i < inv->gpu_count; i++) {
        if (!inv->gpus[i].mig_enabled)
            continue;
        mig_on++;
        for (size_t m = 0; m < inv->gpus[i].mig_count; m++) {
            if (first && strcmp(first, inv->gpus[i].migs[m].profile) != 0)
                uniform = false;
            first = inv->gpus[i].migs[m].profile;
        }
    }
    enum mig_strategy s = o->config->mig_strategy;
    if (mig_on == 0)
        say(r, OK, "mig", NULL, "MIG is off on every GPU");
    else if (s == MIG_STRATEGY_NONE)
        say(r, WARN, "mig", "set migStrategy to single or mixed",
            "%zu GPU(s) have MIG on but migStrategy is none: their MIG devices are not offered",
            mig_on);
    else if (s == MIG_STRATEGY_SINGLE && (!uniform || mig_on != inv->gpu_count))
        say(r, FAIL, "mig", "use migStrategy mixed, or make every GPU's layout the same",
            "migStrategy single needs MIG on every GPU with one profile");
    else
        say(r, OK, "mig", NULL, "MIG layout fits migStrategy %s", config_mig_strategy_name(s));
}

int doctor_run(const struct doctor_options *o, FILE *out)
{
    struct report r = {.checks = json_array(), .all_ok = true};
    struct gpulet_error err = {0};
    struct nvml *nvml = NULL;
    struct gpu_inventory *inv = NULL;
    if (nvml_open(&o->nvml, &nvml, &err) < 0) {
        say(&r, FAIL, "driver", "install the NVIDIA driver, or set --driver-root", "%s", err.msg);
    } else if (gpu_inventory_load(nvml, &inv, &err) < 0) {
        say(&r, FAIL, "driver", "check nvidia-smi and dmesg", "%s", err.msg);
    } else {
        say(&r, OK, "driver", NULL, "driver %s, %zu GPU(s), NVML from %s", inv->driver_version,
            inv->gpu_count, nvml_library(nvml));
        check_devices(&r, o, inv);
    }
    check_engines(&r, o);
    if (inv)
        check_cdi(&r, o, inv);
    check_plugin(&r, o);
    if (inv) {
        check_idle(&r, o, nvml, inv);
        check_mig(&r, o, inv);
    }
    if (o->json) {
        json_t *doc = json_pack("{s:b, s:O}", "ok", r.all_ok, "checks", r.checks);
        json_dumpf(doc, out, JSON_INDENT(2) | JSON_PRESERVE_ORDER);
        fputc('\n', out);
        json_decref(doc);
    } else {
        size_t i;
        json_t *c;
        json_array_foreach(r.checks, i, c) {
            fprintf(out, "%-4s  %-16s %s\n", json_string_value(json_object_get(c, "status")),
                    json_string_value(json_object_get(c, "check")),
                    json_string_value(json_object_get(c, "message")));
            const char *fix = json_string_value(json_object_get(c, "fix"));
            if (fix)
                fprintf(out, "      %-16s fix: %s\n", "", fix);
        }
    }
    json_decref(r.checks);
    gpu_inventory_free(inv);
    nvml_close(nvml);
    return r.all_ok ? 0 : 1;
}
