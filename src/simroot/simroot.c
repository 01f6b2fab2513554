#include "simroot.h"

#include <errno.h>
#include <fcntl.h>
#include <ftw.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <sys/sysmacros.h>
#include <unistd.h>

#include "cdi/cdi.h"
#include "fileio/fileio.h"
#include "log/log.h"
#include "owner/owner.h"

/*
 * The simulated driver's files: the one list to extend when a real driver
 * is found to ship more. Each library is installed as NAME.so.<driver
 * version> in LIBDIR with a link from its soname (NULL: the versioned name
 * is its soname, as for the graphics core libraries) and an ld cache entry.
 * tests/integration/test_simulate.py reads this table: one {"name",
 * "soname"} or {"name", NULL} per entry.
 */
static const struct {
    const char *name;
    const char *soname;
} driver_libraries[] = {
    /* utility */
    {"libnvidia-ml", "libnvidia-ml.so.1"},
    {"libnvidia-cfg", "libnvidia-cfg.so.1"},
    /* compute */
    {"libcuda", "libcuda.so.1"},
    {"libcudadebugger", "libcudadebugger.so.1"},
    {"libnvidia-opencl", "libnvidia-opencl.so.1"},
    {"libnvidia-ptxjitcompiler", "libnvidia-ptxjitcompiler.so.1"},
    {"libnvidia-allocator", "libnvidia-allocator.so.1"},
    {"libnvidia-nvvm", "libnvidia-nvvm.so.4"},
    {"libnvidia-gpucomp", NULL},
    /* video */
    {"libvdpau_nvidia", "libvdpau_nvidia.so.1"},
    {"libnvidia-encode", "libnvidia-encode.so.1"},
    {"libnvidia-opticalflow", "libnvidia-opticalflow.so.1"},
    {"libnvcuvid", "libnvcuvid.so.1"},
    /* graphics */
    {"libnvidia-eglcore", NULL},
    {"libnvidia-glcore", NULL},
    {"libnvidia-tls", NULL},
    {"libnvidia-glsi", NULL},
    {"libGLX_nvidia", "libGLX_nvidia.so.0"},
    {"libEGL_nvidia", "libEGL_nvidia.so.0"},
    {"libGLESv2_nvidia", "libGLESv2_nvidia.so.2"},
    {"libGLESv1_CM_nvidia", "libGLESv1_CM_nvidia.so.1"},
    {"libnvidia-glvkspirv", NULL},
    {"libnvidia-rtcore", NULL},
    {"libnvoptix", "libnvoptix.so.1"},
    {"libnvidia-ngx", "libnvidia-ngx.so.1"},
    /* capture, PKCS#11 */
    {"libnvidia-fbc", "libnvidia-fbc.so.1"},
    {"libnvidia-pkcs11", NULL},
    {"libnvidia-pkcs11-openssl3", NULL},
};

#define LIBDIR "/usr/lib/x86_64-linux-gnu"

static const char *const driver_tools[] = {
    "nvidia-smi", "nvidia-debugdump", "nvidia-persistenced", "nvidia-cuda-mps-control",
    "nvidia-cuda-mps-server",
};
/* The simulator's own builds of some of them (sim/smi_sim.c,
 * sim/mps_control_sim.c), found in the build tree or the install; the
 * others are stand-ins that say so. */
static const char *const tool_dirs[] = {GPULET_BUILD_SIM_TOOLS, GPULET_INSTALL_SIM_TOOLS};
#define TOOL_MAX (64u << 20)

static const char *const gsp_firmware[] = {"gsp_ga10x.bin", "gsp_tu10x.bin"};

/* Character devices: the GPUs and control nodes are major 195 as on every
 * driver; uvm's and the capabilities' majors are given out at load time,
 * these are typical values. */
enum { NVIDIA_MAJOR = 195, UVM_MAJOR = 510, CAPS_MAJOR = 511 };
static const struct {
    const char *path;
    unsigned int major, minor;
} control_nodes[] = {
    {"/dev/nvidiactl", NVIDIA_MAJOR, 255},
    {"/dev/nvidia-modeset", NVIDIA_MAJOR, 254},
    {"/dev/nvidia-uvm", UVM_MAJOR, 0},
    {"/dev/nvidia-uvm-tools", UVM_MAJOR, 1},
};

/* The driver's MIG capability minors: gpu<minor>/gi<0..14>/access, then
 * its ci<0..7>/access, nine per GPU instance after config and monitor. */
enum { MIG_GIS = 15, MIG_CIS = 8, MIG_FIRST_MINOR = 3 };

static unsigned int mig_minor(unsigned int gpu, unsigned int gi, int ci)
{
    return MIG_FIRST_MINOR + (gpu * MIG_GIS + gi) * (MIG_CIS + 1) + (unsigned int)(ci + 1);
}

static const char *tmp_dir(void)
{
    const char *tmp = getenv("TMPDIR");
    return tmp && tmp[0] ? tmp : "/tmp";
}

void simroot_sweep(void)
{
    static const char *const prefixes[] = {SIMROOT_PREFIX, SIMROOT_SYSFS_PREFIX, NULL};
    owner_sweep(tmp_dir(), prefixes, SIMROOT_SWEEP_ENTRIES);
}

static int create(struct simroot *s, struct gpulet_error *err)
{
    if (s->dir[0])
        return 0;
    const char *tmp = tmp_dir();
    /* Absolute: the paths go into CDI specs and the daemon's options. */
    char base[PATH_MAX];
    /* The reason before the path: a long one is cut short in the message. */
    if (realpath(tmp, base) == NULL)
        return gpulet_error_set(err, GPULET_ERR_USAGE,
                                "TMPDIR cannot hold the simulated node's private folder: %s (set "
                                "TMPDIR to a folder you can write): %s",
                                strerror(errno), tmp);
    if ((size_t)snprintf(s->dir, sizeof s->dir, "%s/" SIMROOT_PREFIX "XXXXXX", base) >=
        sizeof s->dir) {
        s->dir[0] = '\0';
        return gpulet_error_set(err, GPULET_ERR_USAGE,
                                "TMPDIR is too long to hold the simulated node's private folder "
                                "(set TMPDIR to a shorter folder): %s",
                                tmp);
    }
    if (mkdtemp(s->dir) == NULL) {
        int e = errno;
        char tried[sizeof s->dir];
        snprintf(tried, sizeof tried, "%s", s->dir);
        s->dir[0] = '\0';
        return gpulet_error_errno(err, e,
                                  "cannot make the simulated node's private folder %s (set "
                                  "TMPDIR to a folder you can write)",
                                  tried);
    }
    /* Whoever finds it after a SIGKILL can tell that its maker is gone. */
    if (owner_mark(s->dir, err) < 0) {
        simroot_remove(s);
        return -1;
    }
    return 0;
}

int simroot_path(struct simroot *s, const char *rel, bool folder, char *out, size_t len,
                 struct gpulet_error *err)
{
    if (create(s, err) < 0)
        return -1;
    if ((size_t)snprintf(out, len, "%s/%s", s->dir, rel) >= len)
        return gpulet_error_set(err, GPULET_ERR_USAGE, "the path %s/%s is too long", s->dir,
                                rel);
    char dir[PATH_MAX];
    snprintf(dir, sizeof dir, "%s", out);
    if (!folder)
        *strrchr(dir, '/') = '\0';
    return fileio_mkdirs(dir, 0700, 0700, err);
}

/* root + path into full, after making the folders that hold it. */
static int place(const char *root, const char *path, char full[PATH_MAX], struct gpulet_error *err)
{
    char dir[PATH_MAX];
    snprintf(full, PATH_MAX, "%s%s", root, path);
    snprintf(dir, sizeof dir, "%s", full);
    *strrchr(dir, '/') = '\0';
    return fileio_mkdirs(dir, 0755, 0755, err);
}

static int write_file(const char *root, const char *path, const char *text, unsigned flags,
                      struct gpulet_error *err)
{
    char full[PATH_MAX];
    if (place(root, path, full, err) < 0)
        return -1;
    return fileio_replace(full, text, strlen(text), flags, err);
}

static int link_file(const char *root, const char *target, const char *path,
                     struct gpulet_error *err)
{
    char full[PATH_MAX];
    snprintf(full, sizeof full, "%s%s", root, path);
    if (symlink(target, full) != 0 && errno != EEXIST)
        return gpulet_error_errno(err, errno, "cannot make the link %s", full);
    return 0;
}

/* A character device where this process may make one (root), else an empty
 * file at its path: the path is what a CDI spec needs. */
static int device_node(const char *root, const char *path, unsigned int major, unsigned int minor,
                       struct gpulet_error *err)
{
    char full[PATH_MAX];
    if (place(root, path, full, err) < 0)
        return -1;
    if (mknod(full, S_IFCHR | 0666, makedev(major, minor)) == 0 || errno == EEXIST)
        return 0;
    int fd = open(full, O_WRONLY | O_CREAT | O_EXCL | O_CLOEXEC | O_NOFOLLOW, 0644);
    if (fd < 0)
        return gpulet_error_errno(err, errno, "cannot make the device node %s", full);
    close(fd);
    return 0;
}

static int add_libraries(const char *root, const char *version, struct gpulet_error *err)
{
    enum { N = sizeof driver_libraries / sizeof driver_libraries[0] };
    struct ldcache_entry *cache = calloc(N, sizeof *cache);
    if (cache == NULL)
        return gpulet_error_errno(err, ENOMEM, "cannot list the simulated driver libraries");
    int rc = 0;
    for (size_t i = 0; i < N && rc == 0; i++) {
        char file[256], path[PATH_MAX], text[512];
        snprintf(file, sizeof file, "%s.so.%s", driver_libraries[i].name, version);
        const char *soname = driver_libraries[i].soname ? driver_libraries[i].soname : file;
        snprintf(path, sizeof path, LIBDIR "/%s", file);
        snprintf(text, sizeof text,
                 "simulated NVIDIA driver library %s (soname %s), made by gpulet --simulate\n",
                 file, soname);
        rc = write_file(root, path, text, 0, err);
        if (rc == 0 && strcmp(soname, file) != 0) {
            snprintf(path, sizeof path, LIBDIR "/%s", soname);
            rc = link_file(root, file, path, err);
        }
        snprintf(cache[i].soname, sizeof cache[i].soname, "%s", soname);
        snprintf(cache[i].path, sizeof cache[i].path, "%s", path);
    }
    if (rc == 0)
        rc = ldcache_write(root, cache, N, err);
    free(cache);
    return rc;
}

static int add_tools_and_firmware(const char *root, const char *version,
                                  struct gpulet_error *err)
{
    char path[PATH_MAX], text[512];
    for (size_t i = 0; i < sizeof driver_tools / sizeof driver_tools[0]; i++) {
        snprintf(path, sizeof path, "/usr/bin/%s", driver_tools[i]);
        char *program = NULL;
        size_t size = 0;
        for (size_t d = 0; d < sizeof tool_dirs / sizeof tool_dirs[0] && !program; d++) {
            char built[PATH_MAX];
            struct gpulet_error ignored = {0};
            snprintf(built, sizeof built, "%s/%s", tool_dirs[d], driver_tools[i]);
            if (fileio_read(built, TOOL_MAX, &program, &size, &ignored) < 0)
                program = NULL;
        }
        if (program) {
            char full[PATH_MAX];
            int rc = place(root, path, full, err) < 0
                         ? -1
                         : fileio_replace(full, program, size, FILEIO_EXECUTABLE, err);
            free(program);
            if (rc < 0)
                return -1;
            continue;
        }
        snprintf(text, sizeof text,
                 "#!/bin/sh\necho '%s: a stand-in from gpulet --simulate; there is no "
                 "driver here' >&2\nexit 1\n",
                 driver_tools[i]);
        if (write_file(root, path, text, FILEIO_EXECUTABLE, err) < 0)
            return -1;
    }
    for (size_t i = 0; i < sizeof gsp_firmware / sizeof gsp_firmware[0]; i++) {
        snprintf(path, sizeof path, "/lib/firmware/nvidia/%s/%s", version, gsp_firmware[i]);
        if (write_file(root, path, "simulated GSP firmware\n", 0, err) < 0)
            return -1;
    }
    return 0;
}

static int add_device_nodes(const char *root, const struct gpu_inventory *inv,
                            struct gpulet_error *err)
{
    char path[64];
    for (size_t i = 0; i < sizeof control_nodes / sizeof control_nodes[0]; i++)
        if (device_node(root, control_nodes[i].path, control_nodes[i].major,
                        control_nodes[i].minor, err) < 0)
            return -1;
    for (size_t g = 0; g < inv->gpu_count; g++) {
        const struct gpu_device *d = &inv->gpus[g];
        snprintf(path, sizeof path, "/dev/nvidia%u", d->minor);
        if (device_node(root, path, NVIDIA_MAJOR, d->minor, err) < 0)
            return -1;
        for (size_t m = 0; m < d->mig_count; m++) {
            unsigned int gi = d->migs[m].gpu_instance_id;
            unsigned int minors[2] = {mig_minor(d->minor, gi, -1),
                                      mig_minor(d->minor, gi, (int)d->migs[m].compute_instance_id)};
            for (int k = 0; k < 2; k++) {
                snprintf(path, sizeof path, "/dev/nvidia-caps/nvidia-cap%u", minors[k]);
                if (device_node(root, path, CAPS_MAJOR, minors[k], err) < 0)
                    return -1;
            }
        }
    }
    return 0;
}

/* proc/driver/nvidia-caps/mig-minors for the node's GPUs. */
static int add_mig_minors(const char *root, const struct gpu_inventory *inv,
                          struct gpulet_error *err)
{
    size_t cap = 64 + inv->gpu_count * MIG_GIS * (MIG_CIS + 1) * 48;
    char *text = malloc(cap);
    if (text == NULL)
        return gpulet_error_errno(err, ENOMEM, "cannot list the MIG capability minors");
    size_t used = (size_t)snprintf(text, cap, "config 1\nmonitor 2\n");
    for (size_t g = 0; g < inv->gpu_count; g++) {
        unsigned int minor = inv->gpus[g].minor;
        for (unsigned int gi = 0; gi < MIG_GIS; gi++) {
            used += (size_t)snprintf(text + used, cap - used, "gpu%u/gi%u/access %u\n", minor, gi,
                                     mig_minor(minor, gi, -1));
            for (int ci = 0; ci < MIG_CIS; ci++)
                used += (size_t)snprintf(text + used, cap - used, "gpu%u/gi%u/ci%d/access %u\n",
                                         minor, gi, ci, mig_minor(minor, gi, ci));
        }
    }
    int rc = write_file(root, "/proc/driver/nvidia-caps/mig-minors", text, 0, err);
    free(text);
    return rc;
}

int simroot_driver(struct simroot *s, const struct gpu_inventory *inv, char *out, size_t len,
                   struct gpulet_error *err)
{
    if (strchr(inv->driver_version, '/') || inv->driver_version[0] == '\0' ||
        strcmp(inv->driver_version, "..") == 0)
        return gpulet_error_set(err, GPULET_ERR_INPUT,
                                "the simulated driver version \"%s\" cannot name files",
                                inv->driver_version);
    if (simroot_path(s, "driver/etc", true, out, len, err) < 0)
        return -1;
    *strrchr(out, '/') = '\0';
    if (add_libraries(out, inv->driver_version, err) < 0 ||
        add_tools_and_firmware(out, inv->driver_version, err) < 0 ||
        add_device_nodes(out, inv, err) < 0 || add_mig_minors(out, inv, err) < 0)
        return -1;
    return 0;
}

static int remove_one(const char *path, const struct stat *st, int type, struct FTW *ftw)
{
    (void)st, (void)type, (void)ftw;
    remove(path);
    return 0;
}

void simroot_remove(struct simroot *s)
{
    if (s->dir[0] == '\0')
        return;
    /* Depth first, links not followed, never across a mount point. */
    nftw(s->dir, remove_one, 16, FTW_DEPTH | FTW_PHYS | FTW_MOUNT);
    struct stat st;
    if (lstat(s->dir, &st) == 0)
        log_warn("cannot remove the simulated node's private folder (a mount in it?): remove it "
                 "by hand",
                 "folder=%s", s->dir);
    s->dir[0] = '\0';
}
