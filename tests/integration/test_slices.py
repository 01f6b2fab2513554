"""GPU slices (sharing.slices) against the kubelet simulator: the config,
ListAndWatch, GetPreferredAllocation packing, Allocate's limits, mounts and
state folder, and the folder's removal once pod-resources shows the pod
gone."""
import http.client
import os
import re
import signal
import stat
import time

import grpc
import pytest

from conftest import load_node
from kubelet import Kubelet, load_protos, wait_for
from test_device_plugin import Daemon
from test_metrics import pod, pod_server

MiB = 1 << 20

CONFIG = """version: v1
sharing:
  timeSlicing:
    resources:
    - {name: nvidia.com/gpu, replicas: 4, devices: [3], rename: gpu.shared}
  slices:
    resources:
    - name: nvidia.com/gpu
      devices: [0, 1]
      memory: 10000Mi
      rename: gpu-10gb
    - name: nvidia.com/gpu
      devices: [2]
      replicas: 8
      rename: nvidia.com/gpu.eighth
"""


@pytest.fixture(scope="session")
def pr(tmp_path_factory):
    load_protos(tmp_path_factory.mktemp("protos"))
    from podresources.v1 import api_pb2  # noqa: E402
    return api_pb2


@pytest.fixture
def kubelet(tmp_path):
    k = Kubelet(tmp_path / "dp", *load_protos(tmp_path / "protos"))
    yield k
    k.stop()


@pytest.fixture
def start(build, tmp_path):
    started = []

    def run(config, *args, metrics=False):
        cfg = tmp_path / "config.yaml"
        cfg.write_text(config)
        lib = tmp_path / "lib" / "libgpulet-cuda.so"
        lib.parent.mkdir(exist_ok=True)
        lib.write_text("stands in for the interposer")
        env = {k: v for k, v in os.environ.items()
               if not k.startswith(("GPULET_", "DCGM_")) and k not in
               ("CONFIG_FILE", "DEVICE_LIST_STRATEGY", "DEVICE_ID_STRATEGY")}
        extra = (["--metrics-address", "127.0.0.1:0", "--collect-interval", "1000",
                  "--pod-resources-socket", tmp_path / "pr.sock"] if metrics else ["--no-metrics"])
        d = Daemon(build, ["--simulate", "dgx-a100", "run", "--device-plugin-dir", tmp_path / "dp",
                           "--no-labels", "--config-file", cfg, "--state-dir", tmp_path / "state",
                           "--cuda-interposer", lib, *extra, *args], env,
                   tmp_path / f"gpulet-{len(started)}.log")
        started.append(d)
        return d

    yield run
    # SIGTERM: a killed gpulet would leave its simulated sysfs behind
    for d in started:
        if d.proc.poll() is None:
            d.stop()


def uuids():
    n = load_node("dgx-a100")
    return [g["uuid"] for g in n["gpus"]]


def scrape(port):
    c = http.client.HTTPConnection("127.0.0.1", port, timeout=10)
    c.request("GET", "/metrics")
    body = c.getresponse().read().decode()
    c.close()
    return body


def folders(tmp_path, hidden=False):
    """The allocation folders in use; hidden: also those taken out of use
    (renamed .deep-…) and not yet removed from the disk."""
    alloc = tmp_path / "state" / "alloc"
    return sorted(p.name for p in alloc.iterdir()
                  if hidden or not p.name.startswith(".")) if alloc.exists() else []


def test_config_to_allocate(start, kubelet, tmp_path):
    start(CONFIG)
    u = uuids()
    res = kubelet.resource("nvidia.com/gpu-10gb")
    assert res.endpoint == "nvidia-gpu-10gb.sock"
    assert res.options.get_preferred_allocation_available
    tens = kubelet.devices("nvidia.com/gpu-10gb")
    assert set(tens) == {f"{u[g]}::s{k}" for g in (0, 1) for k in range(8)}
    kubelet.resource("nvidia.com/gpu.eighth")
    assert set(kubelet.devices("nvidia.com/gpu.eighth")) == {f"{u[2]}::s{k}" for k in range(8)}
    kubelet.resource("nvidia.com/gpu.shared")
    assert len(kubelet.devices("nvidia.com/gpu.shared")) == 4
    assert set(kubelet.devices("nvidia.com/gpu")) == set(u[4:])

    # GPU 0 has five slices free, GPU 1 all eight: two go to GPU 0 together
    available = [f"{u[0]}::s{k}" for k in range(3, 8)] + [f"{u[1]}::s{k}" for k in range(8)]
    pair = kubelet.preferred("nvidia.com/gpu-10gb", available, [], 2)
    assert len(pair) == 2 and all(i.startswith(u[0] + "::") for i in pair)
    six = kubelet.preferred("nvidia.com/gpu-10gb", available, [], 6)
    assert all(i.startswith(u[1] + "::") for i in six)

    c = kubelet.allocate("nvidia.com/gpu-10gb", pair).container_responses[0]
    env = dict(c.envs)
    assert env == {"NVIDIA_VISIBLE_DEVICES": u[0],
                   "GPULET_CUDA_MEMORY_LIMIT_0": str(20000 * MiB),
                   "GPULET_CUDA_COMPUTE_SHARE_0": "25",
                   "GPULET_CUDA_STATE_DIR": "/run/gpulet/cuda"}
    mounts = {m.container_path: (m.host_path, m.read_only) for m in c.mounts}
    (folder,) = folders(tmp_path)
    here = tmp_path / "state" / "alloc" / folder
    assert mounts == {
        "/usr/lib/gpulet/libgpulet-cuda.so": (str(tmp_path / "lib" / "libgpulet-cuda.so"), True),
        "/etc/ld.so.preload": (str(here / "ld.so.preload"), True),
        "/etc/gpulet/cuda-limits": (str(here / "limits"), True),
        "/run/gpulet/cuda": (str(here / "state"), False)}
    assert (here / "ld.so.preload").read_text() == "/usr/lib/gpulet/libgpulet-cuda.so\n"
    limits = (here / "limits").read_text()
    assert limits.startswith("#") and limits.endswith(
        f"\nGPULET_CUDA_DEVICE_UUID_0={u[0]}\n"
        f"GPULET_CUDA_MEMORY_LIMIT_0={20000 * MiB}\nGPULET_CUDA_COMPUTE_SHARE_0=25\n")
    assert stat.S_IMODE((here / "state").stat().st_mode) == 0o777
    assert stat.S_IMODE((tmp_path / "state" / "alloc").stat().st_mode) == 0o700
    assert stat.S_IMODE((here / "limits").stat().st_mode) == 0o644

    # one slice of each of two GPUs: ordinals in GPU order, whatever the request's
    c = kubelet.allocate("nvidia.com/gpu-10gb",
                         [f"{u[1]}::s0", f"{u[0]}::s7"]).container_responses[0]
    env = dict(c.envs)
    assert env["NVIDIA_VISIBLE_DEVICES"] == f"{u[0]},{u[1]}"
    assert env["GPULET_CUDA_MEMORY_LIMIT_0"] == env["GPULET_CUDA_MEMORY_LIMIT_1"] == str(10000 * MiB)
    assert env["GPULET_CUDA_COMPUTE_SHARE_1"] == "12.5"

    c = kubelet.allocate("nvidia.com/gpu.eighth", [f"{u[2]}::s5"]).container_responses[0]
    # what the driver can hand out, 81920 MiB less 591 reserved, in eighths
    assert dict(c.envs)["GPULET_CUDA_MEMORY_LIMIT_0"] == str(10166 * MiB)
    assert dict(c.envs)["GPULET_CUDA_COMPUTE_SHARE_0"] == "12.5"
    assert len(folders(tmp_path)) == 3

    # whole and time-shared GPUs get none of it
    c = kubelet.allocate("nvidia.com/gpu", [u[5]]).container_responses[0]
    assert dict(c.envs) == {"NVIDIA_VISIBLE_DEVICES": u[5]} and len(c.mounts) == 0


def test_folders_go_when_the_pods_go(start, kubelet, pr, tmp_path):
    u = uuids()
    resp = pr.ListPodResourcesResponse()
    calls = []
    server = pod_server(pr, tmp_path / "pr.sock", resp, calls=calls)
    try:
        d = start(CONFIG, metrics=True)
        kubelet.resource("nvidia.com/gpu-10gb")
        kubelet.resource("nvidia.com/gpu.eighth")
        kept = [f"{u[0]}::s0", f"{u[0]}::s1"]
        kubelet.allocate("nvidia.com/gpu-10gb", kept)
        kubelet.allocate("nvidia.com/gpu.eighth", [f"{u[2]}::s0"])
        assert len(folders(tmp_path)) == 2
        # the kubelet lists the first container only; the second is gone
        resp.pod_resources.append(pod(pr, "nb", "team", "main", "nvidia.com/gpu-10gb", kept))
        # both are young: kept, listed or not, until a minute has passed
        listed = len(calls)
        kubelet.allocate("nvidia.com/gpu", [u[6]])  # asks pod-resources again soon
        wait_for(lambda: len(calls) > listed, what="pod-resources listed")
        wait_for(lambda: d.text().count("slice allocation folder created") == 2, what="log")
        assert len(folders(tmp_path)) == 2
        old = time.time() - 120
        for name in folders(tmp_path):
            os.utime(tmp_path / "state" / "alloc" / name / "devices", (old, old))
        kubelet.allocate("nvidia.com/gpu", [u[7]])
        wait_for(lambda: len(folders(tmp_path)) == 1, what="the gone container's folder removed")
        # the container still there shows its limits, with its pod's labels
        port = int(wait_for(lambda: re.search(r'msg="serving metrics".* port=(\d+)', d.text()),
                            what="the metrics port").group(1))
        labels = f'{{gpu="0",UUID="{u[0]}",pod="nb",namespace="team",container="main"}}'
        body = wait_for(lambda: (lambda b: b if "gpulet_container_memory_limit_bytes" in b
                                 else None)(scrape(port)), what="the limit series")
        assert f"gpulet_container_memory_limit_bytes{labels} {20000 * MiB}\n" in body
        assert f"gpulet_container_compute_share_percent{labels} 25\n" in body
        assert body.count("gpulet_container_memory_limit_bytes{") == 1
        (left,) = folders(tmp_path)
        devices = (tmp_path / "state" / "alloc" / left / "devices").read_text()
        assert devices == f"resource nvidia.com/gpu-10gb\n{kept[0]}\n{kept[1]}\n"
        del resp.pod_resources[:]
        kubelet.allocate("nvidia.com/gpu", [u[7]])
        wait_for(lambda: folders(tmp_path, hidden=True) == [], what="the last folder removed")
        wait_for(lambda: "gpulet_container_memory_limit_bytes" not in scrape(port),
                 what="the limit series gone with the pod")
        assert re.search(r'msg="slice allocation folder removed" dir=\S+' + left, d.text())
    finally:
        server.stop(0)


@pytest.mark.parametrize("config,expect", [
    ("sharing:\n  slices:\n    resources:\n    - {name: nvidia.com/gpu, rename: big, memory: 100Gi}\n",
     "line 4: sharing.slices.resources[0].memory: slices of 102400 MiB are bigger than the 81329 "
     "MiB GPU 0 can hand out (81920 MiB less 591 MiB the driver reserves)"),
    ("sharing:\n  slices:\n    resources:\n    - {name: nvidia.com/gpu, rename: a, memory: 10Gi,"
     " devices: [0]}\n    - {name: nvidia.com/gpu, rename: b, replicas: 2, devices: [%s]}\n",
     "line 5: sharing.slices.resources[1].devices: GPU 0 ("),
    ("sharing:\n  slices:\n    resources:\n    - {name: nvidia.com/gpu, memory: 10Gi, devices: [0]}\n",
     "line 4: sharing.slices: nvidia.com/gpu would have both slices and whole or time-shared GPUs"),
    ("sharing:\n  slices:\n    resources:\n    - {name: nvidia.com/gpu, replicas: 0}\n",
     "line 4: replicas must be ≥ 2"),
    ("sharing:\n  slices:\n    resources:\n    - {name: nvidia.com/gpu, rename: a, replicas: 2,"
     " contextMemory: 0}\n", "line 4: contextMemory must be a size from 1 byte to 16Gi"),
    ("sharing:\n  slices:\n    resources:\n    - {name: nvidia.com/gpu, rename: a, replicas: 2,"
     " contextMemory: 17Gi}\n", "line 4: contextMemory must be a size from 1 byte to 16Gi"),
    ("sharing:\n  slices:\n    resources:\n    - {name: nvidia.com/gpu, rename: a, memory: 1Gi,"
     " contextMemory: 1Gi}\n", "line 4: sharing.slices.resources[0].contextMemory: a context of "
     "1024 MiB fills a whole slice of GPU 0 (1024 MiB); give larger slices"),
])
def test_bad_configs_exit_2(start, tmp_path, config, expect):
    d = start(config.replace("%s", uuids()[0]))
    assert d.proc.wait(timeout=15) == 2
    assert str(tmp_path / "config.yaml") in d.text() and expect in d.text()


def test_sighup_keeps_the_good_config(start, kubelet, tmp_path):
    d = start(CONFIG)
    kubelet.resource("nvidia.com/gpu-10gb")
    (tmp_path / "config.yaml").write_text(CONFIG.replace("memory: 10000Mi", "memory: 90Gi"))
    d.proc.send_signal(signal.SIGHUP)
    wait_for(lambda: "going back to the old one" in d.text(), what="the refusal")
    assert "slices of 92160 MiB are bigger than the 81329 MiB GPU 0 can" in d.text()
    assert d.proc.poll() is None
    wait_for(lambda: kubelet.resources["nvidia.com/gpu-10gb"].devices and
             len(kubelet.devices("nvidia.com/gpu-10gb")) == 16, what="the old slices again")
    (tmp_path / "config.yaml").write_text(CONFIG.replace("memory: 10000Mi", "memory: 40000Mi"))
    d.proc.send_signal(signal.SIGHUP)
    wait_for(lambda: kubelet.resources["nvidia.com/gpu-10gb"].devices and
             len(kubelet.devices("nvidia.com/gpu-10gb")) == 4, what="the new slices")


def test_allocate_without_the_interposer_is_refused(start, kubelet, tmp_path):
    start(CONFIG, "--cuda-interposer", tmp_path / "nowhere.so")
    kubelet.resource("nvidia.com/gpu-10gb")
    with pytest.raises(grpc.RpcError) as e:
        kubelet.allocate("nvidia.com/gpu-10gb", [f"{uuids()[0]}::s0"])
    assert "the CUDA interposer" in e.value.details()
    assert "gpulet runtime install" in e.value.details()
    assert folders(tmp_path) == []


def test_hostile_pod_resources(start, kubelet, pr, tmp_path):
    """Names with quotes and newlines are escaped in the series; devices
    gpulet does not know, a resource it does not serve and IDs of a slice
    another resource owns leave its folders alone."""
    u = uuids()
    resp = pr.ListPodResourcesResponse()
    server = pod_server(pr, tmp_path / "pr.sock", resp)
    try:
        d = start(CONFIG, metrics=True)
        kubelet.resource("nvidia.com/gpu-10gb")
        mine = [f"{u[1]}::s3"]
        kubelet.allocate("nvidia.com/gpu-10gb", mine)
        (folder,) = folders(tmp_path)
        old = time.time() - 120
        os.utime(tmp_path / "state" / "alloc" / folder / "devices", (old, old))
        resp.pod_resources.extend([
            pod(pr, 'we"ird\nname', "ns\\x", "c\"1", "nvidia.com/gpu-10gb", mine),
            pod(pr, "other", "ns", "c", "nvidia.com/gpu.eighth", mine),  # wrong resource
            pod(pr, "junk", "ns", "c", "nvidia.com/gpu-10gb", ["GPU-nowhere::s0", "x" * 4000]),
        ])
        kubelet.allocate("nvidia.com/gpu", [u[7]])
        port = int(wait_for(lambda: re.search(r'msg="serving metrics".* port=(\d+)', d.text()),
                            what="the metrics port").group(1))
        body = wait_for(lambda: (lambda b: b if "gpulet_container_memory_limit_bytes{" in b
                                 else None)(scrape(port)), what="the limit series")
        assert ('pod="we\\"ird\\nname",namespace="ns\\\\x",container="c\\"1"} '
                f"{10000 * MiB}\n") in body
        assert body.count("gpulet_container_memory_limit_bytes{") == 1
        assert folders(tmp_path) == [folder]
        # held under the wrong resource only: the folder goes
        del resp.pod_resources[0]
        kubelet.allocate("nvidia.com/gpu", [u[7]])
        wait_for(lambda: folders(tmp_path, hidden=True) == [], what="the folder removed")
        assert d.proc.poll() is None
    finally:
        server.stop(0)


def test_hostile_state_files(start, kubelet, pr, tmp_path):
    """The state/ folder is the container's: a FIFO, a link or junk where
    the interposer's file belongs, and a flood of entries, are skipped with
    one log line per listing; the limits are still shown."""
    u = uuids()
    resp = pr.ListPodResourcesResponse()
    calls = []
    server = pod_server(pr, tmp_path / "pr.sock", resp, calls=calls)
    try:
        d = start(CONFIG, metrics=True)
        kubelet.resource("nvidia.com/gpu-10gb")
        kubelet.resource("nvidia.com/gpu.eighth")
        ids = {0: [f"{u[0]}::s0"], 1: [f"{u[1]}::s0"], 2: [f"{u[2]}::s0"]}
        resources = {0: "nvidia.com/gpu-10gb", 1: "nvidia.com/gpu-10gb",
                     2: "nvidia.com/gpu.eighth"}
        for g in ids:
            kubelet.allocate(resources[g], ids[g])
        state = {}
        for name in folders(tmp_path):
            devices = (tmp_path / "state" / "alloc" / name / "devices").read_text()
            g = next(g for g in ids if ids[g][0] in devices)
            state[g] = tmp_path / "state" / "alloc" / name / "state"
        os.mkfifo(state[0] / u[0])                  # would block a reader
        os.symlink("/etc/passwd", state[1] / u[1])  # would be followed
        (state[2] / u[2]).write_bytes(b"GLC1" * 6164)  # a state file's size, not its magic
        for k in range(400):                        # more entries than are looked at
            (state[2] / f"junk-{k:03}").write_text("x")
        for g in ids:
            resp.pod_resources.append(pod(pr, f"p{g}", "team", "main", resources[g], ids[g]))
        listed = len(calls)
        kubelet.allocate("nvidia.com/gpu", [u[7]])  # asks pod-resources again soon
        wait_for(lambda: len(calls) > listed, what="pod-resources listed")
        port = int(wait_for(lambda: re.search(r'msg="serving metrics".* port=(\d+)', d.text()),
                            what="the metrics port").group(1))
        body = wait_for(lambda: (lambda b: b if b.count("gpulet_container_memory_limit_bytes{")
                                 == 3 else None)(scrape(port)), what="the limit series")
        assert "gpulet_container_memory_used_bytes" not in body
        assert "gpulet_container_compute_seconds_total" not in body
        line = wait_for(lambda: re.search(r'.*unusable CUDA state files skipped.*', d.text()),
                        what="the log line").group(0)
        assert re.search(r"count=[23] ", line), line  # the junk file may lie past the bound
        assert d.proc.poll() is None
    finally:
        server.stop(0)
