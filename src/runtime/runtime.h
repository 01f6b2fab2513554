/*
 * runtime: what gpulet-runtime, the OCI runtime wrapper, does to a bundle
 * on `create`: find which GPUs the container asks for, apply the CDI edits
 * of the nvidia.com/gpu spec on disk to its config.json, and write it back
 * safely — keeping every field it does not know, touching nothing outside
 * the bundle, and leaving a container that asks for nothing untouched.
 */
#ifndef GPULET_RUNTIME_H
#define GPULET_RUNTIME_H

#include <stdbool.h>
#include <stddef.h>

#include <stdio.h>

#include <jansson.h>

#include "error/error.h"

#define RUNTIME_DEVICE_DIR "/var/run/nvidia-container-devices"
#define RUNTIME_DEFAULT_CDI_DIRS "/etc/cdi:/var/run/cdi"
#define RUNTIME_MAX_DEVICES 64
#define RUNTIME_MAX_CONFIG (16 * 1024 * 1024) /* bytes of a bundle's config.json */

struct runtime_request {
    bool all;
    size_t count;
    char names[RUNTIME_MAX_DEVICES][128]; /* CDI device names: "0", "GPU-…", "1:2" */
    const char *source; /* what asked: "CDI annotation", "volume mounts", "NVIDIA_VISIBLE_DEVICES" */
    bool envvar;        /* the request is NVIDIA_VISIBLE_DEVICES, which any image can set */
    bool privileged;    /* CAP_SYS_ADMIN in process.capabilities.bounding, as NVIDIA's toolkit checks */
};

/* Reads the request from a config.json tree, in NVIDIA's priority order:
 * CDI annotations, /var/run/nvidia-container-devices mounts, then
 * NVIDIA_VISIBLE_DEVICES. No request: count 0 and all false. */
int runtime_find_request(json_t *config, struct runtime_request *req, struct gpulet_error *err);

/* gpulet-runtime's own settings, from a file the node's administrator
 * owns (never from the container): RUNTIME_SETTINGS_FILE, or the file
 * named by GPULET_RUNTIME_CONFIG in the engine's environment. Lines of
 * `key = value`, `#` comments:
 *   accept-envvar-unprivileged = true|false   (default true, as NVIDIA's
 *     accept-nvidia-visible-devices-envvar-when-unprivileged): whether a
 *     container that is not privileged gets GPUs by setting
 *     NVIDIA_VISIBLE_DEVICES, which any image can do in its ENV. */
#define RUNTIME_SETTINGS_FILE "/etc/gpulet/runtime.conf"
#define RUNTIME_MAX_SETTINGS 4096 /* bytes of that file */

struct runtime_settings {
    bool accept_envvar_unprivileged;
};

/* The defaults when path does not exist; an unknown key or value, or a
 * file that cannot be read, is an error (a typo must not leave GPUs open
 * to every image). */
int runtime_read_settings(const char *path, struct runtime_settings *s, struct gpulet_error *err);

/* One CDI spec file's text (YAML or JSON, within yamldoc's bounds) as the
 * JSON tree runtime_apply() takes; name is for errors. */
int runtime_parse_spec(const char *name, const char *text, size_t len, json_t **spec,
                       struct gpulet_error *err);

/* The nvidia.com/gpu CDI spec in the ':'-separated folders (a later
 * folder wins, as CDI says): 0 with *spec, 1 when no folder has one, -1 on
 * a spec that cannot be read. */
int runtime_load_spec(const char *dirs, json_t **spec, char *path, size_t path_len,
                      struct gpulet_error *err);

/* Applies the spec's edits for the request to config. */
int runtime_apply(json_t *config, json_t *spec, const char *spec_path,
                  const struct runtime_request *req, struct gpulet_error *err);

/* config.json of a bundle: read (refusing symlinks) and written back
 * atomically (a new file in the bundle, then rename). */
int runtime_read_config(const char *bundle, json_t **config, struct gpulet_error *err);
int runtime_write_config(const char *bundle, json_t *config, struct gpulet_error *err);

/* ---- engine configuration: `gpulet runtime configure` adds an "nvidia"
 * runtime that runs gpulet-runtime to Docker's daemon.json, as a CRI-O
 * drop-in, or as a containerd drop-in imported by the main config —
 * keeping every other setting, idempotent, with a backup of what it
 * changes, refusing to touch a file it cannot parse. ---- */

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

/* ---- host installation: `gpulet runtime install` copies a gpulet bundle
 * (bin/ and lib/ of a folder such as the image's /usr/local/gpulet: the
 * programs, their libraries and glibc's loader) to a folder on the host,
 * so the engine can run gpulet-runtime whatever glibc the host has.
 * Libraries go first, then programs; each file is replaced atomically and
 * a file already identical is left alone. ---- */

/* *changed tells whether any file was written; one line per file goes to
 * out. */
int runtime_install(const char *from, const char *to, bool *changed, FILE *out,
                    struct gpulet_error *err);

#endif
