#include "runtime.h"

#include <dirent.h>
#include <elf.h>
#include <errno.h>
#include <fcntl.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

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

/* The ELF interpreter (PT_INTERP) a 64-bit program names, into out; false
 * for a static program, a library or a file that is not ELF. */
static bool elf_interpreter(const char *path, char *out, size_t len)
{
    int fd = open(path, O_RDONLY | O_CLOEXEC | O_NOFOLLOW | O_NONBLOCK);
    if (fd < 0)
        return false;
    Elf64_Ehdr eh;
    bool found = false;
    if (pread(fd, &eh, sizeof eh, 0) == (ssize_t)sizeof eh &&
        memcmp(eh.e_ident, ELFMAG, SELFMAG) == 0 && eh.e_ident[EI_CLASS] == ELFCLASS64 &&
        eh.e_phentsize == sizeof(Elf64_Phdr) && eh.e_phnum < 256) {
        for (unsigned int i = 0; i < eh.e_phnum && !found; i++) {
            Elf64_Phdr ph;
            off_t at = (off_t)(eh.e_phoff + i * sizeof ph);
            if (pread(fd, &ph, sizeof ph, at) != (ssize_t)sizeof ph)
                break;
            if (ph.p_type != PT_INTERP || ph.p_filesz == 0 || ph.p_filesz >= len)
                continue;
            found = pread(fd, out, ph.p_filesz, (off_t)ph.p_offset) == (ssize_t)ph.p_filesz;
            out[found ? ph.p_filesz : 0] = '\0';
            found = found && out[0] == '/';
        }
    }
    close(fd);
    return found;
}

/* The bundle's programs name a loader inside the bundle by absolute path
 * (PREFIX/lib/ld-linux-...), fixed when the image was built, and find their
 * libraries beside it: they run only from PREFIX on the host. to, as this
 * process sees the host, must end in PREFIX (the host's root may be
 * mounted elsewhere, as /host is in the DaemonSet). */
static int check_target(const char *from, const char *to, struct gpulet_error *err)
{
    static const char *const programs[] = {"gpulet-runtime", "gpulet"};
    char path[4200], interp[4096];
    bool named = false;
    for (size_t i = 0; i < 2 && !named; i++) {
        snprintf(path, sizeof path, "%s/bin/%s", from, programs[i]);
        named = elf_interpreter(path, interp, sizeof interp);
    }
    char *slash = named ? strrchr(interp, '/') : NULL;
    if (slash == NULL || slash - interp < 4 || strncmp(slash - 4, "/lib", 4) != 0)
        return 0;
    snprintf(path, sizeof path, "%s/lib/%s", from, slash + 1);
    struct stat st;
    if (stat(path, &st) != 0) /* the system's loader: any folder will do */
        return 0;
    size_t prefix = (size_t)(slash - 4 - interp);
    if (prefix == 0) /* /lib/ld-linux...: the system's path after all */
        return 0;
    interp[prefix] = '\0';
    size_t n = strlen(to);
    while (n > 1 && to[n - 1] == '/')
        n--;
    if (n >= prefix && strncmp(to + n - prefix, interp, prefix) == 0)
        return 0;
    return gpulet_error_set(err, GPULET_ERR_USAGE,
                            "--to %s: the bundle's programs load their loader and libraries from "
                            "%s/lib (fixed when the image was built), so they run only from the "
                            "host's %s; give that folder as this process sees it (%s, or "
                            "/host%s with the host's root at /host)",
                            to, interp, interp, interp, interp);
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
    if (check_target(from, to, err) < 0)
        return -1;
    if (mkdir(to, 0755) != 0 && errno != EEXIST)
        return gpulet_error_errno(err, errno, "cannot create %s (is the host folder mounted?)", to);
    /* Libraries first: a program never starts against libraries older
     * than the ones it was built with. */
    if (install_folder(from, to, "lib", changed, out, err) != 0 ||
        install_folder(from, to, "bin", changed, out, err) != 0)
        return -1;
    return 0;
}
