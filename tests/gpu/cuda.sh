#!/bin/sh
# libgpulet-cuda.so on a real GPU: the check to run when a machine with an
# NVIDIA GPU, its driver and the CUDA toolkit (nvcc) is lent.
#
#   tests/gpu/cuda.sh [BUILD_DIR]
#
# 1. cudaprog (tests/cuda/cudaprog.c) against the real libcuda.so.1, every
#    way in, every allocation kind, under a 1 GiB limit: each fill stays
#    within the limit, cuMemGetInfo and NVML report it;
# 2. cuda_malloc.cu: a cudaMalloc loop (the runtime, via cuGetProcAddress)
#    under a 2 GiB limit;
# 3. cuda_throughput.cu: ~1 ms kernels for 5 s free and under a 30 % share:
#    the ratio must be 0.30 +- 0.05.
# Exit 0 when everything holds; prints each figure.
set -eu
root=$(cd "$(dirname "$0")/../.." && pwd)
build=${1:-$root/build-gpu}
command -v nvidia-smi >/dev/null || { echo "tests/gpu/cuda.sh: no GPU driver here" >&2; exit 2; }
nvcc=$(command -v nvcc || echo /usr/local/cuda/bin/nvcc)
[ -x "$nvcc" ] || { echo "tests/gpu/cuda.sh: nvcc not found" >&2; exit 2; }

cmake -S "$root" -B "$build" -DCMAKE_BUILD_TYPE=RelWithDebInfo -DBUILD_TESTING=OFF >/dev/null
cmake --build "$build" -j "$(nproc)" --target gpulet-cuda >/dev/null
lib=$build/libgpulet-cuda.so
out=$(mktemp -d)
trap 'rm -rf "$out"' EXIT
cc -O2 -I"$root/src" -o "$out/cudaprog" "$root/tests/cuda/cudaprog.c" -lcuda -ldl
"$nvcc" -O2 -o "$out/cuda_malloc" "$root/tests/gpu/cuda_malloc.cu"
"$nvcc" -O2 -o "$out/cuda_throughput" "$root/tests/gpu/cuda_throughput.cu"
mkdir -p "$out/state"
status=0
limited() { env LD_PRELOAD="$lib" GPULET_CUDA_STATE_DIR="$out/state" GPULET_CUDA_CONTEXT_SIZE=0 "$@"; }
check() { # what, condition
    if eval "$2"; then echo "ok   $1"; else echo "FAIL $1"; status=1; fi
}

limit=$((1 << 30))
for way in direct dlsym procaddr procaddr-ptsz; do
    for kind in alloc:1048576 pitch:1024 managed:1048576 async:1048576 pool:1048576 array:1024 vmm:2097152; do
        line=$(limited GPULET_CUDA_MEMORY_LIMIT=1Gi "$out/cudaprog" $way "fill:${kind%%:*}:${kind#*:}" | grep '^fill')
        got=$(echo "$line" | sed 's/.*total=\([0-9]*\).*/\1/')
        check "$way ${kind%%:*}: $line" "[ $got -le $limit ] && [ $got -ge $((limit - (64 << 20))) ]"
    done
done
info=$(limited GPULET_CUDA_MEMORY_LIMIT=1Gi "$out/cudaprog" direct info nvml)
echo "$info"
check "cuMemGetInfo total is the limit" "echo '$info' | grep -q '^info rc=0 .*total=$limit'"
check "NVML total is the limit" "echo '$info' | grep -q '^nvml rc=0 total=$limit'"

line=$(limited GPULET_CUDA_MEMORY_LIMIT=2Gi "$out/cuda_malloc")
got=$(echo "$line" | sed 's/.*got=\([0-9]*\).*/\1/')
check "cudaMalloc loop under 2Gi: $line" "[ $got -le $((2 << 30)) ] && [ $got -ge $(((2 << 30) - (64 << 20))) ]"

free=$("$out/cuda_throughput" 5 | tee /dev/stderr | sed 's/.*per_second=\([0-9.]*\).*/\1/')
capped=$(limited GPULET_CUDA_COMPUTE_SHARE=30 "$out/cuda_throughput" 5 | tee /dev/stderr | sed 's/.*per_second=\([0-9.]*\).*/\1/')
ratio=$(awk "BEGIN { printf \"%.3f\", $capped / $free }")
check "throughput under 30 %: ratio $ratio" "awk 'BEGIN { exit !($ratio >= 0.25 && $ratio <= 0.35) }'"
exit $status
