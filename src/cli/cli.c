#include "cli.h"

#include <getopt.h>
#include <signal.h>
#include <stdarg.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "log/log.h"

static const char usage_text[] =
    "Usage: gpulet [OPTIONS] COMMAND [ARGS]\n"
    "\n"
    "One small daemon for the node side of GPUs in Kubernetes.\n"
    "\n"
    "Commands:\n"
    "  info        describe the GPUs of this node and how they connect\n"
    "  run         run the node daemon: device plugin, node labels and /metrics\n"
    "  labels      print the nvidia.com/* node labels\n"
    "  cdi         generate a CDI spec for the GPUs (cdi generate)\n"
    "  runtime     configure a container engine for gpulet-runtime, or install\n"
    "              the runtime on the host\n"
    "  doctor      check this GPU node and say how to fix what is wrong\n"
    "  version     print the version\n"
    "  help [CMD]  show this help, or a command's (the same as CMD --help)\n"
    "\n"
    "Options:\n"
    "  --simulate NAME|FILE  run on a simulated GPU node instead of the driver\n"
    "                        (NAME is one of: %s)\n"
    "  --nvml-lib PATH       load exactly this libnvidia-ml.so.1\n"
    "  --driver-root DIR     where the NVIDIA driver is installed (default: env\n"
    "                        NVIDIA_DRIVER_ROOT, else the dynamic loader's path)\n"
    "  --log-level LEVEL     debug, info, warn or error (default info)\n"
    "  -h, --help            show this help\n"
    "  -V, --version         print the version\n";

static void print_usage(FILE *out)
{
    char fixtures[1024];
    cli_list_fixtures(fixtures, sizeof fixtures);
    fprintf(out, usage_text, fixtures[0] ? fixtures : "none found");
}

int cli_usage_error(const char *command, const char *fmt, ...)
{
    char msg[1024];
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(msg, sizeof msg, fmt, ap);
    va_end(ap);
    if (command)
        fprintf(stderr, "gpulet %s: %s\nTry 'gpulet %s --help'.\n", command, msg, command);
    else
        fprintf(stderr, "gpulet: %s\nTry 'gpulet --help'.\n", msg);
    return CLI_USAGE;
}

static const char version_usage[] =
    "Usage: gpulet version\n"
    "\n"
    "Print gpulet's version.\n";

static int command_version(const struct cli_options *opts, int argc, char **argv)
{
    (void)opts;
    if (argc >= 2 && (strcmp(argv[1], "--help") == 0 || strcmp(argv[1], "-h") == 0)) {
        fputs(version_usage, stdout);
        return CLI_OK;
    }
    if (argc >= 2)
        return cli_usage_error("version", "unexpected argument '%s'", argv[1]);
    printf("gpulet %s\n", GPULET_VERSION);
    return CLI_OK;
}

static int command_help(const struct cli_options *opts, int argc, char **argv);

/* Every command the CLI knows; `help` finds them here too, so `help X`
 * and `X --help` cannot differ. */
static const struct {
    const char *name;
    int (*fn)(const struct cli_options *opts, int argc, char **argv);
} commands[] = {
    {"info", cli_info},       {"run", cli_run},       {"labels", cli_labels},
    {"cdi", cli_cdi},         {"runtime", cli_runtime}, {"doctor", cli_doctor},
    {"version", command_version}, {"help", command_help},
};

static int run_command(const struct cli_options *opts, int argc, char **argv)
{
    for (size_t i = 0; i < sizeof commands / sizeof commands[0]; i++)
        if (strcmp(argv[0], commands[i].name) == 0)
            return commands[i].fn(opts, argc, argv);
    return cli_usage_error(NULL, "unknown command '%s'", argv[0]);
}

/* help [CMD [ACTION]]: runs `CMD [ACTION] --help`. */
static int command_help(const struct cli_options *opts, int argc, char **argv)
{
    if (argc < 2 || strcmp(argv[1], "help") == 0 || strcmp(argv[1], "--help") == 0 ||
        strcmp(argv[1], "-h") == 0) {
        print_usage(stdout);
        return CLI_OK;
    }
    if (argc > 3)
        return cli_usage_error(NULL, "help takes a command and at most one action, not '%s'",
                               argv[3]);
    char *args[] = {argv[1], argc > 2 ? argv[2] : "--help", "--help", NULL};
    return run_command(opts, argc, args);
}

int cli_open_inventory(const struct cli_options *opts, struct nvml **nvml,
                       struct gpu_inventory **inv)
{
    struct gpulet_error err = {0};
    if (nvml_open(&opts->nvml, nvml, &err) < 0) {
        fprintf(stderr, "gpulet: %s\n", err.msg);
        return CLI_USAGE;
    }
    if (gpu_inventory_load(*nvml, inv, &err) < 0) {
        fprintf(stderr, "gpulet: cannot read the GPU inventory: %s\n", err.msg);
        nvml_close(*nvml);
        return CLI_FAILED;
    }
    return CLI_OK;
}

int cli_main(int argc, char **argv)
{
    enum { OPT_SIMULATE = 256, OPT_NVML_LIB, OPT_DRIVER_ROOT, OPT_LOG_LEVEL };
    static const struct option long_options[] = {
        {"simulate", required_argument, NULL, OPT_SIMULATE},
        {"nvml-lib", required_argument, NULL, OPT_NVML_LIB},
        {"driver-root", required_argument, NULL, OPT_DRIVER_ROOT},
        {"log-level", required_argument, NULL, OPT_LOG_LEVEL},
        {"help", no_argument, NULL, 'h'},
        {"version", no_argument, NULL, 'V'},
        {NULL, 0, NULL, 0},
    };
    struct cli_options opts = {0};
    opts.nvml.driver_root = getenv("NVIDIA_DRIVER_ROOT");

    /* '+' stops at the command, so each command parses its own options. */
    opterr = 0;
    int c;
    while ((c = getopt_long(argc, argv, "+:hV", long_options, NULL)) != -1) {
        switch (c) {
        case OPT_SIMULATE: opts.simulate = optarg; break;
        case OPT_NVML_LIB: opts.nvml.library_path = optarg; break;
        case OPT_DRIVER_ROOT: opts.nvml.driver_root = optarg; break;
        case OPT_LOG_LEVEL: {
            enum log_level level;
            if (log_parse_level(optarg, &level) < 0)
                return cli_usage_error(NULL,
                                       "--log-level must be debug, info, warn or error, not '%s'",
                                       optarg);
            log_set_level(level);
            break;
        }
        case 'h': print_usage(stdout); return CLI_OK;
        case 'V': return command_version(&opts, 1, (char *[]){"version", NULL});
        case ':': return cli_usage_error(NULL, "option '%s' needs a value", argv[optind - 1]);
        default: return cli_usage_error(NULL, "unknown option '%s'", argv[optind - 1]);
        }
    }
    if (opts.simulate && opts.nvml.library_path)
        return cli_usage_error(NULL, "%s", "--simulate and --nvml-lib cannot be used together");
    if (optind >= argc)
        return cli_usage_error(NULL, "which command? (info, run, labels, cdi, runtime, doctor, "
                                     "version, help)");

    char node_path[4096], lib_path[4096];
    struct simroot sim = {0};
    sigset_t stop_signals, old_mask;
    sigemptyset(&stop_signals);
    sigemptyset(&old_mask);
    if (opts.simulate) {
        struct gpulet_error err = {0};
        if (cli_use_simulator(&opts, node_path, sizeof node_path, lib_path, sizeof lib_path,
                              &err) < 0) {
            fprintf(stderr, "gpulet: %s\n", err.msg);
            return CLI_USAGE;
        }
        /* They wait until the private folder is gone, then act; `run`
         * unblocks all but SIGPIPE once its loop handles them (a clean
         * stop). SIGPIPE: a reader that stops early (`cdi generate |
         * head`) fails the writes instead of killing gpulet at once. */
        sigaddset(&stop_signals, SIGINT);
        sigaddset(&stop_signals, SIGTERM);
        sigaddset(&stop_signals, SIGHUP);
        sigaddset(&stop_signals, SIGQUIT);
        sigaddset(&stop_signals, SIGPIPE);
        sigprocmask(SIG_BLOCK, &stop_signals, &old_mask);
        opts.sim = &sim;
        /* What one killed before its cleanup (SIGKILL) left. */
        simroot_sweep();
    }

    int rc = run_command(&opts, argc - optind, argv + optind);
    if (opts.sim) {
        simroot_remove(&sim);
        sigprocmask(SIG_SETMASK, &old_mask, NULL);
    }
    return rc;
}

bool cli_own_folder(char *out, size_t len)
{
    ssize_t n = readlink("/proc/self/exe", out, len - 1);
    if (n <= 0)
        return false;
    out[n] = '\0';
    char *slash = strrchr(out, '/');
    if (slash == NULL)
        return false;
    *slash = '\0';
    return true;
}

int cli_option_error(const char *command, int c, const char *option)
{
    if (c == ':')
        return cli_usage_error(command, "option '%s' needs a value", option);
    return cli_usage_error(command, "unknown option '%s'", option);
}

int cli_simulated_driver_root(const struct cli_options *opts, const struct gpu_inventory *inv,
                              char *out, size_t len)
{
    out[0] = '\0';
    if (opts->sim == NULL)
        return CLI_OK;
    struct nvml *nvml = NULL;
    struct gpu_inventory *read = NULL;
    if (inv == NULL) {
        int opened = cli_open_inventory(opts, &nvml, &read);
        if (opened != CLI_OK)
            return opened;
        inv = read;
    }
    struct gpulet_error err = {0};
    int rc = simroot_driver(opts->sim, inv, out, len, &err);
    if (read) {
        gpu_inventory_free(read);
        nvml_close(nvml);
    }
    if (rc < 0) {
        fprintf(stderr, "gpulet: cannot make the simulated driver root: %s\n", err.msg);
        return CLI_FAILED;
    }
    return CLI_OK;
}
