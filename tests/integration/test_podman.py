"""podman reads gpulet's CDI spec: `--device nvidia.com/gpu=0` gives a
busybox container GPU 0's device node, the control node and the driver
libraries of the fake driver root (podman with vfs storage, cgroupfs and
runc, which work on hosts with hybrid cgroups where crun does not)."""
import os
import shutil
import subprocess
import tempfile

import pytest

from test_cdi import driver_root  # noqa: F401 (the fixture)

PODMAN = shutil.which("podman")
BUSYBOX = shutil.which("busybox") or "/bin/busybox"
pytestmark = pytest.mark.skipif(PODMAN is None, reason="podman is not installed")


@pytest.fixture
def podman(tmp_path):
    # podman puts sockets under its run root: keep that path short.
    short = tempfile.mkdtemp(prefix="gpulet-podman-")
    base = [PODMAN, "--root", f"{short}/storage", "--runroot", f"{short}/run",
            "--storage-driver", "vfs", "--cgroup-manager", "cgroupfs"]
    try:
        rootfs = tmp_path / "rootfs"
        (rootfs / "bin").mkdir(parents=True)
        (rootfs / "etc").mkdir()
        shutil.copy(BUSYBOX, rootfs / "bin" / "busybox")
        for cmd in ("sh", "ls"):
            os.symlink("busybox", rootfs / "bin" / cmd)
        tar = subprocess.Popen(["tar", "-C", str(rootfs), "-c", "."], stdout=subprocess.PIPE)
        imported = subprocess.run([*base, "import", "-", "localhost/gpulet-busybox"],
                                  stdin=tar.stdout, capture_output=True, text=True, timeout=120)
        # tar gets SIGPIPE, not a pipe no one reads, where podman stopped early
        tar.stdout.close()
        tar.wait(timeout=60)
        assert imported.returncode == 0, imported.stderr
        yield base
        subprocess.run([*base, "rmi", "-a", "-f"], capture_output=True, timeout=120)
    finally:
        shutil.rmtree(short, ignore_errors=True)


def test_podman_runs_a_container_with_our_cdi_device(gpulet, podman, driver_root):  # noqa: F811
    # podman 4.3 reads specs from /etc/cdi and /var/run/cdi only.
    os.makedirs("/var/run/cdi", exist_ok=True)
    spec = f"/var/run/cdi/gpulet-test-{os.getpid()}.yaml"
    r = gpulet("--simulate", "dgx-a100", "cdi", "generate", "--driver-root", driver_root,
               "--no-hook", "--output", spec)
    assert r.rc == 0, r.err
    try:
        run = subprocess.run([*podman, "run", "--rm", "--runtime", "runc",
                              "--ulimit", "nofile=1024:1024", "--ulimit", "nproc=1024:1024",
                              "--device", "nvidia.com/gpu=0", "localhost/gpulet-busybox", "sh",
                              "-c", "ls /dev; ls /usr/lib/x86_64-linux-gnu"],
                             capture_output=True, text=True, timeout=120)
    finally:
        os.unlink(spec)
    assert run.returncode == 0, run.stderr
    words = run.stdout.split()
    assert sorted(w for w in words if w.startswith("nvidia")) == ["nvidia0", "nvidiactl"]
    assert "libcuda.so.1" in words and "libnvidia-ml.so.550.90.07" in words
