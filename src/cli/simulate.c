#include "cli.h"

#include <dirent.h>
#include <errno.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

/* Where fixtures and the simulator library are looked for: the variables
 * first, then the build tree (running from a checkout), then the install. */
static const char *const fixture_dirs[] = {GPULET_BUILD_SIM_NODES, GPULET_INSTALL_SIM_NODES};
static const char *const library_paths[] = {GPULET_BUILD_SIM_LIB, GPULET_INSTALL_SIM_LIB};

static bool is_file(const char *path)
{
    return access(path, R_OK) == 0;
}

static int compare_names(const void *a, const void *b)
{
    return strcmp((const char *)a, (const char *)b);
}

void cli_list_fixtures(char *buf, size_t len)
{
    size_t used = 0;
    buf[0] = '\0';
    const char *env = getenv("GPULET_SIM_DIR");
    const char *dirs[3] = {env, fixture_dirs[0], fixture_dirs[1]};
    for (size_t d = 0; d < 3; d++) {
        if (dirs[d] == NULL)
            continue;
        DIR *dir = opendir(dirs[d]);
        if (dir == NULL)
            continue;
        /* readdir order is arbitrary: collect and sort for a stable list. */
        char names[64][64];
        size_t n = 0;
        struct dirent *e;
        while ((e = readdir(dir)) != NULL && n < 64) {
            size_t l = strlen(e->d_name);
            if (l > 5 && l < 64 && strcmp(e->d_name + l - 5, ".yaml") == 0) {
                memcpy(names[n], e->d_name, l - 5);
                names[n][l - 5] = '\0';
                n++;
            }
        }
        closedir(dir);
        qsort(names, n, sizeof names[0], compare_names);
        for (size_t i = 0; i < n && used < len; i++)
            used += (size_t)snprintf(buf + used, len - used, "%s%s", used ? ", " : "", names[i]);
        if (n > 0)
            return;
    }
}

static int find_node_file(const char *what, char *out, size_t len, struct gpulet_error *err)
{
    if (strchr(what, '/') || strstr(what, ".yaml") || strstr(what, ".json")) {
        if (!is_file(what)) {
            char cwd[4096] = "";
            if (what[0] != '/' && getcwd(cwd, sizeof cwd) == NULL)
                cwd[0] = '\0';
            return gpulet_error_set(err, GPULET_ERR_INPUT,
                                    "cannot read the node description %s%s%s%s (from --simulate): "
                                    "%s",
                                    what, cwd[0] ? " (in " : "", cwd, cwd[0] ? ")" : "",
                                    strerror(errno));
        }
        snprintf(out, len, "%s", what);
        return 0;
    }
    const char *env = getenv("GPULET_SIM_DIR");
    const char *dirs[3] = {env, fixture_dirs[0], fixture_dirs[1]};
    for (size_t d = 0; d < 3; d++) {
        if (dirs[d] == NULL || dirs[d][0] == '\0')
            continue;
        snprintf(out, len, "%s/%s.yaml", dirs[d], what);
        if (is_file(out))
            return 0;
    }
    char known[1024];
    cli_list_fixtures(known, sizeof known);
    return gpulet_error_set(err, GPULET_ERR_USAGE,
                            "no simulated node named \"%s\" (known: %s); give a name or the path "
                            "of a node description file",
                            what, known[0] ? known : "none found; set GPULET_SIM_DIR");
}

static int find_library(char *out, size_t len, struct gpulet_error *err)
{
    const char *env = getenv("GPULET_SIM_LIB");
    if (env && env[0]) {
        if (!is_file(env))
            return gpulet_error_set(err, GPULET_ERR_USAGE,
                                    "GPULET_SIM_LIB names %s, which cannot be read", env);
        snprintf(out, len, "%s", env);
        return 0;
    }
    for (size_t i = 0; i < sizeof library_paths / sizeof library_paths[0]; i++) {
        if (is_file(library_paths[i])) {
            snprintf(out, len, "%s", library_paths[i]);
            return 0;
        }
    }
    return gpulet_error_set(err, GPULET_ERR_USAGE,
                            "the simulated NVML library is not installed (looked for %s and %s); "
                            "build it with `make` or set GPULET_SIM_LIB",
                            library_paths[0], library_paths[1]);
}

/* The simulator rereads the state file whenever it changes and keeps the
 * last good state, so it cannot tell a typo from a file yet to come: the
 * file must be there when gpulet starts. */
static int check_state_file(struct gpulet_error *err)
{
    const char *path = getenv("GPULET_SIM_STATE");
    if (path == NULL || path[0] == '\0')
        return 0;
    struct stat st;
    if (stat(path, &st) != 0)
        return gpulet_error_set(err, GPULET_ERR_USAGE,
                                "GPULET_SIM_STATE names %s, which cannot be read: %s (write the "
                                "state file first; an empty one changes nothing)",
                                path, strerror(errno));
    if (!S_ISREG(st.st_mode))
        return gpulet_error_set(err, GPULET_ERR_USAGE,
                                "GPULET_SIM_STATE names %s, which is not a file", path);
    return 0;
}

int cli_use_simulator(struct cli_options *opts, char *node_path, size_t node_len, char *lib_path,
                      size_t lib_len, struct gpulet_error *err)
{
    if (find_node_file(opts->simulate, node_path, node_len, err) < 0 ||
        find_library(lib_path, lib_len, err) < 0 || check_state_file(err) < 0)
        return -1;
    if (setenv("GPULET_SIM_NODE", node_path, 1) != 0)
        return gpulet_error_errno(err, errno, "cannot set GPULET_SIM_NODE");
    opts->nvml.library_path = lib_path;
    return 0;
}
