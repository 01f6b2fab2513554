#include "cdi.h"

#include <dirent.h>
#include <errno.h>
#include <fcntl.h>
#include <libgen.h>
#include <limits.h>
#include <linux/openat2.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <sys/stat.h>
#include <sys/sysmacros.h>
#include <sys/syscall.h>
#include <unistd.h>

#include "fileio/fileio.h"

/* NVIDIA's toolkit mounts every file of the driver's version in the folder
 * of its libcuda (and vdpau/ below it), so no library of a new driver
 * release is missed; the EGL platform libraries carry versions of their
 * own and are found through the ld cache. */
static const char *const egl_platform_libraries[] = {
    "libnvidia-egl-gbm.so.", "libnvidia-egl-wayland.so.", NULL,
};

/* The links NVIDIA's create-symlinks hooks make, as file -> link in the
 * same folder: programs open these names (libcuda.so for linking,
 * libGLX_indirect.so.0 through glvnd, the unversioned optical flow and
 * Vulkan producer libraries, GBM's backend). gpulet mounts the file
 * there instead. */
static const struct {
    const char *library, *link;
} library_links[] = {
    {"libcuda.so.", "libcuda.so"},
    {"libGLX_nvidia.so.", "libGLX_indirect.so.0"},
    {"libnvidia-opticalflow.so.", "libnvidia-opticalflow.so"},
    {"libnvidia-vulkan-producer.so.", "libnvidia-vulkan-producer.so"},
    {"libnvidia-allocator.so.", "gbm/nvidia-drm_gbm.so"},
};

/* Graphics configuration, looked for under /etc, /usr/local/share and
 * /usr/share as NVIDIA does; the Vulkan files always go to /etc. */
static const char *const config_files[] = {
    "glvnd/egl_vendor.d/10_nvidia.json",
    "egl/egl_external_platform.d/15_nvidia_gbm.json",
    "egl/egl_external_platform.d/10_nvidia_wayland.json",
    "nvidia/nvoptix.bin",
    "X11/xorg.conf.d/10-nvidia.conf",
    "X11/xorg.conf.d/nvidia-drm-outputclass.conf",
    "vulkan/icd.d/nvidia_icd.json",
    "vulkan/icd.d/nvidia_layers.json",
    "vulkan/implicit_layer.d/nvidia_layers.json",
    NULL,
};
static const char *const config_dirs[] = {"/etc", "/usr/local/share", "/usr/share", NULL};

#define MAX_FOLDER_ENTRIES 4096 /* read from one library folder */
#define MAX_MOUNTS 2048

static const char *const driver_tools[] = {
    "nvidia-smi", "nvidia-debugdump", "nvidia-persistenced", "nvidia-cuda-mps-control",
    "nvidia-cuda-mps-server", "nvidia-imex", "nvidia-imex-ctl", NULL,
};

/* As nvidia-ctk writes them: every mount is a single file, so a recursive
 * bind would add nothing. */
static const char *const mount_options[] = {"ro", "nosuid", "nodev", "bind", NULL};

/* "/" adds nothing in front of a path. */
static const char *root_prefix(const char *root)
{
    return root == NULL || strcmp(root, "/") == 0 ? "" : root;
}

/* ---- the ld cache: glibc's "glibc-ld.so.cache1.1" format ---- */

#define LDCACHE_MAGIC "glibc-ld.so.cache1.1"

struct ldcache_header {
    char magic[20];
    uint32_t nlibs;
    uint32_t len_strings;
    uint8_t flags;
    uint8_t padding[3];
    uint32_t extension_offset;
    uint32_t unused[3];
};

struct ldcache_file_entry {
    int32_t flags;
    uint32_t key, value; /* offsets from the header */
    uint32_t osversion;
    uint64_t hwcap;
};

int ldcache_read(const char *root, struct ldcache_entry **out, size_t *count,
                 struct gpulet_error *err)
{
    char path[4200];
    snprintf(path, sizeof path, "%s/etc/ld.so.cache", root_prefix(root));
    char *data;
    size_t size;
    struct gpulet_error why = {0};
    if (fileio_read(path, 64u << 20, &data, &size, &why) < 0)
        return why.kind == GPULET_ERR_SYSTEM
                   ? gpulet_error_errno(err, why.sys_errno,
                                        "cannot read the driver root's ld cache %s", path)
                   : gpulet_error_set(err, GPULET_ERR_INPUT, "%s is not an ld cache (over 64 MiB)",
                                      path);
    if (size < sizeof(struct ldcache_header)) {
        free(data);
        return gpulet_error_set(err, GPULET_ERR_INPUT, "%s is not an ld cache (size %zu)", path,
                                size);
    }
    /* Old caches put a "ld.so-1.7.0" table in front; the new one follows. */
    char *start = memmem(data, size, LDCACHE_MAGIC, strlen(LDCACHE_MAGIC));
    if (start == NULL) {
        free(data);
        return gpulet_error_set(err, GPULET_ERR_INPUT,
                                "%s has no %s table (run ldconfig in the driver root)", path,
                                LDCACHE_MAGIC);
    }
    size_t base = (size_t)(start - data);
    struct ldcache_header h;
    memcpy(&h, start, sizeof h);
    size_t entries_end = base + sizeof h + (size_t)h.nlibs * sizeof(struct ldcache_file_entry);
    if (h.nlibs > 1000000 || entries_end > size) {
        free(data);
        return gpulet_error_set(err, GPULET_ERR_INPUT, "%s is cut short or corrupt", path);
    }
    struct ldcache_entry *list = calloc(h.nlibs + 1, sizeof *list);
    size_t n = 0;
    for (uint32_t i = 0; list && i < h.nlibs; i++) {
        struct ldcache_file_entry e;
        memcpy(&e, start + sizeof h + i * sizeof e, sizeof e);
        if (base + e.key >= size || base + e.value >= size)
            continue;
        const char *key = start + e.key, *value = start + e.value;
        if (strnlen(key, size - base - e.key) >= sizeof list[n].soname ||
            strnlen(value, size - base - e.value) >= sizeof list[n].path)
            continue;
        list[n].flags = e.flags;
        snprintf(list[n].soname, sizeof list[n].soname, "%s", key);
        snprintf(list[n].path, sizeof list[n].path, "%s", value);
        n++;
    }
    free(data);
    if (list == NULL)
        return gpulet_error_errno(err, ENOMEM, "cannot read %s", path);
    *out = list;
    *count = n;
    return 0;
}

/* glibc's flags for a 64-bit x86 ELF library (FLAG_ELF_LIBC6 | FLAG_X8664_LIB64). */
#define LDCACHE_FLAGS_X86_64 0x0303

int ldcache_write(const char *root, const struct ldcache_entry *entries, size_t count,
                  struct gpulet_error *err)
{
    if (count > 4096)
        return gpulet_error_set(err, GPULET_ERR_USAGE, "too many ld cache entries (%zu)", count);
    struct ldcache_header h = {.nlibs = (uint32_t)count};
    memcpy(h.magic, LDCACHE_MAGIC, sizeof h.magic);
    size_t strings = sizeof h + count * sizeof(struct ldcache_file_entry);
    size_t total = strings;
    for (size_t i = 0; i < count; i++)
        total += strlen(entries[i].soname) + 1 + strlen(entries[i].path) + 1;
    h.len_strings = (uint32_t)(total - strings);
    char *data = calloc(1, total);
    if (data == NULL)
        return gpulet_error_errno(err, ENOMEM, "cannot build an ld cache");
    memcpy(data, &h, sizeof h);
    size_t at = strings;
    for (size_t i = 0; i < count; i++) {
        struct ldcache_file_entry e = {.flags = LDCACHE_FLAGS_X86_64};
        size_t a = strlen(entries[i].soname) + 1, b = strlen(entries[i].path) + 1;
        e.key = (uint32_t)at;
        memcpy(data + at, entries[i].soname, a);
        e.value = (uint32_t)(at + a);
        memcpy(data + at + a, entries[i].path, b);
        at += a + b;
        memcpy(data + sizeof h + i * sizeof e, &e, sizeof e);
    }
    char path[4200];
    snprintf(path, sizeof path, "%s/etc/ld.so.cache", root_prefix(root));
    int rc = fileio_replace(path, data, total, 0, err);
    free(data);
    return rc;
}

/* ---- building the spec ---- */

static json_t *string_array(const char *const *items)
{
    json_t *a = json_array();
    for (size_t i = 0; items[i]; i++)
        json_array_append_new(a, json_string(items[i]));
    return a;
}

/* A path gpulet sees under root (the driver or device root) as the host
 * names it: under host_root when gpulet sees the host elsewhere (a
 * container given the host's / at /host), else as it is. */
static void host_path(const struct cdi_options *opts, const char *root, const char *seen,
                      char *buf, size_t len)
{
    const char *prefix = root_prefix(root);
    size_t n = strlen(prefix);
    if (opts->host_root == NULL)
        snprintf(buf, len, "%s", seen);
    else if (n && strncmp(seen, prefix, n) == 0 && seen[n] == '/')
        snprintf(buf, len, "%s%s", root_prefix(opts->host_root), seen + n);
    else
        snprintf(buf, len, "%s%s", root_prefix(opts->host_root), seen);
}

int cdi_hook_check(const struct cdi_options *opts, struct gpulet_error *err)
{
    const char *hook = opts->hook_path;
    char seen[4200];
    const char *host = root_prefix(opts->host_root);
    size_t n = strlen(host);
    if (opts->host_root && strncmp(hook, host, n) == 0 && hook[n] == '/')
        snprintf(seen, sizeof seen, "%s%s", root_prefix(opts->driver_root), hook + n);
    else
        snprintf(seen, sizeof seen, "%s", hook);
    struct stat st;
    if (stat(seen, &st) != 0)
        return gpulet_error_errno(err, errno, "the CDI hook %s is not on the host (looked at %s)",
                                  hook, seen);
    if (!S_ISREG(st.st_mode) || access(seen, X_OK) != 0)
        return gpulet_error_set(err, GPULET_ERR_INPUT, "the CDI hook %s is not an executable "
                                "file (looked at %s)", hook, seen);
    return 0;
}

/* A device node: its path in the container, and where it is on the host
 * when that is elsewhere. */
static json_t *device_node(const struct cdi_options *opts, const char *path)
{
    json_t *node = json_pack("{s:s}", "path", path);
    char seen[4200], host[4300];
    snprintf(seen, sizeof seen, "%s%s", root_prefix(opts->dev_root), path);
    host_path(opts, opts->dev_root, seen, host, sizeof host);
    if (strcmp(host, path) != 0)
        json_object_set_new(node, "hostPath", json_string(host));
    return node;
}

/* host: the file as gpulet sees it under the driver root. */
static json_t *mount(const struct cdi_options *opts, const char *host, const char *container)
{
    char named[8600];
    host_path(opts, opts->driver_root, host, named, sizeof named);
    return json_pack("{s:s, s:s, s:o}", "hostPath", named, "containerPath", container,
                     "options", string_array(mount_options));
}

static bool exists(const char *path)
{
    return access(path, F_OK) == 0;
}

size_t cdi_control_nodes(const char *root, const char *found[CDI_CONTROL_NODES_MAX + 1])
{
    size_t n = 0;
    for (size_t i = 0; gpu_control_nodes[i] && n < CDI_CONTROL_NODES_MAX; i++) {
        char path[4200];
        snprintf(path, sizeof path, "%s%s", root_prefix(root), gpu_control_nodes[i]);
        if (exists(path))
            found[n++] = gpu_control_nodes[i];
    }
    found[n] = NULL;
    return n;
}

static int compare_strings(const void *a, const void *b)
{
    return strcmp(*(const char *const *)a, *(const char *const *)b);
}

/* The real file a path of the driver root leads to, every symlink and
 * ".." on the way resolved inside the root (openat2 RESOLVE_IN_ROOT), as
 * a path without the root; "" when it leads nowhere. */
static void resolve_in_root(const char *root, const char *path, char *out, size_t len)
{
    out[0] = '\0';
    char real_root[PATH_MAX];
    if (realpath(root[0] ? root : "/", real_root) == NULL)
        return;
    int root_fd = open(real_root, O_PATH | O_DIRECTORY | O_CLOEXEC);
    if (root_fd < 0)
        return;
    struct open_how how = {.flags = O_PATH | O_CLOEXEC,
                           .resolve = RESOLVE_IN_ROOT | RESOLVE_NO_MAGICLINKS};
    int fd = (int)syscall(SYS_openat2, root_fd, path, &how, sizeof how);
    close(root_fd);
    if (fd < 0)
        return;
    char link[64], real[PATH_MAX];
    snprintf(link, sizeof link, "/proc/self/fd/%d", fd);
    ssize_t n = readlink(link, real, sizeof real - 1);
    close(fd);
    if (n < 0)
        return;
    real[n] = '\0';
    size_t rlen = strcmp(real_root, "/") == 0 ? 0 : strlen(real_root);
    if (strncmp(real, real_root, rlen) == 0 && real[rlen] == '/')
        snprintf(out, len, "%s", real + rlen);
}

static bool ends_with(const char *s, const char *suffix)
{
    size_t a = strlen(s), b = strlen(suffix);
    return a >= b && strcmp(s + a - b, suffix) == 0;
}

static bool starts_with(const char *s, const char *prefix)
{
    return strncmp(s, prefix, strlen(prefix)) == 0;
}

static const char *base_name(const char *path)
{
    const char *slash = strrchr(path, '/');
    return slash ? slash + 1 : path;
}

/* Mounts being gathered: each container path once, sorted at the end. */
struct mount_list {
    char *lines[MAX_MOUNTS]; /* "container\thost" */
    size_t n;
};

static void mount_list_add(struct mount_list *l, const char *container, const char *host)
{
    size_t clen = strlen(container);
    for (size_t j = 0; j < l->n; j++)
        if (strncmp(l->lines[j], container, clen) == 0 && l->lines[j][clen] == '\t')
            return;
    size_t len = clen + strlen(host) + 2;
    char *line = l->n < MAX_MOUNTS ? malloc(len) : NULL;
    if (line == NULL)
        return;
    snprintf(line, len, "%s\t%s", container, host);
    l->lines[l->n++] = line;
}

/* Appends the mounts, sorted by container path, and empties the list. */
static void mount_list_flush(const struct cdi_options *opts, struct mount_list *l,
                             json_t *mounts)
{
    qsort(l->lines, l->n, sizeof *l->lines, compare_strings);
    for (size_t i = 0; i < l->n; i++) {
        char *tab = strchr(l->lines[i], '\t');
        *tab = '\0';
        json_array_append_new(mounts, mount(opts, tab + 1, l->lines[i]));
        free(l->lines[i]);
    }
    l->n = 0;
}

/* The 64-bit libcuda of this driver version the cache lists: its flags
 * and its folder (without the root); -1 when there is none. */
static int find_libcuda(const char *root, const struct ldcache_entry *entries, size_t count,
                        const char *version_suffix, int *flags, char *dir, size_t len)
{
    int found = -1;
    for (size_t i = 0; i < count; i++) {
        if (!starts_with(entries[i].soname, "libcuda.so"))
            continue;
        char real[4096];
        resolve_in_root(root, entries[i].path, real, sizeof real);
        /* Only the driver's own file: a libcuda from elsewhere is not ours. */
        if (!real[0] || !starts_with(base_name(real), "libcuda.so.") ||
            !ends_with(real, version_suffix))
            continue;
        /* A 32-bit copy (no architecture bits in the flags) only if no
         * other is there. */
        if (found == 0 && (entries[i].flags & 0xff00) == 0)
            continue;
        *flags = entries[i].flags;
        snprintf(dir, len, "%.*s", (int)(base_name(real) - real - 1), real);
        found = 0;
        if ((entries[i].flags & 0xff00) != 0)
            break;
    }
    return found;
}

/* Files of folder dir (inside the root) whose name ends in the version
 * suffix: mounted where they are, from the file they resolve to. */
static void add_version_files(const char *root, const char *dir, const char *version_suffix,
                              struct mount_list *l)
{
    char host_dir[4200];
    snprintf(host_dir, sizeof host_dir, "%s%s", root, dir);
    DIR *d = opendir(host_dir);
    if (d == NULL)
        return;
    struct dirent *e;
    char **names = calloc(MAX_FOLDER_ENTRIES, sizeof *names);
    size_t n = 0;
    for (size_t seen = 0; names && seen < MAX_FOLDER_ENTRIES && (e = readdir(d)) != NULL; seen++)
        if (ends_with(e->d_name, version_suffix) && e->d_name[0] != '.')
            names[n++] = strdup(e->d_name);
    closedir(d);
    for (size_t i = 0; i < n; i++) {
        char path[4400], real[4096], host[8300];
        if (names[i] == NULL)
            continue;
        snprintf(path, sizeof path, "%s/%s", dir, names[i]);
        resolve_in_root(root, path, real, sizeof real);
        snprintf(host, sizeof host, "%s%s", root, real);
        struct stat st;
        if (real[0] && stat(host, &st) == 0 && S_ISREG(st.st_mode))
            mount_list_add(l, path, host);
        free(names[i]);
    }
    free(names);
}

static int add_libraries(const struct gpu_inventory *inv, const struct cdi_options *opts,
                         json_t *mounts, struct gpulet_error *err)
{
    struct ldcache_entry *entries;
    size_t count;
    if (ldcache_read(opts->driver_root, &entries, &count, err) < 0)
        return -1;
    const char *root = root_prefix(opts->driver_root);
    char version_suffix[96], dir[4096];
    snprintf(version_suffix, sizeof version_suffix, ".so.%s", inv->driver_version);
    int flags = 0;
    if (find_libcuda(root, entries, count, version_suffix, &flags, dir, sizeof dir) < 0) {
        free(entries);
        return gpulet_error_set(err, GPULET_ERR_INPUT,
                                "the ld cache of %s lists no NVIDIA driver library ending in "
                                ".so.%s (no libcuda.so.%s); is the driver root right "
                                "(--driver-root)?",
                                opts->driver_root ? opts->driver_root : "/",
                                inv->driver_version, inv->driver_version);
    }
    struct mount_list *l = calloc(1, sizeof *l);
    if (l == NULL) {
        free(entries);
        return gpulet_error_errno(err, ENOMEM, "cannot list the driver libraries");
    }
    char vdpau[4200];
    snprintf(vdpau, sizeof vdpau, "%s/vdpau", dir);
    add_version_files(root, dir, version_suffix, l);
    add_version_files(root, vdpau, version_suffix, l);
    size_t driver_files = l->n;
    for (size_t i = 0; i < count; i++) {
        if (entries[i].flags != flags)
            continue;
        for (size_t k = 0; egl_platform_libraries[k]; k++) {
            char real[4096], host[8300];
            if (!starts_with(entries[i].soname, egl_platform_libraries[k]))
                continue;
            resolve_in_root(root, entries[i].path, real, sizeof real);
            /* libnvidia-egl-gbm.so.1.1.2: a full version, not the soname */
            const char *rest = base_name(real) + strlen(egl_platform_libraries[k]);
            if (real[0] && starts_with(base_name(real), egl_platform_libraries[k]) &&
                strchr(rest, '.') != NULL) {
                snprintf(host, sizeof host, "%s%s", root, real);
                mount_list_add(l, real, host);
            }
        }
    }
    /* The soname links the cache lists for the files chosen, then NVIDIA's
     * extra links: the same file mounted at each. */
    size_t files = l->n;
    for (size_t i = 0; i < count; i++) {
        if (entries[i].flags != flags)
            continue;
        char real[4096], host[8300];
        resolve_in_root(root, entries[i].path, real, sizeof real);
        if (!real[0])
            continue;
        snprintf(host, sizeof host, "%s%s", root, real);
        for (size_t j = 0; j < files; j++)
            if (strcmp(strchr(l->lines[j], '\t') + 1, host) == 0) {
                mount_list_add(l, entries[i].path, host);
                break;
            }
    }
    for (size_t j = 0; j < driver_files; j++) {
        char path[4400];
        const char *tab = strchr(l->lines[j], '\t');
        snprintf(path, sizeof path, "%.*s", (int)(tab - l->lines[j]), l->lines[j]);
        const char *name = base_name(path);
        for (size_t k = 0; k < sizeof library_links / sizeof library_links[0]; k++) {
            if (!starts_with(name, library_links[k].library))
                continue;
            char link[4500];
            snprintf(link, sizeof link, "%.*s%s", (int)(name - path), path, library_links[k].link);
            mount_list_add(l, link, tab + 1);
        }
    }
    free(entries);
    mount_list_flush(opts, l, mounts);
    free(l);
    return 0;
}

/* The GSP firmware of this driver version, gsp*.bin. */
static void add_firmware(const struct gpu_inventory *inv, const char *root, struct mount_list *l)
{
    char dir[4200], host_dir[8400];
    snprintf(dir, sizeof dir, "/lib/firmware/nvidia/%s", inv->driver_version);
    snprintf(host_dir, sizeof host_dir, "%s%s", root, dir);
    DIR *d = opendir(host_dir);
    if (d == NULL)
        return;
    struct dirent *e;
    for (size_t seen = 0; seen < MAX_FOLDER_ENTRIES && (e = readdir(d)) != NULL; seen++) {
        char path[4500], real[4096], host[8500];
        if (!starts_with(e->d_name, "gsp") || !ends_with(e->d_name, ".bin"))
            continue;
        snprintf(path, sizeof path, "%s/%s", dir, e->d_name);
        resolve_in_root(root, path, real, sizeof real);
        snprintf(host, sizeof host, "%s%s", root, real);
        if (real[0])
            mount_list_add(l, path, host);
    }
    closedir(d);
}

static void add_files(const struct gpu_inventory *inv, const struct cdi_options *opts,
                      json_t *mounts)
{
    const char *root = root_prefix(opts->driver_root);
    struct mount_list *l = calloc(1, sizeof *l);
    if (l == NULL)
        return;
    char host[8500], path[8400];
    for (size_t i = 0; driver_tools[i]; i++) {
        snprintf(path, sizeof path, "/usr/bin/%s", driver_tools[i]);
        snprintf(host, sizeof host, "%s%s", root, path);
        if (exists(host))
            mount_list_add(l, path, host);
    }
    for (size_t i = 0; config_files[i]; i++)
        for (size_t k = 0; config_dirs[k]; k++) {
            snprintf(path, sizeof path, "%s/%s", config_dirs[k], config_files[i]);
            snprintf(host, sizeof host, "%s%s", root, path);
            if (!exists(host))
                continue;
            if (starts_with(config_files[i], "vulkan/"))
                snprintf(path, sizeof path, "/etc/%s", config_files[i]);
            mount_list_add(l, path, host);
            break;
        }
    add_firmware(inv, root, l);
    mount_list_flush(opts, l, mounts);
    /* Sockets: nothing in them is run, so noexec too, as NVIDIA's. */
    static const char *const sockets[] = {"nvidia-persistenced/socket",
                                          "nvidia-fabricmanager/socket", NULL};
    for (size_t i = 0; sockets[i]; i++)
        for (int var = 0; var < 2; var++) {
            snprintf(path, sizeof path, "%s/run/%s", var ? "/var" : "", sockets[i]);
            snprintf(host, sizeof host, "%s%s", root, path);
            if (!exists(host))
                continue;
            json_t *m = mount(opts, host, path);
            json_array_append_new(json_object_get(m, "options"), json_string("noexec"));
            json_array_append_new(mounts, m);
            break;
        }
    free(l);
}

/* The container's ld cache must learn the library folders, and CUDA's
 * forward-compatibility libraries in the image come first when they are
 * newer than the driver (NVIDIA's enable-cuda-compat). */
static json_t *ldcache_hook(const char *hook_path, const char *driver_version, json_t *mounts)
{
    json_t *args = json_pack("[s, s, s, s]", "gpulet-hook", "update-ldcache",
                             "--host-driver-version", driver_version);
    json_t *seen = json_object();
    size_t i;
    json_t *m;
    json_array_foreach(mounts, i, m) {
        const char *path = json_string_value(json_object_get(m, "containerPath"));
        if (path == NULL || !starts_with(base_name(path), "lib") || strstr(path, ".so") == NULL)
            continue;
        char dir[4096];
        snprintf(dir, sizeof dir, "%s", path);
        char *slash = strrchr(dir, '/');
        if (slash == NULL || slash == dir)
            continue;
        *slash = '\0';
        if (json_object_get(seen, dir))
            continue;
        json_object_set_new(seen, dir, json_true());
        json_array_append_new(args, json_string("--folder"));
        json_array_append_new(args, json_string(dir));
    }
    json_decref(seen);
    return json_pack("[{s:s, s:s, s:o, s:[s]}]", "hookName", "createContainer", "path",
                     hook_path, "args", args, "env", CDI_HOOK_ENV);
}

static json_t *device(const char *name, json_t *nodes)
{
    return json_pack("{s:s, s:{s:o}}", "name", name, "containerEdits", "deviceNodes", nodes);
}

/* Every GPU's node once, for "all". */
static json_t *gpu_nodes(const struct cdi_options *opts, const struct gpu_device *g)
{
    char path[64];
    snprintf(path, sizeof path, "/dev/nvidia%u", g->minor);
    json_t *nodes = json_array();
    json_array_append_new(nodes, device_node(opts, path));
    return nodes;
}

/* A MIG device: its GPU's node and its instance capabilities. */
static json_t *mig_nodes(const struct cdi_options *opts, const struct gpu_device *g,
                         const struct gpu_mig_device *m)
{
    json_t *nodes = gpu_nodes(opts, g);
    char caps[2][64];
    size_t n = gpu_mig_cap_nodes(opts->driver_root, g->minor, m->gpu_instance_id,
                                 m->compute_instance_id, caps);
    for (size_t i = 0; i < n; i++)
        json_array_append_new(nodes, device_node(opts, caps[i]));
    return nodes;
}

/* Compute instances of one GPU instance share its capability node. */
static void append_node_once(json_t *nodes, json_t *node)
{
    const char *path = json_string_value(json_object_get(node, "path"));
    size_t i;
    json_t *have;
    json_array_foreach(nodes, i, have) {
        if (strcmp(json_string_value(json_object_get(have, "path")), path) == 0)
            return;
    }
    json_array_append(nodes, node);
}

static int compare_devices(const void *a, const void *b)
{
    const char *x = json_string_value(json_object_get(*(json_t *const *)a, "name"));
    const char *y = json_string_value(json_object_get(*(json_t *const *)b, "name"));
    return strcmp(x, y);
}

/* The edits every GPU container needs, whichever spec names its GPUs:
 * NVIDIA_VISIBLE_DEVICES=void, the control nodes, the driver's files and
 * the ld cache hook. */
static json_t *common_edits(const struct gpu_inventory *inv, const struct cdi_options *opts,
                            struct gpulet_error *err)
{
    json_t *mounts = json_array();
    if (add_libraries(inv, opts, mounts, err) < 0) {
        json_decref(mounts);
        return NULL;
    }
    add_files(inv, opts, mounts);

    json_t *control = json_array();
    const char *nodes[CDI_CONTROL_NODES_MAX + 1];
    cdi_control_nodes(opts->dev_root, nodes);
    for (size_t i = 0; nodes[i]; i++)
        json_array_append_new(control, device_node(opts, nodes[i]));
    json_t *edits = json_pack("{s:[s], s:o, s:o}", "env", "NVIDIA_VISIBLE_DEVICES=void",
                              "deviceNodes", control, "mounts", mounts);
    if (opts->hook_path)
        json_object_set_new(edits, "hooks",
                            ldcache_hook(opts->hook_path, inv->driver_version, mounts));
    return edits;
}

int cdi_claim_spec_build(const struct gpu_inventory *inv, const struct cdi_options *opts,
                         const char *kind, const struct cdi_claim_device *devs, size_t n,
                         json_t **out, struct gpulet_error *err)
{
    json_t *edits = common_edits(inv, opts, err);
    if (edits == NULL)
        return -1;
    json_t *list = json_array();
    for (size_t i = 0; i < n; i++) {
        const struct gpu_device *g = &inv->gpus[devs[i].gpu];
        json_t *nodes = devs[i].mig < 0 ? gpu_nodes(opts, g)
                                        : mig_nodes(opts, g, &g->migs[devs[i].mig]);
        json_array_append_new(list, device(devs[i].name, nodes));
    }
    *out = json_pack("{s:s, s:s, s:o, s:o}", "cdiVersion", CDI_VERSION, "kind", kind, "devices",
                     list, "containerEdits", edits);
    return 0;
}

int cdi_spec_build(const struct gpu_inventory *inv, const struct cdi_options *opts,
                   json_t **out, struct gpulet_error *err)
{
    json_t *edits = common_edits(inv, opts, err);
    if (edits == NULL)
        return -1;

    size_t cap = 2 * inv->gpu_count + 1;
    for (size_t i = 0; i < inv->gpu_count; i++)
        cap += 2 * inv->gpus[i].mig_count;
    json_t **devs = calloc(cap, sizeof *devs);
    size_t n = 0;
    json_t *all_nodes = json_array();
    for (size_t i = 0; devs && i < inv->gpu_count; i++) {
        const struct gpu_device *g = &inv->gpus[i];
        char name[32];
        snprintf(name, sizeof name, "%u", g->index);
        devs[n++] = device(name, gpu_nodes(opts, g));
        if (g->uuid[0])
            devs[n++] = device(g->uuid, gpu_nodes(opts, g));
        json_array_extend(all_nodes, json_object_get(json_object_get(devs[n - 1], "containerEdits"),
                                                     "deviceNodes"));
        for (size_t m = 0; m < g->mig_count; m++) {
            snprintf(name, sizeof name, "%u:%u", g->index, g->migs[m].index);
            devs[n++] = device(name, mig_nodes(opts, g, &g->migs[m]));
            devs[n++] = device(g->migs[m].uuid, mig_nodes(opts, g, &g->migs[m]));
            /* "all" gives every MIG device too: its capabilities, the GPU
             * node being there already. */
            json_t *nodes = json_object_get(json_object_get(devs[n - 1], "containerEdits"),
                                            "deviceNodes");
            for (size_t k = 1; k < json_array_size(nodes); k++)
                append_node_once(all_nodes, json_array_get(nodes, k));
        }
    }
    if (devs == NULL) {
        json_decref(edits);
        json_decref(all_nodes);
        return gpulet_error_errno(err, ENOMEM, "cannot build the CDI spec");
    }
    qsort(devs, n, sizeof *devs, compare_devices);
    json_t *list = json_array();
    for (size_t i = 0; i < n; i++)
        json_array_append_new(list, devs[i]);
    if (inv->gpu_count > 0)
        json_array_append_new(list, device("all", all_nodes));
    else
        json_decref(all_nodes);
    free(devs);

    *out = json_pack("{s:s, s:s, s:o, s:o}", "cdiVersion", CDI_VERSION, "kind", CDI_KIND,
                     "devices", list, "containerEdits", edits);
    return 0;
}

/* ---- writing ---- */

static bool plain_scalar(const char *s)
{
    /* A leading digit may read as a number, a time or a base-60 integer
     * ("0:1" in YAML 1.1): always quoted. */
    if (s[0] == '\0' || (s[0] >= '0' && s[0] <= '9') || strchr("-?:,[]{}#&*!|>'\"%@` .", s[0]) ||
        strstr(s, ": ") ||
        strstr(s, " #") || ends_with(s, ":") || ends_with(s, " "))
        return false;
    for (const char *p = s; *p; p++)
        if ((unsigned char)*p < 0x20)
            return false;
    /* Strings YAML would read as something else stay quoted. */
    static const char *const special[] = {"true", "false", "null", "yes", "no", "on", "off",
                                          "~", NULL};
    for (size_t i = 0; special[i]; i++)
        if (strcasecmp(s, special[i]) == 0)
            return false;
    char *end;
    strtod(s, &end);
    return *end != '\0';
}

static void yaml_scalar(FILE *f, const char *s)
{
    if (plain_scalar(s)) {
        fputs(s, f);
        return;
    }
    fputc('"', f);
    for (const char *p = s; *p; p++) {
        if (*p == '"' || *p == '\\')
            fputc('\\', f);
        fputc(*p, f);
    }
    fputc('"', f);
}

static void yaml_value(FILE *f, json_t *v, int indent, bool in_list);

static void yaml_object(FILE *f, json_t *obj, int indent, bool first_inline)
{
    const char *key;
    json_t *value;
    bool first = true;
    json_object_foreach(obj, key, value) {
        if (!(first && first_inline))
            fprintf(f, "%*s", indent, "");
        first = false;
        fprintf(f, "%s:", key);
        yaml_value(f, value, indent, false);
    }
}

static void yaml_value(FILE *f, json_t *v, int indent, bool in_list)
{
    (void)in_list;
    if (json_is_object(v)) {
        fputc('\n', f);
        yaml_object(f, v, indent + 2, false);
    } else if (json_is_array(v)) {
        if (json_array_size(v) == 0) {
            fputs(" []\n", f);
            return;
        }
        fputc('\n', f);
        size_t i;
        json_t *item;
        json_array_foreach(v, i, item) {
            fprintf(f, "%*s- ", indent, "");
            if (json_is_object(item)) {
                yaml_object(f, item, indent + 2, true);
            } else {
                yaml_scalar(f, json_string_value(item) ? json_string_value(item) : "");
                fputc('\n', f);
            }
        }
    } else {
        fputc(' ', f);
        yaml_scalar(f, json_string_value(v) ? json_string_value(v) : "");
        fputc('\n', f);
    }
}

static int write_to(FILE *f, json_t *spec, enum cdi_format format)
{
    if (format == CDI_JSON) {
        if (json_dumpf(spec, f, JSON_INDENT(2) | JSON_PRESERVE_ORDER) < 0)
            return -1;
        fputc('\n', f);
        return 0;
    }
    fputs("# CDI spec for NVIDIA GPUs, generated by gpulet cdi generate.\n", f);
    yaml_object(f, spec, 0, false);
    return 0;
}

int cdi_spec_write(json_t *spec, enum cdi_format format, const char *path,
                   struct gpulet_error *err)
{
    if (path == NULL)
        return write_to(stdout, spec, format) < 0 || fflush(stdout) != 0
                   ? gpulet_error_errno(err, errno, "cannot write the CDI spec")
                   : 0;
    char *text = NULL;
    size_t len = 0;
    FILE *f = open_memstream(&text, &len);
    if (f == NULL)
        return gpulet_error_errno(err, errno, "cannot write the CDI spec");
    int rc = write_to(f, spec, format);
    if (fclose(f) != 0 || rc < 0) {
        free(text);
        return gpulet_error_set(err, GPULET_ERR_INTERNAL, "cannot render the CDI spec");
    }
    rc = fileio_replace(path, text, len, FILEIO_DURABLE, err);
    free(text);
    return rc;
}
