#include "cli.h"

#include <getopt.h>
#include <stdlib.h>
#include <time.h>

#include "config/config.h"
#include "gpu/gpu.h"
#include "labels/labels.h"

static const char labels_usage[] =
    "Usage: gpulet [GLOBAL OPTIONS] labels [OPTIONS]\n"
    "\n"
    "Print the nvidia.com/* node labels gpu-feature-discovery would write for\n"
    "this node, one key=value per line (the NFD local feature file format).\n"
    "\n"
    "  --config-file FILE   device plugin config: sharing and MIG strategy\n"
    "                       (env CONFIG_FILE)\n"
    "  --mig-strategy S     none | single | mixed (env MIG_STRATEGY)\n"
    "  --no-timestamp       leave out nvidia.com/gfd.timestamp\n"
    "  --short-labels       also nvidia.com/gpu.model=V100 and the like (env\n"
    "                       GPULET_SHORT_LABELS, file flags.gfd.shortLabels)\n"
    "  -h, --help           show this help\n";

int cli_labels(const struct cli_options *opts, int argc, char **argv)
{
    enum { OPT_CONFIG = 256, OPT_MIG, OPT_NO_TIMESTAMP, OPT_SHORT };
    static const struct option long_options[] = {
        {"config-file", required_argument, NULL, OPT_CONFIG},
        {"mig-strategy", required_argument, NULL, OPT_MIG},
        {"no-timestamp", no_argument, NULL, OPT_NO_TIMESTAMP},
        {"short-labels", no_argument, NULL, OPT_SHORT},
        {"help", no_argument, NULL, 'h'},
        {NULL, 0, NULL, 0},
    };
    struct config_flags flags = {0};
    bool timestamp = true;
    optind = 0;
    opterr = 0;
    int c;
    while ((c = getopt_long(argc, argv, ":h", long_options, NULL)) != -1) {
        switch (c) {
        case OPT_CONFIG: flags.config_file = optarg; break;
        case OPT_MIG: flags.mig_strategy = optarg; break;
        case OPT_NO_TIMESTAMP: timestamp = false; break;
        case OPT_SHORT: flags.short_labels = "true"; break;
        case 'h': fputs(labels_usage, stdout); return CLI_OK;
        default: return cli_option_error("labels", c, argv[optind - 1]);
        }
    }
    if (optind < argc)
        return cli_usage_error("labels", "unexpected argument '%s'", argv[optind]);
    struct gpulet_error err = {0};
    struct config cfg;
    if (config_load(&flags, config_process_env, &cfg, &err) < 0) {
        fprintf(stderr, "gpulet: %s\n", err.msg);
        return CLI_USAGE;
    }
    struct nvml *nvml;
    struct gpu_inventory *inv;
    int opened = cli_open_inventory(opts, &nvml, &inv);
    if (opened != CLI_OK)
        return opened;
    struct label_set set;
    int rc = CLI_OK;
    if (labels_compute(inv, &cfg, timestamp, time(NULL), &set, &err) < 0) {
        fprintf(stderr, "gpulet: %s\n", err.msg);
        rc = CLI_FAILED;
    } else {
        labels_print(&set, stdout);
        labels_free(&set);
    }
    gpu_inventory_free(inv);
    nvml_close(nvml);
    return rc;
}
