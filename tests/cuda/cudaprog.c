/*
 * cudaprog: a CUDA driver-API program for the tests. It reaches the driver
 * one of five ways (argv[1]: direct, dlsym, dlmopen (a new link-map
 * namespace), procaddr, procaddr-ptsz; dlopen=PATH and dlmopen=PATH open
 * the driver, or a copy of it, at PATH), then
 * runs the operations given as arguments, printing one line each:
 *
 *   alloc:N pitch:W:H managed:N async:N pool:N array:W:H array3d:W:H:D
 *   mipmap:W:H:D:LEVELS vmm:N ctx    allocate (ctx: a context of its own)
 *   vmmrel:N                         as vmm, the handle released once mapped
 *                                    (the CUDA samples' idiom)
 *   ctx3 ctx4                        a context by cuCtxCreate_v3 / _v4
 *   setlimit:LIMIT:VALUE             cuCtxSetLimit (0 stack, 1 FIFO, 2 heap)
 *   graphmem:HOW:N                   a graph allocating N bytes (HOW: capture,
 *                                    a cuMemAllocAsync in a stream capture;
 *                                    node, cuGraphAddMemAllocNode; generic,
 *                                    cuGraphAddNode), instantiated and kept
 *   green                            a green context, made and destroyed
 *   legacy                           the v1 entry points, by dlsym: three
 *                                    cuCtxCreate, two 32-bit cuMemAlloc,
 *                                    the contexts destroyed by cuCtxDestroy
 *   pool1:N                          allocate from a pool made on device 1
 *                                    (made once), whichever device is current
 *   badhandles:HEX                   destroy HEX as a context, stream, event,
 *                                    module, pool, graph and graph exec
 *   fork                             a child frees the last allocation and
 *                                    calls cuInit; the parent waits for it
 *   fill:KIND:CHUNK                  allocate KIND chunks until refused
 *   freeall                          free everything allocated so far
 *   info                             cuMemGetInfo_v2
 *   nvml                             NVML's memory info of device 0 (old and _v2)
 *   badfree:HEX                      cuMemFree_v2 of a pointer never allocated
 *   hold                             print "holding", wait to be killed
 *   wait                             print "waiting", read a line from stdin
 *   retainrace:DEV:THREADS:ROUNDS    THREADS threads retain DEV's primary
 *                                    context at once, then it is released as
 *                                    often; free memory of DEV is printed
 *                                    while held, each round, and at the end
 *   regraph:CHEAP:DEAR:SECONDS       launch a graph of CHEAP 1000 times,
 *                                    then for SECONDS: make an exec of DEAR
 *                                    in place of the last (at the freed
 *                                    address, as allocators reuse it) and
 *                                    launch it 16 times, then one of CHEAP
 *                                    48 times; prints the DEAR launches and
 *                                    how many execs took the first address
 *   run:NAME:BLOCKS:THREADS:SECONDS[:SYNC]  launch kernels back to back
 *   coop:... graph:...               for a while (cooperatively, as graphs),
 *                                    synchronising every SYNC launches (8;
 *                                    0: only at the end, the driver's queue
 *                                    bound alone holds the launches back);
 *                                    prints the launches, the wall time and
 *                                    the time spent waiting for a CPU
 *
 * Device 0 unless PROG_DEVICE says otherwise. Built against the simulated
 * driver here and against the real one in tests/gpu.
 */
#include <dlfcn.h>
#include <pthread.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

#include "cuda/cuda_abi.h"

#define FUNCS(X)                                                                                  \
    X(init, "cuInit", "cuInit", CUresult (*)(unsigned int))                                       \
    X(device_get, "cuDeviceGet", "cuDeviceGet", CUresult (*)(CUdevice *, int))                   \
    X(retain, "cuDevicePrimaryCtxRetain", "cuDevicePrimaryCtxRetain",                             \
      CUresult (*)(CUcontext *, CUdevice))                                                        \
    X(release, "cuDevicePrimaryCtxRelease_v2", "cuDevicePrimaryCtxRelease",                       \
      CUresult (*)(CUdevice))                                                                     \
    X(set_current, "cuCtxSetCurrent", "cuCtxSetCurrent", CUresult (*)(CUcontext))                 \
    X(set_limit, "cuCtxSetLimit", "cuCtxSetLimit", CUresult (*)(int, size_t))                     \
    X(stream_create, "cuStreamCreate", "cuStreamCreate", CUresult (*)(CUstream *, unsigned int))  \
    X(begin_capture, "cuStreamBeginCapture_v2", "cuStreamBeginCapture",                           \
      CUresult (*)(CUstream, int))                                                                \
    X(end_capture, "cuStreamEndCapture", "cuStreamEndCapture", CUresult (*)(CUstream, CUgraph *)) \
    X(mem_node, "cuGraphAddMemAllocNode", "cuGraphAddMemAllocNode",                               \
      CUresult (*)(CUgraphNode *, CUgraph, const CUgraphNode *, size_t,                           \
                   CUDA_MEM_ALLOC_NODE_PARAMS *))                                                 \
    X(add_node, "cuGraphAddNode_v2", "cuGraphAddNode",                                            \
      CUresult (*)(CUgraphNode *, CUgraph, const CUgraphNode *, const void *, size_t, void *))    \
    X(green_create, "cuGreenCtxCreate", "cuGreenCtxCreate",                                       \
      CUresult (*)(CUcontext *, const void *, CUdevice, unsigned int))                            \
    X(green_destroy, "cuGreenCtxDestroy", "cuGreenCtxDestroy", CUresult (*)(CUcontext))           \
    X(ctx_create, "cuCtxCreate_v2", "cuCtxCreate", CUresult (*)(CUcontext *, unsigned int, CUdevice)) \
    X(ctx_destroy, "cuCtxDestroy_v2", "cuCtxDestroy", CUresult (*)(CUcontext))                    \
    X(ctx_create3, "cuCtxCreate_v3", "cuCtxCreate",                                               \
      CUresult (*)(CUcontext *, const void *, int, unsigned int, CUdevice))                       \
    X(ctx_create4, "cuCtxCreate_v4", "cuCtxCreate",                                               \
      CUresult (*)(CUcontext *, const void *, unsigned int, CUdevice))                            \
    X(alloc, "cuMemAlloc_v2", "cuMemAlloc", CUresult (*)(CUdeviceptr *, size_t))                  \
    X(pitch, "cuMemAllocPitch_v2", "cuMemAllocPitch",                                             \
      CUresult (*)(CUdeviceptr *, size_t *, size_t, size_t, unsigned int))                        \
    X(managed, "cuMemAllocManaged", "cuMemAllocManaged",                                          \
      CUresult (*)(CUdeviceptr *, size_t, unsigned int))                                          \
    X(mfree, "cuMemFree_v2", "cuMemFree", CUresult (*)(CUdeviceptr))                              \
    X(async, "cuMemAllocAsync", "cuMemAllocAsync", CUresult (*)(CUdeviceptr *, size_t, CUstream)) \
    X(pool, "cuDeviceGetDefaultMemPool", "cuDeviceGetDefaultMemPool",                             \
      CUresult (*)(CUmemoryPool *, CUdevice))                                                     \
    X(pool_alloc, "cuMemAllocFromPoolAsync", "cuMemAllocFromPoolAsync",                           \
      CUresult (*)(CUdeviceptr *, size_t, CUmemoryPool, CUstream))                                \
    X(free_async, "cuMemFreeAsync", "cuMemFreeAsync", CUresult (*)(CUdeviceptr, CUstream))        \
    X(pool_create, "cuMemPoolCreate", "cuMemPoolCreate",                                          \
      CUresult (*)(CUmemoryPool *, const CUmemPoolProps *))                                       \
    X(pool_destroy, "cuMemPoolDestroy", "cuMemPoolDestroy", CUresult (*)(CUmemoryPool))           \
    X(stream_destroy, "cuStreamDestroy_v2", "cuStreamDestroy", CUresult (*)(CUstream))            \
    X(event_destroy, "cuEventDestroy_v2", "cuEventDestroy", CUresult (*)(CUevent))                \
    X(array, "cuArrayCreate_v2", "cuArrayCreate",                                                 \
      CUresult (*)(CUarray *, const CUDA_ARRAY_DESCRIPTOR *))                                     \
    X(array3d, "cuArray3DCreate_v2", "cuArray3DCreate",                                           \
      CUresult (*)(CUarray *, const CUDA_ARRAY3D_DESCRIPTOR *))                                   \
    X(array_destroy, "cuArrayDestroy", "cuArrayDestroy", CUresult (*)(CUarray))                   \
    X(mipmap, "cuMipmappedArrayCreate", "cuMipmappedArrayCreate",                                 \
      CUresult (*)(CUmipmappedArray *, const CUDA_ARRAY3D_DESCRIPTOR *, unsigned int))            \
    X(mipmap_destroy, "cuMipmappedArrayDestroy", "cuMipmappedArrayDestroy",                       \
      CUresult (*)(CUmipmappedArray))                                                             \
    X(granularity, "cuMemGetAllocationGranularity", "cuMemGetAllocationGranularity",              \
      CUresult (*)(size_t *, const CUmemAllocationProp *, int))                                   \
    X(mem_create, "cuMemCreate", "cuMemCreate",                                                   \
      CUresult (*)(CUmemGenericAllocationHandle *, size_t, const CUmemAllocationProp *,           \
                   unsigned long long))                                                           \
    X(mem_release, "cuMemRelease", "cuMemRelease", CUresult (*)(CUmemGenericAllocationHandle))    \
    X(reserve, "cuMemAddressReserve", "cuMemAddressReserve",                                      \
      CUresult (*)(CUdeviceptr *, size_t, size_t, CUdeviceptr, unsigned long long))               \
    X(map, "cuMemMap", "cuMemMap",                                                                \
      CUresult (*)(CUdeviceptr, size_t, size_t, CUmemGenericAllocationHandle, unsigned long long))\
    X(unmap, "cuMemUnmap", "cuMemUnmap", CUresult (*)(CUdeviceptr, size_t))                       \
    X(addr_free, "cuMemAddressFree", "cuMemAddressFree", CUresult (*)(CUdeviceptr, size_t))       \
    X(info, "cuMemGetInfo_v2", "cuMemGetInfo", CUresult (*)(size_t *, size_t *))                  \
    X(load, "cuModuleLoadData", "cuModuleLoadData", CUresult (*)(CUmodule *, const void *))       \
    X(get_function, "cuModuleGetFunction", "cuModuleGetFunction",                                 \
      CUresult (*)(CUfunction *, CUmodule, const char *))                                         \
    X(launch, "cuLaunchKernel", "cuLaunchKernel",                                                 \
      CUresult (*)(CUfunction, unsigned int, unsigned int, unsigned int, unsigned int,            \
                   unsigned int, unsigned int, unsigned int, CUstream, void **, void **))         \
    X(coop, "cuLaunchCooperativeKernel", "cuLaunchCooperativeKernel",                             \
      CUresult (*)(CUfunction, unsigned int, unsigned int, unsigned int, unsigned int,            \
                   unsigned int, unsigned int, unsigned int, CUstream, void **))                  \
    X(graph_create, "cuGraphCreate", "cuGraphCreate", CUresult (*)(CUgraph *, unsigned int))      \
    X(graph_add, "cuGraphAddKernelNode_v2", "cuGraphAddKernelNode",                               \
      CUresult (*)(CUgraphNode *, CUgraph, const CUgraphNode *, size_t,                           \
                   const CUDA_KERNEL_NODE_PARAMS *))                                              \
    X(graph_inst, "cuGraphInstantiateWithFlags", "cuGraphInstantiateWithFlags",                   \
      CUresult (*)(CUgraphExec *, CUgraph, unsigned long long))                                   \
    X(graph_launch, "cuGraphLaunch", "cuGraphLaunch", CUresult (*)(CUgraphExec, CUstream))        \
    X(graph_exec_destroy, "cuGraphExecDestroy", "cuGraphExecDestroy", CUresult (*)(CUgraphExec)) \
    X(graph_destroy, "cuGraphDestroy", "cuGraphDestroy", CUresult (*)(CUgraph))                   \
    X(unload, "cuModuleUnload", "cuModuleUnload", CUresult (*)(CUmodule))                         \
    X(sync, "cuCtxSynchronize", "cuCtxSynchronize", CUresult (*)(void))

#define FIELD(f, sym, base, ...) __typeof__(__VA_ARGS__) f;
static struct {
    FUNCS(FIELD)
} cu;

/* Prototypes for the direct way. */
#define PROTO(f, sym, base, ...) extern __typeof__(*(__typeof__(__VA_ARGS__))0) f##_direct __asm__(sym);
FUNCS(PROTO)

enum kind { K_PTR, K_ARRAY, K_MIPMAP, K_VMM, K_VMMREL, K_CTX };
struct held {
    enum kind kind;
    CUdeviceptr p;
    CUmemGenericAllocationHandle h;
    size_t bytes;
};
#define MAX_HELD 65536
static struct held held[MAX_HELD];
static size_t held_count;
static CUdevice dev;

static void keep(enum kind k, CUdeviceptr p, CUmemGenericAllocationHandle h, size_t bytes)
{
    if (held_count < MAX_HELD)
        held[held_count++] = (struct held){k, p, h, bytes};
}

/* The CUDA version a program asks cuGetProcAddress for: 12.0, except
 * where the form wanted came with another (the driver answers a name with
 * the newest form not newer than the version). */
static int proc_version(const char *field)
{
    static const struct {
        const char *field;
        int version;
    } v[] = {{"ctx_create", 3020}, {"ctx_create3", 11040}, {"ctx_create4", 12050},
             {"add_node", 12030}, {"green_create", 12040}, {"green_destroy", 12040}};
    for (size_t i = 0; i < sizeof v / sizeof v[0]; i++)
        if (strcmp(field, v[i].field) == 0)
            return v[i].version;
    return 12000;
}

static int resolve(const char *way)
{
    if (strcmp(way, "direct") == 0) {
#define DIRECT(f, sym, base, ...) cu.f = f##_direct;
        FUNCS(DIRECT)
        return 0;
    }
    /* dlopen=PATH, dlmopen=PATH: the driver under another name */
    const char *path = strchr(way, '=') ? strchr(way, '=') + 1 : "libcuda.so.1";
    if (strcmp(way, "dlsym") == 0 || strncmp(way, "dlmopen", 7) == 0 ||
        strncmp(way, "dlopen=", 7) == 0) {
        void *h = way[2] == 'm' ? dlmopen(LM_ID_NEWLM, path, RTLD_NOW) : dlopen(path, RTLD_NOW);
        if (h == NULL) {
            fprintf(stderr, "cudaprog: cannot open %s: %s\n", path, dlerror());
            return -1;
        }
#define DLSYM(f, sym, base, ...) *(void **)&cu.f = dlsym(h, sym);
        FUNCS(DLSYM)
        return 0;
    }
    if (strncmp(way, "procaddr", 8) == 0) {
        cuuint64_t flags = strcmp(way, "procaddr-ptsz") == 0
                               ? CU_GET_PROC_ADDRESS_PER_THREAD_DEFAULT_STREAM
                               : CU_GET_PROC_ADDRESS_DEFAULT;
        CUresult (*gpa)(const char *, void **, int, cuuint64_t, CUdriverProcAddressQueryResult *);
        void *h = dlopen("libcuda.so.1", RTLD_NOW);
        if (h == NULL)
            return -1;
        *(void **)&gpa = dlsym(h, "cuGetProcAddress_v2");
        if (gpa == NULL)
            return -1;
        CUdriverProcAddressQueryResult st;
#define PROCADDR(f, sym, base, ...) gpa(base, (void **)&cu.f, proc_version(#f), flags, &st);
        FUNCS(PROCADDR)
        return 0;
    }
    return -1;
}

static uint64_t now_ns(void)
{
    struct timespec t;
    clock_gettime(CLOCK_MONOTONIC, &t);
    return (uint64_t)t.tv_sec * 1000000000ULL + (uint64_t)t.tv_nsec;
}

static size_t num(char **save)
{
    char *t = strtok_r(NULL, ":", save);
    return t ? strtoull(t, NULL, 0) : 0;
}

static CUmemoryPool pool1;

static CUresult allocate(const char *kind, char **save, size_t *bytes)
{
    CUdeviceptr p = 0;
    CUresult r;
    *bytes = 0;
    if (strcmp(kind, "pool1") == 0) {
        size_t n = num(save);
        CUmemPoolProps props = {.allocType = CU_MEM_ALLOCATION_TYPE_PINNED,
                                .location = {CU_MEM_LOCATION_TYPE_DEVICE, 1}};
        if (pool1 == NULL && (r = cu.pool_create(&pool1, &props)) != CUDA_SUCCESS)
            return r;
        if ((r = cu.pool_alloc(&p, n, pool1, NULL)) == CUDA_SUCCESS)
            keep(K_PTR, p, 0, *bytes = n);
        return r;
    }
    if (strcmp(kind, "alloc") == 0 || strcmp(kind, "managed") == 0 || strcmp(kind, "async") == 0 ||
        strcmp(kind, "pool") == 0) {
        size_t n = num(save);
        CUmemoryPool pool;
        if (kind[0] == 'a' && kind[1] == 'l')
            r = cu.alloc(&p, n);
        else if (kind[0] == 'm')
            r = cu.managed(&p, n, 1);
        else if (kind[0] == 'a')
            r = cu.async(&p, n, NULL);
        else if ((r = cu.pool(&pool, dev)) == CUDA_SUCCESS)
            r = cu.pool_alloc(&p, n, pool, NULL);
        if (r == CUDA_SUCCESS)
            keep(K_PTR, p, 0, *bytes = n);
        return r;
    }
    if (strcmp(kind, "pitch") == 0) {
        size_t w = num(save), h = num(save), pitch = 0;
        r = cu.pitch(&p, &pitch, w, h, 4);
        if (r == CUDA_SUCCESS)
            keep(K_PTR, p, 0, *bytes = pitch * h);
        return r;
    }
    if (strcmp(kind, "array") == 0 || strcmp(kind, "array3d") == 0 || strcmp(kind, "mipmap") == 0) {
        size_t w = num(save), h = num(save), d = kind[5] ? num(save) : 0;
        unsigned int levels = kind[0] == 'm' ? (unsigned int)num(save) : 1;
        CUDA_ARRAY3D_DESCRIPTOR d3 = {w, h, d, CU_AD_FORMAT_FLOAT, 1, 0};
        CUDA_ARRAY_DESCRIPTOR d2 = {w, h, CU_AD_FORMAT_FLOAT, 1};
        void *a = NULL;
        if (kind[0] == 'm')
            r = cu.mipmap((CUmipmappedArray *)&a, &d3, levels);
        else if (kind[5])
            r = cu.array3d((CUarray *)&a, &d3);
        else
            r = cu.array((CUarray *)&a, &d2);
        if (r == CUDA_SUCCESS)
            keep(kind[0] == 'm' ? K_MIPMAP : K_ARRAY, (CUdeviceptr)(uintptr_t)a, 0,
                 *bytes = w * (h ? h : 1) * (d ? d : 1) * 4);
        return r;
    }
    if (strcmp(kind, "vmm") == 0 || strcmp(kind, "vmmrel") == 0) {
        size_t n = num(save), g = 0;
        CUmemAllocationProp prop = {.type = CU_MEM_ALLOCATION_TYPE_PINNED,
                                    .location = {CU_MEM_LOCATION_TYPE_DEVICE, dev}};
        CUmemGenericAllocationHandle h;
        if ((r = cu.granularity(&g, &prop, CU_MEM_ALLOC_GRANULARITY_MINIMUM)) != CUDA_SUCCESS)
            return r;
        n = (n + g - 1) / g * g;
        if ((r = cu.mem_create(&h, n, &prop, 0)) != CUDA_SUCCESS)
            return r;
        if ((r = cu.reserve(&p, n, 0, 0, 0)) != CUDA_SUCCESS ||
            (r = cu.map(p, n, 0, h, 0)) != CUDA_SUCCESS)
            return r;
        if (kind[3] == 'r' && (r = cu.mem_release(h)) != CUDA_SUCCESS)
            return r;
        keep(kind[3] == 'r' ? K_VMMREL : K_VMM, p, h, *bytes = n);
        return CUDA_SUCCESS;
    }
    if (strcmp(kind, "ctx") == 0 || strcmp(kind, "ctx3") == 0 || strcmp(kind, "ctx4") == 0) {
        CUcontext c, prev;
        if (kind[3] == '3')
            r = cu.ctx_create3 ? cu.ctx_create3(&c, NULL, 0, 0, dev) : CUDA_ERROR_NOT_FOUND;
        else if (kind[3] == '4')
            r = cu.ctx_create4 ? cu.ctx_create4(&c, NULL, 0, dev) : CUDA_ERROR_NOT_FOUND;
        else
            r = cu.ctx_create(&c, 0, dev);
        if (r == CUDA_SUCCESS) {
            keep(K_CTX, (CUdeviceptr)(uintptr_t)c, 0, 0);
            (void)prev;
        }
        return r;
    }
    return CUDA_ERROR_INVALID_VALUE;
}

static CUcontext primary_ctx;

struct racer {
    pthread_barrier_t *go;
    CUdevice dev;
    CUcontext ctx;
    CUresult r;
};

static void *race_retain(void *arg)
{
    struct racer *x = arg;
    pthread_barrier_wait(x->go);
    x->r = cu.retain(&x->ctx, x->dev);
    return NULL;
}

/* Free memory of d as seen with its primary context current. */
static size_t free_on(CUcontext c)
{
    size_t f = 0, t = 0;
    cu.set_current(c);
    cu.info(&f, &t);
    cu.set_current(primary_ctx);
    return f;
}

static void retain_race(CUdevice d, unsigned int n, unsigned int rounds)
{
    struct racer x[64];
    pthread_t th[64];
    pthread_barrier_t go;
    n = n > 64 ? 64 : n;
    for (unsigned int round = 0; round < rounds; round++) {
        pthread_barrier_init(&go, NULL, n);
        for (unsigned int i = 0; i < n; i++) {
            x[i] = (struct racer){&go, d, NULL, CUDA_ERROR_UNKNOWN};
            pthread_create(&th[i], NULL, race_retain, &x[i]);
        }
        int ok = 0;
        for (unsigned int i = 0; i < n; i++) {
            pthread_join(th[i], NULL);
            ok += x[i].r == CUDA_SUCCESS;
        }
        pthread_barrier_destroy(&go);
        printf("retainrace ok=%d free=%zu\n", ok, free_on(x[0].ctx));
        for (int i = 0; i < ok; i++)
            cu.release(d);
    }
    CUcontext c;
    if (cu.retain(&c, d) == CUDA_SUCCESS) {
        printf("retainrace end free=%zu\n", free_on(c));
        cu.release(d);
    }
}

static void free_all(void)
{
    while (held_count > 0) {
        struct held *h = &held[--held_count];
        CUresult r = CUDA_SUCCESS;
        switch (h->kind) {
        case K_PTR: r = cu.mfree(h->p); break;
        case K_ARRAY: r = cu.array_destroy((CUarray)(uintptr_t)h->p); break;
        case K_MIPMAP: r = cu.mipmap_destroy((CUmipmappedArray)(uintptr_t)h->p); break;
        case K_VMM:
        case K_VMMREL:
            if ((r = cu.unmap(h->p, h->bytes)) == CUDA_SUCCESS)
                r = cu.addr_free(h->p, h->bytes);
            if (r == CUDA_SUCCESS && h->kind == K_VMM)
                r = cu.mem_release(h->h);
            break;
        case K_CTX:
            r = cu.ctx_destroy((CUcontext)(uintptr_t)h->p);
            cu.set_current(primary_ctx);
            break;
        }
        if (r != CUDA_SUCCESS)
            printf("free failed rc=%d\n", r);
    }
}

static unsigned long long run_launches, run_wall_ns, run_queued_ns, regraph_same;

/* How long this thread has waited for a CPU, ever (0 where the kernel does
 * not say): a program kept off the CPUs cannot launch, whatever its share. */
static unsigned long long runqueue_ns(void)
{
    unsigned long long on_cpu = 0, waited = 0;
    FILE *f = fopen("/proc/thread-self/schedstat", "r");
    if (f == NULL)
        return 0;
    if (fscanf(f, "%llu %llu", &on_cpu, &waited) != 2)
        waited = 0;
    fclose(f);
    return waited;
}

/* Launches NAME back to back for SECONDS, synchronising every SYNC. */
static CUresult run(const char *how, char **save)
{
    char *name = strtok_r(NULL, ":", save);
    unsigned int blocks = (unsigned int)num(save), threads = (unsigned int)num(save);
    char *secs = strtok_r(NULL, ":", save);
    double seconds = secs ? strtod(secs, NULL) : 1;
    char *every = strtok_r(NULL, ":", save);
    unsigned long long sync_every = every ? strtoull(every, NULL, 0) : 8;
    CUmodule m;
    CUfunction f;
    CUresult r;
    if ((r = cu.load(&m, "sim")) != CUDA_SUCCESS || (r = cu.get_function(&f, m, name)) != CUDA_SUCCESS)
        return r;
    CUgraphExec exec = NULL;
    CUgraph g = NULL;
    if (how[0] == 'g') {
        CUgraphNode n;
        CUDA_KERNEL_NODE_PARAMS p = {.func = f, .gridDimX = blocks, .gridDimY = 1, .gridDimZ = 1,
                                     .blockDimX = threads, .blockDimY = 1, .blockDimZ = 1};
        if ((r = cu.graph_create(&g, 0)) != CUDA_SUCCESS ||
            (r = cu.graph_add(&n, g, NULL, 0, &p)) != CUDA_SUCCESS ||
            (r = cu.graph_inst(&exec, g, 0)) != CUDA_SUCCESS)
            return r;
    }
    uint64_t start = now_ns(), end = start + (uint64_t)(seconds * 1e9), launches = 0;
    unsigned long long queued0 = runqueue_ns();
    while (now_ns() < end) {
        if (how[0] == 'g')
            r = cu.graph_launch(exec, NULL);
        else if (how[0] == 'c')
            r = cu.coop(f, blocks, 1, 1, threads, 1, 1, 0, NULL, NULL);
        else
            r = cu.launch(f, blocks, 1, 1, threads, 1, 1, 0, NULL, NULL, NULL);
        if (r != CUDA_SUCCESS)
            return r;
        launches++;
        if (sync_every && launches % sync_every == 0)
            cu.sync();
    }
    cu.sync();
    if (g) {
        cu.graph_exec_destroy(exec);
        cu.graph_destroy(g);
    }
    cu.unload(m);
    run_launches = launches;
    run_wall_ns = now_ns() - start;
    run_queued_ns = runqueue_ns() - queued0;
    return CUDA_SUCCESS;
}

static CUresult one_kernel_graph(CUfunction f, unsigned int threads, CUgraph *g, CUgraphExec *e)
{
    CUgraphNode n;
    CUDA_KERNEL_NODE_PARAMS p = {.func = f, .gridDimX = 1, .gridDimY = 1, .gridDimZ = 1,
                                 .blockDimX = threads, .blockDimY = 1, .blockDimZ = 1};
    CUresult r;
    if ((r = cu.graph_create(g, 0)) != CUDA_SUCCESS || (r = cu.graph_add(&n, *g, NULL, 0, &p)) != CUDA_SUCCESS)
        return r;
    return e ? cu.graph_inst(e, *g, 0) : CUDA_SUCCESS;
}

/* Everything is made first, so the one thing allocated between the first
 * exec's destruction and the second's making is the second. */
static CUresult regraph(char **save)
{
    char *cheap = strtok_r(NULL, ":", save), *dear = strtok_r(NULL, ":", save);
    char *secs = strtok_r(NULL, ":", save);
    double seconds = secs ? strtod(secs, NULL) : 1;
    CUmodule m;
    CUfunction fc, fd;
    CUgraph gc, gd;
    CUgraphExec ec;
    CUresult r = CUDA_ERROR_INVALID_VALUE;
    if (cheap == NULL || dear == NULL || (r = cu.load(&m, "sim")) != CUDA_SUCCESS ||
        (r = cu.get_function(&fc, m, cheap)) != CUDA_SUCCESS ||
        (r = cu.get_function(&fd, m, dear)) != CUDA_SUCCESS ||
        (r = one_kernel_graph(fc, 1, &gc, &ec)) != CUDA_SUCCESS ||
        (r = one_kernel_graph(fd, 1000, &gd, NULL)) != CUDA_SUCCESS)
        return r;
    for (int i = 0; i < 1000 && r == CUDA_SUCCESS; i++)
        r = cu.graph_launch(ec, NULL);
    cu.sync();
    unsigned long long queued0 = runqueue_ns();
    uint64_t start = now_ns(), end = start + (uint64_t)(seconds * 1e9), launches = 0, same = 0;
    CUgraphExec e = ec;
    while (r == CUDA_SUCCESS && now_ns() < end) {
        for (int dear_turn = 1; dear_turn >= 0 && r == CUDA_SUCCESS; dear_turn--) {
            if ((r = cu.graph_exec_destroy(e)) != CUDA_SUCCESS ||
                (r = cu.graph_inst(&e, dear_turn ? gd : gc, 0)) != CUDA_SUCCESS)
                break;
            same += e == ec;
            for (int i = 0; i < (dear_turn ? 16 : 48) && r == CUDA_SUCCESS; i++)
                r = cu.graph_launch(e, NULL);
            launches += dear_turn ? 16 : 0;
        }
        cu.sync();
    }
    run_launches = launches;
    run_wall_ns = now_ns() - start;
    run_queued_ns = runqueue_ns() - queued0;
    regraph_same = same;
    cu.graph_exec_destroy(e);
    cu.graph_destroy(gc);
    cu.graph_destroy(gd);
    cu.unload(m);
    return r;
}

static CUgraphExec graph_execs[64];
static int graph_exec_count;

static void graph_mem(const char *how, size_t n)
{
    CUgraph g = NULL;
    CUgraphNode node;
    CUmemPoolProps props = {.allocType = CU_MEM_ALLOCATION_TYPE_PINNED,
                            .location = {CU_MEM_LOCATION_TYPE_DEVICE, dev}};
    CUDA_MEM_ALLOC_NODE_PARAMS p = {.poolProps = props, .bytesize = n};
    CUresult r;
    if (strcmp(how, "capture") == 0) {
        CUstream s;
        CUdeviceptr d;
        r = cu.stream_create(&s, 1);
        if (r == CUDA_SUCCESS && (r = cu.begin_capture(s, 0)) == CUDA_SUCCESS) {
            r = cu.async(&d, n, s);
            CUresult e = cu.end_capture(s, &g);
            r = r ? r : e;
        }
    } else if ((r = cu.graph_create(&g, 0)) == CUDA_SUCCESS && strcmp(how, "node") == 0) {
        r = cu.mem_node(&node, g, NULL, 0, &p);
    } else if (r == CUDA_SUCCESS) {
        struct {
            int type, reserved[3];
            CUDA_MEM_ALLOC_NODE_PARAMS alloc;
            char rest[232 - 16 - sizeof(CUDA_MEM_ALLOC_NODE_PARAMS)];
        } generic = {.type = 10, .alloc = p};
        r = cu.add_node ? cu.add_node(&node, g, NULL, NULL, 0, &generic) : CUDA_ERROR_NOT_FOUND;
    }
    CUresult inst = CUDA_ERROR_INVALID_VALUE;
    if (r == CUDA_SUCCESS && graph_exec_count < 64 &&
        (inst = cu.graph_inst(&graph_execs[graph_exec_count], g, 0)) == CUDA_SUCCESS)
        graph_exec_count++;
    printf("graphmem rc=%d inst=%d\n", r, inst);
}

static void legacy(void)
{
    void *h = dlopen("libcuda.so.1", RTLD_NOW);
    CUresult (*create)(CUcontext *, unsigned int, CUdevice);
    CUresult (*destroy)(CUcontext);
    CUresult (*alloc)(unsigned int *, unsigned int);
    CUresult (*release1)(CUdevice);
    *(void **)&release1 = h ? dlsym(h, "cuDevicePrimaryCtxRelease") : NULL;
    *(void **)&create = h ? dlsym(h, "cuCtxCreate") : NULL;
    *(void **)&destroy = h ? dlsym(h, "cuCtxDestroy") : NULL;
    *(void **)&alloc = h ? dlsym(h, "cuMemAlloc") : NULL;
    if (create == NULL || destroy == NULL || alloc == NULL || release1 == NULL) {
        printf("legacy rc=-1\n");
        return;
    }
    CUcontext c[3];
    int made = 0;
    for (int i = 0; i < 3; i++)
        made += create(&c[made], 0, dev) == CUDA_SUCCESS;
    cu.set_current(primary_ctx);
    size_t f = 0, t = 0;
    unsigned int p32;
    cu.info(&f, &t);
    int a1 = alloc(&p32, 4096), a2 = alloc(&p32, 4096);
    printf("legacy made=%d free=%zu alloc=%d alloc2=%d\n", made, f, a1, a2);
    for (int i = 0; i < made; i++)
        destroy(c[i]);
    cu.set_current(primary_ctx);
    cu.info(&f, &t);
    printf("legacy destroyed=%d free=%zu\n", made, f);
    /* device 1's primary context, released by the v1 call, then again */
    size_t seen[2] = {0, 0};
    for (int round = 0; round < 2; round++) {
        CUcontext p1;
        if (cu.retain(&p1, 1) != CUDA_SUCCESS)
            break;
        seen[round] = free_on(p1);
        release1(1);
    }
    /* a context of its own on device 1 sees what the primary one left */
    CUcontext own;
    size_t after = 0;
    if (cu.ctx_create(&own, 0, 1) == CUDA_SUCCESS) {
        cu.info(&after, &t);
        cu.ctx_destroy(own);
    }
    cu.set_current(primary_ctx);
    printf("legacy primary=%zu again=%zu after=%zu\n", seen[0], seen[1], after);
}

/* NVML as a framework sizing its pool would read it. */
static void nvml_info(void)
{
    struct {
        unsigned long long total, free, used;
    } m1 = {0};
    struct {
        unsigned int version;
        unsigned long long total, reserved, free, used;
    } m2 = {(unsigned int)(sizeof m2 | 2U << 24), 0, 0, 0, 0};
    void *h = dlopen("libnvidia-ml.so.1", RTLD_NOW);
    int (*init)(void), (*by_index)(unsigned int, void **), (*info)(void *, void *),
        (*info2)(void *, void *), (*util)(void *, unsigned int *);
    unsigned int rates[2] = {0, 0};
    void *d = NULL;
    if (h == NULL) {
        printf("nvml rc=-1\n");
        return;
    }
    *(void **)&init = dlsym(h, "nvmlInit_v2");
    *(void **)&by_index = dlsym(h, "nvmlDeviceGetHandleByIndex_v2");
    *(void **)&info = dlsym(h, "nvmlDeviceGetMemoryInfo");
    *(void **)&info2 = dlsym(h, "nvmlDeviceGetMemoryInfo_v2");
    *(void **)&util = dlsym(h, "nvmlDeviceGetUtilizationRates");
    int r = init ? init() : -1;
    if (r == 0)
        r = by_index(0, &d);
    int r1 = r == 0 ? info(d, &m1) : r, r2 = r == 0 ? info2(d, &m2) : r;
    if (r == 0)
        util(d, rates);
    printf("nvml rc=%d total=%llu free=%llu used=%llu v2rc=%d total=%llu free=%llu util=%u\n",
           r1, m1.total, m1.free, m1.used, r2, m2.total, m2.free, rates[0]);
}

/* What HAMi-core's utilisation watcher asks NVML each round: the processes
 * on GPU 0 (the unversioned call, two-field entries) and their utilisation
 * over the last second. One line per process. */
static void nvml_processes(void)
{
    struct proc {
        unsigned int pid;
        unsigned long long used;
    } procs[64];
    struct sample {
        unsigned int pid;
        unsigned long long stamp;
        unsigned int sm, mem, enc, dec;
    } samples[64];
    void *h = dlopen("libnvidia-ml.so.1", RTLD_NOW);
    int (*init)(void), (*by_index)(unsigned int, void **),
        (*list)(void *, unsigned int *, struct proc *),
        (*util)(void *, struct sample *, unsigned int *, unsigned long long);
    void *d = NULL;
    if (h == NULL) {
        printf("procs rc=-1\n");
        return;
    }
    *(void **)&init = dlsym(h, "nvmlInit_v2");
    *(void **)&by_index = dlsym(h, "nvmlDeviceGetHandleByIndex_v2");
    *(void **)&list = dlsym(h, "nvmlDeviceGetComputeRunningProcesses");
    *(void **)&util = dlsym(h, "nvmlDeviceGetProcessUtilization");
    unsigned int n = 64, m = 64;
    int r = init && by_index && list && util ? init() : -1;
    if (r == 0)
        r = by_index(0, &d);
    int r1 = r == 0 ? list(d, &n, procs) : r;
    struct timespec now;
    clock_gettime(CLOCK_REALTIME, &now);
    unsigned long long since = (unsigned long long)(now.tv_sec - 1) * 1000000ULL +
                               (unsigned long long)now.tv_nsec / 1000;
    int r2 = r == 0 ? util(d, samples, &m, since) : r;
    printf("procs rc=%d count=%u util_rc=%d samples=%u\n", r1, r1 == 0 ? n : 0, r2,
           r2 == 0 ? m : 0);
    for (unsigned int i = 0; r1 == 0 && i < n; i++) {
        unsigned int sm = 0;
        for (unsigned int k = 0; r2 == 0 && k < m; k++)
            if (samples[k].pid == procs[i].pid)
                sm = samples[k].sm;
        printf("proc pid=%u used=%llu sm=%u\n", procs[i].pid, procs[i].used, sm);
    }
}

int main(int argc, char **argv)
{
    setvbuf(stdout, NULL, _IOLBF, 0);
    if (argc < 2 || resolve(argv[1]) < 0) {
        fprintf(stderr, "usage: cudaprog direct|dlsym|dlmopen|dlopen=PATH|dlmopen=PATH|procaddr|"
                        "procaddr-ptsz OP...\n");
        return 2;
    }
    const char *d = getenv("PROG_DEVICE");
    CUresult r;
    if ((r = cu.init(0)) != CUDA_SUCCESS || (r = cu.device_get(&dev, d ? atoi(d) : 0)) != CUDA_SUCCESS ||
        (r = cu.retain(&primary_ctx, dev)) != CUDA_SUCCESS ||
        (r = cu.set_current(primary_ctx)) != CUDA_SUCCESS) {
        printf("setup rc=%d\n", r);
        return 1;
    }
    for (int i = 2; i < argc; i++) {
        char buf[256], *save = NULL;
        snprintf(buf, sizeof buf, "%s", argv[i]);
        char *op = strtok_r(buf, ":", &save);
        size_t bytes = 0;
        if (strcmp(op, "info") == 0) {
            size_t f = 0, t = 0;
            r = cu.info(&f, &t);
            printf("info rc=%d free=%zu total=%zu\n", r, f, t);
        } else if (strcmp(op, "nvml") == 0) {
            nvml_info();
        } else if (strcmp(op, "procs") == 0) {
            nvml_processes();
        } else if (strcmp(op, "setlimit") == 0) {
            int limit = (int)num(&save);
            printf("setlimit rc=%d\n", cu.set_limit(limit, num(&save)));
        } else if (strcmp(op, "graphmem") == 0) {
            char *how = strtok_r(NULL, ":", &save);
            graph_mem(how ? how : "", num(&save));
        } else if (strcmp(op, "green") == 0) {
            CUcontext c = NULL;
            r = cu.green_create ? cu.green_create(&c, (void *)&dev, dev, 1) : CUDA_ERROR_NOT_FOUND;
            if (r == CUDA_SUCCESS)
                cu.green_destroy(c);
            printf("green rc=%d\n", r);
        } else if (strcmp(op, "legacy") == 0) {
            legacy();
        } else if (strcmp(op, "retainrace") == 0) {
            CUdevice target = (CUdevice)num(&save);
            unsigned int n = (unsigned int)num(&save);
            retain_race(target, n, (unsigned int)num(&save));
        } else if (strcmp(op, "badfree") == 0) {
            printf("badfree rc=%d\n", cu.mfree((CUdeviceptr)num(&save)));
        } else if (strcmp(op, "badhandles") == 0) {
            void *h = (void *)(uintptr_t)num(&save);
            printf("badhandles ctx=%d stream=%d event=%d module=%d pool=%d graph=%d exec=%d\n",
                   cu.ctx_destroy(h), cu.stream_destroy(h), cu.event_destroy(h), cu.unload(h),
                   cu.pool_destroy(h), cu.graph_destroy(h), cu.graph_exec_destroy(h));
        } else if (strcmp(op, "fork") == 0) {
            pid_t child = fork();
            if (child == 0) {
                CUresult rf = held_count ? cu.mfree(held[held_count - 1].p) : CUDA_ERROR_INVALID_VALUE;
                printf("fork free=%d init=%d\n", rf, cu.init(0));
                _exit(0);
            }
            int status = 0;
            if (child < 0 || waitpid(child, &status, 0) != child || status != 0)
                printf("fork rc=-1\n");
        } else if (strcmp(op, "freeall") == 0) {
            free_all();
            while (graph_exec_count > 0)
                cu.graph_exec_destroy(graph_execs[--graph_exec_count]);
            printf("freeall rc=0\n");
        } else if (strcmp(op, "wait") == 0) {
            char line[16];
            printf("waiting\n");
            if (fgets(line, sizeof line, stdin) == NULL)
                return 1;
        } else if (strcmp(op, "hold") == 0) {
            printf("holding\n");
            for (;;)
                pause();
        } else if (strcmp(op, "fill") == 0) {
            char *kind = strtok_r(NULL, ":", &save);
            char *chunk = strtok_r(NULL, ":", &save);
            size_t total = 0;
            for (;;) {
                char spec[64], *s2 = NULL;
                snprintf(spec, sizeof spec, "x:%s:%s", chunk ? chunk : "1048576", chunk ? chunk : "1");
                strtok_r(spec, ":", &s2);
                if ((r = allocate(kind, &s2, &bytes)) != CUDA_SUCCESS)
                    break;
                total += bytes;
            }
            printf("fill rc=%d total=%zu\n", r, total);
        } else if (strcmp(op, "run") == 0 || strcmp(op, "coop") == 0 || strcmp(op, "graph") == 0 ||
                   strcmp(op, "regraph") == 0) {
            int re = op[0] == 'r' && op[1] == 'e';
            r = re ? regraph(&save) : run(op, &save);
            printf("%s rc=%d launches=%llu wall_ns=%llu queued_ns=%llu", op, r, run_launches,
                   run_wall_ns, run_queued_ns);
            printf(re ? " same=%llu\n" : "\n", regraph_same);
        } else {
            r = allocate(op, &save, &bytes);
            printf("%s rc=%d bytes=%zu\n", op, r, bytes);
        }
    }
    free_all();
    if (pool1)
        cu.pool_destroy(pool1);
    return 0;
}
