#include "cli.h"

#include <getopt.h>
#include <limits.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "runtime/runtime.h"

static const char runtime_usage[] =
    "Usage: gpulet runtime configure --runtime docker|crio|containerd [OPTIONS]\n"
    "\n"
    "Add an \"nvidia\" runtime that runs gpulet-runtime to the container engine's\n"
    "configuration, keeping every other setting. Idempotent; the old file is\n"
    "kept as FILE.gpulet-backup; a file that does not parse is left alone.\n"
    "\n"
    "  --runtime ENGINE     docker (daemon.json) or crio (a drop-in)\n"
    "  --config FILE        the file (default: the engine's usual one)\n"
    "  --runtime-path PATH  gpulet-runtime (default: beside this gpulet)\n"
    "  --set-as-default     make nvidia the default runtime\n"
    "  --dry-run            print the result, change nothing\n"
    "  -h, --help           show this help\n";

int cli_runtime(const struct cli_options *opts, int argc, char **argv)
{
    (void)opts;
    if (argc < 2 || strcmp(argv[1], "configure") != 0) {
        bool help = argc >= 2 && (strcmp(argv[1], "--help") == 0 || strcmp(argv[1], "-h") == 0);
        fprintf(help ? stdout : stderr, "%s%s", help ? "" : "gpulet runtime: which action? "
                                                             "(configure)\n", runtime_usage);
        return help ? CLI_OK : CLI_USAGE;
    }
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
        default:
            fprintf(stderr, "gpulet runtime configure: %s '%s'\n%s",
                    ch == ':' ? "option needs a value:" : "unknown option", argv[optind],
                    runtime_usage);
            return CLI_USAGE;
        }
    }
    if (engine == NULL || (strcmp(engine, "docker") != 0 && strcmp(engine, "crio") != 0 &&
                           strcmp(engine, "containerd") != 0)) {
        fprintf(stderr, "gpulet runtime configure: --runtime must be docker, crio or "
                        "containerd\n%s", runtime_usage);
        return CLI_USAGE;
    }
    c.engine = strcmp(engine, "docker") == 0 ? ENGINE_DOCKER
               : strcmp(engine, "crio") == 0 ? ENGINE_CRIO
                                             : ENGINE_CONTAINERD;
    char self[PATH_MAX], beside[PATH_MAX + 32];
    if (c.runtime_path == NULL) {
        ssize_t n = readlink("/proc/self/exe", self, sizeof self - 1);
        if (n > 0) {
            self[n] = '\0';
            char *slash = strrchr(self, '/');
            *slash = '\0';
            snprintf(beside, sizeof beside, "%s/gpulet-runtime", self);
            c.runtime_path = beside;
        } else {
            c.runtime_path = "/usr/local/bin/gpulet-runtime";
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
