/*
 * cudaprog: a CUDA driver-API program for the tests. It reaches the driver
 * one of five ways (argv[1]: direct, dlsym, dlmopen (a new link-map
 * namespace), procaddr, procaddr-ptsz), then
 * runs the operations given as arguments, printing one line each:
 *
 *   alloc:N pitch:W:H managed:N async:N pool:N array:W:H array3d:W:H:D
 *   mipmap:W:H:D:LEVELS vmm:N ctx    allocate (ctx: a context of its own)
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
 *   run:NAME:BLOCKS:THREADS:SECONDS  launch kernels back to back for a
 *   coop:... graph:...               while (cooperatively, as graphs)
 *
 * Device 0 unless PROG_DEVICE says otherwise. Built against the simulated
 * driver here and against the real one in tests/gpu.
 */
#include <dlfcn.h>
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
    X(set_current, "cuCtxSetCurrent", "cuCtxSetCurrent", CUresult (*)(CUcontext))                 \
    X(ctx_create, "cuCtxCreate_v2", "cuCtxCreate", CUresult (*)(CUcontext *, unsigned int, CUdevice)) \
    X(ctx_destroy, "cuCtxDestroy_v2", "cuCtxDestroy", CUresult (*)(CUcontext))                    \
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

enum kind { K_PTR, K_ARRAY, K_MIPMAP, K_VMM, K_CTX };
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

static int resolve(const char *way)
{
    if (strcmp(way, "direct") == 0) {
#define DIRECT(f, sym, base, ...) cu.f = f##_direct;
        FUNCS(DIRECT)
        return 0;
    }
    if (strcmp(way, "dlsym") == 0 || strcmp(way, "dlmopen") == 0) {
        void *h = way[2] == 's' ? dlopen("libcuda.so.1", RTLD_NOW)
                                : dlmopen(LM_ID_NEWLM, "libcuda.so.1", RTLD_NOW);
        if (h == NULL)
            return -1;
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
#define PROCADDR(f, sym, base, ...) gpa(base, (void **)&cu.f, 12000, flags, &st);
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
    if (strcmp(kind, "vmm") == 0) {
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
        keep(K_VMM, p, h, *bytes = n);
        return CUDA_SUCCESS;
    }
    if (strcmp(kind, "ctx") == 0) {
        CUcontext c, prev;
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
            cu.unmap(h->p, h->bytes);
            cu.addr_free(h->p, h->bytes);
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

static unsigned long long run_launches, run_wall_ns;

/* Launches NAME back to back for SECONDS, synchronising every 8. */
static CUresult run(const char *how, char **save)
{
    char *name = strtok_r(NULL, ":", save);
    unsigned int blocks = (unsigned int)num(save), threads = (unsigned int)num(save);
    char *secs = strtok_r(NULL, ":", save);
    double seconds = secs ? strtod(secs, NULL) : 1;
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
    while (now_ns() < end) {
        if (how[0] == 'g')
            r = cu.graph_launch(exec, NULL);
        else if (how[0] == 'c')
            r = cu.coop(f, blocks, 1, 1, threads, 1, 1, 0, NULL, NULL);
        else
            r = cu.launch(f, blocks, 1, 1, threads, 1, 1, 0, NULL, NULL, NULL);
        if (r != CUDA_SUCCESS)
            return r;
        if (++launches % 8 == 0)
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
    return CUDA_SUCCESS;
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
        fprintf(stderr, "usage: cudaprog direct|dlsym|dlmopen|procaddr|procaddr-ptsz OP...\n");
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
        } else if (strcmp(op, "run") == 0 || strcmp(op, "coop") == 0 || strcmp(op, "graph") == 0) {
            r = run(op, &save);
            printf("%s rc=%d launches=%llu wall_ns=%llu\n", op, r, run_launches, run_wall_ns);
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
