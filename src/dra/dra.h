/*
 * dra: gpulet as a Kubernetes DRA driver (gpu.nvidia.com), the second
 * front end beside the device plugin.
 *
 * Kubelet side: the DRA service (dra/v1 and v1beta1, the same messages) on
 * <kubelet root>/plugins/gpu.nvidia.com/dra.sock and, once that listens,
 * the registration socket <kubelet root>/plugins_registry/
 * gpu.nvidia.com-reg.sock (made again when it disappears).
 * NodePrepareResources reads each claim from the API server without
 * blocking the loop, checks its UID and that its devices are this node's,
 * writes one CDI spec per claim (kind k8s.gpu.nvidia.com/claim, atomically)
 * and answers with the CDI device ids; NodeUnprepareResources removes the
 * spec. Both are idempotent: prepared claims are kept in a checkpoint
 * under the state folder, so retries, kubelet restarts and gpulet restarts
 * get the same answer without asking the API server again.
 *
 * API server side: the node's devices are published as ResourceSlices
 * (resource.k8s.io/v1, one pool named after the node, devices named and
 * described as NVIDIA's DRA driver does), watched, and published again when
 * they are deleted (every kubelet start deletes them) or when the devices
 * change (health). Failures are retried with backoff; the device plugin
 * and the metrics do not depend on any of this.
 */
#ifndef GPULET_DRA_H
#define GPULET_DRA_H

#include <stdbool.h>

#include <event2/event.h>

#include "cdi/cdi.h"
#include "config/config.h"
#include "devices/devices.h"
#include "error/error.h"
#include "gpu/gpu.h"
#include "kube/kube.h"

#define DRA_DRIVER "gpu.nvidia.com"
#define DRA_DEFAULT_KUBELET_ROOT "/var/lib/kubelet"
#define DRA_DEFAULT_CDI_ROOT "/var/run/cdi"
#define DRA_CDI_KIND "k8s.gpu.nvidia.com/claim"

struct dra_options {
    const char *kubelet_root;
    const char *node_name;
    const struct kube_config *kube; /* the API server */
    const char *state_dir;          /* the checkpoint's folder */
    const char *cdi_root;           /* where the per-claim specs go */
    const char *sysfs;              /* "/sys" unless testing */
    struct cdi_options cdi;         /* for the specs' edits */
    const struct config *cfg;       /* dra.gpus: which GPUs are DRA's; NULL: all */
    struct devices_health *health;  /* subscribed to until dra_free; outlives the driver */
};

struct dra;

/* A device's name in the ResourceSlice, as NVIDIA's driver names it:
 * "gpu-<minor>" for a GPU (mig -1), "gpu-<minor>-mig-<profile>-<profile
 * id>-<placement>" for its MIG device number mig. */
void dra_device_name(const struct gpu_device *g, int mig, char *buf, size_t len);

/* inv must outlive the driver. */
int dra_start(struct event_base *base, const struct dra_options *opts,
              const struct gpu_inventory *inv, struct dra **out, struct gpulet_error *err);
/* A GPU (mig -1) or MIG device became healthy or not: it leaves or joins
 * the published slice. The driver hears this through options' health. */
void dra_set_health(struct dra *d, unsigned int gpu, int mig, bool healthy);
/* Ends open calls (UNAVAILABLE), removes both sockets (the kubelet
 * unregisters the driver) and stops publishing; the slices stay, for the
 * kubelet to remove 30 s after the driver unregistered. */
void dra_free(struct dra *d);

#endif
