/*
 * bench_cuda_interpose: what libgpulet-cuda.so adds to a driver call. Runs
 * itself three times on the simulated driver: plain, preloaded with a
 * memory limit, and preloaded with a memory limit and a compute share;
 * prints ns per cuMemAlloc_v2/cuMemFree_v2 pair and per cuLaunchKernel
 * (a kernel of no duration, so the share never makes it wait), and the
 * added cost of each.
 *
 *   bench_cuda_interpose [ITERATIONS]
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
    clock_gettime(CLOCK_MONOTONIC, &t);
    return (double)t.tv_sec * 1e9 + (double)t.tv_nsec;
}

/* One measurement in this process: prints "alloc_ns launch_ns". */
static int measure(long n)
{
    CUcontext c;
    CUmodule m;
    CUfunction f;
    CUdeviceptr p;
    if (cuInit(0) || cuDevicePrimaryCtxRetain(&c, 0) || cuCtxSetCurrent(c) ||
        cuModuleLoadData(&m, "bench") || cuModuleGetFunction(&f, m, "noop"))
        return 1;
    double best_alloc = 1e18, best_launch = 1e18;
    for (int round = 0; round < 5; round++) {
        double t0 = now();
        for (long i = 0; i < n; i++)
            if (cuMemAlloc_v2(&p, 4096) || cuMemFree_v2(p))
                return 1;
        double t1 = now();
        for (long i = 0; i < n; i++)
            if (cuLaunchKernel(f, 1, 1, 1, 32, 1, 1, 0, NULL, NULL, NULL))
                return 1;
        cuCtxSynchronize();
        double t2 = now();
        if ((t1 - t0) / (double)n < best_alloc)
            best_alloc = (t1 - t0) / (double)n;
        if ((t2 - t1) / (double)n < best_launch)
            best_launch = (t2 - t1) / (double)n;
    }
    cuModuleUnload(m);
    printf("%.1f %.1f\n", best_alloc, best_launch);
    return 0;
}

static int run_child(const char *self, const char *n, const char *preload, const char *share,
                     double *alloc, double *launch)
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
        execl(self, self, "--child", n, (char *)NULL);
        _exit(127);
    }
    close(fds[1]);
    char buf[128] = "";
    ssize_t len = read(fds[0], buf, sizeof buf - 1);
    close(fds[0]);
    int st;
    waitpid(pid, &st, 0);
    if (len <= 0 || !WIFEXITED(st) || WEXITSTATUS(st) != 0 ||
        sscanf(buf, "%lf %lf", alloc, launch) != 2)
        return -1;
    return 0;
}

int main(int argc, char **argv)
{
    if (argc == 3 && strcmp(argv[1], "--child") == 0)
        return measure(atol(argv[2]));
    const char *n = argc > 1 ? argv[1] : "200000";
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
        double alloc, launch;
    } runs[] = {{"simulated driver", NULL, NULL, 0, 0},
                {"+ interposer, memory limit", GPULET_CUDA_LIB, NULL, 0, 0},
                {"+ interposer, limit and 50% share", GPULET_CUDA_LIB, "50", 0, 0}};
    printf("%-36s %14s %14s %12s %12s\n", "", "alloc+free ns", "launch ns", "added alloc",
           "added launch");
    for (size_t i = 0; i < 3; i++) {
        if (run_child(argv[0], n, runs[i].preload, runs[i].share, &runs[i].alloc,
                      &runs[i].launch) < 0) {
            fprintf(stderr, "bench_cuda_interpose: run '%s' failed\n", runs[i].name);
            return 1;
        }
        printf("%-36s %14.1f %14.1f %12.1f %12.1f  (x%.2f, x%.2f)\n", runs[i].name,
               runs[i].alloc, runs[i].launch, runs[i].alloc - runs[0].alloc,
               runs[i].launch - runs[0].launch, runs[i].alloc / runs[0].alloc,
               runs[i].launch / runs[0].launch);
    }
    char cmd[128];
    snprintf(cmd, sizeof cmd, "rm -rf %s", state);
    return system(cmd) == 0 ? 0 : 1;
}
