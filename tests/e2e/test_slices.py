"""GPU slices on the real node (issue #17): gpulet restarted with
`sharing.slices` cutting two free GPUs of the simulated DGX A100 (80 GiB)
into 10 GiB slices as nvidia.com/gpu-10gb, and a static pod asking for two
of them. Its image holds tests/cuda/cudaprog, the simulated libcuda.so.1
and the host's glibc (the interposer that Allocate's /etc/ld.so.preload
names needs glibc >= 2.34). Checked through the kubelet's checkpoint and
inside the container: one GPU, a 20 GiB limit that cudaprog reaches and
cannot pass, and a variable set in the pod spec that does not raise it.
Afterwards gpulet serves 8 whole GPUs again."""
import pathlib
import re
import subprocess
import time

import pytest

from conftest import figure
from node import (PATH, RESOURCE, busybox_files, docker_archive, wait_for)

SLICES = "nvidia.com/gpu-10gb"
CUDA_IMAGE = "docker.io/gpulet-e2e/cuda:1"
GIB = 1 << 30
MIB = 1 << 20
CTX = 64 * MIB  # the interposer's charge per context
LIMIT = 20 * GIB  # two 10 GiB slices on one GPU


def cuda_image(node):
    """busybox + cudaprog + the simulated driver (in /opt/sim, ahead of the
    CDI's stand-in libcuda.so.1 by LD_LIBRARY_PATH) + the host's glibc."""
    build = node.build
    files = busybox_files()
    files.update({"opt": (0o755, None), "opt/sim": (0o755, None), "lib64": (0o755, None)})
    prog = (build / "tests" / "cudaprog").resolve()
    libcuda = (build / "sim" / "cuda" / "libcuda.so.1").resolve()
    files["opt/sim/cudaprog"] = (0o755, prog.read_bytes())
    files["opt/sim/libcuda.so.1"] = (0o755, libcuda.read_bytes())
    files["opt/sim/node.yaml"] = (0o644, (pathlib.Path(__file__).resolve().parents[2] /
                                          "sim/nodes/dgx-a100.yaml").read_bytes())
    for obj in (prog, libcuda, build / "libgpulet-cuda.so"):
        out = subprocess.run(["ldd", str(obj)], capture_output=True, text=True,
                             check=True).stdout
        for m in re.finditer(r"(\S+\.so[.\d]*) => (/\S+)", out):
            if m[1] != "libcuda.so.1":
                files[f"opt/sim/{m[1]}"] = (0o755, pathlib.Path(m[2]).resolve().read_bytes())
        for m in re.finditer(r"^\s*(/lib64/ld-linux\S+)", out, re.M):
            files[m[1].lstrip("/")] = (0o755, pathlib.Path(m[1]).resolve().read_bytes())
    tarball = node.dir / "cuda.tar"
    docker_archive(tarball, CUDA_IMAGE, files, {"Cmd": ["sh"], "Env": [PATH]})
    node.ctr("images", "import", "--snapshotter", "native", tarball)


def config(node):
    """Slices on the last two GPUs no pod holds (the session's gpu2 pod
    may hold two)."""
    cp = node.read_checkpoint() or (None, [])
    held = {i for e in cp[1] if e["ResourceName"] == RESOURCE for v in
            (e["DeviceIDs"].values() if isinstance(e["DeviceIDs"], dict) else [e["DeviceIDs"]])
            for i in v}
    free = [i for i, u in enumerate(node.uuids) if u not in held][-2:]
    path = node.dir / "slices.yaml"
    path.write_text(f"""version: v1
sharing:
  slices:
    resources:
    - name: {RESOURCE}
      devices: {free}
      memory: 10Gi
      rename: gpu-10gb
""")
    return path, free


@pytest.fixture(scope="module")
def sliced(node):
    cuda_image(node)
    path, free = config(node)
    node.stop("gpulet")
    node.start_gpulet(["--config-file", path, "--state-dir", node.dir / "gpulet-state",
                       "--cuda-interposer", (node.build / "libgpulet-cuda.so").resolve()])
    try:
        # 7 of 10 GiB in each A100's 81329 MiB (80 GiB less 591 MiB reserved)
        wait_for("the kubelet to register 14 slices and 6 whole GPUs", lambda: len(
            node.registered(SLICES) or []) == 14 and len(node.registered() or []) == 6, 30, 0.005)
        figure("gpulet start with slices -> kubelet registered 14 slices + 6 GPUs",
               time.time() - node.gpulet_started)
        yield free
    finally:
        node.remove_pod("slice2")
        node.stop("gpulet")
        node.start_gpulet()
        wait_for("the kubelet to register gpulet's 8 GPUs again",
                 lambda: len(node.registered() or []) == 8, 30)


def test_a_pod_with_two_slices_runs_with_a_20gib_limit(node, sliced):
    free = [node.uuids[i] for i in sliced]
    assert sorted(node.registered(SLICES)) == sorted(f"{u}::s{k}" for u in free for k in range(7))
    # the pod spec tries to raise its limit to the whole GPU
    node.add_pod("slice2", gpus=2, resource=SLICES, image=CUDA_IMAGE,
                 env={"GPULET_CUDA_MEMORY_LIMIT_0": "80Gi", "GPULET_CUDA_MEMORY_LIMIT": "80Gi"})
    pod, cid = node.running_container("slice2")
    ids = node.allocated(pod["metadata"]["uid"], SLICES)
    assert len(ids) == 2 and len({i.split("::")[0] for i in ids}) == 1, ids  # packed
    gpu = ids[0].split("::")[0]
    assert gpu in free

    limits = node.exec(cid, "cat /etc/gpulet/cuda-limits")
    keys = dict(re.findall(r"^(\w+)=(\S+)$", limits, re.M))
    assert keys["GPULET_CUDA_MEMORY_LIMIT_0"] == str(LIMIT), limits
    assert keys["GPULET_CUDA_DEVICE_UUID_0"] == gpu
    assert not any(k.endswith("_1") for k in keys), limits  # one GPU
    env = node.exec(cid, "env")
    assert "GPULET_CUDA_MEMORY_LIMIT_0=80Gi" in env.split("\n")  # set, and ignored below

    run = ("export LD_LIBRARY_PATH=/opt/sim GPULET_SIM_NODE=/opt/sim/node.yaml "
           "GPULET_SIM_DEVICE_STATE=/tmp/node.device CUDA_VISIBLE_DEVICES=$NVIDIA_VISIBLE_DEVICES; "
           "exec /opt/sim/cudaprog direct ")
    out = node.exec(cid, run + f"info fill:alloc:{64 * MIB} info")

    def result(op, text=out):
        found = [dict(re.findall(r"(\w+)=(\d+)", line)) for line in text.splitlines()
                 if line.startswith(op + " ")]
        assert found, text
        return {k: int(v) for k, v in found[-1].items()}
    assert result("info")["total"] == LIMIT
    fill = result("fill")
    assert fill["rc"] == 2, out  # CUDA_ERROR_OUT_OF_MEMORY, at the limit
    assert LIMIT - 2 * CTX < fill["total"] <= LIMIT - CTX, out  # ... and not before it
    # one allocation past the limit at once is refused; one just under it is not
    out = node.exec(cid, run + f"alloc:{LIMIT - CTX + 1}")
    assert result("alloc", out)["rc"] == 2, out
    out = node.exec(cid, run + f"alloc:{LIMIT - CTX}")
    assert result("alloc", out)["rc"] == 0, out
