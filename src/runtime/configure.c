#include "runtime.h"

#include <errno.h>
#include <fcntl.h>
#include <fnmatch.h>
#include <glob.h>
#include <libgen.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include <jansson.h>

#include "configure_edit.h"
#include "fileio/fileio.h"
#include "toml/toml.h"

/* containerd's imports, followed as containerd follows them: a bound on
 * the files, and on the paths waiting to be read. */
#define MAX_IMPORTED_FILES 128
#define MAX_PENDING_IMPORTS 1024

const char *engine_default_config(enum engine e)
{
    switch (e) {
    case ENGINE_DOCKER: return "/etc/docker/daemon.json";
    case ENGINE_CRIO: return "/etc/crio/crio.conf.d/99-gpulet.toml";
    case ENGINE_CONTAINERD: return "/etc/containerd/config.toml";
    }
    return NULL;
}

/* ---- files ---- */

/* A regular file's text (followed through links: imports may be links),
 * or NULL. */
static char *read_regular(const char *path, bool follow, struct stat *st, struct gpulet_error *err)
{
    if ((follow ? stat(path, st) : lstat(path, st)) != 0)
        return gpulet_error_errno(err, errno, "cannot read %s", path), NULL;
    if (S_ISLNK(st->st_mode)) {
        gpulet_error_set(err, GPULET_ERR_INPUT,
                         "%s is a symbolic link: gpulet would replace the link with a file; "
                         "pass the file it points to with --config", path);
        return NULL;
    }
    if (!S_ISREG(st->st_mode)) {
        gpulet_error_set(err, GPULET_ERR_INPUT, "%s is not a regular file", path);
        return NULL;
    }
    char *text;
    size_t len;
    if (fileio_read(path, TOML_MAX_BYTES, &text, &len, err) != 0)
        return NULL;
    if (strlen(text) != len) {
        free(text);
        gpulet_error_set(err, GPULET_ERR_INPUT, "%s holds a NUL byte; is it the right file?", path);
        return NULL;
    }
    return text;
}

/* The engine's file, or "" with *exists false when there is none yet. */
static char *read_config(const char *path, bool *exists, struct stat *st, struct gpulet_error *err)
{
    *exists = false;
    if (lstat(path, st) != 0 && errno == ENOENT) {
        char *empty = strdup("");
        if (empty == NULL)
            gpulet_error_errno(err, ENOMEM, "cannot read %s", path);
        return empty;
    }
    char *text = read_regular(path, false, st, err);
    if (text == NULL)
        gpulet_error_prefix(err, "nothing was changed");
    *exists = text != NULL;
    return text;
}

static void base_name(const char *path, char *out, size_t len)
{
    char copy[4096];
    snprintf(copy, sizeof copy, "%s", path);
    snprintf(out, len, "%s", basename(copy));
}

/* Where the backup of path goes: "NAME.gpulet-backup" in fileio_work_dir(). */
static void backup_path(const char *path, char *out, size_t len)
{
    char dir[4096], base[4096];
    fileio_work_dir(path, dir, sizeof dir);
    base_name(path, base, sizeof base);
    snprintf(out, len, "%s/%s.gpulet-backup", dir, base);
}

/* Writes path through a hidden temporary file kept out of drop-in folders,
 * with the mode and owner given, fsync'd and its size checked before it is
 * renamed over path. A rename replaces a symbolic link instead of
 * following it; on any failure (a full disk) path is left as it was. */
static int write_file(const char *path, const char *data, const struct fileio_owner *owner,
                      struct gpulet_error *err)
{
    if (fileio_replace_owned(path, data, strlen(data), FILEIO_DURABLE | FILEIO_OUTSIDE_DROP_IN,
                             owner, err) == 0)
        return 0;
    gpulet_error_prefix(err, "%s is unchanged", path);
    return -1;
}

/* The new content, after a backup of the old one (when keep_backup) in
 * fileio_work_dir(); both keep the old file's mode and owner. A backup or a
 * temporary file that an older gpulet left inside a drop-in folder, where
 * the engine loads it after the file itself, is removed once the new
 * backup is safe. */
static int replace(const char *path, const char *old, bool existed, const struct stat *st,
                   const char *text, bool keep_backup, struct gpulet_error *err)
{
    char copy[4096];
    snprintf(copy, sizeof copy, "%s", path);
    char *dir = dirname(copy);
    if (mkdir(dir, 0755) != 0 && errno != EEXIST)
        return gpulet_error_errno(err, errno, "cannot create %s", dir);
    if (!existed)
        return write_file(path, text, &(struct fileio_owner){0644, (uid_t)-1, (gid_t)-1}, err);
    char backup[4200];
    backup_path(path, backup, sizeof backup);
    const struct fileio_owner as_before = {st->st_mode & 07777, st->st_uid, st->st_gid};
    if (keep_backup && write_file(backup, old, &as_before, err) != 0) {
        gpulet_error_prefix(err, "cannot back up %s; nothing was changed", path);
        return -1;
    }
    if (write_file(path, text, &as_before, err) != 0)
        return -1;
    if (!fileio_is_drop_in_dir(dir))
        return 0;
    char base[4096], pattern[8400];
    base_name(path, base, sizeof base);
    snprintf(pattern, sizeof pattern, "%s/.%s.gpulet-??????", dir, base);
    glob_t g = {0};
    int rc = 0;
    if (glob(pattern, GLOB_NOSORT, NULL, &g) == 0)
        for (size_t i = 0; i < g.gl_pathc && rc == 0; i++)
            if (unlink(g.gl_pathv[i]) != 0 && errno != ENOENT)
                rc = gpulet_error_errno(err, errno, "%s is written, but the engine would also "
                                        "load %s; remove it", path, g.gl_pathv[i]);
    globfree(&g);
    char stale[4200];
    snprintf(stale, sizeof stale, "%s.gpulet-backup", path);
    if (rc == 0 && unlink(stale) != 0 && errno != ENOENT)
        rc = gpulet_error_errno(err, errno, "%s is written, but the engine would also load "
                                "the old backup %s; remove it", path, stale);
    return rc;
}

/* ---- checking that an edit keeps everything ---- */

struct keypath {
    size_t n;
    const char *key[TOML_MAX_DEPTH + 8];
};

static char *keypath_text(const struct keypath *p)
{
    char *text = NULL;
    size_t len = 0;
    FILE *f = open_memstream(&text, &len);
    if (f == NULL)
        return NULL;
    for (size_t i = 0; i < p->n; i++) {
        if (i > 0)
            fputc('.', f);
        toml_write_key(f, p->key[i], strlen(p->key[i]));
    }
    fclose(f);
    return text;
}

/* Whether p is at or under one of the NULL-terminated key lists in
 * mine (NULL-terminated too): the settings gpulet sets. */
static bool is_mine(const struct keypath *p, const char *const *const *mine)
{
    for (; *mine != NULL; mine++) {
        size_t i = 0;
        while ((*mine)[i] != NULL && i < p->n && strcmp((*mine)[i], p->key[i]) == 0)
            i++;
        if ((*mine)[i] == NULL)
            return true;
    }
    return false;
}

/* Every key of old is in new with an equal value, but gpulet's own. */
static int keeps(const struct toml_node *old, const struct toml_node *new, struct keypath *p,
                 const char *const *const *mine, const char *what, struct gpulet_error *err)
{
    for (size_t i = 0; i < old->count; i++) {
        const struct toml_node *ov = old->pairs[i].value;
        if (p->n == sizeof p->key / sizeof p->key[0])
            return gpulet_error_set(err, GPULET_ERR_INPUT, "%s: nested too deep", what);
        p->key[p->n++] = old->pairs[i].key;
        const struct toml_node *nv = toml_get(new, old->pairs[i].key);
        bool ok = is_mine(p, mine) ||
                  (ov->type == TOML_TABLE
                       ? nv != NULL && nv->type == TOML_TABLE &&
                             keeps(ov, nv, p, mine, what, err) == 0
                       : nv != NULL && toml_equal(ov, nv));
        if (!ok) {
            if (ov->type == TOML_TABLE && nv != NULL && nv->type == TOML_TABLE)
                return -1; /* the nested call said which key */
            char *key = keypath_text(p);
            gpulet_error_set(err, GPULET_ERR_INPUT,
                             "%s would lose or change %s (set in %s line %lu); nothing was "
                             "changed",
                             what, key ? key : "a key", ov->file ? ov->file : "?", ov->line);
            free(key);
            return -1;
        }
        p->n--;
    }
    return 0;
}

static char *text_of(void (*fn)(FILE *, const struct toml_node *, const char *const *),
                     const char *head, const struct toml_node *t, const char *const *prefix)
{
    char *text = NULL;
    size_t len = 0;
    FILE *f = open_memstream(&text, &len);
    if (f == NULL)
        return NULL;
    fputs(head, f);
    fn(f, t, prefix);
    fclose(f);
    return text;
}

/* The table at key in t, made when missing; NULL (with err) when key
 * holds something else. */
static struct toml_node *table_in(struct toml_node *t, const char *key, const char *file,
                                  struct gpulet_error *err)
{
    struct toml_node *v = toml_get(t, key);
    if (v != NULL && v->type != TOML_TABLE) {
        gpulet_error_set(err, GPULET_ERR_INPUT,
                         "%s line %lu: \"%s\" is not a table; nothing was changed",
                         v->file ? v->file : file, v->line, key);
        return NULL;
    }
    if (v == NULL && ((v = toml_new(TOML_TABLE)) == NULL || toml_set(t, key, v) != 0)) {
        gpulet_error_errno(err, ENOMEM, "cannot edit %s", file);
        return NULL;
    }
    return v;
}

static struct toml_node *literal(enum toml_type type, const char *text)
{
    struct toml_node *v = toml_new_string(text);
    if (v != NULL)
        v->type = type;
    return v;
}

/* ---- Docker ---- */

char *configure_docker_text(const char *path, const char *old, const struct configure_options *opts,
                            struct gpulet_error *err)
{
    if (strncmp(old, "\xef\xbb\xbf", 3) == 0)
        old += 3;
    json_t *root;
    json_error_t jerr;
    if (old[strspn(old, " \t\r\n")] == '\0') {
        root = json_object();
    } else {
        root = json_loads(old, JSON_REJECT_DUPLICATES, &jerr);
        if (root == NULL || !json_is_object(root)) {
            json_decref(root);
            gpulet_error_set(err, GPULET_ERR_INPUT,
                             "cannot parse %s line %d: %s; nothing was changed", path,
                             root ? 1 : jerr.line, root ? "not a JSON object" : jerr.text);
            return NULL;
        }
    }
    json_t *before = json_deep_copy(root);
    json_t *runtimes = json_object_get(root, "runtimes");
    if (runtimes == NULL) {
        runtimes = json_object();
        json_object_set_new(root, "runtimes", runtimes);
    } else if (!json_is_object(runtimes)) {
        json_decref(root);
        json_decref(before);
        gpulet_error_set(err, GPULET_ERR_INPUT,
                         "%s: \"runtimes\" is not an object; nothing was changed", path);
        return NULL;
    }
    /* An nvidia runtime already there keeps its other settings (runtimeArgs
     * ...): only its path is gpulet's. */
    json_t *old_nvidia = json_object_get(runtimes, "nvidia");
    json_t *nvidia = json_is_object(old_nvidia) ? json_deep_copy(old_nvidia) : json_object();
    json_object_set_new(nvidia, "path", json_string(opts->runtime_path));
    if (json_object_get(nvidia, "args") == NULL)
        json_object_set_new(nvidia, "args", json_array());
    json_object_set_new(runtimes, "nvidia", nvidia);
    if (opts->set_as_default)
        json_object_set_new(root, "default-runtime", json_string("nvidia"));
    char *text = json_dumps(root, JSON_INDENT(2) | JSON_PRESERVE_ORDER);
    /* Read back what will be written: every old key but ours, unchanged. */
    json_t *after = text ? json_loads(text, JSON_REJECT_DUPLICATES, &jerr) : NULL;
    const char *key;
    json_t *value;
    bool kept = after != NULL && json_equal(json_object_get(after, "runtimes"), runtimes);
    json_object_foreach(before, key, value) {
        if (strcmp(key, "runtimes") == 0) {
            const char *name;
            json_t *r;
            json_object_foreach(value, name, r)
                kept = kept && (strcmp(name, "nvidia") == 0 ||
                                json_equal(r, json_object_get(json_object_get(after, key), name)));
        } else if (!(opts->set_as_default && strcmp(key, "default-runtime") == 0)) {
            kept = kept && json_equal(value, json_object_get(after, key));
        }
    }
    json_decref(root);
    json_decref(before);
    json_decref(after);
    if (!kept || text == NULL) {
        free(text);
        gpulet_error_set(err, GPULET_ERR_INTERNAL,
                         "%s: the edited JSON does not read back the same; nothing was changed",
                         path);
        return NULL;
    }
    size_t len = strlen(text);
    char *with_newline = realloc(text, len + 2);
    if (with_newline == NULL) {
        free(text);
        gpulet_error_errno(err, ENOMEM, "cannot edit %s", path);
        return NULL;
    }
    with_newline[len] = '\n';
    with_newline[len + 1] = '\0';
    return with_newline;
}

/* ---- CRI-O ---- */

char *configure_crio_text(const char *path, const char *old, const struct configure_options *opts,
                          struct gpulet_error *err)
{
    struct toml_node *before = toml_parse(path, old, strlen(old), err);
    if (before == NULL) {
        gpulet_error_prefix(err, "nothing was changed");
        return NULL;
    }
    struct toml_node *root = toml_copy(before), *crio, *runtime, *runtimes, *nv = NULL;
    char *text = NULL;
    if (root == NULL || (crio = table_in(root, "crio", path, err)) == NULL ||
        (runtime = table_in(crio, "runtime", path, err)) == NULL ||
        (runtimes = table_in(runtime, "runtimes", path, err)) == NULL)
        goto out;
    /* An nvidia runtime already there keeps the operator's other settings
     * (privileged_without_host_devices, allowed_annotations, ...). */
    const struct toml_node *old_nv = toml_get(runtimes, "nvidia");
    nv = old_nv && old_nv->type == TOML_TABLE ? toml_copy(old_nv) : toml_new(TOML_TABLE);
    if (nv == NULL ||
        toml_set(nv, "runtime_path", toml_new_string(opts->runtime_path)) != 0 ||
        toml_set(nv, "runtime_type", toml_new_string("oci")) != 0 ||
        toml_set(runtimes, "nvidia", toml_copy(nv)) != 0)
        goto out;
    const struct toml_node *def = toml_get(runtime, "default_runtime");
    if (opts->set_as_default)
        toml_set(runtime, "default_runtime", toml_new_string("nvidia"));
    else if (def != NULL && def->type == TOML_STRING && strcmp(def->text, "nvidia") == 0)
        toml_remove(runtime, "default_runtime"); /* gpulet's own, from an earlier run */
    text = text_of(toml_write,
                   "# Written by gpulet runtime configure: the nvidia runtime is gpulet-runtime.\n",
                   root, NULL);
    struct toml_node *after = text ? toml_parse(path, text, strlen(text), err) : NULL;
    static const char *const ours[] = {"crio", "runtime", "runtimes", "nvidia", NULL};
    static const char *const dflt[] = {"crio", "runtime", "default_runtime", NULL};
    const char *const *const mine[] = {ours, dflt, NULL};
    struct keypath p = {0};
    const struct toml_node *got = after ? toml_path(after, ours) : NULL;
    if (after == NULL || keeps(before, after, &p, mine, path, err) != 0 || got == NULL ||
        !toml_equal(got, nv)) {
        if (after != NULL && got != NULL && !toml_equal(got, nv))
            gpulet_error_set(err, GPULET_ERR_INTERNAL, "%s: the edit does not read back; "
                             "nothing was changed", path);
        free(text);
        text = NULL;
    }
    toml_free(after);
out:
    if (text == NULL && err != NULL && err->kind == GPULET_ERR_NONE)
        gpulet_error_errno(err, ENOMEM, "cannot edit %s", path);
    toml_free(nv);
    toml_free(root);
    toml_free(before);
    return text;
}

/* ---- containerd ---- */

/* What containerd (1.6 to 2.0) loads: the main file, then each import in
 * order, breadth first, each path once. Tables merge key by key, except
 * that each table directly under `plugins` is replaced whole by the last
 * file that has it. */
struct ctd_model {
    struct toml_node *merged;
    size_t files;
    char *path[MAX_IMPORTED_FILES];
    struct toml_node *root[MAX_IMPORTED_FILES];
    bool drop_loaded;
};

struct ctd_source {
    const char *main_path, *main_text;
    const char *drop_path, *drop_text; /* drop_text NULL: as if there were none */
};

static void ctd_free(struct ctd_model *m)
{
    toml_free(m->merged);
    for (size_t i = 0; i < m->files; i++) {
        toml_free(m->root[i]);
        free(m->path[i]);
    }
}

static int merge(struct toml_node *to, const struct toml_node *from, bool top)
{
    for (size_t i = 0; i < from->count; i++) {
        const char *key = from->pairs[i].key;
        const struct toml_node *v = from->pairs[i].value;
        struct toml_node *have = toml_get(to, key);
        if (top && strcmp(key, "imports") == 0)
            continue;
        int rc;
        if (top && strcmp(key, "plugins") == 0 && v->type == TOML_TABLE && have != NULL &&
            have->type == TOML_TABLE) {
            rc = 0;
            for (size_t j = 0; j < v->count && rc == 0; j++)
                rc = toml_set(have, v->pairs[j].key, toml_copy(v->pairs[j].value));
        } else if (v->type == TOML_TABLE && have != NULL && have->type == TOML_TABLE) {
            rc = merge(have, v, false);
        } else {
            rc = toml_set(to, key, toml_copy(v));
        }
        if (rc != 0)
            return -1;
    }
    return 0;
}

/* Where an import points: a plain path relative to the importing file's
 * folder; a pattern (with '*') relative to containerd's working folder,
 * which gpulet cannot know (NULL). */
static char *import_path(const char *importer, const char *import)
{
    if (import[0] == '/')
        return strdup(import);
    if (strchr(import, '*') != NULL)
        return NULL;
    char copy[4096], *out;
    snprintf(copy, sizeof copy, "%s", importer);
    return asprintf(&out, "%s/%s", dirname(copy), import) < 0 ? NULL : out;
}

static int by_name(const void *a, const void *b)
{
    return strcmp(*(char *const *)a, *(char *const *)b);
}

/* The files an import names: containerd globs a path with a '*'. */
static int expand(const struct ctd_source *src, const char *path, char **pending, size_t *tail,
                  struct gpulet_error *err)
{
    size_t first = *tail;
    if (strchr(path, '*') == NULL) {
        if (*tail == MAX_PENDING_IMPORTS || (pending[*tail] = strdup(path)) == NULL)
            return gpulet_error_set(err, GPULET_ERR_INPUT, "more than %d imports",
                                    MAX_PENDING_IMPORTS);
        (*tail)++;
        return 0;
    }
    glob_t g;
    int rc = glob(path, 0, NULL, &g);
    if (rc != 0 && rc != GLOB_NOMATCH)
        return gpulet_error_set(err, GPULET_ERR_INPUT, "cannot list the imports %s", path);
    bool drop_seen = false;
    for (size_t i = 0; rc == 0 && i < g.gl_pathc; i++) {
        if (*tail == MAX_PENDING_IMPORTS || (pending[*tail] = strdup(g.gl_pathv[i])) == NULL) {
            globfree(&g);
            return gpulet_error_set(err, GPULET_ERR_INPUT, "more than %d imports",
                                    MAX_PENDING_IMPORTS);
        }
        drop_seen = drop_seen || strcmp(g.gl_pathv[i], src->drop_path) == 0;
        (*tail)++;
    }
    if (rc == 0)
        globfree(&g);
    /* The drop-in about to be written is among the matches. */
    if (src->drop_text != NULL && !drop_seen && fnmatch(path, src->drop_path, FNM_PATHNAME) == 0) {
        if (*tail == MAX_PENDING_IMPORTS || (pending[*tail] = strdup(src->drop_path)) == NULL)
            return gpulet_error_set(err, GPULET_ERR_INPUT, "more than %d imports",
                                    MAX_PENDING_IMPORTS);
        (*tail)++;
        qsort(pending + first, *tail - first, sizeof *pending, by_name);
    }
    return 0;
}

static int ctd_load(const struct ctd_source *src, struct ctd_model *m, struct gpulet_error *err)
{
    char *pending[MAX_PENDING_IMPORTS];
    size_t head = 0, tail = 0;
    int rc = -1;
    *m = (struct ctd_model){0};
    if ((m->merged = toml_new(TOML_TABLE)) == NULL ||
        (pending[tail++] = strdup(src->main_path)) == NULL) {
        tail = 0;
        gpulet_error_errno(err, ENOMEM, "cannot read %s", src->main_path);
        goto out;
    }
    while (head < tail) {
        char *path = pending[head++];
        bool seen = false;
        for (size_t i = 0; i < m->files && !seen; i++)
            seen = strcmp(m->path[i], path) == 0;
        bool is_drop = strcmp(path, src->drop_path) == 0;
        if (seen || (is_drop && src->drop_text == NULL)) {
            free(path);
            continue;
        }
        if (m->files == MAX_IMPORTED_FILES) {
            free(path);
            gpulet_error_set(err, GPULET_ERR_INPUT, "%s imports more than %d files",
                             src->main_path, MAX_IMPORTED_FILES);
            goto out;
        }
        m->path[m->files] = path;
        struct stat st;
        char *owned = NULL;
        const char *text = m->files == 0 ? src->main_text
                           : is_drop     ? src->drop_text
                                         : (owned = read_regular(path, true, &st, err));
        if (text == NULL) {
            free(path);
            gpulet_error_prefix(err, "%s imports it", m->path[0]);
            goto out;
        }
        m->drop_loaded = m->drop_loaded || is_drop;
        struct toml_node *root = toml_parse(path, text, strlen(text), err);
        free(owned);
        if (root == NULL) {
            free(path);
            goto out;
        }
        m->root[m->files++] = root;
        if (merge(m->merged, root, true) != 0) {
            gpulet_error_errno(err, ENOMEM, "cannot read %s", path);
            goto out;
        }
        const struct toml_node *imports = toml_get(root, "imports");
        size_t n = imports == NULL ? 0 : imports->type == TOML_ARRAY ? imports->count : 1;
        for (size_t i = 0; i < n; i++) {
            const struct toml_node *one = imports->type == TOML_ARRAY ? imports->items[i] : imports;
            if (one->type != TOML_STRING || strlen(one->text) != one->len) {
                gpulet_error_set(err, GPULET_ERR_INPUT,
                                 "%s line %lu: imports must be a path or a list of paths", path,
                                 one->line);
                goto out;
            }
            char *full = import_path(path, one->text);
            int e = full ? expand(src, full, pending, &tail, err)
                  : strchr(one->text, '*')
                      ? gpulet_error_set(err, GPULET_ERR_INPUT,
                                         "%s line %lu: the import \"%s\" is a pattern relative to "
                                         "containerd's working folder, not to the file; make it "
                                         "absolute", path, one->line, one->text)
                      : gpulet_error_errno(err, ENOMEM, "cannot read %s", path);
            free(full);
            if (e != 0)
                goto out;
        }
    }
    rc = 0;
out:
    while (head < tail)
        free(pending[head++]);
    if (rc != 0)
        ctd_free(m);
    return rc;
}

/* Whether one of a file's imports names path. */
static bool imports_name(const char *main_path, const struct toml_node *imports,
                         const char *drop_path)
{
    size_t n = imports == NULL ? 0 : imports->type == TOML_ARRAY ? imports->count : 1;
    bool found = false;
    for (size_t i = 0; i < n && !found; i++) {
        const struct toml_node *one = imports->type == TOML_ARRAY ? imports->items[i] : imports;
        char *full = one->type == TOML_STRING ? import_path(main_path, one->text) : NULL;
        found = full != NULL && (strchr(full, '*') ? fnmatch(full, drop_path, FNM_PATHNAME) == 0
                                                   : strcmp(full, drop_path) == 0);
        free(full);
    }
    return found;
}

/* The main file with the drop-in's folder among its imports, edited as
 * text so its comments and layout stay. */
static char *main_with_import(const char *main_path, const char *old, bool existed,
                              const struct toml_node *root, const char *drop_path,
                              const char *glob)
{
    struct toml_node *g = toml_new_string(glob);
    char *quoted = NULL, *out = NULL;
    size_t len = 0;
    FILE *f = g ? open_memstream(&quoted, &len) : NULL;
    if (f == NULL) {
        toml_free(g);
        return NULL;
    }
    toml_write_value(f, g);
    fclose(f);
    toml_free(g);
    const struct toml_node *imports = toml_get(root, "imports");
    const struct toml_node *version = toml_get(root, "version");
    int rc;
    if (!existed) {
        rc = asprintf(&out, "version = 2\nimports = [%s]\n", quoted);
    } else if (imports_name(main_path, imports, drop_path)) {
        rc = (out = strdup(old)) ? 0 : -1;
    } else if (imports == NULL) {
        /* on the line after the version, which is in the root table */
        const char *nl = strchr(old + version->end, '\n');
        int head = nl ? (int)(nl + 1 - old) : (int)strlen(old);
        rc = asprintf(&out, "%.*s%simports = [%s]\n%s", head, old, nl ? "" : "\n", quoted,
                      old + head);
    } else if (imports->type == TOML_STRING) {
        rc = asprintf(&out, "%.*s[%.*s, %s]%s", (int)imports->start, old,
                      (int)(imports->end - imports->start), old + imports->start, quoted,
                      old + imports->end);
    } else {
        /* after the last path, or inside the empty list */
        size_t at = imports->count ? imports->items[imports->count - 1]->end : imports->start + 1;
        rc = asprintf(&out, "%.*s%s%s%s", (int)at, old, imports->count ? ", " : "", quoted,
                      old + at);
    }
    free(quoted);
    return rc < 0 ? NULL : out;
}

/* 0 when no import of the files containerd loads matches a file gpulet
 * writes beside them (its backup of the main file, a temporary file), so
 * that none of them is ever loaded as configuration. */
static int loads_our_files(const struct ctd_model *m, const char *main_path,
                           const char *drop_path, struct gpulet_error *err)
{
    char ours[3][8400], dir[4096], base[4096];
    backup_path(main_path, ours[0], sizeof ours[0]);
    fileio_work_dir(main_path, dir, sizeof dir);
    base_name(main_path, base, sizeof base);
    snprintf(ours[1], sizeof ours[1], "%s/.%s.gpulet-XXXXXX", dir, base);
    fileio_work_dir(drop_path, dir, sizeof dir);
    base_name(drop_path, base, sizeof base);
    snprintf(ours[2], sizeof ours[2], "%s/.%s.gpulet-XXXXXX", dir, base);
    for (size_t i = 0; i < m->files; i++)
        for (size_t k = 0; k < 3; k++)
            if (imports_name(m->path[i], toml_get(m->root[i], "imports"), ours[k]))
                return gpulet_error_set(err, GPULET_ERR_INPUT,
                                        "an import in %s matches %s, a file gpulet writes while "
                                        "it changes the configuration, and containerd would load "
                                        "it; import \"*.toml\" instead; nothing was changed",
                                        m->path[i], ours[k]);
    return 0;
}

int configure_containerd_text(const char *main_path, const char *old_main, bool existed,
                              const char *drop_path, const char *drop_glob,
                              const struct configure_options *opts, char **new_main,
                              char **new_drop, struct gpulet_error *err)
{
    *new_main = *new_drop = NULL;
    /* What containerd loads now, without gpulet's drop-in (rewritten from
     * the other files each time). */
    struct ctd_source src = {main_path, existed ? old_main : "", drop_path, NULL};
    struct ctd_model before, after = {0};
    if (ctd_load(&src, &before, err) != 0) {
        gpulet_error_prefix(err, "the containerd config does not load; nothing was changed");
        return -1;
    }
    int rc = -1;
    struct toml_node *cri = NULL, *nvidia = NULL, *containerd, *runtimes;
    const struct toml_node *v = toml_get(before.root[0], "version");
    const char *version = !existed ? "2" : v == NULL ? "1" : v->text;
    if (v != NULL && v->type != TOML_INTEGER) {
        gpulet_error_set(err, GPULET_ERR_INPUT,
                         "%s line %lu: version is not a number; nothing was changed", main_path,
                         v->line);
        goto out;
    }
    if (strcmp(version, "2") != 0 && strcmp(version, "3") != 0) {
        gpulet_error_set(err, GPULET_ERR_INPUT,
                         "%s is containerd config version %s; gpulet writes versions 2 and 3 "
                         "(migrate with `containerd config migrate`); nothing was changed",
                         main_path, version);
        goto out;
    }
    const char *plugin = version[0] == '3' ? "io.containerd.cri.v1.runtime"
                                           : "io.containerd.grpc.v1.cri";
    struct toml_node *plugins = table_in(before.merged, "plugins", main_path, err);
    const struct toml_node *old_cri = plugins ? toml_get(plugins, plugin) : NULL;
    if (plugins == NULL || (cri = old_cri ? toml_copy(old_cri) : toml_new(TOML_TABLE)) == NULL ||
        (old_cri != NULL && old_cri->type != TOML_TABLE) ||
        (containerd = table_in(cri, "containerd", main_path, err)) == NULL)
        goto out;
    /* Without a runtimes table containerd has its default runc; a table
     * with only nvidia in it would replace that default. */
    bool default_runc = toml_get(containerd, "runtimes") == NULL;
    if ((runtimes = table_in(containerd, "runtimes", main_path, err)) == NULL)
        goto out;
    struct toml_node *runc = default_runc ? toml_new(TOML_TABLE) : NULL;
    if (default_runc && (runc == NULL || toml_set(runtimes, "runc", runc) != 0 ||
                         toml_set(runc, "runtime_type",
                                  toml_new_string("io.containerd.runc.v2")) != 0)) {
        gpulet_error_errno(err, ENOMEM, "cannot edit %s", main_path);
        goto out;
    }
    const char *const systemd_path[] = {"runc", "options", "SystemdCgroup", NULL};
    const struct toml_node *systemd = toml_path(runtimes, systemd_path);
    /* An nvidia runtime already there keeps the operator's other settings
     * (privileged_without_host_devices, SystemdCgroup, ...): only its type
     * and binary are gpulet's. */
    const struct toml_node *old_nvidia = toml_get(runtimes, "nvidia");
    const struct toml_node *old_options = toml_get(old_nvidia, "options");
    nvidia = old_nvidia && old_nvidia->type == TOML_TABLE ? toml_copy(old_nvidia)
                                                          : toml_new(TOML_TABLE);
    struct toml_node *options = old_options && old_options->type == TOML_TABLE
                                    ? toml_copy(old_options)
                                    : toml_new(TOML_TABLE);
    if (nvidia == NULL || options == NULL ||
        toml_set(nvidia, "runtime_type", toml_new_string("io.containerd.runc.v2")) != 0 ||
        toml_set(nvidia, "options", options) != 0 ||
        toml_set(options, "BinaryName", toml_new_string(opts->runtime_path)) != 0 ||
        (systemd && systemd->type == TOML_BOOL && strcmp(systemd->text, "true") == 0 &&
         toml_set(options, "SystemdCgroup", literal(TOML_BOOL, "true")) != 0) ||
        toml_set(runtimes, "nvidia", toml_copy(nvidia)) != 0 ||
        (opts->set_as_default &&
         toml_set(containerd, "default_runtime_name", toml_new_string("nvidia")) != 0)) {
        if (nvidia == NULL)
            toml_free(options);
        gpulet_error_errno(err, ENOMEM, "cannot edit %s", main_path);
        goto out;
    }
    char head[4600];
    snprintf(head, sizeof head,
             "# Written by gpulet runtime configure: the \"nvidia\" runtime runs gpulet-runtime.\n"
             "# The CRI plugin's settings that containerd loads from %s and its imports\n"
             "# are repeated here: before containerd 2.1 an imported plugin table replaces\n"
             "# the main file's whole. Run configure again after changing them there.\n"
             "version = %s\n",
             main_path, version);
    const char *const prefix[] = {"plugins", plugin, NULL};
    *new_drop = text_of(toml_write, head, cri, prefix);
    *new_main = main_with_import(main_path, old_main, existed, before.root[0], drop_path, drop_glob);
    if (*new_drop == NULL || *new_main == NULL) {
        gpulet_error_errno(err, ENOMEM, "cannot edit %s", main_path);
        goto out;
    }
    /* What containerd would load: every old setting, gpulet's runtime. */
    src = (struct ctd_source){main_path, *new_main, drop_path, *new_drop};
    if (ctd_load(&src, &after, err) != 0) {
        gpulet_error_prefix(err, "the edited containerd config would not load; nothing was changed");
        goto out;
    }
    const char *const ours[] = {"plugins", plugin, "containerd", "runtimes", "nvidia", NULL};
    const char *const dflt[] = {"plugins", plugin, "containerd", "default_runtime_name", NULL};
    const char *const *const mine[] = {ours, opts->set_as_default ? dflt : NULL, NULL};
    struct keypath p = {0};
    const struct toml_node *got = toml_path(after.merged, ours);
    const struct toml_node *got_cri = toml_path(after.merged, prefix);
    if (!after.drop_loaded) {
        gpulet_error_set(err, GPULET_ERR_INPUT,
                         "%s: containerd would not load %s (the imports do not reach it); "
                         "nothing was changed", main_path, drop_path);
    } else if (got == NULL || !toml_equal(got, nvidia)) {
        gpulet_error_set(err, GPULET_ERR_INPUT,
                         "%s replaces the CRI plugin's table after %s is loaded, so the nvidia "
                         "runtime would not be seen; move its settings into %s; nothing was "
                         "changed", got_cri && got_cri->file ? got_cri->file : "an import",
                         drop_path, main_path);
    } else if (keeps(before.merged, after.merged, &p, mine, "the merged containerd config",
                     err) == 0) {
        rc = loads_our_files(&after, main_path, drop_path, err);
    }
out:
    if (rc != 0) {
        free(*new_main);
        free(*new_drop);
        *new_main = *new_drop = NULL;
    }
    toml_free(cri);
    toml_free(nvidia);
    ctd_free(&before);
    if (after.merged != NULL)
        ctd_free(&after);
    return rc;
}

static int configure_containerd(const struct configure_options *opts, bool *changed, FILE *out,
                                struct gpulet_error *err)
{
    const char *main_path = opts->config ? opts->config : engine_default_config(ENGINE_CONTAINERD);
    char copy[4096], drop_path[4200], glob[4200];
    snprintf(copy, sizeof copy, "%s", main_path);
    char *dir = dirname(copy);
    snprintf(drop_path, sizeof drop_path, "%s/conf.d/99-gpulet.toml", dir);
    snprintf(glob, sizeof glob, "%s/conf.d/*.toml", dir);
    bool main_existed, drop_existed;
    struct stat main_st, drop_st;
    char *old_main = read_config(main_path, &main_existed, &main_st, err);
    if (old_main == NULL)
        return -1;
    char *old_drop = read_config(drop_path, &drop_existed, &drop_st, err);
    if (old_drop == NULL) {
        free(old_main);
        return -1;
    }
    char *new_main, *new_drop;
    int rc = configure_containerd_text(main_path, old_main, main_existed, drop_path, glob, opts,
                                       &new_main, &new_drop, err);
    if (rc == 0) {
        bool main_changed = strcmp(old_main, new_main) != 0;
        bool drop_changed = strcmp(old_drop, new_drop) != 0;
        *changed = main_changed || drop_changed;
        if (opts->dry_run) {
            fprintf(out, "# %s%s\n%s\n# %s%s\n%s", drop_path,
                    drop_changed ? " would become:" : " is already configured:", new_drop,
                    main_path, main_changed ? " would become:" : " is already configured:",
                    new_main);
        } else {
            /* The drop-in first: until the main file imports it, it is
             * not read. */
            if (drop_changed)
                rc = replace(drop_path, old_drop, drop_existed, &drop_st, new_drop, false, err);
            if (rc == 0 && main_changed)
                rc = replace(main_path, old_main, main_existed, &main_st, new_main, true, err);
            char backup[4200];
            backup_path(main_path, backup, sizeof backup);
            if (rc == 0 && *changed)
                fprintf(out, "gpulet: wrote %s%s%s%s%s\n", drop_changed ? drop_path : "",
                        drop_changed && main_changed ? " and " : "", main_changed ? main_path : "",
                        main_changed && main_existed ? "; the old one is in " : "",
                        main_changed && main_existed ? backup : "");
            else if (rc == 0)
                fprintf(out, "gpulet: %s is already configured; nothing changed\n", main_path);
        }
    }
    free(old_main);
    free(old_drop);
    free(new_main);
    free(new_drop);
    return rc;
}

/* What to do next: a dry run changed nothing, and an engine whose file
 * did not change needs no restart. */
static void print_next_step(FILE *out, bool changed, bool dry_run)
{
    if (dry_run) {
        fprintf(out, "# --dry-run: nothing was changed\n");
        return;
    }
    fprintf(out, "\n%s this RuntimeClass:\n"
                 "apiVersion: node.k8s.io/v1\nkind: RuntimeClass\nmetadata:\n"
                 "  name: nvidia\nhandler: nvidia\n",
            changed ? "Then restart the engine and apply" : "Pods use the runtime through");
}

/* An engine keeps its configuration in a folder its package made: one that
 * is missing means a mistyped path, which gpulet must not create. */
static int check_folder(const char *path, struct gpulet_error *err)
{
    char dir[4096];
    fileio_work_dir(path, dir, sizeof dir);
    struct stat st;
    int found = stat(dir, &st);
    if (found == 0 && S_ISDIR(st.st_mode))
        return 0;
    return gpulet_error_set(err, GPULET_ERR_USAGE,
                            "%s: its folder %s is not there (%s); is the path right? gpulet "
                            "adds to an engine's configuration but creates no folder for it; "
                            "nothing was changed",
                            path, dir, found == 0 ? "not a folder" : strerror(errno));
}

int runtime_configure(const struct configure_options *opts, bool *changed, FILE *out,
                      struct gpulet_error *err)
{
    if (opts->runtime_path[0] != '/')
        return gpulet_error_set(err, GPULET_ERR_USAGE,
                                "the runtime path must be absolute, not \"%s\"", opts->runtime_path);
    const char *path = opts->config ? opts->config : engine_default_config(opts->engine);
    if (check_folder(path, err) < 0)
        return -1;
    if (opts->engine == ENGINE_CONTAINERD) {
        int rc = configure_containerd(opts, changed, out, err);
        if (rc == 0)
            print_next_step(out, *changed, opts->dry_run);
        return rc;
    }
    bool existed;
    struct stat st;
    char *old = read_config(path, &existed, &st, err);
    if (old == NULL)
        return -1;
    char *text = opts->engine == ENGINE_DOCKER ? configure_docker_text(path, old, opts, err)
                                               : configure_crio_text(path, old, opts, err);
    if (text == NULL) {
        free(old);
        return -1;
    }
    *changed = strcmp(old, text) != 0;
    int rc = 0;
    if (opts->dry_run) {
        fprintf(out, "# %s%s\n%s", path, *changed ? " would become:" : " is already configured:",
                text);
    } else if (*changed) {
        rc = replace(path, old, existed, &st, text, true, err);
        char backup[4200];
        backup_path(path, backup, sizeof backup);
        if (rc == 0 && existed)
            fprintf(out, "gpulet: wrote %s (the old one is in %s)\n", path, backup);
        else if (rc == 0)
            fprintf(out, "gpulet: wrote %s\n", path);
    } else {
        fprintf(out, "gpulet: %s is already configured; nothing changed\n", path);
    }
    if (rc == 0)
        print_next_step(out, *changed, opts->dry_run);
    free(old);
    free(text);
    return rc;
}
