/*
 * cdi: Container Device Interface specs for the node's GPUs.
 *
 * cdi_spec_build() describes, as kind nvidia.com/gpu, a device per GPU (by
 * index and by UUID), per MIG device (by "gpu:mig" and by UUID) and "all"
 * (every node of all of them), and the edits every GPU container needs:
 * the control device nodes; the driver's libraries as NVIDIA's toolkit
 * picks them (every file ending in the driver version beside libcuda,
 * which the driver root's ld cache locates), mounted also at their soname
 * links and at the links NVIDIA's hooks would create; the graphics
 * configuration files, tools, GSP firmware and IPC sockets; and a hook
 * that updates the container's ld cache, CUDA forward compatibility
 * included. Output is sorted and deterministic; cdi_spec_write() writes
 * YAML or JSON atomically.
 */
#ifndef GPULET_CDI_H
#define GPULET_CDI_H

#include <jansson.h>

#include "error/error.h"
#include "gpu/gpu.h"

#define CDI_KIND "nvidia.com/gpu"
#define CDI_VERSION "0.5.0" /* device names start with a digit; hostPath */
/* The whole environment of every hook gpulet puts in a spec or a
 * config.json. A hook without one is run by runc with the container's
 * environment, LD_PRELOAD included, as root on the host. */
#define CDI_HOOK_ENV "PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin"

struct cdi_options {
    const char *driver_root; /* where the driver's files are, "/" by default */
    const char *dev_root;    /* where the device nodes are, the driver root by default */
    const char *hook_path;   /* gpulet-hook, for the ld cache; NULL: no hook */
    /* Where the host has what gpulet sees under the driver and device
     * roots, when it sees them elsewhere (a container given the host's /
     * at /host): the spec's host paths are under it. NULL: those roots. */
    const char *host_root;
};

/* Whether opts->hook_path, a path as the host's container runtime runs
 * it, is a program there: looked at under the driver root when host_root
 * says gpulet sees the host elsewhere. -1 with why when it is not; a spec
 * naming it would make every container that asks for a GPU fail to start. */
int cdi_hook_check(const struct cdi_options *opts, struct gpulet_error *err);

/* The control nodes every GPU container gets (gpu_control_nodes, in that
 * order) that exist under root ("/" or NULL: the host's /dev): at most
 * CDI_CONTROL_NODES_MAX, NULL-terminated in found. Returns how many. A
 * driver without nvidia-modeset or UVM loaded lacks some of them. */
#define CDI_CONTROL_NODES_MAX 8
size_t cdi_control_nodes(const char *root, const char *found[CDI_CONTROL_NODES_MAX + 1]);

/* A new JSON object holding the spec. */
int cdi_spec_build(const struct gpu_inventory *inv, const struct cdi_options *opts,
                   json_t **out, struct gpulet_error *err);

/* One device of a per-claim spec (DRA): its name in the spec and the GPU
 * (an inventory index) or MIG device (mig >= 0) whose nodes it gets. */
struct cdi_claim_device {
    const char *name;
    unsigned int gpu;
    int mig;
};

/* A spec of the given kind holding only these devices, with the same
 * common edits as cdi_spec_build's. */
int cdi_claim_spec_build(const struct gpu_inventory *inv, const struct cdi_options *opts,
                         const char *kind, const struct cdi_claim_device *devs, size_t n,
                         json_t **out, struct gpulet_error *err);

enum cdi_format { CDI_YAML, CDI_JSON };

/* path NULL: standard output. Else a temporary file, fsync, rename. */
int cdi_spec_write(json_t *spec, enum cdi_format format, const char *path,
                   struct gpulet_error *err);

/* The libraries the driver root's ld cache lists whose name starts with
 * prefix: soname and resolved path pairs. For tests and doctor. */
struct ldcache_entry {
    int flags;          /* the cache's: ELF class and architecture */
    char soname[256];
    char path[4096]; /* as the cache says, without the root */
};
int ldcache_read(const char *root, struct ldcache_entry **out, size_t *count,
                 struct gpulet_error *err);

/* Writes root/etc/ld.so.cache listing these count entries (x86-64 ELF
 * libraries), as ldconfig -r root would: the simulated driver root's. */
int ldcache_write(const char *root, const struct ldcache_entry *entries, size_t count,
                  struct gpulet_error *err);

#endif
