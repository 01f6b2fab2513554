#include "runtime.h"

#include <errno.h>
#include <fcntl.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <sys/sysmacros.h>
#include <unistd.h>

#include "fileio/fileio.h"
#include "yamldoc/yamldoc.h"

static int add_name(struct runtime_request *req, const char *name, size_t len,
                    struct gpulet_error *err)
{
    if (len == 0)
        return 0;
    if (len >= sizeof req->names[0])
        return gpulet_error_set(err, GPULET_ERR_INPUT, "a requested device name is too long");
    if (len == 3 && strncmp(name, "all", 3) == 0) {
        req->all = true;
        return 0;
    }
    for (size_t i = 0; i < req->count; i++)
        if (strlen(req->names[i]) == len && strncmp(req->names[i], name, len) == 0)
            return 0;
    if (req->count == RUNTIME_MAX_DEVICES)
        return gpulet_error_set(err, GPULET_ERR_INPUT, "more than %d GPUs requested",
                                RUNTIME_MAX_DEVICES);
    memcpy(req->names[req->count], name, len);
    req->names[req->count++][len] = '\0';
    return 0;
}

/* "a,b,c" into names; each item optionally "nvidia.com/gpu=" qualified
 * (other kinds are not ours and are skipped). */
static int add_list(struct runtime_request *req, const char *list, bool qualified,
                    struct gpulet_error *err)
{
    const char *p = list;
    while (*p) {
        const char *comma = strchr(p, ',');
        size_t whole = comma ? (size_t)(comma - p) : strlen(p);
        size_t len = whole;
        const char *item = p;
        while (len && *item == ' ')
            item++, len--;
        while (len && item[len - 1] == ' ')
            len--;
        if (qualified) {
            static const char prefix[] = "nvidia.com/gpu=";
            if (len > sizeof prefix - 1 && strncmp(item, prefix, sizeof prefix - 1) == 0) {
                if (add_name(req, item + sizeof prefix - 1, len - (sizeof prefix - 1), err) < 0)
                    return -1;
            }
        } else if (add_name(req, item, len, err) < 0) {
            return -1;
        }
        p = comma ? comma + 1 : p + whole; /* the untrimmed item: trimming must not stall */
    }
    return 0;
}

int runtime_find_request(json_t *config, struct runtime_request *req, struct gpulet_error *err)
{
    memset(req, 0, sizeof *req);
    if (!json_is_object(config))
        return gpulet_error_set(err, GPULET_ERR_INPUT, "config.json is not a JSON object");
    json_t *annotations = json_object_get(config, "annotations");
    const char *key;
    json_t *value;
    if (json_is_object(annotations)) {
        json_object_foreach(annotations, key, value) {
            if (strncmp(key, "cdi.k8s.io/", 11) != 0 || !json_is_string(value))
                continue;
            if (add_list(req, json_string_value(value), true, err) < 0)
                return -1;
        }
        if (req->count || req->all) {
            req->source = "CDI annotation";
            return 0;
        }
    }
    json_t *mounts = json_object_get(config, "mounts");
    size_t i;
    json_t *m;
    json_array_foreach(mounts, i, m) {
        const char *dst = json_string_value(json_object_get(m, "destination"));
        size_t n = strlen(RUNTIME_DEVICE_DIR);
        if (dst && strncmp(dst, RUNTIME_DEVICE_DIR "/", n + 1) == 0 && !strchr(dst + n + 1, '/') &&
            add_name(req, dst + n + 1, strlen(dst + n + 1), err) < 0)
            return -1;
    }
    if (req->count || req->all) {
        req->source = "volume mounts";
        return 0;
    }
    json_t *env = json_object_get(json_object_get(config, "process"), "env");
    const char *visible = NULL;
    json_array_foreach(env, i, m) {
        const char *e = json_string_value(m);
        if (e && strncmp(e, "NVIDIA_VISIBLE_DEVICES=", 23) == 0)
            visible = e + 23; /* the last one wins, as in a shell */
    }
    if (visible == NULL || visible[0] == '\0' || strcmp(visible, "none") == 0 ||
        strcmp(visible, "void") == 0 || strcmp(visible, RUNTIME_DEVICE_DIR) == 0)
        return 0;
    req->source = "NVIDIA_VISIBLE_DEVICES";
    return add_list(req, visible, false, err);
}

/* ---- the CDI spec: YAML or JSON, as a JSON tree ---- */

static json_t *yaml_to_json(const struct ydoc *d, const struct ynode *n)
{
    if (n == NULL || ynode_is_null(n))
        return json_null();
    if (ynode_is_scalar(n))
        return json_string(ynode_text(n));
    if (ynode_is_seq(n)) {
        json_t *a = json_array();
        for (size_t i = 0; i < ynode_count(d, n); i++)
            json_array_append_new(a, yaml_to_json(d, ynode_item(d, n, i)));
        return a;
    }
    json_t *o = json_object();
    for (size_t i = 0; i < ynode_count(d, n); i++) {
        const char *k = ynode_text(ynode_key(d, n, i));
        if (k)
            json_object_set_new(o, k, yaml_to_json(d, ynode_value(d, n, i)));
    }
    return o;
}

int runtime_load_spec(const char *dirs, json_t **spec, char *path, size_t path_len,
                      struct gpulet_error *err)
{
    char list[4096];
    snprintf(list, sizeof list, "%s", dirs);
    json_t *found = NULL;
    char *save = NULL;
    static const char *const names[] = {"nvidia.yaml", "nvidia.json", "nvidia-gpu.yaml",
                                        "nvidia-gpu.json", NULL};
    for (char *dir = strtok_r(list, ":", &save); dir; dir = strtok_r(NULL, ":", &save)) {
        for (size_t i = 0; names[i]; i++) {
            char candidate[4200];
            snprintf(candidate, sizeof candidate, "%s/%s", dir, names[i]);
            if (access(candidate, R_OK) != 0)
                continue;
            struct ydoc *d;
            if (ydoc_load_file(candidate, &d, err) < 0) {
                json_decref(found);
                gpulet_error_prefix(err, "cannot read the CDI spec");
                return -1;
            }
            json_t *j = yaml_to_json(d, ydoc_root(d));
            ydoc_free(d);
            const char *kind = json_string_value(json_object_get(j, "kind"));
            if (kind == NULL || strcmp(kind, "nvidia.com/gpu") != 0) {
                json_decref(j);
                continue;
            }
            json_decref(found); /* a later folder wins */
            found = j;
            snprintf(path, path_len, "%s", candidate);
        }
    }
    if (found == NULL)
        return 1;
    *spec = found;
    return 0;
}

/* ---- applying edits to config.json ---- */

static json_t *child(json_t *parent, const char *key, json_t *(*make)(void))
{
    json_t *c = json_object_get(parent, key);
    if (c == NULL) {
        c = make();
        json_object_set_new(parent, key, c);
    }
    return c;
}

/* Drops the first object of array whose key is value: a CDI edit replaces
 * the entry it names (a device node's path, a mount's destination). */
static void remove_entry(json_t *array, const char *key, const char *value)
{
    size_t i;
    json_t *entry;
    json_array_foreach(array, i, entry) {
        const char *v = json_string_value(json_object_get(entry, key));
        if (v && strcmp(v, value) == 0) {
            json_array_remove(array, i);
            return;
        }
    }
}

static int apply_node(json_t *config, json_t *node, struct gpulet_error *err)
{
    const char *path = json_string_value(json_object_get(node, "path"));
    const char *host = json_string_value(json_object_get(node, "hostPath"));
    if (path == NULL || path[0] != '/')
        return gpulet_error_set(err, GPULET_ERR_INPUT, "a CDI device node has no absolute path");
    if (host == NULL)
        host = path;
    struct stat st;
    if (stat(host, &st) != 0)
        return gpulet_error_errno(err, errno, "cannot use the device node %s", host);
    if (!S_ISCHR(st.st_mode) && !S_ISBLK(st.st_mode))
        return gpulet_error_set(err, GPULET_ERR_INPUT, "%s is not a device node", host);
    const char *type = S_ISCHR(st.st_mode) ? "c" : "b";
    json_int_t major = major(st.st_rdev), minor = minor(st.st_rdev);
    const char *perms = json_string_value(json_object_get(node, "permissions"));
    json_t *linux_ = child(config, "linux", json_object);
    json_t *devices = child(linux_, "devices", json_array);
    /* A node at the same path is replaced, as CDI says. */
    remove_entry(devices, "path", path);
    json_array_append_new(devices, json_pack("{s:s, s:s, s:I, s:I, s:i, s:i, s:i}", "path", path,
                                             "type", type, "major", major, "minor", minor,
                                             "fileMode", (int)(st.st_mode & 0777), "uid", 0,
                                             "gid", 0));
    json_t *resources = child(linux_, "resources", json_object);
    json_t *rules = child(resources, "devices", json_array);
    json_array_append_new(rules, json_pack("{s:b, s:s, s:I, s:I, s:s}", "allow", 1, "type", type,
                                           "major", major, "minor", minor, "access",
                                           perms ? perms : "rwm"));
    return 0;
}

static void apply_mount(json_t *config, json_t *m)
{
    const char *src = json_string_value(json_object_get(m, "hostPath"));
    const char *dst = json_string_value(json_object_get(m, "containerPath"));
    if (src == NULL || dst == NULL)
        return;
    json_t *mounts = child(config, "mounts", json_array);
    remove_entry(mounts, "destination", dst);
    json_t *options = json_object_get(m, "options");
    json_array_append_new(mounts, json_pack("{s:s, s:s, s:s, s:O}", "destination", dst, "type",
                                            "bind", "source", src, "options",
                                            options ? options : json_array()));
}

static int apply_edits(json_t *config, json_t *edits, struct gpulet_error *err)
{
    if (edits == NULL)
        return 0;
    size_t i;
    json_t *v;
    json_t *process = child(config, "process", json_object);
    json_array_foreach(json_object_get(edits, "env"), i, v) {
        if (json_is_string(v))
            json_array_append(child(process, "env", json_array), v);
    }
    json_array_foreach(json_object_get(edits, "deviceNodes"), i, v) {
        if (apply_node(config, v, err) < 0)
            return -1;
    }
    json_array_foreach(json_object_get(edits, "mounts"), i, v)
        apply_mount(config, v);
    json_array_foreach(json_object_get(edits, "hooks"), i, v) {
        const char *name = json_string_value(json_object_get(v, "hookName"));
        const char *path = json_string_value(json_object_get(v, "path"));
        if (name == NULL || path == NULL)
            continue;
        json_t *hooks = child(config, "hooks", json_object);
        json_t *hook = json_pack("{s:s}", "path", path);
        json_t *args = json_object_get(v, "args");
        if (json_is_array(args))
            json_object_set(hook, "args", args);
        json_array_append_new(child(hooks, name, json_array), hook);
    }
    return 0;
}

static json_t *find_device(json_t *spec, const char *name)
{
    size_t i;
    json_t *d;
    json_array_foreach(json_object_get(spec, "devices"), i, d) {
        const char *n = json_string_value(json_object_get(d, "name"));
        if (n && strcmp(n, name) == 0)
            return d;
    }
    return NULL;
}

int runtime_apply(json_t *config, json_t *spec, const char *spec_path,
                  const struct runtime_request *req, struct gpulet_error *err)
{
    /* Every name first: an unknown GPU fails the create before any edit. */
    for (size_t i = 0; i < req->count; i++) {
        if (find_device(spec, req->names[i]) == NULL)
            return gpulet_error_set(err, GPULET_ERR_INPUT,
                                    "the container asks (through %s) for GPU \"%s\", which the "
                                    "CDI spec %s does not list; this node's GPUs are named by "
                                    "index, UUID and MIG \"gpu:mig\"",
                                    req->source, req->names[i], spec_path);
    }
    if (req->all && apply_edits(config, json_object_get(find_device(spec, "all"), "containerEdits"),
                                err) < 0)
        return -1;
    for (size_t i = 0; !req->all && i < req->count; i++)
        if (apply_edits(config, json_object_get(find_device(spec, req->names[i]), "containerEdits"),
                        err) < 0)
            return -1;
    return apply_edits(config, json_object_get(spec, "containerEdits"), err);
}

/* ---- config.json ---- */

int runtime_read_config(const char *bundle, json_t **config, struct gpulet_error *err)
{
    char path[4200];
    snprintf(path, sizeof path, "%s/config.json", bundle);
    int fd = open(path, O_RDONLY | O_NOFOLLOW | O_CLOEXEC);
    if (fd < 0)
        return gpulet_error_errno(err, errno,
                                  errno == ELOOP ? "%s is a symbolic link; refusing to read it"
                                                 : "cannot open %s",
                                  path);
    struct stat st;
    if (fstat(fd, &st) != 0 || !S_ISREG(st.st_mode) || st.st_size > 16 * 1024 * 1024) {
        close(fd);
        return gpulet_error_set(err, GPULET_ERR_INPUT, "%s is not a regular file of sane size",
                                path);
    }
    /* Read whole: jansson's fd reader takes one byte per read(2), which
     * alone cost milliseconds per container start. */
    char *text = malloc((size_t)st.st_size + 1);
    ssize_t got = text ? read(fd, text, (size_t)st.st_size) : -1;
    close(fd);
    if (got != (ssize_t)st.st_size) {
        free(text);
        return gpulet_error_errno(err, errno ? errno : EIO, "cannot read %s", path);
    }
    json_error_t jerr;
    *config = json_loadb(text, (size_t)got, JSON_REJECT_DUPLICATES, &jerr);
    free(text);
    if (*config == NULL)
        return gpulet_error_set(err, GPULET_ERR_INPUT, "cannot parse %s line %d: %s", path,
                                jerr.line, jerr.text);
    return 0;
}

int runtime_write_config(const char *bundle, json_t *config, struct gpulet_error *err)
{
    char path[4200];
    snprintf(path, sizeof path, "%s/config.json", bundle);
    char *text = json_dumps(config, JSON_COMPACT | JSON_PRESERVE_ORDER);
    if (text == NULL)
        return gpulet_error_set(err, GPULET_ERR_INTERNAL, "cannot render %s", path);
    /* Not durable: rename is atomic for readers, and a bundle does not
     * outlive a crash of the node, so fsync would buy nothing but latency. */
    int rc = fileio_replace(path, text, strlen(text), FILEIO_PRIVATE, err);
    free(text);
    return rc;
}
