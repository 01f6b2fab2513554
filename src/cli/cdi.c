#include "cli.h"

#include <getopt.h>
#include <limits.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "cdi/cdi.h"

static const char cdi_usage[] =
    "Usage: gpulet [GLOBAL OPTIONS] cdi generate [OPTIONS]\n"
    "\n"
    "Write a CDI spec (kind nvidia.com/gpu) for this node's GPUs: a device per\n"
    "GPU by index and UUID, per MIG device, and \"all\"; the driver's device\n"
    "nodes, libraries, tools and firmware.\n"
    "\n"
    "  --output FILE      write FILE atomically (default: standard output)\n"
    "  --format F         yaml or json (default: from the file name, else yaml)\n"
    "  --driver-root DIR  where the driver's files are (default: the global\n"
    "                     --driver-root, env NVIDIA_DRIVER_ROOT, else /; with\n"
    "                     --simulate a simulated driver root made for the node,\n"
    "                     gone at exit: then only printed, no --output)\n"
    "  --dev-root DIR     where the device nodes are (default: the driver root)\n"
    "  --hook-path PATH   gpulet-hook, run to update the container's ld cache\n"
    "                     (default: beside this gpulet)\n"
    "  --no-hook          add no hook\n"
    "  -h, --help         show this help\n";

int cli_cdi(const struct cli_options *opts, int argc, char **argv)
{
    if (argc < 2 || strcmp(argv[1], "generate") != 0) {
        if (argc >= 2 && (strcmp(argv[1], "--help") == 0 || strcmp(argv[1], "-h") == 0)) {
            fputs(cdi_usage, stdout);
            return CLI_OK;
        }
        if (argc < 2)
            return cli_usage_error("cdi", "which action? (generate)");
        return cli_usage_error("cdi", "unknown action '%s' (generate)", argv[1]);
    }
    enum { OPT_OUTPUT = 256, OPT_FORMAT, OPT_DRIVER_ROOT, OPT_DEV_ROOT, OPT_HOOK, OPT_NO_HOOK };
    static const struct option long_options[] = {
        {"output", required_argument, NULL, OPT_OUTPUT},
        {"format", required_argument, NULL, OPT_FORMAT},
        {"driver-root", required_argument, NULL, OPT_DRIVER_ROOT},
        {"dev-root", required_argument, NULL, OPT_DEV_ROOT},
        {"hook-path", required_argument, NULL, OPT_HOOK},
        {"no-hook", no_argument, NULL, OPT_NO_HOOK},
        {"help", no_argument, NULL, 'h'},
        {NULL, 0, NULL, 0},
    };
    const char *output = NULL, *format = NULL;
    char hook[4200] = "";
    char self[4096];
    if (cli_own_folder(self, sizeof self))
        snprintf(hook, sizeof hook, "%s/gpulet-hook", self);
    struct cdi_options cdi = {.driver_root = opts->nvml.driver_root,
                              .hook_path = hook[0] ? hook : NULL};
    optind = 0;
    opterr = 0;
    int c;
    while ((c = getopt_long(argc - 1, argv + 1, ":h", long_options, NULL)) != -1) {
        switch (c) {
        case OPT_OUTPUT: output = optarg; break;
        case OPT_FORMAT: format = optarg; break;
        case OPT_DRIVER_ROOT: cdi.driver_root = optarg; break;
        case OPT_DEV_ROOT: cdi.dev_root = optarg; break;
        case OPT_HOOK: cdi.hook_path = optarg; break;
        case OPT_NO_HOOK: cdi.hook_path = NULL; break;
        case 'h': fputs(cdi_usage, stdout); return CLI_OK;
        default: return cli_option_error("cdi generate", c, argv[optind]);
        }
    }
    if (cdi.hook_path && cdi.hook_path[0] != '/') {
        fprintf(stderr, "gpulet cdi generate: --hook-path must be absolute (runtimes run hooks "
                        "by absolute path), not '%s'\n", cdi.hook_path);
        return CLI_USAGE;
    }
    if (output && opts->sim && cdi.driver_root == NULL) {
        /* The simulated driver root lives in the private folder: a spec
         * file naming it would outlive it and fail every container that
         * asks for a GPU. */
        fprintf(stderr, "gpulet cdi generate: under --simulate the spec names the simulated "
                        "driver root, which is removed when gpulet exits; print it (no "
                        "--output), or give --driver-root DIR for a spec file that lasts\n");
        return CLI_USAGE;
    }
    enum cdi_format fmt = CDI_YAML;
    if (format == NULL && output && strlen(output) > 5 &&
        strcmp(output + strlen(output) - 5, ".json") == 0)
        fmt = CDI_JSON;
    if (format && strcmp(format, "json") == 0)
        fmt = CDI_JSON;
    else if (format && strcmp(format, "yaml") != 0) {
        fprintf(stderr, "gpulet cdi generate: --format must be yaml or json, not '%s'\n", format);
        return CLI_USAGE;
    }
    struct nvml *nvml;
    struct gpu_inventory *inv;
    int rc = cli_open_inventory(opts, &nvml, &inv);
    if (rc != CLI_OK)
        return rc;
    char simulated[PATH_MAX];
    if (cdi.driver_root == NULL) {
        rc = cli_simulated_driver_root(opts, inv, simulated, sizeof simulated);
        cdi.driver_root = simulated[0] ? simulated : "/";
    }
    if (cdi.dev_root == NULL)
        cdi.dev_root = cdi.driver_root;
    struct gpulet_error err = {0};
    json_t *spec = NULL;
    if (rc == CLI_OK && (cdi_spec_build(inv, &cdi, &spec, &err) < 0 ||
                         cdi_spec_write(spec, fmt, output, &err) < 0)) {
        fprintf(stderr, "gpulet: %s\n", err.msg);
        rc = CLI_FAILED;
    }
    json_decref(spec);
    gpu_inventory_free(inv);
    nvml_close(nvml);
    return rc;
}
