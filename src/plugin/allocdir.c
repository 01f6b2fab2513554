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
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/random.h>
#include <sys/stat.h>
#include <unistd.h>

#include "fileio/fileio.h"
#include "log/log.h"

#define DEVICES_FILE_MAX 65536
/* The state/ folder is the container's to write: its removal is bounded
 * in depth and entries, and never follows a link. */
#define REMOVE_DEPTH 8
#define REMOVE_ENTRIES 100000
#define DEEP_PREFIX ".deep-"

struct remover {
    int top;       /* the alloc/ folder */
    size_t budget; /* entries left for this call */
};

/* A folder deeper than REMOVE_DEPTH moves up to alloc/.deep-<random>,
 * removed from there later, so deep nesting costs time, not a stuck
 * folder. */
static int move_up(struct remover *r, int parent, const char *name)
{
    unsigned char rnd[8];
    char deep[32];
    if (getrandom(rnd, sizeof rnd, 0) != (ssize_t)sizeof rnd)
        return -1;
    snprintf(deep, sizeof deep, DEEP_PREFIX "%02x%02x%02x%02x%02x%02x%02x%02x", rnd[0], rnd[1],
             rnd[2], rnd[3], rnd[4], rnd[5], rnd[6], rnd[7]);
    return renameat(parent, name, r->top, deep);
}

static int remove_at(struct remover *r, int parent, const char *name, int depth)
{
    if (unlinkat(parent, name, 0) == 0 || errno == ENOENT)
        return 0;
    if (errno != EISDIR && errno != EPERM)
        return -1;
    if (depth >= REMOVE_DEPTH)
        return move_up(r, parent, name);
    int fd = openat(parent, name, O_RDONLY | O_DIRECTORY | O_NOFOLLOW | O_CLOEXEC);
    if (fd < 0)
        return -1;
    DIR *d = fdopendir(fd);
    if (d == NULL) {
        close(fd);
        return -1;
    }
    int rc = 0;
    struct dirent *e;
    while (rc == 0 && (e = readdir(d)) != NULL) {
        if (strcmp(e->d_name, ".") == 0 || strcmp(e->d_name, "..") == 0)
            continue;
        if (r->budget == 0) {
            errno = EAGAIN;
            rc = -1;
        } else {
            r->budget--;
            rc = remove_at(r, dirfd(d), e->d_name, depth + 1);
        }
    }
    closedir(d);
    if (rc == 0 && unlinkat(parent, name, AT_REMOVEDIR) < 0 && errno != ENOENT)
        rc = -1;
    return rc;
}

/* Moves alloc/<name> (NULL: none) aside to a .deep- name at once, so a
 * folder half removed is never taken for a live one, then removes every
 * .deep- entry within one budget; what is left waits for the next call. */
static int remove_folder(const char *alloc, const char *name)
{
    int fd = open(alloc, O_RDONLY | O_DIRECTORY | O_NOFOLLOW | O_CLOEXEC);
    if (fd < 0)
        return errno == ENOENT ? 0 : -1;
    struct remover r = {fd, REMOVE_ENTRIES};
    int rc = 0;
    if (name && move_up(&r, fd, name) < 0 && errno != ENOENT)
        rc = -1;
    DIR *d = fdopendir(dup(fd));
    struct dirent *e;
    while (rc == 0 && d && (e = readdir(d)) != NULL)
        if (strncmp(e->d_name, DEEP_PREFIX, strlen(DEEP_PREFIX)) == 0)
            rc = remove_at(&r, fd, e->d_name, 0);
    if (d)
        closedir(d);
    close(fd);
    return rc;
}

int allocdir_remove(const char *state_dir, const char *id)
{
    char alloc[4200];
    snprintf(alloc, sizeof alloc, "%s/alloc", state_dir);
    errno = 0;
    if (remove_folder(alloc, id) < 0) {
        /* Retried at the next sweep or prune: each removes what it can. */
        log_warn("cannot remove a slice allocation folder yet", "dir=%s/%s error=\"%s\"", alloc,
                 id, errno == EAGAIN ? "more entries than one pass removes" : strerror(errno));
        return -1;
    }
    log_info("slice allocation folder removed", "dir=%s/%s", alloc, id);
    return 0;
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
        allocdir_remove(state_dir, names[i]);
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
        allocdir_remove(state_dir, names[i]);
    if (n_names == 0)
        remove_folder(alloc, NULL); /* what earlier removals left */
    return n_names;
}

/* "12.5" for 1250 hundredths: what GPULET_CUDA_COMPUTE_SHARE reads. */
static void format_share(unsigned long hundredths, char *buf, size_t len)
{
    if (hundredths % 100 == 0)
        snprintf(buf, len, "%lu", hundredths / 100);
    else if (hundredths % 10 == 0)
        snprintf(buf, len, "%lu.%lu", hundredths / 100, hundredths % 100 / 10);
    else
        snprintf(buf, len, "%lu.%02lu", hundredths / 100, hundredths % 100);
}

int plugin_slice_grant(const struct config *cfg, const char *state_dir, const char *resource,
                       char *const *ids, size_t n_ids, const struct plugin_slice_gpu *gpus,
                       size_t n_gpus, const char *reuse, const struct plugin_slice_sink *sink,
                       char *dir, size_t len, struct gpulet_error *err)
{
    if (access(cfg->cuda_interposer, R_OK) < 0)
        return gpulet_error_set(err, GPULET_ERR_SYSTEM,
                                "the CUDA interposer %s is not there, so %s cannot be limited; "
                                "install it (gpulet runtime install) or give its path with "
                                "--cuda-interposer",
                                cfg->cuda_interposer, resource);
    size_t cap = 128 + n_gpus * 256;
    char *limits = malloc(cap);
    if (limits == NULL)
        return gpulet_error_errno(err, ENOMEM, "cannot write the slice limits");
    size_t at = (size_t)snprintf(limits, cap, "# gpulet CUDA limits v1: ordinal = CUDA device "
                                 "in this container\n");
    for (size_t i = 0; i < n_gpus; i++) {
        char key[64], value[32];
        /* for an interposer that matches devices by UUID, not by order */
        at += (size_t)snprintf(limits + at, cap - at, "GPULET_CUDA_DEVICE_UUID_%zu=%s\n", i,
                               gpus[i].uuid);
        snprintf(key, sizeof key, "GPULET_CUDA_MEMORY_LIMIT_%zu", i);
        snprintf(value, sizeof value, "%llu", gpus[i].memory);
        sink->env(sink->user, key, value);
        at += (size_t)snprintf(limits + at, cap - at, "%s=%s\n", key, value);
        snprintf(key, sizeof key, "GPULET_CUDA_COMPUTE_SHARE_%zu", i);
        format_share(gpus[i].share > 10000 ? 10000 : gpus[i].share, value, sizeof value);
        sink->env(sink->user, key, value);
        at += (size_t)snprintf(limits + at, cap - at, "%s=%s\n", key, value);
    }
    char path[4500];
    snprintf(path, sizeof path, "%s/alloc/%s/limits", state_dir, reuse ? reuse : "");
    int rc = 0;
    if (reuse && reuse[0] && strchr(reuse, '/') == NULL && reuse[0] != '.' &&
        access(path, F_OK) == 0)
        snprintf(dir, len, "%s/alloc/%s", state_dir, reuse);
    else
        rc = allocdir_create(state_dir, resource, ids, n_ids, limits,
                             PLUGIN_CONTAINER_INTERPOSER "\n", dir, len, err);
    free(limits);
    if (rc < 0)
        return -1;
    sink->env(sink->user, "GPULET_CUDA_STATE_DIR", PLUGIN_CONTAINER_STATE);
    sink->mount(sink->user, cfg->cuda_interposer, PLUGIN_CONTAINER_INTERPOSER, true);
    snprintf(path, sizeof path, "%s/ld.so.preload", dir);
    sink->mount(sink->user, path, "/etc/ld.so.preload", true);
    snprintf(path, sizeof path, "%s/limits", dir);
    sink->mount(sink->user, path, PLUGIN_CONTAINER_LIMITS, true);
    snprintf(path, sizeof path, "%s/state", dir);
    sink->mount(sink->user, path, PLUGIN_CONTAINER_STATE, false);
    return 0;
}

int plugin_slice_release(const char *state_dir, const char *id)
{
    return allocdir_remove(state_dir, id);
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
