#!/bin/sh
# Builds the validator image gpulet-validator:VERSION offline: vectoradd
# (validator/vectoradd.cu, built with nvcc) and exactly the shared libraries
# it loads, at the paths they have on Debian, in an image FROM scratch.
#
#   scripts/build-validator-image.sh [BUILD_DIR]
#
# Without nvcc it says so and exits 0: the validator is optional. The image
# lands in the vfs store podman reads, or under $GPULET_IMAGE_STORE.
set -eu

root=$(cd "$(dirname "$0")/.." && pwd)
build=${1:-$root/build}
version=$(sed -n 's/^project(gpulet VERSION \([0-9.]*\).*/\1/p' "$root/CMakeLists.txt")
image=gpulet-validator:$version
store=""
if [ -n "${GPULET_IMAGE_STORE:-}" ]; then
    store="--root $GPULET_IMAGE_STORE/storage --runroot $GPULET_IMAGE_STORE/run"
fi

[ -f "$build/CMakeCache.txt" ] || cmake -S "$root" -B "$build" -DCMAKE_BUILD_TYPE=RelWithDebInfo >/dev/null
cmake --build "$build" --target validator -- --no-print-directory
program=$build/validator/vectoradd
if [ ! -x "$program" ]; then
    echo "validator image: skipped: vectoradd was not built (no nvcc)"
    exit 0
fi
command -v buildah >/dev/null || { echo "gpulet: buildah is missing; run make deps" >&2; exit 1; }

context=$build/validator/context
rm -rf "$context"
mkdir -p "$context/root/usr/bin"
cp "$program" "$context/root/usr/bin/vectoradd"
strip "$context/root/usr/bin/vectoradd"
interp=$(readelf -l "$program" | sed -n 's/.*interpreter: \(.*\)]$/\1/p')
"$root/scripts/elf-deps.sh" "$program" | while read -r name path; do
    mkdir -p "$context/root$(dirname "$path")"
    cp -L "$path" "$context/root$path"
done
mkdir -p "$context/root$(dirname "$interp")"
cp -L "$interp" "$context/root$interp"
cp "$root/validator/Containerfile" "$context/Containerfile"
buildah $store --storage-driver vfs bud --quiet --layers=false --format oci \
    -t "$image" -f "$context/Containerfile" "$context" >/dev/null
echo "image $image: $(du -sh "$context/root" | cut -f1) uncompressed"
