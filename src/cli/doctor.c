#include "cli.h"

#include <getopt.h>
#include <limits.h>
#include <string.h>

#include "doctor/doctor.h"
#include "metrics/metrics.h"
#include "plugin/plugin.h"

static const char doctor_usage[] =
    "Usage: gpulet [GLOBAL OPTIONS] doctor [OPTIONS]\n"
    "\n"
    "Check this GPU node and say how to fix what is wrong: the driver, the\n"
    "device nodes, the container engine's nvidia runtime, the CDI spec, whether\n"
    "gpulet serves (asked on its sockets) and the kubelet offers its healthy\n"
    "devices (pod-resources GetAllocatableResources, else the kubelet's\n"
    "checkpoint), unhealthy GPUs and why, GPUs held by pods that run nothing,\n"
    "the MIG layout. Exit 0 when everything is ok, 1 otherwise.\n"
    "\n"
    "  --json                      a JSON report\n"
    "  --dev-root DIR              where /dev is (default /; with --simulate the\n"
    "                              simulated driver root)\n"
    "  --device-plugin-dir DIR     (default " PLUGIN_DEFAULT_DIR ")\n"
    "  --pod-resources-socket P    (default " METRICS_DEFAULT_PODRESOURCES ")\n"
    "  --containerd-config FILE    (default /etc/containerd/config.toml)\n"
    "  --docker-config FILE        (default /etc/docker/daemon.json)\n"
    "  --crio-dir DIR              (default /etc/crio/crio.conf.d)\n"
    "  --cdi-dirs DIRS             (default /etc/cdi:/var/run/cdi)\n"
    "  --config-file FILE          device plugin config (MIG strategy)\n"
    "  --mig-strategy S            none | single | mixed\n";

int cli_doctor(const struct cli_options *opts, int argc, char **argv)
{
    enum { O_JSON = 256, O_DEV, O_DP, O_PR, O_CD, O_DOCKER, O_CRIO, O_CDI, O_CONFIG, O_MIG };
    static const struct option long_options[] = {
        {"json", no_argument, NULL, O_JSON},
        {"dev-root", required_argument, NULL, O_DEV},
        {"device-plugin-dir", required_argument, NULL, O_DP},
        {"pod-resources-socket", required_argument, NULL, O_PR},
        {"containerd-config", required_argument, NULL, O_CD},
        {"docker-config", required_argument, NULL, O_DOCKER},
        {"crio-dir", required_argument, NULL, O_CRIO},
        {"cdi-dirs", required_argument, NULL, O_CDI},
        {"config-file", required_argument, NULL, O_CONFIG},
        {"mig-strategy", required_argument, NULL, O_MIG},
        {"help", no_argument, NULL, 'h'},
        {NULL, 0, NULL, 0},
    };
    struct doctor_options d = {
        .nvml = opts ? opts->nvml : (struct nvml_options){0},
        .dev_root = "/",
        .device_plugin_dir = PLUGIN_DEFAULT_DIR,
        .podresources = METRICS_DEFAULT_PODRESOURCES,
        .containerd_config = "/etc/containerd/config.toml",
        .docker_config = "/etc/docker/daemon.json",
        .crio_dir = "/etc/crio/crio.conf.d",
        .cdi_dirs = "/etc/cdi:/var/run/cdi",
    };
    struct config_flags flags = {0};
    bool dev_root_given = false;
    optind = 0;
    opterr = 0;
    int c;
    while ((c = getopt_long(argc, argv, ":h", long_options, NULL)) != -1) {
        switch (c) {
        case O_JSON: d.json = true; break;
        case O_DEV: d.dev_root = optarg; dev_root_given = true; break;
        case O_DP: d.device_plugin_dir = optarg; break;
        case O_PR: d.podresources = optarg; break;
        case O_CD: d.containerd_config = optarg; break;
        case O_DOCKER: d.docker_config = optarg; break;
        case O_CRIO: d.crio_dir = optarg; break;
        case O_CDI: d.cdi_dirs = optarg; break;
        case O_CONFIG: flags.config_file = optarg; break;
        case O_MIG: flags.mig_strategy = optarg; break;
        case 'h': fputs(doctor_usage, stdout); return CLI_OK;
        default: return cli_option_error("doctor", c, argv[optind - 1]);
        }
    }
    struct config cfg;
    struct gpulet_error err = {0};
    if (config_load(&flags, config_process_env, &cfg, &err) < 0) {
        fprintf(stderr, "gpulet: %s\n", err.msg);
        return CLI_USAGE;
    }
    d.config = &cfg;
    char simulated[PATH_MAX];
    if (!dev_root_given) {
        int made = cli_simulated_driver_root(opts, NULL, simulated, sizeof simulated);
        if (made != CLI_OK)
            return made;
        if (simulated[0])
            d.dev_root = simulated;
    }
    return doctor_run(&d, stdout);
}
