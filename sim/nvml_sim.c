/*
 * The simulated libnvidia-ml.so.1: every NVML function gpulet uses,
 * answered from a node description (GPULET_SIM_NODE) and a state file
 * (GPULET_SIM_STATE) instead of a GPU. Like the real library it is
 * thread-safe (one lock) and reference counts nvmlInit.
 *
 * Built twice: as the current driver, and with SIM_OLD_DRIVER as an old
 * one that lacks the newer symbol versions, so the loader's fallbacks are
 * tested too.
 */
#include <errno.h>
#include <math.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <time.h>

#include "nvml/nvml_abi.h"
#include "owner/owner.h"
#include "sim_device.h"
#include "sim_mig.h"
#include "sim_node.h"
#include "sim_procfs.h"
#include "sim_sysfs.h"

#define SIM_API __attribute__((visibility("default")))

#define HANDLE_MAGIC 0x53494d44U /* "SIMD" */
#define EVENT_SET_MAGIC 0x53494d45U
#define SAMPLE_MAGIC 0x53494d53U
#define GI_MAGIC 0x53494d47U
#define CI_MAGIC 0x53494d43U
/* GPU instance profile numbers a current driver knows (1_SLICE .. 1_SLICE_REV2). */
#define KNOWN_GI_PROFILES 10
#define MIB (1024ULL * 1024ULL)

struct nvmlDevice_st {
    unsigned int magic;
    unsigned int gpu;
    int mig; /* -1: the whole GPU */
};

struct nvmlGpuInstance_st {
    unsigned int magic;
    unsigned int gpu;
    unsigned int index; /* into the GPU's sim_gpu_instances() */
};

struct nvmlComputeInstance_st {
    unsigned int magic;
    unsigned int gpu;
    unsigned int mig; /* the MIG device it is */
};

struct nvmlEventSet_st {
    unsigned int magic;
    unsigned long long mask[SIM_MAX_GPUS];
    size_t cursor; /* events before this index were there before the set */
};

struct nvmlGpmSample_st {
    unsigned int magic;
    bool filled;
    unsigned int gpu;
    int mig; /* the MIG device whose GPU instance it sampled, -1: the whole GPU */
    double seconds;
};

/* The simulator's whole state: it stands in for a kernel driver, which is
 * process-wide by nature. Everything below is guarded by `lock`. */
static pthread_mutex_t lock = PTHREAD_MUTEX_INITIALIZER;
static unsigned int init_count;
static struct sim_node *node;
static struct sim_state *state;
static struct nvmlDevice_st gpu_handles[SIM_MAX_GPUS];
static struct nvmlDevice_st mig_handles[SIM_MAX_GPUS][SIM_MAX_MIGS];
static struct nvmlGpuInstance_st gi_handles[SIM_MAX_GPUS][SIM_MAX_MIGS];
static struct nvmlComputeInstance_st ci_handles[SIM_MAX_GPUS][SIM_MAX_MIGS];
static struct timespec started;
static char last_error[1200];
static char state_path[4096];
static struct stat state_seen;
static bool state_present;
static char state_error_shown[1200];
/* The simulated sysfs: GPULET_SIM_SYSFS, or a private folder made when
 * gpulet asks for one and removed at the last nvmlShutdown. */
static char sysfs_root[4096];
static bool sysfs_private;

SIM_API const char *gpuletSimNodeName(void)
{
    return node ? node->name : NULL;
}

SIM_API const char *gpuletSimMachine(void)
{
    return node && node->machine[0] ? node->machine : NULL;
}

SIM_API const char *gpuletSimLastError(void)
{
    return last_error;
}

/* Where the node's PCI and DMI files are; makes a private tree the first
 * time when GPULET_SIM_SYSFS did not name one. NULL before nvmlInit or
 * when the tree cannot be written (the reason goes to stderr). */
SIM_API const char *gpuletSimSysfsRoot(void)
{
    pthread_mutex_lock(&lock);
    const char *root = NULL;
    if (init_count > 0 && sysfs_root[0] == '\0') {
        const char *tmp = getenv("TMPDIR");
        snprintf(sysfs_root, sizeof sysfs_root, "%s/gpulet-sim-sysfs-XXXXXX",
                 tmp && tmp[0] ? tmp : "/tmp");
        struct gpulet_error err = {0};
        if (mkdtemp(sysfs_root) == NULL) {
            fprintf(stderr, "gpulet-sim: level=warn msg=\"cannot make the simulated sysfs\" "
                            "path=%s error=\"%s\"\n", sysfs_root, strerror(errno));
            sysfs_root[0] = '\0';
        } else {
            sysfs_private = true; /* removed at shutdown, even if half written */
            /* and by gpulet's next --simulate when this process is killed */
            if (owner_mark(sysfs_root, &err) < 0 || sim_sysfs_write(node, sysfs_root, &err) < 0)
                fprintf(stderr, "gpulet-sim: level=warn msg=\"cannot write the simulated "
                                "sysfs\" error=\"%s\"\n", err.msg);
        }
    }
    if (init_count > 0 && sysfs_root[0])
        root = sysfs_root;
    pthread_mutex_unlock(&lock);
    return root;
}

static double elapsed_seconds(void)
{
    if (state && state->frozen)
        return state->frozen_seconds;
    struct timespec now;
    clock_gettime(CLOCK_MONOTONIC, &now);
    return (double)(now.tv_sec - started.tv_sec) + (double)(now.tv_nsec - started.tv_nsec) / 1e9;
}

/* Rereads the state file when its identity, size or time changed. A file
 * that does not parse keeps the previous state and is reported once. */
static void refresh_state(void)
{
    if (state_path[0] == '\0')
        return;
    struct stat st;
    bool present = stat(state_path, &st) == 0;
    if (present == state_present &&
        (!present || (st.st_ino == state_seen.st_ino && st.st_size == state_seen.st_size &&
                      st.st_mtim.tv_sec == state_seen.st_mtim.tv_sec &&
                      st.st_mtim.tv_nsec == state_seen.st_mtim.tv_nsec)))
        return;
    struct sim_state *next = calloc(1, sizeof *next);
    if (next == NULL)
        return;
    struct gpulet_error err = {0};
    if (sim_state_load(state_path, node, next, &err) < 0) {
        if (strcmp(state_error_shown, err.msg) != 0) {
            fprintf(stderr, "gpulet-sim: ignoring the new state file: %s\n", err.msg);
            snprintf(state_error_shown, sizeof state_error_shown, "%s", err.msg);
        }
        free(next);
        /* Remember it anyway, so a bad file is not reparsed on every call. */
        state_present = present;
        state_seen = st;
        return;
    }
    state_error_shown[0] = '\0';
    free(state);
    state = next;
    state_present = present;
    if (present)
        state_seen = st;
}

static nvmlReturn_t load_node(void)
{
    const char *path = getenv("GPULET_SIM_NODE");
    if (path == NULL || path[0] == '\0') {
        snprintf(last_error, sizeof last_error,
                 "the simulated NVML needs GPULET_SIM_NODE set to a node description file; "
                 "run gpulet with --simulate NAME|FILE instead of loading it by hand");
        return NVML_ERROR_UNKNOWN;
    }
    node = calloc(1, sizeof *node);
    state = calloc(1, sizeof *state);
    if (node == NULL || state == NULL) {
        snprintf(last_error, sizeof last_error, "the simulated NVML is out of memory");
        return NVML_ERROR_UNKNOWN;
    }
    struct gpulet_error err = {0};
    if (sim_node_load(path, node, &err) < 0) {
        snprintf(last_error, sizeof last_error, "cannot load the simulated node: %s", err.msg);
        return NVML_ERROR_UNKNOWN;
    }
    if (!node->driver_loaded)
        return NVML_ERROR_DRIVER_NOT_LOADED;
    for (unsigned int g = 0; g < SIM_MAX_GPUS; g++) {
        gpu_handles[g] = (struct nvmlDevice_st){HANDLE_MAGIC, g, -1};
        for (int m = 0; m < SIM_MAX_MIGS; m++) {
            mig_handles[g][m] = (struct nvmlDevice_st){HANDLE_MAGIC, g, m};
            gi_handles[g][m] = (struct nvmlGpuInstance_st){GI_MAGIC, g, (unsigned int)m};
            ci_handles[g][m] = (struct nvmlComputeInstance_st){CI_MAGIC, g, (unsigned int)m};
        }
    }
    const char *sysfs = getenv("GPULET_SIM_SYSFS");
    snprintf(sysfs_root, sizeof sysfs_root, "%s", sysfs ? sysfs : "");
    sysfs_private = false;
    if (sysfs_root[0] && sim_sysfs_write(node, sysfs_root, &err) < 0) {
        snprintf(last_error, sizeof last_error, "cannot write the simulated sysfs: %s", err.msg);
        return NVML_ERROR_UNKNOWN;
    }
    const char *procfs = getenv("GPULET_SIM_PROCFS");
    if (procfs && procfs[0] && sim_procfs_write(node, procfs, &err) < 0) {
        snprintf(last_error, sizeof last_error, "cannot write the simulated procfs: %s", err.msg);
        return NVML_ERROR_UNKNOWN;
    }
    const char *spath = getenv("GPULET_SIM_STATE");
    snprintf(state_path, sizeof state_path, "%s", spath ? spath : "");
    state_present = false;
    state_error_shown[0] = '\0';
    clock_gettime(CLOCK_MONOTONIC, &started);
    refresh_state();
    return NVML_SUCCESS;
}

static void unload_node(void)
{
    if (sysfs_private && node)
        sim_sysfs_remove(node, sysfs_root);
    sysfs_private = false;
    sysfs_root[0] = '\0';
    free(node);
    free(state);
    node = NULL;
    state = NULL;
}

static nvmlReturn_t sim_init(void)
{
    pthread_mutex_lock(&lock);
    nvmlReturn_t ret = NVML_SUCCESS;
    if (init_count == 0) {
        last_error[0] = '\0';
        ret = load_node();
        if (ret != NVML_SUCCESS)
            unload_node();
    }
    if (ret == NVML_SUCCESS)
        init_count++;
    pthread_mutex_unlock(&lock);
    return ret;
}

SIM_API nvmlReturn_t nvmlInit(void)
{
    return sim_init();
}

SIM_API nvmlReturn_t nvmlInitWithFlags(unsigned int flags)
{
    (void)flags;
    return sim_init();
}

SIM_API nvmlReturn_t nvmlShutdown(void)
{
    pthread_mutex_lock(&lock);
    nvmlReturn_t ret = NVML_ERROR_UNINITIALIZED;
    if (init_count > 0) {
        ret = NVML_SUCCESS;
        if (--init_count == 0)
            unload_node();
    }
    pthread_mutex_unlock(&lock);
    return ret;
}

SIM_API const char *nvmlErrorString(nvmlReturn_t ret)
{
    switch (ret) {
    case NVML_SUCCESS: return "Success";
    case NVML_ERROR_UNINITIALIZED: return "Uninitialized";
    case NVML_ERROR_INVALID_ARGUMENT: return "Invalid Argument";
    case NVML_ERROR_NOT_SUPPORTED: return "Not Supported";
    case NVML_ERROR_NO_PERMISSION: return "Insufficient Permissions";
    case NVML_ERROR_NOT_FOUND: return "Not Found";
    case NVML_ERROR_INSUFFICIENT_SIZE: return "Insufficient Size";
    case NVML_ERROR_DRIVER_NOT_LOADED: return "Driver Not Loaded";
    case NVML_ERROR_TIMEOUT: return "Timeout";
    case NVML_ERROR_GPU_IS_LOST: return "GPU is lost";
    default: return "Unknown Error";
    }
}

/* Every device call starts here: lock, check the handle and the output
 * pointer (CALLER_CHECKS where the call has several and checks them
 * itself), refresh the state file. On success the lock is held and *gpu /
 * *mig are set; the caller unlocks with leave(). */
static const char caller_checks_outputs;
#define CALLER_CHECKS ((const void *)&caller_checks_outputs)

static nvmlReturn_t enter(nvmlDevice_t dev, struct sim_gpu **gpu, struct sim_mig **mig,
                          const void *out)
{
    if (out == NULL)
        return NVML_ERROR_INVALID_ARGUMENT;
    pthread_mutex_lock(&lock);
    if (init_count == 0) {
        pthread_mutex_unlock(&lock);
        return NVML_ERROR_UNINITIALIZED;
    }
    if (dev == NULL || dev->magic != HANDLE_MAGIC || dev->gpu >= node->gpu_count ||
        (dev->mig >= 0 && (size_t)dev->mig >= node->gpus[dev->gpu].mig_count)) {
        pthread_mutex_unlock(&lock);
        return NVML_ERROR_INVALID_ARGUMENT;
    }
    refresh_state();
    if (state->gpus[dev->gpu].lost) {
        pthread_mutex_unlock(&lock);
        return NVML_ERROR_GPU_IS_LOST;
    }
    *gpu = &node->gpus[dev->gpu];
    *mig = dev->mig >= 0 ? &(*gpu)->migs[dev->mig] : NULL;
    return NVML_SUCCESS;
}

/* enter() for calls that a MIG device does not answer. */
static nvmlReturn_t enter_gpu(nvmlDevice_t dev, struct sim_gpu **gpu, const void *out)
{
    struct sim_mig *mig;
    nvmlReturn_t ret = enter(dev, gpu, &mig, out);
    if (ret == NVML_SUCCESS && mig) {
        pthread_mutex_unlock(&lock);
        return NVML_ERROR_NOT_SUPPORTED;
    }
    return ret;
}

static nvmlReturn_t leave(nvmlReturn_t ret)
{
    pthread_mutex_unlock(&lock);
    return ret;
}

static nvmlReturn_t enter_system(void)
{
    pthread_mutex_lock(&lock);
    if (init_count == 0) {
        pthread_mutex_unlock(&lock);
        return NVML_ERROR_UNINITIALIZED;
    }
    refresh_state();
    return NVML_SUCCESS;
}

static nvmlReturn_t copy_string(char *dst, unsigned int len, const char *src)
{
    if (dst == NULL)
        return NVML_ERROR_INVALID_ARGUMENT;
    if (strlen(src) + 1 > len)
        return NVML_ERROR_INSUFFICIENT_SIZE;
    memcpy(dst, src, strlen(src) + 1);
    return NVML_SUCCESS;
}

/* ---- moving values: deterministic functions of the simulated time ---- */

static size_t gpu_index_of(const struct sim_gpu *g)
{
    return (size_t)(g - node->gpus);
}

static const struct sim_gpu_state *gpu_state(const struct sim_gpu *g)
{
    return &state->gpus[gpu_index_of(g)];
}

static bool overridden(const struct sim_gpu *g, enum sim_override o, unsigned long long *v)
{
    const struct sim_gpu_state *s = gpu_state(g);
    if (!s->has[o])
        return false;
    *v = s->value[o];
    return true;
}

/* A triangle wave in [0, 1] with a period of 60 s, shifted per GPU. */
static double wave(const struct sim_gpu *g)
{
    double x = fmod(elapsed_seconds() / 60.0 + (double)gpu_index_of(g) * 0.137, 1.0);
    return x < 0.5 ? 2 * x : 2 - 2 * x;
}

/* ---- what programs on the simulated libcuda.so.1 do (sim_device) ---- */

/* The node's shared device state, once a simulated CUDA program made it. */
static struct sim_dev_file *cuda_state(void)
{
    static struct sim_dev_file *f;
    static bool missing_logged;
    if (f == NULL) {
        char msg[512];
        f = sim_dev_open(node, false, msg, sizeof msg);
        if (f == NULL && msg[0] && !missing_logged) {
            fprintf(stderr, "gpulet-sim: %s\n", msg);
            missing_logged = true;
        }
    }
    return f;
}

static unsigned int cuda_utilization(const struct sim_gpu *g)
{
    struct sim_dev_file *f = cuda_state();
    return f ? sim_dev_utilization(f, (unsigned int)gpu_index_of(g)) : 0;
}

static unsigned long long cuda_used_mib(const struct sim_gpu *g)
{
    struct sim_dev_file *f = cuda_state();
    return f ? (sim_dev_used(f, (unsigned int)gpu_index_of(g)) + MIB - 1) / MIB : 0;
}

/* Up to max CUDA processes on g, after the state file's own. */
static size_t cuda_processes(const struct sim_gpu *g, struct sim_dev_proc *out, size_t max)
{
    struct sim_dev_file *f = cuda_state();
    size_t n = f ? sim_dev_processes(f, (unsigned int)gpu_index_of(g), out, max) : 0;
    return n < max ? n : max;
}

static unsigned int utilization(const struct sim_gpu *g)
{
    unsigned long long v;
    if (overridden(g, SIM_SET_UTILIZATION, &v))
        return (unsigned int)v;
    double base = g->utilization_pct;
    double swing = base < 100 - base ? base : 100 - base;
    if (swing > 15)
        swing = 15;
    long u = lround(base + (wave(g) - 0.5) * 2 * swing) + cuda_utilization(g);
    return (unsigned int)(u < 100 ? u : 100);
}

static unsigned int temperature(const struct sim_gpu *g)
{
    unsigned long long v;
    if (overridden(g, SIM_SET_TEMPERATURE, &v))
        return (unsigned int)v;
    return g->temperature_c + utilization(g) * 3 / 10;
}

static unsigned int power_mw(const struct sim_gpu *g)
{
    unsigned long long v;
    if (overridden(g, SIM_SET_POWER, &v))
        return (unsigned int)v * 1000;
    return (g->idle_power_w + (g->power_limit_w - g->idle_power_w) * utilization(g) / 100) * 1000;
}

static unsigned long long processes_mib(const struct sim_gpu *g, int mig)
{
    const struct sim_gpu_state *s = gpu_state(g);
    unsigned long long sum = 0;
    for (size_t i = 0; i < s->process_count; i++)
        if (mig < 0 || s->processes[i].mig == mig)
            sum += s->processes[i].used_mib;
    return sum;
}

static unsigned long long memory_used_mib(const struct sim_gpu *g)
{
    unsigned long long v;
    if (overridden(g, SIM_SET_MEMORY_USED, &v))
        return v;
    unsigned long long used = g->memory_used_mib + processes_mib(g, -1) + cuda_used_mib(g);
    unsigned long long room = g->memory_mib - g->memory_reserved_mib;
    return used < room ? used : room;
}

/* Linear in time, so it only ever grows, as the real counter does. */
static unsigned long long energy_mj(const struct sim_gpu *g)
{
    double watts = g->idle_power_w + (g->power_limit_w - g->idle_power_w) * g->utilization_pct / 100.0;
    return (unsigned long long)(watts * elapsed_seconds() * 1000.0) +
           (unsigned long long)gpu_index_of(g) * 1000000ULL + 123456789ULL;
}

static unsigned long long nvlink_kib(const struct sim_gpu *g)
{
    return (unsigned long long)(g->link_count * (g->utilization_pct + 1) * 1024.0 *
                                elapsed_seconds());
}

static unsigned long long value_or(const struct sim_gpu *g, enum sim_override o,
                                   unsigned long long fallback)
{
    unsigned long long v;
    return overridden(g, o, &v) ? v : fallback;
}

/* ---- system ---- */

SIM_API nvmlReturn_t nvmlSystemGetDriverVersion(char *version, unsigned int length)
{
    nvmlReturn_t ret = enter_system();
    if (ret != NVML_SUCCESS)
        return ret;
    return leave(copy_string(version, length, node->driver_version));
}

SIM_API nvmlReturn_t nvmlSystemGetNVMLVersion(char *version, unsigned int length)
{
    nvmlReturn_t ret = enter_system();
    if (ret != NVML_SUCCESS)
        return ret;
    return leave(copy_string(version, length, node->nvml_version));
}

static nvmlReturn_t cuda_driver_version(int *version)
{
    nvmlReturn_t ret = enter_system();
    if (ret != NVML_SUCCESS)
        return ret;
    if (version == NULL)
        return leave(NVML_ERROR_INVALID_ARGUMENT);
    *version = node->cuda_driver_version;
    return leave(NVML_SUCCESS);
}

SIM_API nvmlReturn_t nvmlSystemGetCudaDriverVersion(int *version)
{
    return cuda_driver_version(version);
}

static nvmlReturn_t device_count(unsigned int *count)
{
    nvmlReturn_t ret = enter_system();
    if (ret != NVML_SUCCESS)
        return ret;
    if (count == NULL)
        return leave(NVML_ERROR_INVALID_ARGUMENT);
    *count = (unsigned int)node->gpu_count;
    return leave(NVML_SUCCESS);
}

SIM_API nvmlReturn_t nvmlDeviceGetCount(unsigned int *count)
{
    return device_count(count);
}

static nvmlReturn_t handle_by_index(unsigned int index, nvmlDevice_t *device)
{
    nvmlReturn_t ret = enter_system();
    if (ret != NVML_SUCCESS)
        return ret;
    if (device == NULL || index >= node->gpu_count)
        return leave(NVML_ERROR_INVALID_ARGUMENT);
    if (state->gpus[index].lost)
        return leave(NVML_ERROR_GPU_IS_LOST);
    *device = &gpu_handles[index];
    return leave(NVML_SUCCESS);
}

SIM_API nvmlReturn_t nvmlDeviceGetHandleByIndex(unsigned int index, nvmlDevice_t *device)
{
    return handle_by_index(index, device);
}

SIM_API nvmlReturn_t nvmlDeviceGetHandleByUUID(const char *uuid, nvmlDevice_t *device)
{
    nvmlReturn_t ret = enter_system();
    if (ret != NVML_SUCCESS)
        return ret;
    if (uuid == NULL || device == NULL)
        return leave(NVML_ERROR_INVALID_ARGUMENT);
    for (size_t g = 0; g < node->gpu_count; g++) {
        if (strcmp(node->gpus[g].uuid, uuid) == 0) {
            *device = &gpu_handles[g];
            return leave(state->gpus[g].lost ? NVML_ERROR_GPU_IS_LOST : NVML_SUCCESS);
        }
        for (size_t m = 0; m < node->gpus[g].mig_count; m++) {
            if (strcmp(node->gpus[g].migs[m].uuid, uuid) == 0) {
                *device = &mig_handles[g][m];
                return leave(state->gpus[g].lost ? NVML_ERROR_GPU_IS_LOST : NVML_SUCCESS);
            }
        }
    }
    return leave(NVML_ERROR_NOT_FOUND);
}

/* Bus ids compare as numbers: callers write "0000:07:00.0" or NVML's
 * "00000000:07:00.0", in either case. */
static nvmlReturn_t handle_by_bus_id(const char *bus_id, nvmlDevice_t *device)
{
    nvmlReturn_t ret = enter_system();
    if (ret != NVML_SUCCESS)
        return ret;
    unsigned int want[4], have[4];
    char extra;
    if (bus_id == NULL || device == NULL ||
        sscanf(bus_id, "%x:%x:%x.%x%c", &want[0], &want[1], &want[2], &want[3], &extra) != 4)
        return leave(NVML_ERROR_INVALID_ARGUMENT);
    for (size_t g = 0; g < node->gpu_count; g++) {
        sscanf(node->gpus[g].pci_bus_id, "%x:%x:%x.%x", &have[0], &have[1], &have[2], &have[3]);
        if (memcmp(want, have, sizeof want) == 0) {
            *device = &gpu_handles[g];
            return leave(state->gpus[g].lost ? NVML_ERROR_GPU_IS_LOST : NVML_SUCCESS);
        }
    }
    return leave(NVML_ERROR_NOT_FOUND);
}

SIM_API nvmlReturn_t nvmlDeviceGetHandleByPciBusId(const char *bus_id, nvmlDevice_t *device)
{
    return handle_by_bus_id(bus_id, device);
}

/* ---- identity ---- */

static void mig_profile(const struct sim_mig *m, char *buf, size_t len)
{
    snprintf(buf, len, "%ug.%llugb", m->slices, (m->memory_mib + 1023) / 1024);
}

SIM_API nvmlReturn_t nvmlDeviceGetName(nvmlDevice_t dev, char *name, unsigned int length)
{
    struct sim_gpu *g;
    struct sim_mig *m;
    nvmlReturn_t ret = enter(dev, &g, &m, CALLER_CHECKS);
    if (ret != NVML_SUCCESS)
        return ret;
    if (m == NULL)
        return leave(copy_string(name, length, g->name));
    char profile[32], full[160];
    mig_profile(m, profile, sizeof profile);
    snprintf(full, sizeof full, "%s MIG %s", g->name, profile);
    return leave(copy_string(name, length, full));
}

SIM_API nvmlReturn_t nvmlDeviceGetUUID(nvmlDevice_t dev, char *uuid, unsigned int length)
{
    struct sim_gpu *g;
    struct sim_mig *m;
    nvmlReturn_t ret = enter(dev, &g, &m, CALLER_CHECKS);
    if (ret != NVML_SUCCESS)
        return ret;
    return leave(copy_string(uuid, length, m ? m->uuid : g->uuid));
}

SIM_API nvmlReturn_t nvmlDeviceGetIndex(nvmlDevice_t dev, unsigned int *index)
{
    struct sim_gpu *g;
    nvmlReturn_t ret = enter_gpu(dev, &g, index);
    if (ret != NVML_SUCCESS)
        return ret;
    *index = (unsigned int)gpu_index_of(g);
    return leave(NVML_SUCCESS);
}

/* The architecture from the compute capability, as the driver names it. */
SIM_API nvmlReturn_t nvmlDeviceGetArchitecture(nvmlDevice_t dev, unsigned int *arch)
{
    struct sim_gpu *g;
    struct sim_mig *m;
    nvmlReturn_t ret = enter(dev, &g, &m, arch);
    if (ret != NVML_SUCCESS)
        return ret;
    switch (g->cc_major) {
    case 3: *arch = NVML_DEVICE_ARCH_KEPLER; break;
    case 5: *arch = NVML_DEVICE_ARCH_MAXWELL; break;
    case 6: *arch = NVML_DEVICE_ARCH_PASCAL; break;
    case 7: *arch = g->cc_minor < 5 ? NVML_DEVICE_ARCH_VOLTA : NVML_DEVICE_ARCH_TURING; break;
    case 8: *arch = g->cc_minor < 9 ? NVML_DEVICE_ARCH_AMPERE : NVML_DEVICE_ARCH_ADA; break;
    case 9: *arch = NVML_DEVICE_ARCH_HOPPER; break;
    case 10:
    case 12: *arch = NVML_DEVICE_ARCH_BLACKWELL; break;
    default: *arch = NVML_DEVICE_ARCH_UNKNOWN; break;
    }
    return leave(NVML_SUCCESS);
}

/* The brand a real GPU of that name reports: its marketing line. */
SIM_API nvmlReturn_t nvmlDeviceGetBrand(nvmlDevice_t dev, nvmlBrandType_t *brand)
{
    struct sim_gpu *g;
    struct sim_mig *m;
    nvmlReturn_t ret = enter(dev, &g, &m, brand);
    if (ret != NVML_SUCCESS)
        return ret;
    static const struct {
        const char *prefix;
        nvmlBrandType_t brand;
    } lines[] = {
        {"Tesla", NVML_BRAND_TESLA},           {"GeForce RTX", NVML_BRAND_GEFORCE_RTX},
        {"GeForce", NVML_BRAND_GEFORCE},       {"Quadro RTX", NVML_BRAND_QUADRO_RTX},
        {"Quadro", NVML_BRAND_QUADRO},         {"NVIDIA RTX", NVML_BRAND_NVIDIA_RTX},
        {"NVIDIA TITAN", NVML_BRAND_TITAN},
    };
    *brand = NVML_BRAND_NVIDIA; /* data-centre GPUs since Ampere: "NVIDIA A100…" */
    for (size_t i = 0; i < sizeof lines / sizeof lines[0]; i++)
        if (strncmp(g->name, lines[i].prefix, strlen(lines[i].prefix)) == 0) {
            *brand = lines[i].brand;
            break;
        }
    return leave(NVML_SUCCESS);
}

/* Addressing modes (HMM, ATS) exist only where the CPU shares the GPU's
 * memory coherently (Grace); the simulated nodes are x86 ones. */
SIM_API nvmlReturn_t nvmlDeviceGetAddressingMode(nvmlDevice_t dev,
                                                 nvmlDeviceAddressingMode_t *mode)
{
    struct sim_gpu *g;
    struct sim_mig *m;
    nvmlReturn_t ret = enter(dev, &g, &m, mode);
    if (ret != NVML_SUCCESS)
        return ret;
    return leave(NVML_ERROR_NOT_SUPPORTED);
}

SIM_API nvmlReturn_t nvmlDeviceGetSerial(nvmlDevice_t dev, char *serial, unsigned int length)
{
    struct sim_gpu *g;
    nvmlReturn_t ret = enter_gpu(dev, &g, CALLER_CHECKS);
    if (ret != NVML_SUCCESS)
        return ret;
    if (g->serial[0] == '\0')
        return leave(NVML_ERROR_NOT_SUPPORTED);
    return leave(copy_string(serial, length, g->serial));
}

SIM_API nvmlReturn_t nvmlDeviceGetMinorNumber(nvmlDevice_t dev, unsigned int *minor)
{
    struct sim_gpu *g;
    nvmlReturn_t ret = enter_gpu(dev, &g, minor);
    if (ret != NVML_SUCCESS)
        return ret;
    *minor = g->minor;
    return leave(NVML_SUCCESS);
}

static void fill_pci(const char *bus_id, unsigned int device_id, unsigned int subsystem_id,
                     nvmlPciInfo_t *pci)
{
    memset(pci, 0, sizeof *pci);
    unsigned int domain = 0, bus = 0, device = 0, fn = 0;
    sscanf(bus_id, "%x:%x:%x.%x", &domain, &bus, &device, &fn);
    pci->domain = domain;
    pci->bus = bus;
    pci->device = device;
    pci->pciDeviceId = device_id;
    pci->pciSubSystemId = subsystem_id;
    snprintf(pci->busId, sizeof pci->busId, "%s", bus_id);
    snprintf(pci->busIdLegacy, sizeof pci->busIdLegacy, "%04X:%02X:%02X.%X", domain, bus, device,
             fn);
}

static nvmlReturn_t pci_info(nvmlDevice_t dev, nvmlPciInfo_t *pci)
{
    struct sim_gpu *g;
    struct sim_mig *m;
    nvmlReturn_t ret = enter(dev, &g, &m, pci);
    if (ret != NVML_SUCCESS)
        return ret;
    fill_pci(g->pci_bus_id, g->pci_device_id, g->pci_subsystem_id, pci);
    return leave(NVML_SUCCESS);
}

SIM_API nvmlReturn_t nvmlDeviceGetPciInfo(nvmlDevice_t dev, nvmlPciInfo_t *pci)
{
    return pci_info(dev, pci);
}

static nvmlReturn_t memory_of(nvmlDevice_t dev, unsigned long long *total,
                              unsigned long long *reserved, unsigned long long *used)
{
    struct sim_gpu *g;
    struct sim_mig *m;
    nvmlReturn_t ret = enter(dev, &g, &m, CALLER_CHECKS);
    if (ret != NVML_SUCCESS)
        return ret;
    if (m) {
        unsigned long long p = processes_mib(g, (int)(m - g->migs));
        *total = m->memory_mib * MIB;
        *reserved = 0;
        *used = (p < m->memory_mib ? p : m->memory_mib) * MIB;
    } else {
        *total = g->memory_mib * MIB;
        *reserved = g->memory_reserved_mib * MIB;
        *used = memory_used_mib(g) * MIB;
    }
    return leave(NVML_SUCCESS);
}

/* The old call counts reserved memory as used. */
SIM_API nvmlReturn_t nvmlDeviceGetMemoryInfo(nvmlDevice_t dev, nvmlMemory_t *mem)
{
    if (mem == NULL)
        return NVML_ERROR_INVALID_ARGUMENT;
    unsigned long long total, reserved, used;
    nvmlReturn_t ret = memory_of(dev, &total, &reserved, &used);
    if (ret != NVML_SUCCESS)
        return ret;
    mem->total = total;
    mem->used = used + reserved;
    mem->free = total - mem->used;
    return NVML_SUCCESS;
}

SIM_API nvmlReturn_t nvmlDeviceGetCudaComputeCapability(nvmlDevice_t dev, int *major, int *minor)
{
    struct sim_gpu *g;
    struct sim_mig *m;
    nvmlReturn_t ret = enter(dev, &g, &m, CALLER_CHECKS);
    if (ret != NVML_SUCCESS)
        return ret;
    if (major == NULL || minor == NULL)
        return leave(NVML_ERROR_INVALID_ARGUMENT);
    *major = g->cc_major;
    *minor = g->cc_minor;
    return leave(NVML_SUCCESS);
}

/* ---- moving values ---- */

SIM_API nvmlReturn_t nvmlDeviceGetUtilizationRates(nvmlDevice_t dev, nvmlUtilization_t *util)
{
    struct sim_gpu *g;
    nvmlReturn_t ret = enter_gpu(dev, &g, util);
    if (ret != NVML_SUCCESS)
        return ret;
    util->gpu = utilization(g);
    util->memory = (unsigned int)value_or(g, SIM_SET_MEMORY_UTILIZATION, util->gpu * 6 / 10);
    return leave(NVML_SUCCESS);
}

SIM_API nvmlReturn_t nvmlDeviceGetTemperature(nvmlDevice_t dev, int sensor, unsigned int *celsius)
{
    struct sim_gpu *g;
    nvmlReturn_t ret = enter_gpu(dev, &g, CALLER_CHECKS);
    if (ret != NVML_SUCCESS)
        return ret;
    if (celsius == NULL || sensor != 0)
        return leave(NVML_ERROR_INVALID_ARGUMENT);
    *celsius = temperature(g);
    return leave(NVML_SUCCESS);
}

SIM_API nvmlReturn_t nvmlDeviceGetPowerUsage(nvmlDevice_t dev, unsigned int *milliwatts)
{
    struct sim_gpu *g;
    nvmlReturn_t ret = enter_gpu(dev, &g, milliwatts);
    if (ret != NVML_SUCCESS)
        return ret;
    *milliwatts = power_mw(g);
    return leave(NVML_SUCCESS);
}

SIM_API nvmlReturn_t nvmlDeviceGetEnforcedPowerLimit(nvmlDevice_t dev, unsigned int *milliwatts)
{
    struct sim_gpu *g;
    nvmlReturn_t ret = enter_gpu(dev, &g, milliwatts);
    if (ret != NVML_SUCCESS)
        return ret;
    *milliwatts = g->power_limit_w * 1000;
    return leave(NVML_SUCCESS);
}

SIM_API nvmlReturn_t nvmlDeviceGetTotalEnergyConsumption(nvmlDevice_t dev,
                                                         unsigned long long *millijoules)
{
    struct sim_gpu *g;
    nvmlReturn_t ret = enter_gpu(dev, &g, millijoules);
    if (ret != NVML_SUCCESS)
        return ret;
    *millijoules = energy_mj(g);
    return leave(NVML_SUCCESS);
}

/* The current clocks (max: the highest): an idle GPU's SM clock drops. */
static nvmlReturn_t clock_mhz(const struct sim_gpu *g, int type, bool max, unsigned int *mhz)
{
    unsigned int sm = max || utilization(g) > 0 ? g->max_sm_clock_mhz : 210;
    switch (type) {
    case NVML_CLOCK_GRAPHICS:
    case NVML_CLOCK_SM:
        *mhz = max ? sm : (unsigned int)value_or(g, SIM_SET_SM_CLOCK, sm);
        return NVML_SUCCESS;
    case NVML_CLOCK_MEM:
        *mhz = max ? g->mem_clock_mhz
                   : (unsigned int)value_or(g, SIM_SET_MEM_CLOCK, g->mem_clock_mhz);
        return NVML_SUCCESS;
    case NVML_CLOCK_VIDEO:
        *mhz = sm * 4 / 5;
        return NVML_SUCCESS;
    default:
        return NVML_ERROR_INVALID_ARGUMENT;
    }
}

SIM_API nvmlReturn_t nvmlDeviceGetClockInfo(nvmlDevice_t dev, int type, unsigned int *mhz)
{
    struct sim_gpu *g;
    nvmlReturn_t ret = enter_gpu(dev, &g, mhz);
    if (ret != NVML_SUCCESS)
        return ret;
    return leave(clock_mhz(g, type, false, mhz));
}

/* Power limits, P-state, compute mode and maximum clocks: what
 * nvidia-smi's users chart (docs/metrics.md). The limit is the board's,
 * settable from 60 % of it; a busy GPU runs in P0, an idle one in P8. */
static nvmlReturn_t power_limit(nvmlDevice_t dev, unsigned int *milliwatts)
{
    struct sim_gpu *g;
    nvmlReturn_t ret = enter_gpu(dev, &g, milliwatts);
    if (ret != NVML_SUCCESS)
        return ret;
    *milliwatts = g->power_limit_w * 1000;
    return leave(NVML_SUCCESS);
}

SIM_API nvmlReturn_t nvmlDeviceGetPowerManagementLimit(nvmlDevice_t dev, unsigned int *milliwatts)
{
    return power_limit(dev, milliwatts);
}

SIM_API nvmlReturn_t nvmlDeviceGetPowerManagementDefaultLimit(nvmlDevice_t dev,
                                                              unsigned int *milliwatts)
{
    return power_limit(dev, milliwatts);
}

SIM_API nvmlReturn_t nvmlDeviceGetPowerManagementLimitConstraints(nvmlDevice_t dev,
                                                                  unsigned int *min_mw,
                                                                  unsigned int *max_mw)
{
    struct sim_gpu *g;
    nvmlReturn_t ret = enter_gpu(dev, &g, min_mw);
    if (ret != NVML_SUCCESS)
        return ret;
    if (max_mw == NULL)
        return leave(NVML_ERROR_INVALID_ARGUMENT);
    *min_mw = g->power_limit_w * 600;
    *max_mw = g->power_limit_w * 1000;
    return leave(NVML_SUCCESS);
}

SIM_API nvmlReturn_t nvmlDeviceGetPerformanceState(nvmlDevice_t dev, int *pstate)
{
    struct sim_gpu *g;
    nvmlReturn_t ret = enter_gpu(dev, &g, pstate);
    if (ret != NVML_SUCCESS)
        return ret;
    *pstate = utilization(g) > 0 ? 0 : 8;
    return leave(NVML_SUCCESS);
}

/* Data-centre boards are cooled by the chassis: the driver answers
 * NOT_SUPPORTED, which consumers take as "no fan", not as a failure. */
SIM_API nvmlReturn_t nvmlDeviceGetFanSpeed(nvmlDevice_t dev, unsigned int *pct)
{
    struct sim_gpu *g;
    nvmlReturn_t ret = enter_gpu(dev, &g, pct);
    if (ret != NVML_SUCCESS)
        return ret;
    if (g->fan_speed_pct < 0)
        return leave(NVML_ERROR_NOT_SUPPORTED);
    *pct = (unsigned int)g->fan_speed_pct;
    return leave(NVML_SUCCESS);
}

SIM_API nvmlReturn_t nvmlDeviceGetComputeMode(nvmlDevice_t dev, int *mode)
{
    struct sim_gpu *g;
    nvmlReturn_t ret = enter_gpu(dev, &g, mode);
    if (ret != NVML_SUCCESS)
        return ret;
    *mode = 0; /* Default */
    return leave(NVML_SUCCESS);
}

SIM_API nvmlReturn_t nvmlDeviceGetMaxClockInfo(nvmlDevice_t dev, int type, unsigned int *mhz)
{
    struct sim_gpu *g;
    nvmlReturn_t ret = enter_gpu(dev, &g, mhz);
    if (ret != NVML_SUCCESS)
        return ret;
    return leave(clock_mhz(g, type, true, mhz));
}

SIM_API nvmlReturn_t nvmlDeviceGetPcieReplayCounter(nvmlDevice_t dev, unsigned int *count)
{
    struct sim_gpu *g;
    nvmlReturn_t ret = enter_gpu(dev, &g, count);
    if (ret != NVML_SUCCESS)
        return ret;
    *count = (unsigned int)value_or(g, SIM_SET_PCIE_REPLAYS, 0);
    return leave(NVML_SUCCESS);
}

static nvmlReturn_t codec_utilization(nvmlDevice_t dev, enum sim_override which, unsigned int *pct,
                                      unsigned int *period_us)
{
    struct sim_gpu *g;
    nvmlReturn_t ret = enter_gpu(dev, &g, CALLER_CHECKS);
    if (ret != NVML_SUCCESS)
        return ret;
    if (pct == NULL || period_us == NULL)
        return leave(NVML_ERROR_INVALID_ARGUMENT);
    *pct = (unsigned int)value_or(g, which, 0);
    *period_us = 167000;
    return leave(NVML_SUCCESS);
}

SIM_API nvmlReturn_t nvmlDeviceGetEncoderUtilization(nvmlDevice_t dev, unsigned int *pct,
                                                     unsigned int *period_us)
{
    return codec_utilization(dev, SIM_SET_ENCODER, pct, period_us);
}

SIM_API nvmlReturn_t nvmlDeviceGetDecoderUtilization(nvmlDevice_t dev, unsigned int *pct,
                                                     unsigned int *period_us)
{
    return codec_utilization(dev, SIM_SET_DECODER, pct, period_us);
}

static void field_ull(nvmlFieldValue_t *f, unsigned long long v)
{
    f->valueType = NVML_VALUE_TYPE_UNSIGNED_LONG_LONG;
    f->value.ullVal = v;
    f->nvmlReturn = NVML_SUCCESS;
}

static void field_uint(nvmlFieldValue_t *f, unsigned int v)
{
    f->valueType = NVML_VALUE_TYPE_UNSIGNED_INT;
    f->value.uiVal = v;
    f->nvmlReturn = NVML_SUCCESS;
}

/* ECC, page retirement, NVLink errors and the recovery action follow the
 * remapped-row values of the state file: each corrected (uncorrected)
 * error remapped a row, or before Ampere retired a page; a pending remap
 * asks for a GPU reset. */
static void extra_field(const struct sim_gpu *g, nvmlFieldValue_t *f)
{
    unsigned long long cor = value_or(g, SIM_SET_REMAPPED_CORRECTABLE, 0);
    unsigned long long unc = value_or(g, SIM_SET_REMAPPED_UNCORRECTABLE, 0);
    unsigned long long pending = value_or(g, SIM_SET_REMAPPED_PENDING, 0);
    switch (f->fieldId) {
    case NVML_FI_DEV_ECC_CURRENT:
    case NVML_FI_DEV_ECC_PENDING:
        field_uint(f, g->ecc);
        break;
    case NVML_FI_DEV_ECC_SBE_VOL_TOTAL:
    case NVML_FI_DEV_ECC_SBE_AGG_TOTAL:
        if (g->ecc)
            field_ull(f, cor);
        break;
    case NVML_FI_DEV_ECC_DBE_VOL_TOTAL:
    case NVML_FI_DEV_ECC_DBE_AGG_TOTAL:
        if (g->ecc)
            field_ull(f, unc);
        break;
    case NVML_FI_DEV_RETIRED_SBE:
    case NVML_FI_DEV_RETIRED_DBE:
    case NVML_FI_DEV_RETIRED_PENDING:
        if (g->ecc && g->cc_major < 8)
            field_uint(f, (unsigned int)(f->fieldId == NVML_FI_DEV_RETIRED_SBE   ? cor
                                         : f->fieldId == NVML_FI_DEV_RETIRED_DBE ? unc
                                                                                 : pending > 0));
        break;
    case NVML_FI_DEV_NVLINK_CRC_FLIT_ERROR_COUNT_TOTAL:
    case NVML_FI_DEV_NVLINK_CRC_DATA_ERROR_COUNT_TOTAL:
    case NVML_FI_DEV_NVLINK_REPLAY_ERROR_COUNT_TOTAL:
    case NVML_FI_DEV_NVLINK_RECOVERY_ERROR_COUNT_TOTAL:
        if (g->link_count)
            field_ull(f, 0);
        break;
    case NVML_FI_DEV_GET_GPU_RECOVERY_ACTION:
        field_uint(f, pending > 0 ? 1 : 0);
        break;
    default:
        break;
    }
}

SIM_API nvmlReturn_t nvmlDeviceGetFieldValues(nvmlDevice_t dev, int count, nvmlFieldValue_t *values)
{
    struct sim_gpu *g;
    nvmlReturn_t ret = enter_gpu(dev, &g, CALLER_CHECKS);
    if (ret != NVML_SUCCESS)
        return ret;
    if (values == NULL || count < 0)
        return leave(NVML_ERROR_INVALID_ARGUMENT);
    struct timespec now;
    clock_gettime(CLOCK_REALTIME, &now);
    for (int i = 0; i < count; i++) {
        nvmlFieldValue_t *f = &values[i];
        f->timestamp = (long long)now.tv_sec * 1000000LL + now.tv_nsec / 1000;
        f->latencyUsec = 0;
        f->nvmlReturn = NVML_ERROR_NOT_SUPPORTED;
        switch (f->fieldId) {
        case NVML_FI_DEV_MEMORY_TEMP:
            field_uint(f, (unsigned int)value_or(g, SIM_SET_MEMORY_TEMPERATURE, temperature(g) + 5));
            break;
        case NVML_FI_DEV_TOTAL_ENERGY_CONSUMPTION:
            field_ull(f, energy_mj(g));
            break;
        case NVML_FI_DEV_NVLINK_THROUGHPUT_DATA_TX:
        case NVML_FI_DEV_NVLINK_THROUGHPUT_DATA_RX:
            if (g->link_count == 0)
                break;
            if (f->scopeId != 0xFFFFFFFFU && f->scopeId >= g->link_count) {
                f->nvmlReturn = NVML_ERROR_INVALID_ARGUMENT;
                break;
            }
            field_ull(f, f->scopeId == 0xFFFFFFFFU ? nvlink_kib(g) : nvlink_kib(g) / g->link_count);
            break;
        case NVML_FI_DEV_REMAPPED_COR:
            field_uint(f, (unsigned int)value_or(g, SIM_SET_REMAPPED_CORRECTABLE, 0));
            break;
        case NVML_FI_DEV_REMAPPED_UNC:
            field_uint(f, (unsigned int)value_or(g, SIM_SET_REMAPPED_UNCORRECTABLE, 0));
            break;
        case NVML_FI_DEV_REMAPPED_FAILURE:
            field_uint(f, (unsigned int)value_or(g, SIM_SET_REMAPPED_FAILURE, 0));
            break;
        default:
            extra_field(g, f);
            break;
        }
    }
    return leave(NVML_SUCCESS);
}

SIM_API nvmlReturn_t nvmlDeviceGetRemappedRows(nvmlDevice_t dev, unsigned int *corr,
                                               unsigned int *unc, unsigned int *pending,
                                               unsigned int *failed)
{
    struct sim_gpu *g;
    nvmlReturn_t ret = enter_gpu(dev, &g, CALLER_CHECKS);
    if (ret != NVML_SUCCESS)
        return ret;
    if (corr == NULL || unc == NULL || pending == NULL || failed == NULL)
        return leave(NVML_ERROR_INVALID_ARGUMENT);
    /* Row remapping came with Ampere. */
    if (g->cc_major < 8)
        return leave(NVML_ERROR_NOT_SUPPORTED);
    *corr = (unsigned int)value_or(g, SIM_SET_REMAPPED_CORRECTABLE, 0);
    *unc = (unsigned int)value_or(g, SIM_SET_REMAPPED_UNCORRECTABLE, 0);
    *pending = (unsigned int)value_or(g, SIM_SET_REMAPPED_PENDING, 0);
    *failed = (unsigned int)value_or(g, SIM_SET_REMAPPED_FAILURE, 0);
    return leave(NVML_SUCCESS);
}

static nvmlReturn_t clock_event_reasons(nvmlDevice_t dev, unsigned long long *reasons)
{
    struct sim_gpu *g;
    nvmlReturn_t ret = enter_gpu(dev, &g, reasons);
    if (ret != NVML_SUCCESS)
        return ret;
    /* 0x1 is "GPU idle". */
    *reasons = value_or(g, SIM_SET_CLOCK_EVENT_REASONS, utilization(g) == 0 ? 0x1ULL : 0);
    return leave(NVML_SUCCESS);
}

SIM_API nvmlReturn_t nvmlDeviceGetCurrentClocksThrottleReasons(nvmlDevice_t dev,
                                                               unsigned long long *reasons)
{
    return clock_event_reasons(dev, reasons);
}

/* What a data-centre GPU's driver reports: idle, application clocks, SW
 * power cap, HW slowdown, sync boost, SW and HW thermal, HW power brake and
 * display clock setting (0x100). */
#define SIM_SUPPORTED_CLOCK_EVENT_REASONS 0x1FFULL

static nvmlReturn_t supported_clock_event_reasons(nvmlDevice_t dev, unsigned long long *reasons)
{
    struct sim_gpu *g;
    nvmlReturn_t ret = enter_gpu(dev, &g, reasons);
    if (ret != NVML_SUCCESS)
        return ret;
    *reasons = SIM_SUPPORTED_CLOCK_EVENT_REASONS;
    return leave(NVML_SUCCESS);
}

#ifndef SIM_OLD_DRIVER /* the call is named so since driver 535 */
SIM_API nvmlReturn_t nvmlDeviceGetSupportedClocksEventReasons(nvmlDevice_t dev,
                                                              unsigned long long *reasons)
{
    return supported_clock_event_reasons(dev, reasons);
}
#endif

SIM_API nvmlReturn_t nvmlDeviceGetSupportedClocksThrottleReasons(nvmlDevice_t dev,
                                                                 unsigned long long *reasons)
{
    return supported_clock_event_reasons(dev, reasons);
}

/* The node file's vbios_version, else a version in the form its GPU
 * generation's boards carry. */
static const char *vbios_version(const struct sim_gpu *g)
{
    if (g->vbios_version[0])
        return g->vbios_version;
    switch (g->cc_major) {
    case 9: return "96.00.99.00.01";
    case 8: return "92.00.45.00.06";
    case 7: return g->cc_minor >= 5 ? "90.04.96.00.02" : "88.00.4F.00.09";
    default: return "86.00.4D.00.01";
    }
}

SIM_API nvmlReturn_t nvmlDeviceGetVbiosVersion(nvmlDevice_t dev, char *version,
                                               unsigned int length)
{
    struct sim_gpu *g;
    nvmlReturn_t ret = enter_gpu(dev, &g, version);
    if (ret != NVML_SUCCESS)
        return ret;
    return leave(copy_string(version, length, vbios_version(g)));
}

/* Hopper and newer on NVSwitches report a fabric the fabric manager has
 * registered them in; other GPUs do not support the call. */
static nvmlReturn_t enter_fabric(nvmlDevice_t dev, const void *out)
{
    struct sim_gpu *g;
    nvmlReturn_t ret = enter_gpu(dev, &g, out);
    if (ret != NVML_SUCCESS)
        return ret;
    if (!g->nvswitch || g->cc_major < 9)
        return leave(NVML_ERROR_NOT_SUPPORTED);
    return NVML_SUCCESS;
}

/* What the fabric manager registered the GPU with: the node file's
 * multi-node NVLink domain, or, as a single HGX board answers, clique 0 in
 * the all-zero cluster. */
static void fabric_ids(unsigned char uuid[NVML_GPU_FABRIC_UUID_LEN], unsigned int *clique)
{
    memcpy(uuid, node->fabric_cluster_uuid, NVML_GPU_FABRIC_UUID_LEN);
    *clique = node->fabric_clique_id;
}

SIM_API nvmlReturn_t nvmlDeviceGetGpuFabricInfo(nvmlDevice_t dev, nvmlGpuFabricInfo_t *info)
{
    nvmlReturn_t ret = enter_fabric(dev, info);
    if (ret != NVML_SUCCESS)
        return ret;
    fabric_ids(info->clusterUuid, &info->cliqueId);
    info->status = NVML_SUCCESS;
    info->state = NVML_GPU_FABRIC_STATE_COMPLETED;
    return leave(NVML_SUCCESS);
}

#ifndef SIM_OLD_DRIVER
SIM_API nvmlReturn_t nvmlDeviceGetGpuFabricInfoV(nvmlDevice_t dev, nvmlGpuFabricInfo_v2_t *info)
{
    if (info != NULL && info->version != nvmlGpuFabricInfo_v2)
        return NVML_ERROR_ARGUMENT_VERSION_MISMATCH;
    nvmlReturn_t ret = enter_fabric(dev, info);
    if (ret != NVML_SUCCESS)
        return ret;
    fabric_ids(info->clusterUuid, &info->cliqueId);
    info->status = NVML_SUCCESS;
    info->state = NVML_GPU_FABRIC_STATE_COMPLETED;
    info->healthMask = 0;
    return leave(NVML_SUCCESS);
}
#endif

/* Which list a processes call asks for. The simulated programs are all
 * CUDA compute contexts outside MPS, so the graphics and MPS lists are
 * empty, as on a node that runs no graphics or MPS clients. */
enum process_list { PROCESSES_COMPUTE, PROCESSES_GRAPHICS, PROCESSES_MPS };

/* One answer for every version: v1 fills nvmlProcessInfo_v1_t (pid and
 * memory), v2 and v3 nvmlProcessInfo_t. */
static nvmlReturn_t running_processes(nvmlDevice_t dev, enum process_list list, int version,
                                      unsigned int *count, void *out)
{
    struct sim_gpu *g;
    struct sim_mig *m;
    nvmlReturn_t ret = enter(dev, &g, &m, count);
    if (ret != NVML_SUCCESS)
        return ret;
    nvmlProcessInfo_t found[SIM_MAX_PROCESSES + SIM_DEV_MAX_PROCS];
    unsigned int n = 0;
    if (list == PROCESSES_COMPUTE) {
        const struct sim_gpu_state *s = gpu_state(g);
        int want = m ? (int)(m - g->migs) : -1;
        for (size_t i = 0; i < s->process_count; i++) {
            const struct sim_process *p = &s->processes[i];
            if (want >= 0 && p->mig != want)
                continue;
            found[n++] = (nvmlProcessInfo_t){
                .pid = p->pid,
                .usedGpuMemory = p->used_mib * MIB,
                .gpuInstanceId =
                    p->mig >= 0 ? g->migs[p->mig].gpu_instance_id : NVML_INSTANCE_ID_NONE,
                .computeInstanceId =
                    p->mig >= 0 ? g->migs[p->mig].compute_instance_id : NVML_INSTANCE_ID_NONE};
        }
        struct sim_dev_proc cuda[SIM_DEV_MAX_PROCS];
        size_t cuda_count = want < 0 ? cuda_processes(g, cuda, SIM_DEV_MAX_PROCS) : 0;
        for (size_t i = 0; i < cuda_count; i++)
            found[n++] = (nvmlProcessInfo_t){.pid = (unsigned int)cuda[i].pid,
                                             .usedGpuMemory = cuda[i].used_bytes,
                                             .gpuInstanceId = NVML_INSTANCE_ID_NONE,
                                             .computeInstanceId = NVML_INSTANCE_ID_NONE};
    }
    if (out == NULL || *count < n) {
        *count = n;
        return leave(n ? NVML_ERROR_INSUFFICIENT_SIZE : NVML_SUCCESS);
    }
    for (unsigned int i = 0; i < n; i++) {
        if (version == 1)
            ((nvmlProcessInfo_v1_t *)out)[i] =
                (nvmlProcessInfo_v1_t){found[i].pid, found[i].usedGpuMemory};
        else
            ((nvmlProcessInfo_t *)out)[i] = found[i];
    }
    *count = n;
    return leave(NVML_SUCCESS);
}

SIM_API nvmlReturn_t nvmlDeviceGetComputeRunningProcesses(nvmlDevice_t dev, unsigned int *count,
                                                          nvmlProcessInfo_v1_t *infos)
{
    return running_processes(dev, PROCESSES_COMPUTE, 1, count, infos);
}

SIM_API nvmlReturn_t nvmlDeviceGetComputeRunningProcesses_v2(nvmlDevice_t dev, unsigned int *count,
                                                             nvmlProcessInfo_t *infos)
{
    return running_processes(dev, PROCESSES_COMPUTE, 2, count, infos);
}

SIM_API nvmlReturn_t nvmlDeviceGetGraphicsRunningProcesses(nvmlDevice_t dev, unsigned int *count,
                                                           nvmlProcessInfo_v1_t *infos)
{
    return running_processes(dev, PROCESSES_GRAPHICS, 1, count, infos);
}

SIM_API nvmlReturn_t nvmlDeviceGetGraphicsRunningProcesses_v2(nvmlDevice_t dev,
                                                              unsigned int *count,
                                                              nvmlProcessInfo_t *infos)
{
    return running_processes(dev, PROCESSES_GRAPHICS, 2, count, infos);
}

SIM_API nvmlReturn_t nvmlDeviceGetMPSComputeRunningProcesses(nvmlDevice_t dev,
                                                             unsigned int *count,
                                                             nvmlProcessInfo_v1_t *infos)
{
    return running_processes(dev, PROCESSES_MPS, 1, count, infos);
}

SIM_API nvmlReturn_t nvmlDeviceGetMPSComputeRunningProcesses_v2(nvmlDevice_t dev,
                                                                unsigned int *count,
                                                                nvmlProcessInfo_t *infos)
{
    return running_processes(dev, PROCESSES_MPS, 2, count, infos);
}

/* Per-process utilisation as the driver samples it: a simulated CUDA
 * program's share of the last second its kernels kept the GPU busy; the
 * state file's processes share the rest of the GPU's utilisation evenly.
 * Memory-controller utilisation follows as the GPU's does (6/10). Every
 * sample is stamped now (CPU microseconds), so a caller asking for samples
 * newer than a time in the past gets one per process; none at all is
 * NOT_FOUND, as the driver answers. */
SIM_API nvmlReturn_t nvmlDeviceGetProcessUtilization(nvmlDevice_t dev,
                                                     nvmlProcessUtilizationSample_t *samples,
                                                     unsigned int *count,
                                                     unsigned long long last_seen)
{
    struct sim_gpu *g;
    nvmlReturn_t ret = enter_gpu(dev, &g, count);
    if (ret != NVML_SUCCESS)
        return ret;
    struct timespec ts;
    clock_gettime(CLOCK_REALTIME, &ts);
    unsigned long long now_us = (unsigned long long)ts.tv_sec * 1000000ULL +
                                (unsigned long long)ts.tv_nsec / 1000;
    nvmlProcessUtilizationSample_t found[SIM_MAX_PROCESSES + SIM_DEV_MAX_PROCS];
    unsigned int n = 0, cuda_sum = 0;
    struct sim_dev_proc cuda[SIM_DEV_MAX_PROCS];
    size_t cuda_count = now_us > last_seen ? cuda_processes(g, cuda, SIM_DEV_MAX_PROCS) : 0;
    uint64_t now_ns = sim_dev_now_ns();
    for (size_t i = 0; i < cuda_count; i++) {
        unsigned int sm = sim_dev_proc_utilization(&cuda[i], now_ns);
        cuda_sum += sm;
        found[n++] = (nvmlProcessUtilizationSample_t){.pid = (unsigned int)cuda[i].pid,
                                                      .timeStamp = now_us,
                                                      .smUtil = sm,
                                                      .memUtil = sm * 6 / 10};
    }
    const struct sim_gpu_state *s = gpu_state(g);
    unsigned int others = 0;
    for (size_t i = 0; now_us > last_seen && i < s->process_count; i++)
        others += s->processes[i].mig < 0;
    unsigned int total = utilization(g), rest = total > cuda_sum ? total - cuda_sum : 0;
    for (size_t i = 0; others && i < s->process_count; i++) {
        if (s->processes[i].mig >= 0)
            continue;
        unsigned int sm = rest / others;
        found[n++] = (nvmlProcessUtilizationSample_t){
            .pid = s->processes[i].pid, .timeStamp = now_us, .smUtil = sm, .memUtil = sm * 6 / 10};
    }
    if (n == 0)
        return leave(NVML_ERROR_NOT_FOUND);
    if (samples == NULL || *count < n) {
        *count = n;
        return leave(NVML_ERROR_INSUFFICIENT_SIZE);
    }
    memcpy(samples, found, n * sizeof *found);
    *count = n;
    return leave(NVML_SUCCESS);
}

/* ---- topology ---- */

SIM_API nvmlReturn_t nvmlDeviceGetTopologyCommonAncestor(nvmlDevice_t a, nvmlDevice_t b, int *level)
{
    struct sim_gpu *ga, *gb;
    nvmlReturn_t ret = enter_gpu(a, &ga, CALLER_CHECKS);
    if (ret != NVML_SUCCESS)
        return ret;
    pthread_mutex_unlock(&lock);
    ret = enter_gpu(b, &gb, CALLER_CHECKS);
    if (ret != NVML_SUCCESS)
        return ret;
    if (level == NULL)
        return leave(NVML_ERROR_INVALID_ARGUMENT);
    *level = node->pcie_level[gpu_index_of(ga)][gpu_index_of(gb)];
    return leave(NVML_SUCCESS);
}

SIM_API nvmlReturn_t nvmlDeviceGetNvLinkState(nvmlDevice_t dev, unsigned int link, int *active)
{
    struct sim_gpu *g;
    nvmlReturn_t ret = enter_gpu(dev, &g, CALLER_CHECKS);
    if (ret != NVML_SUCCESS)
        return ret;
    if (active == NULL || link >= SIM_MAX_LINKS)
        return leave(NVML_ERROR_INVALID_ARGUMENT);
    if (g->link_count == 0)
        return leave(NVML_ERROR_NOT_SUPPORTED);
    *active = link < g->link_count;
    return leave(NVML_SUCCESS);
}

static nvmlReturn_t nvlink_remote_pci(nvmlDevice_t dev, unsigned int link, nvmlPciInfo_t *pci)
{
    struct sim_gpu *g;
    nvmlReturn_t ret = enter_gpu(dev, &g, CALLER_CHECKS);
    if (ret != NVML_SUCCESS)
        return ret;
    if (pci == NULL || link >= SIM_MAX_LINKS)
        return leave(NVML_ERROR_INVALID_ARGUMENT);
    if (g->link_count == 0)
        return leave(NVML_ERROR_NOT_SUPPORTED);
    if (link >= g->link_count)
        return leave(NVML_ERROR_INVALID_ARGUMENT);
    const char *remote = g->link_remote[link];
    unsigned int device_id = 0x1AF110DE; /* an NVSwitch, unless a GPU sits there */
    for (size_t i = 0; i < node->gpu_count; i++)
        if (strcmp(node->gpus[i].pci_bus_id, remote) == 0)
            device_id = node->gpus[i].pci_device_id;
    fill_pci(remote, device_id, 0, pci);
    return leave(NVML_SUCCESS);
}

SIM_API nvmlReturn_t nvmlDeviceGetNvLinkRemotePciInfo(nvmlDevice_t dev, unsigned int link,
                                                      nvmlPciInfo_t *pci)
{
    return nvlink_remote_pci(dev, link, pci);
}

/* ---- MIG ---- */

SIM_API nvmlReturn_t nvmlDeviceGetMigMode(nvmlDevice_t dev, unsigned int *current,
                                          unsigned int *pending)
{
    struct sim_gpu *g;
    nvmlReturn_t ret = enter_gpu(dev, &g, CALLER_CHECKS);
    if (ret != NVML_SUCCESS)
        return ret;
    if (current == NULL || pending == NULL)
        return leave(NVML_ERROR_INVALID_ARGUMENT);
    if (!g->mig_capable)
        return leave(NVML_ERROR_NOT_SUPPORTED);
    *current = *pending = g->mig_enabled ? 1 : 0;
    return leave(NVML_SUCCESS);
}

static unsigned int max_migs(const struct sim_gpu *g)
{
    return g->mig_count > 7 ? (unsigned int)g->mig_count : 7;
}

SIM_API nvmlReturn_t nvmlDeviceGetMaxMigDeviceCount(nvmlDevice_t dev, unsigned int *count)
{
    struct sim_gpu *g;
    nvmlReturn_t ret = enter_gpu(dev, &g, count);
    if (ret != NVML_SUCCESS)
        return ret;
    if (!g->mig_capable)
        return leave(NVML_ERROR_NOT_SUPPORTED);
    *count = max_migs(g);
    return leave(NVML_SUCCESS);
}

SIM_API nvmlReturn_t nvmlDeviceGetMigDeviceHandleByIndex(nvmlDevice_t dev, unsigned int index,
                                                         nvmlDevice_t *mig)
{
    struct sim_gpu *g;
    nvmlReturn_t ret = enter_gpu(dev, &g, mig);
    if (ret != NVML_SUCCESS)
        return ret;
    if (!g->mig_capable)
        return leave(NVML_ERROR_NOT_SUPPORTED);
    if (index >= max_migs(g))
        return leave(NVML_ERROR_INVALID_ARGUMENT);
    if (index >= g->mig_count)
        return leave(NVML_ERROR_NOT_FOUND);
    *mig = &mig_handles[gpu_index_of(g)][index];
    return leave(NVML_SUCCESS);
}

SIM_API nvmlReturn_t nvmlDeviceGetDeviceHandleFromMigDeviceHandle(nvmlDevice_t mig,
                                                                  nvmlDevice_t *parent)
{
    struct sim_gpu *g;
    struct sim_mig *m;
    nvmlReturn_t ret = enter(mig, &g, &m, CALLER_CHECKS);
    if (ret != NVML_SUCCESS)
        return ret;
    if (parent == NULL || m == NULL)
        return leave(NVML_ERROR_INVALID_ARGUMENT);
    *parent = &gpu_handles[gpu_index_of(g)];
    return leave(NVML_SUCCESS);
}

SIM_API nvmlReturn_t nvmlDeviceIsMigDeviceHandle(nvmlDevice_t dev, unsigned int *is_mig)
{
    struct sim_gpu *g;
    struct sim_mig *m;
    nvmlReturn_t ret = enter(dev, &g, &m, is_mig);
    if (ret != NVML_SUCCESS)
        return ret;
    *is_mig = m != NULL;
    return leave(NVML_SUCCESS);
}

SIM_API nvmlReturn_t nvmlDeviceGetGpuInstanceId(nvmlDevice_t dev, unsigned int *id)
{
    struct sim_gpu *g;
    struct sim_mig *m;
    nvmlReturn_t ret = enter(dev, &g, &m, CALLER_CHECKS);
    if (ret != NVML_SUCCESS)
        return ret;
    if (id == NULL || m == NULL)
        return leave(NVML_ERROR_INVALID_ARGUMENT);
    *id = m->gpu_instance_id;
    return leave(NVML_SUCCESS);
}

SIM_API nvmlReturn_t nvmlDeviceGetComputeInstanceId(nvmlDevice_t dev, unsigned int *id)
{
    struct sim_gpu *g;
    struct sim_mig *m;
    nvmlReturn_t ret = enter(dev, &g, &m, CALLER_CHECKS);
    if (ret != NVML_SUCCESS)
        return ret;
    if (id == NULL || m == NULL)
        return leave(NVML_ERROR_INVALID_ARGUMENT);
    *id = m->compute_instance_id;
    return leave(NVML_SUCCESS);
}

static nvmlReturn_t attributes(nvmlDevice_t dev, nvmlDeviceAttributes_t *attr)
{
    struct sim_gpu *g;
    struct sim_mig *m;
    nvmlReturn_t ret = enter(dev, &g, &m, attr);
    if (ret != NVML_SUCCESS)
        return ret;
    memset(attr, 0, sizeof *attr);
    if (m) {
        attr->multiprocessorCount = m->multiprocessors;
        attr->sharedCopyEngineCount = m->copy_engines;
        attr->sharedDecoderCount = m->decoders;
        attr->sharedEncoderCount = m->encoders;
        attr->sharedJpegCount = m->jpegs;
        attr->sharedOfaCount = m->ofas;
        attr->gpuInstanceSliceCount = m->slices;
        attr->computeInstanceSliceCount = m->ci_slices;
        attr->memorySizeMB = m->memory_mib;
    } else {
        attr->multiprocessorCount = g->multiprocessors;
        attr->memorySizeMB = g->memory_mib;
    }
    return leave(NVML_SUCCESS);
}

SIM_API nvmlReturn_t nvmlDeviceGetAttributes(nvmlDevice_t dev, nvmlDeviceAttributes_t *attr)
{
    return attributes(dev, attr);
}

/* ---- MIG GPU and compute instances ---- */

/* enter() for a GPU that must be in MIG mode; fills its instances. */
static nvmlReturn_t enter_mig_gpu(nvmlDevice_t dev, struct sim_gpu **g,
                                  struct sim_gpu_instance gis[SIM_MAX_MIGS], size_t *count,
                                  const void *out)
{
    nvmlReturn_t ret = enter_gpu(dev, g, out);
    if (ret != NVML_SUCCESS)
        return ret;
    if (!(*g)->mig_capable || !(*g)->mig_enabled)
        return leave(NVML_ERROR_NOT_SUPPORTED);
    struct gpulet_error err = {0};
    if (sim_gpu_instances(*g, gis, count, &err) < 0) /* the node file was checked */
        return leave(NVML_ERROR_UNKNOWN);
    return NVML_SUCCESS;
}

/* Locks and checks a GPU instance handle; on success the lock is held. */
static nvmlReturn_t enter_gi(nvmlGpuInstance_t h, struct sim_gpu **g, struct sim_gpu_instance *gi,
                             const void *out)
{
    if (out == NULL || h == NULL || h->magic != GI_MAGIC)
        return NVML_ERROR_INVALID_ARGUMENT;
    struct sim_gpu_instance gis[SIM_MAX_MIGS];
    size_t count;
    nvmlReturn_t ret = enter_mig_gpu(&gpu_handles[h->gpu], g, gis, &count, out);
    if (ret != NVML_SUCCESS)
        return ret;
    if (h->index >= count)
        return leave(NVML_ERROR_INVALID_ARGUMENT);
    *gi = gis[h->index];
    return NVML_SUCCESS;
}

/* The GPU instance profile index whose driver profile number is id. */
static int gi_profile_by_id(const struct sim_gpu *g, unsigned int id)
{
    struct sim_profile p;
    for (unsigned int i = 0; i < SIM_GI_PROFILES; i++)
        if (sim_gi_profile(g, i, &p) && p.id == id)
            return (int)i;
    return -1;
}

/* enter_mig_gpu() for the calls that take a GPU instance profile id
 * (`info.id`, e.g. 19): INVALID_ARGUMENT for an id the GPU does not offer. */
static nvmlReturn_t enter_gi_profile(nvmlDevice_t dev, unsigned int profile_id,
                                     struct sim_gpu **g, struct sim_gpu_instance gis[SIM_MAX_MIGS],
                                     size_t *count, struct sim_profile *p, const void *out)
{
    nvmlReturn_t ret = enter_mig_gpu(dev, g, gis, count, out);
    if (ret != NVML_SUCCESS)
        return ret;
    int index = gi_profile_by_id(*g, profile_id);
    if (index < 0 || !sim_gi_profile(*g, (unsigned int)index, p))
        return leave(NVML_ERROR_INVALID_ARGUMENT);
    return NVML_SUCCESS;
}

/* enter_gi() for the calls that take a compute instance profile id:
 * INVALID_ARGUMENT for one that does not fit the GPU instance. */
static nvmlReturn_t enter_ci_profile(nvmlGpuInstance_t h, unsigned int profile_id,
                                     struct sim_gpu **g, struct sim_gpu_instance *gi,
                                     struct sim_profile *p, const void *out)
{
    nvmlReturn_t ret = enter_gi(h, g, gi, out);
    if (ret != NVML_SUCCESS)
        return ret;
    if (!sim_ci_profile(*g, gi->profile, profile_id, p))
        return leave(NVML_ERROR_INVALID_ARGUMENT);
    return NVML_SUCCESS;
}

/* The count protocol of the placement calls: with no array, or one too
 * short (INSUFFICIENT_SIZE), *count says how many there are and the call
 * ends with *ret; true when the caller should fill `wanted` entries. */
static bool placements_wanted(const void *array, unsigned int *count, unsigned int wanted,
                              nvmlReturn_t *ret)
{
    *ret = array && *count < wanted ? NVML_ERROR_INSUFFICIENT_SIZE : NVML_SUCCESS;
    bool fill = array && *count >= wanted;
    *count = wanted;
    return fill;
}

/* What every profile-info call answers for an index the GPU lacks: a
 * known profile number NOT_SUPPORTED, anything past them INVALID_ARGUMENT,
 * as the driver does (consumers skip both). */
static nvmlReturn_t no_profile(unsigned int index)
{
    return index < KNOWN_GI_PROFILES ? NVML_ERROR_NOT_SUPPORTED
                                                   : NVML_ERROR_INVALID_ARGUMENT;
}

static nvmlReturn_t gi_profile_of(nvmlDevice_t dev, unsigned int index, struct sim_profile *p)
{
    struct sim_gpu *g;
    nvmlReturn_t ret = enter_gpu(dev, &g, p);
    if (ret != NVML_SUCCESS)
        return ret;
    if (!g->mig_capable)
        return leave(NVML_ERROR_NOT_SUPPORTED);
    return leave(sim_gi_profile(g, index, p) ? NVML_SUCCESS : no_profile(index));
}

SIM_API nvmlReturn_t nvmlDeviceGetGpuInstanceProfileInfo(nvmlDevice_t dev, unsigned int index,
                                                         nvmlGpuInstanceProfileInfo_t *info)
{
    struct sim_profile p;
    if (info == NULL)
        return NVML_ERROR_INVALID_ARGUMENT;
    nvmlReturn_t ret = gi_profile_of(dev, index, &p);
    if (ret != NVML_SUCCESS)
        return ret;
    *info = (nvmlGpuInstanceProfileInfo_t){
        .id = p.id, .isP2pSupported = 0, .sliceCount = p.slices,
        .instanceCount = p.instances, .multiprocessorCount = p.multiprocessors,
        .copyEngineCount = p.copy_engines, .decoderCount = p.decoders,
        .encoderCount = p.encoders, .jpegCount = p.jpegs, .ofaCount = p.ofas,
        .memorySizeMB = p.memory_mib};
    return NVML_SUCCESS;
}

SIM_API nvmlReturn_t nvmlDeviceGetGpuInstanceRemainingCapacity(nvmlDevice_t dev,
                                                               unsigned int profile_id,
                                                               unsigned int *count)
{
    struct sim_gpu *g;
    struct sim_gpu_instance gis[SIM_MAX_MIGS];
    size_t n;
    struct sim_profile p;
    nvmlReturn_t ret = enter_gi_profile(dev, profile_id, &g, gis, &n, &p, count);
    if (ret != NVML_SUCCESS)
        return ret;
    unsigned int used = 0, free_places = 0, mask = (1U << p.memory_slices) - 1;
    for (size_t i = 0; i < n; i++)
        used |= ((1U << gis[i].size) - 1) << gis[i].start;
    for (unsigned int k = 0; k < p.instances; k++)
        free_places += (used & (mask << (k * p.memory_slices))) == 0;
    *count = free_places;
    return leave(NVML_SUCCESS);
}

SIM_API nvmlReturn_t nvmlDeviceGetGpuInstances(nvmlDevice_t dev, unsigned int profile_id,
                                               nvmlGpuInstance_t *out, unsigned int *count)
{
    struct sim_gpu *g;
    struct sim_gpu_instance gis[SIM_MAX_MIGS];
    size_t n;
    if (out == NULL)
        return NVML_ERROR_INVALID_ARGUMENT;
    struct sim_profile p;
    nvmlReturn_t ret = enter_gi_profile(dev, profile_id, &g, gis, &n, &p, count);
    if (ret != NVML_SUCCESS)
        return ret;
    unsigned int found = 0;
    for (size_t i = 0; i < n; i++)
        if (gis[i].profile == (unsigned int)sim_profile_index(p.slices))
            out[found++] = &gi_handles[gpu_index_of(g)][i];
    *count = found;
    return leave(NVML_SUCCESS);
}

SIM_API nvmlReturn_t nvmlDeviceGetGpuInstanceById(nvmlDevice_t dev, unsigned int id,
                                                  nvmlGpuInstance_t *out)
{
    struct sim_gpu *g;
    struct sim_gpu_instance gis[SIM_MAX_MIGS];
    size_t n;
    nvmlReturn_t ret = enter_mig_gpu(dev, &g, gis, &n, out);
    if (ret != NVML_SUCCESS)
        return ret;
    for (size_t i = 0; i < n; i++) {
        if (gis[i].id == id) {
            *out = &gi_handles[gpu_index_of(g)][i];
            return leave(NVML_SUCCESS);
        }
    }
    return leave(NVML_ERROR_NOT_FOUND);
}

SIM_API nvmlReturn_t nvmlGpuInstanceGetInfo(nvmlGpuInstance_t h, nvmlGpuInstanceInfo_t *info)
{
    struct sim_gpu *g;
    struct sim_gpu_instance gi;
    nvmlReturn_t ret = enter_gi(h, &g, &gi, info);
    if (ret != NVML_SUCCESS)
        return ret;
    struct sim_profile p;
    sim_gi_profile(g, gi.profile, &p);
    *info = (nvmlGpuInstanceInfo_t){.device = &gpu_handles[h->gpu], .id = gi.id,
                                    .profileId = p.id,
                                    .placement = {.start = gi.start, .size = gi.size}};
    return leave(NVML_SUCCESS);
}

static nvmlReturn_t ci_profile_of(nvmlGpuInstance_t h, unsigned int index, unsigned int engines,
                                  struct sim_profile *p)
{
    struct sim_gpu *g;
    struct sim_gpu_instance gi;
    nvmlReturn_t ret = enter_gi(h, &g, &gi, p);
    if (ret != NVML_SUCCESS)
        return ret;
    if (engines >= NVML_COMPUTE_INSTANCE_ENGINE_PROFILE_COUNT ||
        index >= NVML_COMPUTE_INSTANCE_PROFILE_COUNT)
        return leave(NVML_ERROR_INVALID_ARGUMENT);
    return leave(sim_ci_profile(g, gi.profile, index, p) ? NVML_SUCCESS
                                                         : NVML_ERROR_NOT_SUPPORTED);
}

SIM_API nvmlReturn_t nvmlGpuInstanceGetComputeInstanceProfileInfo(
    nvmlGpuInstance_t h, unsigned int index, unsigned int engines,
    nvmlComputeInstanceProfileInfo_t *info)
{
    struct sim_profile p;
    if (info == NULL)
        return NVML_ERROR_INVALID_ARGUMENT;
    nvmlReturn_t ret = ci_profile_of(h, index, engines, &p);
    if (ret != NVML_SUCCESS)
        return ret;
    *info = (nvmlComputeInstanceProfileInfo_t){
        .id = p.id, .sliceCount = p.slices, .instanceCount = p.instances,
        .multiprocessorCount = p.multiprocessors, .sharedCopyEngineCount = p.copy_engines,
        .sharedDecoderCount = p.decoders, .sharedEncoderCount = p.encoders,
        .sharedJpegCount = p.jpegs, .sharedOfaCount = p.ofas};
    return NVML_SUCCESS;
}

/* The MIG devices of gi whose compute instance profile is profile_id. */
static size_t cis_of_profile(const struct sim_gpu *g, const struct sim_gpu_instance *gi,
                             unsigned int profile_id, size_t out[SIM_MAX_MIGS])
{
    size_t n = 0;
    for (size_t i = 0; i < gi->mig_count; i++)
        if (sim_profile_index(g->migs[gi->migs[i]].ci_slices) == (int)profile_id)
            out[n++] = gi->migs[i];
    return n;
}

SIM_API nvmlReturn_t nvmlGpuInstanceGetComputeInstanceRemainingCapacity(nvmlGpuInstance_t h,
                                                                        unsigned int profile_id,
                                                                        unsigned int *count)
{
    struct sim_gpu *g;
    struct sim_gpu_instance gi;
    struct sim_profile p;
    nvmlReturn_t ret = enter_ci_profile(h, profile_id, &g, &gi, &p, count);
    if (ret != NVML_SUCCESS)
        return ret;
    unsigned int used = 0;
    for (size_t i = 0; i < gi.mig_count; i++)
        used += g->migs[gi.migs[i]].ci_slices;
    unsigned int gi_slices = g->migs[gi.migs[0]].slices;
    *count = (gi_slices - used) / p.slices;
    return leave(NVML_SUCCESS);
}

SIM_API nvmlReturn_t nvmlGpuInstanceGetComputeInstancePossiblePlacements(
    nvmlGpuInstance_t h, unsigned int profile_id, nvmlComputeInstancePlacement_t *placements,
    unsigned int *count)
{
    struct sim_gpu *g;
    struct sim_gpu_instance gi;
    struct sim_profile p;
    nvmlReturn_t ret = enter_ci_profile(h, profile_id, &g, &gi, &p, count);
    if (ret != NVML_SUCCESS)
        return ret;
    if (!placements_wanted(placements, count, p.instances, &ret))
        return leave(ret);
    for (unsigned int k = 0; k < p.instances; k++)
        placements[k] = (nvmlComputeInstancePlacement_t){.start = k * p.slices, .size = p.slices};
    return leave(NVML_SUCCESS);
}

SIM_API nvmlReturn_t nvmlGpuInstanceGetComputeInstances(nvmlGpuInstance_t h,
                                                        unsigned int profile_id,
                                                        nvmlComputeInstance_t *out,
                                                        unsigned int *count)
{
    struct sim_gpu *g;
    struct sim_gpu_instance gi;
    if (out == NULL)
        return NVML_ERROR_INVALID_ARGUMENT;
    struct sim_profile p;
    nvmlReturn_t ret = enter_ci_profile(h, profile_id, &g, &gi, &p, count);
    if (ret != NVML_SUCCESS)
        return ret;
    size_t migs[SIM_MAX_MIGS];
    size_t n = cis_of_profile(g, &gi, profile_id, migs);
    for (size_t i = 0; i < n; i++)
        out[i] = &ci_handles[h->gpu][migs[i]];
    *count = (unsigned int)n;
    return leave(NVML_SUCCESS);
}

SIM_API nvmlReturn_t nvmlGpuInstanceGetComputeInstanceById(nvmlGpuInstance_t h, unsigned int id,
                                                           nvmlComputeInstance_t *out)
{
    struct sim_gpu *g;
    struct sim_gpu_instance gi;
    nvmlReturn_t ret = enter_gi(h, &g, &gi, out);
    if (ret != NVML_SUCCESS)
        return ret;
    for (size_t i = 0; i < gi.mig_count; i++) {
        if (g->migs[gi.migs[i]].compute_instance_id == id) {
            *out = &ci_handles[h->gpu][gi.migs[i]];
            return leave(NVML_SUCCESS);
        }
    }
    return leave(NVML_ERROR_NOT_FOUND);
}

/* Fills info; with_placement false for the first version of the struct,
 * which ends before the placement. */
static nvmlReturn_t ci_info(nvmlComputeInstance_t h, nvmlComputeInstanceInfo_t *info,
                            bool with_placement)
{
    if (info == NULL || h == NULL || h->magic != CI_MAGIC)
        return NVML_ERROR_INVALID_ARGUMENT;
    struct sim_gpu *g;
    struct sim_gpu_instance gis[SIM_MAX_MIGS];
    size_t n;
    nvmlReturn_t ret = enter_mig_gpu(&gpu_handles[h->gpu], &g, gis, &n, info);
    if (ret != NVML_SUCCESS)
        return ret;
    if (h->mig >= g->mig_count)
        return leave(NVML_ERROR_INVALID_ARGUMENT);
    const struct sim_mig *m = &g->migs[h->mig];
    size_t k = 0;
    while (k < n && gis[k].id != m->gpu_instance_id)
        k++;
    unsigned int start, size;
    sim_ci_placement(g, &gis[k], h->mig, &start, &size);
    info->device = &mig_handles[h->gpu][h->mig];
    info->gpuInstance = &gi_handles[h->gpu][k];
    info->id = m->compute_instance_id;
    info->profileId = (unsigned int)sim_profile_index(m->ci_slices);
    if (with_placement)
        info->placement = (nvmlComputeInstancePlacement_t){.start = start, .size = size};
    return leave(NVML_SUCCESS);
}

SIM_API nvmlReturn_t nvmlComputeInstanceGetInfo(nvmlComputeInstance_t h,
                                                nvmlComputeInstanceInfo_t *info)
{
    return ci_info(h, info, false);
}

/* ---- events ---- */

SIM_API nvmlReturn_t nvmlEventSetCreate(nvmlEventSet_t *set)
{
    nvmlReturn_t ret = enter_system();
    if (ret != NVML_SUCCESS)
        return ret;
    if (set == NULL)
        return leave(NVML_ERROR_INVALID_ARGUMENT);
    struct nvmlEventSet_st *s = calloc(1, sizeof *s);
    if (s == NULL)
        return leave(NVML_ERROR_UNKNOWN);
    s->magic = EVENT_SET_MAGIC;
    s->cursor = state->event_count;
    *set = s;
    return leave(NVML_SUCCESS);
}

static unsigned long long supported_events(const struct sim_gpu *g)
{
    return nvmlEventTypeXidCriticalError |
           (g->ecc ? nvmlEventTypeSingleBitEccError | nvmlEventTypeDoubleBitEccError : 0);
}

SIM_API nvmlReturn_t nvmlDeviceGetSupportedEventTypes(nvmlDevice_t dev, unsigned long long *types)
{
    struct sim_gpu *g;
    struct sim_mig *m;
    nvmlReturn_t ret = enter(dev, &g, &m, types);
    if (ret != NVML_SUCCESS)
        return ret;
    *types = supported_events(g);
    return leave(NVML_SUCCESS);
}

SIM_API nvmlReturn_t nvmlDeviceRegisterEvents(nvmlDevice_t dev, unsigned long long types,
                                              nvmlEventSet_t set)
{
    struct sim_gpu *g;
    struct sim_mig *m;
    nvmlReturn_t ret = enter(dev, &g, &m, CALLER_CHECKS);
    if (ret != NVML_SUCCESS)
        return ret;
    if (set == NULL || set->magic != EVENT_SET_MAGIC)
        return leave(NVML_ERROR_INVALID_ARGUMENT);
    if (types & ~supported_events(g))
        return leave(NVML_ERROR_NOT_SUPPORTED);
    set->mask[gpu_index_of(g)] |= types;
    return leave(NVML_SUCCESS);
}

/* Takes the next event for the set, if any; called with the lock held. */
static bool next_event(nvmlEventSet_t set, nvmlEventData_t *data)
{
    if (set->cursor > state->event_count) /* the state file was rewritten shorter */
        set->cursor = state->event_count;
    while (set->cursor < state->event_count) {
        const struct sim_event *ev = &state->events[set->cursor++];
        if ((set->mask[ev->gpu] & ev->type) == 0)
            continue;
        data->device = &gpu_handles[ev->gpu];
        data->eventType = ev->type;
        data->eventData = ev->data;
        data->gpuInstanceId = ev->gpu_instance_id;
        data->computeInstanceId = ev->compute_instance_id;
        return true;
    }
    return false;
}

/* Blocks like the real call: the simulator has no interrupt to wait on, so
 * it checks the state file every 10 ms until an event or the timeout. */
static nvmlReturn_t event_wait(nvmlEventSet_t set, nvmlEventData_t *data, unsigned int timeout_ms)
{
    if (set == NULL || set->magic != EVENT_SET_MAGIC || data == NULL)
        return NVML_ERROR_INVALID_ARGUMENT;
    struct timespec start, now;
    clock_gettime(CLOCK_MONOTONIC, &start);
    for (;;) {
        nvmlReturn_t ret = enter_system();
        if (ret != NVML_SUCCESS)
            return ret;
        bool got = next_event(set, data);
        pthread_mutex_unlock(&lock);
        if (got)
            return NVML_SUCCESS;
        clock_gettime(CLOCK_MONOTONIC, &now);
        long long waited_ms = (now.tv_sec - start.tv_sec) * 1000LL +
                              (now.tv_nsec - start.tv_nsec) / 1000000LL;
        if (waited_ms >= timeout_ms)
            return NVML_ERROR_TIMEOUT;
        struct timespec tick = {0, 10 * 1000 * 1000};
        nanosleep(&tick, NULL);
    }
}

SIM_API nvmlReturn_t nvmlEventSetWait(nvmlEventSet_t set, nvmlEventData_t *data,
                                      unsigned int timeout_ms)
{
    return event_wait(set, data, timeout_ms);
}

SIM_API nvmlReturn_t nvmlEventSetFree(nvmlEventSet_t set)
{
    if (set == NULL || set->magic != EVENT_SET_MAGIC)
        return NVML_ERROR_INVALID_ARGUMENT;
    set->magic = 0;
    free(set);
    return NVML_SUCCESS;
}

#ifndef SIM_OLD_DRIVER

/* ---- what only newer drivers have ---- */

SIM_API nvmlReturn_t nvmlInit_v2(void)
{
    return sim_init();
}

SIM_API nvmlReturn_t nvmlSystemGetCudaDriverVersion_v2(int *version)
{
    return cuda_driver_version(version);
}

SIM_API nvmlReturn_t nvmlDeviceGetCount_v2(unsigned int *count)
{
    return device_count(count);
}

SIM_API nvmlReturn_t nvmlDeviceGetHandleByIndex_v2(unsigned int index, nvmlDevice_t *device)
{
    return handle_by_index(index, device);
}

SIM_API nvmlReturn_t nvmlDeviceGetHandleByPciBusId_v2(const char *bus_id, nvmlDevice_t *device)
{
    return handle_by_bus_id(bus_id, device);
}

SIM_API nvmlReturn_t nvmlDeviceGetPciInfo_v2(nvmlDevice_t dev, nvmlPciInfo_t *pci)
{
    return pci_info(dev, pci);
}

SIM_API nvmlReturn_t nvmlDeviceGetPciInfo_v3(nvmlDevice_t dev, nvmlPciInfo_t *pci)
{
    return pci_info(dev, pci);
}

SIM_API nvmlReturn_t nvmlDeviceGetMemoryInfo_v2(nvmlDevice_t dev, nvmlMemory_v2_t *mem)
{
    if (mem == NULL)
        return NVML_ERROR_INVALID_ARGUMENT;
    if (mem->version != nvmlMemory_v2)
        return NVML_ERROR_ARGUMENT_VERSION_MISMATCH;
    unsigned long long total, reserved, used;
    nvmlReturn_t ret = memory_of(dev, &total, &reserved, &used);
    if (ret != NVML_SUCCESS)
        return ret;
    mem->total = total;
    mem->reserved = reserved;
    mem->used = used;
    mem->free = total - reserved - used;
    return NVML_SUCCESS;
}

SIM_API nvmlReturn_t nvmlDeviceGetNumaNodeId(nvmlDevice_t dev, unsigned int *numa)
{
    struct sim_gpu *g;
    struct sim_mig *m;
    nvmlReturn_t ret = enter(dev, &g, &m, numa);
    if (ret != NVML_SUCCESS)
        return ret;
    if (g->numa_node < 0)
        return leave(NVML_ERROR_NOT_SUPPORTED);
    *numa = (unsigned int)g->numa_node;
    return leave(NVML_SUCCESS);
}

SIM_API nvmlReturn_t nvmlDeviceGetCurrentClocksEventReasons(nvmlDevice_t dev,
                                                            unsigned long long *reasons)
{
    return clock_event_reasons(dev, reasons);
}

SIM_API nvmlReturn_t nvmlDeviceGetComputeRunningProcesses_v3(nvmlDevice_t dev, unsigned int *count,
                                                             nvmlProcessInfo_t *infos)
{
    return running_processes(dev, PROCESSES_COMPUTE, 3, count, infos);
}

SIM_API nvmlReturn_t nvmlDeviceGetGraphicsRunningProcesses_v3(nvmlDevice_t dev,
                                                              unsigned int *count,
                                                              nvmlProcessInfo_t *infos)
{
    return running_processes(dev, PROCESSES_GRAPHICS, 3, count, infos);
}

SIM_API nvmlReturn_t nvmlDeviceGetMPSComputeRunningProcesses_v3(nvmlDevice_t dev,
                                                                unsigned int *count,
                                                                nvmlProcessInfo_t *infos)
{
    return running_processes(dev, PROCESSES_MPS, 3, count, infos);
}

SIM_API nvmlReturn_t nvmlDeviceGetNvLinkRemotePciInfo_v2(nvmlDevice_t dev, unsigned int link,
                                                         nvmlPciInfo_t *pci)
{
    return nvlink_remote_pci(dev, link, pci);
}

SIM_API nvmlReturn_t nvmlDeviceGetAttributes_v2(nvmlDevice_t dev, nvmlDeviceAttributes_t *attr)
{
    return attributes(dev, attr);
}

SIM_API nvmlReturn_t nvmlEventSetWait_v2(nvmlEventSet_t set, nvmlEventData_t *data,
                                         unsigned int timeout_ms)
{
    return event_wait(set, data, timeout_ms);
}

/* ---- MIG: the versioned calls ---- */

SIM_API nvmlReturn_t nvmlDeviceGetGpuInstanceProfileInfoV(nvmlDevice_t dev, unsigned int index,
                                                          nvmlGpuInstanceProfileInfo_v2_t *info)
{
    if (info == NULL)
        return NVML_ERROR_INVALID_ARGUMENT;
    unsigned int version = info->version;
    if (version != nvmlGpuInstanceProfileInfo_v2 && version != nvmlGpuInstanceProfileInfo_v3)
        return NVML_ERROR_ARGUMENT_VERSION_MISMATCH;
    struct sim_profile p;
    nvmlReturn_t ret = gi_profile_of(dev, index, &p);
    if (ret != NVML_SUCCESS)
        return ret;
    if (version == nvmlGpuInstanceProfileInfo_v3) {
        nvmlGpuInstanceProfileInfo_v3_t *v3 = (nvmlGpuInstanceProfileInfo_v3_t *)(void *)info;
        *v3 = (nvmlGpuInstanceProfileInfo_v3_t){
            .version = version, .id = p.id, .sliceCount = p.slices,
            .instanceCount = p.instances, .multiprocessorCount = p.multiprocessors,
            .copyEngineCount = p.copy_engines, .decoderCount = p.decoders,
            .encoderCount = p.encoders, .jpegCount = p.jpegs, .ofaCount = p.ofas,
            .memorySizeMB = p.memory_mib, .capabilities = 0};
        snprintf(v3->name, sizeof v3->name, "MIG %s", p.name);
        return NVML_SUCCESS;
    }
    *info = (nvmlGpuInstanceProfileInfo_v2_t){
        .version = version, .id = p.id, .isP2pSupported = 0, .sliceCount = p.slices,
        .instanceCount = p.instances, .multiprocessorCount = p.multiprocessors,
        .copyEngineCount = p.copy_engines, .decoderCount = p.decoders,
        .encoderCount = p.encoders, .jpegCount = p.jpegs, .ofaCount = p.ofas,
        .memorySizeMB = p.memory_mib};
    snprintf(info->name, sizeof info->name, "MIG %s", p.name);
    return NVML_SUCCESS;
}

SIM_API nvmlReturn_t nvmlGpuInstanceGetComputeInstanceProfileInfoV(
    nvmlGpuInstance_t h, unsigned int index, unsigned int engines,
    nvmlComputeInstanceProfileInfo_v2_t *info)
{
    if (info == NULL)
        return NVML_ERROR_INVALID_ARGUMENT;
    unsigned int version = info->version;
    if (version != nvmlComputeInstanceProfileInfo_v2 &&
        version != nvmlComputeInstanceProfileInfo_v3)
        return NVML_ERROR_ARGUMENT_VERSION_MISMATCH;
    struct sim_profile p;
    nvmlReturn_t ret = ci_profile_of(h, index, engines, &p);
    if (ret != NVML_SUCCESS)
        return ret;
    /* v3 only adds capabilities after the v2 fields; none are simulated. */
    if (version == nvmlComputeInstanceProfileInfo_v3)
        ((nvmlComputeInstanceProfileInfo_v3_t *)(void *)info)->capabilities = 0;
    info->id = p.id;
    info->sliceCount = p.slices;
    info->instanceCount = p.instances;
    info->multiprocessorCount = p.multiprocessors;
    info->sharedCopyEngineCount = p.copy_engines;
    info->sharedDecoderCount = p.decoders;
    info->sharedEncoderCount = p.encoders;
    info->sharedJpegCount = p.jpegs;
    info->sharedOfaCount = p.ofas;
    snprintf(info->name, sizeof info->name, "MIG %s", p.name);
    return NVML_SUCCESS;
}

SIM_API nvmlReturn_t nvmlDeviceGetGpuInstancePossiblePlacements_v2(
    nvmlDevice_t dev, unsigned int profile_id, nvmlGpuInstancePlacement_t *placements,
    unsigned int *count)
{
    struct sim_gpu *g;
    struct sim_gpu_instance gis[SIM_MAX_MIGS];
    size_t n;
    struct sim_profile p;
    nvmlReturn_t ret = enter_gi_profile(dev, profile_id, &g, gis, &n, &p, count);
    if (ret != NVML_SUCCESS)
        return ret;
    if (!placements_wanted(placements, count, p.instances, &ret))
        return leave(ret);
    for (unsigned int k = 0; k < p.instances; k++)
        placements[k] = (nvmlGpuInstancePlacement_t){.start = k * p.memory_slices,
                                                     .size = p.memory_slices};
    return leave(NVML_SUCCESS);
}

SIM_API nvmlReturn_t nvmlComputeInstanceGetInfo_v2(nvmlComputeInstance_t h,
                                                   nvmlComputeInstanceInfo_t *info)
{
    return ci_info(h, info, true);
}

/* ---- GPM (Hopper and newer) ---- */

SIM_API nvmlReturn_t nvmlGpmQueryDeviceSupport(nvmlDevice_t dev, nvmlGpmSupport_t *support)
{
    struct sim_gpu *g;
    nvmlReturn_t ret = enter_gpu(dev, &g, CALLER_CHECKS);
    if (ret != NVML_SUCCESS)
        return ret;
    if (support == NULL || support->version != NVML_GPM_SUPPORT_VERSION)
        return leave(support ? NVML_ERROR_ARGUMENT_VERSION_MISMATCH : NVML_ERROR_INVALID_ARGUMENT);
    support->isSupportedDevice = g->gpm;
    return leave(NVML_SUCCESS);
}

SIM_API nvmlReturn_t nvmlGpmSampleAlloc(nvmlGpmSample_t *sample)
{
    if (sample == NULL)
        return NVML_ERROR_INVALID_ARGUMENT;
    struct nvmlGpmSample_st *s = calloc(1, sizeof *s);
    if (s == NULL)
        return NVML_ERROR_UNKNOWN;
    s->magic = SAMPLE_MAGIC;
    *sample = s;
    return NVML_SUCCESS;
}

SIM_API nvmlReturn_t nvmlGpmSampleFree(nvmlGpmSample_t sample)
{
    if (sample == NULL || sample->magic != SAMPLE_MAGIC)
        return NVML_ERROR_INVALID_ARGUMENT;
    sample->magic = 0;
    free(sample);
    return NVML_SUCCESS;
}

SIM_API nvmlReturn_t nvmlGpmSampleGet(nvmlDevice_t dev, nvmlGpmSample_t sample)
{
    struct sim_gpu *g;
    nvmlReturn_t ret = enter_gpu(dev, &g, CALLER_CHECKS);
    if (ret != NVML_SUCCESS)
        return ret;
    if (sample == NULL || sample->magic != SAMPLE_MAGIC)
        return leave(NVML_ERROR_INVALID_ARGUMENT);
    if (!g->gpm)
        return leave(NVML_ERROR_NOT_SUPPORTED);
    sample->filled = true;
    sample->gpu = (unsigned int)gpu_index_of(g);
    sample->mig = -1;
    sample->seconds = elapsed_seconds();
    return leave(NVML_SUCCESS);
}

/* A GPU instance's sample: its first MIG device stands for it. */
SIM_API nvmlReturn_t nvmlGpmMigSampleGet(nvmlDevice_t dev, unsigned int gpu_instance_id,
                                         nvmlGpmSample_t sample)
{
    struct sim_gpu *g;
    nvmlReturn_t ret = enter_gpu(dev, &g, CALLER_CHECKS);
    if (ret != NVML_SUCCESS)
        return ret;
    if (sample == NULL || sample->magic != SAMPLE_MAGIC)
        return leave(NVML_ERROR_INVALID_ARGUMENT);
    if (!g->gpm || !g->mig_capable || !g->mig_enabled)
        return leave(NVML_ERROR_NOT_SUPPORTED);
    for (size_t m = 0; m < g->mig_count; m++) {
        if (g->migs[m].gpu_instance_id != gpu_instance_id)
            continue;
        sample->filled = true;
        sample->gpu = (unsigned int)gpu_index_of(g);
        sample->mig = (int)m;
        sample->seconds = elapsed_seconds();
        return leave(NVML_SUCCESS);
    }
    return leave(NVML_ERROR_NOT_FOUND);
}

/* A GPU instance is as busy as its share of the GPU's compute slices. */
static double gpm_value(const struct sim_gpu *g, int mig, unsigned int id, bool *known)
{
    double u = utilization(g);
    if (mig >= 0) {
        unsigned int slices = 0;
        for (size_t m = 0; m < g->mig_count; m++)
            if (g->migs[m].gpu_instance_id == g->migs[mig].gpu_instance_id)
                slices += g->migs[m].ci_slices;
        u = u * (slices < 7 ? slices : 7) / 7.0;
    }
    *known = true;
    switch (id) {
    case NVML_GPM_METRIC_GRAPHICS_UTIL: return u;
    case NVML_GPM_METRIC_SM_UTIL: return u * 0.9;
    case NVML_GPM_METRIC_SM_OCCUPANCY: return u * 0.5;
    case NVML_GPM_METRIC_ANY_TENSOR_UTIL: return u * 0.4;
    case NVML_GPM_METRIC_DRAM_BW_UTIL: return u * 0.6;
    case NVML_GPM_METRIC_FP64_UTIL: return u * 0.05;
    case NVML_GPM_METRIC_FP32_UTIL: return u * 0.3;
    case NVML_GPM_METRIC_FP16_UTIL: return u * 0.2;
    case NVML_GPM_METRIC_PCIE_TX_PER_SEC: return u * 1.0e8;
    case NVML_GPM_METRIC_PCIE_RX_PER_SEC: return u * 2.0e8;
    default: *known = false; return 0;
    }
}

SIM_API nvmlReturn_t nvmlGpmMetricsGet(nvmlGpmMetricsGet_t *m)
{
    if (m == NULL || m->version != NVML_GPM_METRICS_GET_VERSION)
        return m ? NVML_ERROR_ARGUMENT_VERSION_MISMATCH : NVML_ERROR_INVALID_ARGUMENT;
    if (m->sample1 == NULL || m->sample2 == NULL || m->sample1->magic != SAMPLE_MAGIC ||
        m->sample2->magic != SAMPLE_MAGIC || !m->sample1->filled || !m->sample2->filled ||
        m->sample1->gpu != m->sample2->gpu || m->sample1->mig != m->sample2->mig ||
        m->numMetrics > NVML_GPM_METRIC_MAX)
        return NVML_ERROR_INVALID_ARGUMENT;
    nvmlReturn_t ret = enter_system();
    if (ret != NVML_SUCCESS)
        return ret;
    const struct sim_gpu *g = &node->gpus[m->sample2->gpu];
    for (unsigned int i = 0; i < m->numMetrics; i++) {
        bool known;
        m->metrics[i].value = gpm_value(g, m->sample2->mig, m->metrics[i].metricId, &known);
        m->metrics[i].nvmlReturn = known ? NVML_SUCCESS : NVML_ERROR_NOT_SUPPORTED;
        m->metrics[i].metricInfo.shortName = NULL;
        m->metrics[i].metricInfo.longName = NULL;
        m->metrics[i].metricInfo.unit = NULL;
    }
    return leave(NVML_SUCCESS);
}

#endif
