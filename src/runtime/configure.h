/*
 * Engine configuration for gpulet-runtime (part of the runtime module):
 * `gpulet runtime configure` adds an "nvidia" runtime that points at
 * gpulet-runtime to Docker's daemon.json or as a CRI-O drop-in — keeping
 * every other setting, idempotent, with a backup of what it changes, and
 * refusing to touch a file it cannot parse.
 */
#ifndef GPULET_RUNTIME_CONFIGURE_H
#define GPULET_RUNTIME_CONFIGURE_H

#include <stdbool.h>
#include <stdio.h>

#include "error/error.h"

enum engine { ENGINE_DOCKER, ENGINE_CRIO, ENGINE_CONTAINERD };

struct configure_options {
    enum engine engine;
    const char *config;        /* the file to edit or write; NULL: the engine's default */
    const char *runtime_path;  /* gpulet-runtime's absolute path */
    bool set_as_default;
    bool dry_run;              /* print the result instead of writing */
};

/* Returns 0 with *changed telling whether the file was (or would be)
 * changed; messages for the user go to out. */
int runtime_configure(const struct configure_options *opts, bool *changed, FILE *out,
                      struct gpulet_error *err);

const char *engine_default_config(enum engine e);

#endif
