"""validator/: the Job asks for one GPU and cleans up after itself; the
vectorAdd program builds with nvcc where the CUDA toolkit is, and on a
machine without a GPU it (and its image, run by podman) fails saying why.
On a GPU machine tests/gpu/run.sh runs it and expects "Test PASSED"."""
import os
import shutil
import subprocess
import tempfile

import pytest
import yaml

from conftest import BUILD, ROOT

NVCC = shutil.which("nvcc") or next(
    (p for p in (os.path.join(os.environ.get("CUDA_HOME", "/nonexistent"), "bin", "nvcc"),
                 "/usr/local/cuda/bin/nvcc") if os.access(p, os.X_OK)), None)
needs_nvcc = pytest.mark.skipif(NVCC is None, reason="nvcc (the CUDA toolkit) is not installed, "
                                "so the validator is not built")
# a real NVIDIA kernel driver: a GPU machine (tests/gpu/run.sh)
HAS_DRIVER = os.path.exists("/proc/driver/nvidia/version")
PODMAN = shutil.which("podman")
BUILDAH = shutil.which("buildah")


def test_job_asks_for_one_gpu_and_never_keeps_it():
    job = yaml.safe_load((ROOT / "validator" / "job.yaml").read_text())
    assert job["kind"] == "Job" and job["apiVersion"] == "batch/v1"
    spec = job["spec"]
    assert 0 < spec["ttlSecondsAfterFinished"] <= 300
    assert spec["activeDeadlineSeconds"] > 0 and spec["backoffLimit"] == 0
    pod = spec["template"]["spec"]
    assert pod["restartPolicy"] == "Never"
    assert pod["runtimeClassName"] == "nvidia"
    c, = pod["containers"]
    assert c["resources"]["limits"] == {"nvidia.com/gpu": 1}
    assert c["image"] == "gpulet-validator:0.1.0"
    assert c["securityContext"]["runAsNonRoot"] and c["securityContext"]["readOnlyRootFilesystem"]


@pytest.fixture(scope="module")
def vectoradd():
    built = subprocess.run(["cmake", "--build", str(BUILD), "--target", "validator"],
                           capture_output=True, text=True, timeout=600)
    assert built.returncode == 0, built.stdout + built.stderr
    return BUILD / "validator" / "vectoradd"


@needs_nvcc
def test_vectoradd_passes_on_a_gpu_or_says_why_not(vectoradd):
    r = subprocess.run([str(vectoradd)], capture_output=True, text=True, timeout=120)
    if HAS_DRIVER:  # a GPU machine: tests/gpu/run.sh
        assert r.returncode == 0, r.stderr
        assert "Test PASSED" in r.stdout
    else:
        assert r.returncode == 1
        assert "cudaGetDeviceCount failed" in r.stderr
        assert "nvidia.com/gpu" in r.stderr and "gpulet doctor" in r.stderr
        assert "Test PASSED" not in r.stdout


@needs_nvcc
@pytest.mark.skipif(PODMAN is None or BUILDAH is None, reason="buildah and podman are needed")
def test_validator_image_runs_read_only_as_nobody():
    store = tempfile.mkdtemp(prefix="gpulet-validator-")
    podman = [PODMAN, "--root", f"{store}/storage", "--runroot", f"{store}/run",
              "--storage-driver", "vfs", "--cgroup-manager", "cgroupfs"]
    try:
        built = subprocess.run([str(ROOT / "scripts" / "build-validator-image.sh"), str(BUILD)],
                               env=dict(os.environ, GPULET_IMAGE_STORE=store),
                               capture_output=True, text=True, timeout=600)
        assert built.returncode == 0, built.stdout + built.stderr
        assert "image gpulet-validator:0.1.0" in built.stdout
        r = subprocess.run([*podman, "run", "--rm", "--runtime", "runc", "--read-only",
                            "--ulimit", "nofile=1024:1024", "--ulimit", "nproc=1024:1024",
                            "--entrypoint", "/usr/bin/vectoradd",
                            "localhost/gpulet-validator:0.1.0"],
                           capture_output=True, text=True, timeout=120)
        # no GPU is given to this container: the program starts (its loader
        # and libraries are all there) and says what is missing
        assert r.returncode == 1, r.stderr
        assert "no usable GPU in this container" in r.stderr
    finally:
        subprocess.run([*podman, "rmi", "-a", "-f"], capture_output=True, timeout=120)
        shutil.rmtree(store, ignore_errors=True)
