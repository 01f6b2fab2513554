#include "runtime.h"

#include <errno.h>
#include <fcntl.h>
#include <libgen.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include <jansson.h>

#include "fileio/fileio.h"
#include "toml_scan.h"

const char *engine_default_config(enum engine e)
{
    switch (e) {
    case ENGINE_DOCKER: return "/etc/docker/daemon.json";
    case ENGINE_CRIO: return "/etc/crio/crio.conf.d/99-gpulet.toml";
    case ENGINE_CONTAINERD: return "/etc/containerd/config.toml";
    }
    return NULL;
}

/* The engine's file, or "" with *exists false when there is none yet. */
static char *read_all(const char *path, bool *exists, struct gpulet_error *err)
{
    char *text;
    size_t len;
    struct gpulet_error why = {0};
    *exists = true;
    if (fileio_read(path, 16u << 20, &text, &len, &why) == 0)
        return text;
    if (why.kind == GPULET_ERR_SYSTEM && why.sys_errno == ENOENT) {
        *exists = false;
        return strdup("");
    }
    if (err != NULL)
        *err = why;
    return NULL;
}

/* The new content, with a backup of the old one beside it first. */
static int replace(const char *path, const char *old, bool existed, const char *text,
                   struct gpulet_error *err)
{
    char copy[4096];
    snprintf(copy, sizeof copy, "%s", path);
    char *dir = dirname(copy);
    if (mkdir(dir, 0755) != 0 && errno != EEXIST)
        return gpulet_error_errno(err, errno, "cannot create %s", dir);
    if (existed) {
        char backup[4200];
        snprintf(backup, sizeof backup, "%s.gpulet-backup", path);
        FILE *b = fopen(backup, "w");
        if (b == NULL || fputs(old, b) < 0 || fclose(b) != 0)
            return gpulet_error_errno(err, errno, "cannot back up %s to %s", path, backup);
    }
    return fileio_replace(path, text, strlen(text), FILEIO_DURABLE, err);
}

static char *docker_config(const char *path, const char *old, const struct configure_options *opts,
                           struct gpulet_error *err)
{
    json_t *root;
    if (old[0] == '\0') {
        root = json_object();
    } else {
        json_error_t jerr;
        root = json_loads(old, JSON_REJECT_DUPLICATES, &jerr);
        if (root == NULL || !json_is_object(root)) {
            json_decref(root);
            gpulet_error_set(err, GPULET_ERR_INPUT,
                             "cannot parse %s line %d: %s; nothing was changed", path,
                             root ? 1 : jerr.line, root ? "not a JSON object" : jerr.text);
            return NULL;
        }
    }
    json_t *runtimes = json_object_get(root, "runtimes");
    if (runtimes == NULL) {
        runtimes = json_object();
        json_object_set_new(root, "runtimes", runtimes);
    } else if (!json_is_object(runtimes)) {
        json_decref(root);
        gpulet_error_set(err, GPULET_ERR_INPUT,
                         "%s: \"runtimes\" is not an object; nothing was changed", path);
        return NULL;
    }
    json_object_set_new(runtimes, "nvidia",
                        json_pack("{s:s, s:[]}", "path", opts->runtime_path, "args"));
    if (opts->set_as_default)
        json_object_set_new(root, "default-runtime", json_string("nvidia"));
    char *text = json_dumps(root, JSON_INDENT(2) | JSON_PRESERVE_ORDER);
    json_decref(root);
    if (text == NULL) {
        gpulet_error_set(err, GPULET_ERR_INTERNAL, "cannot write JSON");
        return NULL;
    }
    size_t len = strlen(text);
    char *with_newline = realloc(text, len + 2);
    if (with_newline == NULL) {
        free(text);
        return NULL;
    }
    with_newline[len] = '\n';
    with_newline[len + 1] = '\0';
    return with_newline;
}

static char *crio_config(const struct configure_options *opts)
{
    char *text = NULL;
    size_t len = 0;
    FILE *f = open_memstream(&text, &len);
    if (f == NULL)
        return NULL;
    fprintf(f, "# Written by gpulet runtime configure: the nvidia runtime is gpulet-runtime.\n");
    if (opts->set_as_default)
        fprintf(f, "[crio.runtime]\ndefault_runtime = \"nvidia\"\n\n");
    fprintf(f, "[crio.runtime.runtimes.nvidia]\nruntime_path = \"%s\"\nruntime_type = \"oci\"\n",
            opts->runtime_path);
    fclose(f);
    return text;
}


/* ---- containerd ---- */

#define MAX_TABLES 512

struct containerd_scan {
    const char *text;
    const char *version_at;
    const char *imports_at;
    size_t tables;
    const char *table_at[MAX_TABLES];
    char table_key[MAX_TABLES][512];
};

static int containerd_item(enum toml_item item, const char *key, const char *at,
                           unsigned long line, void *user)
{
    (void)line;
    struct containerd_scan *c = user;
    if (item == TOML_TOP_KEY) {
        if (strcmp(key, "version") == 0)
            c->version_at = at;
        else if (strcmp(key, "imports") == 0)
            c->imports_at = at;
        return 0;
    }
    if (c->tables == MAX_TABLES)
        return -1;
    c->table_at[c->tables] = at;
    snprintf(c->table_key[c->tables++], sizeof c->table_key[0], "%s", key);
    return 0;
}

static bool starts_with_path(const char *key, const char *prefix)
{
    size_t n = strlen(prefix);
    return strncmp(key, prefix, n) == 0 && (key[n] == '\0' || key[n] == '\x1f');
}

static char *containerd_config(const char *main_path, const char *old, bool existed,
                               const struct configure_options *opts, char **main_out,
                               const char *drop_in_glob, struct gpulet_error *err)
{
    struct containerd_scan *c = calloc(1, sizeof *c);
    if (c == NULL) {
        gpulet_error_errno(err, ENOMEM, "cannot read %s", main_path);
        return NULL;
    }
    c->text = old;
    if (toml_scan(main_path, old, containerd_item, c, err) < 0) {
        gpulet_error_prefix(err, "cannot parse the containerd config; nothing was changed");
        free(c);
        return NULL;
    }
    int version = existed ? 1 : 2;
    if (c->version_at && sscanf(strchr(c->version_at, '=') + 1, "%d", &version) != 1) {
        free(c);
        gpulet_error_set(err, GPULET_ERR_INPUT, "%s: version is not a number; nothing was changed",
                         main_path);
        return NULL;
    }
    if (version != 2 && version != 3) {
        free(c);
        gpulet_error_set(err, GPULET_ERR_INPUT,
                         "%s is containerd config version %d; gpulet writes versions 2 and 3 "
                         "(migrate with `containerd config migrate`); nothing was changed",
                         main_path, version);
        return NULL;
    }
    const char *plugin = version == 3 ? "io.containerd.cri.v1.runtime" : "io.containerd.grpc.v1.cri";
    char cri[128], ours[256], ours_header[256];
    snprintf(cri, sizeof cri, "plugins\x1f%s", plugin);
    snprintf(ours, sizeof ours, "%s\x1f" "containerd\x1fruntimes\x1fnvidia", cri);
    snprintf(ours_header, sizeof ours_header, "plugins.\"%s\".containerd.runtimes.nvidia", plugin);

    char *drop = NULL;
    size_t drop_len = 0;
    FILE *f = open_memstream(&drop, &drop_len);
    fprintf(f, "# Written by gpulet runtime configure: the \"nvidia\" runtime runs gpulet-runtime.\n"
               "# The CRI tables of %s are repeated here: before containerd 2.1 an\n"
               "# imported table replaces the main file's table whole.\n"
               "version = %d\n",
            main_path, version);
    bool systemd = false, has_containerd_table = false;
    for (size_t i = 0; i < c->tables; i++) {
        if (!starts_with_path(c->table_key[i], cri) || starts_with_path(c->table_key[i], ours))
            continue;
        const char *end = i + 1 < c->tables ? c->table_at[i + 1] : old + strlen(old);
        char *block = strndup(c->table_at[i], (size_t)(end - c->table_at[i]));
        char runc_options[300], containerd_table[160];
        snprintf(runc_options, sizeof runc_options, "%s\x1f" "containerd\x1fruntimes\x1frunc\x1foptions", cri);
        snprintf(containerd_table, sizeof containerd_table, "%s\x1f" "containerd", cri);
        if (strcmp(c->table_key[i], runc_options) == 0 && strstr(block, "SystemdCgroup = true"))
            systemd = true;
        fputc('\n', f);
        if (opts->set_as_default && strcmp(c->table_key[i], containerd_table) == 0) {
            has_containerd_table = true;
            /* the header line, our default, then the table without its old default */
            char *nl = strchr(block, '\n');
            fwrite(block, 1, nl ? (size_t)(nl - block + 1) : strlen(block), f);
            if (!nl)
                fputc('\n', f);
            fprintf(f, "  default_runtime_name = \"nvidia\"\n");
            for (char *line = nl ? nl + 1 : block + strlen(block); *line;) {
                char *next = strchr(line, '\n');
                size_t len = next ? (size_t)(next - line + 1) : strlen(line);
                const char *t = line;
                while (*t == ' ' || *t == '\t')
                    t++;
                if (strncmp(t, "default_runtime_name", 20) != 0)
                    fwrite(line, 1, len, f);
                line += len;
            }
        } else {
            fputs(block, f);
        }
        free(block);
    }
    if (opts->set_as_default && !has_containerd_table)
        fprintf(f, "\n[plugins.\"%s\".containerd]\n  default_runtime_name = \"nvidia\"\n", plugin);
    fprintf(f, "\n[%s]\n  runtime_type = \"io.containerd.runc.v2\"\n[%s.options]\n"
               "  BinaryName = \"%s\"\n",
            ours_header, ours_header, opts->runtime_path);
    if (systemd)
        fprintf(f, "  SystemdCgroup = true\n");
    fclose(f);

    /* The main file: our drop-in folder among its imports. */
    char *main_text = NULL;
    size_t main_len = 0;
    FILE *m = open_memstream(&main_text, &main_len);
    char quoted[4200];
    snprintf(quoted, sizeof quoted, "\"%s\"", drop_in_glob);
    if (!existed) {
        fprintf(m, "version = 2\nimports = [%s]\n", quoted);
    } else if (c->imports_at) {
        const char *bracket = strchr(c->imports_at, '[');
        const char *statement_end = c->tables ? c->table_at[0] : old + strlen(old);
        const char *found = strstr(c->imports_at, quoted);
        if (found && found < statement_end) {
            fputs(old, m);
        } else {
            fwrite(old, 1, (size_t)(bracket + 1 - old), m);
            fprintf(m, "%s, ", quoted);
            fputs(bracket + 1, m);
        }
    } else {
        /* after the version line, or at the top */
        const char *after = c->version_at ? strchr(c->version_at, '\n') : NULL;
        size_t head = after ? (size_t)(after + 1 - old) : 0;
        fwrite(old, 1, head, m);
        fprintf(m, "imports = [%s]\n", quoted);
        fputs(old + head, m);
    }
    fclose(m);
    free(c);
    *main_out = main_text;
    return drop;
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
    char *old_main = read_all(main_path, &main_existed, err);
    if (old_main == NULL)
        return -1;
    char *old_drop = read_all(drop_path, &drop_existed, err);
    if (old_drop == NULL) {
        free(old_main);
        return -1;
    }
    char *new_main = NULL;
    char *new_drop = containerd_config(main_path, old_main, main_existed, opts, &new_main, glob, err);
    int rc = new_drop ? 0 : -1;
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
            if (drop_changed)
                rc = replace(drop_path, old_drop, drop_existed, new_drop, err);
            if (rc == 0 && main_changed)
                rc = replace(main_path, old_main, main_existed, new_main, err);
            if (rc == 0 && *changed)
                fprintf(out, "gpulet: wrote %s%s%s (old files kept as *.gpulet-backup)\n",
                        drop_changed ? drop_path : "", drop_changed && main_changed ? " and " : "",
                        main_changed ? main_path : "");
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

static void print_runtime_class(FILE *out)
{
    fprintf(out, "\nThen restart the engine and apply this RuntimeClass:\n"
                 "apiVersion: node.k8s.io/v1\nkind: RuntimeClass\nmetadata:\n"
                 "  name: nvidia\nhandler: nvidia\n");
}

int runtime_configure(const struct configure_options *opts, bool *changed, FILE *out,
                      struct gpulet_error *err)
{
    if (opts->runtime_path[0] != '/')
        return gpulet_error_set(err, GPULET_ERR_USAGE,
                                "the runtime path must be absolute, not \"%s\"", opts->runtime_path);
    if (opts->engine == ENGINE_CONTAINERD) {
        int rc = configure_containerd(opts, changed, out, err);
        if (rc == 0)
            print_runtime_class(out);
        return rc;
    }
    const char *path = opts->config ? opts->config : engine_default_config(opts->engine);
    bool existed;
    char *old = read_all(path, &existed, err);
    if (old == NULL)
        return -1;
    char *text = opts->engine == ENGINE_DOCKER ? docker_config(path, old, opts, err)
                                               : crio_config(opts);
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
        rc = replace(path, old, existed, text, err);
        if (rc == 0 && existed)
            fprintf(out, "gpulet: wrote %s (the old one is in %s.gpulet-backup)\n", path, path);
        else if (rc == 0)
            fprintf(out, "gpulet: wrote %s\n", path);
    } else {
        fprintf(out, "gpulet: %s is already configured; nothing changed\n", path);
    }
    if (rc == 0)
        print_runtime_class(out);
    free(old);
    free(text);
    return rc;
}
