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
 * the edits are computed from the driver).
 * These come from the engine that starts us, never from the container.
 */
#include <errno.h>
#include <limits.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
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

static int prepare(const char *bundle)
{
    struct gpulet_error err = {0};
    json_t *config = NULL, *spec = NULL;
    struct runtime_request req;
    char spec_path[4200];
    int rc = 0;
    if (runtime_read_config(bundle, &config, &err) < 0 ||
        runtime_find_request(config, &req, &err) < 0) {
        rc = -1;
    } else if (req.count || req.all) {
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
        fprintf(stderr, "gpulet-runtime: %s\n", err.msg);
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
    char runtime[PATH_MAX];
    if (find_runtime(given, runtime, sizeof runtime) < 0) {
        fprintf(stderr, "gpulet-runtime: no runc or crun on PATH; set GPULET_RUNTIME\n");
        return 1;
    }
    int command = find_command(argc, argv);
    if (command > 0 && (strcmp(argv[command], "create") == 0 || strcmp(argv[command], "run") == 0) &&
        prepare(find_bundle(argc, argv, command)) < 0)
        return 1;
    argv[0] = runtime;
    execv(runtime, argv);
    fprintf(stderr, "gpulet-runtime: cannot run %s: %s\n", runtime, strerror(errno));
    return 1;
}
