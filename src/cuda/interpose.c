/*
 * libgpulet-cuda.so: loaded before libcuda.so.1 (LD_PRELOAD or
 * /etc/ld.so.preload), it holds the processes of a container to a memory
 * limit and a compute share per GPU (docs/sharing.md). Programs reach the
 * driver three ways and each is covered: direct calls land on the
 * functions below; dlsym() and cuGetProcAddress(_v2) answers that are one
 * of the driver's functions watched here are swapped for the watcher.
 * Everything else passes through untouched. The limits come from
 * /etc/gpulet/cuda-limits when it exists (gpulet mounts it read-only; the
 * variables are then ignored), else from the environment; without a limit
 * nothing is counted.
 */
#include <dlfcn.h>
#include <errno.h>
#include <fcntl.h>
#include <link.h>
#include <pthread.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

#include "cuda/cuda_abi.h"
#include "cuda/cuda_limits.h"
#include "nvml/nvml_abi.h"

#define API __attribute__((visibility("default")))
#define MAX_DEVS GLC_MAX_DEVS
#define KERNEL_TABLE 1024
/* GPU time a container may bank while idle, per percent of share. */
#define BURST_NS_PER_PCT 200000ULL
/* The widest row alignment cuMemAllocPitch pads to: 512 bytes on the
 * GPUs and drivers seen (and in the simulator). */
#define PITCH_ALIGN_MAX 512U

/* M_POOL: a memory pool's device (-1: not a GPU's memory), 0 bytes.
 * M_MAPS: by VMM handle, how many mappings it has (bytes) and whether it
 * was released meanwhile (dev 1). M_MAPPING / M_MAPLEN: by the address a
 * mapping starts at, its handle and its length. */
enum map_kind { M_PTR = 1, M_ARRAY, M_MIPMAP, M_VMM, M_CTX, M_POOL, M_MAPS, M_MAPPING, M_MAPLEN };

/* Every watched driver function: its name in libcuda.so.1, where the real
 * one is kept and the watcher that replaces it. */
#define WATCHED(X)                                                                                \
    X(cuMemAlloc_v2) X(cuMemAllocPitch_v2) X(cuMemAllocManaged) X(cuMemFree_v2)                   \
    X(cuMemAllocAsync) X(cuMemAllocAsync_ptsz) X(cuMemAllocFromPoolAsync)                        \
    X(cuMemAllocFromPoolAsync_ptsz) X(cuMemFreeAsync) X(cuMemFreeAsync_ptsz)                      \
    X(cuArrayCreate_v2) X(cuArray3DCreate_v2) X(cuArrayDestroy) X(cuMipmappedArrayCreate)         \
    X(cuMipmappedArrayDestroy) X(cuMemCreate) X(cuMemRelease) X(cuMemGetInfo_v2)                  \
    X(cuCtxCreate_v2) X(cuCtxDestroy_v2) X(cuDevicePrimaryCtxRetain)                              \
    X(cuDevicePrimaryCtxRelease_v2) X(cuLaunchKernel) X(cuLaunchKernel_ptsz) X(cuLaunchKernelEx)  \
    X(cuLaunchKernelEx_ptsz) X(cuLaunchCooperativeKernel) X(cuLaunchCooperativeKernel_ptsz)       \
    X(cuGraphLaunch) X(cuGraphLaunch_ptsz) X(cuGetProcAddress) X(cuGetProcAddress_v2)            \
    X(cuMemPoolCreate) X(cuMemPoolDestroy) X(cuDeviceGetDefaultMemPool) X(cuDeviceGetMemPool)     \
    X(cuDeviceSetMemPool) X(cuGraphExecDestroy) X(cuModuleUnload) X(cuMemMap) X(cuMemUnmap)       \
    X(cuCtxCreate_v3) X(cuCtxCreate_v4) X(cuCtxCreate) X(cuCtxDestroy)                            \
    X(cuDevicePrimaryCtxRelease) X(cuMemAlloc) X(cuCtxSetLimit) X(cuGraphAddMemAllocNode)      \
    X(cuGraphAddNode) X(cuGraphAddNode_v2) X(cuGreenCtxCreate)

/* Driver functions the interposer calls itself. */
typedef CUresult (*pfn_ctx_get_device)(CUdevice *);
typedef CUresult (*pfn_init)(unsigned int);
typedef CUresult (*pfn_count)(int *);
typedef CUresult (*pfn_uuid)(CUuuid *, CUdevice);
typedef CUresult (*pfn_event_create)(CUevent *, unsigned int);
typedef CUresult (*pfn_event_destroy)(CUevent);
typedef CUresult (*pfn_event_record)(CUevent, CUstream);
typedef CUresult (*pfn_event_sync)(CUevent);
typedef CUresult (*pfn_elapsed)(float *, CUevent, CUevent);

struct device {
    uint64_t limit;      /* 0: none */
    unsigned int share;  /* hundredths of a percent; 0: none */
    bool opened;
    struct glc_file *file;
    char uuid[48];       /* "GPU-..." as NVML writes it */
    unsigned int primary_refs;
};

/* The interposer's state; it lives as long as the process. */
static pthread_once_t once = PTHREAD_ONCE_INIT;
static pthread_mutex_t lock = PTHREAD_MUTEX_INITIALIZER;
/* Held across the driver's primary-context calls, so threads racing the
 * first retain see one context made, and charge it once. */
static pthread_mutex_t primary_lock = PTHREAD_MUTEX_INITIALIZER;
static void *(*real_dlsym)(void *, const char *);
static void *(*real_dlopen)(const char *, int);
static void *libcuda;
static void *driver_base; /* where the watched driver is mapped */
static bool active; /* some limit is set */
static int log_level = 1;
static uint64_t context_bytes = 64ULL << 20;
static const char *state_dir;
static struct device devs[MAX_DEVS];
static struct glc_map allocations;
static bool told_memory, told_file, told_pitch, told_legacy, told_set_limit, told_unsupported;
/* The limits file, when there is one; matched to CUDA ordinals by UUID on
 * first use, once the driver can say which device is which. */
static struct glc_limits file_limits;
static pthread_once_t match_once = PTHREAD_ONCE_INIT;

#define REAL_PTR(name) static void (*real_##name)(void);
WATCHED(REAL_PTR)
static pfn_ctx_get_device real_ctx_get_device;
static CUresult (*real_ctx_get_limit)(size_t *, int);
static CUresult (*real_is_capturing)(CUstream, int *);
static pfn_init real_init;
static pfn_count real_count;
static pfn_uuid real_uuid;
static pfn_event_create real_event_create;
static pfn_event_destroy real_event_destroy;
static pfn_event_record real_event_record;
static pfn_event_sync real_event_sync;
static pfn_elapsed real_elapsed;

static void say(int level, const char *fmt, ...) __attribute__((format(printf, 2, 3)));
static void say(int level, const char *fmt, ...)
{
    if (level > log_level)
        return;
    char line[512];
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(line, sizeof line, fmt, ap);
    va_end(ap);
    fprintf(stderr, "gpulet-cuda: %s\n", line);
}

static void *lookup(const char *name)
{
    return libcuda ? real_dlsym(libcuda, name) : NULL;
}

static void read_env(void)
{
    state_dir = getenv("GPULET_CUDA_STATE_DIR");
    uint64_t v;
    unsigned int pct;
    const char *s = getenv("GPULET_CUDA_CONTEXT_SIZE");
    if (s && glc_parse_size(s, &v) == 0)
        context_bytes = v;
    const char *all = getenv("GPULET_CUDA_MEMORY_LIMIT");
    const char *all_share = getenv("GPULET_CUDA_COMPUTE_SHARE");
    if (all && glc_parse_size(all, &v) < 0)
        say(0, "ignoring GPULET_CUDA_MEMORY_LIMIT=%s: not a size like 10Gi, 512Mi or bytes", all);
    if (all_share && glc_parse_percent(all_share, &pct) < 0)
        say(0, "ignoring GPULET_CUDA_COMPUTE_SHARE=%s: not a percent from 0.01 to 100", all_share);
    for (int d = 0; d < MAX_DEVS; d++) {
        char name[64];
        snprintf(name, sizeof name, "GPULET_CUDA_MEMORY_LIMIT_%d", d);
        const char *one = getenv(name);
        if (one && glc_parse_size(one, &v) == 0)
            devs[d].limit = v;
        else if (one)
            say(0, "ignoring %s=%s: not a size like 10Gi, 512Mi or bytes", name, one);
        else if (all && glc_parse_size(all, &v) == 0)
            devs[d].limit = v;
        snprintf(name, sizeof name, "GPULET_CUDA_COMPUTE_SHARE_%d", d);
        one = getenv(name);
        if (one && glc_parse_percent(one, &pct) == 0)
            devs[d].share = pct < 10000 ? pct : 0;
        else if (one)
            say(0, "ignoring %s=%s: not a percent from 0.01 to 100", name, one);
        else if (all_share && glc_parse_percent(all_share, &pct) == 0)
            devs[d].share = pct < 10000 ? pct : 0;
        active = active || devs[d].limit || devs[d].share;
    }
}

/* Fail closed: a limits file that is there but unusable (or devices it
 * cannot be matched to) must not leave a container unlimited, so every
 * counted allocation on the device is refused (a limit of one byte). */
static void refuse(int dev)
{
    devs[dev].limit = 1;
    devs[dev].share = 0;
}

static void read_config(void)
{
    const char *lvl = getenv("GPULET_CUDA_LOG");
    if (lvl)
        log_level = strcmp(lvl, "error") == 0  ? 0
                    : strcmp(lvl, "debug") == 0 ? 2
                    : strcmp(lvl, "off") == 0   ? -1
                                                : 1;
    char msg[512];
    int r = glc_read_limits(GLC_LIMITS_FILE, &file_limits, msg, sizeof msg);
    if (r == 1) {
        read_env();
        return;
    }
    say(2, "limits from %s; GPULET_CUDA_* variables other than GPULET_CUDA_LOG are ignored",
        GLC_LIMITS_FILE);
    active = true;
    if (r < 0) { /* nothing in it is trusted; the state stays in this process */
        say(0, "%s: every allocation is refused until it is fixed", msg);
        file_limits.by_uuid = false;
        for (int d = 0; d < MAX_DEVS; d++)
            refuse(d);
        return;
    }
    state_dir = file_limits.state_dir[0] ? file_limits.state_dir : GLC_CONTAINER_STATE_DIR;
    if (file_limits.context_bytes)
        context_bytes = file_limits.context_bytes;
    if (!file_limits.by_uuid)
        for (int d = 0; d < MAX_DEVS; d++) {
            devs[d].limit = file_limits.dev[d].limit;
            devs[d].share = file_limits.dev[d].share;
        }
}

static pthread_once_t dlsym_once;
static void find_dlsym(void);

/* The child of a fork holds none of its parent's slots. */
static void in_child(void)
{
    for (int d = 0; d < MAX_DEVS; d++)
        if (devs[d].opened && devs[d].file)
            glc_forked(devs[d].file);
}

static void init(void)
{
    /* dlsym itself is watched, so the real one comes by version. */
    pthread_once(&dlsym_once, find_dlsym);
    if (real_dlopen) {
        libcuda = real_dlopen("libcuda.so.1", RTLD_NOW | RTLD_NOLOAD);
        if (libcuda == NULL)
            libcuda = real_dlopen("libcuda.so.1", RTLD_NOW | RTLD_GLOBAL);
    }
    Dl_info where;
    void *cu_init = lookup("cuInit");
    if (cu_init && dladdr(cu_init, &where))
        driver_base = where.dli_fbase;
    read_config();
    if (pthread_atfork(NULL, NULL, in_child) != 0)
        say(0, "cannot watch for fork: a forked child would share its parent's budget slot");
#define RESOLVE(name) real_##name = (void (*)(void))lookup(#name);
    WATCHED(RESOLVE)
    real_ctx_get_device = (pfn_ctx_get_device)lookup("cuCtxGetDevice");
    real_ctx_get_limit = (CUresult(*)(size_t *, int))lookup("cuCtxGetLimit");
    real_is_capturing = (CUresult(*)(CUstream, int *))lookup("cuStreamIsCapturing");
    real_init = (pfn_init)lookup("cuInit");
    real_count = (pfn_count)lookup("cuDeviceGetCount");
    real_uuid = (pfn_uuid)lookup("cuDeviceGetUuid_v2");
    real_event_create = (pfn_event_create)lookup("cuEventCreate");
    real_event_destroy = (pfn_event_destroy)lookup("cuEventDestroy_v2");
    real_event_record = (pfn_event_record)lookup("cuEventRecord");
    real_event_sync = (pfn_event_sync)lookup("cuEventSynchronize");
    real_elapsed = (pfn_elapsed)lookup("cuEventElapsedTime");
}

static void ensure_init(void)
{
    pthread_once(&once, init);
}

/* "GPU-…" of CUDA device dev as NVML writes it; false when the driver
 * cannot say. */
static bool device_uuid(int dev, char *name, size_t len)
{
    CUuuid u;
    if (real_uuid == NULL || real_uuid(&u, dev) != CUDA_SUCCESS)
        return false;
    const unsigned char *b = (const unsigned char *)u.bytes;
    snprintf(name, len,
             "GPU-%02x%02x%02x%02x-%02x%02x-%02x%02x-%02x%02x-%02x%02x%02x%02x%02x%02x", b[0],
             b[1], b[2], b[3], b[4], b[5], b[6], b[7], b[8], b[9], b[10], b[11], b[12], b[13],
             b[14], b[15]);
    return true;
}

/* Gives each CUDA device the file's limits for its UUID. A device the file
 * does not name is not one of gpulet's slices (a whole GPU the container
 * also got): it has no limit. One whose UUID the driver will not tell is
 * refused. */
static void match_uuids(void)
{
    if (!file_limits.by_uuid)
        return;
    int count = 0;
    if (real_init == NULL || real_init(0) != CUDA_SUCCESS || real_count == NULL ||
        real_count(&count) != CUDA_SUCCESS) {
        say(0, "cannot list the CUDA devices to match %s by UUID: every allocation is refused",
            GLC_LIMITS_FILE);
        for (int d = 0; d < MAX_DEVS; d++)
            refuse(d);
        return;
    }
    for (int d = 0; d < count && d < MAX_DEVS; d++) {
        char uuid[64];
        if (!device_uuid(d, uuid, sizeof uuid)) {
            say(0, "cannot read the UUID of device %d: its allocations are refused", d);
            refuse(d);
            continue;
        }
        for (int i = 0; i < GLC_MAX_DEVS; i++)
            if (glc_same_uuid(file_limits.dev[i].uuid, uuid)) {
                devs[d].limit = file_limits.dev[i].limit;
                devs[d].share = file_limits.dev[i].share;
                say(2, "device %d (%s): limit %llu bytes, share %u.%02u %%", d, uuid,
                    (unsigned long long)devs[d].limit, devs[d].share / 100, devs[d].share % 100);
            }
    }
}

static void ensure_matched(void)
{
    pthread_once(&match_once, match_uuids);
}

/* The state of device dev, opened on first use; NULL when it has no
 * limit, or its file cannot be used: a process that cannot join the
 * container's budget gets none of its own (said once), so its allocations
 * and launches on the device are refused. */
static struct glc_file *device_file(int dev)
{
    if (dev < 0 || dev >= MAX_DEVS)
        return NULL;
    ensure_matched();
    if (devs[dev].limit == 0 && devs[dev].share == 0)
        return NULL;
    struct device *d = &devs[dev];
    if (__atomic_load_n(&d->opened, __ATOMIC_ACQUIRE))
        return d->file;
    pthread_mutex_lock(&lock);
    if (!d->opened) {
        char name[64];
        if (!device_uuid(dev, name, sizeof name))
            snprintf(name, sizeof name, "device-%d", dev);
        snprintf(d->uuid, sizeof d->uuid, "%s", name);
        char msg[512];
        d->file = glc_open(state_dir, name, msg, sizeof msg);
        if (d->file == NULL && !told_file)
            say(0, "%s: this process cannot join its container's budget for device %d, so its "
                   "allocations and launches there are refused",
                msg, dev);
        told_file = told_file || d->file == NULL;
        __atomic_store_n(&d->opened, true, __ATOMIC_RELEASE);
    }
    pthread_mutex_unlock(&lock);
    return d->file;
}

static int current_device(void)
{
    CUdevice d;
    return real_ctx_get_device && real_ctx_get_device(&d) == CUDA_SUCCESS ? d : -1;
}

static bool has_limit(int dev)
{
    if (dev < 0 || dev >= MAX_DEVS)
        return false; /* no device: nothing to match, and no driver call made for it */
    ensure_matched();
    return devs[dev].limit != 0;
}

/* Takes bytes of dev's limit; false (said once) when they do not fit. */
static bool take(int dev, uint64_t bytes, const char *call)
{
    if (!has_limit(dev))
        return true;
    struct glc_file *f = device_file(dev);
    if (f == NULL || glc_reserve(f, bytes, devs[dev].limit))
        return f != NULL;
    pthread_mutex_lock(&lock);
    bool first = !told_memory;
    told_memory = true;
    pthread_mutex_unlock(&lock);
    say(first ? 1 : 2,
        "memory limit reached: %s of %llu bytes on device %d refused with "
        "CUDA_ERROR_OUT_OF_MEMORY (limit %llu, in use %llu)%s",
        call, (unsigned long long)bytes, dev, (unsigned long long)devs[dev].limit,
        (unsigned long long)glc_used(f), first ? "; further refusals are logged at debug" : "");
    return false;
}

static void give(int dev, uint64_t bytes)
{
    struct glc_file *f = has_limit(dev) ? device_file(dev) : NULL;
    if (f)
        glc_release(f, bytes);
}

static void remember(enum map_kind kind, uint64_t key, int dev, uint64_t bytes)
{
    pthread_mutex_lock(&lock);
    int r = glc_map_put(&allocations, kind, key, dev, bytes);
    pthread_mutex_unlock(&lock);
    if (r < 0) /* cannot track it, so cannot credit it later: keep it counted */
        say(0, "out of memory tracking an allocation; its bytes stay counted");
}

/* Gives back what (kind, key) held, if it was counted. */
static void forget(enum map_kind kind, uint64_t key)
{
    int dev;
    uint64_t bytes;
    pthread_mutex_lock(&lock);
    bool found = glc_map_take(&allocations, kind, key, &dev, &bytes);
    pthread_mutex_unlock(&lock);
    if (found)
        give(dev, bytes);
}

#define REAL(name, type) ((type)real_##name)

/* ---- allocations ---- */

typedef CUresult (*alloc_fn)(CUdeviceptr *, size_t);

static CUresult counted_alloc(int dev, uint64_t bytes, const char *call, CUresult r_if_refused,
                              CUresult (*call_real)(void *), void *args, enum map_kind kind,
                              const void *key_out)
{
    if (!active || !has_limit(dev))
        return call_real(args);
    if (!take(dev, bytes, call))
        return r_if_refused;
    CUresult r = call_real(args);
    uint64_t key; /* the pointer or handle the driver wrote: 64 bits */
    memcpy(&key, key_out, sizeof key);
    if (r != CUDA_SUCCESS)
        give(dev, bytes);
    else
        remember(kind, key, dev, bytes);
    return r;
}

struct alloc_args {
    void (*fn)(void);
    CUdeviceptr *dptr;
    size_t bytes;
    unsigned int flags;
    void *extra;
};

static CUresult call_alloc(void *a)
{
    struct alloc_args *x = a;
    return ((alloc_fn)x->fn)(x->dptr, x->bytes);
}

static CUresult plain_alloc(void (*fn)(void), CUdeviceptr *dptr, size_t bytes, const char *call)
{
    ensure_init();
    if (fn == NULL)
        return CUDA_ERROR_NOT_INITIALIZED;
    if (dptr == NULL)
        return ((alloc_fn)fn)(dptr, bytes);
    struct alloc_args a = {fn, dptr, bytes, 0, NULL};
    return counted_alloc(active ? current_device() : -1, bytes, call, CUDA_ERROR_OUT_OF_MEMORY,
                         call_alloc, &a, M_PTR, dptr);
}

API CUresult cuMemAlloc_v2(CUdeviceptr *dptr, size_t bytes)
{
    ensure_init();
    return plain_alloc(real_cuMemAlloc_v2, dptr, bytes, "cuMemAlloc");
}

static CUresult call_managed(void *a)
{
    struct alloc_args *x = a;
    return ((CUresult(*)(CUdeviceptr *, size_t, unsigned int))x->fn)(x->dptr, x->bytes, x->flags);
}

/* Managed memory is counted where it is made: it may all move to the GPU. */
API CUresult cuMemAllocManaged(CUdeviceptr *dptr, size_t bytes, unsigned int flags)
{
    ensure_init();
    if (real_cuMemAllocManaged == NULL)
        return CUDA_ERROR_NOT_INITIALIZED;
    struct alloc_args a = {real_cuMemAllocManaged, dptr, bytes, flags, NULL};
    if (dptr == NULL)
        return call_managed(&a);
    return counted_alloc(active ? current_device() : -1, bytes, "cuMemAllocManaged",
                         CUDA_ERROR_OUT_OF_MEMORY, call_managed, &a, M_PTR, dptr);
}

/* The pitch is known only afterwards, so the most the driver can pad each
 * row to is taken first (PITCH_ALIGN_MAX) and what it did not use given
 * back: the GPU never holds a byte over the limit. A driver padding more
 * than that is caught afterwards: the allocation is freed if the rest
 * does not fit. */
API CUresult cuMemAllocPitch_v2(CUdeviceptr *dptr, size_t *pitch, size_t width, size_t height,
                                unsigned int elem)
{
    ensure_init();
    typedef CUresult (*fn)(CUdeviceptr *, size_t *, size_t, size_t, unsigned int);
    if (real_cuMemAllocPitch_v2 == NULL)
        return CUDA_ERROR_NOT_INITIALIZED;
    int dev = active ? current_device() : -1;
    if (!has_limit(dev) || dptr == NULL || pitch == NULL)
        return REAL(cuMemAllocPitch_v2, fn)(dptr, pitch, width, height, elem);
    uint64_t row, bound;
    if (__builtin_add_overflow((uint64_t)width, PITCH_ALIGN_MAX - 1, &row) ||
        __builtin_mul_overflow(row / PITCH_ALIGN_MAX * PITCH_ALIGN_MAX, (uint64_t)height,
                               &bound)) {
        say(__atomic_exchange_n(&told_pitch, true, __ATOMIC_RELAXED) ? 2 : 1,
            "cuMemAllocPitch of %zu x %zu bytes refused with CUDA_ERROR_INVALID_VALUE: "
            "more than 2^64 bytes",
            width, height);
        return CUDA_ERROR_INVALID_VALUE;
    }
    char call[128];
    snprintf(call, sizeof call, "cuMemAllocPitch of %zu x %zu bytes (rows padded to %u)", width,
             height, PITCH_ALIGN_MAX);
    if (!take(dev, bound, call))
        return CUDA_ERROR_OUT_OF_MEMORY;
    CUresult r = REAL(cuMemAllocPitch_v2, fn)(dptr, pitch, width, height, elem);
    if (r != CUDA_SUCCESS) {
        give(dev, bound);
        return r;
    }
    uint64_t bytes;
    if (__builtin_mul_overflow((uint64_t)*pitch, (uint64_t)height, &bytes))
        bytes = UINT64_MAX;
    if (bytes > bound && !take(dev, bytes - bound, call)) {
        CUresult (*rfree)(CUdeviceptr) = (CUresult(*)(CUdeviceptr))real_cuMemFree_v2;
        if (rfree)
            rfree(*dptr);
        give(dev, bound);
        return CUDA_ERROR_OUT_OF_MEMORY;
    }
    if (bytes < bound)
        give(dev, bound - bytes);
    remember(M_PTR, *dptr, dev, bytes);
    return CUDA_SUCCESS;
}

/* The legacy 32-bit cuMemAlloc: on a device with a limit it is refused,
 * said once, rather than counted apart from everything else. */
API CUresult cuMemAlloc(unsigned int *dptr, unsigned int bytes)
{
    ensure_init();
    if (real_cuMemAlloc == NULL)
        return CUDA_ERROR_NOT_INITIALIZED;
    int dev = active ? current_device() : -1;
    if (has_limit(dev)) {
        say(__atomic_exchange_n(&told_legacy, true, __ATOMIC_RELAXED) ? 2 : 1,
            "the legacy cuMemAlloc (32-bit pointers) of %u bytes on device %d refused with "
            "CUDA_ERROR_NOT_SUPPORTED: it has a memory limit",
            bytes, dev);
        return CUDA_ERROR_NOT_SUPPORTED;
    }
    return ((CUresult(*)(unsigned int *, unsigned int))real_cuMemAlloc)(dptr, bytes);
}

API CUresult cuMemFree_v2(CUdeviceptr ptr)
{
    ensure_init();
    if (real_cuMemFree_v2 == NULL)
        return CUDA_ERROR_NOT_INITIALIZED;
    CUresult r = ((CUresult(*)(CUdeviceptr))real_cuMemFree_v2)(ptr);
    if (r == CUDA_SUCCESS && active && ptr)
        forget(M_PTR, ptr);
    return r;
}

struct async_args {
    void (*fn)(void);
    CUdeviceptr *dptr;
    size_t bytes;
    CUmemoryPool pool;
    CUstream stream;
};

static CUresult call_async(void *a)
{
    struct async_args *x = a;
    return ((CUresult(*)(CUdeviceptr *, size_t, CUstream))x->fn)(x->dptr, x->bytes, x->stream);
}

static CUresult call_pool(void *a)
{
    struct async_args *x = a;
    return ((CUresult(*)(CUdeviceptr *, size_t, CUmemoryPool, CUstream))x->fn)(
        x->dptr, x->bytes, x->pool, x->stream);
}

/* Ways to memory the count cannot follow: graph memory nodes (the graph
 * allocates each time it runs, into a pool the driver keeps) and green
 * contexts. On a device with a limit they are refused, said once. */
static CUresult unsupported(int dev, const char *what, CUresult r)
{
    say(__atomic_exchange_n(&told_unsupported, true, __ATOMIC_RELAXED) ? 2 : 1,
        "%s on device %d refused (error %d): device %d has a memory limit the interposer "
        "cannot hold it to",
        what, dev, (int)r, dev);
    return r;
}

API CUresult cuGraphAddMemAllocNode(CUgraphNode *node, CUgraph g, const CUgraphNode *deps,
                                    size_t ndeps, CUDA_MEM_ALLOC_NODE_PARAMS *p)
{
    ensure_init();
    if (real_cuGraphAddMemAllocNode == NULL)
        return CUDA_ERROR_NOT_INITIALIZED;
    if (active && p && has_limit(p->poolProps.location.id))
        return unsupported(p->poolProps.location.id, "cuGraphAddMemAllocNode",
                           CUDA_ERROR_NOT_SUPPORTED);
    return ((CUresult(*)(CUgraphNode *, CUgraph, const CUgraphNode *, size_t,
                         CUDA_MEM_ALLOC_NODE_PARAMS *))real_cuGraphAddMemAllocNode)(node, g, deps,
                                                                                    ndeps, p);
}

/* CUgraphNodeParams: the node type, then its parameters 16 bytes in. */
#define NODE_TYPE_MEM_ALLOC 10
static bool memory_node(const void *params, int *dev)
{
    int type = 0;
    CUDA_MEM_ALLOC_NODE_PARAMS alloc;
    if (!active || params == NULL)
        return false;
    memcpy(&type, params, sizeof type);
    memcpy(&alloc, (const char *)params + 16, sizeof alloc);
    *dev = alloc.poolProps.location.id;
    return type == NODE_TYPE_MEM_ALLOC && has_limit(*dev);
}

API CUresult cuGraphAddNode(CUgraphNode *node, CUgraph g, const CUgraphNode *deps, size_t ndeps,
                            void *params)
{
    ensure_init();
    int dev;
    if (real_cuGraphAddNode == NULL)
        return CUDA_ERROR_NOT_INITIALIZED;
    if (memory_node(params, &dev))
        return unsupported(dev, "cuGraphAddNode of a memory node", CUDA_ERROR_NOT_SUPPORTED);
    return ((CUresult(*)(CUgraphNode *, CUgraph, const CUgraphNode *, size_t,
                         void *))real_cuGraphAddNode)(node, g, deps, ndeps, params);
}

API CUresult cuGraphAddNode_v2(CUgraphNode *node, CUgraph g, const CUgraphNode *deps,
                               const void *edges, size_t ndeps, void *params)
{
    ensure_init();
    int dev;
    if (real_cuGraphAddNode_v2 == NULL)
        return CUDA_ERROR_NOT_INITIALIZED;
    if (memory_node(params, &dev))
        return unsupported(dev, "cuGraphAddNode of a memory node", CUDA_ERROR_NOT_SUPPORTED);
    return ((CUresult(*)(CUgraphNode *, CUgraph, const CUgraphNode *, const void *, size_t,
                         void *))real_cuGraphAddNode_v2)(node, g, deps, edges, ndeps, params);
}

API CUresult cuGreenCtxCreate(CUcontext *pctx, const void *desc, CUdevice dev, unsigned int flags)
{
    ensure_init();
    if (real_cuGreenCtxCreate == NULL)
        return CUDA_ERROR_NOT_INITIALIZED;
    if (active && has_limit(dev))
        return unsupported(dev, "cuGreenCtxCreate", CUDA_ERROR_NOT_SUPPORTED);
    return ((CUresult(*)(CUcontext *, const void *, CUdevice, unsigned int))real_cuGreenCtxCreate)(
        pctx, desc, dev, flags);
}

/* Remembers which device's memory pool hands out (dev -1: not a GPU's). */
static void pool_on(CUmemoryPool pool, int dev)
{
    int old_dev;
    uint64_t none;
    pthread_mutex_lock(&lock);
    while (glc_map_take(&allocations, M_POOL, (uint64_t)(uintptr_t)pool, &old_dev, &none))
        ;
    int r = glc_map_put(&allocations, M_POOL, (uint64_t)(uintptr_t)pool, dev, 0);
    pthread_mutex_unlock(&lock);
    if (r < 0)
        say(0, "out of memory tracking a memory pool; its allocations count on the current "
               "device");
}

/* The device a pool allocates on: as recorded when the pool was made or
 * handed out, else the current one. */
static int pool_device(CUmemoryPool pool)
{
    int dev;
    uint64_t none;
    pthread_mutex_lock(&lock);
    bool known = glc_map_get(&allocations, M_POOL, (uint64_t)(uintptr_t)pool, &dev, &none);
    pthread_mutex_unlock(&lock);
    return known ? dev : current_device();
}

/* Stream-ordered allocations are counted when asked for and credited
 * when freed (the pool may keep the memory a while longer); those from a
 * pool count on the pool's device, whichever is current. */
static CUresult async_alloc(void (*fn)(void), bool from_pool, CUdeviceptr *dptr, size_t bytes,
                            CUmemoryPool pool, CUstream s)
{
    if (fn == NULL)
        return CUDA_ERROR_NOT_INITIALIZED;
    struct async_args a = {fn, dptr, bytes, pool, s};
    CUresult (*call)(void *) = from_pool ? call_pool : call_async;
    if (dptr == NULL)
        return call(&a);
    int dev = !active ? -1 : from_pool ? pool_device(pool) : current_device();
    int status = CU_STREAM_CAPTURE_STATUS_NONE;
    if (has_limit(dev) && (real_is_capturing == NULL || real_is_capturing(s, &status) != CUDA_SUCCESS ||
                           status != CU_STREAM_CAPTURE_STATUS_NONE))
        return unsupported(dev, from_pool ? "cuMemAllocFromPoolAsync in a stream capture"
                                          : "cuMemAllocAsync in a stream capture",
                           CUDA_ERROR_STREAM_CAPTURE_UNSUPPORTED);
    return counted_alloc(dev, bytes,
                         from_pool ? "cuMemAllocFromPoolAsync" : "cuMemAllocAsync",
                         CUDA_ERROR_OUT_OF_MEMORY, call, &a, M_PTR, dptr);
}

API CUresult cuMemAllocAsync(CUdeviceptr *dptr, size_t bytes, CUstream s)
{
    ensure_init();
    return async_alloc(real_cuMemAllocAsync, false, dptr, bytes, NULL, s);
}

API CUresult cuMemAllocAsync_ptsz(CUdeviceptr *dptr, size_t bytes, CUstream s)
{
    ensure_init();
    return async_alloc(real_cuMemAllocAsync_ptsz, false, dptr, bytes, NULL, s);
}

API CUresult cuMemAllocFromPoolAsync(CUdeviceptr *dptr, size_t bytes, CUmemoryPool pool,
                                     CUstream s)
{
    ensure_init();
    return async_alloc(real_cuMemAllocFromPoolAsync, true, dptr, bytes, pool, s);
}

API CUresult cuMemAllocFromPoolAsync_ptsz(CUdeviceptr *dptr, size_t bytes, CUmemoryPool pool,
                                          CUstream s)
{
    ensure_init();
    return async_alloc(real_cuMemAllocFromPoolAsync_ptsz, true, dptr, bytes, pool, s);
}

API CUresult cuMemPoolCreate(CUmemoryPool *pool, const CUmemPoolProps *props)
{
    ensure_init();
    if (real_cuMemPoolCreate == NULL)
        return CUDA_ERROR_NOT_INITIALIZED;
    CUresult r = ((CUresult(*)(CUmemoryPool *, const CUmemPoolProps *))real_cuMemPoolCreate)(
        pool, props);
    if (r == CUDA_SUCCESS && active)
        pool_on(*pool, props->location.type == CU_MEM_LOCATION_TYPE_DEVICE ? props->location.id
                                                                             : -1);
    return r;
}

/* The pools a device hands out allocate on that device. */
static CUresult device_pool(void (*fn)(void), CUmemoryPool *pool, CUdevice dev)
{
    if (fn == NULL)
        return CUDA_ERROR_NOT_INITIALIZED;
    CUresult r = ((CUresult(*)(CUmemoryPool *, CUdevice))fn)(pool, dev);
    if (r == CUDA_SUCCESS && active)
        pool_on(*pool, dev);
    return r;
}

API CUresult cuDeviceGetDefaultMemPool(CUmemoryPool *pool, CUdevice dev)
{
    ensure_init();
    return device_pool(real_cuDeviceGetDefaultMemPool, pool, dev);
}

API CUresult cuDeviceGetMemPool(CUmemoryPool *pool, CUdevice dev)
{
    ensure_init();
    return device_pool(real_cuDeviceGetMemPool, pool, dev);
}

/* The driver takes only a pool of dev's memory here. */
API CUresult cuDeviceSetMemPool(CUdevice dev, CUmemoryPool pool)
{
    ensure_init();
    if (real_cuDeviceSetMemPool == NULL)
        return CUDA_ERROR_NOT_INITIALIZED;
    CUresult r = ((CUresult(*)(CUdevice, CUmemoryPool))real_cuDeviceSetMemPool)(dev, pool);
    if (r == CUDA_SUCCESS && active)
        pool_on(pool, dev);
    return r;
}

static CUresult free_async(void (*fn)(void), CUdeviceptr ptr, CUstream s)
{
    if (fn == NULL)
        return CUDA_ERROR_NOT_INITIALIZED;
    CUresult r = ((CUresult(*)(CUdeviceptr, CUstream))fn)(ptr, s);
    if (r == CUDA_SUCCESS && active)
        forget(M_PTR, ptr);
    return r;
}

API CUresult cuMemFreeAsync(CUdeviceptr ptr, CUstream s)
{
    ensure_init();
    return free_async(real_cuMemFreeAsync, ptr, s);
}

API CUresult cuMemFreeAsync_ptsz(CUdeviceptr ptr, CUstream s)
{
    ensure_init();
    return free_async(real_cuMemFreeAsync_ptsz, ptr, s);
}

/* Element bytes of an array format; formats this file does not know are
 * counted at 16 bytes, more than any format takes. */
static uint64_t element_bytes(int format)
{
    switch (format) {
    case 0x01: case 0x08: return 1;
    case 0x02: case 0x09: case 0x10: return 2;
    case 0x03: case 0x0a: case 0x20: return 4;
    }
    return 16;
}

struct array_args {
    void (*fn)(void);
    void *out;
    const void *desc;
    unsigned int levels;
};

static CUresult call_array(void *a)
{
    struct array_args *x = a;
    return ((CUresult(*)(void *, const void *))x->fn)(x->out, x->desc);
}

static CUresult call_mipmap(void *a)
{
    struct array_args *x = a;
    return ((CUresult(*)(void *, const void *, unsigned int))x->fn)(x->out, x->desc, x->levels);
}

static CUresult array_alloc(void (*fn)(void), void *out, const void *desc, uint64_t bytes,
                            unsigned int levels, enum map_kind kind, const char *call)
{
    if (fn == NULL)
        return CUDA_ERROR_NOT_INITIALIZED;
    struct array_args a = {fn, out, desc, levels};
    CUresult (*c)(void *) = kind == M_MIPMAP ? call_mipmap : call_array;
    if (out == NULL || desc == NULL)
        return c(&a);
    /* The handle is written to *out; its bits are the key. */
    return counted_alloc(active ? current_device() : -1, bytes, call, CUDA_ERROR_OUT_OF_MEMORY, c,
                         &a, kind, out);
}

API CUresult cuArrayCreate_v2(CUarray *arr, const CUDA_ARRAY_DESCRIPTOR *d)
{
    ensure_init();
    uint64_t bytes = d ? glc_array_bytes(d->Width, d->Height, 1, element_bytes(d->Format),
                                         d->NumChannels, 1)
                       : 0;
    return array_alloc(real_cuArrayCreate_v2, arr, d, bytes, 1, M_ARRAY, "cuArrayCreate");
}

API CUresult cuArray3DCreate_v2(CUarray *arr, const CUDA_ARRAY3D_DESCRIPTOR *d)
{
    ensure_init();
    uint64_t bytes = d ? glc_array_bytes(d->Width, d->Height, d->Depth, element_bytes(d->Format),
                                         d->NumChannels, 1)
                       : 0;
    return array_alloc(real_cuArray3DCreate_v2, arr, d, bytes, 1, M_ARRAY, "cuArray3DCreate");
}

API CUresult cuMipmappedArrayCreate(CUmipmappedArray *arr, const CUDA_ARRAY3D_DESCRIPTOR *d,
                                    unsigned int levels)
{
    ensure_init();
    uint64_t bytes = d ? glc_array_bytes(d->Width, d->Height, d->Depth, element_bytes(d->Format),
                                         d->NumChannels, levels)
                       : 0;
    return array_alloc(real_cuMipmappedArrayCreate, arr, d, bytes, levels, M_MIPMAP,
                       "cuMipmappedArrayCreate");
}

static CUresult destroy_handle(void (*fn)(void), void *h, enum map_kind kind)
{
    if (fn == NULL)
        return CUDA_ERROR_NOT_INITIALIZED;
    CUresult r = ((CUresult(*)(void *))fn)(h);
    if (r == CUDA_SUCCESS && active)
        forget(kind, (uint64_t)(uintptr_t)h);
    return r;
}

API CUresult cuArrayDestroy(CUarray arr)
{
    ensure_init();
    return destroy_handle(real_cuArrayDestroy, arr, M_ARRAY);
}

API CUresult cuMipmappedArrayDestroy(CUmipmappedArray arr)
{
    ensure_init();
    return destroy_handle(real_cuMipmappedArrayDestroy, arr, M_MIPMAP);
}

API CUresult cuMemPoolDestroy(CUmemoryPool pool)
{
    ensure_init();
    return destroy_handle(real_cuMemPoolDestroy, pool, M_POOL);
}

struct vmm_args {
    CUmemGenericAllocationHandle *h;
    size_t bytes;
    const CUmemAllocationProp *prop;
    unsigned long long flags;
};

static CUresult call_vmm(void *a)
{
    struct vmm_args *x = a;
    return ((CUresult(*)(CUmemGenericAllocationHandle *, size_t, const CUmemAllocationProp *,
                         unsigned long long))real_cuMemCreate)(x->h, x->bytes, x->prop, x->flags);
}

/* Physical memory of the virtual memory API, counted on the device it is
 * made on. */
API CUresult cuMemCreate(CUmemGenericAllocationHandle *h, size_t bytes,
                         const CUmemAllocationProp *prop, unsigned long long flags)
{
    ensure_init();
    if (real_cuMemCreate == NULL)
        return CUDA_ERROR_NOT_INITIALIZED;
    struct vmm_args a = {h, bytes, prop, flags};
    if (h == NULL || prop == NULL || prop->location.type != CU_MEM_LOCATION_TYPE_DEVICE)
        return call_vmm(&a);
    return counted_alloc(active ? prop->location.id : -1, bytes, "cuMemCreate",
                         CUDA_ERROR_OUT_OF_MEMORY, call_vmm, &a, M_VMM, h);
}

/* The driver keeps a released handle's memory while it is mapped: it is
 * credited when its last mapping goes, not before. */
API CUresult cuMemRelease(CUmemGenericAllocationHandle h)
{
    ensure_init();
    if (real_cuMemRelease == NULL)
        return CUDA_ERROR_NOT_INITIALIZED;
    CUresult r = ((CUresult(*)(CUmemGenericAllocationHandle))real_cuMemRelease)(h);
    if (r != CUDA_SUCCESS || !active)
        return r;
    int dev;
    uint64_t maps = 0;
    pthread_mutex_lock(&lock);
    bool mapped = glc_map_get(&allocations, M_MAPS, h, &dev, &maps) && maps > 0;
    if (mapped && glc_map_put(&allocations, M_MAPS, h, 1, maps) < 0)
        mapped = true; /* cannot mark it: it stays counted, never credited early */
    pthread_mutex_unlock(&lock);
    if (!mapped)
        forget(M_VMM, h);
    return r;
}

API CUresult cuMemMap(CUdeviceptr ptr, size_t bytes, size_t offset, CUmemGenericAllocationHandle h,
                      unsigned long long flags)
{
    ensure_init();
    if (real_cuMemMap == NULL)
        return CUDA_ERROR_NOT_INITIALIZED;
    CUresult r = ((CUresult(*)(CUdeviceptr, size_t, size_t, CUmemGenericAllocationHandle,
                               unsigned long long))real_cuMemMap)(ptr, bytes, offset, h, flags);
    if (r != CUDA_SUCCESS || !active)
        return r;
    int dev = 0;
    uint64_t maps = 0, none;
    pthread_mutex_lock(&lock);
    glc_map_get(&allocations, M_MAPS, h, &dev, &maps);
    /* a handle it does not count (no limit, made before) needs no book */
    if (glc_map_get(&allocations, M_VMM, h, &dev, &none) &&
        (glc_map_put(&allocations, M_MAPS, h, 0, maps + 1) < 0 ||
         glc_map_put(&allocations, M_MAPPING, ptr, 0, h) < 0 ||
         glc_map_put(&allocations, M_MAPLEN, ptr, 0, bytes) < 0))
        say(0, "out of memory tracking a mapping; its handle stays counted");
    pthread_mutex_unlock(&lock);
    return r;
}

/* Unmapping may cover several mappings, one after the other. */
API CUresult cuMemUnmap(CUdeviceptr ptr, size_t bytes)
{
    ensure_init();
    if (real_cuMemUnmap == NULL)
        return CUDA_ERROR_NOT_INITIALIZED;
    CUresult r = ((CUresult(*)(CUdeviceptr, size_t))real_cuMemUnmap)(ptr, bytes);
    if (r != CUDA_SUCCESS || !active)
        return r;
    for (uint64_t at = ptr, end = ptr + bytes; at < end;) {
        int dev, released = 0;
        uint64_t h, len = 0, maps = 0;
        pthread_mutex_lock(&lock);
        bool found = glc_map_take(&allocations, M_MAPPING, at, &dev, &h) &&
                     glc_map_take(&allocations, M_MAPLEN, at, &dev, &len);
        bool last = found && glc_map_take(&allocations, M_MAPS, h, &released, &maps) &&
                    maps <= 1 && released;
        if (found && !last && maps > 1)
            glc_map_put(&allocations, M_MAPS, h, released, maps - 1);
        pthread_mutex_unlock(&lock);
        if (last)
            forget(M_VMM, h);
        if (!found || len == 0)
            break;
        at += len;
    }
    return r;
}

/* ---- contexts: each holds driver memory no allocation call shows ---- */

struct ctx_args {
    void (*fn)(void);
    CUcontext *pctx;
    unsigned int flags;
    CUdevice dev;
    const void *params;
    int count;
};

static CUresult call_ctx_v2(void *a)
{
    struct ctx_args *x = a;
    return ((CUresult(*)(CUcontext *, unsigned int, CUdevice))x->fn)(x->pctx, x->flags, x->dev);
}

static CUresult call_ctx_v3(void *a)
{
    struct ctx_args *x = a;
    return ((CUresult(*)(CUcontext *, const void *, int, unsigned int, CUdevice))x->fn)(
        x->pctx, x->params, x->count, x->flags, x->dev);
}

static CUresult call_ctx_v4(void *a)
{
    struct ctx_args *x = a;
    return ((CUresult(*)(CUcontext *, const void *, unsigned int, CUdevice))x->fn)(
        x->pctx, x->params, x->flags, x->dev);
}

/* Every form of cuCtxCreate makes a context of its own on dev, which
 * holds context_bytes of it. */
static CUresult counted_ctx(struct ctx_args *a, CUresult (*call)(void *), const char *name)
{
    if (a->fn == NULL)
        return CUDA_ERROR_NOT_INITIALIZED;
    if (!active || !has_limit(a->dev) || a->pctx == NULL)
        return call(a);
    if (!take(a->dev, context_bytes, name))
        return CUDA_ERROR_OUT_OF_MEMORY;
    CUresult r = call(a);
    if (r != CUDA_SUCCESS)
        give(a->dev, context_bytes);
    else
        remember(M_CTX, (uint64_t)(uintptr_t)*a->pctx, a->dev, context_bytes);
    return r;
}

API CUresult cuCtxCreate_v2(CUcontext *pctx, unsigned int flags, CUdevice dev)
{
    ensure_init();
    struct ctx_args a = {real_cuCtxCreate_v2, pctx, flags, dev, NULL, 0};
    return counted_ctx(&a, call_ctx_v2, "cuCtxCreate");
}

API CUresult cuCtxCreate(CUcontext *pctx, unsigned int flags, CUdevice dev)
{
    ensure_init();
    struct ctx_args a = {real_cuCtxCreate, pctx, flags, dev, NULL, 0};
    return counted_ctx(&a, call_ctx_v2, "cuCtxCreate");
}

API CUresult cuCtxCreate_v3(CUcontext *pctx, const void *affinity, int count, unsigned int flags,
                            CUdevice dev)
{
    ensure_init();
    struct ctx_args a = {real_cuCtxCreate_v3, pctx, flags, dev, affinity, count};
    return counted_ctx(&a, call_ctx_v3, "cuCtxCreate_v3");
}

API CUresult cuCtxCreate_v4(CUcontext *pctx, const void *params, unsigned int flags, CUdevice dev)
{
    ensure_init();
    struct ctx_args a = {real_cuCtxCreate_v4, pctx, flags, dev, params, 0};
    return counted_ctx(&a, call_ctx_v4, "cuCtxCreate_v4");
}

API CUresult cuCtxDestroy(CUcontext ctx)
{
    ensure_init();
    return destroy_handle(real_cuCtxDestroy, ctx, M_CTX);
}

API CUresult cuCtxDestroy_v2(CUcontext ctx)
{
    ensure_init();
    return destroy_handle(real_cuCtxDestroy_v2, ctx, M_CTX);
}

API CUresult cuDevicePrimaryCtxRetain(CUcontext *pctx, CUdevice dev)
{
    ensure_init();
    typedef CUresult (*fn)(CUcontext *, CUdevice);
    if (real_cuDevicePrimaryCtxRetain == NULL)
        return CUDA_ERROR_NOT_INITIALIZED;
    if (!active || !has_limit(dev) || pctx == NULL)
        return REAL(cuDevicePrimaryCtxRetain, fn)(pctx, dev);
    pthread_mutex_lock(&primary_lock);
    bool first = devs[dev].primary_refs == 0;
    CUresult r = CUDA_ERROR_OUT_OF_MEMORY;
    if (!first || take(dev, context_bytes, "cuDevicePrimaryCtxRetain")) {
        r = REAL(cuDevicePrimaryCtxRetain, fn)(pctx, dev);
        if (r == CUDA_SUCCESS)
            devs[dev].primary_refs++;
        else if (first)
            give(dev, context_bytes);
    }
    pthread_mutex_unlock(&primary_lock);
    return r;
}

static CUresult primary_release(void (*fn)(void), CUdevice dev)
{
    if (fn == NULL)
        return CUDA_ERROR_NOT_INITIALIZED;
    if (!active || !has_limit(dev))
        return ((CUresult(*)(CUdevice))fn)(dev);
    pthread_mutex_lock(&primary_lock);
    CUresult r = ((CUresult(*)(CUdevice))fn)(dev);
    if (r == CUDA_SUCCESS && devs[dev].primary_refs > 0 && --devs[dev].primary_refs == 0)
        give(dev, context_bytes);
    pthread_mutex_unlock(&primary_lock);
    return r;
}

API CUresult cuDevicePrimaryCtxRelease_v2(CUdevice dev)
{
    ensure_init();
    return primary_release(real_cuDevicePrimaryCtxRelease_v2, dev);
}

API CUresult cuDevicePrimaryCtxRelease(CUdevice dev)
{
    ensure_init();
    return primary_release(real_cuDevicePrimaryCtxRelease, dev);
}

/* The stack (per resident thread: times the GPU's threads), printf FIFO
 * and malloc heap limits take device memory when raised. Under a memory
 * limit a raise is refused, said once; setting one lower or as it is
 * passes. */
#define CU_LIMIT_HEAP_SIZE 2
API CUresult cuCtxSetLimit(int limit, size_t value)
{
    ensure_init();
    if (real_cuCtxSetLimit == NULL)
        return CUDA_ERROR_NOT_INITIALIZED;
    int dev = active ? current_device() : -1;
    size_t now = 0;
    if (limit >= 0 && limit <= CU_LIMIT_HEAP_SIZE && has_limit(dev) &&
        (real_ctx_get_limit == NULL || real_ctx_get_limit(&now, limit) != CUDA_SUCCESS ||
         value > now)) {
        say(__atomic_exchange_n(&told_set_limit, true, __ATOMIC_RELAXED) ? 2 : 1,
            "cuCtxSetLimit(%d, %zu) on device %d refused with CUDA_ERROR_NOT_SUPPORTED: raising "
            "the stack, printf FIFO or heap takes device memory outside the memory limit",
            limit, value, dev);
        return CUDA_ERROR_NOT_SUPPORTED;
    }
    return ((CUresult(*)(int, size_t))real_cuCtxSetLimit)(limit, value);
}

/* ---- the views: the limit is the total, the budget left is free ---- */

static void clamp(int dev, uint64_t *free_bytes, uint64_t *total)
{
    struct glc_file *f = has_limit(dev) ? device_file(dev) : NULL;
    if (f == NULL)
        return;
    uint64_t used = glc_used(f), limit = devs[dev].limit;
    uint64_t left = used < limit ? limit - used : 0;
    *total = limit;
    if (*free_bytes > left)
        *free_bytes = left;
}

API CUresult cuMemGetInfo_v2(size_t *free_bytes, size_t *total)
{
    ensure_init();
    if (real_cuMemGetInfo_v2 == NULL)
        return CUDA_ERROR_NOT_INITIALIZED;
    CUresult r = ((CUresult(*)(size_t *, size_t *))real_cuMemGetInfo_v2)(free_bytes, total);
    if (r == CUDA_SUCCESS && active) {
        uint64_t f = *free_bytes, t = *total;
        clamp(current_device(), &f, &t);
        *free_bytes = (size_t)f;
        *total = (size_t)t;
    }
    return r;
}

/* The real NVML functions: from the library linked or opened before, or
 * as dlsym handed them out. */
static void *real_nvml_mem, *real_nvml_mem_v2, *real_nvml_uuid;

static void *nvml_real(void **slot, const char *name)
{
    void *r = __atomic_load_n(slot, __ATOMIC_ACQUIRE);
    if (r == NULL) {
        void *h = real_dlopen ? real_dlopen("libnvidia-ml.so.1", RTLD_NOW | RTLD_NOLOAD) : NULL;
        r = h ? real_dlsym(h, name) : real_dlsym(RTLD_NEXT, name);
        if (h)
            dlclose(h);
        __atomic_store_n(slot, r, __ATOMIC_RELEASE);
    }
    return r;
}

/* The CUDA ordinal of an NVML device, by UUID; -1 when not visible. */
static int nvml_ordinal(nvmlDevice_t dev)
{
    nvmlReturn_t (*get_uuid)(nvmlDevice_t, char *, unsigned int) =
        (nvmlReturn_t(*)(nvmlDevice_t, char *, unsigned int))nvml_real(&real_nvml_uuid,
                                                                        "nvmlDeviceGetUUID");
    char uuid[96];
    int count = 0;
    if (get_uuid == NULL || get_uuid(dev, uuid, sizeof uuid) != NVML_SUCCESS || real_init == NULL ||
        real_init(0) != CUDA_SUCCESS || real_count == NULL || real_count(&count) != CUDA_SUCCESS)
        return -1;
    for (int d = 0; d < count && d < MAX_DEVS; d++) {
        if (!has_limit(d) || device_file(d) == NULL)
            continue;
        if (strcmp(devs[d].uuid, uuid) == 0)
            return d;
    }
    return -1;
}

/* NVML's numbers for dev, clamped to its limit; true when they changed. */
static bool clamp_nvml(nvmlDevice_t dev, unsigned long long *total, unsigned long long *free_b,
                       unsigned long long *used)
{
    uint64_t f = *free_b, t = *total;
    clamp(nvml_ordinal(dev), &f, &t);
    if (t == *total)
        return false;
    *total = t;
    *free_b = f;
    *used = t - f;
    return true;
}

API nvmlReturn_t nvmlDeviceGetMemoryInfo(nvmlDevice_t dev, nvmlMemory_t *mem)
{
    ensure_init();
    nvmlReturn_t (*fn)(nvmlDevice_t, nvmlMemory_t *) = (nvmlReturn_t(*)(
        nvmlDevice_t, nvmlMemory_t *))nvml_real(&real_nvml_mem, "nvmlDeviceGetMemoryInfo");
    if (fn == NULL)
        return NVML_ERROR_FUNCTION_NOT_FOUND;
    nvmlReturn_t r = fn(dev, mem);
    if (r == NVML_SUCCESS && active)
        clamp_nvml(dev, &mem->total, &mem->free, &mem->used);
    return r;
}

API nvmlReturn_t nvmlDeviceGetMemoryInfo_v2(nvmlDevice_t dev, nvmlMemory_v2_t *mem)
{
    ensure_init();
    nvmlReturn_t (*fn)(nvmlDevice_t, nvmlMemory_v2_t *) = (nvmlReturn_t(*)(
        nvmlDevice_t, nvmlMemory_v2_t *))nvml_real(&real_nvml_mem_v2, "nvmlDeviceGetMemoryInfo_v2");
    if (fn == NULL)
        return NVML_ERROR_FUNCTION_NOT_FOUND;
    nvmlReturn_t r = fn(dev, mem);
    if (r == NVML_SUCCESS && active && clamp_nvml(dev, &mem->total, &mem->free, &mem->used))
        mem->reserved = 0;
    return r;
}

/* ---- compute share ----
 *
 * A launch is charged the GPU time it takes, from a token bucket filled
 * at the share of wall time and shared by the container's processes. The
 * time of a kernel (per thread) or a graph is measured with a pair of
 * events on its first launches and on every 64th after, and predicted
 * from that in between. */

/* What a kernel or graph exec costs; a fixed table, an entry per handle
 * address (a new handle in a taken entry replaces it). */
struct kernel_cost {
    uint64_t key;
    double ns_per_unit;
    uint64_t launches;
    bool graph;
};

static struct kernel_cost costs[KERNEL_TABLE];

static uint64_t now_ns(void)
{
    struct timespec t;
    clock_gettime(CLOCK_MONOTONIC, &t);
    return (uint64_t)t.tv_sec * 1000000000ULL + (uint64_t)t.tv_nsec;
}

static void pause_ns(uint64_t ns)
{
    struct timespec t = {(time_t)(ns / 1000000000ULL), (long)(ns % 1000000000ULL)};
    while (nanosleep(&t, &t) < 0 && errno == EINTR)
        ;
}

/* Runs launch, charging dev's bucket; measure decides whether this launch
 * is timed with events. */
static CUresult throttled(int dev, uint64_t key, bool graph, uint64_t units, CUstream stream,
                          CUresult (*launch)(void *), void *args)
{
    struct glc_file *f = device_file(dev);
    if (f == NULL)
        return CUDA_ERROR_NOT_PERMITTED;
    unsigned int share = devs[dev].share;
    pthread_mutex_lock(&lock);
    struct kernel_cost *c = &costs[(key >> 4) % KERNEL_TABLE];
    if (c->key != key || c->graph != graph)
        *c = (struct kernel_cost){key, 0, 0, graph};
    bool measure = c->launches < 3 || c->launches % 64 == 0;
    double predicted = c->ns_per_unit * (double)units;
    c->launches++;
    pthread_mutex_unlock(&lock);

    uint64_t wait = glc_charge(f, share, measure ? 0 : (uint64_t)predicted,
                               BURST_NS_PER_PCT * share / 100, now_ns());
    if (wait)
        pause_ns(wait);
    CUevent e0 = NULL, e1 = NULL;
    uint64_t host0 = measure ? now_ns() : 0;
    if (measure && (real_event_create == NULL || real_event_create(&e0, 0) != CUDA_SUCCESS ||
                    real_event_create(&e1, 0) != CUDA_SUCCESS ||
                    real_event_record(e0, stream) != CUDA_SUCCESS))
        measure = false;
    CUresult r = launch(args);
    float ms = 0;
    uint64_t host_gap = 0;
    if (measure && r == CUDA_SUCCESS && real_event_record(e1, stream) == CUDA_SUCCESS &&
        (host_gap = now_ns() - host0, real_event_sync(e1) == CUDA_SUCCESS) &&
        real_elapsed(&ms, e0, e1) == CUDA_SUCCESS) {
        /* On an idle GPU the events also time the launch call itself: that
         * is the host's time, not the kernel's. */
        uint64_t took = (uint64_t)((double)ms * 1e6);
        took = took > host_gap ? took - host_gap : 0;
        glc_charge(f, share, took, BURST_NS_PER_PCT * share / 100, now_ns());
        pthread_mutex_lock(&lock);
        double per = (double)took / (double)(units ? units : 1);
        if (c->key == key)
            c->ns_per_unit = c->ns_per_unit == 0 ? per : 0.75 * c->ns_per_unit + 0.25 * per;
        pthread_mutex_unlock(&lock);
    }
    if (e0)
        real_event_destroy(e0);
    if (e1)
        real_event_destroy(e1);
    return r;
}

static bool shared_device(int *dev)
{
    if (!active)
        return false;
    *dev = current_device();
    if (*dev < 0 || *dev >= MAX_DEVS)
        return false;
    ensure_matched();
    return devs[*dev].share != 0;
}

struct launch_args {
    void (*fn)(void);
    CUfunction f;
    unsigned int g[3], b[3], shmem;
    CUstream s;
    void **params, **extra;
    const CUlaunchConfig *cfg;
    CUgraphExec exec;
};

static CUresult call_kernel(void *a)
{
    struct launch_args *x = a;
    return ((CUresult(*)(CUfunction, unsigned int, unsigned int, unsigned int, unsigned int,
                         unsigned int, unsigned int, unsigned int, CUstream, void **,
                         void **))x->fn)(x->f, x->g[0], x->g[1], x->g[2], x->b[0], x->b[1],
                                         x->b[2], x->shmem, x->s, x->params, x->extra);
}

static CUresult call_coop(void *a)
{
    struct launch_args *x = a;
    return ((CUresult(*)(CUfunction, unsigned int, unsigned int, unsigned int, unsigned int,
                         unsigned int, unsigned int, unsigned int, CUstream,
                         void **))x->fn)(x->f, x->g[0], x->g[1], x->g[2], x->b[0], x->b[1],
                                         x->b[2], x->shmem, x->s, x->params);
}

static CUresult call_ex(void *a)
{
    struct launch_args *x = a;
    return ((CUresult(*)(const CUlaunchConfig *, CUfunction, void **, void **))x->fn)(
        x->cfg, x->f, x->params, x->extra);
}

static CUresult call_graph(void *a)
{
    struct launch_args *x = a;
    return ((CUresult(*)(CUgraphExec, CUstream))x->fn)(x->exec, x->s);
}

static CUresult launch(struct launch_args *a, CUresult (*call)(void *), uint64_t key)
{
    int dev;
    if (a->fn == NULL)
        return CUDA_ERROR_NOT_INITIALIZED;
    if (!shared_device(&dev))
        return call(a);
    uint64_t units = (uint64_t)a->g[0] * a->g[1] * a->g[2] * a->b[0] * a->b[1] * a->b[2];
    return throttled(dev, key, a->exec != NULL, units, a->s, call, a);
}

/* A handle's address is reused once it is destroyed: what was measured
 * for it must not be charged to what comes next there. The functions of
 * an unloaded module are not known one by one: every kernel's cost goes. */
static void forget_costs(uint64_t key, bool graph)
{
    pthread_mutex_lock(&lock);
    for (size_t i = 0; i < KERNEL_TABLE; i++)
        if (costs[i].graph == graph && (!graph || costs[i].key == key))
            costs[i] = (struct kernel_cost){0};
    pthread_mutex_unlock(&lock);
}

API CUresult cuGraphExecDestroy(CUgraphExec exec)
{
    ensure_init();
    if (real_cuGraphExecDestroy == NULL)
        return CUDA_ERROR_NOT_INITIALIZED;
    CUresult r = ((CUresult(*)(CUgraphExec))real_cuGraphExecDestroy)(exec);
    if (r == CUDA_SUCCESS && active)
        forget_costs((uint64_t)(uintptr_t)exec, true);
    return r;
}

API CUresult cuModuleUnload(CUmodule mod)
{
    ensure_init();
    if (real_cuModuleUnload == NULL)
        return CUDA_ERROR_NOT_INITIALIZED;
    CUresult r = ((CUresult(*)(CUmodule))real_cuModuleUnload)(mod);
    if (r == CUDA_SUCCESS && active)
        forget_costs(0, false);
    return r;
}

#define KERNEL_HOOK(name, call)                                                                   \
    API CUresult name(CUfunction f, unsigned int gx, unsigned int gy, unsigned int gz,            \
                      unsigned int bx, unsigned int by, unsigned int bz, unsigned int shmem,      \
                      CUstream s, void **params, void **extra)                                    \
    {                                                                                             \
        ensure_init();                                                                            \
        struct launch_args a = {real_##name, f, {gx, gy, gz}, {bx, by, bz}, shmem, s, params,     \
                                extra, NULL, NULL};                                               \
        return launch(&a, call, (uint64_t)(uintptr_t)f);                                          \
    }

KERNEL_HOOK(cuLaunchKernel, call_kernel)
KERNEL_HOOK(cuLaunchKernel_ptsz, call_kernel)

#define COOP_HOOK(name)                                                                           \
    API CUresult name(CUfunction f, unsigned int gx, unsigned int gy, unsigned int gz,            \
                      unsigned int bx, unsigned int by, unsigned int bz, unsigned int shmem,      \
                      CUstream s, void **params)                                                  \
    {                                                                                             \
        ensure_init();                                                                            \
        struct launch_args a = {real_##name, f, {gx, gy, gz}, {bx, by, bz}, shmem, s, params,     \
                                NULL, NULL, NULL};                                                \
        return launch(&a, call_coop, (uint64_t)(uintptr_t)f);                                     \
    }

COOP_HOOK(cuLaunchCooperativeKernel)
COOP_HOOK(cuLaunchCooperativeKernel_ptsz)

#define EX_HOOK(name)                                                                             \
    API CUresult name(const CUlaunchConfig *cfg, CUfunction f, void **params, void **extra)       \
    {                                                                                             \
        ensure_init();                                                                            \
        struct launch_args a = {real_##name, f, {1, 1, 1}, {1, 1, 1}, 0, NULL, params, extra,     \
                                cfg, NULL};                                                       \
        if (cfg) {                                                                                \
            a.g[0] = cfg->gridDimX, a.g[1] = cfg->gridDimY, a.g[2] = cfg->gridDimZ;               \
            a.b[0] = cfg->blockDimX, a.b[1] = cfg->blockDimY, a.b[2] = cfg->blockDimZ;            \
            a.s = cfg->hStream;                                                                   \
        }                                                                                         \
        return launch(&a, call_ex, (uint64_t)(uintptr_t)f);                                       \
    }

EX_HOOK(cuLaunchKernelEx)
EX_HOOK(cuLaunchKernelEx_ptsz)

#define GRAPH_HOOK(name)                                                                          \
    API CUresult name(CUgraphExec exec, CUstream s)                                               \
    {                                                                                             \
        ensure_init();                                                                            \
        struct launch_args a = {real_##name, NULL, {1, 1, 1}, {1, 1, 1}, 0, s, NULL, NULL,        \
                                NULL, exec};                                                      \
        return launch(&a, call_graph, (uint64_t)(uintptr_t)exec);                                 \
    }

GRAPH_HOOK(cuGraphLaunch)
GRAPH_HOOK(cuGraphLaunch_ptsz)

/* ---- the other ways in ---- */

struct watched {
    const char *name;
    void (**real)(void);
    void (*hook)(void);
};

#define ENTRY(name) {#name, &real_##name, (void (*)(void))name},
API CUresult cuGetProcAddress(const char *symbol, void **pfn, int version, cuuint64_t flags);
API CUresult cuGetProcAddress_v2(const char *symbol, void **pfn, int version, cuuint64_t flags,
                                 CUdriverProcAddressQueryResult *status);
static const struct watched watched[] = {WATCHED(ENTRY)};

/* The watcher standing in for real, or real itself. */
static void *swap(void *real)
{
    if (real == NULL)
        return NULL;
    for (size_t i = 0; i < sizeof watched / sizeof watched[0]; i++) {
        void *r;
        memcpy(&r, watched[i].real, sizeof r);
        if (r == real) {
            void *h;
            memcpy(&h, &watched[i].hook, sizeof h);
            return h;
        }
    }
    return real;
}

API CUresult cuGetProcAddress(const char *symbol, void **pfn, int version, cuuint64_t flags)
{
    ensure_init();
    if (real_cuGetProcAddress == NULL)
        return CUDA_ERROR_NOT_INITIALIZED;
    CUresult r = ((CUresult(*)(const char *, void **, int, cuuint64_t))real_cuGetProcAddress)(
        symbol, pfn, version, flags);
    if (r == CUDA_SUCCESS && pfn)
        *pfn = swap(*pfn);
    return r;
}

API CUresult cuGetProcAddress_v2(const char *symbol, void **pfn, int version, cuuint64_t flags,
                                 CUdriverProcAddressQueryResult *status)
{
    ensure_init();
    if (real_cuGetProcAddress_v2 == NULL)
        return CUDA_ERROR_NOT_INITIALIZED;
    CUresult r = ((CUresult(*)(const char *, void **, int, cuuint64_t,
                               CUdriverProcAddressQueryResult *))real_cuGetProcAddress_v2)(
        symbol, pfn, version, flags, status);
    if (r == CUDA_SUCCESS && pfn)
        *pfn = swap(*pfn);
    return r;
}

static void *nvml_hook(int version)
{
    void (*h)(void) = version == 2 ? (void (*)(void))nvmlDeviceGetMemoryInfo_v2
                                   : (void (*)(void))nvmlDeviceGetMemoryInfo;
    void *p;
    memcpy(&p, &h, sizeof p);
    return p;
}

static pthread_once_t dlsym_once = PTHREAD_ONCE_INIT;

static void find_dlsym(void)
{
    real_dlsym = (void *(*)(void *, const char *))dlvsym(RTLD_NEXT, "dlsym", "GLIBC_2.34");
    if (real_dlsym == NULL)
        real_dlsym = (void *(*)(void *, const char *))dlvsym(RTLD_NEXT, "dlsym", "GLIBC_2.2.5");
    real_dlopen = (void *(*)(const char *, int))dlvsym(RTLD_NEXT, "dlopen", "GLIBC_2.34");
    if (real_dlopen == NULL)
        real_dlopen = (void *(*)(const char *, int))dlvsym(RTLD_NEXT, "dlopen", "GLIBC_2.2.5");
}

/* Whether the driver function r is not the watched driver's: a copy of
 * the driver loaded under another name, or in another namespace. */
static bool foreign_driver(void *r)
{
    Dl_info where;
    return driver_base == NULL || !dladdr(r, &where) || where.dli_fbase != driver_base;
}

static bool same(const char *a, const char *b)
{
    while (*a && *a == *b)
        a++, b++;
    return *a == *b;
}

/* The lookups by handle: driver names are swapped for their watchers. No
 * libc string functions: a sanitizer may call dlsym before its own
 * wrappers of them work. */
static void *by_handle(void *handle, const char *name)
{
    void *r = real_dlsym(handle, name);
    if (r == NULL)
        return r;
    if (name[0] == 'c' && name[1] == 'u') {
        ensure_init();
        /* A name the watched driver defines, found in another object: a
         * copy of the driver (issue #23). The watched one answers. */
        void *w;
        if (active && libcuda && foreign_driver(r) && (w = real_dlsym(libcuda, name)) != NULL)
            r = w;
        return swap(r);
    }
    /* NVML opened with dlopen: its memory calls are clamped too. */
    if (same(name, "nvmlDeviceGetMemoryInfo")) {
        __atomic_store_n(&real_nvml_mem, r, __ATOMIC_RELEASE);
        return nvml_hook(0);
    }
    if (same(name, "nvmlDeviceGetMemoryInfo_v2")) {
        __atomic_store_n(&real_nvml_mem_v2, r, __ATOMIC_RELEASE);
        return nvml_hook(2);
    }
    if (same(name, "nvmlDeviceGetUUID"))
        __atomic_store_n(&real_nvml_uuid, r, __ATOMIC_RELEASE);
    return r;
}

/* RTLD_NEXT means "after the caller": that lookup must leave by a tail
 * call, so the real dlsym sees the caller's return address (the target
 * is built with -O2 -foptimize-sibling-calls for it). Sanitizers and
 * other interposers look up their next definitions this way. */
API void *dlsym(void *handle, const char *name)
{
    pthread_once(&dlsym_once, find_dlsym);
    if (real_dlsym == NULL)
        return NULL;
    if (handle == RTLD_NEXT)
        return real_dlsym(handle, name);
    return by_handle(handle, name);
}

/* Whether the file at path is a CUDA driver, by what it exports (cuInit),
 * whatever its name. */
static bool driver_file(const char *path)
{
    int fd = open(path, O_RDONLY | O_CLOEXEC | O_NONBLOCK);
    if (fd < 0)
        return false;
    bool yes = glc_elf_defines(fd, "cuInit") == 1;
    close(fd);
    return yes;
}

/* A handle on the watched driver for a program that opened another copy
 * of it; NULL (said) when there is none to give. */
static void *watched_driver(const char *file)
{
    void *h = libcuda && real_dlopen ? real_dlopen("libcuda.so.1", RTLD_NOW | RTLD_NOLOAD) : NULL;
    if (h)
        say(2, "%s is a CUDA driver: answered with the watched libcuda.so.1", file);
    else
        say(0, "%s is a CUDA driver and no watched libcuda.so.1 is loaded: not opened", file);
    return h;
}

/* A driver opened by path under any name (a copy of libcuda.so.1 is the
 * driver, unwatched) is answered with the watched one. Other opens leave
 * by a tail call: dlopen finds libraries by its caller's RUNPATH and
 * $ORIGIN, and the caller must stay the program's. */
API void *dlopen(const char *file, int flags)
{
    pthread_once(&dlsym_once, find_dlsym);
    if (real_dlopen == NULL)
        return NULL;
    if (file && strchr(file, '/') && driver_file(file)) {
        ensure_init();
        if (active)
            return watched_driver(file);
    }
    return real_dlopen(file, flags);
}

/* A second link-map namespace would load a second driver, one these
 * watchers do not stand in front of (nothing preloaded reaches it): the
 * driver or NVML opened there by name, or the driver by path under any
 * name, answers the one watched here instead; a library that brings a
 * driver of its own into the namespace is not opened. */
static bool driver_name(const char *file)
{
    const char *base = file;
    for (const char *c = file; *c; c++)
        if (*c == '/')
            base = c + 1;
    static const char *const names[] = {"libcuda.so", "libnvidia-ml.so"};
    for (size_t i = 0; i < sizeof names / sizeof names[0]; i++) {
        size_t n = strlen(names[i]);
        if (strncmp(base, names[i], n) == 0 && (base[n] == '\0' || base[n] == '.'))
            return true;
    }
    return false;
}

API void *dlmopen(Lmid_t lmid, const char *file, int flags)
{
    static void *(*real_dlmopen)(Lmid_t, const char *, int);
    void *(*fn)(Lmid_t, const char *, int) = __atomic_load_n(&real_dlmopen, __ATOMIC_ACQUIRE);
    if (fn == NULL) {
        fn = (void *(*)(Lmid_t, const char *, int))dlvsym(RTLD_NEXT, "dlmopen", "GLIBC_2.34");
        if (fn == NULL)
            fn = (void *(*)(Lmid_t, const char *, int))dlvsym(RTLD_NEXT, "dlmopen", "GLIBC_2.3.4");
        if (fn == NULL)
            return NULL;
        __atomic_store_n(&real_dlmopen, fn, __ATOMIC_RELEASE);
    }
    if (lmid == LM_ID_BASE || file == NULL)
        return fn(lmid, file, flags);
    pthread_once(&dlsym_once, find_dlsym);
    if (driver_name(file)) {
        say(2, "dlmopen of %s in a new namespace answered with the watched library", file);
        return dlopen(file, flags);
    }
    if (strchr(file, '/') && driver_file(file)) {
        ensure_init();
        if (active)
            return watched_driver(file);
    }
    void *h = fn(lmid, file, flags);
    void *init_fn = h ? real_dlsym(h, "cuInit") : NULL;
    if (init_fn == NULL)
        return h;
    ensure_init();
    if (!active)
        return h;
    Dl_info where;
    say(0, "%s brings in %s, a second CUDA driver the limits cannot watch: not opened", file,
        dladdr(init_fn, &where) && where.dli_fname ? where.dli_fname : "a copy of libcuda");
    dlclose(h);
    return NULL;
}
