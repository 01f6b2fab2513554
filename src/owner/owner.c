#include "owner.h"

#include <dirent.h>
#include <errno.h>
#include <fcntl.h>
#include <ftw.h>
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include "fileio/fileio.h"
#include "log/log.h"

#define MARK_MAX 256
#define SWEEP_BATCH 64 /* folders removed per sweep: the rest go next time */

struct mark {
    char boot[40];
    unsigned long long pidns;
    long pid;
    unsigned long long start;
};

/* A small file at dirfd/path into buf; no link followed, only a regular
 * file (a FIFO put in its place does not block). */
static bool read_small(int dirfd, const char *path, char *buf, size_t len)
{
    int fd = openat(dirfd, path, O_RDONLY | O_NOFOLLOW | O_NONBLOCK | O_CLOEXEC);
    if (fd < 0)
        return false;
    struct stat st;
    ssize_t n = -1;
    if (fstat(fd, &st) == 0 && S_ISREG(st.st_mode) && (size_t)st.st_size < len)
        n = read(fd, buf, len - 1);
    close(fd);
    if (n < 0)
        return false;
    buf[n] = '\0';
    return true;
}

/* Field 22 of /proc/PID/stat: when the process started, in clock ticks
 * since boot; with the PID it names one process for the whole boot. */
static bool start_time(long pid, unsigned long long *out)
{
    char path[64], text[1024];
    snprintf(path, sizeof path, "/proc/%ld/stat", pid);
    if (!read_small(AT_FDCWD, path, text, sizeof text))
        return false;
    const char *p = strrchr(text, ')'); /* the name may hold spaces and ')' */
    if (p == NULL)
        return false;
    p++;
    for (int field = 3; field < 22 && p; field++)
        p = strchr(p + 1, ' ');
    return p && sscanf(p, " %llu", out) == 1;
}

static bool this_process(struct mark *m)
{
    struct stat ns;
    if (!read_small(AT_FDCWD, "/proc/sys/kernel/random/boot_id", m->boot, sizeof m->boot) ||
        stat("/proc/self/ns/pid", &ns) != 0)
        return false;
    m->boot[strcspn(m->boot, "\n")] = '\0';
    m->pidns = (unsigned long long)ns.st_ino;
    m->pid = (long)getpid();
    return start_time(m->pid, &m->start);
}

int owner_mark(const char *dir, struct gpulet_error *err)
{
    struct mark me;
    if (!this_process(&me))
        return gpulet_error_set(err, GPULET_ERR_SYSTEM, "cannot tell this process's boot, PID "
                                "namespace and start time from /proc, to mark %s", dir);
    char path[4200], text[MARK_MAX];
    snprintf(path, sizeof path, "%s/" OWNER_MARK, dir);
    int n = snprintf(text, sizeof text, "gpulet-owner v1 boot=%s pidns=%llu pid=%ld start=%llu\n",
                     me.boot, me.pidns, me.pid, me.start);
    return fileio_replace(path, text, (size_t)n, FILEIO_PRIVATE, err);
}

/* Gone: a mark of another boot, or of this PID namespace naming a PID that
 * no longer runs, or runs a process started at another time. */
static bool maker_gone(int dirfd, const struct mark *now, long *pid)
{
    char text[MARK_MAX];
    struct mark m;
    if (!read_small(dirfd, OWNER_MARK, text, sizeof text) ||
        sscanf(text, "gpulet-owner v1 boot=%39s pidns=%llu pid=%ld start=%llu", m.boot, &m.pidns,
               &m.pid, &m.start) != 4 ||
        m.pid <= 0)
        return false;
    *pid = m.pid;
    if (strcmp(m.boot, now->boot) != 0)
        return true;
    if (m.pidns != now->pidns || m.pid == now->pid)
        return false;
    unsigned long long start;
    if (!start_time(m.pid, &start))
        return errno == ENOENT;
    return start != m.start;
}

static int remove_one(const char *path, const struct stat *st, int type, struct FTW *ftw)
{
    (void)st, (void)type, (void)ftw;
    remove(path);
    return 0;
}

size_t owner_sweep(const char *parent, const char *const *prefixes, size_t max_entries)
{
    struct mark now;
    if (!this_process(&now))
        return 0;
    int pfd = open(parent, O_RDONLY | O_DIRECTORY | O_CLOEXEC);
    DIR *dir = pfd < 0 ? NULL : fdopendir(pfd);
    if (dir == NULL) {
        if (pfd >= 0)
            close(pfd);
        return 0;
    }
    char names[SWEEP_BATCH][NAME_MAX + 1];
    long pids[SWEEP_BATCH];
    size_t n = 0, seen = 0;
    struct dirent *e;
    while (n < SWEEP_BATCH && seen++ < max_entries && (e = readdir(dir)) != NULL) {
        bool named = false;
        for (const char *const *p = prefixes; *p && !named; p++)
            named = strncmp(e->d_name, *p, strlen(*p)) == 0;
        struct stat st;
        if (!named || fstatat(pfd, e->d_name, &st, AT_SYMLINK_NOFOLLOW) != 0 ||
            !S_ISDIR(st.st_mode) || st.st_uid != geteuid() || (st.st_mode & 07777) != 0700)
            continue;
        int fd = openat(pfd, e->d_name, O_RDONLY | O_DIRECTORY | O_NOFOLLOW | O_CLOEXEC);
        if (fd < 0)
            continue;
        if (maker_gone(fd, &now, &pids[n]))
            snprintf(names[n++], sizeof names[0], "%s", e->d_name);
        close(fd);
    }
    closedir(dir);
    for (size_t i = 0; i < n; i++) {
        char path[8192];
        struct stat st;
        snprintf(path, sizeof path, "%s/%s", parent, names[i]);
        /* Depth first, links not followed, never across a mount point. */
        nftw(path, remove_one, 16, FTW_DEPTH | FTW_PHYS | FTW_MOUNT);
        if (lstat(path, &st) == 0)
            log_warn("cannot remove a private folder its maker left (a mount in it?): remove it "
                     "by hand", "folder=%s maker_pid=%ld", path, pids[i]);
        else
            log_info("private folder removed: its maker is gone", "folder=%s maker_pid=%ld",
                     path, pids[i]);
    }
    return n;
}
