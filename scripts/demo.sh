#!/bin/sh
# `make demo`: gpulet on a simulated DGX A100, then the same node after
# one of its GPUs falls off the bus.
set -eu
build=${1:-build}
gpulet="$build/gpulet"
state=$(mktemp --suffix=.yaml)
trap 'rm -f "$state"' EXIT

say() { printf '\n\033[1m$ %s\033[0m\n' "$*"; }

say gpulet --simulate dgx-a100 info
"$gpulet" --simulate dgx-a100 info

say gpulet --simulate a100-mig info
"$gpulet" --simulate a100-mig info

printf 'gpus:\n  3:\n    lost: true\n' >"$state"
say "GPULET_SIM_STATE=$state gpulet --simulate dgx-a100 info   # GPU 3 fell off the bus"
GPULET_SIM_STATE="$state" "$gpulet" --simulate dgx-a100 info

say "gpulet --simulate dgx-a100 info --json | head -24"
"$gpulet" --simulate dgx-a100 info --json | head -24

cat <<'MSG'

That was a simulated node: the same binary reads the real driver's
libnvidia-ml.so.1 when you leave out --simulate. Fixtures: sim/nodes/;
the simulator's file formats: docs/simulator.md.
MSG
