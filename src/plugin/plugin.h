/*
 * plugin: the kubelet device plugin (API v1beta1) for NVIDIA GPUs.
 *
 * It serves the pools of the devices catalog (see devices/devices.h:
 * nvidia.com/gpu, nvidia.com/mig-<profile>, names by model, shared
 * replicas, renamed resources) on one socket per resource in the
 * device-plugin directory, registers each with the kubelet without
 * blocking the loop, streams device lists (ListAndWatch) and answers Allocate,
 * GetPreferredAllocation and PreStartContainer. Each socket also serves
 * gpulet's own Status service (proto/gpulet/v1/status.proto), which
 * `gpulet doctor` calls: registered or not, the kubelet's streams, each
 * device's health and why.
 *
 * The daemon tells it when the kubelet restarted (kubelet.sock created
 * again), when one of its sockets was deleted, and when a device's health
 * changed; it re-registers, recreates and re-streams accordingly.
 */
#ifndef GPULET_PLUGIN_H
#define GPULET_PLUGIN_H

#include <stdbool.h>
#include <stddef.h>

#include <event2/event.h>

#include "config/config.h"
#include "devices/devices.h"
#include "error/error.h"
#include "gpu/gpu.h"
#include "metrics/metrics.h"
#include "podresources/v1/api.pb-c.h"

#define PLUGIN_KUBELET_SOCKET "kubelet.sock"
#define PLUGIN_DEFAULT_DIR "/var/lib/kubelet/device-plugins"

struct plugin;

/* Builds the resources and starts serving and registering them; health
 * news reaches it through health, which it subscribes to until freed
 * (a device's change streams the new list to the kubelet). The inventory
 * and health must outlive the plugin. */
int plugin_start(struct event_base *base, const char *dir, const struct config *cfg,
                 const struct gpu_inventory *inv, struct devices_health *health,
                 struct plugin **out, struct gpulet_error *err);

/* kubelet.sock appeared again: recreate missing sockets, register all. */
void plugin_kubelet_restarted(struct plugin *p);
/* A file in the directory was deleted; if it was one of our sockets,
 * serve it again and re-register that resource. */
void plugin_file_removed(struct plugin *p, const char *name);

/* Called after every successful Allocate (the metrics then ask the
 * kubelet which pod got what). */
void plugin_on_allocate(struct plugin *p, void (*fn)(void *user), void *user);

/* The kubelet's pod-resources List answered: the slice allocation
 * folders whose devices no container holds any more (and older than a
 * minute) are removed, and fn hears the limits of those still held, one
 * call per container and GPU, from its limits file, with its usage as
 * the interposer counted it in its state file (the folders are bounded,
 * so are the calls; the caller bounds what it keeps). */
void plugin_pods_listed(struct plugin *p, const V1__ListPodResourcesResponse *resp,
                        void (*fn)(const struct metrics_limit *l, void *user), void *user);

/* State files of the interposer that could not be read, over one
 * listing: counted, the first named, logged once. */
struct plugin_slice_problems {
    size_t unusable;
    char first[300];
};
/* A slice folder's limits and usage (dir: one plugin_slice_grant made),
 * GPU by GPU to fn, named by the pod and container holding it. gpus: the
 * folder's GPUs (inventory indexes), each once, in any order: sorted here
 * into the folder's ordinals, index order as the grant numbered them.
 * Nothing when the folder has no limits file the interposer would read. */
void plugin_slice_report(const struct gpu_inventory *inv, const char *dir, unsigned int *gpus,
                         size_t n_gpus, const V1__PodResources *pod,
                         const V1__ContainerResources *container,
                         struct plugin_slice_problems *pr,
                         void (*fn)(const struct metrics_limit *l, void *user), void *user);
/* One warning line when pr counted any. */
void plugin_slice_problems_log(const struct plugin_slice_problems *pr);

/* GPU slices, whichever front end grants them (Allocate, or a DRA claim
 * consuming a GPU's memory): writes the limits the CUDA interposer reads
 * for gpus (ordinal i, in the order given) into a folder
 * <state_dir>/alloc/<id>/ for resource and device ids (see allocdir), and
 * adds to edits the limits as variables and the mounts: the interposer,
 * /etc/ld.so.preload naming it, the limits file and a state folder of the
 * container's own. context: the memory the interposer charges a CUDA
 * context (0: its default). reuse: the id of a folder made before for the same
 * grant, used again when it is still there (NULL: a new one). dir
 * receives the folder's path. */
int plugin_slice_grant(const struct config *cfg, const char *state_dir, const char *resource,
                       char *const *ids, size_t n_ids, const struct devices_slice_gpu *gpus,
                       size_t n_gpus, unsigned long long context, const char *reuse,
                       struct devices_edits *edits, char *dir, size_t len,
                       struct gpulet_error *err);

/* Takes a folder plugin_slice_grant made out of use; the reaper removes
 * it (on a thread of its own). -1 (logged) when it could not. */
struct allocdir_reaper;
int plugin_slice_release(const char *state_dir, const char *id, struct allocdir_reaper *reaper);
/* Takes any folder of state_dir's file system out of use the same way:
 * moved into <state_dir>/alloc at once, removed there by the reaper, a
 * bounded amount per pass (for folders containers can fill). 0 when path
 * is gone already. */
int plugin_slice_discard(const char *state_dir, const char *path, struct allocdir_reaper *reaper,
                         struct gpulet_error *err);
/* The reaper of <state_dir>/alloc, started; NULL when it could not be. */
struct allocdir_reaper *plugin_slice_reaper(const char *state_dir);
void plugin_slice_reaper_free(struct allocdir_reaper *r);
/* Removes the folders under <state_dir>/alloc none of whose ids held()
 * still wants, 64 at most a call. Returns how many it removed. */
size_t plugin_slice_prune(const char *state_dir, bool (*held)(const char *id, void *user),
                          void *user);

/* Resources served, for logs and tests. */
size_t plugin_resource_count(const struct plugin *p);
const char *plugin_resource_name(const struct plugin *p, size_t i);

/* Ends the streams, stops serving, removes our sockets. */
void plugin_stop(struct plugin *p);
void plugin_free(struct plugin *p);

#endif
