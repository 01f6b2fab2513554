/*
 * bench_cuda_interpose: what libgpulet-cuda.so adds to a driver call. Runs
 * itself three times on the simulated driver: plain, preloaded with a
 * memory limit, and preloaded with a memory limit and a compute share;
 * prints ns per cuMemAlloc_v2/cuMemFree_v2 pair with no other allocation
 * live and with LIVE allocations live (the bookkeeping must not slow down
 * as they pile up: the ratio of the two), ns per cuLaunchKernel (a kernel
 * of no duration, so the share never makes it wait), and the added cost
 * of each.
 *
 *   bench_cuda_interpose [ITERATIONS [LIVE]]
 */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>
#include <sys/wait.h>

#include "cuda/cuda_abi.h"

CUresult cuInit(unsigned int);
CUresult cuDevicePrimaryCtxRetain(CUcontext *, CUdevice);
CUresult cuCtxSetCurrent(CUcontext);
CUresult cuMemAlloc_v2(CUdeviceptr *, size_t);
CUresult cuMemFree_v2(CUdeviceptr);
CUresult cuModuleLoadData(CUmodule *, const void *);
CUresult cuModuleGetFunction(CUfunction *, CUmodule, const char *);
CUresult cuLaunchKernel(CUfunction, unsigned int, unsigned int, unsigned int, unsigned int,
                        unsigned int, unsigned int, unsigned int, CUstream, void **, void **);
CUresult cuCtxSynchronize(void);
CUresult cuModuleUnload(CUmodule);

static double now(void)
{
    struct timespec t;
    clock_gettime(CLOCK_PROCESS_CPUTIME_ID, &t); /* CPU time: steadier than wall time on a shared machine */
    return (double)t.tv_sec * 1e9 + (double)t.tv_nsec;
}

/* Best ns per alloc+free pair over five rounds of n. */
static double alloc_free_ns(long n)
{
    double best = 1e18;
    CUdeviceptr p;
    for (int round = 0; round < 5; round++) {
        double t0 = now();
        for (long i = 0; i < n; i++)
            if (cuMemAlloc_v2(&p, 4096) || cuMemFree_v2(p))
                return -1;
        double per = (now() - t0) / (double)n;
        best = per < best ? per : best;
    }
    return best;
}

/* One measurement in this process: prints "alloc_ns launch_ns
 * alloc_ns_with_live". */
static int measure(long n, long live)
{
    CUcontext c;
    CUmodule m;
    CUfunction f;
    if (cuInit(0) || cuDevicePrimaryCtxRetain(&c, 0) || cuCtxSetCurrent(c) ||
        cuModuleLoadData(&m, "bench") || cuModuleGetFunction(&f, m, "noop"))
        return 1;
    double best_alloc = alloc_free_ns(n), best_launch = 1e18;
    for (int round = 0; round < 5; round++) {
        double t1 = now();
        for (long i = 0; i < n; i++)
            if (cuLaunchKernel(f, 1, 1, 1, 32, 1, 1, 0, NULL, NULL, NULL))
                return 1;
        cuCtxSynchronize();
        double t2 = now();
        if ((t2 - t1) / (double)n < best_launch)
            best_launch = (t2 - t1) / (double)n;
    }
    cuModuleUnload(m);
    CUdeviceptr *held = calloc((size_t)live, sizeof *held);
    if (held == NULL)
        return 1;
    for (long i = 0; i < live; i++)
        if (cuMemAlloc_v2(&held[i], 4096))
            return 1;
    double with_live = alloc_free_ns(n);
    for (long i = 0; i < live; i++)
        cuMemFree_v2(held[i]);
    free(held);
    if (best_alloc < 0 || with_live < 0)
        return 1;
    printf("%.1f %.1f %.1f\n", best_alloc, best_launch, with_live);
    return 0;
}

static int run_child(const char *self, const char *n, const char *live, const char *preload,
                     const char *share, double *alloc, double *launch, double *with_live)
{
    int fds[2];
    if (pipe(fds) < 0)
        return -1;
    pid_t pid = fork();
    if (pid == 0) {
        dup2(fds[1], 1);
        if (preload) {
            setenv("LD_PRELOAD", preload, 1);
            setenv("GPULET_CUDA_MEMORY_LIMIT", "1Ti", 1);
        }
        if (share)
            setenv("GPULET_CUDA_COMPUTE_SHARE", share, 1);
        execl(self, self, "--child", n, live, (char *)NULL);
        _exit(127);
    }
    close(fds[1]);
    char buf[128] = "";
    ssize_t len = read(fds[0], buf, sizeof buf - 1);
    close(fds[0]);
    int st;
    waitpid(pid, &st, 0);
    if (len <= 0 || !WIFEXITED(st) || WEXITSTATUS(st) != 0 ||
        sscanf(buf, "%lf %lf %lf", alloc, launch, with_live) != 3)
        return -1;
    return 0;
}

int main(int argc, char **argv)
{
    if (argc == 4 && strcmp(argv[1], "--child") == 0)
        return measure(atol(argv[2]), atol(argv[3]));
    const char *n = argc > 1 ? argv[1] : "200000", *live = argc > 2 ? argv[2] : "10000";
    if (getenv("GPULET_SIM_NODE") == NULL)
        setenv("GPULET_SIM_NODE", GPULET_SIM_NODE_FILE, 1);
    char state[] = "/tmp/gpulet-bench-XXXXXX";
    if (mkdtemp(state) == NULL)
        return 1;
    char dev_state[64];
    snprintf(dev_state, sizeof dev_state, "%s/node.device", state);
    setenv("GPULET_SIM_DEVICE_STATE", dev_state, 1);
    setenv("GPULET_CUDA_STATE_DIR", state, 1);
    struct {
        const char *name, *preload, *share;
        double alloc, launch, live;
    } runs[] = {{"simulated driver", NULL, NULL, 0, 0, 0},
                {"+ interposer, memory limit", GPULET_CUDA_LIB, NULL, 0, 0, 0},
                {"+ interposer, limit and 50% share", GPULET_CUDA_LIB, "50", 0, 0, 0}};
    printf("%-36s %14s %14s %12s %12s\n", "", "alloc+free ns", "launch ns", "added alloc",
           "added launch");
    for (size_t i = 0; i < 3; i++) {
        if (run_child(argv[0], n, live, runs[i].preload, runs[i].share, &runs[i].alloc,
                      &runs[i].launch, &runs[i].live) < 0) {
            fprintf(stderr, "bench_cuda_interpose: run '%s' failed\n", runs[i].name);
            return 1;
        }
        printf("%-36s %14.1f %14.1f %12.1f %12.1f  (x%.2f, x%.2f)\n", runs[i].name,
               runs[i].alloc, runs[i].launch, runs[i].alloc - runs[0].alloc,
               runs[i].launch - runs[0].launch, runs[i].alloc / runs[0].alloc,
               runs[i].launch / runs[0].launch);
    }
    printf("\nalloc+free ns with %s allocations live (ratio to none live):\n", live);
    for (size_t i = 0; i < 3; i++)
        printf("%-36s %14.1f  (x%.2f)\n", runs[i].name, runs[i].live,
               runs[i].live / runs[i].alloc);
    char cmd[128];
    snprintf(cmd, sizeof cmd, "rm -rf %s", state);
    return system(cmd) == 0 ? 0 : 1;
}
