// Kernels that each spin for about 1 ms, launched back to back for a few
// seconds: prints how many completed per second of wall time, so a run
// under GPULET_CUDA_COMPUTE_SHARE=30 can be compared with a free one.
#include <chrono>
#include <cstdio>
#include <cstdlib>
#include <cuda_runtime.h>

__global__ void spin(long long cycles)
{
    long long start = clock64();
    while (clock64() - start < cycles)
        ;
}

int main(int argc, char **argv)
{
    double seconds = argc > 1 ? atof(argv[1]) : 5;
    int rate_khz = 0;
    cudaDeviceGetAttribute(&rate_khz, cudaDevAttrClockRate, 0);
    long long cycles = (long long)rate_khz; // 1 ms at the base clock
    auto start = std::chrono::steady_clock::now();
    long launches = 0;
    for (;;) {
        double t = std::chrono::duration<double>(std::chrono::steady_clock::now() - start).count();
        if (t >= seconds)
            break;
        spin<<<1, 32>>>(cycles);
        if (++launches % 8 == 0)
            cudaDeviceSynchronize();
    }
    cudaDeviceSynchronize();
    double t = std::chrono::duration<double>(std::chrono::steady_clock::now() - start).count();
    printf("throughput launches=%ld seconds=%.3f per_second=%.1f error=%d\n", launches, t,
           launches / t, (int)cudaGetLastError());
    return 0;
}
