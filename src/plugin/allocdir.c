/* The host folder of each container given slices: <state>/alloc/<id>/,
 * holding what is mounted into the container (limits, ld.so.preload, the
 * interposer's state/ folder) and, for gpulet alone, which devices it was
 * for. A folder goes when its devices are allocated again (the kubelet
 * hands out only devices no running container holds) or when the
 * kubelet's pod-resources no longer lists any of them. */
#include "plugin_internal.h"

#include <dirent.h>
#include <errno.h>
#include <fcntl.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/random.h>
#include <sys/stat.h>
#include <time.h>
#include <unistd.h>

#include "cuda/cuda_limits.h"
#include "fileio/fileio.h"
#include "log/log.h"

#define DEVICES_FILE_MAX 65536
/* The state/ folder is the container's to write: its removal is bounded
 * in depth and in time per pass, and never follows a link. */
#define REMOVE_DEPTH 8
#define DEEP_PREFIX ".deep-"
/* One pass of the reaper thread: the most a stop waits for it. */
#define REAP_PASS_US 100000

/* Where the removal stands between passes: the folders open from alloc/
 * down, so a pass goes on where the last stopped. Reading a folder from
 * its start again would scan the space of every entry already removed
 * (tens of ms for 100,000), and do so at every pass. */
struct allocdir_reaper {
    char alloc[4200];
    /* the thread, when started: work and stop are under lock */
    bool started, work, stop;
    pthread_t thread;
    pthread_mutex_t lock;
    pthread_cond_t cond;
    size_t depth; /* frames open; 0 between rounds */
    struct {
        DIR *dir;
        char name[256]; /* its name in the frame above (unused for alloc/) */
    } frame[REMOVE_DEPTH + 1];
    bool changed; /* something went since alloc/ was last read from its start */
    bool failed;  /* something could not go in this round */
};

static bool past(const struct timespec *t)
{
    struct timespec now;
    clock_gettime(CLOCK_MONOTONIC, &now);
    return now.tv_sec > t->tv_sec || (now.tv_sec == t->tv_sec && now.tv_nsec >= t->tv_nsec);
}

/* Moves parent/name to alloc/.deep-<random>, removed from there later: a
 * folder deeper than REMOVE_DEPTH (so deep nesting costs time, not a stuck
 * folder), and a folder given up (so it is never taken for a live one). */
static int move_up(int top, int parent, const char *name)
{
    unsigned char rnd[8];
    char deep[32];
    if (getrandom(rnd, sizeof rnd, 0) != (ssize_t)sizeof rnd)
        return -1;
    snprintf(deep, sizeof deep, DEEP_PREFIX "%02x%02x%02x%02x%02x%02x%02x%02x", rnd[0], rnd[1],
             rnd[2], rnd[3], rnd[4], rnd[5], rnd[6], rnd[7]);
    return renameat(parent, name, top, deep);
}

int allocdir_remove(const char *state_dir, const char *id)
{
    char alloc[4200];
    snprintf(alloc, sizeof alloc, "%s/alloc", state_dir);
    int fd = open(alloc, O_RDONLY | O_DIRECTORY | O_NOFOLLOW | O_CLOEXEC);
    int rc = fd < 0 ? -1 : move_up(fd, fd, id);
    /* The removal is part of an event its caller logs (a container or a
     * claim gone); only a failure is a line of its own. */
    if (rc < 0 && errno != ENOENT)
        log_warn("cannot remove a slice allocation folder", "dir=%s/%s error=\"%s\"", alloc, id,
                 strerror(errno));
    if (fd >= 0)
        close(fd);
    return rc < 0 && errno != ENOENT ? -1 : 0;
}

struct allocdir_reaper *allocdir_reaper_new(const char *state_dir)
{
    struct allocdir_reaper *r = calloc(1, sizeof *r);
    if (r == NULL)
        return NULL;
    snprintf(r->alloc, sizeof r->alloc, "%s/alloc", state_dir);
    pthread_mutex_init(&r->lock, NULL);
    pthread_cond_init(&r->cond, NULL);
    return r;
}

static void close_frames(struct allocdir_reaper *r)
{
    while (r->depth > 0)
        closedir(r->frame[--r->depth].dir);
}

void allocdir_reaper_free(struct allocdir_reaper *r)
{
    if (r == NULL)
        return;
    if (r->started) {
        pthread_mutex_lock(&r->lock);
        r->stop = true;
        pthread_cond_signal(&r->cond);
        pthread_mutex_unlock(&r->lock);
        pthread_join(r->thread, NULL);
    }
    close_frames(r);
    pthread_cond_destroy(&r->cond);
    pthread_mutex_destroy(&r->lock);
    free(r);
}

/* One entry of the folder open deepest: removed, opened (a new frame), or
 * moved up when the frames are all in use. */
static void reap_entry(struct allocdir_reaper *r, const char *name, size_t *removed)
{
    int parent = dirfd(r->frame[r->depth - 1].dir);
    if (unlinkat(parent, name, 0) == 0 || errno == ENOENT) {
        (*removed)++;
        r->changed = true;
        return;
    }
    if (errno != EISDIR && errno != EPERM) {
        r->failed = true; /* skipped, so it cannot hold up the rest */
        return;
    }
    if (r->depth == REMOVE_DEPTH + 1) {
        /* only a move makes a new round: one that fails cannot loop */
        if (move_up(dirfd(r->frame[0].dir), parent, name) < 0)
            r->failed = true;
        else
            r->changed = true;
        return;
    }
    int fd = openat(parent, name, O_RDONLY | O_DIRECTORY | O_NOFOLLOW | O_CLOEXEC);
    DIR *d = fd < 0 ? NULL : fdopendir(fd);
    if (d == NULL) {
        if (fd >= 0)
            close(fd);
        r->failed = true;
        return;
    }
    r->frame[r->depth].dir = d;
    snprintf(r->frame[r->depth].name, sizeof r->frame[r->depth].name, "%s", name);
    r->depth++;
}

int allocdir_reap(struct allocdir_reaper *r, long budget_us, size_t *removed)
{
    struct timespec deadline;
    clock_gettime(CLOCK_MONOTONIC, &deadline);
    deadline.tv_sec += budget_us / 1000000;
    deadline.tv_nsec += (budget_us % 1000000) * 1000;
    if (deadline.tv_nsec >= 1000000000L) {
        deadline.tv_sec++;
        deadline.tv_nsec -= 1000000000L;
    }
    *removed = 0;
    if (r->depth == 0) {
        int fd = open(r->alloc, O_RDONLY | O_DIRECTORY | O_NOFOLLOW | O_CLOEXEC);
        if (fd < 0)
            return errno == ENOENT ? 0 : -1;
        r->frame[0].dir = fdopendir(fd);
        if (r->frame[0].dir == NULL) {
            close(fd);
            return -1;
        }
        r->depth = 1;
        r->changed = r->failed = false;
    }
    /* At least one step per pass, so every pass makes progress. */
    for (bool first = true; first || !past(&deadline); first = false) {
        struct dirent *e = readdir(r->frame[r->depth - 1].dir);
        if (e == NULL && r->depth == 1) {
            /* A round ends with a reading of alloc/ from its start that
             * finds nothing to remove: what was moved there since is seen. */
            if (!r->changed) {
                bool failed = r->failed;
                close_frames(r);
                return failed ? -1 : 0;
            }
            rewinddir(r->frame[0].dir);
            r->changed = r->failed = false;
        } else if (e == NULL) {
            r->depth--;
            closedir(r->frame[r->depth].dir);
            int parent = dirfd(r->frame[r->depth - 1].dir);
            if (unlinkat(parent, r->frame[r->depth].name, AT_REMOVEDIR) == 0 || errno == ENOENT) {
                (*removed)++;
                r->changed = true;
            } else {
                r->failed = true;
            }
        } else if (strcmp(e->d_name, ".") != 0 && strcmp(e->d_name, "..") != 0 &&
                   (r->depth > 1 || strncmp(e->d_name, DEEP_PREFIX, strlen(DEEP_PREFIX)) == 0)) {
            reap_entry(r, e->d_name, removed);
        }
    }
    return 1;
}

static bool stopping(struct allocdir_reaper *r)
{
    pthread_mutex_lock(&r->lock);
    bool stop = r->stop;
    pthread_mutex_unlock(&r->lock);
    return stop;
}

/* Rounds of passes, one round per kick (kicks during a round make one
 * more), until stopped; a pass bounds how long a stop waits. */
static void *reaper_thread(void *arg)
{
    struct allocdir_reaper *r = arg;
    pthread_mutex_lock(&r->lock);
    while (!r->stop) {
        if (!r->work) {
            pthread_cond_wait(&r->cond, &r->lock);
            continue;
        }
        r->work = false;
        pthread_mutex_unlock(&r->lock);
        struct timespec t0, t1;
        clock_gettime(CLOCK_MONOTONIC, &t0);
        size_t entries = 0, removed;
        unsigned long passes = 0;
        int rc;
        do {
            rc = allocdir_reap(r, REAP_PASS_US, &removed);
            entries += removed;
            passes++;
        } while (rc == 1 && !stopping(r));
        clock_gettime(CLOCK_MONOTONIC, &t1);
        if (entries)
            log_info("slice allocation folders reaped", "dir=%s entries=%zu passes=%lu ms=%ld",
                     r->alloc, entries, passes,
                     (t1.tv_sec - t0.tv_sec) * 1000L + (t1.tv_nsec - t0.tv_nsec) / 1000000L);
        if (rc < 0)
            log_warn("cannot remove everything of gone slice allocation folders; retried at the "
                     "next removal", "dir=%s", r->alloc);
        pthread_mutex_lock(&r->lock);
    }
    pthread_mutex_unlock(&r->lock);
    return NULL;
}

int allocdir_reaper_start(struct allocdir_reaper *r)
{
    if (pthread_create(&r->thread, NULL, reaper_thread, r) != 0)
        return -1;
    r->started = true;
    return 0;
}

void allocdir_reaper_kick(struct allocdir_reaper *r)
{
    pthread_mutex_lock(&r->lock);
    r->work = true;
    pthread_cond_signal(&r->cond);
    pthread_mutex_unlock(&r->lock);
}

int allocdir_read_devices(const char *state_dir, const char *id, char *resource, size_t len,
                          char **ids, size_t *n_ids, size_t max_ids)
{
    char path[4300], *text;
    size_t size;
    struct gpulet_error err = {0};
    snprintf(path, sizeof path, "%s/alloc/%s/devices", state_dir, id);
    if (fileio_read(path, DEVICES_FILE_MAX, &text, &size, &err) < 0)
        return -1;
    /* "resource NAME\n" then one device ID a line */
    *n_ids = 0;
    char *save = NULL;
    char *line = strtok_r(text, "\n", &save);
    if (line == NULL || strncmp(line, "resource ", 9) != 0) {
        free(text);
        return -1;
    }
    snprintf(resource, len, "%s", line + 9);
    while ((line = strtok_r(NULL, "\n", &save)) != NULL && *n_ids < max_ids) {
        ids[*n_ids] = strdup(line);
        if (ids[*n_ids] == NULL)
            break;
        (*n_ids)++;
    }
    free(text);
    return 0;
}

/* Folders whose devices overlap these: their containers are gone. */
static void sweep(const char *state_dir, const char *resource, char *const *ids, size_t n)
{
    char alloc[4200];
    snprintf(alloc, sizeof alloc, "%s/alloc", state_dir);
    DIR *d = opendir(alloc);
    if (d == NULL)
        return;
    char names[64][40]; /* removed after the listing, a batch at a time */
    size_t n_names = 0, seen = 0;
    struct dirent *e;
    while ((e = readdir(d)) != NULL && seen++ < ALLOCDIR_MAX + 2) {
        if (e->d_name[0] == '.' || strlen(e->d_name) >= sizeof names[0])
            continue;
        char res[CONFIG_NAME_MAX], *old[PLUGIN_ALLOC_IDS];
        size_t n_old = 0;
        if (allocdir_read_devices(state_dir, e->d_name, res, sizeof res, old, &n_old,
                                  PLUGIN_ALLOC_IDS) < 0)
            continue;
        bool overlap = false;
        for (size_t i = 0; i < n_old; i++) {
            for (size_t j = 0; j < n && !overlap && strcmp(res, resource) == 0; j++)
                overlap = strcmp(old[i], ids[j]) == 0;
            free(old[i]);
        }
        if (overlap && n_names < sizeof names / sizeof names[0])
            snprintf(names[n_names++], sizeof names[0], "%s", e->d_name);
    }
    closedir(d);
    for (size_t i = 0; i < n_names; i++)
        if (allocdir_remove(state_dir, names[i]) == 0)
            log_info("slice allocation folder removed", "dir=%s/%s why=reallocated", alloc,
                     names[i]);
}

static size_t count_entries(const char *dir)
{
    DIR *d = opendir(dir);
    size_t n = 0;
    if (d == NULL)
        return 0;
    while (readdir(d) != NULL && n < ALLOCDIR_MAX + 3)
        n++;
    closedir(d);
    return n > 2 ? n - 2 : 0;
}

int allocdir_create(const char *state_dir, const char *resource, char *const *ids, size_t n,
                    const char *limits, const char *preload, char *dir, size_t len,
                    struct gpulet_error *err)
{
    char alloc[4200];
    snprintf(alloc, sizeof alloc, "%s/alloc", state_dir);
    if (fileio_mkdirs(alloc, 0755, 0700, err) < 0)
        return -1;
    sweep(state_dir, resource, ids, n);
    if (count_entries(alloc) >= ALLOCDIR_MAX)
        return gpulet_error_set(err, GPULET_ERR_SYSTEM,
                                "%s holds %d slice allocations already; they go when "
                                "pod-resources shows their pods gone (is the metrics module on?)",
                                alloc, ALLOCDIR_MAX);
    unsigned char rnd[8];
    if (getrandom(rnd, sizeof rnd, 0) != (ssize_t)sizeof rnd)
        return gpulet_error_errno(err, errno, "cannot name a slice allocation folder");
    char id[17];
    for (size_t i = 0; i < sizeof rnd; i++)
        snprintf(id + 2 * i, 3, "%02x", rnd[i]);
    snprintf(dir, len, "%s/%s", alloc, id);
    char state[4300], path[4300];
    snprintf(state, sizeof state, "%s/state", dir);
    if (mkdir(dir, 0755) < 0)
        return gpulet_error_errno(err, errno, "cannot create %s", dir);
    /* state/ is written by the container's processes, whatever their user. */
    if (mkdir(state, 0777) < 0 || chmod(state, 0777) < 0) {
        gpulet_error_errno(err, errno, "cannot create %s", state);
        allocdir_remove(state_dir, id);
        return -1;
    }
    size_t dlen = strlen(resource) + 16;
    for (size_t i = 0; i < n; i++)
        dlen += strlen(ids[i]) + 1;
    char *devices = malloc(dlen);
    if (devices == NULL) {
        allocdir_remove(state_dir, id);
        return gpulet_error_errno(err, ENOMEM, "cannot list the devices");
    }
    size_t at = (size_t)snprintf(devices, dlen, "resource %s\n", resource);
    for (size_t i = 0; i < n; i++)
        at += (size_t)snprintf(devices + at, dlen - at, "%s\n", ids[i]);
    int rc = 0;
    snprintf(path, sizeof path, "%s/devices", dir);
    rc = fileio_replace(path, devices, at, 0, err);
    free(devices);
    snprintf(path, sizeof path, "%s/limits", dir);
    if (rc == 0)
        rc = fileio_replace(path, limits, strlen(limits), 0, err);
    snprintf(path, sizeof path, "%s/ld.so.preload", dir);
    if (rc == 0)
        rc = fileio_replace(path, preload, strlen(preload), 0, err);
    if (rc < 0) {
        allocdir_remove(state_dir, id);
        return -1;
    }
    log_info("slice allocation folder created", "dir=%s resource=%s devices=%zu", dir, resource,
             n);
    return 0;
}

size_t allocdir_prune(const char *state_dir, const struct allocdir_visitor *v, time_t now,
                      time_t min_age)
{
    char alloc[4200];
    snprintf(alloc, sizeof alloc, "%s/alloc", state_dir);
    DIR *d = opendir(alloc);
    if (d == NULL)
        return 0;
    char names[64][40]; /* removed after the listing, a batch at a time */
    size_t n_names = 0, seen = 0;
    struct dirent *e;
    while ((e = readdir(d)) != NULL && seen++ < ALLOCDIR_MAX + 2 &&
           n_names < sizeof names / sizeof names[0]) {
        if (e->d_name[0] == '.' || strlen(e->d_name) >= sizeof names[0])
            continue;
        char path[4300], res[CONFIG_NAME_MAX], *ids[PLUGIN_ALLOC_IDS];
        struct stat st;
        size_t n = 0;
        snprintf(path, sizeof path, "%s/%s/devices", alloc, e->d_name);
        if (stat(path, &st) < 0 || allocdir_read_devices(state_dir, e->d_name, res, sizeof res,
                                                         ids, &n, PLUGIN_ALLOC_IDS) < 0)
            continue;
        /* Young folders stay: the kubelet records an allocation after
         * gpulet's answer, so pod-resources may not list it yet. */
        bool young = now - st.st_mtime < min_age;
        const void *holder = NULL;
        for (size_t i = 0; i < n && holder == NULL; i++)
            holder = v->held(res, ids[i], v->user);
        if (holder) {
            snprintf(path, sizeof path, "%s/%s", alloc, e->d_name);
            if (v->kept)
                v->kept(path, res, ids, n, holder, v->user);
        } else if (!young) {
            snprintf(names[n_names++], sizeof names[0], "%s", e->d_name);
        }
        for (size_t i = 0; i < n; i++)
            free(ids[i]);
    }
    closedir(d);
    for (size_t i = 0; i < n_names; i++)
        if (allocdir_remove(state_dir, names[i]) == 0)
            log_info("slice allocation folder removed", "dir=%s/%s why=unheld", alloc,
                     names[i]);
    return n_names;
}

int plugin_slice_grant(const struct config *cfg, const char *state_dir, const char *resource,
                       char *const *ids, size_t n_ids, const struct devices_slice_gpu *gpus,
                       size_t n_gpus, unsigned long long context, const char *reuse,
                       struct devices_edits *edits, char *dir, size_t len,
                       struct gpulet_error *err)
{
    if (access(cfg->cuda_interposer, R_OK) < 0)
        return gpulet_error_set(err, GPULET_ERR_SYSTEM,
                                "the CUDA interposer %s is not there, so %s cannot be limited; "
                                "install it (gpulet runtime install) or give its path with "
                                "--cuda-interposer",
                                cfg->cuda_interposer, resource);
    if (n_gpus > GLC_MAX_DEVS)
        return gpulet_error_set(err, GPULET_ERR_INPUT, "%s: %zu GPUs for one container, more "
                                "than the %d the CUDA interposer limits", resource, n_gpus,
                                GLC_MAX_DEVS);
    struct glc_grant grants[GLC_MAX_DEVS];
    for (size_t i = 0; i < n_gpus; i++) {
        char key[64], value[32];
        grants[i] = (struct glc_grant){gpus[i].uuid, gpus[i].memory, gpus[i].share};
        snprintf(key, sizeof key, "GPULET_CUDA_MEMORY_LIMIT_%zu", i);
        snprintf(value, sizeof value, "%llu", gpus[i].memory);
        devices_edits_env(edits, key, value);
        snprintf(key, sizeof key, "GPULET_CUDA_COMPUTE_SHARE_%zu", i);
        glc_format_percent(gpus[i].share, value, sizeof value);
        devices_edits_env(edits, key, value);
    }
    if (context) {
        char value[32];
        snprintf(value, sizeof value, "%llu", context);
        devices_edits_env(edits, "GPULET_CUDA_CONTEXT_SIZE", value);
    }
    /* No larger than the interposer reads: a longer file would leave the
     * container unlimited, so the grant fails instead. */
    size_t cap = GLC_LIMITS_MAX_BYTES + 1;
    char *limits = malloc(cap);
    if (limits == NULL)
        return gpulet_error_errno(err, ENOMEM, "cannot write the slice limits");
    if (glc_format_limits(grants, n_gpus, context, limits, cap) < 0) {
        free(limits);
        return gpulet_error_set(err, GPULET_ERR_INPUT, "the slice limits of %s for %zu GPUs "
                                "are longer than the %d bytes the CUDA interposer reads",
                                resource, n_gpus, GLC_LIMITS_MAX_BYTES);
    }
    char path[4500];
    snprintf(path, sizeof path, "%s/alloc/%s/limits", state_dir, reuse ? reuse : "");
    int rc = 0;
    if (reuse && reuse[0] && strchr(reuse, '/') == NULL && reuse[0] != '.' &&
        access(path, F_OK) == 0)
        snprintf(dir, len, "%s/alloc/%s", state_dir, reuse);
    else
        rc = allocdir_create(state_dir, resource, ids, n_ids, limits,
                             GLC_CONTAINER_INTERPOSER "\n", dir, len, err);
    free(limits);
    if (rc < 0)
        return -1;
    devices_edits_env(edits, "GPULET_CUDA_STATE_DIR", GLC_CONTAINER_STATE_DIR);
    devices_edits_mount(edits, cfg->cuda_interposer, GLC_CONTAINER_INTERPOSER, true);
    snprintf(path, sizeof path, "%s/ld.so.preload", dir);
    devices_edits_mount(edits, path, "/etc/ld.so.preload", true);
    snprintf(path, sizeof path, "%s/limits", dir);
    devices_edits_mount(edits, path, GLC_LIMITS_FILE, true);
    snprintf(path, sizeof path, "%s/state", dir);
    devices_edits_mount(edits, path, GLC_CONTAINER_STATE_DIR, false);
    return 0;
}

int plugin_slice_release(const char *state_dir, const char *id, struct allocdir_reaper *reaper)
{
    int rc = allocdir_remove(state_dir, id);
    if (reaper)
        allocdir_reaper_kick(reaper);
    return rc;
}

int plugin_slice_discard(const char *state_dir, const char *path, struct allocdir_reaper *reaper,
                         struct gpulet_error *err)
{
    char alloc[4200];
    snprintf(alloc, sizeof alloc, "%s/alloc", state_dir);
    if (fileio_mkdirs(alloc, 0755, 0700, err) < 0)
        return -1;
    int fd = open(alloc, O_RDONLY | O_DIRECTORY | O_NOFOLLOW | O_CLOEXEC);
    if (fd < 0)
        return gpulet_error_errno(err, errno, "cannot open %s", alloc);
    int rc = move_up(fd, AT_FDCWD, path);
    int saved = errno;
    close(fd);
    if (rc < 0 && saved != ENOENT)
        return gpulet_error_errno(err, saved, "cannot move %s into %s to be removed", path,
                                  alloc);
    if (rc == 0 && reaper)
        allocdir_reaper_kick(reaper);
    return 0;
}

struct allocdir_reaper *plugin_slice_reaper(const char *state_dir)
{
    struct allocdir_reaper *r = allocdir_reaper_new(state_dir);
    if (r && allocdir_reaper_start(r) < 0) {
        allocdir_reaper_free(r);
        return NULL;
    }
    if (r)
        allocdir_reaper_kick(r); /* what an earlier run left */
    return r;
}

void plugin_slice_reaper_free(struct allocdir_reaper *r)
{
    allocdir_reaper_free(r);
}

struct prune_adapter {
    bool (*held)(const char *id, void *user);
    void *user;
};

static const void *adapter_held(const char *resource, const char *id, void *user)
{
    (void)resource;
    const struct prune_adapter *a = user;
    return a->held(id, a->user) ? a : NULL;
}

size_t plugin_slice_prune(const char *state_dir, bool (*held)(const char *id, void *user),
                          void *user)
{
    struct prune_adapter a = {held, user};
    struct allocdir_visitor v = {.held = adapter_held, .user = &a};
    return allocdir_prune(state_dir, &v, time(NULL), 0);
}
