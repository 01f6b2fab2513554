#include "runtime.h"

#include <errno.h>
#include <fcntl.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <sys/sysmacros.h>
#include <unistd.h>

#include "cdi/cdi.h"
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

/* ---- config.json's shape: every field gpulet reads or writes ---- */

/* parent.key, with JSON null taken as absent (as runc reads it). */
static json_t *member(json_t *parent, const char *key)
{
    json_t *v = json_object_get(parent, key);
    return json_is_null(v) ? NULL : v;
}

static const char *type_name(json_type t)
{
    switch (t) {
    case JSON_OBJECT: return "an object";
    case JSON_ARRAY: return "an array";
    case JSON_STRING: return "a string";
    case JSON_INTEGER:
    case JSON_REAL: return "a number";
    case JSON_TRUE:
    case JSON_FALSE: return "a boolean";
    default: return "null";
    }
}

/* v (named by what) must be absent or of type; items, when not 0, the
 * type of every array item or object value. */
static int check_type(json_t *v, json_type type, json_type items, const char *what,
                      struct gpulet_error *err)
{
    if (v == NULL)
        return 0;
    if (json_typeof(v) != type)
        return gpulet_error_set(err, GPULET_ERR_INPUT, "config.json: %s must be %s, not %s",
                                what, type_name(type), type_name(json_typeof(v)));
    if (items == JSON_NULL)
        return 0;
    size_t i;
    const char *key;
    json_t *item;
    if (type == JSON_ARRAY) {
        json_array_foreach(v, i, item) {
            if (json_typeof(item) != items)
                return gpulet_error_set(err, GPULET_ERR_INPUT,
                                        "config.json: %s[%zu] must be %s, not %s", what, i,
                                        type_name(items), type_name(json_typeof(item)));
        }
    } else {
        json_object_foreach(v, key, item) {
            if (json_typeof(item) != items)
                return gpulet_error_set(err, GPULET_ERR_INPUT,
                                        "config.json: %s[\"%.64s\"] must be %s, not %s", what,
                                        key, type_name(items), type_name(json_typeof(item)));
        }
    }
    return 0;
}

/* Checked before anything is read or edited, so the edits below meet
 * only the types they expect (jansson quietly refuses to add a member to
 * a string, and frees what it was given). */
static int check_config(json_t *config, struct gpulet_error *err)
{
    if (!json_is_object(config))
        return gpulet_error_set(err, GPULET_ERR_INPUT, "config.json is not a JSON object");
    json_t *process = member(config, "process"), *linux_ = member(config, "linux");
    json_t *resources = member(linux_, "resources"), *hooks = member(config, "hooks");
    json_t *caps = member(process, "capabilities");
    if (check_type(member(config, "annotations"), JSON_OBJECT, JSON_STRING, "annotations",
                   err) < 0 ||
        check_type(member(config, "mounts"), JSON_ARRAY, JSON_OBJECT, "mounts", err) < 0 ||
        check_type(process, JSON_OBJECT, JSON_NULL, "process", err) < 0 ||
        check_type(member(process, "env"), JSON_ARRAY, JSON_STRING, "process.env", err) < 0 ||
        check_type(caps, JSON_OBJECT, JSON_NULL, "process.capabilities", err) < 0 ||
        check_type(member(caps, "bounding"), JSON_ARRAY, JSON_STRING,
                   "process.capabilities.bounding", err) < 0 ||
        check_type(linux_, JSON_OBJECT, JSON_NULL, "linux", err) < 0 ||
        check_type(member(linux_, "devices"), JSON_ARRAY, JSON_OBJECT, "linux.devices", err) < 0 ||
        check_type(resources, JSON_OBJECT, JSON_NULL, "linux.resources", err) < 0 ||
        check_type(member(resources, "devices"), JSON_ARRAY, JSON_OBJECT,
                   "linux.resources.devices", err) < 0 ||
        check_type(hooks, JSON_OBJECT, JSON_NULL, "hooks", err) < 0)
        return -1;
    const char *key;
    json_t *list;
    json_object_foreach(hooks, key, list) {
        char what[96];
        snprintf(what, sizeof what, "hooks.%.64s", key);
        if (check_type(list, JSON_ARRAY, JSON_OBJECT, what, err) < 0)
            return -1;
    }
    return 0;
}

int runtime_find_request(json_t *config, struct runtime_request *req, struct gpulet_error *err)
{
    memset(req, 0, sizeof *req);
    if (check_config(config, err) < 0)
        return -1;
    size_t i;
    json_t *m;
    json_array_foreach(json_object_get(json_object_get(json_object_get(config, "process"),
                                                       "capabilities"), "bounding"), i, m)
        req->privileged = req->privileged || strcmp(json_string_value(m), "CAP_SYS_ADMIN") == 0;
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
    json_array_foreach(mounts, i, m) {
        /* Only the device plugin's mounts of /dev/null: a pod can mount an
         * emptyDir at that path itself, and would get any GPU it names. */
        const char *src = json_string_value(json_object_get(m, "source"));
        const char *dst = json_string_value(json_object_get(m, "destination"));
        size_t n = strlen(RUNTIME_DEVICE_DIR);
        if (src && strcmp(src, "/dev/null") == 0 && dst &&
            strncmp(dst, RUNTIME_DEVICE_DIR "/", n + 1) == 0 && !strchr(dst + n + 1, '/') &&
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
    req->envvar = true;
    return add_list(req, visible, false, err);
}

/* ---- gpulet-runtime's settings ---- */

static char *trim(char *s)
{
    while (*s == ' ' || *s == '\t')
        s++;
    size_t n = strlen(s);
    while (n && (s[n - 1] == ' ' || s[n - 1] == '\t' || s[n - 1] == '\r'))
        s[--n] = '\0';
    return s;
}

int runtime_read_settings(const char *path, struct runtime_settings *s, struct gpulet_error *err)
{
    *s = (struct runtime_settings){.accept_envvar_unprivileged = true};
    char *text;
    size_t len;
    if (fileio_read(path, RUNTIME_MAX_SETTINGS, &text, &len, err) < 0) {
        if (err->sys_errno != ENOENT)
            return -1;
        *err = (struct gpulet_error){0};
        return 0;
    }
    int rc = strlen(text) == len ? 0
                                 : gpulet_error_set(err, GPULET_ERR_INPUT,
                                                    "%s holds a NUL byte; is it the right file?",
                                                    path);
    unsigned long line = 0;
    for (char *p = text, *next; rc == 0 && p && *p; p = next) {
        line++;
        next = strchr(p, '\n');
        if (next)
            *next++ = '\0';
        char *hash = strchr(p, '#');
        if (hash)
            *hash = '\0';
        char *l = trim(p);
        if (*l == '\0')
            continue;
        char *eq = strchr(l, '=');
        const char *value = eq ? trim(eq + 1) : "";
        const char *key = eq ? (*eq = '\0', trim(l)) : l;
        bool b = strcmp(value, "true") == 0;
        if (strcmp(key, "accept-envvar-unprivileged") != 0)
            rc = gpulet_error_set(err, GPULET_ERR_INPUT,
                                  "%s line %lu: unknown setting \"%.64s\" (known: "
                                  "accept-envvar-unprivileged)", path, line, key);
        else if (!b && strcmp(value, "false") != 0)
            rc = gpulet_error_set(err, GPULET_ERR_INPUT,
                                  "%s line %lu: %s must be true or false, not \"%.64s\"", path,
                                  line, key, value);
        else
            s->accept_envvar_unprivileged = b;
    }
    free(text);
    return rc;
}

/* ---- the CDI spec: YAML or JSON, as a JSON tree ---- */

/* Recursive: yamldoc bounds the depth (YDOC_MAX_DEPTH) and refuses
 * aliases, so the tree is as big as the file. */
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

int runtime_parse_spec(const char *name, const char *text, size_t len, json_t **spec,
                       struct gpulet_error *err)
{
    struct ydoc *d;
    if (ydoc_load_string(name, text, len, &d, err) < 0)
        return -1;
    *spec = yaml_to_json(d, ydoc_root(d));
    ydoc_free(d);
    return 0;
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
            char *text;
            size_t len;
            json_t *j;
            int rc = fileio_read(candidate, YDOC_MAX_BYTES, &text, &len, err);
            if (rc == 0) {
                rc = runtime_parse_spec(candidate, text, len, &j, err);
                free(text);
            }
            if (rc < 0) {
                json_decref(found);
                gpulet_error_prefix(err, "cannot read the CDI spec");
                return -1;
            }
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

/* parent.key, made when absent or null. check_config() vouched for the
 * type of everything already there. */
static json_t *child(json_t *parent, const char *key, json_t *(*make)(void))
{
    json_t *c = member(parent, key);
    if (c == NULL) {
        c = make();
        if (json_object_set_new(parent, key, c) != 0)
            return NULL; /* c is freed: only a parent that is no object gets here */
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

/* A copy of the spec's list of strings at key (NULL: none there), or
 * NULL with err set when it is something else. */
static int strings(json_t *parent, const char *key, const char *what, json_t **out,
                   struct gpulet_error *err)
{
    json_t *list = member(parent, key);
    *out = NULL;
    if (list == NULL)
        return 0;
    size_t i;
    json_t *v;
    bool ok = json_is_array(list);
    json_array_foreach(list, i, v) ok = ok && json_is_string(v);
    if (!ok)
        return gpulet_error_set(err, GPULET_ERR_INPUT, "%s %s must be a list of strings",
                                what, key);
    *out = json_deep_copy(list);
    return 0;
}

static int apply_mount(json_t *config, json_t *m, struct gpulet_error *err)
{
    const char *src = json_string_value(json_object_get(m, "hostPath"));
    const char *dst = json_string_value(json_object_get(m, "containerPath"));
    if (src == NULL || dst == NULL)
        return 0;
    json_t *options;
    if (strings(m, "options", "mount", &options, err) < 0)
        return -1;
    json_t *mounts = child(config, "mounts", json_array);
    remove_entry(mounts, "destination", dst);
    json_array_append_new(mounts, json_pack("{s:s, s:s, s:s, s:o}", "destination", dst, "type",
                                            "bind", "source", src, "options",
                                            options ? options : json_array()));
    return 0;
}

/* A hook never inherits an environment: without "env", runc runs it with
 * the container's (its LD_PRELOAD would load into a program running as
 * root on the host, the CVE-2025-23266 class). */
static int apply_hook(json_t *config, json_t *h, struct gpulet_error *err)
{
    const char *name = json_string_value(json_object_get(h, "hookName"));
    const char *path = json_string_value(json_object_get(h, "path"));
    if (name == NULL || path == NULL)
        return 0;
    json_t *args, *env;
    if (strings(h, "args", "hook", &args, err) < 0)
        return -1;
    if (strings(h, "env", "hook", &env, err) < 0) {
        json_decref(args);
        return -1;
    }
    if (json_array_size(env) == 0) {
        json_decref(env);
        env = json_pack("[s]", CDI_HOOK_ENV);
    }
    json_t *hook = json_pack("{s:s, s:o}", "path", path, "env", env);
    if (args)
        json_object_set_new(hook, "args", args);
    json_array_append_new(child(child(config, "hooks", json_object), name, json_array), hook);
    return 0;
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
    json_array_foreach(json_object_get(edits, "mounts"), i, v) {
        if (apply_mount(config, v, err) < 0)
            return -1;
    }
    json_array_foreach(json_object_get(edits, "hooks"), i, v) {
        if (apply_hook(config, v, err) < 0)
            return -1;
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
    if (check_config(config, err) < 0)
        return -1;
    /* Every name first: an unknown GPU fails the create before any edit. */
    for (size_t i = 0; i < req->count; i++) {
        if (find_device(spec, req->names[i]) == NULL)
            return gpulet_error_set(err, GPULET_ERR_INPUT,
                                    "the container asks (through %s) for GPU \"%s\", which the "
                                    "CDI spec %s does not list; this node's GPUs are named by "
                                    "index, UUID and MIG \"gpu:mig\"",
                                    req->source, req->names[i], spec_path);
    }
    int rc = 0;
    if (req->all)
        rc = apply_edits(config, json_object_get(find_device(spec, "all"), "containerEdits"), err);
    for (size_t i = 0; rc == 0 && !req->all && i < req->count; i++)
        rc = apply_edits(config, json_object_get(find_device(spec, req->names[i]), "containerEdits"),
                         err);
    if (rc == 0)
        rc = apply_edits(config, json_object_get(spec, "containerEdits"), err);
    if (rc < 0)
        gpulet_error_prefix(err, "%s", spec_path);
    return rc;
}

/* ---- config.json ---- */

int runtime_read_config(const char *bundle, json_t **config, struct gpulet_error *err)
{
    char path[4200];
    snprintf(path, sizeof path, "%s/config.json", bundle);
    /* O_NONBLOCK: a FIFO in its place is refused below, not waited on. */
    int fd = open(path, O_RDONLY | O_NOFOLLOW | O_NONBLOCK | O_CLOEXEC);
    if (fd < 0)
        return gpulet_error_errno(err, errno,
                                  errno == ELOOP ? "%s is a symbolic link; refusing to read it"
                                                 : "cannot open %s",
                                  path);
    struct stat st;
    if (fstat(fd, &st) != 0 || !S_ISREG(st.st_mode) || st.st_size > RUNTIME_MAX_CONFIG) {
        close(fd);
        return gpulet_error_set(err, GPULET_ERR_INPUT,
                                "%s is not a regular file of at most %d bytes", path,
                                RUNTIME_MAX_CONFIG);
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
