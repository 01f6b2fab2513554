// The gpulet validator: adds two vectors on the GPU the pod was given and
// checks every element on the CPU. Prints "Test PASSED" and exits 0, or
// says what went wrong and exits 1. Run by validator/job.yaml.
#include <cstdio>
#include <cstdlib>
#include <vector>

#include <cuda_runtime.h>

namespace {

constexpr int kElements = 50000;

__global__ void vector_add(const float *a, const float *b, float *c, int n)
{
    int i = blockDim.x * blockIdx.x + threadIdx.x;
    if (i < n)
        c[i] = a[i] + b[i];
}

// Every CUDA call goes through here, so a failure names the call.
bool ok(cudaError_t rc, const char *what)
{
    if (rc == cudaSuccess)
        return true;
    std::fprintf(stderr, "vectoradd: %s failed: %s (%s)\n", what, cudaGetErrorString(rc),
                 cudaGetErrorName(rc));
    if (rc == cudaErrorNoDevice || rc == cudaErrorInsufficientDriver)
        std::fprintf(stderr, "vectoradd: no usable GPU in this container: does the pod ask for "
                             "nvidia.com/gpu and run with runtimeClassName: nvidia? "
                             "On the node, run: gpulet doctor\n");
    return false;
}

}  // namespace

int main()
{
    int devices = 0;
    if (!ok(cudaGetDeviceCount(&devices), "cudaGetDeviceCount"))
        return 1;
    cudaDeviceProp prop{};
    if (!ok(cudaGetDeviceProperties(&prop, 0), "cudaGetDeviceProperties"))
        return 1;
    std::printf("[Vector addition of %d elements on %s, %d GPU(s) visible]\n", kElements,
                prop.name, devices);

    const size_t bytes = kElements * sizeof(float);
    std::vector<float> a(kElements), b(kElements), c(kElements);
    for (int i = 0; i < kElements; i++) {
        a[i] = static_cast<float>(std::rand()) / RAND_MAX;
        b[i] = static_cast<float>(std::rand()) / RAND_MAX;
    }
    float *da = nullptr, *db = nullptr, *dc = nullptr;
    bool good = ok(cudaMalloc(&da, bytes), "cudaMalloc") &&
                ok(cudaMalloc(&db, bytes), "cudaMalloc") &&
                ok(cudaMalloc(&dc, bytes), "cudaMalloc") &&
                ok(cudaMemcpy(da, a.data(), bytes, cudaMemcpyHostToDevice), "cudaMemcpy") &&
                ok(cudaMemcpy(db, b.data(), bytes, cudaMemcpyHostToDevice), "cudaMemcpy");
    if (good) {
        const int threads = 256, blocks = (kElements + threads - 1) / threads;
        std::printf("CUDA kernel launch with %d blocks of %d threads\n", blocks, threads);
        vector_add<<<blocks, threads>>>(da, db, dc, kElements);
        good = ok(cudaGetLastError(), "vector_add launch") &&
               ok(cudaMemcpy(c.data(), dc, bytes, cudaMemcpyDeviceToHost), "cudaMemcpy");
    }
    for (int i = 0; good && i < kElements; i++) {
        if (c[i] != a[i] + b[i]) {
            std::fprintf(stderr, "vectoradd: element %d is %f, expected %f\n", i, c[i],
                         a[i] + b[i]);
            good = false;
        }
    }
    cudaFree(da);
    cudaFree(db);
    cudaFree(dc);
    if (!good)
        return 1;
    std::printf("Test PASSED\n");
    return 0;
}
