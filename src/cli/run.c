#include "cli.h"

#include <getopt.h>
#include <limits.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "daemon/daemon.h"
#include "dra/dra.h"
#include "labels/labels.h"
#include "log/log.h"
#include "plugin/plugin.h"

static const char run_usage[] =
    "Usage: gpulet [GLOBAL OPTIONS] run [OPTIONS]\n"
    "\n"
    "Run the node daemon: the kubelet device plugin for NVIDIA GPUs, the\n"
    "nvidia.com/* node labels for NFD and the /metrics exporter.\n"
    "\n"
    "  --device-plugin-dir DIR     kubelet device-plugin directory\n"
    "                              (default " PLUGIN_DEFAULT_DIR ")\n"
    "  --no-device-plugin          do not serve the device plugin\n"
    "  --dra                       also serve as the DRA driver " DRA_DRIVER "\n"
    "                              (config dra.enabled; see docs/dra.md)\n"
    "  --kubelet-root DIR          the kubelet's root, for the DRA sockets\n"
    "                              (default " DRA_DEFAULT_KUBELET_ROOT ")\n"
    "  --node-name NAME            this node's name (env NODE_NAME, else the\n"
    "                              host name)\n"
    "  --kubeconfig FILE           API server credentials for DRA (default: the\n"
    "                              pod's service account)\n"
    "  --cdi-dir DIR               where DRA writes its per-claim CDI specs\n"
    "                              (default " DRA_DEFAULT_CDI_ROOT ")\n"
    "  --host-driver-root DIR      the driver root as the host names it, for the\n"
    "                              paths in those specs where gpulet sees the host\n"
    "                              elsewhere (env GPULET_HOST_DRIVER_ROOT; the\n"
    "                              DaemonSet, given the host's / at /host: /)\n"
    "  --config-file FILE          NVIDIA device plugin config, v1 (env CONFIG_FILE)\n"
    "  --mig-strategy S            none | single | mixed (env MIG_STRATEGY)\n"
    "  --fail-on-init-error B      true | false (env FAIL_ON_INIT_ERROR)\n"
    "  --pass-device-specs B       true | false (env PASS_DEVICE_SPECS)\n"
    "  --device-list-strategy L    envvar, volume-mounts, cdi-annotations, cdi-cri,\n"
    "                              comma-separated (env DEVICE_LIST_STRATEGY)\n"
    "  --device-id-strategy S      uuid | index: how containers are told their\n"
    "                              GPUs; the kubelet sees UUIDs (env\n"
    "                              DEVICE_ID_STRATEGY)\n"
    "  --replica-policy P          distributed | packed: where shared replicas go\n"
    "                              (env GPULET_REPLICA_POLICY, default distributed)\n"
    "  --cuda-interposer PATH      host path of libgpulet-cuda.so, mounted into\n"
    "                              containers given GPU slices (env\n"
    "                              GPULET_CUDA_INTERPOSER, default\n"
    "                              " CONFIG_DEFAULT_INTERPOSER ")\n"
    "  --state-dir DIR             gpulet's host state, alloc/<id> per sliced\n"
    "                              container (env GPULET_STATE_DIR, default\n"
    "                              " CONFIG_DEFAULT_STATE_DIR ")\n";

/* Two halves: one string would pass the length ISO C requires compilers to support. */
static const char run_usage_outputs[] =
    "  --labels-file FILE          NFD features file for the nvidia.com/* labels\n"
    "                              (default " LABELS_DEFAULT_FILE ")\n"
    "  --labels-interval D         rewrite the labels every D (default 60s)\n"
    "  --no-labels                 write no labels\n"
    "  --no-timestamp              leave out nvidia.com/gfd.timestamp\n"
    "  --short-labels              also nvidia.com/gpu.model=V100 and the like\n"
    "                              (env GPULET_SHORT_LABELS, flags.gfd.shortLabels)\n"
    "  --metrics-address ADDR      serve /metrics here (default :9400; env\n"
    "                              DCGM_EXPORTER_LISTEN)\n"
    "  --collect-interval MS       NVML sampling period in ms (default 30000;\n"
    "                              env DCGM_EXPORTER_INTERVAL)\n"
    "  -f, --collectors FILE       dcgm-exporter counters CSV (env\n"
    "                              DCGM_EXPORTER_COLLECTORS)\n"
    "  --pod-resources-socket P    kubelet pod-resources socket (default\n"
    "                              " METRICS_DEFAULT_PODRESOURCES ")\n"
    "  --no-pod-labels             no pod/namespace/container labels (env\n"
    "                              DCGM_EXPORTER_KUBERNETES=false)\n"
    "  --hostname-label L          Hostname (default), hostname or none\n"
    "  --metrics-schema S          dcgm (default), nvidia-smi or dcgm,nvidia-smi:\n"
    "                              dcgm-exporter's names, nvidia_gpu_exporter's, or\n"
    "                              both (env GPULET_METRICS_SCHEMA)\n"
    "  --no-metrics                serve no metrics\n"
    "  --health-recovery-period D  a device well again for D (e.g. 60s, 500ms, 2m;\n"
    "                              0 = never) returns to Healthy (default 60s)\n"
    "  -h, --help                  show this help\n"
    "\n"
    "Command line beats environment beats config file. SIGHUP reloads the\n"
    "configuration; SIGTERM or SIGINT stops cleanly (under --simulate SIGQUIT too).\n"
    "\n"
    "With --simulate, the device-plugin folder, labels file and state folder\n"
    "default to a private folder (printed at start, removed at exit) and\n"
    "/metrics to " METRICS_SIMULATE_ADDRESS ", so trying gpulet changes nothing on the\n"
    "machine; options and variables still choose.\n";

/* "60", "60s", "500ms", "2m" -> milliseconds */
static int parse_duration_ms(const char *text, long *out)
{
    char *end;
    long n = strtol(text, &end, 10);
    if (end == text || n < 0 || n > 86400000L)
        return -1;
    if (*end == '\0' || strcmp(end, "s") == 0)
        *out = n * 1000;
    else if (strcmp(end, "ms") == 0)
        *out = n;
    else if (strcmp(end, "m") == 0)
        *out = n * 60000;
    else
        return -1;
    return 0;
}

/* dcgm-exporter's interval: plain milliseconds */
static int parse_interval(const char *text, long *out)
{
    char *end;
    long n = strtol(text, &end, 10);
    if (end == text || *end != '\0' || n < 100 || n > 86400000L)
        return -1;
    *out = n;
    return 0;
}

int cli_run(const struct cli_options *opts, int argc, char **argv)
{
    enum {
        OPT_DIR = 256,
        OPT_NO_PLUGIN,
        OPT_CONFIG,
        OPT_MIG,
        OPT_FAIL,
        OPT_SPECS,
        OPT_LIST,
        OPT_ID,
        OPT_RECOVERY,
        OPT_REPLICA,
        OPT_LABELS_FILE,
        OPT_LABELS_INTERVAL,
        OPT_NO_LABELS,
        OPT_NO_TIMESTAMP,
        OPT_SHORT,
        OPT_METRICS_ADDRESS,
        OPT_COLLECT_INTERVAL,
        OPT_PODRESOURCES,
        OPT_NO_POD_LABELS,
        OPT_HOSTNAME_LABEL,
        OPT_METRICS_SCHEMA,
        OPT_NO_METRICS,
        OPT_INTERPOSER,
        OPT_STATE_DIR,
        OPT_DRA,
        OPT_KUBELET_ROOT,
        OPT_NODE_NAME,
        OPT_KUBECONFIG,
        OPT_CDI_DIR,
        OPT_HOST_DRIVER_ROOT,
    };
    static const struct option long_options[] = {
        {"device-plugin-dir", required_argument, NULL, OPT_DIR},
        {"no-device-plugin", no_argument, NULL, OPT_NO_PLUGIN},
        {"dra", no_argument, NULL, OPT_DRA},
        {"kubelet-root", required_argument, NULL, OPT_KUBELET_ROOT},
        {"node-name", required_argument, NULL, OPT_NODE_NAME},
        {"kubeconfig", required_argument, NULL, OPT_KUBECONFIG},
        {"cdi-dir", required_argument, NULL, OPT_CDI_DIR},
        {"host-driver-root", required_argument, NULL, OPT_HOST_DRIVER_ROOT},
        {"config-file", required_argument, NULL, OPT_CONFIG},
        {"mig-strategy", required_argument, NULL, OPT_MIG},
        {"fail-on-init-error", required_argument, NULL, OPT_FAIL},
        {"pass-device-specs", required_argument, NULL, OPT_SPECS},
        {"device-list-strategy", required_argument, NULL, OPT_LIST},
        {"device-id-strategy", required_argument, NULL, OPT_ID},
        {"health-recovery-period", required_argument, NULL, OPT_RECOVERY},
        {"replica-policy", required_argument, NULL, OPT_REPLICA},
        {"cuda-interposer", required_argument, NULL, OPT_INTERPOSER},
        {"state-dir", required_argument, NULL, OPT_STATE_DIR},
        {"labels-file", required_argument, NULL, OPT_LABELS_FILE},
        {"labels-interval", required_argument, NULL, OPT_LABELS_INTERVAL},
        {"no-labels", no_argument, NULL, OPT_NO_LABELS},
        {"no-timestamp", no_argument, NULL, OPT_NO_TIMESTAMP},
        {"short-labels", no_argument, NULL, OPT_SHORT},
        {"metrics-address", required_argument, NULL, OPT_METRICS_ADDRESS},
        {"collect-interval", required_argument, NULL, OPT_COLLECT_INTERVAL},
        {"collectors", required_argument, NULL, 'f'},
        {"pod-resources-socket", required_argument, NULL, OPT_PODRESOURCES},
        {"no-pod-labels", no_argument, NULL, OPT_NO_POD_LABELS},
        {"hostname-label", required_argument, NULL, OPT_HOSTNAME_LABEL},
        {"metrics-schema", required_argument, NULL, OPT_METRICS_SCHEMA},
        {"no-metrics", no_argument, NULL, OPT_NO_METRICS},
        {"help", no_argument, NULL, 'h'},
        {NULL, 0, NULL, 0},
    };
    struct daemon_options d = {.nvml = opts->nvml,
                               .device_plugin_dir = PLUGIN_DEFAULT_DIR,
                               .device_plugin = true,
                               .kubelet_root = DRA_DEFAULT_KUBELET_ROOT,
                               .cdi_dir = DRA_DEFAULT_CDI_ROOT,
                               .host_driver_root = getenv("GPULET_HOST_DRIVER_ROOT"),
                               .health_recovery_ms = 60000,
                               .labels_file = LABELS_DEFAULT_FILE,
                               .labels_interval_ms = 60000,
                               .labels_timestamp = true,
                               .metrics_on = true,
                               .stop_on_quit = opts->sim != NULL};
    static char hostname[256];
    const char *node_name = getenv("NODE_NAME");
    if (node_name && node_name[0])
        snprintf(hostname, sizeof hostname, "%s", node_name);
    else if (gethostname(hostname, sizeof hostname) != 0)
        snprintf(hostname, sizeof hostname, "unknown");
    const char *listen = getenv("DCGM_EXPORTER_LISTEN");
    /* What the command line or environment named: --simulate's private
     * folder and loopback stand in for the rest. */
    struct {
        bool device_plugin_dir, labels_file, metrics_address;
    } given = {.metrics_address = listen && listen[0]};
    const char *interval = getenv("DCGM_EXPORTER_INTERVAL");
    const char *kubernetes = getenv("DCGM_EXPORTER_KUBERNETES");
    d.metrics = (struct metrics_options){
        .address = listen && listen[0] ? listen : METRICS_DEFAULT_ADDRESS,
        .interval_ms = 30000,
        .counters_file = getenv("DCGM_EXPORTER_COLLECTORS"),
        .podresources = kubernetes && strcmp(kubernetes, "false") == 0
                            ? NULL
                            : METRICS_DEFAULT_PODRESOURCES,
        .pods_interval_ms = 10000,
        .hostname_label = HOSTNAME_LABEL_UPPER,
        .hostname = hostname,
    };
    if (d.metrics.counters_file && d.metrics.counters_file[0] == '\0')
        d.metrics.counters_file = NULL;
    const char *schema = getenv("GPULET_METRICS_SCHEMA");
    struct gpulet_error schema_err = {0};
    if (schema && schema[0] &&
        metrics_parse_schema(schema, &d.metrics.schemas, &schema_err) < 0) {
        fprintf(stderr, "gpulet run: GPULET_METRICS_SCHEMA: %s\n", schema_err.msg);
        return CLI_USAGE;
    }
    if (interval && interval[0] && parse_interval(interval, &d.metrics.interval_ms) < 0) {
        fprintf(stderr, "gpulet run: DCGM_EXPORTER_INTERVAL must be milliseconds (at least "
                        "100), not '%s'\n", interval);
        return CLI_USAGE;
    }
    optind = 0;
    opterr = 0;
    int c;
    while ((c = getopt_long(argc, argv, ":hf:", long_options, NULL)) != -1) {
        switch (c) {
        case OPT_DIR: d.device_plugin_dir = optarg; given.device_plugin_dir = true; break;
        case OPT_NO_PLUGIN: d.device_plugin = false; break;
        case OPT_DRA: d.dra = true; break;
        case OPT_KUBELET_ROOT: d.kubelet_root = optarg; break;
        case OPT_NODE_NAME: d.node_name = optarg; break;
        case OPT_KUBECONFIG: d.kubeconfig = optarg; break;
        case OPT_CDI_DIR: d.cdi_dir = optarg; break;
        case OPT_HOST_DRIVER_ROOT: d.host_driver_root = optarg; break;
        case OPT_CONFIG: d.flags.config_file = optarg; break;
        case OPT_MIG: d.flags.mig_strategy = optarg; break;
        case OPT_FAIL: d.flags.fail_on_init_error = optarg; break;
        case OPT_SPECS: d.flags.pass_device_specs = optarg; break;
        case OPT_LIST: d.flags.device_list_strategy = optarg; break;
        case OPT_ID: d.flags.device_id_strategy = optarg; break;
        case OPT_REPLICA: d.flags.replica_policy = optarg; break;
        case OPT_INTERPOSER: d.flags.cuda_interposer = optarg; break;
        case OPT_STATE_DIR: d.flags.state_dir = optarg; break;
        case OPT_LABELS_FILE: d.labels_file = optarg; given.labels_file = true; break;
        case OPT_NO_LABELS: d.labels_file = NULL; given.labels_file = true; break;
        case OPT_NO_TIMESTAMP: d.labels_timestamp = false; break;
        case OPT_SHORT: d.flags.short_labels = "true"; break;
        case OPT_METRICS_ADDRESS:
            d.metrics.address = optarg;
            given.metrics_address = true;
            break;
        case 'f': d.metrics.counters_file = optarg; break;
        case OPT_PODRESOURCES: d.metrics.podresources = optarg; break;
        case OPT_NO_POD_LABELS: d.metrics.podresources = NULL; break;
        case OPT_NO_METRICS: d.metrics_on = false; break;
        case OPT_COLLECT_INTERVAL:
            if (parse_interval(optarg, &d.metrics.interval_ms) < 0) {
                fprintf(stderr, "gpulet run: --collect-interval must be milliseconds (at least "
                                "100), not '%s'\n", optarg);
                return CLI_USAGE;
            }
            break;
        case OPT_METRICS_SCHEMA:
            if (metrics_parse_schema(optarg, &d.metrics.schemas, &schema_err) < 0) {
                fprintf(stderr, "gpulet run: --metrics-schema: %s\n", schema_err.msg);
                return CLI_USAGE;
            }
            break;
        case OPT_HOSTNAME_LABEL:
            if (strcmp(optarg, "Hostname") == 0)
                d.metrics.hostname_label = HOSTNAME_LABEL_UPPER;
            else if (strcmp(optarg, "hostname") == 0)
                d.metrics.hostname_label = HOSTNAME_LABEL_LOWER;
            else if (strcmp(optarg, "none") == 0)
                d.metrics.hostname_label = HOSTNAME_LABEL_NONE;
            else {
                fprintf(stderr, "gpulet run: --hostname-label must be Hostname, hostname or "
                                "none, not '%s'\n", optarg);
                return CLI_USAGE;
            }
            break;
        case OPT_LABELS_INTERVAL:
            if (parse_duration_ms(optarg, &d.labels_interval_ms) < 0 ||
                d.labels_interval_ms < 100) {
                fprintf(stderr,
                        "gpulet run: --labels-interval must be a duration of at least 100ms, "
                        "such as 60s, not '%s'\n",
                        optarg);
                return CLI_USAGE;
            }
            break;
        case OPT_RECOVERY:
            if (parse_duration_ms(optarg, &d.health_recovery_ms) < 0) {
                fprintf(stderr,
                        "gpulet run: --health-recovery-period must be a duration such as 60s, "
                        "500ms or 2m, not '%s'\n",
                        optarg);
                return CLI_USAGE;
            }
            break;
        case 'h': fputs(run_usage, stdout); fputs(run_usage_outputs, stdout); return CLI_OK;
        default: return cli_option_error("run", c, argv[optind - 1]);
        }
    }
    if (optind < argc)
        return cli_usage_error("run", "unexpected argument '%s'", argv[optind]);
    char dp_dir[PATH_MAX], labels[PATH_MAX], state[PATH_MAX];
    if (opts->sim) {
        struct gpulet_error err = {0};
        if ((!given.device_plugin_dir &&
             simroot_path(opts->sim, "device-plugins", true, dp_dir, sizeof dp_dir, &err) < 0) ||
            (!given.labels_file &&
             simroot_path(opts->sim, "features.d/gfd", false, labels, sizeof labels, &err) < 0) ||
            simroot_path(opts->sim, "state", true, state, sizeof state, &err) < 0) {
            fprintf(stderr, "gpulet run: %s\n", err.msg);
            return CLI_FAILED;
        }
        if (!given.device_plugin_dir)
            d.device_plugin_dir = dp_dir;
        if (!given.labels_file)
            d.labels_file = labels;
        d.flags.default_state_dir = state;
        if (!given.metrics_address)
            d.metrics.address = METRICS_SIMULATE_ADDRESS;
        log_info("simulated node: what gpulet writes goes to a private folder, removed at exit",
                 "folder=%s device_plugin_dir=%s labels=%s metrics=%s", opts->sim->dir,
                 d.device_plugin_dir, d.labels_file ? d.labels_file : "off",
                 d.metrics_on ? d.metrics.address : "off");
    }
    if (d.node_name == NULL)
        d.node_name = hostname;
    if (d.host_driver_root && !d.host_driver_root[0])
        d.host_driver_root = NULL;
    if (d.host_driver_root && d.host_driver_root[0] != '/') {
        fprintf(stderr, "gpulet run: --host-driver-root (GPULET_HOST_DRIVER_ROOT) must be an "
                        "absolute path, not '%s'\n", d.host_driver_root);
        return CLI_USAGE;
    }
    char self[4096], hook[4200];
    if (cli_own_folder(self, sizeof self)) {
        snprintf(hook, sizeof hook, "%s/gpulet-hook", self);
        d.cdi_hook = hook;
    }
    return daemon_run(&d);
}
