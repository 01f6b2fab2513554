"""Issue #23 item 9: libgpulet-cuda.so loads on glibc 2.31 (Ubuntu 20.04
CUDA images) and holds its limit there. It runs in a Debian bullseye
userland (glibc 2.31) made by debootstrap from Debian's archive and cached
in the build folder (`bullseye/`), with a stand-in driver that needs no C
library at all and a probe library, both built here against old symbol
versions only."""
import os
import re
import shutil
import subprocess

import pytest

ARCHIVE = "http://deb.debian.org/debian"
NEWER_THAN_2_31 = re.compile(r"GLIBC_2\.(3[2-9]|[4-9]\d)")
SBIN = os.environ.get("PATH", "") + ":/usr/sbin:/sbin"
DEBOOTSTRAP = shutil.which("debootstrap", path=SBIN)
CHROOT = shutil.which("chroot", path=SBIN)

# A driver of four functions: device pointers are counted, nothing is backed.
STUB = r"""
static unsigned long long next_ptr = 1ULL << 32;
int cuInit(unsigned int flags) { return flags ? 1 : 0; }
int cuDeviceGetCount(int *n) { *n = 1; return 0; }
int cuCtxGetDevice(int *d) { *d = 0; return 0; }
int cuMemAlloc_v2(unsigned long long *p, unsigned long bytes) { *p = next_ptr; next_ptr += bytes; return 0; }
int cuMemFree_v2(unsigned long long p) { (void)p; return 0; }
"""

# Preloaded after the interposer into bullseye's /bin/true: opens the
# driver by name and allocates through dlsym, as a framework does.
PROBE = r"""
__asm__(".symver dlopen,dlopen@GLIBC_2.2.5");
__asm__(".symver dlsym,dlsym@GLIBC_2.2.5");
#include <dlfcn.h>
#include <stdio.h>
__attribute__((constructor)) static void probe(void)
{
    void *h = dlopen("libcuda.so.1", RTLD_NOW);
    int (*init)(unsigned int) = h ? (int (*)(unsigned int))dlsym(h, "cuInit") : 0;
    int (*alloc)(unsigned long long *, unsigned long) =
        h ? (int (*)(unsigned long long *, unsigned long))dlsym(h, "cuMemAlloc_v2") : 0;
    unsigned long long p;
    if (!init || !alloc) {
        printf("probe missing\n");
        return;
    }
    int r0 = init(0), r1 = alloc(&p, 768 << 10), r2 = alloc(&p, 512 << 10);
    printf("probe init=%d first=%d second=%d\n", r0, r1, r2);
    fflush(stdout);
}
"""


def bullseye(build):
    """The cached userland, made on first use."""
    root = build / "bullseye"
    if (root / "usr" / "bin" / "true").exists():
        return root
    why = None
    if DEBOOTSTRAP is None:
        why = "debootstrap is not installed (scripts/install-deps.sh installs it)"
    else:
        tmp = build / "bullseye.tmp"
        shutil.rmtree(tmp, ignore_errors=True)
        p = subprocess.run([DEBOOTSTRAP, "--variant=minbase", "bullseye", str(tmp), ARCHIVE],
                           capture_output=True, text=True, timeout=1200)
        if p.returncode == 0:
            tmp.rename(root)
            return root
        shutil.rmtree(tmp, ignore_errors=True)
        why = f"debootstrap could not fetch bullseye from {ARCHIVE}: " + \
            (p.stderr.strip().splitlines() or ["?"])[-1]
    if os.environ.get("CI") == "true":
        pytest.fail(why)
    pytest.skip(why)


@pytest.mark.skipif(os.geteuid() != 0 or CHROOT is None, reason="debootstrap and chroot need root")
def test_the_interposer_loads_and_holds_on_glibc_2_31(build, tmp_path):
    lib = build / "libgpulet-cuda.so"
    if not lib.exists():
        pytest.fail(f"{lib} is missing: run `make`")
    versions = subprocess.run(["objdump", "-T", str(lib)], capture_output=True, text=True,
                              check=True).stdout
    assert not NEWER_THAN_2_31.search(versions), \
        [l for l in versions.splitlines() if NEWER_THAN_2_31.search(l)]

    root = bullseye(build)
    assert list((root / "usr" / "lib" / "x86_64-linux-gnu").glob("libc-2.31.so")), \
        "the userland is not glibc 2.31"
    work = root / "tmp" / f"gpulet-{os.getpid()}"
    shutil.rmtree(work, ignore_errors=True)
    (work / "state").mkdir(parents=True)
    try:
        (tmp_path / "stub.c").write_text(STUB)
        (tmp_path / "probe.c").write_text(PROBE)
        subprocess.run(["cc", "-shared", "-fPIC", "-nostdlib", "-Wl,-soname,libcuda.so.1", "-o",
                        str(work / "libcuda.so.1"), str(tmp_path / "stub.c")], check=True)
        subprocess.run(["cc", "-shared", "-fPIC", "-o", str(work / "libprobe.so"),
                        str(tmp_path / "probe.c"), "-Wl,--no-as-needed", "-l:libdl.so.2"],
                       check=True)
        shutil.copy(lib, work / "libgpulet-cuda.so")
        inside = "/" + str(work.relative_to(root))
        env = {"PATH": "/usr/bin:/bin", "LD_LIBRARY_PATH": inside,
               "LD_PRELOAD": f"{inside}/libgpulet-cuda.so {inside}/libprobe.so",
               "GPULET_CUDA_MEMORY_LIMIT": "1Mi", "GPULET_CUDA_STATE_DIR": f"{inside}/state"}
        # set inside: the host's chroot must not preload the userland's paths
        p = subprocess.run([CHROOT, str(root), "/usr/bin/env", "-i",
                            *[f"{k}={v}" for k, v in env.items()], "/bin/true"],
                           capture_output=True, text=True, timeout=60)
        assert p.returncode == 0, p.stdout + p.stderr
        assert "cannot be preloaded" not in p.stderr and "GLIBC_" not in p.stderr, p.stderr
        # 768 KiB fit the 1 MiB limit; 512 KiB more are refused: OUT_OF_MEMORY
        assert "probe init=0 first=0 second=2" in p.stdout, p.stdout + p.stderr
        assert "memory limit reached" in p.stderr, p.stderr
        assert (work / "state" / "device-0").exists()  # the shared budget's file
    finally:
        shutil.rmtree(work, ignore_errors=True)
