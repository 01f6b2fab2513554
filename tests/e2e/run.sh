#!/bin/sh
# make e2e: gpulet on a real node (tests/e2e). Builds the kubelet once into
# the cache folder, then runs the pytest suite against BUILD. Arguments after
# BUILD go to pytest (e.g. -k xid for one step). Skips, with one line and
# exit 0, where this machine cannot do it (no deb-src, no containerd).
set -eu
cd "$(dirname "$0")/../.."
BUILD=$(cd "${1:-build}" && pwd)
[ $# -gt 0 ] && shift
CACHE=${GPULET_E2E_CACHE:-$BUILD/e2e-cache}
start=$(date +%s)

if [ "$(id -u)" != 0 ]; then echo "e2e: skipped: needs root (containerd, kubelet)"; exit 0; fi
if ! command -v containerd >/dev/null || ! command -v runc >/dev/null || ! command -v ctr >/dev/null; then
    if ! out=$(DEBIAN_FRONTEND=noninteractive apt-get install -y -q -o DPkg::Lock::Timeout=600 \
            containerd runc 2>&1); then
        echo "$out" | tail -n 5; echo "e2e: could not install containerd and runc with apt-get"; exit 1
    fi
fi
rc=0
mkdir -p "$CACHE"
KUBELET=$(nice tests/e2e/build-kubelet.sh "$CACHE" 2>"$CACHE/build.log") || rc=$?
if [ "$rc" = 77 ]; then tail -n 1 "$CACHE/build.log"; exit 0; fi
if [ "$rc" != 0 ]; then
    tail -n 30 "$CACHE/build.log"; echo "e2e: building the kubelet failed (log: $CACHE/build.log)"; exit 1
fi
echo "e2e: kubelet $KUBELET ($(( $(date +%s) - start )) s to build or find)"

rc=0
GPULET_BUILD=$BUILD GPULET_E2E_KUBELET=$KUBELET /usr/bin/python3 -m pytest -p no:cacheprovider \
    -q tests/e2e "$@" || rc=$?
echo "e2e: $(( $(date +%s) - start )) s in all"
exit $rc
