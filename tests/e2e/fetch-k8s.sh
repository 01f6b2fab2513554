#!/bin/sh
# Fetches the parts of the v1.34 cluster into CACHE, once, and prints one
# line per part (NAME=PATH):
# - the Kubernetes binaries: from $GPULET_E2E_K8S (a folder of kubelet,
#   kube-apiserver, kube-controller-manager, kube-scheduler, kubectl, plain
#   or gzipped), else from a shared/k8s/v1.34.9 folder beside the checkout,
#   gunzipped once into CACHE/k8s-v1.34.9 after checking SHA256SUMS;
# - etcd 3.5 and containerd 1.7 from Debian trixie with a private apt
#   configuration under CACHE/apt (the machine's own sources are never
#   changed), `apt-get download` + `dpkg-deb -x` into CACHE/trixie.
# Exit 77 with one line on stderr where there are no Kubernetes binaries,
# 78 where they are present but etcd or containerd cannot be fetched.
set -eu
CACHE=${1:?usage: fetch-k8s.sh CACHE_DIR}
mkdir -p "$CACHE"
CACHE=$(cd "$CACHE" && pwd)
HERE=$(cd "$(dirname "$0")" && pwd)
skip() { echo "$*" >&2; exit 77; }
stuck() { echo "$*" >&2; exit 78; }
NAMES="kubelet kube-apiserver kube-controller-manager kube-scheduler kubectl"

if [ -n "${GPULET_E2E_K8S:-}" ]; then
    SRC=$(cd "$GPULET_E2E_K8S" 2>/dev/null && pwd) || skip "GPULET_E2E_K8S=$GPULET_E2E_K8S is not a folder"
    OUT=$CACHE/k8s-own
else
    # beside the checkout, or beside the main checkout of a git worktree;
    # the same for the checkout a local clone was made from
    beside() {
        common=$(git -C "$1" rev-parse --path-format=absolute --git-common-dir 2>/dev/null || true)
        for top in "$1" "${common%/.git}"; do
            top=$(cd "$top" 2>/dev/null && pwd) || continue
            dir=$(dirname "$top")/shared/k8s/v1.34.9
            [ -d "$dir" ] && { cd "$dir" && pwd; return 0; }
        done
        return 1
    }
    origin=$(git -C "$HERE" remote get-url origin 2>/dev/null || echo /nonexistent)
    SRC=$(beside "$HERE/../..") || SRC=$(beside "$origin") \
        || skip "no Kubernetes v1.34 binaries: set GPULET_E2E_K8S=DIR (kubelet, kube-apiserver, kube-controller-manager, kube-scheduler, kubectl)"
    OUT=$CACHE/k8s-v1.34.9
fi
mkdir -p "$OUT"
if [ -f "$SRC/SHA256SUMS" ] && [ ! -f "$OUT/.verified" ]; then
    (cd "$SRC" && sha256sum --quiet -c SHA256SUMS) >&2 || { echo "checksums of $SRC do not match its SHA256SUMS" >&2; exit 1; }
fi
for n in $NAMES; do
    if [ -f "$SRC/$n.gz" ]; then
        # once per .gz: a newer .gz (a user's own folder) is unpacked again
        if [ ! -x "$OUT/$n" ] || [ "$SRC/$n.gz" -nt "$OUT/$n" ]; then
            gzip -dc "$SRC/$n.gz" > "$OUT/$n.tmp" && chmod 755 "$OUT/$n.tmp" && mv "$OUT/$n.tmp" "$OUT/$n"
        fi
        echo "$n=$OUT/$n"
    elif [ -x "$SRC/$n" ]; then
        echo "$n=$SRC/$n"
    else
        skip "no $n in $SRC (set GPULET_E2E_K8S=DIR to a folder with kubelet, kube-apiserver, kube-controller-manager, kube-scheduler, kubectl)"
    fi
done
[ -f "$SRC/SHA256SUMS" ] && touch "$OUT/.verified"

# etcd 3.5 and containerd 1.7 from trixie, with apt options that touch
# nothing of the machine's apt state.
DEBS=$CACHE/trixie
if [ ! -x "$DEBS/usr/bin/containerd" ] || [ ! -x "$DEBS/usr/bin/etcd" ]; then
    command -v apt-get >/dev/null || stuck "no apt-get: cannot fetch etcd 3.5 and containerd 1.7 from Debian trixie"
    APT=$CACHE/apt
    mkdir -p "$APT/lists/partial" "$APT/cache/archives/partial" "$APT/etc"
    uri=$(sed -n 's/^URIs: *\(http[^ ]*\/debian\)\/*$/\1/p' /etc/apt/sources.list.d/*.sources 2>/dev/null | head -n 1)
    [ -n "$uri" ] || uri=http://deb.debian.org/debian
    echo "deb [signed-by=/usr/share/keyrings/debian-archive-keyring.gpg] $uri trixie main" > "$APT/etc/sources.list"
    set -- -o Dir::Etc::SourceList="$APT/etc/sources.list" -o Dir::Etc::SourceParts=/dev/null \
        -o Dir::State::Lists="$APT/lists" -o Dir::Cache="$APT/cache" -o DPkg::Lock::Timeout=120 \
        -o APT::Sandbox::User=root -q
    apt-get "$@" update >"$APT/update.log" 2>&1 || stuck "apt-get update for Debian trixie failed ($uri; log: $APT/update.log): make the archive reachable or unpack etcd-server and containerd (trixie) into $DEBS"
    rm -rf "$APT/debs" "$DEBS.tmp"; mkdir -p "$APT/debs" "$DEBS.tmp"
    (cd "$APT/debs" && apt-get "$@" download etcd-server containerd) >"$APT/download.log" 2>&1 \
        || stuck "apt-get download etcd-server containerd (trixie) failed (log: $APT/download.log): make the archive reachable or unpack them into $DEBS"
    for d in "$APT"/debs/*.deb; do dpkg-deb -x "$d" "$DEBS.tmp"; done
    rm -rf "$DEBS"; mv "$DEBS.tmp" "$DEBS"
fi
echo "etcd=$DEBS/usr/bin/etcd"
echo "containerd=$DEBS/usr/bin/containerd"
echo "containerd-shim-runc-v2=$DEBS/usr/bin/containerd-shim-runc-v2"
