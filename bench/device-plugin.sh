#!/bin/sh
# Device plugin figures: RPC latency on dgx-a100 (8 GPUs), with 8 GPUs x 16
# time-slicing replicas and on a made-up 16-GPU node (two DGX A100 halves
# of NVSwitch fabric), then kubelet-facing timings.
#   bench/device-plugin.sh [BUILD_DIR]
set -eu
build=$(cd "${1:-build}" && pwd)
tmp=$(mktemp -d)
pid=
trap '[ -n "$pid" ] && kill $pid 2>/dev/null; rm -rf "$tmp"' EXIT

run_case() { # label, node, extra args...
    label=$1; node=$2; shift 2
    mkdir -p "$tmp/$label"
    "$build/gpulet" --log-level error --simulate "$node" run --device-plugin-dir "$tmp/$label" --no-metrics --no-labels "$@" &
    pid=$!
    sock="$tmp/$label/nvidia-gpu.sock"
    for _ in $(seq 100); do [ -S "$sock" ] && break; sleep 0.05; done
    echo "== $label"
    "$build/bench/bench_plugin_rpc" "$sock" 2000
    kill $pid; wait $pid 2>/dev/null || true; pid=
}

run_case whole-gpus dgx-a100
printf 'version: v1\nsharing:\n  timeSlicing:\n    resources:\n    - name: nvidia.com/gpu\n      replicas: 16\n' >"$tmp/replicas.yaml"
run_case replicas dgx-a100 --config-file "$tmp/replicas.yaml"
{
    printf 'name: sixteen\nmachine: 16-GPU bench node\ndriver_version: "550.90.07"\n'
    printf 'nvml_version: "12.550.90.07"\ncuda_driver_version: 12040\n'
    printf 'gpu_defaults:\n  name: NVIDIA A100-SXM4-80GB\n  memory_mib: 81920\n  compute_capability: "8.0"\ngpus:\n'
    for i in $(seq 0 15); do
        printf '  - uuid: GPU-00000000-0000-0000-0000-%012d\n' "$i"
        printf '    pci_bus_id: "00000000:%02X:00.0"\n    numa_node: %d\n' $((16 + i * 8)) $((i / 8))
    done
    printf 'topology:\n  pcie_default: system\n  pcie:\n    - level: multiple\n'
    printf '      groups: [[0, 1], [2, 3], [4, 5], [6, 7], [8, 9], [10, 11], [12, 13], [14, 15]]\n'
    printf '    - level: node\n      groups: [[0, 1, 2, 3, 4, 5, 6, 7], [8, 9, 10, 11, 12, 13, 14, 15]]\n'
    printf '  nvswitch_links: [2, 2, 2, 2, 2, 2]\n'
} >"$tmp/sixteen.yaml"
run_case 16-gpus "$tmp/sixteen.yaml"
echo "== kubelet timings"
/usr/bin/python3 "$(dirname "$0")/kubelet_timings.py" "$build" 20
