#!/bin/sh
# Builds the gpulet container image offline: a bundle under
# /usr/local/gpulet (our programs, the simulator, and exactly the shared
# libraries they load, with glibc's own loader) in an image FROM scratch.
# The same bundle is what host setup copies onto a node.
#
#   scripts/build-image.sh [BUILD_DIR]
#
# Prints the image name and its size, uncompressed and compressed. The
# image lands in the vfs store that `podman --storage-driver vfs` reads, or
# in a store of its own under $GPULET_IMAGE_STORE (the tests use one).
set -eu

root=$(cd "$(dirname "$0")/.." && pwd)
build=${1:-$root/build-image}
prefix=/usr/local/gpulet
version=$(sed -n 's/^project(gpulet VERSION \([0-9.]*\).*/\1/p' "$root/CMakeLists.txt")
image=gpulet:$version
jobs=$(nproc 2>/dev/null || echo 2)
store=""
if [ -n "${GPULET_IMAGE_STORE:-}" ]; then
    store="--root $GPULET_IMAGE_STORE/storage --runroot $GPULET_IMAGE_STORE/run"
fi

for tool in buildah readelf ldd; do
    if ! command -v "$tool" >/dev/null; then
        echo "gpulet: $tool is missing; run make deps (Debian packages buildah, binutils, libc-bin)" >&2
        exit 1
    fi
done

# The loader the programs name: the build machine's, copied into the bundle.
interp=$(readelf -l /bin/true | sed -n 's/.*interpreter: \(.*\)]$/\1/p')
[ -n "$interp" ] || { echo "gpulet: cannot find the dynamic loader of /bin/true" >&2; exit 1; }

cmake -S "$root" -B "$build" -DCMAKE_BUILD_TYPE=MinSizeRel -DBUILD_TESTING=OFF \
    -DCMAKE_INSTALL_PREFIX=$prefix -DGPULET_BUNDLE_INTERP="$(basename "$interp")" >/dev/null
cmake --build "$build" -j "$jobs" --target gpulet gpulet-runtime gpulet-hook gpulet-cuda -- --no-print-directory >/dev/null

context=$build/context
rm -rf "$context"
mkdir -p "$context/root"
DESTDIR=$context/root cmake --install "$build" --strip >/dev/null
bundle=$context/root$prefix

# Every library a program or the simulator loads, by the name it asks for,
# as plain files (no symlinks to follow on the host). glibc's compatibility
# stubs come too: the driver's libnvidia-ml.so.1 still asks for them.
libs=$("$root/scripts/elf-deps.sh" "$bundle"/bin/* "$bundle"/lib/gpulet/*.so*)
libdir=$(dirname "$(echo "$libs" | sed -n 's/^libc\.so\.6 //p')")
for stub in libdl.so.2 libpthread.so.0 librt.so.1 libm.so.6; do
    [ -e "$libdir/$stub" ] && libs="$libs
$stub $libdir/$stub"
done
echo "$libs" | sort -u | while read -r name path; do
    [ -n "$name" ] && cp -L "$path" "$bundle/lib/$name"
done
cp -L "$interp" "$bundle/lib/$(basename "$interp")"
chmod 0755 "$bundle/lib/$(basename "$interp")"

cp "$root/Containerfile" "$context/Containerfile"
buildah $store --storage-driver vfs bud --quiet --layers=false --format oci \
    --label org.opencontainers.image.version="$version" \
    -t "$image" -f "$context/Containerfile" "$context" >/dev/null

# Compressed size: the OCI archive whose layer buildah gzips, as a registry
# would store it.
rm -f "$build/gpulet.oci.tar"
buildah $store --storage-driver vfs push --quiet "$image" "oci-archive:$build/gpulet.oci.tar:$image" >/dev/null
raw=$(du -sb "$context/root" | cut -f1)
packed=$(stat -c %s "$build/gpulet.oci.tar")
echo "image $image: $(awk "BEGIN{printf \"%.1f\", $raw/1048576}") MiB uncompressed," \
    "$(awk "BEGIN{printf \"%.1f\", $packed/1048576}") MiB compressed ($build/gpulet.oci.tar)"
