/*
 * simroot: the private folder of a simulated node (`gpulet --simulate`).
 *
 * Trying gpulet must change nothing on the machine: under --simulate every
 * path gpulet would write on a real node (the NFD labels file, the device
 * plugin's sockets, its state folder) defaults to a folder of its own,
 * $TMPDIR/gpulet-simulate-XXXXXX (mode 0700), made when first needed (a
 * command that writes nothing makes none) and removed with all it holds
 * when gpulet exits; one left by a killed gpulet goes at the next
 * --simulate start (simroot_sweep). simroot_driver() fills it with a simulated driver
 * root made from the inventory, as a real driver installs one: the
 * libraries (files named by the driver version, their soname links and an
 * ld cache), the tools, the GSP firmware, the device nodes (character
 * devices where this process may make them, else empty files) and the MIG
 * capability minors. `cdi generate` and `doctor` read it as they read "/".
 */
#ifndef GPULET_SIMROOT_H
#define GPULET_SIMROOT_H

#include <limits.h>
#include <stdbool.h>
#include <stddef.h>

#include "error/error.h"
#include "gpu/gpu.h"

struct simroot {
    char dir[PATH_MAX]; /* the private folder; "" until made */
};

/* The private folders' names in $TMPDIR: gpulet's, and the simulated
 * NVML's sysfs tree. Both hold an owner mark (owner.h). */
#define SIMROOT_PREFIX "gpulet-simulate-"
#define SIMROOT_SYSFS_PREFIX "gpulet-sim-sysfs-"
#define SIMROOT_SWEEP_ENTRIES 100000 /* of $TMPDIR read by one sweep */

/* Removes the private folders in $TMPDIR that a --simulate process killed
 * before its cleanup (SIGKILL, a crash) left: those whose owner mark says
 * their maker is gone, only this user's, no link followed. */
void simroot_sweep(void);

/* dir/rel into out, after making the private folder (in $TMPDIR, else
 * /tmp) if it is not there yet, and dir/rel (and its parents) when folder
 * is true, or the folder that holds it when false. */
int simroot_path(struct simroot *s, const char *rel, bool folder, char *out, size_t len,
                 struct gpulet_error *err);

/* Generates the simulated driver root dir/driver for inv's driver version,
 * GPUs and MIG devices; its path into out. */
int simroot_driver(struct simroot *s, const struct gpu_inventory *inv, char *out, size_t len,
                   struct gpulet_error *err);

/* Removes the private folder and everything in it (sockets a daemon left
 * included), and logs a warning naming it when something stays; nothing
 * when it was never made. */
void simroot_remove(struct simroot *s);

#endif
