#!/bin/sh
# Installs the Debian packages gpulet needs to build and test, and nothing
# else. Idempotent: when every package is already there it prints nothing.
set -eu

packages="
build-essential
cmake
pkg-config
libyaml-dev
libjansson-dev
libevent-dev
libnghttp2-dev
libprotobuf-c-dev
zlib1g-dev
libcurl4-openssl-dev
protobuf-c-compiler
libcmocka-dev
clang
libclang-rt-14-dev
python3
python3-pytest
python3-yaml
python3-grpcio
python3-grpc-tools
python3-prometheus-client
runc
busybox-static
debootstrap
containerd
podman
buildah
prometheus
valgrind
wrk
"

missing=""
for p in $packages; do
    if ! dpkg-query -W -f='${Status}\n' "$p" 2>/dev/null | grep -q '^install ok installed$'; then
        missing="$missing $p"
    fi
done

[ -z "$missing" ] && exit 0

if [ "$(id -u)" -ne 0 ]; then
    echo "gpulet: missing Debian packages:$missing" >&2
    echo "gpulet: run as root, or install them with: sudo apt-get install$missing" >&2
    exit 1
fi

echo "gpulet: installing Debian packages:$missing" >&2
export DEBIAN_FRONTEND=noninteractive
# Another apt or dpkg (unattended upgrades, a second make) may hold the lock:
# wait for it rather than fail.
apt="apt-get -q -o DPkg::Lock::Timeout=600"
log=$(mktemp)
trap 'rm -f "$log"' EXIT
if ! $apt install -y --no-install-recommends $missing >"$log" 2>&1; then
    # Stale package lists are the usual cause; anything else is said below.
    if ! $apt update >"$log" 2>&1 ||
        ! $apt install -y --no-install-recommends $missing >"$log" 2>&1; then
        tail -n 20 "$log" >&2
        echo "gpulet: could not install:$missing (apt-get's last lines above)" >&2
        exit 1
    fi
fi
