// cudaMalloc in 64 MiB chunks until refused; prints what it got and what
// cudaMemGetInfo says. The CUDA runtime reaches the driver through
// cuGetProcAddress, the way the interposer must cover.
#include <cstdio>
#include <vector>
#include <cuda_runtime.h>

int main()
{
    std::vector<void *> held;
    size_t total = 0, chunk = 64ull << 20;
    cudaError_t e;
    for (;;) {
        void *p = nullptr;
        if ((e = cudaMalloc(&p, chunk)) != cudaSuccess)
            break;
        held.push_back(p);
        total += chunk;
    }
    size_t free_b = 0, total_b = 0;
    cudaMemGetInfo(&free_b, &total_b);
    printf("malloc error=%d got=%zu free=%zu total=%zu\n", (int)e, total, free_b, total_b);
    for (void *p : held)
        cudaFree(p);
    return e == cudaErrorMemoryAllocation ? 0 : 1;
}
