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

static void check_plugin(struct report *r, const struct doctor_options *o)
{
    char path[4200];
    snprintf(path, sizeof path, "%s/kubelet.sock", o->device_plugin_dir);
    bool kubelet = access(path, F_OK) == 0;
    size_t sockets = 0;
    DIR *d = opendir(o->device_plugin_dir);
    struct dirent *e;
    while (d && (e = readdir(d)) != NULL)
        if (strncmp(e->d_name, "nvidia-", 7) == 0 && strstr(e->d_name, ".sock"))
            sockets++;
    if (d)
        closedir(d);
    if (!kubelet)
        say(r, WARN, "device plugin", "is the kubelet running? (--device-plugin-dir)",
            "no kubelet.sock in %s", o->device_plugin_dir);
    else if (sockets == 0)
        say(r, FAIL, "device plugin", "start gpulet run (the DaemonSet) on this node",
            "the kubelet is there but no nvidia-*.sock is served in %s", o->device_plugin_dir);
    else
        say(r, OK, "device plugin", NULL, "%zu resource socket(s) served beside kubelet.sock",
            sockets);
}

struct pods_answer {
    struct event_base *base;
    V1__ListPodResourcesResponse *resp;
    char problem[512];
};

static void pods_done(enum grpc_status st, const char *msg, const uint8_t *reply, size_t len,
                      void *user)
{
    struct pods_answer *a = user;
    if (st == GRPC_OK)
        a->resp = v1__list_pod_resources_response__unpack(NULL, len, reply);
    else
        snprintf(a->problem, sizeof a->problem, "List answered %s: %s", grpc_status_name(st),
                 msg ? msg : "");
    event_base_loopbreak(a->base);
}

static void check_idle(struct report *r, const struct doctor_options *o, struct nvml *nvml,
                       const struct gpu_inventory *inv)
{
    struct pods_answer a = {.base = event_base_new()};
    struct gpulet_error err = {0};
    struct grpc_channel *ch = NULL;
    uint8_t empty[1];
    if (grpc_channel_open(a.base, o->podresources, &ch, &err) < 0) {
        snprintf(a.problem, sizeof a.problem, "%s", err.msg);
    } else if (grpc_channel_call(ch, "/v1.PodResourcesLister/List", empty, 0, 5000, NULL,
                                 pods_done, &a)) {
        event_base_dispatch(a.base);
    }
    grpc_channel_close(ch);
    event_base_free(a.base);
    if (a.resp == NULL) {
        say(r, WARN, "idle gpus", "is the kubelet's pod-resources socket mounted?",
            "cannot ask the kubelet which pods hold GPUs: %s", a.problem);
        return;
    }
    size_t idle = 0, held = 0;
    for (size_t p = 0; p < a.resp->n_pod_resources; p++) {
        const V1__PodResources *pr = a.resp->pod_resources[p];
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
    v1__list_pod_resources_response__free_unpacked(a.resp, NULL);
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
