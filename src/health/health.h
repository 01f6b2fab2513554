/*
 * health: watches the GPUs and says when a device turns unhealthy or well
 * again.
 *
 * A thread of its own waits on NVML events (XidCriticalError, and ECC
 * where supported) and checks every half second that each GPU still
 * answers (GPU_IS_LOST means it fell off the bus). It posts what it sees
 * to the event loop through a pipe; on the loop, the policy decides:
 *
 *  - a critical XID not in the ignored set makes the GPU, or the MIG device
 *    the event names by GPU / compute instance, unhealthy;
 *  - a lost GPU is unhealthy until it answers again;
 *  - beyond NVIDIA's plugin, a device that answers normally and sees no new
 *    critical XID for the recovery period is healthy again.
 *
 * Ignored XIDs: 13, 31, 43, 45, 68, 109 by default (application errors).
 * DP_DISABLE_HEALTHCHECKS=all turns everything off, =xids the XID events
 * only, a list of numbers ignores those too; DP_ENABLE_HEALTHCHECKS=all or
 * a list takes XIDs out of the ignored set again.
 */
#ifndef GPULET_HEALTH_H
#define GPULET_HEALTH_H

#include <stdbool.h>

#include <event2/event.h>

#include "error/error.h"
#include "gpu/gpu.h"
#include "nvml/nvml.h"

struct health;

/* mig = -1: the whole GPU. reason: why, for the log. */
typedef void (*health_change_fn)(unsigned int gpu, int mig, bool healthy, const char *reason,
                                 void *user);

/* Every XID event, ignored or not (the metrics count them). */
typedef void (*health_xid_fn)(unsigned int gpu, unsigned long long xid, void *user);

struct health_options {
    health_xid_fn on_xid; /* may be NULL */
    const char *disable; /* DP_DISABLE_HEALTHCHECKS, may be NULL */
    const char *enable;  /* DP_ENABLE_HEALTHCHECKS, may be NULL */
    long recovery_ms;    /* 0: never recover (NVIDIA's behaviour) */
};

int health_start(struct event_base *base, struct nvml *nvml, const struct gpu_inventory *inv,
                 const struct health_options *opts, health_change_fn on_change, void *user,
                 struct health **out, struct gpulet_error *err);
/* Calls on_change for every device now unhealthy, with the reason it
 * went unhealthy (after the plugin was rebuilt, say). */
void health_replay(struct health *h);
/* Stops the thread (within a fraction of a second) and frees everything. */
void health_stop(struct health *h);

/* Whether an XID counts against a GPU under these options (for tests). */
int health_parse_options(const struct health_options *opts, bool *xids_on, bool *all_on,
                         bool ignored[1024], struct gpulet_error *err);

#endif
