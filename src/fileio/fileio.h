/*
 * fileio: reading a whole file, replacing a file atomically, and creating
 * a folder with its parents.
 *
 * Readers of the files gpulet writes (NFD reading node labels, containerd
 * and podman reading CDI specs and their own configuration, an OCI runtime
 * reading config.json) must see the old content or the new one, never a
 * half-written file. fileio_replace() writes a hidden temporary file beside
 * the target (or, for a target in a drop-in folder, in the folder above),
 * then renames it over the target; on any failure the temporary file is
 * removed and the target is left as it was.
 */
#ifndef GPULET_FILEIO_H
#define GPULET_FILEIO_H

#include <stdbool.h>
#include <stddef.h>
#include <sys/types.h>

#include "error/error.h"

enum fileio_flags {
    /* fsync the file and its folder: the new content survives a power
     * loss. Files that do not outlive the node (a bundle's config.json)
     * skip it, since it costs milliseconds on a busy disk. */
    FILEIO_DURABLE = 1u << 0,
    /* Mode 0600 instead of 0644. */
    FILEIO_PRIVATE = 1u << 1,
    /* Mode 0755: a program. */
    FILEIO_EXECUTABLE = 1u << 2,
    /* The target's folder may be a drop-in folder (its name ends in ".d":
     * CRI-O's crio.conf.d, containerd's conf.d), whose every file the
     * engine loads: the temporary file goes in the folder above, which
     * must be on the same filesystem. */
    FILEIO_OUTSIDE_DROP_IN = 1u << 3,
};

/* The mode and owner a replaced file gets (uid or gid (uid_t)-1 / (gid_t)-1:
 * the writer's), where the flags' modes will not do: an engine's
 * configuration keeps the mode and owner it had. */
struct fileio_owner {
    mode_t mode;
    uid_t uid;
    gid_t gid;
};

/* Reads the whole of path into *data (malloc'ed, NUL-terminated, *len
 * bytes before the NUL). A file larger than max bytes is an error, so a
 * wrong path cannot make gpulet read a disk image. On failure err says
 * "cannot read PATH: reason" with errno kept (ENOENT: no such file).
 * Only regular files: a FIFO, socket or device is refused without
 * waiting on it, so a hostile path cannot block or flood the reader. */
int fileio_read(const char *path, size_t max, char **data, size_t *len,
                struct gpulet_error *err);

/* Replaces path with len bytes of data. The folder must exist. */
int fileio_replace(const char *path, const char *data, size_t len, unsigned flags,
                   struct gpulet_error *err);
/* The same, the file getting owner's mode and owner. */
int fileio_replace_owned(const char *path, const char *data, size_t len, unsigned flags,
                         const struct fileio_owner *owner, struct gpulet_error *err);
/* Whether dir (a path, no trailing slash) names a drop-in folder. */
bool fileio_is_drop_in_dir(const char *dir);
/* The folder of path's temporary file under FILEIO_OUTSIDE_DROP_IN:
 * path's folder, or the folder above when that is a drop-in folder. */
void fileio_work_dir(const char *path, char *out, size_t len);

/* Creates the folder dir and any missing parents (mkdir -p). Folders it
 * creates get exactly these modes, whatever the umask: parents_mode for
 * the parents, mode for dir itself; folders already there are left as
 * they are. Fails (ENOTDIR) when a part of the path is not a folder. */
int fileio_mkdirs(const char *dir, mode_t parents_mode, mode_t mode, struct gpulet_error *err);

#endif
