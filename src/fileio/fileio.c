#include "fileio/fileio.h"

#include <errno.h>
#include <fcntl.h>
#include <libgen.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

int fileio_read(const char *path, size_t max, char **data, size_t *len,
                struct gpulet_error *err)
{
    *data = NULL;
    *len = 0;
    /* O_NONBLOCK: opening a FIFO put where a file should be must not
     * wait for a writer; it is refused below, as is every other file that
     * is not a regular one (a device could be read forever). */
    int fd = open(path, O_RDONLY | O_NONBLOCK | O_CLOEXEC);
    if (fd < 0)
        return gpulet_error_errno(err, errno, "cannot read %s", path);
    struct stat st;
    if (fstat(fd, &st) != 0) {
        int e = errno;
        close(fd);
        return gpulet_error_errno(err, e, "cannot read %s", path);
    }
    if (!S_ISREG(st.st_mode)) {
        close(fd);
        if (S_ISDIR(st.st_mode))
            return gpulet_error_errno(err, EISDIR, "cannot read %s", path);
        return gpulet_error_set(err, GPULET_ERR_INPUT,
                                "cannot read %s: not a regular file (a FIFO, socket or device?)",
                                path);
    }
    /* st_size is a hint only: files in /proc say 0. Room for the
     * file, the read that sees its end, and the NUL: no growing when the
     * hint is right. */
    int e = st.st_size > 0 && (size_t)st.st_size > max ? EFBIG : 0;
    size_t cap = (st.st_size > 0 ? (size_t)st.st_size : 4096) + 2, used = 0;
    char *buf = e ? NULL : malloc(cap);
    if (e == 0 && buf == NULL)
        e = ENOMEM;
    while (e == 0) {
        if (used + 1 == cap) { /* full: grow, within the limit */
            char *grown = used > max ? NULL : realloc(buf, cap * 2);
            if (grown == NULL) {
                e = used > max ? EFBIG : ENOMEM;
                break;
            }
            buf = grown;
            cap *= 2;
        }
        ssize_t n = read(fd, buf + used, cap - used - 1);
        if (n < 0 && errno == EINTR)
            continue;
        if (n <= 0) {
            e = n < 0 ? errno : 0;
            break;
        }
        used += (size_t)n;
    }
    close(fd);
    if (e == 0 && used > max)
        e = EFBIG;
    if (e != 0) {
        free(buf);
        if (e == EFBIG)
            return gpulet_error_set(err, GPULET_ERR_INPUT,
                                    "cannot read %s: larger than %zu bytes; is it the right file?",
                                    path, max);
        return gpulet_error_errno(err, e, "cannot read %s", path);
    }
    buf[used] = '\0';
    *data = buf;
    *len = used;
    return 0;
}

static int write_all(int fd, const char *data, size_t len)
{
    while (len > 0) {
        ssize_t n = write(fd, data, len);
        if (n < 0) {
            if (errno == EINTR)
                continue;
            return -1;
        }
        data += n;
        len -= (size_t)n;
    }
    return 0;
}

bool fileio_is_drop_in_dir(const char *dir)
{
    size_t n = strlen(dir);
    return n >= 2 && strcmp(dir + n - 2, ".d") == 0;
}

void fileio_work_dir(const char *path, char *out, size_t len)
{
    char copy[4096];
    snprintf(copy, sizeof copy, "%s", path);
    char *dir = dirname(copy);
    if (fileio_is_drop_in_dir(dir)) {
        char up[4096];
        snprintf(up, sizeof up, "%s", dir);
        snprintf(out, len, "%s", dirname(up));
    } else {
        snprintf(out, len, "%s", dir);
    }
}

int fileio_replace_owned(const char *path, const char *data, size_t len, unsigned flags,
                         const struct fileio_owner *owner, struct gpulet_error *err)
{
    if (strlen(path) >= 4096)
        return gpulet_error_set(err, GPULET_ERR_USAGE, "%.64s...: the path is too long", path);
    char dir_copy[4096], tmp_dir[4096], base_copy[4096];
    snprintf(dir_copy, sizeof dir_copy, "%s", path);
    const char *dir = dirname(dir_copy);
    if (flags & FILEIO_OUTSIDE_DROP_IN)
        fileio_work_dir(path, tmp_dir, sizeof tmp_dir);
    else
        snprintf(tmp_dir, sizeof tmp_dir, "%s", dir);
    snprintf(base_copy, sizeof base_copy, "%s", path);
    /* A dot name, so directory watchers that skip hidden files (NFD, the
     * CDI cache) never read the file being written. A random name, created
     * exclusively (mode 0600, never through a link): one derived from the
     * pid, left behind by a run killed mid-write, blocked every later run
     * with that pid (PID 1 in a container is every run). */
    char tmp[8400];
    snprintf(tmp, sizeof tmp, "%s/.%s.gpulet-XXXXXX", tmp_dir, basename(base_copy));
    mode_t mode = owner                         ? owner->mode
                  : (flags & FILEIO_PRIVATE)    ? 0600
                  : (flags & FILEIO_EXECUTABLE) ? 0755
                                                : 0644;
    int fd = mkostemp(tmp, O_CLOEXEC);
    if (fd < 0)
        return gpulet_error_errno(err, errno, "cannot create a temporary file in %s to write %s",
                                  tmp_dir, path);
    /* fchmod: open() applied the umask; the file gets the mode asked for.
     * The size is checked: a short write on a full disk must not replace
     * a whole file with part of one. */
    struct stat st;
    int e = 0;
    if (write_all(fd, data, len) != 0 ||
        (owner && fchown(fd, owner->uid, owner->gid) != 0) || fchmod(fd, mode) != 0 ||
        ((flags & FILEIO_DURABLE) && fsync(fd) != 0) || fstat(fd, &st) != 0)
        e = errno;
    else if ((size_t)st.st_size != len)
        e = EIO;
    if (close(fd) != 0 && e == 0)
        e = errno;
    if (e != 0) {
        unlink(tmp);
        return gpulet_error_errno(err, e, "cannot write %s", tmp);
    }
    if (rename(tmp, path) != 0) {
        e = errno;
        unlink(tmp);
        if (e == EXDEV)
            return gpulet_error_errno(err, e,
                                      "cannot replace %s: its temporary file in %s is on another "
                                      "filesystem (mount the folder above the drop-in folder, "
                                      "not the folder alone)",
                                      path, tmp_dir);
        return gpulet_error_errno(err, e, "cannot replace %s", path);
    }
    if (flags & FILEIO_DURABLE) {
        int dfd = open(dir, O_RDONLY | O_DIRECTORY | O_CLOEXEC);
        if (dfd >= 0) {
            fsync(dfd);
            close(dfd);
        }
    }
    return 0;
}

int fileio_replace(const char *path, const char *data, size_t len, unsigned flags,
                   struct gpulet_error *err)
{
    return fileio_replace_owned(path, data, len, flags, NULL, err);
}

static int mkdir_one(const char *path, mode_t mode, struct gpulet_error *err)
{
    if (mkdir(path, mode) == 0) {
        /* mkdir() applied the umask; the folder gets the mode asked for. */
        if (chmod(path, mode) != 0)
            return gpulet_error_errno(err, errno, "cannot set the mode of %s", path);
        return 0;
    }
    struct stat st;
    if (errno == EEXIST && stat(path, &st) == 0 && S_ISDIR(st.st_mode))
        return 0;
    return gpulet_error_errno(err, errno == EEXIST ? ENOTDIR : errno,
                              "cannot create the folder %s", path);
}

int fileio_mkdirs(const char *dir, mode_t parents_mode, mode_t mode, struct gpulet_error *err)
{
    char path[4096];
    if ((size_t)snprintf(path, sizeof path, "%s", dir) >= sizeof path)
        return gpulet_error_set(err, GPULET_ERR_USAGE, "the folder name %.64s... is too long",
                                dir);
    size_t len = strlen(path);
    while (len > 1 && path[len - 1] == '/')
        path[--len] = '\0';
    for (char *p = path + 1; *p; p++) {
        if (*p != '/' || p[-1] == '/')
            continue;
        *p = '\0';
        int rc = mkdir_one(path, parents_mode, err);
        *p = '/';
        if (rc < 0)
            return -1;
    }
    return mkdir_one(path, mode, err);
}
