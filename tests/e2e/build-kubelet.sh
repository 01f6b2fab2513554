#!/bin/sh
# Builds a real kubelet v1.20.2 from Debian's `kubernetes` source package
# (fetched with a private apt configuration naming the machine's archives
# as deb-src), once: the binary, the source tree and the Go cache live in CACHE (outside
# the source tree) and are reused. Prints the kubelet's path on success.
# Exit 77 (with one line on stderr) when this machine cannot build it.
set -eu
CACHE=${1:?usage: build-kubelet.sh CACHE_DIR}
mkdir -p "$CACHE"
CACHE=$(cd "$CACHE" && pwd)
BIN=$CACHE/kubelet-v1.20.2
if [ -x "$BIN" ] && "$BIN" --version 2>/dev/null | grep -q 'v1.20.2'; then
    echo "$BIN"; exit 0
fi
skip() { echo "e2e: skipped: $*" >&2; exit 77; }
command -v apt-get >/dev/null || skip "no apt-get on this machine"

export DEBIAN_FRONTEND=noninteractive
need=""
command -v go >/dev/null || need="$need golang-go"
command -v dpkg-source >/dev/null || need="$need dpkg-dev"
if [ -n "$need" ]; then
    apt-get install -y -q -o DPkg::Lock::Timeout=600 $need >/dev/null \
        || { echo "e2e: could not install$need with apt-get" >&2; exit 1; }
fi

SRC=$CACHE/src
if [ ! -d "$SRC/kubernetes/cmd/kubelet" ]; then
    # deb-src entries with the machine's own URIs and suites, in a private
    # apt configuration under CACHE/apt-src: the machine's sources stay as
    # they are.
    APT=$CACHE/apt-src
    rm -rf "$APT"; mkdir -p "$APT/parts" "$APT/lists/partial" "$APT/cache/archives/partial"
    for f in /etc/apt/sources.list.d/*.sources; do
        [ -e "$f" ] && sed 's/^Types:.*/Types: deb-src/' "$f" > "$APT/parts/$(basename "$f")"
    done
    grep -h '^deb ' /etc/apt/sources.list /etc/apt/sources.list.d/*.list 2>/dev/null \
        | sed 's/^deb /deb-src /' > "$APT/sources.list" || true
    set -- -o Dir::Etc::SourceList="$APT/sources.list" -o Dir::Etc::SourceParts="$APT/parts" \
        -o Dir::State::Lists="$APT/lists" -o Dir::Cache="$APT/cache" \
        -o DPkg::Lock::Timeout=600 -o APT::Sandbox::User=root -q
    apt-get "$@" update >"$APT/update.log" 2>&1 || skip "apt-get update of deb-src entries failed (log: $APT/update.log)"
    rm -rf "$SRC.tmp"; mkdir -p "$SRC.tmp"
    (cd "$SRC.tmp" && apt-get "$@" source kubernetes >"$APT/source.log" 2>&1) \
        || { rm -rf "$SRC.tmp"; skip "apt-get source kubernetes failed (no deb-src reachable)"; }
    dir=$(find "$SRC.tmp" -mindepth 1 -maxdepth 1 -type d -name 'kubernetes-*' | head -n 1)
    [ -n "$dir" ] || skip "apt-get source kubernetes gave no tree"
    mv "$dir" "$SRC.tmp/kubernetes"
    rm -rf "$SRC"; mv "$SRC.tmp" "$SRC"
fi

# GOPATH mode, as upstream 1.20 built (module mode fails on the vendor tree).
GOPATH=$CACHE/gopath
mkdir -p "$GOPATH/src/k8s.io"
ln -sfn "$SRC/kubernetes" "$GOPATH/src/k8s.io/kubernetes"
export GOPATH GOCACHE="$CACHE/gocache" GO111MODULE=off CGO_ENABLED=0 GOPROXY=off GOFLAGS= GOTOOLCHAIN=local
V=k8s.io/kubernetes/vendor/k8s.io/component-base/version
cd "$GOPATH/src/k8s.io/kubernetes"
go build -tags selinux,notest \
    -ldflags "-s -w -X $V.gitVersion=v1.20.2 -X $V.gitMajor=1 -X $V.gitMinor=20 -X $V.gitTreeState=clean" \
    -o "$BIN.tmp" ./cmd/kubelet >&2
mv "$BIN.tmp" "$BIN"
echo "$BIN"
