"""GPU slices end to end (issue #17): a Python kubelet asks `gpulet run` for
slices of a simulated T4, and runc containers (busybox, tests/cuda/cudaprog
on the simulated libcuda.so.1) are made from the Allocate answers exactly as
the kubelet applies them (variables and bind mounts). The interposer that
the answer's /etc/ld.so.preload names holds each container to its slices'
memory and compute, whatever the container's variables say, and /metrics
shows both containers' limits."""
import json
import os
import re
import shutil
import subprocess

import pytest

from conftest import ROOT
from kubelet import Kubelet, load_protos, wait_for
from test_device_plugin import Daemon
from test_metrics import pod, pod_server
from test_slices import scrape

RUNC = shutil.which("runc")
BUSYBOX = shutil.which("busybox") or "/bin/busybox"
pytestmark = pytest.mark.skipif(RUNC is None or not os.path.exists(BUSYBOX),
                                reason="runc and busybox-static are needed")

MIB = 1 << 20
GPU_MIB = 15360 - 257  # a T4 less what its driver reserves: what slices are cut from
CTX = 64 * MIB   # the interposer's charge per context
RESOURCE = "nvidia.com/gpu.quarter"
# GPU 2 of the simulated T4 node is idle: the shares measured are all ours
CONFIG = f"""version: v1
sharing:
  slices:
    resources:
    - name: nvidia.com/gpu
      devices: [2]
      replicas: 4
      rename: {RESOURCE}
"""
# what a container might set to escape its limits
RAISE = "export GPULET_CUDA_MEMORY_LIMIT=15Gi GPULET_CUDA_MEMORY_LIMIT_0=15Gi " \
        "GPULET_CUDA_COMPUTE_SHARE_0=100 GPULET_CUDA_STATE_DIR=/tmp GPULET_CUDA_CONTEXT_SIZE=1; "


@pytest.fixture(scope="module")
def pr(tmp_path_factory):
    load_protos(tmp_path_factory.mktemp("protos"))
    from podresources.v1 import api_pb2  # noqa: E402
    return api_pb2


def container(build, tmp_path, name, answer, script):
    """A runc bundle with busybox, the host's libraries and the build (read
    only, for cudaprog and the simulated driver), plus the Allocate answer's
    variables and mounts."""
    b = tmp_path / name
    root = b / "rootfs"
    (root / "bin").mkdir(parents=True)
    shutil.copy(BUSYBOX, root / "bin" / "busybox")
    os.symlink("busybox", root / "bin" / "sh")
    for d in ("etc", "tmp", "usr/lib/x86_64-linux-gnu", "usr/lib64"):
        (root / d).mkdir(parents=True, exist_ok=True)
    os.symlink("usr/lib", root / "lib")
    os.symlink("usr/lib64", root / "lib64")
    subprocess.run([RUNC, "spec"], cwd=b, check=True)
    config = json.loads((b / "config.json").read_text())
    config["process"]["terminal"] = False
    config["process"]["args"] = ["sh", "-c", script]
    config["root"]["readonly"] = False
    env = dict(answer.envs)
    config["process"]["env"] += [f"{k}={v}" for k, v in env.items()] + [
        # what the NVIDIA runtime achieves with NVIDIA_VISIBLE_DEVICES
        f"CUDA_VISIBLE_DEVICES={env['NVIDIA_VISIBLE_DEVICES']}",
        f"GPULET_SIM_NODE={ROOT / 'sim' / 'nodes' / 't4-pcie.yaml'}",
        f"GPULET_SIM_DEVICE_STATE={tmp_path / 'sim' / 'node.device'}",
        "ASAN_OPTIONS=verify_asan_link_order=0:detect_leaks=0"]

    def bind(src, dst, ro=True):
        config["mounts"].append({"destination": str(dst), "source": str(src), "type": "bind",
                                 "options": ["rbind", "ro" if ro else "rw"]})

    for d in ("/usr/lib/x86_64-linux-gnu", "/usr/lib64"):
        bind(d, d)
    built = (build / "tests" / "cudaprog").resolve().parents[1]
    bind(built, built)
    bind(ROOT / "sim" / "nodes", ROOT / "sim" / "nodes")
    bind(tmp_path / "sim", tmp_path / "sim", ro=False)
    for m in answer.mounts:
        bind(m.host_path, m.container_path, m.read_only)
    (b / "config.json").write_text(json.dumps(config, indent=1))
    return subprocess.Popen([RUNC, "--root", str(tmp_path / "runc"), "run", "--bundle", str(b),
                             name], stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)


def finish(proc):
    out, err = proc.communicate(timeout=120)
    assert proc.returncode == 0, out + err
    return out, err


def result(out, op):
    found = [dict(re.findall(r"(\w+)=(\d+)", line)) for line in out.splitlines()
             if line.startswith(op + " ")]
    assert found, out
    return {k: int(v) for k, v in found[-1].items()}


def test_slices_hold_containers_to_their_limits(build, tmp_path, pr):
    prog = (build / "tests" / "cudaprog").resolve()
    if not prog.exists():
        pytest.fail(f"{prog} is missing: run `make`")
    (tmp_path / "sim").mkdir()
    uuid2 = [line.split()[-1] for line in (ROOT / "sim" / "nodes" / "t4-pcie.yaml").read_text()
             .splitlines() if "uuid:" in line][2]
    resp = pr.ListPodResourcesResponse()
    server = pod_server(pr, tmp_path / "pr.sock", resp)
    kubelet = Kubelet(tmp_path / "dp", *load_protos(tmp_path / "protos"))
    cfg = tmp_path / "config.yaml"
    cfg.write_text(CONFIG)
    env = {k: v for k, v in os.environ.items()
           if not k.startswith(("GPULET_", "DCGM_")) and k not in
           ("CONFIG_FILE", "DEVICE_LIST_STRATEGY", "DEVICE_ID_STRATEGY")}
    d = Daemon(build, ["--simulate", "t4-pcie", "run", "--device-plugin-dir", tmp_path / "dp",
                       "--no-labels", "--config-file", cfg, "--state-dir", tmp_path / "state",
                       "--cuda-interposer", build / "libgpulet-cuda.so",
                       "--metrics-address", "127.0.0.1:0", "--collect-interval", "1000",
                       "--pod-resources-socket", tmp_path / "pr.sock"], env,
               tmp_path / "gpulet.log")
    try:
        kubelet.resource(RESOURCE)
        slices = sorted(kubelet.devices(RESOURCE))
        assert set(slices) == {f"{uuid2}::s{k}" for k in range(4)}
        pair = kubelet.preferred(RESOURCE, slices, [], 2)
        single = [next(s for s in slices if s not in pair)]
        a = kubelet.allocate(RESOURCE, single).container_responses[0]
        b = kubelet.allocate(RESOURCE, pair).container_responses[0]
        quarter = GPU_MIB // 4 * MIB

        # A fills its quarter and is refused beyond it, its variables notwithstanding
        out, err = finish(container(build, tmp_path, "fill", a,
                                    RAISE + f"exec {prog} direct info fill:alloc:{64 * MIB} info"))
        assert result(out, "info")["total"] == quarter
        fill = result(out, "fill")
        assert fill["rc"] == 2  # CUDA_ERROR_OUT_OF_MEMORY
        assert quarter - 2 * CTX < fill["total"] <= quarter - CTX
        assert "memory limit reached" in err
        # B has two slices: half the memory
        out, _ = finish(container(build, tmp_path, "half", b, RAISE + f"exec {prog} direct info"))
        assert result(out, "info")["total"] == 2 * quarter

        # both at once on the one GPU, each saturating: 25 % and 50 % of its time
        runs = [container(build, tmp_path, name, ans,
                          RAISE + f"exec {prog} direct run:busy_1000:1:1000:3")
                for name, ans in (("run-a", a), ("run-b", b))]
        # never more than the share of the wall time, and at least the share
        # of the time each had a CPU to launch from (a loaded machine keeps
        # a program waiting for one; cudaprog says how long)
        shares, launched = [], []
        for p in runs:
            r = result(finish(p)[0], "run")
            busy = r["launches"] * 1000000
            shares.append((busy / r["wall_ns"], busy / max(r["wall_ns"] - r["queued_ns"], 1)))
            launched.append(r["launches"])
        for (of_wall, of_ready), share in zip(shares, (0.25, 0.50)):
            assert of_wall <= share + 0.05 and of_ready >= share - 0.05, shares

        # C, on the last slice, holds a context and 256 MiB while the metrics look
        c = kubelet.allocate(RESOURCE, [s for s in slices if s not in pair + single]) \
            .container_responses[0]
        hold = container(build, tmp_path, "hold", c, f"exec {prog} direct alloc:{256 * MIB} hold")
        wait_for(lambda: "holding" in hold.stdout.readline(), what="C holding its memory")

        # the metrics show the containers' limits and usage once pod-resources lists them
        resp.pod_resources.append(pod(pr, "a", "team", "main", RESOURCE, single))
        resp.pod_resources.append(pod(pr, "b", "team", "main", RESOURCE, pair))
        resp.pod_resources.append(pod(pr, "c", "team", "main", RESOURCE,
                                      [s for s in slices if s not in pair + single]))
        port = int(wait_for(lambda: re.search(r'msg="serving metrics".* port=(\d+)', d.text()),
                            what="the metrics port").group(1))
        body = wait_for(lambda: (lambda t: t if t.count("gpulet_container_memory_used_bytes{")
                                 == 3 else None)(scrape(port)), what="the containers' usage")
        for name, mem, share in (("a", quarter, "25"), ("b", 2 * quarter, "50"),
                                 ("c", quarter, "25")):
            labels = f'{{gpu="2",UUID="{uuid2}",pod="{name}",namespace="team",container="main"}}'
            assert f"gpulet_container_memory_limit_bytes{labels} {mem}\n" in body
            assert f"gpulet_container_compute_share_percent{labels} {share}\n" in body
        series = {(m[0], m[1]): float(m[2]) for m in re.findall(
            r'gpulet_container_(memory_used_bytes|compute_seconds_total)\{[^}]*pod="(\w)"[^}]*\} '
            r'(\S+)', body)}
        assert series["memory_used_bytes", "c"] == CTX + 256 * MIB
        assert series["compute_seconds_total", "c"] == 0
        # A's and B's GPU time: their launches of 1 ms each, give or take the predictions
        for name, r in (("a", launched[0]), ("b", launched[1])):
            assert 0.7 * r / 1000 <= series["compute_seconds_total", name] <= 1.3 * r / 1000, \
                (name, r, series)
        # DCGM_FI_DEV_FB_USED of the shared GPU: each pod its own figure, in MiB
        fb = {m[0]: m[1] for m in re.findall(
            r'DCGM_FI_DEV_FB_USED\{gpu="2",[^}]*,pod="(\w)"\} (\S+)', body)}
        assert fb == {n: str(int(series["memory_used_bytes", n]) // MIB) for n in "abc"}, fb
        assert fb["c"] == str(320)
        hold.kill()
    finally:
        d.stop()
        kubelet.stop()
        server.stop(0)
        for name in ("fill", "half", "run-a", "run-b", "hold"):
            subprocess.run([RUNC, "--root", str(tmp_path / "runc"), "delete", "-f", name],
                           capture_output=True, timeout=30)
