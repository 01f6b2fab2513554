#!/bin/sh
# Device plugin figures: RPC latency on dgx-a100 (8 GPUs) and with
# 8 GPUs x 16 time-slicing replicas, then kubelet-facing timings.
#   bench/device-plugin.sh [BUILD_DIR]
set -eu
build=$(cd "${1:-build}" && pwd)
tmp=$(mktemp -d)
pid=
trap '[ -n "$pid" ] && kill $pid 2>/dev/null; rm -rf "$tmp"' EXIT

run_case() { # label, extra args...
    label=$1; shift
    mkdir -p "$tmp/$label"
    "$build/gpulet" --log-level error --simulate dgx-a100 run --device-plugin-dir "$tmp/$label" --no-metrics --no-labels "$@" &
    pid=$!
    sock="$tmp/$label/nvidia-gpu.sock"
    for _ in $(seq 100); do [ -S "$sock" ] && break; sleep 0.05; done
    echo "== $label"
    "$build/bench/bench_plugin_rpc" "$sock" 2000
    kill $pid; wait $pid 2>/dev/null || true; pid=
}

run_case whole-gpus
printf 'version: v1\nsharing:\n  timeSlicing:\n    resources:\n    - name: nvidia.com/gpu\n      replicas: 16\n' >"$tmp/replicas.yaml"
run_case replicas --config-file "$tmp/replicas.yaml"
echo "== kubelet timings"
/usr/bin/python3 "$(dirname "$0")/kubelet_timings.py" "$build" 20
