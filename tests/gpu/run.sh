#!/bin/sh
# Checks gpulet against a real GPU and driver: builds gpulet, runs
# `gpulet info --json` on the real libnvidia-ml.so.1 and compares each GPU
# with what nvidia-smi reports, then (where nvcc is) runs the validator,
# validator/vectoradd, which must print "Test PASSED". Run it on a machine
# with an NVIDIA GPU:
#
#   tests/gpu/run.sh [BUILD_DIR]
#
# Needs cmake, a C compiler, libyaml-dev and libjansson-dev, python3 and
# nvidia-smi. Exit 0 when everything matches; prints what it compared.
set -eu
root=$(cd "$(dirname "$0")/../.." && pwd)
build=${1:-$root/build-gpu}

command -v nvidia-smi >/dev/null || { echo "tests/gpu: nvidia-smi not found: no GPU driver here" >&2; exit 2; }

cmake -S "$root" -B "$build" -DCMAKE_BUILD_TYPE=RelWithDebInfo -DBUILD_TESTING=OFF >/dev/null
cmake --build "$build" -j "$(nproc)" --target gpulet >/dev/null

out=$(mktemp -d)
trap 'rm -rf "$out"' EXIT
"$build/gpulet" info --json >"$out/info.json"
"$build/gpulet" info
nvidia-smi --query-gpu=index,uuid,name,serial,pci.bus_id,memory.total,compute_cap,driver_version,mig.mode.current \
    --format=csv,noheader,nounits >"$out/smi.csv"
nvidia-smi -L

status=0
python3 - "$out/info.json" "$out/smi.csv" <<'PY' || status=1
import csv, json, sys
info = json.load(open(sys.argv[1]))
rows = [[c.strip() for c in r] for r in csv.reader(open(sys.argv[2]))]
problems = []
def check(what, ours, theirs):
    ok = str(ours) == str(theirs)
    print(f"{'ok  ' if ok else 'DIFF'} {what}: gpulet={ours!r} nvidia-smi={theirs!r}")
    if not ok:
        problems.append(what)
check("GPU count", len(info["gpus"]), len(rows))
for g, r in zip(info["gpus"], rows):
    index, uuid, name, serial, bus, mem, cc, driver, mig = r
    p = f"GPU {index}"
    check(f"{p} index", g["index"], index)
    check(f"{p} uuid", g["uuid"], uuid)
    check(f"{p} name", g["name"], name)
    if serial not in ("[N/A]", "N/A"):
        check(f"{p} serial", g["serial"], serial)
    check(f"{p} pci bus id", g["pci_bus_id"], bus)
    check(f"{p} memory MiB", g["memory_total_mib"], mem)
    check(f"{p} compute capability", g["compute_capability"], cc)
    check(f"{p} driver", info["driver_version"], driver)
    if mig not in ("[N/A]", "N/A"):
        check(f"{p} MIG enabled", g["mig"]["enabled"], mig == "Enabled")
print(f"{len(problems)} differences")
sys.exit(1 if problems else 0)
PY

cmake --build "$build" --target validator >/dev/null
if [ -x "$build/validator/vectoradd" ]; then
    if "$build/validator/vectoradd" | tee "$out/validator.txt" && grep -q "Test PASSED" "$out/validator.txt"; then
        echo "ok   validator: Test PASSED"
    else
        echo "FAIL validator"
        status=1
    fi
else
    echo "skip validator: nvcc (the CUDA toolkit) is not installed"
fi
exit $status
