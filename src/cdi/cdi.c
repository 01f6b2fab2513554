#include "cdi.h"

#include <errno.h>
#include <fcntl.h>
#include <libgen.h>
#include <limits.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <sys/stat.h>
#include <sys/sysmacros.h>
#include <unistd.h>

#include "fileio/fileio.h"

/* The driver's user-space libraries, by capability (utility, compute,
 * video, graphics), as NVIDIA's toolkit mounts them. */
static const char *const driver_libraries[] = {
    "libnvidia-ml.so", "libnvidia-cfg.so",
    "libcuda.so", "libcudadebugger.so", "libnvidia-opencl.so", "libnvidia-ptxjitcompiler.so",
    "libnvidia-fatbinaryloader.so", "libnvidia-allocator.so", "libnvidia-compiler.so",
    "libnvidia-nvvm.so", "libnvidia-gpucomp.so",
    "libvdpau_nvidia.so", "libnvidia-encode.so", "libnvidia-opticalflow.so", "libnvcuvid.so",
    "libnvidia-eglcore.so", "libnvidia-glcore.so", "libnvidia-tls.so", "libnvidia-glsi.so",
    "libGLX_nvidia.so", "libEGL_nvidia.so", "libGLESv2_nvidia.so",
    NULL,
};

static const char *const driver_tools[] = {
    "nvidia-smi", "nvidia-debugdump", "nvidia-persistenced", "nvidia-cuda-mps-control",
    "nvidia-cuda-mps-server", NULL,
};

static const char *const control_nodes[] = {
    "/dev/nvidiactl", "/dev/nvidia-uvm", "/dev/nvidia-uvm-tools", "/dev/nvidia-modeset", NULL,
};

static const char *const mount_options[] = {"ro", "nosuid", "nodev", "rbind", "rprivate", NULL};

/* "/" adds nothing in front of a path. */
static const char *root_prefix(const char *root)
{
    return root == NULL || strcmp(root, "/") == 0 ? "" : root;
}

/* A file under root (the driver or device root) as the host names it. */
static void host_path(const struct cdi_options *opts, const char *root, const char *path,
                      char *buf, size_t len)
{
    snprintf(buf, len, "%s%s", root_prefix(opts->host_root ? opts->host_root : root), path);
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

/* A device node: its path in the container, and where it is on the host
 * when the device root is not "/". */
static json_t *device_node(const struct cdi_options *opts, const char *path)
{
    json_t *node = json_pack("{s:s}", "path", path);
    char host[4200];
    host_path(opts, opts->dev_root, path, host, sizeof host);
    if (strcmp(host, path) != 0)
        json_object_set_new(node, "hostPath", json_string(host));
    return node;
}

static json_t *mount(const char *host, const char *container)
{
    return json_pack("{s:s, s:s, s:o}", "hostPath", host, "containerPath", container, "options",
                     string_array(mount_options));
}

static bool exists(const char *path)
{
    return access(path, F_OK) == 0;
}

static int compare_strings(const void *a, const void *b)
{
    return strcmp(*(const char *const *)a, *(const char *const *)b);
}

/* The real file a cache entry leads to (symlinks followed inside the
 * root), as a path without the root; "" when it leads nowhere. */
static void resolve_in_root(const char *root, const char *path, char *out, size_t len)
{
    char current[4096];
    snprintf(current, sizeof current, "%s", path);
    for (int hops = 0; hops < 16; hops++) {
        char full[8300], target[4096];
        snprintf(full, sizeof full, "%s%s", root, current);
        ssize_t n = readlink(full, target, sizeof target - 1);
        if (n < 0) {
            snprintf(out, len, "%s", exists(full) ? current : "");
            return;
        }
        target[n] = '\0';
        if (target[0] == '/') {
            snprintf(current, sizeof current, "%s", target);
        } else {
            char dir[4096];
            snprintf(dir, sizeof dir, "%s", current);
            char *slash = strrchr(dir, '/');
            if (slash)
                *slash = '\0';
            char joined[8200];
            snprintf(joined, sizeof joined, "%s/%s", dir, target);
            snprintf(current, sizeof current, "%s", joined);
        }
    }
    out[0] = '\0'; /* a loop */
}

static bool ends_with(const char *s, const char *suffix)
{
    size_t a = strlen(s), b = strlen(suffix);
    return a >= b && strcmp(s + a - b, suffix) == 0;
}

static int add_libraries(const struct gpu_inventory *inv, const struct cdi_options *opts,
                         json_t *mounts, struct gpulet_error *err)
{
    struct ldcache_entry *entries;
    size_t count;
    if (ldcache_read(opts->driver_root, &entries, &count, err) < 0)
        return -1;
    const char *root = root_prefix(opts->driver_root);
    char version_suffix[96];
    snprintf(version_suffix, sizeof version_suffix, ".so.%s", inv->driver_version);
    /* Each pair once, sorted by container path: soname links and files. */
    char **lines = calloc(2 * count + 1, sizeof *lines);
    size_t n = 0;
    for (size_t i = 0; lines && i < count; i++) {
        bool wanted = false;
        for (size_t k = 0; driver_libraries[k] && !wanted; k++)
            wanted = strncmp(entries[i].soname, driver_libraries[k],
                             strlen(driver_libraries[k])) == 0;
        if (!wanted)
            continue;
        char real[4096];
        resolve_in_root(root, entries[i].path, real, sizeof real);
        /* Only the driver's own files: a libcuda from elsewhere is not ours. */
        if (!real[0] || !ends_with(real, version_suffix))
            continue;
        char host[8300];
        host_path(opts, opts->driver_root, real, host, sizeof host);
        const char *containers[2] = {real, entries[i].path};
        for (int c = 0; c < 2; c++) {
            if (c == 1 && strcmp(containers[0], containers[1]) == 0)
                break;
            size_t len = strlen(host) + strlen(containers[c]) + 2;
            char *line = malloc(len);
            if (line == NULL)
                break;
            snprintf(line, len, "%s\t%s", containers[c], host);
            bool dup = false;
            for (size_t j = 0; j < n && !dup; j++)
                dup = strcmp(lines[j], line) == 0;
            if (dup)
                free(line);
            else
                lines[n++] = line;
        }
    }
    free(entries);
    if (lines == NULL)
        return gpulet_error_errno(err, ENOMEM, "cannot list the driver libraries");
    qsort(lines, n, sizeof *lines, compare_strings);
    for (size_t i = 0; i < n; i++) {
        char *tab = strchr(lines[i], '\t');
        *tab = '\0';
        json_array_append_new(mounts, mount(tab + 1, lines[i]));
        free(lines[i]);
    }
    free(lines);
    if (n == 0)
        return gpulet_error_set(err, GPULET_ERR_INPUT,
                                "the ld cache of %s lists no NVIDIA driver library ending in "
                                ".so.%s; is the driver root right (--driver-root)?",
                                opts->driver_root ? opts->driver_root : "/",
                                inv->driver_version);
    return 0;
}

/* A file of the driver root, mounted where it is in the root, when it is there. */
static void add_file(const struct cdi_options *opts, const char *path, json_t *mounts)
{
    char seen[4200], host[4200];
    snprintf(seen, sizeof seen, "%s%s", root_prefix(opts->driver_root), path);
    if (!exists(seen))
        return;
    host_path(opts, opts->driver_root, path, host, sizeof host);
    json_array_append_new(mounts, mount(host, path));
}

static void add_files(const struct gpu_inventory *inv, const struct cdi_options *opts,
                      json_t *mounts)
{
    char path[4200];
    for (size_t i = 0; driver_tools[i]; i++) {
        snprintf(path, sizeof path, "/usr/bin/%s", driver_tools[i]);
        add_file(opts, path, mounts);
    }
    static const char *const firmware[] = {"gsp_ga10x.bin", "gsp_tu10x.bin", "gsp_gh100.bin",
                                           "gsp_gb100.bin", NULL};
    for (size_t i = 0; firmware[i]; i++) {
        snprintf(path, sizeof path, "/lib/firmware/nvidia/%s/%s", inv->driver_version,
                 firmware[i]);
        add_file(opts, path, mounts);
    }
    add_file(opts, "/run/nvidia-persistenced/socket", mounts);
}

/* The container's ld cache must learn the library folders. */
static json_t *ldcache_hook(const char *hook_path, json_t *mounts)
{
    json_t *args = json_pack("[s, s]", "gpulet-hook", "update-ldcache");
    json_t *seen = json_object();
    size_t i;
    json_t *m;
    json_array_foreach(mounts, i, m) {
        const char *path = json_string_value(json_object_get(m, "containerPath"));
        if (path == NULL || strstr(path, ".so") == NULL)
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
    const char *dev_root = root_prefix(opts->dev_root);
    for (size_t i = 0; control_nodes[i]; i++) {
        char host[4200];
        snprintf(host, sizeof host, "%s%s", dev_root, control_nodes[i]);
        if (exists(host))
            json_array_append_new(control, device_node(opts, control_nodes[i]));
    }
    json_t *edits = json_pack("{s:[s], s:o, s:o}", "env", "NVIDIA_VISIBLE_DEVICES=void",
                              "deviceNodes", control, "mounts", mounts);
    if (opts->hook_path)
        json_object_set_new(edits, "hooks", ldcache_hook(opts->hook_path, mounts));
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
