/* A claim's sharing settings applied as NVIDIA's DRA driver applies them:
 * `nvidia-smi compute-policy --set-timeslice` per GPU, and an MPS control
 * daemon per claim (`nvidia-cuda-mps-control -d`, its defaults sent
 * through the control program), both the driver's own programs from the
 * driver root, run as jobs so that the loop never waits on them. */
#include "dra_jobs.h"

#include <dirent.h>
#include <errno.h>
#include <fcntl.h>
#include <ftw.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/pidfd.h>
#include <sys/stat.h>
#include <sys/un.h>
#include <unistd.h>

#include "fileio/fileio.h"
#include "log/log.h"

#define SMI_TIMEOUT_MS 10000
#define MPS_START_MS 10000 /* -d returning, then its control socket accepting */
#define MPS_COMMAND_MS 5000
#define MPS_PIDS_MAX 65536 /* /proc entries looked at for a daemon left over */
#define MPS_PIDS_SLICE 256 /* of them a turn of the loop */
#define MPS_FOLDERS_MAX 8192 /* entries of the MPS folder looked at, at start */
/* Marks the claim's daemon (and the servers it starts, which inherit it)
 * so that one that never answers can still be found and ended, among the
 * processes of gpulet's PID namespace only (in_pid_ns). */
#define MPS_MARK "GPULET_MPS_CLAIM="
/* As NVIDIA's driver gives them to the claim's containers. */
#define MPS_CONTAINER_PIPE "/tmp/nvidia-mps"

static void tool(const struct dra_share *s, const char *name, char *buf, size_t len)
{
    snprintf(buf, len, "%s/usr/bin/%s",
             s->chroot || strcmp(s->driver_root, "/") == 0 ? "" : s->driver_root, name);
}

static const char *root(const struct dra_share *s)
{
    return s->chroot ? s->driver_root : NULL;
}

/* The driver's programs find its libraries under a driver root that is
 * not "/" (gpulet's own / has none). */
static void lib_env(const struct dra_share *s, char *buf, size_t len)
{
    if (s->chroot || strcmp(s->driver_root, "/") == 0)
        buf[0] = '\0'; /* none: an empty entry is left out */
    else
        snprintf(buf, len, "LD_LIBRARY_PATH=%s/usr/lib/x86_64-linux-gnu:%s/usr/lib64:%s/lib64",
                 s->driver_root, s->driver_root, s->driver_root);
}

static void claim_dir(const struct dra_share *s, const char *uid, const char *sub, char *buf,
                      size_t len)
{
    snprintf(buf, len, "%s/%s%s%s", s->mps_root, uid, sub[0] ? "/" : "", sub);
}

bool dra_share_mps_alive(const struct dra_share *s, const char *uid)
{
    char path[4400];
    claim_dir(s, uid, "pipe/control", path, sizeof path);
    return dra_socket_alive(path);
}

bool dra_share_mps_left(const struct dra_share *s, const char *uid)
{
    char path[4400];
    struct stat st;
    claim_dir(s, uid, "", path, sizeof path);
    return lstat(path, &st) == 0;
}

/* The devices of the claim's results served by its MPS daemon (mps) or
 * given a time slice (!mps), whole GPUs only when gpus: unique (by GPU
 * when gpus), in result order. */
static size_t claim_devices(const struct dra_result *r, size_t count,
                            const struct dra_device *devs, size_t n_devs, bool mps, bool gpus,
                            const struct dra_device **out)
{
    size_t n = 0;
    for (size_t i = 0; i < count; i++) {
        if (mps ? !r[i].mps : !r[i].timeslice)
            continue;
        const struct dra_device *d = dra_device_find(devs, n_devs, r[i].device);
        if (d == NULL || (gpus && d->mig >= 0))
            continue;
        bool seen = false;
        for (size_t j = 0; j < n; j++)
            seen |= gpus ? out[j]->gpu == d->gpu : out[j] == d;
        if (!seen)
            out[n++] = d;
    }
    return n;
}

static const char *device_uuid(const struct dra_share *s, const struct dra_device *d)
{
    const struct gpu_device *g = &s->inv->gpus[d->gpu];
    return d->mig < 0 ? g->uuid : g->migs[d->mig].uuid;
}

static int smi(struct dra_share *s, struct dra_job *j, enum dra_step_when when,
               const char *const *args)
{
    char path[4400], env[13000];
    tool(s, "nvidia-smi", path, sizeof path);
    lib_env(s, env, sizeof env);
    const char *argv[8] = {path};
    for (size_t i = 0; args[i] && i < 6; i++)
        argv[i + 1] = args[i];
    const char *envp[] = {env, NULL};
    return dra_job_run(j, when, argv, envp, NULL, root(s), NULL, SMI_TIMEOUT_MS);
}

/* ---- folders ---- */

struct folder_arg {
    const struct dra_share *s;
    char dir[4400];
};

static int make_folders(void *arg, struct gpulet_error *err)
{
    const struct folder_arg *a = arg;
    static const char *const subs[] = {"pipe", "log", "shm"};
    char path[4500];
    for (size_t i = 0; i < 3; i++) {
        snprintf(path, sizeof path, "%s/%s", a->dir, subs[i]);
        /* Containers of any user reach the daemon through pipe and shm. */
        if (fileio_mkdirs(path, 0755, 0755, err) < 0 || chmod(path, i == 1 ? 0755 : 01777) < 0)
            return err->msg[0] ? -1
                               : gpulet_error_errno(err, errno, "cannot make %s", path);
    }
    return 0;
}

static int remove_entry(const char *path, const struct stat *st, int type, struct FTW *ftw)
{
    (void)st;
    (void)ftw;
    int rc = type == FTW_DP ? rmdir(path) : unlink(path);
    if (rc != 0 && errno != ENOENT)
        log_warn("cannot remove a file of an MPS daemon", "path=%s error=\"%s\"", path,
                 strerror(errno));
    return 0;
}

static int remove_folders(void *arg, struct gpulet_error *err)
{
    const struct folder_arg *a = arg;
    (void)err;
    /* The claim's containers may have left any number of files in shm,
     * nested past PATH_MAX: only a move here, the removal off the loop. */
    struct gpulet_error e = {0};
    if (plugin_slice_discard(a->s->slice_dir, a->dir, a->s->reaper, &e) == 0)
        return 0;
    log_warn("cannot hand an MPS daemon's folder to the reaper: removing it here",
             "error=\"%s\"", e.msg);
    /* Not across mounts or links: only what the daemon left in them. */
    if (nftw(a->dir, remove_entry, 16, FTW_DEPTH | FTW_PHYS | FTW_MOUNT) != 0 && errno != ENOENT)
        log_warn("cannot remove an MPS daemon's folder", "dir=%s error=\"%s\"", a->dir,
                 strerror(errno));
    return 0;
}

/* ---- a daemon that did not hear quit ---- */

struct mark_arg {
    char mark[128];
    long pos;    /* where the last slice stopped in /proc */
    size_t seen; /* entries looked at so far */
};

static bool environ_has(pid_t pid, const char *mark)
{
    char path[64], buf[65536];
    snprintf(path, sizeof path, "/proc/%d/environ", (int)pid);
    int fd = open(path, O_RDONLY | O_CLOEXEC);
    if (fd < 0)
        return false;
    ssize_t n = read(fd, buf, sizeof buf - 1);
    close(fd);
    if (n <= 0)
        return false;
    size_t len = strlen(mark);
    for (ssize_t i = 0; i + (ssize_t)len <= n;) {
        if (memcmp(buf + i, mark, len) == 0 && (i + (ssize_t)len == n || buf[i + len] == '\0'))
            return true;
        i += (ssize_t)strnlen(buf + i, (size_t)(n - i)) + 1;
    }
    return false;
}

/* The daemons gpulet starts share its PID namespace; a pod's processes
 * have one of their own, so a mark a container forges (its variables are
 * its own to set) never gets its process signalled. */
static bool in_pid_ns(pid_t pid, const struct stat *own)
{
    char path[64];
    struct stat st;
    snprintf(path, sizeof path, "/proc/%d/ns/pid", (int)pid);
    return stat(path, &st) == 0 && st.st_dev == own->st_dev && st.st_ino == own->st_ino;
}

/* Ends what is left of the claim's daemon and its servers, a slice of
 * /proc a turn of the loop. The signal goes through a pidfd opened before
 * the namespace and the mark are read: a PID reused in between is never
 * signalled. */
static int kill_marked(void *arg, struct gpulet_error *err)
{
    struct mark_arg *a = arg;
    (void)err;
    struct stat own;
    if (stat("/proc/self/ns/pid", &own) != 0)
        return 0; /* no way to tell gpulet's processes: none signalled */
    DIR *dir = opendir("/proc");
    if (dir == NULL)
        return 0;
    if (a->seen > 0)
        seekdir(dir, a->pos);
    struct dirent *e = NULL;
    for (size_t n = 0; n < MPS_PIDS_SLICE && a->seen < MPS_PIDS_MAX && (e = readdir(dir)) != NULL;
         n++, a->seen++) {
        char *end;
        long pid = strtol(e->d_name, &end, 10);
        if (*end || pid <= 1 || pid == getpid())
            continue;
        int fd = pidfd_open((pid_t)pid, 0);
        if (fd < 0)
            continue;
        if (in_pid_ns((pid_t)pid, &own) && environ_has((pid_t)pid, a->mark) &&
            pidfd_send_signal(fd, SIGKILL, NULL, 0) == 0)
            log_warn("MPS daemon ended by force", "pid=%ld mark=%s", pid, a->mark);
        close(fd);
    }
    bool more = e != NULL && a->seen < MPS_PIDS_MAX;
    a->pos = telldir(dir);
    closedir(dir);
    return more ? DRA_JOB_AGAIN : 0;
}

/* ---- the control program ---- */

/* Room for every device a claim may have, by its longest UUID: cut
 * short, the daemon would serve other devices than the claim's. */
#define MPS_VISIBLE_MAX                                                                     \
    (sizeof "CUDA_VISIBLE_DEVICES=" +                                                      \
     DRA_CLAIM_DEVICES * (sizeof ((struct gpu_mig_device *)0)->uuid + 1))
_Static_assert(sizeof ((struct gpu_mig_device *)0)->uuid ==
                   sizeof ((struct gpu_device *)0)->uuid,
               "a GPU's and a MIG device's UUIDs are of one size");

struct mps_env {
    char pipe[4400], log[4400], visible[MPS_VISIBLE_MAX], mark[128], lib[13000];
};

static void mps_env(const struct dra_share *s, const char *uid, struct mps_env *e)
{
    char dir[4400];
    claim_dir(s, uid, "pipe", dir, sizeof dir);
    snprintf(e->pipe, sizeof e->pipe, "CUDA_MPS_PIPE_DIRECTORY=%s", dir);
    claim_dir(s, uid, "log", dir, sizeof dir);
    snprintf(e->log, sizeof e->log, "CUDA_MPS_LOG_DIRECTORY=%s", dir);
    snprintf(e->mark, sizeof e->mark, MPS_MARK "%s", uid);
    lib_env(s, e->lib, sizeof e->lib);
}

static int mps_command(struct dra_share *s, struct dra_job *j, enum dra_step_when when,
                       const struct mps_env *e, const char *command)
{
    char path[4400];
    tool(s, "nvidia-cuda-mps-control", path, sizeof path);
    const char *argv[] = {path, NULL};
    const char *envp[] = {e->pipe, e->log, e->lib, NULL};
    return dra_job_run(j, when, argv, envp, command, root(s), NULL, MPS_COMMAND_MS);
}

/* Skips the start when the claim's daemon answers already (a retry, or
 * gpulet restarted while it ran). */
struct alive_arg {
    char sock[4400];
};

static int skip_if_alive(void *arg, struct gpulet_error *err)
{
    const struct alive_arg *a = arg;
    (void)err;
    return dra_socket_alive(a->sock) ? 1 : 0;
}

/* A daemon that is gone is not told to quit (that would fail). */
static int skip_unless_alive(void *arg, struct gpulet_error *err)
{
    const struct alive_arg *a = arg;
    (void)err;
    return dra_socket_alive(a->sock) ? 0 : 1;
}

/* quit, the socket gone, anything left ended, the folders removed. */
static int mps_stop(struct dra_share *s, struct dra_job *j, enum dra_step_when when,
                    const char *uid, const struct mps_env *e)
{
    struct folder_arg f = {.s = s};
    struct mark_arg m = {0};
    struct alive_arg a;
    claim_dir(s, uid, "", f.dir, sizeof f.dir);
    claim_dir(s, uid, "pipe/control", a.sock, sizeof a.sock);
    snprintf(m.mark, sizeof m.mark, "%s", e->mark);
    int rc = 0;
    rc |= dra_job_call(j, when, skip_unless_alive, &a, sizeof a);
    rc |= mps_command(s, j, when, e, "quit\n");
    rc |= dra_job_wait_socket(j, when, a.sock, false, MPS_COMMAND_MS);
    rc |= dra_job_call(j, when, kill_marked, &m, sizeof m);
    rc |= dra_job_call(j, when, remove_folders, &f, sizeof f);
    return rc;
}

/* A job named for what it does to claim uid. */
static struct dra_job *claim_job(const char *doing, const char *uid, struct gpulet_error *err)
{
    char what[128];
    snprintf(what, sizeof what, "%s of claim %s", doing, uid);
    struct dra_job *j = dra_job_new(what);
    if (j == NULL)
        gpulet_error_errno(err, ENOMEM, "cannot queue the %s", what);
    return j;
}

/* The job to *out, unless a step did not fit (rc != 0). */
static int hand_over(struct dra_job *j, int rc, const char *uid, struct dra_job **out,
                     struct gpulet_error *err)
{
    if (rc != 0) {
        dra_job_free(j);
        return gpulet_error_set(err, GPULET_ERR_SYSTEM, "the sharing settings of claim %s take "
                                "more than %d steps", uid, DRA_JOB_STEPS);
    }
    *out = j;
    return 0;
}

int dra_share_prepare(struct dra_share *s, const char *uid, const struct dra_result *r,
                      size_t count, const struct dra_device *devs, size_t n_devs,
                      const struct dra_mps *mps, bool again, struct dra_job **out,
                      struct gpulet_error *err)
{
    *out = NULL;
    const struct dra_device *ts[DRA_CLAIM_DEVICES], *md[DRA_CLAIM_DEVICES];
    size_t n_ts = claim_devices(r, count, devs, n_devs, false, true, ts);
    size_t n_md = mps->on ? claim_devices(r, count, devs, n_devs, true, false, md) : 0;
    if (n_ts == 0 && n_md == 0)
        return 0;
    struct dra_job *j = claim_job("GPU sharing", uid, err);
    if (j == NULL)
        return -1;
    int rc = 0;
    for (size_t i = 0; i < n_ts; i++) {
        const char *u = device_uuid(s, ts[i]);
        char slice[8] = "0";
        for (size_t k = 0; k < count; k++)
            if (r[k].timeslice && strcmp(r[k].device, ts[i]->name) == 0)
                snprintf(slice, sizeof slice, "%u", r[k].interval);
        /* NVIDIA puts the compute mode back to default first (MPS sets
         * EXCLUSIVE_PROCESS). Again, only the interval, which the driver
         * forgets: the mode may be another claim's since. */
        if (!again)
            rc |= smi(s, j, DRA_STEP_OK, (const char *[]){"-i", u, "-c", "DEFAULT", NULL});
        rc |= smi(s, j, DRA_STEP_OK,
                  (const char *[]){"compute-policy", "-i", u, "--set-timeslice", slice, NULL});
    }
    if (n_md) {
        struct mps_env e;
        mps_env(s, uid, &e);
        size_t o = (size_t)snprintf(e.visible, sizeof e.visible, "CUDA_VISIBLE_DEVICES=");
        for (size_t i = 0; i < n_md && o < sizeof e.visible; i++)
            o += (size_t)snprintf(e.visible + o, sizeof e.visible - o, "%s%s", i ? "," : "",
                                  device_uuid(s, md[i]));
        struct folder_arg f = {.s = s};
        struct alive_arg a;
        claim_dir(s, uid, "", f.dir, sizeof f.dir);
        claim_dir(s, uid, "pipe/control", a.sock, sizeof a.sock);
        if (strlen(a.sock) >= sizeof ((struct sockaddr_un *)0)->sun_path) {
            dra_job_free(j);
            return gpulet_error_set(err, GPULET_ERR_SYSTEM, "the MPS daemon's control socket "
                                    "%s would be longer than a Unix socket's 107 bytes: give "
                                    "gpulet a shorter --state-dir", a.sock);
        }
        char shm[4400], path[4400];
        claim_dir(s, uid, "shm", shm, sizeof shm);
        tool(s, "nvidia-cuda-mps-control", path, sizeof path);
        rc |= dra_job_call(j, DRA_STEP_OK, make_folders, &f, sizeof f);
        for (size_t i = 0; i < n_md; i++)
            if (md[i]->mig < 0)
                rc |= smi(s, j, DRA_STEP_OK,
                          (const char *[]){"-i", device_uuid(s, md[i]), "-c", "EXCLUSIVE_PROCESS",
                                           NULL});
        rc |= dra_job_call(j, DRA_STEP_OK, skip_if_alive, &a, sizeof a);
        const char *argv[] = {path, "-d", NULL};
        const char *envp[] = {e.visible, e.pipe, e.log, e.mark, e.lib, NULL};
        rc |= dra_job_run(j, DRA_STEP_OK, argv, envp, NULL, root(s), shm, MPS_START_MS);
        rc |= dra_job_wait_socket(j, DRA_STEP_OK, a.sock, true, MPS_START_MS);
        char command[256];
        if (mps->thread_percentage >= 0) {
            snprintf(command, sizeof command, "set_default_active_thread_percentage %d\n",
                     mps->thread_percentage);
            rc |= mps_command(s, j, DRA_STEP_OK, &e, command);
        }
        /* NVIDIA's order: the default for every device, then the devices
         * named, by UUID or by index among the claim's devices. */
        for (size_t i = 0; i < n_md && mps->pinned; i++) {
            char mb[32];
            dra_mps_megabytes(mps->pinned, mb, sizeof mb);
            snprintf(command, sizeof command, "set_default_device_pinned_mem_limit %s %s\n",
                     device_uuid(s, md[i]), mb);
            rc |= mps_command(s, j, DRA_STEP_OK, &e, command);
        }
        for (size_t l = 0; l < mps->n_limits; l++) {
            const char *key = mps->limits[l].device, *u = NULL;
            char *end;
            unsigned long index = strtoul(key, &end, 10);
            if (*end == '\0' && key[0])
                u = index < n_md ? device_uuid(s, md[index]) : NULL;
            for (size_t i = 0; i < n_md && u == NULL; i++)
                if (strcmp(key, device_uuid(s, md[i])) == 0)
                    u = key;
            if (u == NULL) {
                dra_job_free(j);
                return gpulet_error_set(err, GPULET_ERR_INPUT, "invalid device: %s in "
                                        "defaultPerDevicePinnedMemoryLimit is not one of the "
                                        "claim's %zu MPS devices", key, n_md);
            }
            char mb[32];
            dra_mps_megabytes(mps->limits[l].bytes, mb, sizeof mb);
            snprintf(command, sizeof command, "set_default_device_pinned_mem_limit %s %s\n", u,
                     mb);
            rc |= mps_command(s, j, DRA_STEP_OK, &e, command);
        }
        /* A claim prepared before keeps its daemon, which its pods may
         * be using, until it is unprepared. */
        if (!again)
            rc |= mps_stop(s, j, DRA_STEP_FAILED, uid, &e);
    }
    return hand_over(j, rc, uid, out, err);
}

/* ---- folders of claims gpulet does not know ---- */

/* A real folder (no link) under the MPS folder, named as gpulet names
 * its claims' folders. */
static bool claim_folder(int dir, const char *name)
{
    struct stat st;
    return dra_uid_valid(name) && fstatat(dir, name, &st, AT_SYMLINK_NOFOLLOW) == 0 &&
           S_ISDIR(st.st_mode);
}

size_t dra_share_mps_orphans(const struct dra_share *s, char (*uids)[DRA_UID_MAX], size_t max,
                             size_t *odd)
{
    *odd = 0;
    int fd = open(s->mps_root, O_RDONLY | O_DIRECTORY | O_NOFOLLOW | O_CLOEXEC);
    DIR *dir = fd < 0 ? NULL : fdopendir(fd);
    if (dir == NULL) {
        if (fd >= 0)
            close(fd);
        return 0;
    }
    size_t n = 0, seen = 0;
    struct dirent *e;
    while (n < max && seen++ < MPS_FOLDERS_MAX && (e = readdir(dir)) != NULL) {
        if (strcmp(e->d_name, ".") == 0 || strcmp(e->d_name, "..") == 0)
            continue;
        if (!claim_folder(dirfd(dir), e->d_name))
            (*odd)++;
        else if (!s->claim_known(s->user, e->d_name))
            snprintf(uids[n++], DRA_UID_MAX, "%s", e->d_name);
    }
    closedir(dir);
    return n;
}

/* The sweep goes on only while the claim is still unknown (a prepare of
 * it may have come since) and its folder still there; it says so then. */
struct sweep_arg {
    struct dra_share *s;
    char uid[DRA_UID_MAX];
};

static int sweep_gate(void *arg, struct gpulet_error *err)
{
    const struct sweep_arg *a = arg;
    (void)err;
    int fd = open(a->s->mps_root, O_RDONLY | O_DIRECTORY | O_NOFOLLOW | O_CLOEXEC);
    bool there = fd >= 0 && claim_folder(fd, a->uid);
    if (fd >= 0)
        close(fd);
    if (!there || a->s->claim_known(a->s->user, a->uid))
        return DRA_JOB_STEPS; /* the rest of the job */
    log_info("MPS folder of a claim not in the checkpoint swept", "uid=%s", a->uid);
    return 0;
}

int dra_share_sweep(struct dra_share *s, const char *uid, struct dra_job **out,
                    struct gpulet_error *err)
{
    *out = NULL;
    struct dra_job *j = claim_job("sweeping the MPS folder", uid, err);
    if (j == NULL)
        return -1;
    struct sweep_arg g = {.s = s};
    snprintf(g.uid, sizeof g.uid, "%s", uid);
    struct mps_env e;
    mps_env(s, uid, &e);
    int rc = dra_job_call(j, DRA_STEP_OK, sweep_gate, &g, sizeof g);
    rc |= mps_stop(s, j, DRA_STEP_ALWAYS, uid, &e);
    return hand_over(j, rc, uid, out, err);
}

/* Skips the restore of a GPU another prepared claim still holds. */
struct held_arg {
    struct dra_share *s;
    unsigned int gpu;
    char uid[DRA_UID_MAX];
};

static int skip_if_held(void *arg, struct gpulet_error *err)
{
    const struct held_arg *a = arg;
    (void)err;
    return a->s->gpu_held(a->s->user, a->gpu, a->uid) ? 1 : 0;
}

/* nvidia-smi args on d's GPU, unless another claim holds it by then. */
static int restore(struct dra_share *s, struct dra_job *j, const char *uid,
                   const struct dra_device *d, const char *const *args)
{
    struct held_arg h = {.s = s, .gpu = d->gpu};
    snprintf(h.uid, sizeof h.uid, "%s", uid);
    return dra_job_call(j, DRA_STEP_ALWAYS, skip_if_held, &h, sizeof h) |
           smi(s, j, DRA_STEP_ALWAYS, args);
}

int dra_share_unprepare(struct dra_share *s, const char *uid, const struct dra_result *r,
                        size_t count, const struct dra_device *devs, size_t n_devs,
                        bool mps, struct dra_job **out, struct gpulet_error *err)
{
    *out = NULL;
    const struct dra_device *ts[DRA_CLAIM_DEVICES];
    size_t n_ts = claim_devices(r, count, devs, n_devs, false, true, ts);
    if (n_ts == 0 && !mps)
        return 0;
    struct dra_job *j = claim_job("undoing the GPU sharing", uid, err);
    if (j == NULL)
        return -1;
    int rc = 0;
    if (mps) {
        struct mps_env e;
        mps_env(s, uid, &e);
        rc |= mps_stop(s, j, DRA_STEP_ALWAYS, uid, &e);
        /* Its GPUs leave EXCLUSIVE_PROCESS, so that the next claim without
         * a configuration may run more than one process on them. */
        const struct dra_device *gpus[DRA_CLAIM_DEVICES];
        size_t n_gpus = claim_devices(r, count, devs, n_devs, true, true, gpus);
        for (size_t i = 0; i < n_gpus; i++)
            rc |= restore(s, j, uid, gpus[i],
                          (const char *[]){"-i", device_uuid(s, gpus[i]), "-c", "DEFAULT", NULL});
    }
    for (size_t i = 0; i < n_ts; i++)
        rc |= restore(s, j, uid, ts[i],
                      (const char *[]){"compute-policy", "-i", device_uuid(s, ts[i]),
                                       "--set-timeslice", "0", NULL});
    return hand_over(j, rc, uid, out, err);
}

void dra_share_mps_edits(const struct dra_share *s, const char *uid, json_t *edits)
{
    char pipe[4400], shm[4400];
    claim_dir(s, uid, "pipe", pipe, sizeof pipe);
    claim_dir(s, uid, "shm", shm, sizeof shm);
    json_t *env = json_object_get(edits, "env");
    if (!json_is_array(env)) {
        env = json_array();
        json_object_set_new(edits, "env", env);
    }
    json_array_append_new(env, json_string("CUDA_MPS_PIPE_DIRECTORY=" MPS_CONTAINER_PIPE));
    json_t *mounts = json_object_get(edits, "mounts");
    if (!json_is_array(mounts)) {
        mounts = json_array();
        json_object_set_new(edits, "mounts", mounts);
    }
    json_array_append_new(mounts, json_pack("{s:s, s:s, s:[s, s, s, s]}", "hostPath", shm,
                                            "containerPath", "/dev/shm", "options", "rw",
                                            "nosuid", "nodev", "bind"));
    json_array_append_new(mounts, json_pack("{s:s, s:s, s:[s, s, s, s]}", "hostPath", pipe,
                                            "containerPath", MPS_CONTAINER_PIPE, "options", "rw",
                                            "nosuid", "nodev", "bind"));
}
