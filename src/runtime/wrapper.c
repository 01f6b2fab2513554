/*
 * gpulet-runtime: an OCI runtime that hands every command to the real one
 * (runc or crun) and, on create and run, first gives the container the
 * GPUs it asked for, from the CDI spec on disk.
 *
 *   gpulet-runtime [--runtime PATH] <runc arguments>
 *
 * Environment: GPULET_RUNTIME (the real runtime when --runtime is not
 * given; default the first of
 * runc, crun on PATH), GPULET_CDI_SPEC_DIRS (default /etc/cdi:/var/run/cdi),
 * NVIDIA_DRIVER_ROOT and GPULET_NVML_LIB (used when no spec is on disk and
 * the edits are computed from the driver), GPULET_RUNTIME_CONFIG (its
 * settings file; default /etc/gpulet/runtime.conf, see runtime.h).
 * These come from the engine that starts us, never from the container.
 *
 * A refusal or failure is written to stderr and, as runc does, to the
 * engine's --log file in its --log-format: containerd and CRI-O show a
 * failed create's reason from that file, not from stderr.
 */
#include <errno.h>
#include <fcntl.h>
#include <limits.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <time.h>
#include <unistd.h>

#include "cdi/cdi.h"
#include "gpu/gpu.h"
#include "nvml/nvml.h"
#include "runtime/runtime.h"

/* runc's global options that take a value (the command follows them). */
static const char *const valued_globals[] = {"--root", "--log", "--log-format", "--criu",
                                             "--rootless", NULL};

static bool takes_value(const char *opt)
{
    for (size_t i = 0; valued_globals[i]; i++)
        if (strcmp(opt, valued_globals[i]) == 0)
            return true;
    return false;
}

static int find_command(int argc, char **argv)
{
    for (int i = 1; i < argc; i++) {
        if (argv[i][0] != '-')
            return i;
        if (takes_value(argv[i]))
            i++;
    }
    return -1;
}

/* Where the engine wants the runtime's errors: runc's global options
 * `--log FILE` / `--log=FILE` and `--log-format text|json` (default text). */
struct error_log {
    const char *path;
    bool json;
};

static const char *option_value(int argc, char **argv, int *i, const char *name)
{
    size_t n = strlen(name);
    if (strncmp(argv[*i], name, n) != 0)
        return NULL;
    if (argv[*i][n] == '=')
        return argv[*i] + n + 1;
    if (argv[*i][n] == '\0' && *i + 1 < argc)
        return argv[++*i];
    return NULL;
}

static struct error_log find_error_log(int argc, char **argv, int command)
{
    struct error_log log = {0};
    int end = command > 0 ? command : argc;
    for (int i = 1; i < end; i++) {
        const char *v;
        if ((v = option_value(argc, argv, &i, "--log-format")))
            log.json = strcmp(v, "json") == 0;
        else if ((v = option_value(argc, argv, &i, "--log")))
            log.path = v;
    }
    return log;
}

/* The longest message written to the log file: an engine reads it back
 * whole, and what it shows should fit on a screen. */
#define ERROR_LOG_MAX_MSG 4096

/* msg made fit for one log line: control characters become spaces, it is
 * cut at ERROR_LOG_MAX_MSG, and for JSON invalid UTF-8 becomes '?'. */
static json_t *log_message(const char *msg, char *buf, size_t len)
{
    size_t n = 0;
    for (; msg[n] && n < len - 1; n++)
        buf[n] = (unsigned char)msg[n] < 0x20 || msg[n] == 0x7f ? ' ' : msg[n];
    buf[n] = '\0';
    json_t *s = json_stringn(buf, n);
    if (!s) {
        for (size_t i = 0; i < n; i++)
            if ((unsigned char)buf[i] >= 0x80)
                buf[i] = '?';
        s = json_stringn(buf, n);
    }
    return s;
}

/* Appends one line at level ("error", "warning"), as runc writes them
 * ({"level":...,"msg":...,"time":RFC3339} or logrus's text), to the
 * engine's log file. Opened without following a symbolic link or blocking
 * on a FIFO; anything but a regular file is left alone. */
static void write_error_log(const struct error_log *log, const char *level, const char *msg)
{
    char text[ERROR_LOG_MAX_MSG + 1], when[64], line[2 * ERROR_LOG_MAX_MSG + 160];
    json_t *s = log_message(msg, text, sizeof text);
    struct timespec ts;
    struct tm tm;
    clock_gettime(CLOCK_REALTIME, &ts);
    gmtime_r(&ts.tv_sec, &tm);
    size_t w = strftime(when, sizeof when, "%Y-%m-%dT%H:%M:%S", &tm);
    snprintf(when + w, sizeof when - w, ".%09ldZ", ts.tv_nsec);
    int n = -1;
    if (log->json) {
        json_t *obj = json_pack("{s:s,s:o,s:s}", "level", level, "msg", s, "time", when);
        char *dump = obj ? json_dumps(obj, JSON_COMPACT) : NULL;
        if (dump)
            n = snprintf(line, sizeof line, "%s\n", dump);
        free(dump);
        json_decref(obj);
    } else {
        json_decref(s);
        char quoted[2 * ERROR_LOG_MAX_MSG + 1];
        size_t q = 0;
        for (size_t i = 0; text[i]; i++) {
            if (text[i] == '"' || text[i] == '\\')
                quoted[q++] = '\\';
            quoted[q++] = text[i];
        }
        quoted[q] = '\0';
        n = snprintf(line, sizeof line, "time=\"%s\" level=%s msg=\"%s\"\n", when, level,
                     quoted);
    }
    if (n < 0)
        return;
    int fd = open(log->path, O_WRONLY | O_APPEND | O_CREAT | O_NOFOLLOW | O_CLOEXEC | O_NONBLOCK, 0644);
    struct stat st;
    if (fd < 0 || fstat(fd, &st) < 0 || !S_ISREG(st.st_mode)) {
        fprintf(stderr, "gpulet-runtime: cannot write the error to the log %s: %s\n", log->path,
                fd < 0 ? strerror(errno) : "not a regular file");
    } else if (write(fd, line, (size_t)n) != n) {
        fprintf(stderr, "gpulet-runtime: cannot write the error to the log %s\n", log->path);
    }
    if (fd >= 0)
        close(fd);
}

static void vreport(const struct error_log *log, const char *level, const char *fmt, va_list ap)
{
    char msg[ERROR_LOG_MAX_MSG];
    vsnprintf(msg, sizeof msg, fmt, ap);
    fprintf(stderr, "gpulet-runtime: %s\n", msg);
    if (log->path && log->path[0]) {
        char prefixed[ERROR_LOG_MAX_MSG + 32];
        snprintf(prefixed, sizeof prefixed, "gpulet-runtime: %s", msg);
        write_error_log(log, level, prefixed);
    }
}

__attribute__((format(printf, 2, 3))) static void report(const struct error_log *log,
                                                         const char *fmt, ...)
{
    va_list ap;
    va_start(ap, fmt);
    vreport(log, "error", fmt, ap);
    va_end(ap);
}

__attribute__((format(printf, 2, 3))) static void warn(const struct error_log *log,
                                                       const char *fmt, ...)
{
    va_list ap;
    va_start(ap, fmt);
    vreport(log, "warning", fmt, ap);
    va_end(ap);
}

static const char *find_bundle(int argc, char **argv, int command)
{
    for (int i = command + 1; i < argc; i++) {
        if ((strcmp(argv[i], "--bundle") == 0 || strcmp(argv[i], "-b") == 0) && i + 1 < argc)
            return argv[i + 1];
        if (strncmp(argv[i], "--bundle=", 9) == 0)
            return argv[i] + 9;
    }
    return ".";
}

static int find_runtime(const char *given, char *out, size_t len)
{
    const char *env = given ? given : getenv("GPULET_RUNTIME");
    if (env && env[0]) {
        snprintf(out, len, "%s", env);
        return 0;
    }
    const char *path = getenv("PATH");
    static const char *const names[] = {"runc", "crun", NULL};
    for (size_t n = 0; names[n]; n++) {
        char dirs[4096];
        snprintf(dirs, sizeof dirs, "%s", path ? path : "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin");
        char *save;
        for (char *d = strtok_r(dirs, ":", &save); d; d = strtok_r(NULL, ":", &save)) {
            snprintf(out, len, "%s/%s", d, names[n]);
            if (access(out, X_OK) == 0)
                return 0;
        }
    }
    return -1;
}

/* No spec on disk: work it out from the driver, as `gpulet cdi generate`
 * would, with the hook beside this program. */
static int compute_spec(json_t **spec, char *path, size_t len, struct gpulet_error *err)
{
    struct nvml_options nvml_opts = {.library_path = getenv("GPULET_NVML_LIB"),
                                     .driver_root = getenv("NVIDIA_DRIVER_ROOT")};
    if (nvml_opts.library_path && nvml_opts.library_path[0] == '\0')
        nvml_opts.library_path = NULL;
    struct nvml *nvml;
    struct gpu_inventory *inv;
    if (nvml_open(&nvml_opts, &nvml, err) < 0)
        return -1;
    if (gpu_inventory_load(nvml, &inv, err) < 0) {
        nvml_close(nvml);
        return -1;
    }
    char hook[PATH_MAX + 32] = "", self[PATH_MAX];
    ssize_t n = readlink("/proc/self/exe", self, sizeof self - 1);
    if (n > 0) {
        self[n] = '\0';
        *strrchr(self, '/') = '\0';
        snprintf(hook, sizeof hook, "%s/gpulet-hook", self);
    }
    const char *root = nvml_opts.driver_root && nvml_opts.driver_root[0] ? nvml_opts.driver_root : "/";
    struct cdi_options opts = {.driver_root = root, .dev_root = root,
                               .hook_path = hook[0] && access(hook, X_OK) == 0 ? hook : NULL};
    int rc = cdi_spec_build(inv, &opts, spec, err);
    snprintf(path, len, "(computed from the driver)");
    gpu_inventory_free(inv);
    nvml_close(nvml);
    return rc;
}

/* Whether the container gets the GPUs it asks for. A request any image
 * can make by its ENV, from a container that is not privileged, where the
 * administrator turned that off, gets none: the container starts without
 * GPUs (as with NVIDIA's toolkit), with one warning. */
static bool granted(const struct runtime_request *req, const struct runtime_settings *settings,
                    const char *settings_path, const struct error_log *log)
{
    if (req->count == 0 && !req->all)
        return false;
    if (!req->envvar || req->privileged || settings->accept_envvar_unprivileged)
        return true;
    warn(log, "NVIDIA_VISIBLE_DEVICES ignored: the container is not privileged and %s sets "
              "accept-envvar-unprivileged = false; it starts without GPUs (GPUs come from the "
              "device plugin's volume-mounts or CDI request)", settings_path);
    return false;
}

static int prepare(const char *bundle, const struct error_log *log)
{
    struct gpulet_error err = {0};
    json_t *config = NULL, *spec = NULL;
    struct runtime_request req;
    struct runtime_settings settings = {0};
    const char *settings_path = getenv("GPULET_RUNTIME_CONFIG");
    if (settings_path == NULL || settings_path[0] == '\0')
        settings_path = RUNTIME_SETTINGS_FILE;
    char spec_path[4200];
    int rc = 0;
    /* The settings are read only for a container that asks for GPUs: one
     * that asks for none never depends on them, so a typo there cannot
     * stop every pod where gpulet-runtime is the default runtime. */
    if (runtime_read_config(bundle, &config, &err) < 0 ||
        runtime_find_request(config, &req, &err) < 0) {
        rc = -1;
    } else if ((req.count > 0 || req.all) &&
               runtime_read_settings(settings_path, &settings, &err) < 0) {
        rc = -1;
    } else if (granted(&req, &settings, settings_path, log)) {
        const char *dirs = getenv("GPULET_CDI_SPEC_DIRS");
        int found = runtime_load_spec(dirs && dirs[0] ? dirs : RUNTIME_DEFAULT_CDI_DIRS, &spec,
                                      spec_path, sizeof spec_path, &err);
        if (found < 0 || (found == 1 && compute_spec(&spec, spec_path, sizeof spec_path, &err) < 0))
            rc = -1;
        else if (runtime_apply(config, spec, spec_path, &req, &err) < 0 ||
            runtime_write_config(bundle, config, &err) < 0)
            rc = -1;
    }
    /* A container that asks for nothing is left byte for byte as it was. */
    if (rc < 0)
        report(log, "%s", err.msg);
    json_decref(config);
    json_decref(spec);
    return rc;
}

int main(int argc, char **argv)
{
    /* Our own option comes first and is not passed on. */
    const char *given = NULL;
    if (argc > 2 && strcmp(argv[1], "--runtime") == 0) {
        given = argv[2];
        argv[2] = argv[0];
        argv += 2;
        argc -= 2;
    }
    int command = find_command(argc, argv);
    struct error_log log = find_error_log(argc, argv, command);
    char runtime[PATH_MAX];
    if (find_runtime(given, runtime, sizeof runtime) < 0) {
        report(&log, "no runc or crun on PATH; set GPULET_RUNTIME");
        return 1;
    }
    if (command > 0 && (strcmp(argv[command], "create") == 0 || strcmp(argv[command], "run") == 0) &&
        prepare(find_bundle(argc, argv, command), &log) < 0)
        return 1;
    argv[0] = runtime;
    execv(runtime, argv);
    report(&log, "cannot run %s: %s", runtime, strerror(errno));
    return 1;
}
