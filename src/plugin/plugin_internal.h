/* Inside the plugin module: the pure functions the servers use (the wire
 * side of the devices model), exposed for the unit tests. */
#ifndef GPULET_PLUGIN_INTERNAL_H
#define GPULET_PLUGIN_INTERNAL_H

#include <time.h>

#include "deviceplugin/v1beta1/api.pb-c.h"
#include "gpulet/v1/status.pb-c.h"
#include "devices/devices.h"
#include "plugin.h"

/* One container's answer to Allocate: devices_prepare's edits, with the
 * slices' limits granted (plugin_slice_grant), encoded. -1 with
 * GPULET_ERR_INPUT for a request the kubelet should not have made
 * (unknown ID, too many shared). */
int plugin_allocate_container(const struct devices_pool *r, const struct config *cfg,
                              char *const *ids, size_t n_ids, unsigned long serial,
                              struct arena *a, V1beta1__ContainerAllocateResponse *out,
                              struct gpulet_error *err);

#define PLUGIN_ALLOC_IDS 1024 /* device IDs kept per allocation folder */
#define ALLOCDIR_MAX 4096     /* allocation folders at once */
#define PLUGIN_ALLOC_GRACE_S 60 /* a folder this young is kept, listed or not */

/* A sliced container's folder <state_dir>/alloc/<random id>/: limits and
 * ld.so.preload (the given texts), devices ("resource NAME" then one ID a
 * line) and state/ (mode 0777). Folders of the same resource holding any
 * of these IDs are removed first: the kubelet has taken them back. dir
 * receives the folder's path. */
int allocdir_create(const char *state_dir, const char *resource, char *const *ids, size_t n,
                    const char *limits, const char *preload, char *dir, size_t len,
                    struct gpulet_error *err);
/* Takes <state_dir>/alloc/<id> out of use at once (a rename to a hidden
 * name); allocdir_reap removes it later. -1 (logged) when it could not. */
int allocdir_remove(const char *state_dir, const char *id);
/* Removes what allocdir_remove moved aside, without following links and
 * with bounded depth. A container can fill its state/ folder with
 * millions of entries, and removing a large folder costs time in the
 * kernel no pass can split (an ext4 rmdir reads every block the folder
 * ever had), so the removal runs on a thread of its own, never on the
 * event loop; each pass goes on where the last stopped. */
struct allocdir_reaper;
struct allocdir_reaper *allocdir_reaper_new(const char *state_dir); /* NULL: no memory */
/* Stops the thread (within one pass) if started, then frees. */
void allocdir_reaper_free(struct allocdir_reaper *r);
/* The thread: after each kick, passes until nothing is left (logged). */
int allocdir_reaper_start(struct allocdir_reaper *r);
void allocdir_reaper_kick(struct allocdir_reaper *r);
/* One pass of about budget_us of wall time (at least one step), as the
 * thread runs them. 0: nothing is left; 1: more is; -1: nothing is left
 * but what could not be removed (the rest was). *removed: the entries
 * this pass removed. */
int allocdir_reap(struct allocdir_reaper *r, long budget_us, size_t *removed);
/* held: who holds a device (NULL: nobody); kept: called for each folder
 * whose devices someone holds, with the folder's path and devices. */
struct allocdir_visitor {
    const void *(*held)(const char *resource, const char *id, void *user);
    void (*kept)(const char *dir, const char *resource, char *const *ids, size_t n,
                 const void *holder, void *user);
    void *user;
};
/* Removes the folders at least min_age seconds old whose devices nobody
 * holds any more (a batch of 64 per call). Returns how many it removed. */
size_t allocdir_prune(const char *state_dir, const struct allocdir_visitor *v, time_t now,
                      time_t min_age);
/* The resource and device IDs (strdup'ed, at most max_ids) of a folder. */
int allocdir_read_devices(const char *state_dir, const char *id, char *resource, size_t len,
                          char **ids, size_t *n_ids, size_t max_ids);

/* gpulet's Status answer for a resource (see proto/gpulet/v1). */
void plugin_status(const struct devices_pool *r, bool registered, unsigned streams,
                   const char *problem, struct arena *a, Gpulet__V1__StatusResponse *out);

/* The ListAndWatch message for a resource. */
void plugin_device_list(const struct devices_pool *r, struct arena *a,
                        V1beta1__ListAndWatchResponse *out);

#endif
