/*
 * daemon: `gpulet run`, the one process per GPU node. It owns the event
 * loop and the daemon's context (configuration, NVML, inventory, the
 * device plugin), handles signals (SIGTERM/SIGINT: clean exit; SIGHUP:
 * reload the configuration), and watches the device-plugin directory with
 * inotify for kubelet restarts and deleted sockets.
 */
#ifndef GPULET_DAEMON_H
#define GPULET_DAEMON_H

#include <stdbool.h>

#include "config/config.h"
#include "metrics/metrics.h"
#include "nvml/nvml.h"

struct daemon_options {
    struct nvml_options nvml;
    struct config_flags flags;
    const char *device_plugin_dir;
    bool device_plugin; /* serve the device plugin (default on) */
    bool dra;           /* --dra: serve as a DRA driver (also config dra.enabled) */
    const char *kubelet_root;
    const char *node_name;
    const char *kubeconfig; /* NULL: the in-cluster service account */
    const char *cdi_dir;    /* DRA's per-claim CDI specs */
    const char *cdi_hook;   /* gpulet-hook for those specs' ld cache; NULL: none */
    const char *host_driver_root; /* the driver root as the host names it; NULL: the same */
    long health_recovery_ms; /* --health-recovery-period; 0: never */
    const char *labels_file;  /* NFD features file; NULL: no labels */
    long labels_interval_ms;
    bool labels_timestamp;
    bool metrics_on;
    struct metrics_options metrics;
    bool stop_on_quit; /* SIGQUIT stops cleanly too (--simulate: its folder goes) */
};

/* Runs until SIGTERM/SIGINT; returns the process exit code (0 clean,
 * 1 failed while running, 2 refused to start). */
int daemon_run(const struct daemon_options *opts);

#endif
