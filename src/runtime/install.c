#include "runtime.h"

#include <dirent.h>
#include <errno.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>

#include "fileio/fileio.h"

/* Bundle files are a few MiB at most (libc is the largest). */
#define BUNDLE_FILE_MAX (256u << 20)

static bool same_content(const char *path, const char *data, size_t len)
{
    char *old = NULL;
    size_t old_len = 0;
    if (fileio_read(path, BUNDLE_FILE_MAX, &old, &old_len, NULL) != 0)
        return false;
    bool same = old_len == len && memcmp(old, data, len) == 0;
    free(old);
    return same;
}

static int compare_names(const void *a, const void *b)
{
    return strcmp(*(char *const *)a, *(char *const *)b);
}

/* Copies the regular files directly in from/sub to to/sub, sorted by name
 * so the output is stable. Sub-folders (the simulator) stay behind. */
static int install_folder(const char *from, const char *to, const char *sub, bool *changed,
                          FILE *out, struct gpulet_error *err)
{
    char src_dir[4200], dst_dir[4200];
    snprintf(src_dir, sizeof src_dir, "%s/%s", from, sub);
    snprintf(dst_dir, sizeof dst_dir, "%s/%s", to, sub);
    DIR *dir = opendir(src_dir);
    if (dir == NULL)
        return gpulet_error_errno(err, errno, "cannot open %s", src_dir);
    if (mkdir(dst_dir, 0755) != 0 && errno != EEXIST) {
        closedir(dir);
        return gpulet_error_errno(err, errno, "cannot create %s", dst_dir);
    }
    char **names = NULL;
    size_t n = 0;
    int rc = 0;
    for (struct dirent *e; rc == 0 && (e = readdir(dir)) != NULL;) {
        char path[8400];
        snprintf(path, sizeof path, "%s/%s", src_dir, e->d_name);
        struct stat st;
        if (e->d_name[0] == '.' || stat(path, &st) != 0 || !S_ISREG(st.st_mode))
            continue;
        char **grown = realloc(names, (n + 1) * sizeof *names);
        char *name = grown ? strdup(e->d_name) : NULL;
        if (grown)
            names = grown;
        if (name == NULL)
            rc = gpulet_error_errno(err, ENOMEM, "cannot list %s", src_dir);
        else
            names[n++] = name;
    }
    closedir(dir);
    if (n > 0)
        qsort(names, n, sizeof names[0], compare_names);
    for (size_t i = 0; i < n; i++) {
        char src[8400], dst[8400];
        snprintf(src, sizeof src, "%s/%s", src_dir, names[i]);
        snprintf(dst, sizeof dst, "%s/%s", dst_dir, names[i]);
        struct stat st;
        char *data = NULL;
        size_t len = 0;
        if (rc == 0 && stat(src, &st) != 0)
            rc = gpulet_error_errno(err, errno, "cannot read %s", src);
        if (rc == 0)
            rc = fileio_read(src, BUNDLE_FILE_MAX, &data, &len, err);
        if (rc == 0) {
            if (same_content(dst, data, len)) {
                fprintf(out, "unchanged %s\n", dst);
            } else {
                unsigned flags = FILEIO_DURABLE | ((st.st_mode & 0111) ? FILEIO_EXECUTABLE : 0);
                rc = fileio_replace(dst, data, len, flags, err);
                if (rc == 0) {
                    fprintf(out, "installed %s\n", dst);
                    *changed = true;
                }
            }
        }
        free(data);
        free(names[i]);
    }
    free(names);
    return rc;
}

int runtime_install(const char *from, const char *to, bool *changed, FILE *out,
                    struct gpulet_error *err)
{
    *changed = false;
    if (to[0] != '/')
        return gpulet_error_set(err, GPULET_ERR_USAGE,
                                "--to %s: give an absolute folder (e.g. /host/usr/local/gpulet)", to);
    /* Checked before anything is created on the host. */
    const char *const parts[] = {"lib", "bin"};
    for (size_t i = 0; i < 2; i++) {
        char path[4200];
        snprintf(path, sizeof path, "%s/%s", from, parts[i]);
        struct stat st;
        if (stat(path, &st) != 0 || !S_ISDIR(st.st_mode))
            return gpulet_error_set(err, GPULET_ERR_USAGE,
                                    "%s is not a gpulet bundle: it has no %s/ folder; run gpulet "
                                    "runtime install from the gpulet image, or give --from",
                                    from, parts[i]);
    }
    if (mkdir(to, 0755) != 0 && errno != EEXIST)
        return gpulet_error_errno(err, errno, "cannot create %s (is the host folder mounted?)", to);
    /* Libraries first: a program never starts against libraries older
     * than the ones it was built with. */
    if (install_folder(from, to, "lib", changed, out, err) != 0 ||
        install_folder(from, to, "bin", changed, out, err) != 0)
        return -1;
    return 0;
}
