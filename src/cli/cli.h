/*
 * cli: the `gpulet` command line. Parses the global options, picks the
 * NVML library (the driver's, or the simulator's for --simulate), and runs
 * one subcommand. Exit codes: 0 success, 1 the command failed, 2 usage
 * errors, no driver, or unreadable input.
 */
#ifndef GPULET_CLI_H
#define GPULET_CLI_H

#include <stdio.h>

#include "error/error.h"
#include "gpu/gpu.h"
#include "nvml/nvml.h"
#include "simroot/simroot.h"

enum { CLI_OK = 0, CLI_FAILED = 1, CLI_USAGE = 2 };

struct cli_options {
    struct nvml_options nvml;
    const char *simulate; /* --simulate NAME|FILE, or NULL */
    /* With --simulate: the private folder that outputs default to. */
    struct simroot *sim;
};

int cli_main(int argc, char **argv);

/* Resolves --simulate NAME|FILE to a node file and the simulator library,
 * sets GPULET_SIM_NODE and points opts->nvml.library_path at the library. */
int cli_use_simulator(struct cli_options *opts, char *node_path, size_t node_len, char *lib_path,
                      size_t lib_len, struct gpulet_error *err);

/* Lists the fixture names found, comma-separated, for messages and help. */
void cli_list_fixtures(char *buf, size_t len);

/* Opens NVML and reads the inventory, printing what went wrong; returns
 * CLI_OK, or the exit code (2: no driver, 1: the inventory failed). */
int cli_open_inventory(const struct cli_options *opts, struct nvml **nvml,
                       struct gpu_inventory **inv);

/* Reports getopt's complaint c (':' a missing value, else an unknown
 * option) about option, as cli_usage_error() does. */
int cli_option_error(const char *command, int c, const char *option);

/* "gpulet COMMAND: message" and one line pointing to COMMAND's --help, on
 * stderr; returns CLI_USAGE. */
int cli_usage_error(const char *command, const char *fmt, ...)
    __attribute__((format(printf, 2, 3)));

/* Under --simulate, the simulated driver root generated from the node
 * (inv, or the inventory read here when NULL) in the private folder, into
 * out; "" when not simulating. Returns CLI_OK, or prints what went wrong
 * and returns the exit code. */
int cli_simulated_driver_root(const struct cli_options *opts, const struct gpu_inventory *inv,
                              char *out, size_t len);

/* The folder this gpulet program is in: gpulet-runtime and gpulet-hook
 * are looked for beside it. Returns false when /proc/self/exe cannot be
 * read. */
bool cli_own_folder(char *out, size_t len);

int cli_info(const struct cli_options *opts, int argc, char **argv);
int cli_run(const struct cli_options *opts, int argc, char **argv);
int cli_labels(const struct cli_options *opts, int argc, char **argv);
int cli_cdi(const struct cli_options *opts, int argc, char **argv);
int cli_runtime(const struct cli_options *opts, int argc, char **argv);
int cli_doctor(const struct cli_options *opts, int argc, char **argv);

#endif
