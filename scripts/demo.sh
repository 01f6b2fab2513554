#!/bin/sh
# `make demo`: gpulet's main job on a simulated DGX A100 — registration
# with a kubelet stand-in, a pod allocated two GPUs, the node labels,
# /metrics with the pod's labels, an XID and the recovery
# (scripts/demo.py). On a terminal it keeps running until Ctrl-C.
set -eu
build=${1:-build}
# Debian's python3, which has grpcio and yaml (scripts/install-deps.sh)
PYTHONDONTWRITEBYTECODE=1 exec /usr/bin/python3 "$(dirname "$0")/demo.py" "$build"
