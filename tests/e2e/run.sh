#!/bin/sh
# make e2e: gpulet on a real node (tests/e2e), once per Kubernetes version:
# v1.20.2 (a standalone kubelet built once from Debian's source package)
# and v1.34.9 (a one-node cluster: the binaries of $GPULET_E2E_K8S or
# a shared/k8s/v1.34.9 folder beside the checkout, etcd and containerd from Debian trixie), each in
# its own network and mount namespaces and cgroup root. Arguments after
# BUILD go to pytest (e.g. -k xid for one step); GPULET_E2E_VERSIONS picks
# versions (default "v1.20.2 v1.34.9"). Prints one result line per version;
# a version that cannot run says why and what to do. With CI=true a
# version whose binaries are present but cannot start is a failure.
set -eu
cd "$(dirname "$0")/../.."
BUILD=$(cd "${1:-build}" && pwd)
[ $# -gt 0 ] && shift
CACHE=${GPULET_E2E_CACHE:-$BUILD/e2e-cache}
VERSIONS=${GPULET_E2E_VERSIONS:-v1.20.2 v1.34.9}
CI=${CI:-false}
start=$(date +%s)
RESULTS=""
failed=0
result() { RESULTS="$RESULTS$1
"; }
# A version that cannot run: a skip, or under CI where its binaries are
# present ($2 = present), a failure.
cannot() {
    if [ "$CI" = true ] && [ "$2" = present ]; then
        result "e2e $1: FAILED: $3"; failed=1
    else
        result "e2e $1: skipped: $3"
    fi
}
# VERSION PACKAGES...: apt-get install, waiting for another apt's lock; a
# failure shows apt's last lines and is this version's failure, never a skip.
install() {
    v=$1; shift
    log=$CACHE/apt-$v.log
    if ! DEBIAN_FRONTEND=noninteractive apt-get install -y -q -o DPkg::Lock::Timeout=600 "$@" >"$log" 2>&1; then
        tail -n 5 "$log"
        result "e2e $v: FAILED: apt-get install $* failed (log: $log)"; failed=1
        return 1
    fi
}
suite() {  # VERSION ARGS...: pytest once, its summary as the result line
    v=$1; shift
    log=$CACHE/pytest-$v.log
    rc=0
    { GPULET_BUILD=$BUILD GPULET_E2E_CACHE=$CACHE GPULET_E2E_VERSION=$v /usr/bin/python3 -m pytest \
        -p no:cacheprovider -q tests/e2e "$@" || echo $? > "$log.rc"; } | tee "$log"
    [ -f "$log.rc" ] && rc=$(cat "$log.rc") && rm -f "$log.rc"
    summary=$(grep -E '^=*( |)[0-9]+ (passed|failed|error|skipped|deselected)|no tests ran' "$log" \
        | tail -n 1 | tr -d '=' | sed 's/^ *//; s/ *$//')
    if [ "$rc" = 0 ]; then
        result "e2e $v: ok: $summary"
    else
        result "e2e $v: FAILED: ${summary:-pytest exit $rc} (log: $log)"; failed=1
    fi
}

if [ "$(id -u)" != 0 ]; then
    for v in $VERSIONS; do cannot "$v" absent "needs root (namespaces, cgroups, containerd): run make e2e as root"; done
    printf %s "$RESULTS"; exit 0
fi
mkdir -p "$CACHE"
for tool in unshare nsenter setpriv ip openssl; do
    if ! command -v $tool >/dev/null; then
        for v in $VERSIONS; do cannot "$v" present "no $tool: install util-linux, iproute2 and openssl"; done
        printf %s "$RESULTS"; exit $failed
    fi
done

for v in $VERSIONS; do
    case $v in
    v1.20.2)
        if ! command -v containerd >/dev/null || ! command -v ctr >/dev/null || ! command -v runc >/dev/null; then
            install $v containerd runc || continue
        fi
        rc=0
        KUBELET=$(nice tests/e2e/build-kubelet.sh "$CACHE" 2>"$CACHE/build.log") || rc=$?
        if [ "$rc" = 77 ]; then
            cannot $v absent "$(tail -n 1 "$CACHE/build.log" | sed 's/^e2e: skipped: //') (needs a deb-src entry that answers)"
            continue
        fi
        if [ "$rc" != 0 ]; then
            tail -n 30 "$CACHE/build.log"
            result "e2e $v: FAILED: building the kubelet failed (log: $CACHE/build.log)"; failed=1
            continue
        fi
        echo "e2e $v: kubelet $KUBELET ($(( $(date +%s) - start )) s to build or find)"
        GPULET_E2E_KUBELET=$KUBELET suite $v --ignore=tests/e2e/test_cluster.py "$@"
        ;;
    v1.34.9)
        if ! command -v runc >/dev/null || [ ! -x /usr/lib/cni/bridge ]; then
            install $v runc containernetworking-plugins || continue
        fi
        rc=0
        nice tests/e2e/fetch-k8s.sh "$CACHE" >"$CACHE/fetch.out" 2>"$CACHE/fetch.log" || rc=$?
        case $rc in
        0) echo "e2e $v: binaries, etcd and containerd in $CACHE ($(( $(date +%s) - start )) s so far)"
           suite $v "$@" ;;
        77) cannot $v absent "$(tail -n 1 "$CACHE/fetch.log")" ;;
        78) cannot $v present "$(tail -n 1 "$CACHE/fetch.log")" ;;
        *) tail -n 5 "$CACHE/fetch.log"
           result "e2e $v: FAILED: tests/e2e/fetch-k8s.sh exit $rc (log: $CACHE/fetch.log)"; failed=1 ;;
        esac
        ;;
    *) result "e2e $v: FAILED: unknown version (GPULET_E2E_VERSIONS: v1.20.2 and/or v1.34.9)"; failed=1 ;;
    esac
done
printf %s "$RESULTS"
echo "e2e: $(( $(date +%s) - start )) s in all"
exit $failed
