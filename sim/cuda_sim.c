/*
 * The simulated libcuda.so.1: the driver-API subset programs use to find
 * devices, make contexts, allocate every kind of device memory, launch
 * kernels and synchronise, answered from the node file (GPULET_SIM_NODE).
 * Memory and the GPU's engine are shared by all processes of the simulated
 * node through sim_device; docs/simulator.md describes the model:
 *
 * - Device pointers are not backed by memory: they encode an allocation
 *   slot and must not be dereferenced.
 * - A kernel occupies its GPU for gridDim x blockDim x N nanoseconds, N
 *   being the decimal number that ends the function's name ("busy_1000":
 *   1 us per thread; a name without digits: no time). Kernels of all
 *   processes run one after the other in the order they were launched.
 * - Each context costs the node file's context_mib of device memory (64
 *   MiB unless it says otherwise; real contexts take a few hundred) and
 *   takes SIM_CONTEXT_NS to make (the real driver's take 100 ms and
 *   more), so callers racing to make one overlap as they do on a GPU.
 */
#include <errno.h>
#include <pthread.h>
#include <search.h>
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

#include "cuda/cuda_abi.h"
#include "sim_device.h"
#include "sim_node.h"
#include "text/text.h"

#define API __attribute__((visibility("default")))
#define MIB (1024ULL * 1024ULL)
#define SIM_CONTEXT_BYTES (node->context_mib * MIB)
#define SIM_CONTEXT_NS 2000000L
#define VMM_GRANULARITY (2 * MIB)
/* Work a stream may have queued before a launch waits, as a real launch
 * queue fills up. */
#define QUEUE_NS 1000000000ULL

/* Device pointers: bit 62 set, the GPU in bits 56-61, the slot in bits
 * 38-55, the offset inside the allocation below. */
#define PTR_TAG (1ULL << 62)
#define PTR_GPU_SHIFT 56
#define PTR_SLOT_SHIFT 38
#define PTR_OFFSET_MASK ((1ULL << PTR_SLOT_SHIFT) - 1)
#define MAX_SLOTS (1U << (PTR_GPU_SHIFT - PTR_SLOT_SHIFT))

enum magic {
    MAGIC_CTX = 0x43545831,
    MAGIC_STREAM,
    MAGIC_EVENT,
    MAGIC_MODULE,
    MAGIC_FUNCTION,
    MAGIC_POOL,
    MAGIC_GRAPH,
    MAGIC_EXEC,
};

enum kind { K_FREE, K_DEVICE, K_ARRAY, K_MIPMAP, K_VMM, K_RESERVE };

struct slot {
    unsigned char kind;
    unsigned char gpu;
    bool released;       /* K_VMM: cuMemRelease came while it was mapped */
    uint64_t bytes;
    unsigned int next_free;
    unsigned int maps;   /* K_VMM: reservations it is mapped into */
    unsigned int mapped; /* K_RESERVE: 1 + the K_VMM slot mapped at its start, or 0 */
};

/* cuCtxSetLimit's limits that hold device memory: the per-thread stack,
 * the printf FIFO and the device malloc heap. */
#define SIM_LIMITS 3
static const uint64_t limit_default[SIM_LIMITS] = {1024, 1 * MIB, 8 * MIB};
/* Threads a GPU keeps resident at once, each with its own stack. */
#define SIM_THREADS_PER_SM 2048ULL

struct CUctx_st {
    enum magic magic;
    int dev;
    bool primary;
    uint64_t last_end; /* when the work queued in it ends */
    uint64_t limits[SIM_LIMITS]; /* 0: the default */
    uint64_t limit_bytes;        /* held beyond SIM_CONTEXT_BYTES for them */
};

struct CUstream_st {
    enum magic magic;
    struct CUctx_st *ctx;
    uint64_t last_end;
    struct CUgraph_st *capture; /* the graph being captured, or NULL */
};

struct CUevent_st {
    enum magic magic;
    bool recorded;
    uint64_t at;
};

struct CUmod_st {
    enum magic magic;
};

struct CUfunc_st {
    enum magic magic;
    uint64_t ns_per_thread;
};

struct CUmemPoolHandle_st {
    enum magic magic;
    int dev;
};

#define GRAPH_MAX_KERNELS 64

struct graph_kernel {
    struct CUfunc_st *f;
    uint64_t ns;
};

/* A graph's memory nodes: what it allocates on one device (graphs of
 * the simulator allocate on one). */
struct CUgraph_st {
    enum magic magic;
    size_t count;
    struct graph_kernel kernels[GRAPH_MAX_KERNELS];
    uint64_t alloc_bytes;
    int alloc_dev;
};

struct CUgraphExec_st {
    enum magic magic;
    uint64_t dur_ns;
    uint64_t alloc_bytes; /* held while the exec lives */
    int alloc_dev;
};

/* The process's view of the driver; guarded by `lock`. */
static pthread_mutex_t lock = PTHREAD_MUTEX_INITIALIZER;
static bool initialised, forked;
static struct sim_node *node;
static struct sim_dev_file *shared;
static int visible[SIM_MAX_GPUS]; /* CUDA ordinal -> node GPU */
static int visible_count;
static struct CUctx_st primary[SIM_MAX_GPUS];
static unsigned int primary_refs[SIM_MAX_GPUS];
static struct CUmemPoolHandle_st default_pool[SIM_MAX_GPUS];
static struct slot *slots;
static unsigned int slot_count, slot_cap, free_head = UINT32_MAX;

#define CTX_STACK 32
static _Thread_local struct CUctx_st *ctx_stack[CTX_STACK];
static _Thread_local int ctx_depth;

/* ---- handles ----
 *
 * Every handle handed out is kept in a tree until it is destroyed, and
 * looked up before it is read: a stale or made-up handle is refused with
 * the driver's error, never dereferenced. The primary contexts and the
 * default pools live in static arrays and are recognised by address. */

static pthread_mutex_t handles_lock = PTHREAD_MUTEX_INITIALIZER;
static void *handles;

static int by_address(const void *a, const void *b)
{
    uintptr_t x = (uintptr_t)a, y = (uintptr_t)b;
    return (x > y) - (x < y);
}

/* A zeroed handle of `size` bytes whose first field is set to m, registered
 * as live; NULL when out of memory. */
static void *handle_new(size_t size, enum magic m)
{
    enum magic *h = calloc(1, size);
    if (h == NULL)
        return NULL;
    *h = m;
    pthread_mutex_lock(&handles_lock);
    bool ok = tsearch(h, &handles, by_address) != NULL;
    pthread_mutex_unlock(&handles_lock);
    if (!ok) {
        free(h);
        return NULL;
    }
    return h;
}

/* Invalidates and frees a handle made by handle_new. */
static void handle_free(void *h)
{
    pthread_mutex_lock(&handles_lock);
    *(enum magic *)h = 0;
    tdelete(h, &handles, by_address);
    pthread_mutex_unlock(&handles_lock);
    free(h);
}

static bool in_array(const void *h, const void *base, size_t bytes)
{
    uintptr_t p = (uintptr_t)h, b = (uintptr_t)base;
    return p >= b && p < b + bytes;
}

/* h is a live handle of kind m. Every handle struct starts with its magic. */
static bool is_handle(const void *h, enum magic m)
{
    if (h == NULL)
        return false;
    pthread_mutex_lock(&handles_lock);
    bool known = in_array(h, primary, sizeof primary) || in_array(h, default_pool, sizeof default_pool) ||
                 tfind(h, &handles, by_address) != NULL;
    bool ok = known && *(const enum magic *)h == m;
    pthread_mutex_unlock(&handles_lock);
    return ok;
}

/* ---- devices ---- */

static int node_gpu_by_uuid(const char *uuid)
{
    for (size_t i = 0; i < node->gpu_count; i++)
        if (strcmp(node->gpus[i].uuid, uuid) == 0 ||
            (strncmp(uuid, "GPU-", 4) != 0 && strcmp(node->gpus[i].uuid + 4, uuid) == 0))
            return (int)i;
    return -1;
}

/* CUDA_VISIBLE_DEVICES as the driver reads it: indices or UUIDs, the list
 * ending at the first entry that names no GPU. */
static void read_visible(void)
{
    const char *env = getenv("CUDA_VISIBLE_DEVICES");
    visible_count = 0;
    if (env == NULL) {
        for (size_t i = 0; i < node->gpu_count; i++)
            visible[visible_count++] = (int)i;
        return;
    }
    char buf[4096];
    snprintf(buf, sizeof buf, "%s", env);
    char *save = NULL;
    for (char *tok = strtok_r(buf, ",", &save); tok && visible_count < SIM_MAX_GPUS;
         tok = strtok_r(NULL, ",", &save)) {
        char *end;
        long idx = strtol(tok, &end, 10);
        int g = -1;
        if (end != tok && *end == '\0')
            g = idx >= 0 && (size_t)idx < node->gpu_count ? (int)idx : -1;
        else
            g = node_gpu_by_uuid(tok);
        if (g < 0)
            break;
        visible[visible_count++] = g;
    }
}

static uint64_t capacity(int dev)
{
    const struct sim_gpu *g = &node->gpus[visible[dev]];
    uint64_t fixed = g->memory_reserved_mib + g->memory_used_mib;
    return g->memory_mib > fixed ? (g->memory_mib - fixed) * MIB : 0;
}

/* The driver's state does not survive fork, as the real one's does not: in
 * the child of an initialised process every call that needs cuInit
 * answers CUDA_ERROR_NOT_INITIALIZED, so a child cannot free (or be
 * credited) its parent's memory. */
static void in_child(void)
{
    __atomic_store_n(&initialised, false, __ATOMIC_RELEASE);
    __atomic_store_n(&forked, true, __ATOMIC_RELEASE);
}

API CUresult cuInit(unsigned int flags)
{
    if (flags != 0)
        return CUDA_ERROR_INVALID_VALUE;
    if (__atomic_load_n(&forked, __ATOMIC_ACQUIRE))
        return CUDA_ERROR_NOT_INITIALIZED;
    pthread_mutex_lock(&lock);
    CUresult r = CUDA_SUCCESS;
    if (!initialised) {
        const char *path = getenv("GPULET_SIM_NODE");
        struct gpulet_error err = {0};
        char msg[512];
        node = calloc(1, sizeof *node);
        if (node == NULL || path == NULL || sim_node_load(path, node, &err) < 0) {
            fprintf(stderr, "gpulet-sim: libcuda needs GPULET_SIM_NODE set to a node file%s%s\n",
                    err.msg[0] ? ": " : "", err.msg);
            r = CUDA_ERROR_NO_DEVICE;
        } else if (!node->driver_loaded || node->gpu_count == 0) {
            r = CUDA_ERROR_NO_DEVICE;
        } else if ((shared = sim_dev_open(node, true, msg, sizeof msg)) == NULL) {
            fprintf(stderr, "gpulet-sim: %s\n", msg);
            r = CUDA_ERROR_UNKNOWN;
        } else if (pthread_atfork(NULL, NULL, in_child) != 0) {
            r = CUDA_ERROR_OUT_OF_MEMORY;
        } else {
            read_visible();
            for (int d = 0; d < SIM_MAX_GPUS; d++) {
                primary[d] = (struct CUctx_st){.dev = d, .primary = true};
                default_pool[d] = (struct CUmemPoolHandle_st){MAGIC_POOL, d};
            }
            initialised = true;
        }
        if (!initialised) {
            free(node);
            node = NULL;
        }
    }
    pthread_mutex_unlock(&lock);
    return r;
}

static bool ready(void)
{
    return __atomic_load_n(&initialised, __ATOMIC_ACQUIRE);
}

#define NEED_INIT()                                                                               \
    do {                                                                                          \
        if (!ready())                                                                             \
            return CUDA_ERROR_NOT_INITIALIZED;                                                    \
    } while (0)

static bool valid_dev(CUdevice d)
{
    return d >= 0 && d < visible_count;
}

API CUresult cuDriverGetVersion(int *version)
{
    if (version == NULL)
        return CUDA_ERROR_INVALID_VALUE;
    /* The real call answers before cuInit; so must the node file. */
    struct sim_node *n = calloc(1, sizeof *n);
    const char *path = getenv("GPULET_SIM_NODE");
    struct gpulet_error err = {0};
    CUresult r = CUDA_ERROR_NO_DEVICE;
    if (n && path && sim_node_load(path, n, &err) == 0) {
        *version = n->cuda_driver_version;
        r = CUDA_SUCCESS;
    }
    free(n);
    return r;
}

/* The checks every device query starts with. */
static CUresult device_query(const void *out, CUdevice dev)
{
    if (!ready())
        return CUDA_ERROR_NOT_INITIALIZED;
    if (out == NULL)
        return CUDA_ERROR_INVALID_VALUE;
    return valid_dev(dev) ? CUDA_SUCCESS : CUDA_ERROR_INVALID_DEVICE;
}

API CUresult cuDeviceGetCount(int *count)
{
    NEED_INIT();
    if (count == NULL)
        return CUDA_ERROR_INVALID_VALUE;
    *count = visible_count;
    return CUDA_SUCCESS;
}

API CUresult cuDeviceGet(CUdevice *dev, int ordinal)
{
    CUresult r = device_query(dev, ordinal);
    if (r != CUDA_SUCCESS)
        return r;
    *dev = ordinal;
    return CUDA_SUCCESS;
}

API CUresult cuDeviceGetName(char *name, int len, CUdevice dev)
{
    CUresult r = device_query(len > 0 ? name : NULL, dev);
    if (r != CUDA_SUCCESS)
        return r;
    snprintf(name, (size_t)len, "%s", node->gpus[visible[dev]].name);
    return CUDA_SUCCESS;
}

API CUresult cuDeviceTotalMem_v2(size_t *bytes, CUdevice dev)
{
    CUresult r = device_query(bytes, dev);
    if (r != CUDA_SUCCESS)
        return r;
    *bytes = node->gpus[visible[dev]].memory_mib * MIB;
    return CUDA_SUCCESS;
}

API CUresult cuDeviceGetUuid_v2(CUuuid *uuid, CUdevice dev)
{
    CUresult r = device_query(uuid, dev);
    if (r != CUDA_SUCCESS)
        return r;
    const char *s = node->gpus[visible[dev]].uuid;
    if (strncmp(s, "GPU-", 4) == 0)
        s += 4;
    memset(uuid, 0, sizeof *uuid);
    for (int n = 0; *s && n < 32; s++) {
        int v = text_hex_value((unsigned char)*s);
        if (v < 0)
            continue;
        uuid->bytes[n / 2] = (char)(uuid->bytes[n / 2] | (n % 2 ? v : v << 4));
        n++;
    }
    return CUDA_SUCCESS;
}

API CUresult cuDeviceGetUuid(CUuuid *uuid, CUdevice dev)
{
    return cuDeviceGetUuid_v2(uuid, dev);
}

API CUresult cuDeviceGetAttribute(int *value, int attr, CUdevice dev)
{
    CUresult r = device_query(value, dev);
    if (r != CUDA_SUCCESS)
        return r;
    const struct sim_gpu *g = &node->gpus[visible[dev]];
    unsigned int dom = 0, bus = 0, device = 0, fn = 0;
    sscanf(g->pci_bus_id, "%x:%x:%x.%x", &dom, &bus, &device, &fn);
    switch (attr) {
    case CU_DEVICE_ATTRIBUTE_MAX_THREADS_PER_BLOCK: *value = 1024; break;
    case CU_DEVICE_ATTRIBUTE_WARP_SIZE: *value = 32; break;
    case CU_DEVICE_ATTRIBUTE_CLOCK_RATE: *value = (int)g->max_sm_clock_mhz * 1000; break;
    case CU_DEVICE_ATTRIBUTE_MULTIPROCESSOR_COUNT: *value = (int)g->multiprocessors; break;
    case CU_DEVICE_ATTRIBUTE_INTEGRATED: *value = 0; break;
    case CU_DEVICE_ATTRIBUTE_PCI_BUS_ID: *value = (int)bus; break;
    case CU_DEVICE_ATTRIBUTE_PCI_DEVICE_ID: *value = (int)device; break;
    case CU_DEVICE_ATTRIBUTE_PCI_DOMAIN_ID: *value = (int)dom; break;
    case CU_DEVICE_ATTRIBUTE_COMPUTE_CAPABILITY_MAJOR: *value = g->cc_major; break;
    case CU_DEVICE_ATTRIBUTE_COMPUTE_CAPABILITY_MINOR: *value = g->cc_minor; break;
    case CU_DEVICE_ATTRIBUTE_UNIFIED_ADDRESSING:
    case CU_DEVICE_ATTRIBUTE_MANAGED_MEMORY:
    case CU_DEVICE_ATTRIBUTE_COOPERATIVE_LAUNCH:
    case CU_DEVICE_ATTRIBUTE_VIRTUAL_MEMORY_MANAGEMENT_SUPPORTED:
    case CU_DEVICE_ATTRIBUTE_MEMORY_POOLS_SUPPORTED: *value = 1; break;
    default: return CUDA_ERROR_INVALID_VALUE;
    }
    return CUDA_SUCCESS;
}

/* ---- contexts ---- */

static struct CUctx_st *current(void)
{
    return ctx_depth > 0 ? ctx_stack[ctx_depth - 1] : NULL;
}

static bool valid_ctx(const struct CUctx_st *c)
{
    return is_handle(c, MAGIC_CTX);
}

/* The context's own memory, taken when it is made, and the time making
 * it takes. */
static CUresult charge_context(int dev)
{
    struct timespec t = {0, SIM_CONTEXT_NS};
    while (nanosleep(&t, &t) < 0 && errno == EINTR)
        ;
    return sim_dev_alloc(shared, (unsigned int)visible[dev], SIM_CONTEXT_BYTES, capacity(dev))
               ? CUDA_SUCCESS
               : CUDA_ERROR_OUT_OF_MEMORY;
}

API CUresult cuDevicePrimaryCtxRetain(CUcontext *pctx, CUdevice dev)
{
    NEED_INIT();
    if (pctx == NULL)
        return CUDA_ERROR_INVALID_VALUE;
    if (!valid_dev(dev))
        return CUDA_ERROR_INVALID_DEVICE;
    CUresult r = CUDA_SUCCESS;
    pthread_mutex_lock(&lock);
    if (primary_refs[dev] == 0 && (r = charge_context(dev)) == CUDA_SUCCESS)
        primary[dev].magic = MAGIC_CTX;
    if (r == CUDA_SUCCESS) {
        primary_refs[dev]++;
        *pctx = &primary[dev];
    }
    pthread_mutex_unlock(&lock);
    return r;
}

static void drop_current(struct CUctx_st *c)
{
    for (int i = 0; i < ctx_depth; i++)
        if (ctx_stack[i] == c)
            ctx_stack[i] = NULL;
}

API CUresult cuDevicePrimaryCtxRelease_v2(CUdevice dev)
{
    NEED_INIT();
    if (!valid_dev(dev))
        return CUDA_ERROR_INVALID_DEVICE;
    CUresult r = CUDA_SUCCESS;
    pthread_mutex_lock(&lock);
    if (primary_refs[dev] == 0) {
        r = CUDA_ERROR_INVALID_CONTEXT;
    } else if (--primary_refs[dev] == 0) {
        primary[dev].magic = 0;
        sim_dev_free(shared, (unsigned int)visible[dev], SIM_CONTEXT_BYTES + primary[dev].limit_bytes);
        memset(primary[dev].limits, 0, sizeof primary[dev].limits);
        primary[dev].limit_bytes = 0;
    }
    pthread_mutex_unlock(&lock);
    return r;
}

API CUresult cuCtxCreate_v2(CUcontext *pctx, unsigned int flags, CUdevice dev)
{
    NEED_INIT();
    if (pctx == NULL || flags > 0x1f)
        return CUDA_ERROR_INVALID_VALUE;
    if (!valid_dev(dev))
        return CUDA_ERROR_INVALID_DEVICE;
    CUresult r = charge_context(dev);
    if (r != CUDA_SUCCESS)
        return r;
    struct CUctx_st *c = handle_new(sizeof *c, MAGIC_CTX);
    if (c == NULL) {
        sim_dev_free(shared, (unsigned int)visible[dev], SIM_CONTEXT_BYTES);
        return CUDA_ERROR_OUT_OF_MEMORY;
    }
    c->dev = dev;
    if (ctx_depth < CTX_STACK)
        ctx_stack[ctx_depth++] = c;
    else
        ctx_stack[CTX_STACK - 1] = c;
    *pctx = c;
    return CUDA_SUCCESS;
}

API CUresult cuCtxDestroy_v2(CUcontext ctx);

/* The newer forms take execution-affinity or creation parameters the
 * simulator has no use for, and make the same context. */
API CUresult cuCtxCreate_v3(CUcontext *pctx, const void *affinity, int count, unsigned int flags,
                            CUdevice dev)
{
    if (count < 0 || (count > 0 && affinity == NULL))
        return CUDA_ERROR_INVALID_VALUE;
    return cuCtxCreate_v2(pctx, flags, dev);
}

API CUresult cuCtxCreate_v4(CUcontext *pctx, const void *params, unsigned int flags, CUdevice dev)
{
    (void)params;
    return cuCtxCreate_v2(pctx, flags, dev);
}

/* The legacy (v1) entry points the driver still exports: contexts as the
 * _v2 ones; memory through 32-bit device pointers, which no allocation of
 * the simulator fits, so they answer CUDA_ERROR_OUT_OF_MEMORY. */
API CUresult cuCtxCreate(CUcontext *pctx, unsigned int flags, CUdevice dev)
{
    return cuCtxCreate_v2(pctx, flags, dev);
}

API CUresult cuCtxDestroy(CUcontext ctx)
{
    return cuCtxDestroy_v2(ctx);
}

API CUresult cuDevicePrimaryCtxRelease(CUdevice dev)
{
    return cuDevicePrimaryCtxRelease_v2(dev);
}

API CUresult cuMemAlloc(unsigned int *dptr, unsigned int bytes)
{
    NEED_INIT();
    return dptr == NULL || bytes == 0 ? CUDA_ERROR_INVALID_VALUE : CUDA_ERROR_OUT_OF_MEMORY;
}

API CUresult cuMemFree(unsigned int ptr)
{
    NEED_INIT();
    return ptr == 0 ? CUDA_SUCCESS : CUDA_ERROR_INVALID_VALUE;
}

API CUresult cuCtxDestroy_v2(CUcontext ctx)
{
    NEED_INIT();
    if (!valid_ctx(ctx) || ctx->primary)
        return CUDA_ERROR_INVALID_CONTEXT;
    drop_current(ctx);
    sim_dev_free(shared, (unsigned int)visible[ctx->dev], SIM_CONTEXT_BYTES + ctx->limit_bytes);
    handle_free(ctx);
    return CUDA_SUCCESS;
}

static struct CUctx_st *live_current(void);

/* Green contexts: a context on part of a GPU's SMs, as costly in memory
 * as any other. The resource description is taken as given. */
API CUresult cuGreenCtxCreate(CUcontext *pctx, const void *desc, CUdevice dev, unsigned int flags)
{
    NEED_INIT();
    if (pctx == NULL || desc == NULL || flags != 1) /* CU_GREEN_CTX_DEFAULT_STREAM */
        return CUDA_ERROR_INVALID_VALUE;
    CUresult r = cuCtxCreate_v2(pctx, 0, dev);
    if (r == CUDA_SUCCESS && ctx_depth > 0 && ctx_stack[ctx_depth - 1] == *pctx)
        ctx_depth--; /* made, not pushed as cuCtxCreate's are */
    return r;
}

API CUresult cuGreenCtxDestroy(CUcontext ctx)
{
    return cuCtxDestroy_v2(ctx);
}

/* The memory limit l of value takes in context c beyond its default. */
static uint64_t limit_cost(const struct CUctx_st *c, int l, uint64_t value)
{
    uint64_t extra = value > limit_default[l] ? value - limit_default[l] : 0, bytes;
    if (l != 0)
        return extra;
    uint64_t threads = node->gpus[visible[c->dev]].multiprocessors * SIM_THREADS_PER_SM;
    return __builtin_mul_overflow(extra, threads, &bytes) ? UINT64_MAX : bytes;
}

/* As the real driver: raising the stack, FIFO or heap takes device memory
 * at once (stack x resident threads), refused when it is not there. */
API CUresult cuCtxSetLimit(int limit, size_t value)
{
    NEED_INIT();
    struct CUctx_st *c = live_current();
    if (c == NULL)
        return CUDA_ERROR_INVALID_CONTEXT;
    if (limit < 0 || limit >= SIM_LIMITS)
        return limit < 0 || limit > 6 ? CUDA_ERROR_INVALID_VALUE : CUDA_SUCCESS;
    pthread_mutex_lock(&lock);
    uint64_t old = c->limits[limit] ? c->limits[limit] : limit_default[limit];
    uint64_t was = limit_cost(c, limit, old), now = limit_cost(c, limit, value);
    CUresult r = CUDA_SUCCESS;
    if (now > was && !sim_dev_alloc(shared, (unsigned int)visible[c->dev], now - was,
                                    capacity(c->dev)))
        r = CUDA_ERROR_OUT_OF_MEMORY;
    else if (now < was)
        sim_dev_free(shared, (unsigned int)visible[c->dev], was - now);
    if (r == CUDA_SUCCESS) {
        c->limits[limit] = value;
        c->limit_bytes = c->limit_bytes - was + now;
    }
    pthread_mutex_unlock(&lock);
    return r;
}

API CUresult cuCtxGetLimit(size_t *value, int limit)
{
    NEED_INIT();
    struct CUctx_st *c = live_current();
    if (c == NULL)
        return CUDA_ERROR_INVALID_CONTEXT;
    if (value == NULL || limit < 0 || limit >= SIM_LIMITS)
        return CUDA_ERROR_INVALID_VALUE;
    *value = c->limits[limit] ? c->limits[limit] : limit_default[limit];
    return CUDA_SUCCESS;
}

API CUresult cuCtxSetCurrent(CUcontext ctx)
{
    NEED_INIT();
    if (ctx != NULL && !valid_ctx(ctx))
        return CUDA_ERROR_INVALID_CONTEXT;
    if (ctx_depth == 0) {
        if (ctx == NULL)
            return CUDA_SUCCESS;
        ctx_depth = 1;
    }
    ctx_stack[ctx_depth - 1] = ctx;
    return CUDA_SUCCESS;
}

API CUresult cuCtxGetCurrent(CUcontext *pctx)
{
    NEED_INIT();
    if (pctx == NULL)
        return CUDA_ERROR_INVALID_VALUE;
    *pctx = current();
    return CUDA_SUCCESS;
}

API CUresult cuCtxPushCurrent_v2(CUcontext ctx)
{
    NEED_INIT();
    if (!valid_ctx(ctx))
        return CUDA_ERROR_INVALID_CONTEXT;
    if (ctx_depth == CTX_STACK)
        return CUDA_ERROR_INVALID_VALUE;
    ctx_stack[ctx_depth++] = ctx;
    return CUDA_SUCCESS;
}

API CUresult cuCtxPopCurrent_v2(CUcontext *pctx)
{
    NEED_INIT();
    if (ctx_depth == 0)
        return CUDA_ERROR_INVALID_CONTEXT;
    struct CUctx_st *c = ctx_stack[--ctx_depth];
    if (pctx)
        *pctx = c;
    return CUDA_SUCCESS;
}

/* The current context, or NULL when there is none (or it was destroyed). */
static struct CUctx_st *live_current(void)
{
    struct CUctx_st *c = current();
    return valid_ctx(c) ? c : NULL;
}

API CUresult cuCtxGetDevice(CUdevice *dev)
{
    NEED_INIT();
    if (dev == NULL)
        return CUDA_ERROR_INVALID_VALUE;
    struct CUctx_st *c = live_current();
    if (c == NULL)
        return CUDA_ERROR_INVALID_CONTEXT;
    *dev = c->dev;
    return CUDA_SUCCESS;
}

static void wait_until(uint64_t t)
{
    if (t <= sim_dev_now_ns())
        return;
    struct timespec ts = {.tv_sec = (time_t)(t / 1000000000ULL),
                          .tv_nsec = (long)(t % 1000000000ULL)};
    while (clock_nanosleep(CLOCK_MONOTONIC, TIMER_ABSTIME, &ts, NULL) == EINTR)
        ;
}

API CUresult cuCtxSynchronize(void)
{
    NEED_INIT();
    struct CUctx_st *c = live_current();
    if (c == NULL)
        return CUDA_ERROR_INVALID_CONTEXT;
    wait_until(__atomic_load_n(&c->last_end, __ATOMIC_ACQUIRE));
    return CUDA_SUCCESS;
}

/* ---- memory ---- */

static CUresult new_slot(int dev, enum kind kind, uint64_t bytes, bool counted, CUdeviceptr *out)
{
    if (bytes == 0)
        return CUDA_ERROR_INVALID_VALUE;
    if (bytes > PTR_OFFSET_MASK)
        return CUDA_ERROR_OUT_OF_MEMORY;
    if (counted && !sim_dev_alloc(shared, (unsigned int)visible[dev], bytes, capacity(dev)))
        return CUDA_ERROR_OUT_OF_MEMORY;
    pthread_mutex_lock(&lock);
    unsigned int i = free_head;
    if (i != UINT32_MAX) {
        free_head = slots[i].next_free;
    } else if (slot_count < slot_cap) {
        i = slot_count++;
    } else if (slot_cap < MAX_SLOTS) {
        unsigned int cap = slot_cap ? slot_cap * 2 : 1024;
        struct slot *s = realloc(slots, cap * sizeof *s);
        if (s) {
            slots = s;
            slot_cap = cap;
            i = slot_count++;
        }
    }
    if (i != UINT32_MAX)
        slots[i] = (struct slot){.kind = (unsigned char)kind, .gpu = (unsigned char)dev,
                                 .bytes = counted ? bytes : 0};
    pthread_mutex_unlock(&lock);
    if (i == UINT32_MAX) {
        if (counted)
            sim_dev_free(shared, (unsigned int)visible[dev], bytes);
        return CUDA_ERROR_OUT_OF_MEMORY;
    }
    *out = PTR_TAG | ((uint64_t)dev << PTR_GPU_SHIFT) | ((uint64_t)i << PTR_SLOT_SHIFT);
    return CUDA_SUCCESS;
}

/* Releases the allocation ptr starts, if it is one of kind. */
static CUresult release_slot(CUdeviceptr ptr, enum kind kind)
{
    if ((ptr & ~((1ULL << 63) - 1)) != 0 || (ptr & PTR_TAG) == 0 || (ptr & PTR_OFFSET_MASK) != 0)
        return CUDA_ERROR_INVALID_VALUE;
    unsigned int i = (unsigned int)((ptr >> PTR_SLOT_SHIFT) & (MAX_SLOTS - 1));
    pthread_mutex_lock(&lock);
    /* a released handle is gone; a reservation is unmapped before it is freed */
    bool ok = i < slot_count && slots[i].kind == kind &&
              slots[i].gpu == ((ptr >> PTR_GPU_SHIFT) & 0x3f) && !slots[i].released &&
              slots[i].mapped == 0;
    struct slot s = ok ? slots[i] : (struct slot){0};
    if (ok) {
        slots[i] = (struct slot){.kind = K_FREE, .next_free = free_head};
        free_head = i;
    }
    pthread_mutex_unlock(&lock);
    if (!ok)
        return CUDA_ERROR_INVALID_VALUE;
    if (s.bytes)
        sim_dev_free(shared, (unsigned int)visible[s.gpu], s.bytes);
    return CUDA_SUCCESS;
}

static CUresult alloc_on_current(CUdeviceptr *dptr, uint64_t bytes, enum kind kind)
{
    NEED_INIT();
    if (dptr == NULL)
        return CUDA_ERROR_INVALID_VALUE;
    struct CUctx_st *c = live_current();
    if (c == NULL)
        return CUDA_ERROR_INVALID_CONTEXT;
    return new_slot(c->dev, kind, bytes, true, dptr);
}

API CUresult cuMemAlloc_v2(CUdeviceptr *dptr, size_t bytes)
{
    return alloc_on_current(dptr, bytes, K_DEVICE);
}

API CUresult cuMemAllocPitch_v2(CUdeviceptr *dptr, size_t *pitch, size_t width, size_t height,
                                unsigned int elem)
{
    if (pitch == NULL || (elem != 4 && elem != 8 && elem != 16) || width == 0 || height == 0)
        return CUDA_ERROR_INVALID_VALUE;
    size_t p = (width + 511) / 512 * 512, bytes;
    if (p < width || __builtin_mul_overflow(p, height, &bytes))
        return CUDA_ERROR_OUT_OF_MEMORY;
    CUresult r = alloc_on_current(dptr, bytes, K_DEVICE);
    if (r == CUDA_SUCCESS)
        *pitch = p;
    return r;
}

API CUresult cuMemAllocManaged(CUdeviceptr *dptr, size_t bytes, unsigned int flags)
{
    if (flags != 1 && flags != 2)
        return CUDA_ERROR_INVALID_VALUE;
    return alloc_on_current(dptr, bytes, K_DEVICE);
}

API CUresult cuMemFree_v2(CUdeviceptr ptr)
{
    NEED_INIT();
    if (ptr == 0)
        return CUDA_SUCCESS;
    return release_slot(ptr, K_DEVICE);
}

API CUresult cuMemGetInfo_v2(size_t *free_bytes, size_t *total)
{
    NEED_INIT();
    if (free_bytes == NULL || total == NULL)
        return CUDA_ERROR_INVALID_VALUE;
    struct CUctx_st *c = live_current();
    if (c == NULL)
        return CUDA_ERROR_INVALID_CONTEXT;
    uint64_t cap = capacity(c->dev), used = sim_dev_used(shared, (unsigned int)visible[c->dev]);
    *total = node->gpus[visible[c->dev]].memory_mib * MIB;
    *free_bytes = used < cap ? cap - used : 0;
    return CUDA_SUCCESS;
}

/* Page-locked host memory: real memory, not device memory. */
API CUresult cuMemAllocHost_v2(void **p, size_t bytes)
{
    NEED_INIT();
    if (p == NULL || bytes == 0)
        return CUDA_ERROR_INVALID_VALUE;
    if (live_current() == NULL)
        return CUDA_ERROR_INVALID_CONTEXT;
    *p = malloc(bytes);
    return *p ? CUDA_SUCCESS : CUDA_ERROR_OUT_OF_MEMORY;
}

API CUresult cuMemHostAlloc(void **p, size_t bytes, unsigned int flags)
{
    if (flags > 0xf)
        return CUDA_ERROR_INVALID_VALUE;
    return cuMemAllocHost_v2(p, bytes);
}

API CUresult cuMemFreeHost(void *p)
{
    NEED_INIT();
    free(p);
    return CUDA_SUCCESS;
}

/* Element size of an array format; 0 for one the simulator does not know. */
static size_t format_bytes(CUarray_format f)
{
    switch (f) {
    case CU_AD_FORMAT_UNSIGNED_INT8:
    case CU_AD_FORMAT_SIGNED_INT8: return 1;
    case CU_AD_FORMAT_UNSIGNED_INT16:
    case CU_AD_FORMAT_SIGNED_INT16:
    case CU_AD_FORMAT_HALF: return 2;
    case CU_AD_FORMAT_UNSIGNED_INT32:
    case CU_AD_FORMAT_SIGNED_INT32:
    case CU_AD_FORMAT_FLOAT: return 4;
    }
    return 0;
}

/* Bytes of a w x h x d array (0 dimensions count as 1) over `levels`
 * mipmap levels; 0 when a value is invalid, UINT64_MAX on overflow. */
static uint64_t array_bytes(size_t w, size_t h, size_t d, CUarray_format f, unsigned int ch,
                            unsigned int levels)
{
    size_t elem = format_bytes(f);
    if (elem == 0 || (ch != 1 && ch != 2 && ch != 4) || w == 0 || levels == 0 || levels > 32)
        return 0;
    uint64_t total = 0;
    for (unsigned int l = 0; l < levels; l++) {
        uint64_t lw = w >> l ? w >> l : 1, lh = h >> l ? h >> l : 1, ld = d >> l ? d >> l : 1, b;
        if (__builtin_mul_overflow(lw, lh, &b) || __builtin_mul_overflow(b, ld, &b) ||
            __builtin_mul_overflow(b, (uint64_t)elem * ch, &b) ||
            __builtin_add_overflow(total, b, &total))
            return UINT64_MAX;
    }
    return total;
}

static CUresult array_create(uint64_t bytes, enum kind kind, void **out)
{
    NEED_INIT();
    if (out == NULL || bytes == 0)
        return CUDA_ERROR_INVALID_VALUE;
    CUdeviceptr p;
    CUresult r = alloc_on_current(&p, bytes == UINT64_MAX ? PTR_OFFSET_MASK + 1 : bytes, kind);
    if (r == CUDA_SUCCESS)
        *out = (void *)(uintptr_t)p;
    return r;
}

API CUresult cuArrayCreate_v2(CUarray *arr, const CUDA_ARRAY_DESCRIPTOR *d)
{
    if (d == NULL)
        return CUDA_ERROR_INVALID_VALUE;
    return array_create(array_bytes(d->Width, d->Height, 0, d->Format, d->NumChannels, 1), K_ARRAY,
                        (void **)arr);
}

API CUresult cuArray3DCreate_v2(CUarray *arr, const CUDA_ARRAY3D_DESCRIPTOR *d)
{
    if (d == NULL)
        return CUDA_ERROR_INVALID_VALUE;
    return array_create(array_bytes(d->Width, d->Height, d->Depth, d->Format, d->NumChannels, 1),
                        K_ARRAY, (void **)arr);
}

API CUresult cuArrayDestroy(CUarray arr)
{
    NEED_INIT();
    return release_slot((CUdeviceptr)(uintptr_t)arr, K_ARRAY) == CUDA_SUCCESS
               ? CUDA_SUCCESS
               : CUDA_ERROR_INVALID_HANDLE;
}

API CUresult cuMipmappedArrayCreate(CUmipmappedArray *arr, const CUDA_ARRAY3D_DESCRIPTOR *d,
                                    unsigned int levels)
{
    if (d == NULL)
        return CUDA_ERROR_INVALID_VALUE;
    return array_create(
        array_bytes(d->Width, d->Height, d->Depth, d->Format, d->NumChannels, levels), K_MIPMAP,
        (void **)arr);
}

API CUresult cuMipmappedArrayDestroy(CUmipmappedArray arr)
{
    NEED_INIT();
    return release_slot((CUdeviceptr)(uintptr_t)arr, K_MIPMAP) == CUDA_SUCCESS
               ? CUDA_SUCCESS
               : CUDA_ERROR_INVALID_HANDLE;
}

/* Virtual memory management: handles are counted, reservations are not. */
API CUresult cuMemGetAllocationGranularity(size_t *g, const CUmemAllocationProp *prop, int flags)
{
    NEED_INIT();
    if (g == NULL || prop == NULL || (flags != CU_MEM_ALLOC_GRANULARITY_MINIMUM &&
                                      flags != CU_MEM_ALLOC_GRANULARITY_RECOMMENDED))
        return CUDA_ERROR_INVALID_VALUE;
    *g = VMM_GRANULARITY;
    return CUDA_SUCCESS;
}

API CUresult cuMemCreate(CUmemGenericAllocationHandle *h, size_t bytes,
                         const CUmemAllocationProp *prop, unsigned long long flags)
{
    NEED_INIT();
    if (h == NULL || prop == NULL || flags != 0 || bytes % VMM_GRANULARITY != 0 ||
        prop->type != CU_MEM_ALLOCATION_TYPE_PINNED ||
        prop->location.type != CU_MEM_LOCATION_TYPE_DEVICE)
        return CUDA_ERROR_INVALID_VALUE;
    if (!valid_dev(prop->location.id))
        return CUDA_ERROR_INVALID_DEVICE;
    return new_slot(prop->location.id, K_VMM, bytes, true, h);
}

static unsigned int slot_of(CUdeviceptr p)
{
    return (unsigned int)((p >> PTR_SLOT_SHIFT) & (MAX_SLOTS - 1));
}

/* As the real driver: a handle released while mapped keeps its memory
 * until its last mapping goes (the CUDA samples release right after
 * mapping); the handle itself is gone at once. */
API CUresult cuMemRelease(CUmemGenericAllocationHandle h)
{
    NEED_INIT();
    unsigned int i = slot_of(h);
    pthread_mutex_lock(&lock);
    bool mapped = (h & PTR_TAG) && i < slot_count && slots[i].kind == K_VMM &&
                  !slots[i].released && slots[i].maps > 0;
    if (mapped)
        slots[i].released = true;
    pthread_mutex_unlock(&lock);
    return mapped ? CUDA_SUCCESS : release_slot(h, K_VMM);
}

API CUresult cuMemAddressReserve(CUdeviceptr *ptr, size_t bytes, size_t align, CUdeviceptr addr,
                                 unsigned long long flags)
{
    NEED_INIT();
    (void)addr;
    if (ptr == NULL || flags != 0 || bytes % VMM_GRANULARITY != 0 || (align & (align - 1)) != 0)
        return CUDA_ERROR_INVALID_VALUE;
    return new_slot(0, K_RESERVE, bytes, false, ptr);
}

API CUresult cuMemAddressFree(CUdeviceptr ptr, size_t bytes)
{
    NEED_INIT();
    (void)bytes;
    return release_slot(ptr, K_RESERVE);
}

/* Called with lock held. */
static bool is_slot_locked(CUdeviceptr p, enum kind kind)
{
    unsigned int i = slot_of(p);
    return (p & PTR_TAG) && i < slot_count && slots[i].kind == kind &&
           !(kind == K_VMM && slots[i].released);
}

static bool is_slot(CUdeviceptr p, enum kind kind)
{
    pthread_mutex_lock(&lock);
    bool ok = is_slot_locked(p, kind);
    pthread_mutex_unlock(&lock);
    return ok;
}

/* One handle mapped at the start of a reservation. */
API CUresult cuMemMap(CUdeviceptr ptr, size_t bytes, size_t offset, CUmemGenericAllocationHandle h,
                      unsigned long long flags)
{
    NEED_INIT();
    if (flags != 0 || offset != 0 || bytes == 0)
        return CUDA_ERROR_INVALID_VALUE;
    CUresult r = CUDA_SUCCESS;
    pthread_mutex_lock(&lock);
    if (!is_slot_locked(ptr, K_RESERVE) || slots[slot_of(ptr)].mapped)
        r = CUDA_ERROR_INVALID_VALUE;
    else if (!is_slot_locked(h, K_VMM))
        r = CUDA_ERROR_INVALID_HANDLE;
    else {
        slots[slot_of(ptr)].mapped = slot_of(h) + 1;
        slots[slot_of(h)].maps++;
    }
    pthread_mutex_unlock(&lock);
    return r;
}

API CUresult cuMemUnmap(CUdeviceptr ptr, size_t bytes)
{
    NEED_INIT();
    if (bytes == 0)
        return CUDA_ERROR_INVALID_VALUE;
    pthread_mutex_lock(&lock);
    bool ok = is_slot_locked(ptr, K_RESERVE);
    unsigned int m = ok ? slots[slot_of(ptr)].mapped : 0;
    struct slot gone = {0};
    if (m) {
        slots[slot_of(ptr)].mapped = 0;
        struct slot *h = &slots[m - 1];
        if (--h->maps == 0 && h->released) { /* its memory goes with its last mapping */
            gone = *h;
            *h = (struct slot){.kind = K_FREE, .next_free = free_head};
            free_head = m - 1;
        }
    }
    pthread_mutex_unlock(&lock);
    if (gone.bytes)
        sim_dev_free(shared, (unsigned int)visible[gone.gpu], gone.bytes);
    return ok ? CUDA_SUCCESS : CUDA_ERROR_INVALID_VALUE;
}

API CUresult cuMemSetAccess(CUdeviceptr ptr, size_t bytes, const CUmemAccessDesc *desc, size_t count)
{
    NEED_INIT();
    return bytes && desc && count && is_slot(ptr, K_RESERVE) ? CUDA_SUCCESS
                                                              : CUDA_ERROR_INVALID_VALUE;
}

/* ---- streams, events ---- */

static bool valid_stream(CUstream s)
{
    /* NULL, CU_STREAM_LEGACY and CU_STREAM_PER_THREAD name the default stream. */
    return (uintptr_t)s <= 2 || is_handle(s, MAGIC_STREAM);
}

API CUresult cuStreamCreate(CUstream *ps, unsigned int flags)
{
    NEED_INIT();
    if (ps == NULL || flags > 1)
        return CUDA_ERROR_INVALID_VALUE;
    struct CUctx_st *c = live_current();
    if (c == NULL)
        return CUDA_ERROR_INVALID_CONTEXT;
    struct CUstream_st *s = handle_new(sizeof *s, MAGIC_STREAM);
    if (s == NULL)
        return CUDA_ERROR_OUT_OF_MEMORY;
    s->ctx = c;
    *ps = s;
    return CUDA_SUCCESS;
}

API CUresult cuStreamDestroy_v2(CUstream s)
{
    NEED_INIT();
    if ((uintptr_t)s <= 2 || !is_handle(s, MAGIC_STREAM))
        return CUDA_ERROR_INVALID_HANDLE;
    handle_free(s);
    return CUDA_SUCCESS;
}

static uint64_t *stream_end(CUstream s, struct CUctx_st *c)
{
    return (uintptr_t)s <= 2 ? &c->last_end : &s->last_end;
}

API CUresult cuStreamSynchronize(CUstream s)
{
    NEED_INIT();
    struct CUctx_st *c = live_current();
    if (!valid_stream(s))
        return CUDA_ERROR_INVALID_HANDLE;
    if (c == NULL && (uintptr_t)s <= 2)
        return CUDA_ERROR_INVALID_CONTEXT;
    wait_until(__atomic_load_n(stream_end(s, c), __ATOMIC_ACQUIRE));
    return CUDA_SUCCESS;
}

API CUresult cuStreamSynchronize_ptsz(CUstream s)
{
    return cuStreamSynchronize(s);
}

API CUresult cuStreamQuery(CUstream s)
{
    NEED_INIT();
    struct CUctx_st *c = live_current();
    if (!valid_stream(s))
        return CUDA_ERROR_INVALID_HANDLE;
    if (c == NULL && (uintptr_t)s <= 2)
        return CUDA_ERROR_INVALID_CONTEXT;
    return sim_dev_now_ns() >= *stream_end(s, c) ? CUDA_SUCCESS : CUDA_ERROR_NOT_READY;
}

API CUresult cuStreamQuery_ptsz(CUstream s)
{
    return cuStreamQuery(s);
}

API CUresult cuEventCreate(CUevent *pe, unsigned int flags)
{
    NEED_INIT();
    if (pe == NULL || flags > 0xf)
        return CUDA_ERROR_INVALID_VALUE;
    if (live_current() == NULL)
        return CUDA_ERROR_INVALID_CONTEXT;
    struct CUevent_st *e = handle_new(sizeof *e, MAGIC_EVENT);
    if (e == NULL)
        return CUDA_ERROR_OUT_OF_MEMORY;
    *pe = e;
    return CUDA_SUCCESS;
}

API CUresult cuEventDestroy_v2(CUevent e)
{
    NEED_INIT();
    if (!is_handle(e, MAGIC_EVENT))
        return CUDA_ERROR_INVALID_HANDLE;
    handle_free(e);
    return CUDA_SUCCESS;
}

/* Work queued on a stream goes on the GPU's one timeline, and so does an
 * event: it happens when the GPU gets to it. */
static CUresult graph_alloc(struct CUgraph_st *g, int dev, uint64_t bytes, CUdeviceptr *dptr);

/* The graph s is capturing into; NULL when it is not capturing. */
static struct CUgraph_st *capturing(CUstream s)
{
    return (uintptr_t)s > 2 && is_handle(s, MAGIC_STREAM) ? s->capture : NULL;
}

static CUresult enqueue(CUstream s, uint64_t dur_ns, uint64_t *end)
{
    struct CUctx_st *c = live_current();
    if (c == NULL)
        return CUDA_ERROR_INVALID_CONTEXT;
    if (!valid_stream(s))
        return CUDA_ERROR_INVALID_HANDLE;
    struct CUgraph_st *g = capturing(s);
    if (g) { /* captured: a node of the graph, run when it is launched */
        if (g->count == GRAPH_MAX_KERNELS)
            return CUDA_ERROR_OUT_OF_MEMORY;
        g->kernels[g->count++] = (struct graph_kernel){NULL, dur_ns};
        if (end)
            *end = 0;
        return CUDA_SUCCESS;
    }
    uint64_t *last = stream_end(s, c);
    uint64_t now = sim_dev_now_ns();
    if (*last > now + QUEUE_NS)
        wait_until(*last - QUEUE_NS);
    uint64_t e = sim_dev_enqueue(shared, (unsigned int)visible[c->dev], dur_ns);
    __atomic_store_n(last, e, __ATOMIC_RELEASE);
    if (e > __atomic_load_n(&c->last_end, __ATOMIC_ACQUIRE))
        __atomic_store_n(&c->last_end, e, __ATOMIC_RELEASE);
    if (end)
        *end = e;
    return CUDA_SUCCESS;
}

API CUresult cuEventRecord(CUevent e, CUstream s)
{
    NEED_INIT();
    if (!is_handle(e, MAGIC_EVENT))
        return CUDA_ERROR_INVALID_HANDLE;
    uint64_t at;
    CUresult r = enqueue(s, 0, &at);
    if (r == CUDA_SUCCESS) {
        e->at = at;
        e->recorded = true;
    }
    return r;
}

API CUresult cuEventRecord_ptsz(CUevent e, CUstream s)
{
    return cuEventRecord(e, s);
}

API CUresult cuEventQuery(CUevent e)
{
    NEED_INIT();
    if (!is_handle(e, MAGIC_EVENT))
        return CUDA_ERROR_INVALID_HANDLE;
    return !e->recorded || sim_dev_now_ns() >= e->at ? CUDA_SUCCESS : CUDA_ERROR_NOT_READY;
}

API CUresult cuEventSynchronize(CUevent e)
{
    NEED_INIT();
    if (!is_handle(e, MAGIC_EVENT))
        return CUDA_ERROR_INVALID_HANDLE;
    if (e->recorded)
        wait_until(e->at);
    return CUDA_SUCCESS;
}

API CUresult cuEventElapsedTime(float *ms, CUevent start, CUevent end)
{
    NEED_INIT();
    if (ms == NULL)
        return CUDA_ERROR_INVALID_VALUE;
    if (!is_handle(start, MAGIC_EVENT) || !is_handle(end, MAGIC_EVENT))
        return CUDA_ERROR_INVALID_HANDLE;
    if (!start->recorded || !end->recorded)
        return CUDA_ERROR_INVALID_HANDLE;
    uint64_t now = sim_dev_now_ns();
    if (now < start->at || now < end->at)
        return CUDA_ERROR_NOT_READY;
    *ms = (float)((double)((int64_t)(end->at - start->at)) / 1e6);
    return CUDA_SUCCESS;
}

/* ---- modules, kernels ---- */

API CUresult cuModuleLoadData(CUmodule *mod, const void *image)
{
    NEED_INIT();
    if (mod == NULL || image == NULL)
        return CUDA_ERROR_INVALID_VALUE;
    if (live_current() == NULL)
        return CUDA_ERROR_INVALID_CONTEXT;
    struct CUmod_st *m = handle_new(sizeof *m, MAGIC_MODULE);
    if (m == NULL)
        return CUDA_ERROR_OUT_OF_MEMORY;
    *mod = m;
    return CUDA_SUCCESS;
}

API CUresult cuModuleLoad(CUmodule *mod, const char *path)
{
    if (path == NULL)
        return CUDA_ERROR_INVALID_VALUE;
    if (access(path, R_OK) != 0)
        return CUDA_ERROR_FILE_NOT_FOUND;
    return cuModuleLoadData(mod, path);
}

API CUresult cuModuleUnload(CUmodule mod)
{
    NEED_INIT();
    if (!is_handle(mod, MAGIC_MODULE))
        return CUDA_ERROR_INVALID_HANDLE;
    handle_free(mod);
    return CUDA_SUCCESS;
}

/* Functions live as long as the process (a program may keep using a
 * CUfunction after unloading its module and gets an error, not a crash),
 * so there is a bound on how many are made. */
#define MAX_FUNCTIONS 4096
static struct CUfunc_st *functions[MAX_FUNCTIONS];
static size_t function_count;

API CUresult cuModuleGetFunction(CUfunction *fn, CUmodule mod, const char *name)
{
    NEED_INIT();
    if (fn == NULL || name == NULL || name[0] == '\0')
        return CUDA_ERROR_INVALID_VALUE;
    if (!is_handle(mod, MAGIC_MODULE))
        return CUDA_ERROR_INVALID_HANDLE;
    size_t len = strlen(name), i = len;
    while (i > 0 && name[i - 1] >= '0' && name[i - 1] <= '9')
        i--;
    pthread_mutex_lock(&lock);
    struct CUfunc_st *f = function_count < MAX_FUNCTIONS ? handle_new(sizeof *f, MAGIC_FUNCTION) : NULL;
    if (f)
        functions[function_count++] = f;
    pthread_mutex_unlock(&lock);
    if (f == NULL)
        return CUDA_ERROR_OUT_OF_MEMORY;
    f->ns_per_thread = i < len && len - i < 12 ? strtoull(name + i, NULL, 10) : 0;
    *fn = f;
    return CUDA_SUCCESS;
}

static bool valid_fn(CUfunction f)
{
    return is_handle(f, MAGIC_FUNCTION);
}

/* How long a launch occupies the GPU; 0 with *r set when it is invalid. */
static uint64_t launch_ns(CUfunction f, unsigned int gx, unsigned int gy, unsigned int gz,
                          unsigned int bx, unsigned int by, unsigned int bz, CUresult *r)
{
    uint64_t blocks = (uint64_t)gx * gy * gz, threads = (uint64_t)bx * by * bz, ns;
    *r = CUDA_SUCCESS;
    if (!valid_fn(f))
        *r = CUDA_ERROR_INVALID_HANDLE;
    else if (blocks == 0 || threads == 0 || gy > 65535 || gz > 65535 || bz > 64)
        *r = CUDA_ERROR_INVALID_VALUE;
    else if (threads > 1024)
        *r = CUDA_ERROR_LAUNCH_OUT_OF_RESOURCES;
    if (*r != CUDA_SUCCESS || __builtin_mul_overflow(blocks * threads, f->ns_per_thread, &ns))
        return *r == CUDA_SUCCESS ? UINT64_MAX / 4 : 0;
    return ns;
}

API CUresult cuLaunchKernel(CUfunction f, unsigned int gx, unsigned int gy, unsigned int gz,
                            unsigned int bx, unsigned int by, unsigned int bz, unsigned int shmem,
                            CUstream s, void **params, void **extra)
{
    NEED_INIT();
    (void)params;
    (void)extra;
    (void)shmem;
    CUresult r;
    uint64_t ns = launch_ns(f, gx, gy, gz, bx, by, bz, &r);
    return r == CUDA_SUCCESS ? enqueue(s, ns, NULL) : r;
}

API CUresult cuLaunchKernel_ptsz(CUfunction f, unsigned int gx, unsigned int gy, unsigned int gz,
                                 unsigned int bx, unsigned int by, unsigned int bz,
                                 unsigned int shmem, CUstream s, void **params, void **extra)
{
    return cuLaunchKernel(f, gx, gy, gz, bx, by, bz, shmem, s, params, extra);
}

API CUresult cuLaunchKernelEx(const CUlaunchConfig *cfg, CUfunction f, void **params, void **extra)
{
    if (cfg == NULL)
        return CUDA_ERROR_INVALID_VALUE;
    return cuLaunchKernel(f, cfg->gridDimX, cfg->gridDimY, cfg->gridDimZ, cfg->blockDimX,
                          cfg->blockDimY, cfg->blockDimZ, cfg->sharedMemBytes, cfg->hStream,
                          params, extra);
}

API CUresult cuLaunchKernelEx_ptsz(const CUlaunchConfig *cfg, CUfunction f, void **params,
                                   void **extra)
{
    return cuLaunchKernelEx(cfg, f, params, extra);
}

/* All blocks of a cooperative grid must be resident at once: at most 32
 * per multiprocessor. */
API CUresult cuLaunchCooperativeKernel(CUfunction f, unsigned int gx, unsigned int gy,
                                       unsigned int gz, unsigned int bx, unsigned int by,
                                       unsigned int bz, unsigned int shmem, CUstream s,
                                       void **params)
{
    NEED_INIT();
    struct CUctx_st *c = live_current();
    if (c == NULL)
        return CUDA_ERROR_INVALID_CONTEXT;
    if ((uint64_t)gx * gy * gz > 32ULL * node->gpus[visible[c->dev]].multiprocessors)
        return CUDA_ERROR_COOPERATIVE_LAUNCH_TOO_LARGE;
    return cuLaunchKernel(f, gx, gy, gz, bx, by, bz, shmem, s, params, NULL);
}

API CUresult cuLaunchCooperativeKernel_ptsz(CUfunction f, unsigned int gx, unsigned int gy,
                                            unsigned int gz, unsigned int bx, unsigned int by,
                                            unsigned int bz, unsigned int shmem, CUstream s,
                                            void **params)
{
    return cuLaunchCooperativeKernel(f, gx, gy, gz, bx, by, bz, shmem, s, params);
}

/* ---- stream-ordered allocation ---- */

API CUresult cuDeviceGetDefaultMemPool(CUmemoryPool *pool, CUdevice dev)
{
    NEED_INIT();
    if (pool == NULL)
        return CUDA_ERROR_INVALID_VALUE;
    if (!valid_dev(dev))
        return CUDA_ERROR_INVALID_DEVICE;
    *pool = &default_pool[dev];
    return CUDA_SUCCESS;
}

API CUresult cuMemPoolCreate(CUmemoryPool *pool, const CUmemPoolProps *props)
{
    NEED_INIT();
    if (pool == NULL || props == NULL || props->allocType != CU_MEM_ALLOCATION_TYPE_PINNED ||
        props->location.type != CU_MEM_LOCATION_TYPE_DEVICE)
        return CUDA_ERROR_INVALID_VALUE;
    if (!valid_dev(props->location.id))
        return CUDA_ERROR_INVALID_DEVICE;
    struct CUmemPoolHandle_st *p = handle_new(sizeof *p, MAGIC_POOL);
    if (p == NULL)
        return CUDA_ERROR_OUT_OF_MEMORY;
    p->dev = props->location.id;
    *pool = p;
    return CUDA_SUCCESS;
}

API CUresult cuMemPoolDestroy(CUmemoryPool pool)
{
    NEED_INIT();
    if (!is_handle(pool, MAGIC_POOL) || (pool >= default_pool &&
                                                      pool < default_pool + SIM_MAX_GPUS))
        return CUDA_ERROR_INVALID_VALUE;
    handle_free(pool);
    return CUDA_SUCCESS;
}

/* Freed memory goes straight back to the GPU: the simulated pools keep
 * nothing (a release threshold of 0, reached at once). */
API CUresult cuMemAllocFromPoolAsync(CUdeviceptr *dptr, size_t bytes, CUmemoryPool pool,
                                     CUstream s)
{
    NEED_INIT();
    if (dptr == NULL || !is_handle(pool, MAGIC_POOL))
        return CUDA_ERROR_INVALID_VALUE;
    if (!valid_stream(s))
        return CUDA_ERROR_INVALID_HANDLE;
    struct CUgraph_st *g = capturing(s);
    if (g == NULL)
        return new_slot(pool->dev, K_DEVICE, bytes, true, dptr);
    /* captured: a memory node; the memory is the graph's when it runs */
    return graph_alloc(g, pool->dev, bytes, dptr);
}

API CUresult cuMemAllocFromPoolAsync_ptsz(CUdeviceptr *dptr, size_t bytes, CUmemoryPool pool,
                                          CUstream s)
{
    return cuMemAllocFromPoolAsync(dptr, bytes, pool, s);
}

API CUresult cuMemAllocAsync(CUdeviceptr *dptr, size_t bytes, CUstream s)
{
    NEED_INIT();
    struct CUctx_st *c = live_current();
    if (c == NULL)
        return CUDA_ERROR_INVALID_CONTEXT;
    return cuMemAllocFromPoolAsync(dptr, bytes, &default_pool[c->dev], s);
}

API CUresult cuMemAllocAsync_ptsz(CUdeviceptr *dptr, size_t bytes, CUstream s)
{
    return cuMemAllocAsync(dptr, bytes, s);
}

API CUresult cuMemFreeAsync(CUdeviceptr ptr, CUstream s)
{
    NEED_INIT();
    if (!valid_stream(s))
        return CUDA_ERROR_INVALID_HANDLE;
    return release_slot(ptr, K_DEVICE);
}

API CUresult cuMemFreeAsync_ptsz(CUdeviceptr ptr, CUstream s)
{
    return cuMemFreeAsync(ptr, s);
}

/* ---- graphs: kernel nodes only ---- */

/* A memory node of g: its address now, its memory while an exec of g
 * lives (the real driver takes it at launch and keeps it in the graph
 * memory pool). */
static CUresult graph_alloc(struct CUgraph_st *g, int dev, uint64_t bytes, CUdeviceptr *dptr)
{
    if (g->alloc_bytes && g->alloc_dev != dev)
        return CUDA_ERROR_NOT_SUPPORTED; /* the simulator's graphs allocate on one GPU */
    CUresult r = new_slot(dev, K_DEVICE, bytes, false, dptr);
    if (r == CUDA_SUCCESS) {
        g->alloc_bytes += bytes;
        g->alloc_dev = dev;
    }
    return r;
}

API CUresult cuGraphAddMemAllocNode(CUgraphNode *node_out, CUgraph g, const CUgraphNode *deps,
                                    size_t ndeps, CUDA_MEM_ALLOC_NODE_PARAMS *p)
{
    NEED_INIT();
    if (node_out == NULL || p == NULL || p->bytesize == 0 || (ndeps > 0 && deps == NULL) ||
        !is_handle(g, MAGIC_GRAPH) || p->poolProps.location.type != CU_MEM_LOCATION_TYPE_DEVICE)
        return CUDA_ERROR_INVALID_VALUE;
    if (!valid_dev(p->poolProps.location.id))
        return CUDA_ERROR_INVALID_DEVICE;
    CUresult r = graph_alloc(g, p->poolProps.location.id, p->bytesize, &p->dptr);
    if (r == CUDA_SUCCESS)
        *node_out = (CUgraphNode)(void *)&g->alloc_bytes;
    return r;
}

/* The generic form (CUgraphNodeParams): the simulator makes memory
 * nodes (type 10) this way; other types are not simulated. */
#define SIM_NODE_TYPE_MEM_ALLOC 10
API CUresult cuGraphAddNode(CUgraphNode *node_out, CUgraph g, const CUgraphNode *deps,
                            size_t ndeps, void *params)
{
    NEED_INIT();
    if (params == NULL)
        return CUDA_ERROR_INVALID_VALUE;
    int type;
    memcpy(&type, params, sizeof type);
    if (type != SIM_NODE_TYPE_MEM_ALLOC)
        return CUDA_ERROR_NOT_SUPPORTED;
    return cuGraphAddMemAllocNode(node_out, g, deps, ndeps,
                                  (CUDA_MEM_ALLOC_NODE_PARAMS *)((char *)params + 16));
}

/* _v2 adds data for each dependency edge, unused here. */
API CUresult cuGraphAddNode_v2(CUgraphNode *node_out, CUgraph g, const CUgraphNode *deps,
                               const void *edges, size_t ndeps, void *params)
{
    (void)edges;
    return cuGraphAddNode(node_out, g, deps, ndeps, params);
}

API CUresult cuStreamBeginCapture_v2(CUstream s, int mode)
{
    NEED_INIT();
    if (mode < 0 || mode > 2)
        return CUDA_ERROR_INVALID_VALUE;
    if ((uintptr_t)s <= 2) /* the default stream cannot be captured */
        return CUDA_ERROR_STREAM_CAPTURE_UNSUPPORTED;
    if (!is_handle(s, MAGIC_STREAM))
        return CUDA_ERROR_INVALID_HANDLE;
    if (s->capture)
        return CUDA_ERROR_ILLEGAL_STATE;
    struct CUgraph_st *g = handle_new(sizeof *g, MAGIC_GRAPH);
    if (g == NULL)
        return CUDA_ERROR_OUT_OF_MEMORY;
    s->capture = g;
    return CUDA_SUCCESS;
}

API CUresult cuStreamEndCapture(CUstream s, CUgraph *graph)
{
    NEED_INIT();
    if (graph == NULL)
        return CUDA_ERROR_INVALID_VALUE;
    if ((uintptr_t)s <= 2 || !is_handle(s, MAGIC_STREAM) || s->capture == NULL)
        return CUDA_ERROR_ILLEGAL_STATE;
    *graph = s->capture;
    s->capture = NULL;
    return CUDA_SUCCESS;
}

API CUresult cuStreamIsCapturing(CUstream s, int *status)
{
    NEED_INIT();
    if (status == NULL)
        return CUDA_ERROR_INVALID_VALUE;
    if (!valid_stream(s))
        return CUDA_ERROR_INVALID_HANDLE;
    *status = capturing(s) ? CU_STREAM_CAPTURE_STATUS_ACTIVE : CU_STREAM_CAPTURE_STATUS_NONE;
    return CUDA_SUCCESS;
}

API CUresult cuGraphCreate(CUgraph *graph, unsigned int flags)
{
    NEED_INIT();
    if (graph == NULL || flags != 0)
        return CUDA_ERROR_INVALID_VALUE;
    struct CUgraph_st *g = handle_new(sizeof *g, MAGIC_GRAPH);
    if (g == NULL)
        return CUDA_ERROR_OUT_OF_MEMORY;
    *graph = g;
    return CUDA_SUCCESS;
}

static CUresult add_kernel_node(CUgraphNode *node_out, CUgraph g, const CUDA_KERNEL_NODE_PARAMS *p)
{
    NEED_INIT();
    if (node_out == NULL || p == NULL)
        return CUDA_ERROR_INVALID_VALUE;
    if (!is_handle(g, MAGIC_GRAPH))
        return CUDA_ERROR_INVALID_VALUE;
    if (g->count == GRAPH_MAX_KERNELS)
        return CUDA_ERROR_OUT_OF_MEMORY;
    CUresult r;
    uint64_t ns = launch_ns(p->func, p->gridDimX, p->gridDimY, p->gridDimZ, p->blockDimX,
                            p->blockDimY, p->blockDimZ, &r);
    if (r != CUDA_SUCCESS)
        return r;
    g->kernels[g->count] = (struct graph_kernel){p->func, ns};
    *node_out = (CUgraphNode)(void *)&g->kernels[g->count++];
    return CUDA_SUCCESS;
}

API CUresult cuGraphAddKernelNode_v2(CUgraphNode *n, CUgraph g, const CUgraphNode *deps,
                                     size_t ndeps, const CUDA_KERNEL_NODE_PARAMS *p)
{
    if (ndeps > 0 && deps == NULL)
        return CUDA_ERROR_INVALID_VALUE;
    return add_kernel_node(n, g, p);
}

/* The v1 structure is the first ten fields of the v2 one. */
API CUresult cuGraphAddKernelNode(CUgraphNode *n, CUgraph g, const CUgraphNode *deps, size_t ndeps,
                                  const void *p1)
{
    if (p1 == NULL || (ndeps > 0 && deps == NULL))
        return CUDA_ERROR_INVALID_VALUE;
    CUDA_KERNEL_NODE_PARAMS p = {0};
    memcpy(&p, p1, offsetof(CUDA_KERNEL_NODE_PARAMS, kern));
    return add_kernel_node(n, g, &p);
}

API CUresult cuGraphInstantiateWithFlags(CUgraphExec *exec, CUgraph g, unsigned long long flags)
{
    NEED_INIT();
    if (exec == NULL || !is_handle(g, MAGIC_GRAPH) || flags > 0xf)
        return CUDA_ERROR_INVALID_VALUE;
    if (g->alloc_bytes && !sim_dev_alloc(shared, (unsigned int)visible[g->alloc_dev],
                                         g->alloc_bytes, capacity(g->alloc_dev)))
        return CUDA_ERROR_OUT_OF_MEMORY;
    struct CUgraphExec_st *e = handle_new(sizeof *e, MAGIC_EXEC);
    if (e == NULL) {
        if (g->alloc_bytes)
            sim_dev_free(shared, (unsigned int)visible[g->alloc_dev], g->alloc_bytes);
        return CUDA_ERROR_OUT_OF_MEMORY;
    }
    for (size_t i = 0; i < g->count; i++)
        e->dur_ns += g->kernels[i].ns;
    e->alloc_bytes = g->alloc_bytes;
    e->alloc_dev = g->alloc_dev;
    *exec = e;
    return CUDA_SUCCESS;
}

API CUresult cuGraphLaunch(CUgraphExec e, CUstream s)
{
    NEED_INIT();
    if (!is_handle(e, MAGIC_EXEC))
        return CUDA_ERROR_INVALID_VALUE;
    return enqueue(s, e->dur_ns, NULL);
}

API CUresult cuGraphLaunch_ptsz(CUgraphExec e, CUstream s)
{
    return cuGraphLaunch(e, s);
}

API CUresult cuGraphExecDestroy(CUgraphExec e)
{
    NEED_INIT();
    if (!is_handle(e, MAGIC_EXEC))
        return CUDA_ERROR_INVALID_VALUE;
    if (e->alloc_bytes)
        sim_dev_free(shared, (unsigned int)visible[e->alloc_dev], e->alloc_bytes);
    handle_free(e);
    return CUDA_SUCCESS;
}

API CUresult cuGraphDestroy(CUgraph g)
{
    NEED_INIT();
    if (!is_handle(g, MAGIC_GRAPH))
        return CUDA_ERROR_INVALID_VALUE;
    handle_free(g);
    return CUDA_SUCCESS;
}

API CUresult cuGetErrorString(CUresult r, const char **s)
{
    if (s == NULL)
        return CUDA_ERROR_INVALID_VALUE;
    switch (r) {
    case CUDA_SUCCESS: *s = "no error"; break;
    case CUDA_ERROR_INVALID_VALUE: *s = "invalid argument"; break;
    case CUDA_ERROR_OUT_OF_MEMORY: *s = "out of memory"; break;
    case CUDA_ERROR_NOT_INITIALIZED: *s = "initialization error"; break;
    case CUDA_ERROR_NO_DEVICE: *s = "no CUDA-capable device is detected"; break;
    case CUDA_ERROR_INVALID_DEVICE: *s = "invalid device ordinal"; break;
    case CUDA_ERROR_INVALID_CONTEXT: *s = "invalid device context"; break;
    case CUDA_ERROR_INVALID_HANDLE: *s = "invalid resource handle"; break;
    case CUDA_ERROR_NOT_FOUND: *s = "named symbol not found"; break;
    case CUDA_ERROR_NOT_READY: *s = "device not ready"; break;
    default: *s = NULL; return CUDA_ERROR_INVALID_VALUE;
    }
    return CUDA_SUCCESS;
}

/* ---- cuGetProcAddress ---- */

API CUresult cuGetProcAddress(const char *symbol, void **pfn, int cuda_version, cuuint64_t flags);
API CUresult cuGetProcAddress_v2(const char *symbol, void **pfn, int cuda_version,
                                 cuuint64_t flags, CUdriverProcAddressQueryResult *status);

struct proc {
    const char *name; /* the name programs ask for */
    int version;      /* the first CUDA version this variant serves */
    bool per_thread;  /* the _ptsz/_ptds variant */
    void (*fn)(void);
};

#define P(name, version, fn) {name, version, false, (void (*)(void))(fn)}
#define T(name, version, fn) {name, version, true, (void (*)(void))(fn)}

static const struct proc procs[] = {
    P("cuInit", 2000, cuInit),
    P("cuDriverGetVersion", 2020, cuDriverGetVersion),
    P("cuDeviceGet", 2000, cuDeviceGet),
    P("cuDeviceGetCount", 2000, cuDeviceGetCount),
    P("cuDeviceGetName", 2000, cuDeviceGetName),
    P("cuDeviceTotalMem", 3020, cuDeviceTotalMem_v2),
    P("cuDeviceGetAttribute", 2000, cuDeviceGetAttribute),
    P("cuDeviceGetUuid", 9020, cuDeviceGetUuid),
    P("cuDeviceGetUuid", 11040, cuDeviceGetUuid_v2),
    P("cuDevicePrimaryCtxRetain", 7000, cuDevicePrimaryCtxRetain),
    P("cuDevicePrimaryCtxRelease", 7000, cuDevicePrimaryCtxRelease),
    P("cuDevicePrimaryCtxRelease", 11000, cuDevicePrimaryCtxRelease_v2),
    P("cuCtxCreate", 2000, cuCtxCreate),
    P("cuCtxCreate", 3020, cuCtxCreate_v2),
    P("cuCtxCreate", 11040, cuCtxCreate_v3),
    P("cuCtxCreate", 12050, cuCtxCreate_v4),
    P("cuCtxDestroy", 2000, cuCtxDestroy),
    P("cuCtxDestroy", 4000, cuCtxDestroy_v2),
    P("cuCtxSetCurrent", 4000, cuCtxSetCurrent),
    P("cuCtxGetCurrent", 4000, cuCtxGetCurrent),
    P("cuCtxPushCurrent", 4000, cuCtxPushCurrent_v2),
    P("cuCtxPopCurrent", 4000, cuCtxPopCurrent_v2),
    P("cuCtxGetDevice", 2000, cuCtxGetDevice),
    P("cuCtxSetLimit", 3010, cuCtxSetLimit),
    P("cuCtxGetLimit", 3010, cuCtxGetLimit),
    P("cuCtxSynchronize", 2000, cuCtxSynchronize),
    P("cuMemAlloc", 2000, cuMemAlloc),
    P("cuMemAlloc", 3020, cuMemAlloc_v2),
    P("cuMemAllocPitch", 3020, cuMemAllocPitch_v2),
    P("cuMemAllocManaged", 6000, cuMemAllocManaged),
    P("cuMemFree", 2000, cuMemFree),
    P("cuMemFree", 3020, cuMemFree_v2),
    P("cuMemGetInfo", 3020, cuMemGetInfo_v2),
    P("cuMemAllocHost", 3020, cuMemAllocHost_v2),
    P("cuMemHostAlloc", 2020, cuMemHostAlloc),
    P("cuMemFreeHost", 2000, cuMemFreeHost),
    P("cuArrayCreate", 3020, cuArrayCreate_v2),
    P("cuArray3DCreate", 3020, cuArray3DCreate_v2),
    P("cuArrayDestroy", 2000, cuArrayDestroy),
    P("cuMipmappedArrayCreate", 5000, cuMipmappedArrayCreate),
    P("cuMipmappedArrayDestroy", 5000, cuMipmappedArrayDestroy),
    P("cuMemGetAllocationGranularity", 10020, cuMemGetAllocationGranularity),
    P("cuMemCreate", 10020, cuMemCreate),
    P("cuMemRelease", 10020, cuMemRelease),
    P("cuMemAddressReserve", 10020, cuMemAddressReserve),
    P("cuMemAddressFree", 10020, cuMemAddressFree),
    P("cuMemMap", 10020, cuMemMap),
    P("cuMemUnmap", 10020, cuMemUnmap),
    P("cuMemSetAccess", 10020, cuMemSetAccess),
    P("cuStreamCreate", 2000, cuStreamCreate),
    P("cuStreamDestroy", 4000, cuStreamDestroy_v2),
    P("cuStreamSynchronize", 2000, cuStreamSynchronize),
    T("cuStreamSynchronize", 7000, cuStreamSynchronize_ptsz),
    P("cuStreamQuery", 2000, cuStreamQuery),
    T("cuStreamQuery", 7000, cuStreamQuery_ptsz),
    P("cuEventCreate", 2000, cuEventCreate),
    P("cuEventDestroy", 4000, cuEventDestroy_v2),
    P("cuEventRecord", 2000, cuEventRecord),
    T("cuEventRecord", 7000, cuEventRecord_ptsz),
    P("cuEventQuery", 2000, cuEventQuery),
    P("cuEventSynchronize", 2000, cuEventSynchronize),
    P("cuEventElapsedTime", 2000, cuEventElapsedTime),
    P("cuModuleLoad", 2000, cuModuleLoad),
    P("cuModuleLoadData", 2000, cuModuleLoadData),
    P("cuModuleUnload", 2000, cuModuleUnload),
    P("cuModuleGetFunction", 2000, cuModuleGetFunction),
    P("cuLaunchKernel", 4000, cuLaunchKernel),
    T("cuLaunchKernel", 7000, cuLaunchKernel_ptsz),
    P("cuLaunchKernelEx", 11060, cuLaunchKernelEx),
    T("cuLaunchKernelEx", 11060, cuLaunchKernelEx_ptsz),
    P("cuLaunchCooperativeKernel", 9000, cuLaunchCooperativeKernel),
    T("cuLaunchCooperativeKernel", 9000, cuLaunchCooperativeKernel_ptsz),
    P("cuDeviceGetDefaultMemPool", 11020, cuDeviceGetDefaultMemPool),
    P("cuMemPoolCreate", 11020, cuMemPoolCreate),
    P("cuMemPoolDestroy", 11020, cuMemPoolDestroy),
    P("cuMemAllocAsync", 11020, cuMemAllocAsync),
    T("cuMemAllocAsync", 11020, cuMemAllocAsync_ptsz),
    P("cuMemAllocFromPoolAsync", 11020, cuMemAllocFromPoolAsync),
    T("cuMemAllocFromPoolAsync", 11020, cuMemAllocFromPoolAsync_ptsz),
    P("cuMemFreeAsync", 11020, cuMemFreeAsync),
    T("cuMemFreeAsync", 11020, cuMemFreeAsync_ptsz),
    P("cuGraphCreate", 10000, cuGraphCreate),
    P("cuGraphAddKernelNode", 10000, cuGraphAddKernelNode),
    P("cuGraphAddKernelNode", 12000, cuGraphAddKernelNode_v2),
    P("cuGraphAddMemAllocNode", 11040, cuGraphAddMemAllocNode),
    P("cuGraphAddNode", 12020, cuGraphAddNode),
    P("cuGraphAddNode", 12030, cuGraphAddNode_v2),
    P("cuGreenCtxCreate", 12040, cuGreenCtxCreate),
    P("cuGreenCtxDestroy", 12040, cuGreenCtxDestroy),
    P("cuStreamBeginCapture", 10010, cuStreamBeginCapture_v2),
    P("cuStreamEndCapture", 10000, cuStreamEndCapture),
    P("cuStreamIsCapturing", 10000, cuStreamIsCapturing),
    P("cuGraphInstantiateWithFlags", 11040, cuGraphInstantiateWithFlags),
    P("cuGraphInstantiate", 12000, cuGraphInstantiateWithFlags),
    P("cuGraphLaunch", 10000, cuGraphLaunch),
    T("cuGraphLaunch", 10000, cuGraphLaunch_ptsz),
    P("cuGraphExecDestroy", 10000, cuGraphExecDestroy),
    P("cuGraphDestroy", 10000, cuGraphDestroy),
    P("cuGetErrorString", 6000, cuGetErrorString),
    P("cuGetProcAddress", 11030, cuGetProcAddress),
    P("cuGetProcAddress", 12000, cuGetProcAddress_v2),
};

/* The variant of symbol a program built for cuda_version gets: the newest
 * not newer than it, per-thread-stream variants when flags ask for them
 * (or, with neither flag, when CUDA_API_PER_THREAD_DEFAULT_STREAM is set,
 * as the real driver reads it). */
static CUresult proc_address(const char *symbol, void **pfn, int cuda_version,
                             cuuint64_t flags, CUdriverProcAddressQueryResult *status)
{
    if (status)
        *status = CU_GET_PROC_ADDRESS_SYMBOL_NOT_FOUND;
    if (symbol == NULL || pfn == NULL || flags > 3)
        return CUDA_ERROR_INVALID_VALUE;
    *pfn = NULL;
    bool per_thread = flags & CU_GET_PROC_ADDRESS_PER_THREAD_DEFAULT_STREAM;
    if (flags == CU_GET_PROC_ADDRESS_DEFAULT) {
        const char *env = getenv("CUDA_API_PER_THREAD_DEFAULT_STREAM");
        per_thread = env && strcmp(env, "1") == 0;
    }
    const struct proc *best = NULL;
    bool known = false;
    for (size_t i = 0; i < sizeof procs / sizeof procs[0]; i++) {
        const struct proc *p = &procs[i];
        if (strcmp(p->name, symbol) != 0)
            continue;
        known = true;
        if (p->version > cuda_version || (p->per_thread && !per_thread))
            continue;
        /* A per-thread variant, when asked for, wins over any plain one. */
        if (best == NULL || p->per_thread > best->per_thread ||
            (p->per_thread == best->per_thread && p->version > best->version))
            best = p;
    }
    if (best == NULL) {
        if (status && known)
            *status = CU_GET_PROC_ADDRESS_VERSION_NOT_SUFFICIENT;
        return CUDA_ERROR_NOT_FOUND;
    }
    /* POSIX function pointers convert to void *; ISO C needs the copy. */
    memcpy(pfn, &best->fn, sizeof *pfn);
    if (status)
        *status = CU_GET_PROC_ADDRESS_SUCCESS;
    return CUDA_SUCCESS;
}

API CUresult cuGetProcAddress(const char *symbol, void **pfn, int cuda_version, cuuint64_t flags)
{
    return proc_address(symbol, pfn, cuda_version, flags, NULL);
}

API CUresult cuGetProcAddress_v2(const char *symbol, void **pfn, int cuda_version,
                                 cuuint64_t flags, CUdriverProcAddressQueryResult *status)
{
    return proc_address(symbol, pfn, cuda_version, flags, status);
}
