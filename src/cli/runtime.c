#include "cli.h"

#include <getopt.h>
#include <limits.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "runtime/runtime.h"

static const char runtime_usage[] =
    "Usage: gpulet runtime configure --runtime docker|crio|containerd [OPTIONS]\n"
    "       gpulet runtime install --to DIR [--from DIR]\n"
    "\n"
    "Add an \"nvidia\" runtime that runs gpulet-runtime to the container engine's\n"
    "configuration, keeping every other setting. Idempotent; the old file is\n"
    "kept as FILE.gpulet-backup; a file that does not parse is left alone.\n"
    "\n"
    "  --runtime ENGINE     containerd (config.toml), docker (daemon.json) or crio\n"
    "                       (a drop-in)\n"
    "  --config FILE        the file (default: the engine's usual one)\n"
    "  --runtime-path PATH  gpulet-runtime (default: beside this gpulet)\n"
    "  --set-as-default     make nvidia the default runtime\n"
    "  --dry-run            print the result, change nothing\n"
    "  -h, --help           show this help\n"
    "\n"
    "install: copy gpulet's bundle (bin/ and lib/: the programs, the libraries\n"
    "they load and glibc's loader) to a folder on the host, so the engine can\n"
    "run gpulet-runtime whatever glibc the host has. Files already identical\n"
    "are left alone; each other one is replaced atomically.\n"
    "\n"
    "  --to DIR             where, as this process sees it (in the DaemonSet:\n"
    "                       /host/usr/local/gpulet, the host's /usr/local/gpulet)\n"
    "  --from DIR           the bundle (default: the folder above this gpulet's bin/)\n";

/* The folder above the one this gpulet runs from: /usr/local/gpulet in the
 * image. */
static void own_prefix(char *out, size_t len)
{
    char self[PATH_MAX];
    if (!cli_own_folder(self, sizeof self)) {
        snprintf(out, len, "/usr/local/gpulet");
        return;
    }
    char *slash = strrchr(self, '/');
    if (slash != NULL)
        *slash = '\0';
    snprintf(out, len, "%s", self[0] ? self : "/");
}

static int runtime_install_command(int argc, char **argv)
{
    enum { OPT_TO = 256, OPT_FROM };
    static const struct option long_options[] = {
        {"to", required_argument, NULL, OPT_TO},
        {"from", required_argument, NULL, OPT_FROM},
        {"help", no_argument, NULL, 'h'},
        {NULL, 0, NULL, 0},
    };
    const char *to = NULL, *from = NULL;
    optind = 0;
    opterr = 0;
    int ch;
    while ((ch = getopt_long(argc - 1, argv + 1, ":h", long_options, NULL)) != -1) {
        switch (ch) {
        case OPT_TO: to = optarg; break;
        case OPT_FROM: from = optarg; break;
        case 'h': fputs(runtime_usage, stdout); return CLI_OK;
        default: return cli_option_error("runtime install", ch, argv[optind]);
        }
    }
    if (to == NULL)
        return cli_usage_error("runtime install", "--to DIR is required");
    if (optind + 1 < argc)
        return cli_usage_error("runtime install", "unexpected argument '%s'", argv[optind + 1]);
    char prefix[PATH_MAX];
    if (from == NULL) {
        own_prefix(prefix, sizeof prefix);
        from = prefix;
    }
    struct gpulet_error err = {0};
    bool changed;
    if (runtime_install(from, to, &changed, stdout, &err) < 0) {
        fprintf(stderr, "gpulet: %s\n", err.msg);
        return err.kind == GPULET_ERR_USAGE ? CLI_USAGE : CLI_FAILED;
    }
    printf("%s\n", changed ? "gpulet runtime install: done" : "gpulet runtime install: already up to date");
    return CLI_OK;
}

int cli_runtime(const struct cli_options *opts, int argc, char **argv)
{
    if (argc >= 2 && strcmp(argv[1], "install") == 0)
        return runtime_install_command(argc, argv);
    if (argc >= 2 && (strcmp(argv[1], "--help") == 0 || strcmp(argv[1], "-h") == 0)) {
        fputs(runtime_usage, stdout);
        return CLI_OK;
    }
    if (argc < 2)
        return cli_usage_error("runtime", "which action? (configure, install)");
    if (strcmp(argv[1], "configure") != 0)
        return cli_usage_error("runtime", "unknown action '%s' (configure, install)", argv[1]);
    enum { OPT_RUNTIME = 256, OPT_CONFIG, OPT_PATH, OPT_DEFAULT, OPT_DRY };
    static const struct option long_options[] = {
        {"runtime", required_argument, NULL, OPT_RUNTIME},
        {"config", required_argument, NULL, OPT_CONFIG},
        {"runtime-path", required_argument, NULL, OPT_PATH},
        {"set-as-default", no_argument, NULL, OPT_DEFAULT},
        {"dry-run", no_argument, NULL, OPT_DRY},
        {"help", no_argument, NULL, 'h'},
        {NULL, 0, NULL, 0},
    };
    struct configure_options c = {0};
    const char *engine = NULL;
    optind = 0;
    opterr = 0;
    int ch;
    while ((ch = getopt_long(argc - 1, argv + 1, ":h", long_options, NULL)) != -1) {
        switch (ch) {
        case OPT_RUNTIME: engine = optarg; break;
        case OPT_CONFIG: c.config = optarg; break;
        case OPT_PATH: c.runtime_path = optarg; break;
        case OPT_DEFAULT: c.set_as_default = true; break;
        case OPT_DRY: c.dry_run = true; break;
        case 'h': fputs(runtime_usage, stdout); return CLI_OK;
        default: return cli_option_error("runtime configure", ch, argv[optind]);
        }
    }
    if (engine == NULL || (strcmp(engine, "docker") != 0 && strcmp(engine, "crio") != 0 &&
                           strcmp(engine, "containerd") != 0)) {
        return cli_usage_error("runtime configure", "--runtime must be docker, crio or containerd");
    }
    /* Trying gpulet on a simulated node must not edit the machine's engine. */
    if (opts->sim && c.config == NULL && !c.dry_run)
        return cli_usage_error("runtime configure",
                               "--simulate changes nothing on this machine, and this would edit "
                               "the engine's real configuration: give --config FILE or --dry-run");
    c.engine = strcmp(engine, "docker") == 0 ? ENGINE_DOCKER
               : strcmp(engine, "crio") == 0 ? ENGINE_CRIO
                                             : ENGINE_CONTAINERD;
    char self[PATH_MAX], beside[PATH_MAX + 32];
    if (c.runtime_path == NULL) {
        if (cli_own_folder(self, sizeof self)) {
            snprintf(beside, sizeof beside, "%s/gpulet-runtime", self);
            c.runtime_path = beside;
        } else {
            c.runtime_path = "/usr/local/gpulet/bin/gpulet-runtime";
        }
    }
    struct gpulet_error err = {0};
    bool changed;
    if (runtime_configure(&c, &changed, stdout, &err) < 0) {
        fprintf(stderr, "gpulet: %s\n", err.msg);
        return err.kind == GPULET_ERR_USAGE ? CLI_USAGE : CLI_FAILED;
    }
    return CLI_OK;
}
