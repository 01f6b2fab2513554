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

#include <jansson.h>

#include "error/error.h"

#define RUNTIME_DEVICE_DIR "/var/run/nvidia-container-devices"
#define RUNTIME_DEFAULT_CDI_DIRS "/etc/cdi:/var/run/cdi"
#define RUNTIME_MAX_DEVICES 64

struct runtime_request {
    bool all;
    size_t count;
    char names[RUNTIME_MAX_DEVICES][128]; /* CDI device names: "0", "GPU-…", "1:2" */
    const char *source; /* what asked: "CDI annotation", "volume mounts", "NVIDIA_VISIBLE_DEVICES" */
};

/* Reads the request from a config.json tree, in NVIDIA's priority order:
 * CDI annotations, /var/run/nvidia-container-devices mounts, then
 * NVIDIA_VISIBLE_DEVICES. No request: count 0 and all false. */
int runtime_find_request(json_t *config, struct runtime_request *req, struct gpulet_error *err);

/* The nvidia.com/gpu CDI spec in the first of the ':'-separated folders
 * that have one (a later folder wins, as CDI says). */
int runtime_load_spec(const char *dirs, json_t **spec, char *path, size_t path_len,
                      struct gpulet_error *err);

/* Applies the spec's edits for the request to config. */
int runtime_apply(json_t *config, json_t *spec, const char *spec_path,
                  const struct runtime_request *req, struct gpulet_error *err);

/* config.json of a bundle: read (refusing symlinks) and written back
 * atomically (a new file in the bundle, fsync, rename). */
int runtime_read_config(const char *bundle, json_t **config, struct gpulet_error *err);
int runtime_write_config(const char *bundle, json_t *config, struct gpulet_error *err);

#endif
