/*
 * doctor: `gpulet doctor`, checks of a GPU node that name what is wrong
 * and how to fix it — the causes people otherwise lose hours on (a
 * rewritten containerd config without the nvidia runtime, a finished pod
 * still holding the only GPU, missing device nodes).
 */
#ifndef GPULET_DOCTOR_H
#define GPULET_DOCTOR_H

#include <stdbool.h>
#include <stdio.h>

#include "config/config.h"
#include "nvml/nvml.h"

struct doctor_options {
    struct nvml_options nvml;
    const char *dev_root;            /* where /dev is; "/" */
    const char *device_plugin_dir;
    const char *podresources;        /* kubelet pod-resources socket */
    const char *containerd_config;   /* main file; its conf.d is read too */
    const char *docker_config;
    const char *crio_dir;            /* crio.conf.d */
    const char *cdi_dirs;            /* ':'-separated */
    const struct config *config;     /* MIG strategy */
    bool json;
};

/* Runs every check, prints the report; returns 0 when all are ok, 1
 * otherwise. */
int doctor_run(const struct doctor_options *opts, FILE *out);

#endif
