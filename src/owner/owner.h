/*
 * owner: which process made a temporary folder, so that a later run can
 * remove one whose maker died without cleaning up (SIGKILL, a crash).
 *
 * `gpulet --simulate` and the simulated NVML make private folders in
 * $TMPDIR and remove them at exit; a process that cannot run its exit code
 * leaves them. Each such folder holds a mark (.gpulet-owner): the boot, the
 * PID namespace, the PID and the start time of its maker. owner_sweep
 * removes the folders of a given name whose mark says their maker is gone:
 * only folders of this user, mode 0700, with a mark; never a link followed
 * nor a mount crossed; a maker in another PID namespace, which this one
 * cannot see, is never judged gone.
 */
#ifndef GPULET_OWNER_H
#define GPULET_OWNER_H

#include <stddef.h>

#include "error/error.h"

#define OWNER_MARK ".gpulet-owner"

/* Writes dir/OWNER_MARK naming this process. */
int owner_mark(const char *dir, struct gpulet_error *err);

/* Removes the folders in parent whose names start with one of prefixes
 * (NULL-terminated) and whose makers are gone; reads at most max_entries
 * entries of parent. Logs each folder removed; returns how many. */
size_t owner_sweep(const char *parent, const char *const *prefixes, size_t max_entries);

#endif
