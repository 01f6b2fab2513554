"""GPU slices given by DRA claims in /metrics: the containers the kubelet's
pod-resources answer names for a claim (dynamic_resources) get the same
gpulet_container_* series as the device plugin's sliced containers — the
claim's memory limit and compute share from its slice folder, and the
usage the real interposer writes into the claim's state folder."""
import os
import re
import subprocess

import pytest
import yaml

from conftest import ROOT
from kubelet import load_protos, wait_for
from test_cdi import driver_root  # noqa: F401 (run_gpulet uses it)
from test_dra import (NODE, SLICES_CONFIG, api, certs, claim_spec, prepare,  # noqa: F401
                      protos, run_gpulet, unprepare)
from test_metrics import pod_server
from test_slices import scrape

MIB = 1 << 20
GIB = 1 << 30


@pytest.fixture(scope="module")
def pr(tmp_path_factory):
    load_protos(tmp_path_factory.mktemp("protos"))
    from podresources.v1 import api_pb2  # noqa: E402
    return api_pb2


def claim_pod(pr, name, container, claims):
    """A pod whose container holds these claims: (namespace, claim name,
    device) each."""
    return pr.PodResources(name=name, namespace="team", containers=[pr.ContainerResources(
        name=container, dynamic_resources=[pr.DynamicResource(
            claim_name=claim, claim_namespace=ns, claim_resources=[pr.ClaimResource(
                driver_name="gpu.nvidia.com", pool_name=NODE, device_name=device)])
            for ns, claim, device in claims])])


def series(body, name):
    """{(gpu, pod, container): value} of one family."""
    out = {}
    for m in re.finditer(name + r'\{gpu="(\d+)",UUID="[^"]*",pod="([^"]*)",namespace="[^"]*",'
                         r'container="([^"]*)"\} (\S+)', body):
        key = (m.group(1), m.group(2), m.group(3))
        assert key not in out, f"{name}: two series for {key}"
        out[key] = float(m.group(4))
    return out


def hold_memory(build, tmp_path, spec, gpu, amount):
    """cudaprog under the real interposer with the claim's limits and state
    folder (the host paths of its spec's mounts), holding amount on gpu."""
    edits = spec["containerEdits"]
    mounts = {m["containerPath"]: m["hostPath"] for m in edits["mounts"]}
    env = {k: v for k, v in os.environ.items() if not k.startswith("GPULET_CUDA_")}
    env.update({k: v for k, v in (e.split("=", 1) for e in edits["env"])
                if k.startswith("GPULET_CUDA_")})
    env.update({
        "GPULET_SIM_NODE": str(ROOT / "sim" / "nodes" / "dgx-a100.yaml"),
        "GPULET_SIM_DEVICE_STATE": str(tmp_path / "node.device"),
        "LD_LIBRARY_PATH": str(build / "sim" / "current"),
        "LD_PRELOAD": str(build / "libgpulet-cuda.so"),
        "ASAN_OPTIONS": "verify_asan_link_order=0:detect_leaks=0",
        "CUDA_VISIBLE_DEVICES": str(gpu),
        "GPULET_CUDA_STATE_DIR": mounts["/run/gpulet/cuda"],
    })
    prog = build / "tests" / "cudaprog"
    if not prog.exists():
        pytest.fail(f"{prog} is missing: run `make`")
    hold = subprocess.Popen([str(prog), "direct", f"alloc:{amount}", "hold"], env=env,
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    wait_for(lambda: hold.stdout.readline() in ("holding\n", ""), what="cudaprog holding")
    assert hold.poll() is None, hold.stderr.read()
    return hold


def test_claim_slices_in_metrics(build, run_gpulet, api, protos, pr, tmp_path):
    _, dra = protos
    (tmp_path / "config.yaml").write_text(yaml.safe_dump(SLICES_CONFIG))
    resp = pr.ListPodResourcesResponse()
    server = pod_server(pr, tmp_path / "pr.sock", resp)
    hold = None
    try:
        g = run_gpulet("dgx-a100", extra=[
            "--config-file", str(tmp_path / "config.yaml"),
            "--cuda-interposer", str(build / "libgpulet-cuda.so")], metrics=[
            "--metrics-address", "127.0.0.1:0", "--collect-interval", "1000",
            "--pod-resources-socket", str(tmp_path / "pr.sock")])
        port = int(wait_for(lambda: re.search(r'msg="serving metrics".* port=(\d+)', g.text()),
                            what="the metrics port").group(1))
        api.wait_for(lambda: api.slices, what="a slice")
        a = api.put_claim("team", "a", ["gpu-1"], memory="10Gi")
        b = api.put_claim("team", "b", ["gpu-1"], memory="20Gi")
        whole = api.put_claim("team", "whole", ["gpu-2"])
        # the kubelet lists the claims' pods; one container names its claim
        # twice, another names a claim gpulet never prepared, a third a
        # claim of the same name in another namespace
        resp.pod_resources.extend([
            claim_pod(pr, "pod-a", "main", [("team", "a", "gpu-1"), ("team", "a", "gpu-1")]),
            claim_pod(pr, "pod-b", "main", [("team", "b", "gpu-1")]),
            claim_pod(pr, "pod-b", "side", [("team", "b", "gpu-1")]),
            claim_pod(pr, "pod-w", "main", [("team", "whole", "gpu-2")]),
            claim_pod(pr, "pod-x", "main", [("team", "never-prepared", "gpu-1")]),
            claim_pod(pr, "pod-y", "main", [("other", "a", "gpu-1")]),
        ])
        answer = prepare(tmp_path, dra, [("team", "a", a), ("team", "b", b),
                                         ("team", "whole", whole)])
        assert all(answer.claims[u].error == "" for u in (a, b, whole))
        hold = hold_memory(build, tmp_path, claim_spec(tmp_path, a), 1, 256 * MIB)

        # a prepare makes gpulet list pods again soon; the usage shows once
        # the listing after the interposer's file came
        body = wait_for(lambda: (lambda t: t if 'gpulet_container_memory_used_bytes{gpu="1"'
                                 in t and "DCGM_FI_DEV_FB_USED" in t else None)(scrape(port)),
                        timeout=30, what="the claim's usage and a sample in /metrics")
        limit = series(body, "gpulet_container_memory_limit_bytes")
        assert limit == {("1", "pod-a", "main"): 10 * GIB, ("1", "pod-b", "main"): 20 * GIB,
                         ("1", "pod-b", "side"): 20 * GIB}
        share = series(body, "gpulet_container_compute_share_percent")
        assert share == {("1", "pod-a", "main"): 12.5, ("1", "pod-b", "main"): 25,
                         ("1", "pod-b", "side"): 25}
        used = series(body, "gpulet_container_memory_used_bytes")
        assert list(used) == [("1", "pod-a", "main")]
        assert 256 * MIB <= used[("1", "pod-a", "main")] < 10 * GIB
        # the shared GPU's memory series gives pod-a its own figure
        fb = re.search(r'DCGM_FI_DEV_FB_USED\{gpu="1",[^}]*pod="pod-a"[^}]*\} (\S+)', body)
        assert fb and float(fb.group(1)) == int(used[("1", "pod-a", "main")]) >> 20
        # the whole GPU's claim has no limits; its pod is named on the GPU
        assert re.search(r'DCGM_FI_DEV_GPU_TEMP\{gpu="2",[^}]*pod="pod-w"', body)

        # unprepared: the claim's series go with its folder
        hold.terminate()
        hold.wait(timeout=10)
        hold = None
        assert unprepare(tmp_path, dra, [("team", "a", a)]).claims[a].error == ""
        prepare(tmp_path, dra, [("team", "b", b)])  # a listing soon after
        wait_for(lambda: 'pod="pod-a"' not in scrape(port).split(
            "gpulet_container_memory_limit_bytes", 1)[-1], timeout=30,
            what="pod-a's limit gone")
        limit = series(scrape(port), "gpulet_container_memory_limit_bytes")
        assert limit == {("1", "pod-b", "main"): 20 * GIB, ("1", "pod-b", "side"): 20 * GIB}
    finally:
        if hold:
            hold.kill()
            hold.wait()
        server.stop(0)
