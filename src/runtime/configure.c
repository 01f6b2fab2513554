#include "configure.h"

#include <errno.h>
#include <fcntl.h>
#include <libgen.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include <jansson.h>

const char *engine_default_config(enum engine e)
{
    switch (e) {
    case ENGINE_DOCKER: return "/etc/docker/daemon.json";
    case ENGINE_CRIO: return "/etc/crio/crio.conf.d/99-gpulet.toml";
    case ENGINE_CONTAINERD: return "/etc/containerd/conf.d/99-gpulet.toml";
    }
    return NULL;
}

static char *read_all(const char *path, bool *exists, struct gpulet_error *err)
{
    FILE *f = fopen(path, "rb");
    if (f == NULL) {
        if (errno == ENOENT) {
            *exists = false;
            return strdup("");
        }
        gpulet_error_errno(err, errno, "cannot read %s", path);
        return NULL;
    }
    *exists = true;
    char *text = NULL;
    size_t len = 0, cap = 0, n;
    char buf[4096];
    while ((n = fread(buf, 1, sizeof buf, f)) > 0) {
        if (len + n + 1 > cap) {
            cap = (len + n + 1) * 2;
            char *grown = realloc(text, cap);
            if (grown == NULL) {
                free(text);
                fclose(f);
                gpulet_error_errno(err, ENOMEM, "cannot read %s", path);
                return NULL;
            }
            text = grown;
        }
        memcpy(text + len, buf, n);
        len += n;
    }
    fclose(f);
    if (text == NULL)
        return strdup("");
    text[len] = '\0';
    return text;
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
    char tmp[4200];
    snprintf(tmp, sizeof tmp, "%s.gpulet-tmp", path);
    int fd = open(tmp, O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, 0644);
    if (fd < 0)
        return gpulet_error_errno(err, errno, "cannot write %s", tmp);
    size_t len = strlen(text);
    if (write(fd, text, len) != (ssize_t)len || fsync(fd) != 0) {
        int e = errno;
        close(fd);
        unlink(tmp);
        return gpulet_error_errno(err, e, "cannot write %s", tmp);
    }
    close(fd);
    if (rename(tmp, path) != 0) {
        int e = errno;
        unlink(tmp);
        return gpulet_error_errno(err, e, "cannot replace %s", path);
    }
    return 0;
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

int runtime_configure(const struct configure_options *opts, bool *changed, FILE *out,
                      struct gpulet_error *err)
{
    if (opts->engine == ENGINE_CONTAINERD)
        return gpulet_error_set(err, GPULET_ERR_USAGE,
                                "containerd is not supported yet: add a runtime \"nvidia\" with "
                                "BinaryName = \"%s\" by hand (docs/runtime.md)",
                                opts->runtime_path);
    if (opts->runtime_path[0] != '/')
        return gpulet_error_set(err, GPULET_ERR_USAGE,
                                "the runtime path must be absolute, not \"%s\"", opts->runtime_path);
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
        fprintf(out, "\nThen restart the engine and apply this RuntimeClass:\n"
                     "apiVersion: node.k8s.io/v1\nkind: RuntimeClass\nmetadata:\n"
                     "  name: nvidia\nhandler: nvidia\n");
    free(old);
    free(text);
    return rc;
}
