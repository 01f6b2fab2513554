/*
 * gpulet-hook: the createContainer hook of the CDI spec. Run by the OCI
 * runtime in the container's mount namespace before pivot_root, so the
 * container's root is still a host path: derived from the bundle, never
 * from anything inside the container.
 *
 *   gpulet-hook update-ldcache [--host-driver-version 550.90.07]
 *                              --folder /usr/lib/x86_64-linux-gnu [...]
 *
 * It makes the container's ld cache learn the driver library folders (and
 * creates their soname links). When the image carries CUDA's forward
 * compatibility libraries (/usr/local/cuda/compat/libcuda.so.X.Y) of a
 * newer major version than the host's driver, and has an ld cache of its
 * own, that folder goes first, so its libcuda wins (the semantics of
 * NVIDIA's enable-cuda-compat hook). It runs the host's ldconfig chrooted into
 * the container root, so no path inside the container can point outside
 * it (the CVE-2024-0132 class), in a mount namespace where the container's
 * proc (whose /proc/1/root is the host's root) is unmounted. The
 * container's environment never reaches it (the CVE-2025-23266 class):
 * every hook entry gpulet writes carries its own env, the hook is linked
 * statically (outside sanitizer builds) so no loader variable can load
 * code into it, and ldconfig runs with an empty environment.
 */
#include <dirent.h>
#include <errno.h>
#include <fcntl.h>
#include <limits.h>
#include <linux/openat2.h>
#include <stdarg.h>
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sched.h>
#include <sys/mount.h>
#include <sys/stat.h>
#include <sys/syscall.h>
#include <sys/wait.h>
#include <unistd.h>

#include <jansson.h>

#define MAX_FOLDERS 16
#define COMPAT_DIR "/usr/local/cuda/compat"
#define MAX_COMPAT_ENTRIES 4096 /* read from the image's compat folder */
#define MAX_CONFIG (16 * 1024 * 1024) /* as gpulet-runtime reads it */

static int fail(const char *fmt, ...) __attribute__((format(printf, 1, 2)));

static int fail(const char *fmt, ...)
{
    char msg[PATH_MAX + 256];
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(msg, sizeof msg, fmt, ap);
    va_end(ap);
    fprintf(stderr, "gpulet-hook: %s\n", msg);
    return 1;
}

/* The container root from the OCI state on stdin and the bundle's
 * config.json (root.path, relative to the bundle unless absolute). */
static int container_root(char *out, size_t len)
{
    json_error_t jerr;
    json_t *state = json_loadf(stdin, 0, &jerr);
    const char *bundle = json_string_value(json_object_get(state, "bundle"));
    if (bundle == NULL || bundle[0] != '/') {
        json_decref(state);
        return fail("the OCI state on stdin has no absolute bundle path");
    }
    char path[PATH_MAX];
    snprintf(path, sizeof path, "%s/config.json", bundle);
    /* Never a symlink, and a FIFO is refused rather than waited on. */
    int fd = open(path, O_RDONLY | O_NOFOLLOW | O_NONBLOCK | O_CLOEXEC);
    struct stat st;
    json_t *config = NULL;
    if (fd >= 0 && fstat(fd, &st) == 0 && S_ISREG(st.st_mode) && st.st_size <= MAX_CONFIG) {
        FILE *f = fdopen(fd, "r");
        config = f ? json_loadf(f, 0, &jerr) : NULL;
        if (f)
            fclose(f);
        else
            close(fd);
    } else if (fd >= 0) {
        close(fd);
    }
    const char *root = json_string_value(json_object_get(json_object_get(config, "root"), "path"));
    int rc = 0;
    if (root == NULL)
        rc = fail("cannot read root.path from %s (a regular file of at most %d bytes)", path,
                  MAX_CONFIG);
    else if (root[0] == '/')
        snprintf(out, len, "%s", root);
    else
        snprintf(out, len, "%s/%s", bundle, root);
    json_decref(config);
    json_decref(state);
    return rc;
}

/* A path inside the container root, symlinks resolved inside it. */
static int open_in_root(int root_fd, const char *path, int flags)
{
    struct open_how how = {.flags = (unsigned long long)flags | O_CLOEXEC,
                           .resolve = RESOLVE_IN_ROOT | RESOLVE_NO_MAGICLINKS};
    return (int)syscall(SYS_openat2, root_fd, path, &how, sizeof how);
}

/* The folder must be a directory inside the container root, with every
 * symlink on the way resolved inside that root. */
static int check_folder(int root_fd, const char *folder)
{
    int fd = open_in_root(root_fd, folder, O_PATH | O_DIRECTORY);
    if (fd < 0)
        return -1;
    close(fd);
    return 0;
}

/* Mount points of proc at or under root, read from mountinfo (octal
 * escapes undone), unmounted when unmount is true; returns how many were
 * left mounted, or -1 when mountinfo cannot be read. */
static int proc_mounts_under(const char *root, bool unmount)
{
    FILE *f = fopen("/proc/self/mountinfo", "re");
    if (f == NULL)
        return -1;
    size_t rlen = strlen(root);
    int left = 0;
    char line[2 * PATH_MAX];
    while (fgets(line, sizeof line, f)) {
        char raw[PATH_MAX], fstype[64];
        const char *dash = strstr(line, " - ");
        if (sscanf(line, "%*s %*s %*s %*s %4095s", raw) != 1 || dash == NULL ||
            sscanf(dash + 3, "%63s", fstype) != 1 || strcmp(fstype, "proc") != 0)
            continue;
        char mp[PATH_MAX];
        size_t n = 0;
        for (const char *c = raw; *c && n < sizeof mp - 1; n++) {
            if (c[0] == '\\' && c[1] >= '0' && c[1] <= '3' && c[2] >= '0' && c[2] <= '7' &&
                c[3] >= '0' && c[3] <= '7') {
                mp[n] = (char)((c[1] - '0') * 64 + (c[2] - '0') * 8 + (c[3] - '0'));
                c += 4;
            } else {
                mp[n] = *c++;
            }
        }
        mp[n] = '\0';
        if (strncmp(mp, root, rlen) != 0 || (mp[rlen] != '\0' && mp[rlen] != '/'))
            continue;
        if (!unmount || umount2(mp, MNT_DETACH | UMOUNT_NOFOLLOW) < 0)
            left++;
    }
    fclose(f);
    return left;
}

/* ldconfig runs as host root chrooted into the container root, where the
 * runtime has already mounted the container's proc: /proc/1/root there is
 * the runtime's root, the host's, and through it an /etc symlink or an
 * ld.so.conf line in the image would make ldconfig write host files. So
 * it runs in a mount namespace of its own with no proc under the root. */
static int hide_proc(const char *root)
{
    if (unshare(CLONE_NEWNS) < 0 || mount(NULL, "/", NULL, MS_REC | MS_PRIVATE, NULL) < 0)
        return -1;
    /* A detached proc takes the mounts under it along: a second pass
     * unmounts what a first saw stacked, the last must find none. */
    for (int pass = 0; pass < 8; pass++)
        if (proc_mounts_under(root, true) == 0)
            break;
    return proc_mounts_under(root, false) == 0 ? 0 : -1;
}

/* The leading number of a version ("550" of "550.90.07"); -1 if none. */
static long major_of(const char *version)
{
    char *end;
    if (version[0] < '0' || version[0] > '9')
        return -1;
    long major = strtol(version, &end, 10);
    return *end == '.' || *end == '\0' ? major : -1;
}

/* Whether the image's compat folder should come first: exactly one
 * libcuda.so.X.Y there, X above the host driver's major version, and an
 * ld cache in the image (else its loader would not read ours). */
static bool use_compat(int root_fd, long host_major)
{
    int cache = open_in_root(root_fd, "/etc/ld.so.cache", O_PATH);
    if (cache < 0)
        return false;
    close(cache);
    int fd = open_in_root(root_fd, COMPAT_DIR, O_RDONLY | O_DIRECTORY);
    DIR *d = fd >= 0 ? fdopendir(fd) : NULL;
    if (d == NULL) {
        if (fd >= 0)
            close(fd);
        return false;
    }
    long compat_major = -1;
    int found = 0;
    struct dirent *e;
    for (size_t seen = 0; seen < MAX_COMPAT_ENTRIES && (e = readdir(d)) != NULL; seen++) {
        const char *v = e->d_name + strlen("libcuda.so.");
        if (strncmp(e->d_name, "libcuda.so.", strlen("libcuda.so.")) != 0 ||
            strchr(v, '.') == NULL)
            continue;
        compat_major = major_of(v);
        found++;
    }
    closedir(d);
    return found == 1 && compat_major > host_major;
}

int main(int argc, char **argv)
{
    if (argc < 2 || strcmp(argv[1], "update-ldcache") != 0)
        return fail("usage: gpulet-hook update-ldcache [--host-driver-version VERSION] "
                    "--folder DIR [--folder DIR]...");
    const char *folders[MAX_FOLDERS];
    size_t n = 0;
    long host_major = -1;
    for (int i = 2; i < argc; i++) {
        if (strcmp(argv[i], "--folder") == 0 && i + 1 < argc && n < MAX_FOLDERS &&
            argv[i + 1][0] == '/')
            folders[n++] = argv[++i];
        else if (strcmp(argv[i], "--host-driver-version") == 0 && i + 1 < argc &&
                 (host_major = major_of(argv[i + 1])) >= 0)
            i++;
        else
            return fail("unexpected argument %s (expected --folder /absolute/path or "
                        "--host-driver-version VERSION)", argv[i]);
    }
    char given[PATH_MAX], root[PATH_MAX];
    if (container_root(given, sizeof given) != 0)
        return 1;
    /* As mountinfo names it (the bundle may be under /var/run, a link). */
    if (realpath(given, root) == NULL)
        return fail("cannot resolve the container root %s: %s", given, strerror(errno));
    int root_fd = open(root, O_PATH | O_DIRECTORY | O_CLOEXEC);
    if (root_fd < 0)
        return fail("cannot open the container root %s", root);
    /* ldconfig -r ROOT chroots into ROOT before it reads anything: the
     * folders are container paths. Folders that are not there are skipped. */
    char *args[5 + MAX_FOLDERS];
    size_t k = 0;
    args[k++] = "ldconfig";
    args[k++] = "-r";
    args[k++] = root;
    /* ldconfig ranks a soname by the order of the folders it is given. */
    if (host_major >= 0 && use_compat(root_fd, host_major))
        args[k++] = COMPAT_DIR;
    for (size_t i = 0; i < n; i++)
        if (check_folder(root_fd, folders[i]) == 0)
            args[k++] = (char *)folders[i];
    args[k] = NULL;
    close(root_fd);
    char etc[PATH_MAX + 8];
    snprintf(etc, sizeof etc, "%s/etc", root);
    mkdir(etc, 0755); /* ldconfig writes etc/ld.so.cache */
    char *const no_env[] = {NULL};
    pid_t pid = fork();
    if (pid == 0) {
        if (hide_proc(root) < 0) {
            fail("cannot unmount proc under the container root %s for ldconfig "
                 "(a mount namespace of its own needs CAP_SYS_ADMIN)", root);
            _exit(126);
        }
        static const char *const ldconfigs[] = {"/sbin/ldconfig", "/usr/sbin/ldconfig", NULL};
        for (size_t i = 0; ldconfigs[i]; i++)
            execve(ldconfigs[i], args, no_env);
        _exit(127);
    }
    int status = 0;
    if (pid < 0 || waitpid(pid, &status, 0) < 0 || !WIFEXITED(status) ||
        WEXITSTATUS(status) != 0)
        return fail("ldconfig failed in the container root %s", root);
    return 0;
}
