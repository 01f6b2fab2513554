"""The dcgm-exporter-compatible /metrics endpoint of gpulet run."""
import http.client
import os
import pathlib
import re
import signal
import socket
import subprocess
import threading
import time
from concurrent import futures

import grpc
import pytest
import yaml
from prometheus_client.parser import text_string_to_metric_families

from conftest import load_node, write_atomically
from kubelet import load_protos, wait_for

DEFAULT = ["DCGM_FI_DEV_SM_CLOCK", "DCGM_FI_DEV_MEM_CLOCK", "DCGM_FI_DEV_MEMORY_TEMP",
           "DCGM_FI_DEV_GPU_TEMP", "DCGM_FI_DEV_POWER_USAGE",
           "DCGM_FI_DEV_TOTAL_ENERGY_CONSUMPTION", "DCGM_FI_DEV_PCIE_REPLAY_COUNTER",
           "DCGM_FI_DEV_GPU_UTIL", "DCGM_FI_DEV_MEM_COPY_UTIL", "DCGM_FI_DEV_ENC_UTIL",
           "DCGM_FI_DEV_DEC_UTIL", "DCGM_FI_DEV_XID_ERRORS", "DCGM_FI_DEV_FB_FREE",
           "DCGM_FI_DEV_FB_USED", "DCGM_FI_DEV_FB_RESERVED",
           "DCGM_FI_DEV_UNCORRECTABLE_REMAPPED_ROWS", "DCGM_FI_DEV_CORRECTABLE_REMAPPED_ROWS",
           "DCGM_FI_DEV_ROW_REMAP_FAILURE"]
PROF = ["DCGM_FI_PROF_GR_ENGINE_ACTIVE", "DCGM_FI_PROF_PIPE_TENSOR_ACTIVE",
        "DCGM_FI_PROF_DRAM_ACTIVE", "DCGM_FI_PROF_PCIE_TX_BYTES", "DCGM_FI_PROF_PCIE_RX_BYTES"]
HELP = {"DCGM_FI_DEV_GPU_TEMP": "GPU temperature (in C).",
        "DCGM_FI_DEV_POWER_USAGE": "Power draw (in W).",
        "DCGM_FI_DEV_FB_USED": "Framebuffer memory used (in MiB).",
        "DCGM_FI_DEV_XID_ERRORS": "Value of the last XID error encountered.",
        "DCGM_FI_DEV_TOTAL_ENERGY_CONSUMPTION": "Total energy consumption since boot (in mJ)."}


@pytest.fixture(scope="session")
def protos(tmp_path_factory):
    out = tmp_path_factory.mktemp("protos")
    load_protos(out)
    from podresources.v1 import api_pb2 as pr  # noqa: E402
    return pr


class Exporter:
    def __init__(self, build, node, tmp, args=(), env=None, state=None):
        self.log = tmp / f"gpulet-{time.monotonic_ns()}.log"
        full_env = {k: v for k, v in os.environ.items() if not k.startswith(("GPULET_SIM",
                                                                               "DCGM_", "NODE_"))}
        if state:
            full_env["GPULET_SIM_STATE"] = str(state)
        full_env.update(env or {})
        env = env or {}
        cmd = [str(build / "gpulet"), "--simulate", node, "run", "--no-device-plugin",
               "--no-labels", *map(str, args)]
        if "DCGM_EXPORTER_INTERVAL" not in env:
            cmd += ["--collect-interval", "200"]
        if "--metrics-address" not in cmd and "DCGM_EXPORTER_LISTEN" not in (env or {}):
            cmd += ["--metrics-address", "127.0.0.1:0"]
        if "--pod-resources-socket" not in cmd and "DCGM_EXPORTER_KUBERNETES" not in env:
            cmd += ["--pod-resources-socket", str(tmp / "none.sock")]
        self.proc = subprocess.Popen(cmd, env=full_env, stderr=open(self.log, "w"))
        line = wait_for(lambda: re.search(r'msg="serving metrics".* port=(\d+)', self.text()),
                        what="the metrics port")
        self.port = int(line.group(1))

    def text(self):
        return self.log.read_text()

    def get(self, path="/metrics", method="GET"):
        c = http.client.HTTPConnection("127.0.0.1", self.port, timeout=10)
        c.request(method, path)
        r = c.getresponse()
        body = r.read().decode()
        c.close()
        return r.status, dict(r.getheaders()), body

    def families(self):
        status, _, body = self.get()
        assert status == 200
        return {f.name: f for f in text_string_to_metric_families(body)}, body

    def stop(self):
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
        return self.proc.wait(timeout=15)


@pytest.fixture
def exporter(build, tmp_path):
    started = []

    def start(node, *args, env=None, state=None):
        e = Exporter(build, node, tmp_path, args, env, state)
        started.append(e)
        wait_for(lambda: e.get("/health")[0] == 200, what="the first sample")
        return e

    yield start
    for e in started:
        assert e.stop() == 0, e.text()


def samples(fam):
    # prometheus_client strips _total from counter family names
    return fam.samples


def family(fams, name):
    for key in (name, name[:-6] if name.endswith("_total") else name):
        if key in fams:
            return fams[key]
    raise KeyError(name)


def node_gpus(node):
    n = load_node(node)
    return [{**n.get("gpu_defaults", {}), **g} for g in n["gpus"]]


def test_default_series_names_help_and_labels(exporter, build):
    e = exporter("dgx-a100", env={"NODE_NAME": "gpu-node-7"})
    fams, body = e.families()
    gpus = node_gpus("dgx-a100")
    for name in DEFAULT:
        fam = family(fams, name)
        assert len(samples(fam)) == 8, name
        s = samples(fam)[3]
        assert s.labels == {"gpu": "3", "UUID": gpus[3]["uuid"], "pci_bus_id": gpus[3]["pci_bus_id"],
                            "device": "nvidia3", "modelName": "NVIDIA A100-SXM4-80GB",
                            "Hostname": "gpu-node-7", "DCGM_FI_DRIVER_VERSION": "550.90.07"}, name
    for name, help_text in HELP.items():
        assert f"# HELP {name} {help_text}\n" in body
    assert "# TYPE DCGM_FI_DEV_TOTAL_ENERGY_CONSUMPTION counter\n" in body
    assert "# TYPE DCGM_FI_DEV_GPU_TEMP gauge\n" in body
    # A100 has no GPM: no profiling series rather than invented ones
    assert not any(p in fams for p in PROF)
    # promtool parses it (its lints about dcgm's naming are expected)
    check = subprocess.run(["promtool", "check", "metrics"], input=body, capture_output=True,
                           text=True)
    assert "error while linting" not in check.stdout + check.stderr


def test_values_follow_the_gpu(exporter, tmp_path):
    state = tmp_path / "state.yaml"
    write_atomically(state, "gpus:\n  2: {temperature_c: 91, power_w: 350, pcie_replays: 5, "
                            "remapped_uncorrectable: 3, utilization_pct: 97}\n")
    e = exporter("dgx-a100", state=state)
    fams, _ = e.families()

    def value(name, gpu):
        return next(s.value for s in samples(family(fams, name)) if s.labels["gpu"] == gpu)

    assert value("DCGM_FI_DEV_GPU_TEMP", "2") == 91
    assert value("DCGM_FI_DEV_POWER_USAGE", "2") == 350
    assert value("DCGM_FI_DEV_PCIE_REPLAY_COUNTER", "2") == 5
    assert value("DCGM_FI_DEV_UNCORRECTABLE_REMAPPED_ROWS", "2") == 3
    assert value("DCGM_FI_DEV_GPU_UTIL", "2") == 97
    assert value("DCGM_FI_DEV_FB_RESERVED", "0") == 591
    free, used = value("DCGM_FI_DEV_FB_FREE", "0"), value("DCGM_FI_DEV_FB_USED", "0")
    assert free + used + 591 == 81920
    # the values move with the next sample
    write_atomically(state, "gpus:\n  2: {temperature_c: 55}\n")
    wait_for(lambda: "DCGM_FI_DEV_GPU_TEMP{gpu=\"2\"" in e.get()[2] and
             re.search(r'DCGM_FI_DEV_GPU_TEMP\{gpu="2"[^}]*\} 55\n', e.get()[2]),
             what="the new temperature")


def test_nvlink_bandwidth_and_gpm_on_hopper(exporter):
    e = exporter("h100-sxm")
    wait_for(lambda: "DCGM_FI_PROF_GR_ENGINE_ACTIVE{" in e.get()[2], what="GPM series")
    fams, _ = e.families()
    busy = next(s for s in samples(fams["DCGM_FI_PROF_GR_ENGINE_ACTIVE"]) if s.labels["gpu"] == "0")
    assert 0.5 < busy.value <= 1.0  # a ratio, not percent
    assert "DCGM_FI_PROF_PCIE_TX_BYTES" in fams
    wait_for(lambda: "DCGM_FI_DEV_NVLINK_BANDWIDTH_TOTAL{" in e.get()[2], what="NVLink rate")


def test_mig_devices_get_their_own_series(exporter):
    e = exporter("a100-mig")
    fams, _ = e.families()
    used = samples(fams["DCGM_FI_DEV_FB_USED"])
    assert len(used) == 10  # one per MIG device, not per GPU
    s = next(x for x in used if x.labels["gpu"] == "1" and x.labels["GPU_I_PROFILE"] == "3g.20gb")
    assert s.labels["GPU_I_ID"] == "2"
    assert s.labels["UUID"] == node_gpus("a100-mig")[1]["uuid"]
    assert all("GPU_I_ID" not in x.labels for x in samples(fams["DCGM_FI_DEV_GPU_TEMP"]))


def test_xid_errors(exporter, tmp_path):
    state = tmp_path / "state.yaml"
    write_atomically(state, "events: []\n")
    e = exporter("t4-pcie", state=state)
    # The health checks start after the first sample and miss events written
    # before they watch: one more on GPU 0 at each poll shows when they do.
    early = []

    def watching():
        early.append("  - {gpu: 0, xid: 13}\n")
        write_atomically(state, "events:\n" + "".join(early))
        return 'xid="13"}' in e.get()[2]

    wait_for(watching, what="the health checks watching")
    write_atomically(state, "events:\n" + "".join(early) + "  - {gpu: 1, xid: 79}\n"
                            "  - {gpu: 1, xid: 31}\n  - {gpu: 1, xid: 31}\n")
    wait_for(lambda: 'xid="31"} 2' in e.get()[2], what="the XID counter")
    fams, body = e.families()
    last = next(s.value for s in samples(fams["DCGM_FI_DEV_XID_ERRORS"]) if s.labels["gpu"] == "1")
    assert last == 31
    counts = {s.labels["xid"]: s.value for s in samples(family(fams, "gpulet_xid_errors_total"))
              if s.name.endswith("_total") and s.labels["gpu"] == "1"}
    assert counts == {"79": 1, "31": 2}
    # when the last one came, per GPU
    seen = {s.labels["gpu"]: s.value for s in samples(fams["gpulet_xid_last_timestamp_seconds"])}
    assert set(seen) == {"0", "1"} and abs(seen["1"] - time.time()) < 30


def pod_server(pr, path, response, delay=0.0, calls=None, allocatable=None):
    """A kubelet pod-resources server answering List with response (read at
    each call, so tests may change it); calls collects the call times.
    allocatable: a function giving {resource: [IDs]} for
    GetAllocatableResources; without it the method is missing, as before
    kubelet 1.23."""
    def list_(request, context):
        if calls is not None:
            calls.append(time.monotonic())
        if delay:
            time.sleep(delay)
        return response

    def allocatable_(request, context):
        return pr.AllocatableResourcesResponse(devices=[
            pr.ContainerDevices(resource_name=name, device_ids=ids)
            for name, ids in allocatable().items()])

    methods = {"List": grpc.unary_unary_rpc_method_handler(
        list_, request_deserializer=pr.ListPodResourcesRequest.FromString,
        response_serializer=pr.ListPodResourcesResponse.SerializeToString)}
    if allocatable:
        methods["GetAllocatableResources"] = grpc.unary_unary_rpc_method_handler(
            allocatable_, request_deserializer=pr.AllocatableResourcesRequest.FromString,
            response_serializer=pr.AllocatableResourcesResponse.SerializeToString)
    server = grpc.server(futures.ThreadPoolExecutor(max_workers=4))
    server.add_generic_rpc_handlers((grpc.method_handlers_generic_handler("v1.PodResourcesLister",
                                                                          methods),))
    server.add_insecure_port(f"unix:{path}")
    server.start()
    return server


def pod(pr, name, ns, container, resource, ids):
    return pr.PodResources(name=name, namespace=ns, containers=[pr.ContainerResources(
        name=container, devices=[pr.ContainerDevices(resource_name=resource, device_ids=ids)])])


def test_pod_labels(exporter, protos, tmp_path):
    pr = protos
    t4 = [g["uuid"] for g in node_gpus("t4-pcie")]
    resp = pr.ListPodResourcesResponse(pod_resources=[
        pod(pr, "trainer-0", "ml", "main", "nvidia.com/gpu", [t4[0]]),
        pod(pr, "a", "team", "c1", "nvidia.com/gpu.shared", [f"{t4[1]}::0"]),
        pod(pr, "b", "team", "c2", "nvidia.com/gpu.shared", [f"{t4[1]}::3"]),
        pod(pr, "cpu-only", "x", "c", "cpu", ["0"]),
    ])
    server = pod_server(pr, tmp_path / "pr.sock", resp)
    try:
        e = exporter("t4-pcie", "--pod-resources-socket", tmp_path / "pr.sock")
        wait_for(lambda: 'pod="trainer-0"' in e.get()[2], what="pod labels")
        fams, _ = e.families()
        temp = samples(fams["DCGM_FI_DEV_GPU_TEMP"])
        g0 = [s.labels for s in temp if s.labels["gpu"] == "0"]
        assert len(g0) == 1
        assert (g0[0]["pod"], g0[0]["namespace"], g0[0]["container"]) == ("trainer-0", "ml", "main")
        g1 = sorted(s.labels["pod"] for s in temp if s.labels["gpu"] == "1")
        assert g1 == ["a", "b"]  # a shared GPU: one series per pod
        g3 = [s.labels for s in temp if s.labels["gpu"] == "3"]
        assert len(g3) == 1 and "pod" not in g3[0]  # absent, not empty
        assert samples(fams["gpulet_podresources_up"])[0].value == 1
    finally:
        server.stop(0)


def test_mig_pod_labels(exporter, protos, tmp_path):
    pr = protos
    mig = node_gpus("a100-mig")[1]["mig_devices"][1]["uuid"]
    server = pod_server(pr, tmp_path / "pr.sock", pr.ListPodResourcesResponse(
        pod_resources=[pod(pr, "small", "ml", "c", "nvidia.com/mig-2g.10gb", [mig])]))
    try:
        e = exporter("a100-mig", "--pod-resources-socket", tmp_path / "pr.sock")
        wait_for(lambda: 'pod="small"' in e.get()[2], what="MIG pod labels")
        fams, _ = e.families()
        mine = [s.labels for s in samples(fams["DCGM_FI_DEV_FB_USED"]) if s.labels.get("pod")]
        assert len(mine) == 1 and mine[0]["GPU_I_PROFILE"] == "2g.10gb"
    finally:
        server.stop(0)


def test_podresources_missing_or_hanging(exporter, protos, tmp_path):
    e = exporter("t4-pcie", "--pod-resources-socket", tmp_path / "absent.sock")
    wait_for(lambda: 'gpulet_podresources_errors_total{reason="connect"}' in e.get()[2],
             what="the connect error counted")
    fams, _ = e.families()
    assert samples(fams["gpulet_podresources_up"])[0].value == 0
    assert all("pod" not in s.labels for s in samples(fams["DCGM_FI_DEV_GPU_TEMP"]))
    assert e.text().count("no pod labels: pod-resources unavailable") == 1
    # a kubelet that never answers: the deadline, and scrapes still fast
    server = pod_server(protos, tmp_path / "slow.sock", protos.ListPodResourcesResponse(), delay=30)
    try:
        slow = exporter("t4-pcie", "--pod-resources-socket", tmp_path / "slow.sock")
        start = time.monotonic()
        assert slow.get()[0] == 200
        assert time.monotonic() - start < 1.0
        wait_for(lambda: 'gpulet_podresources_errors_total{reason="timeout"}' in slow.get()[2],
                 timeout=15, what="the timeout counted")
    finally:
        server.stop(0)


def test_counters_file(exporter, build, tmp_path):
    csv = tmp_path / "counters.csv"
    csv.write_text("# mine\nDCGM_FI_DEV_GPU_TEMP, gauge, Temperature of the GPU.\n\n"
                   "DCGM_FI_DEV_POWER_USAGE,   gauge, Power draw (in W).\n"
                   "DCGM_FI_DEV_SERIAL, label, Serial\n"
                   "DCGM_FI_DEV_POWER_VIOLATION, counter, Throttled by power.\n")
    e = exporter("t4-pcie", "-f", csv)
    fams, body = e.families()
    dcgm = sorted(n for n in fams if n.startswith("DCGM_"))
    assert dcgm == ["DCGM_FI_DEV_GPU_TEMP", "DCGM_FI_DEV_POWER_USAGE"]
    assert "# HELP DCGM_FI_DEV_GPU_TEMP Temperature of the GPU.\n" in body
    s = samples(fams["DCGM_FI_DEV_GPU_TEMP"])[0]
    assert s.labels["DCGM_FI_DEV_SERIAL"] == str(node_gpus("t4-pcie")[0]["serial"])
    assert "DCGM_FI_DRIVER_VERSION" not in s.labels
    assert e.text().count("field=DCGM_FI_DEV_POWER_VIOLATION") == 1


@pytest.mark.parametrize("text,message", [
    ("DCGM_FI_DEV_GPU_TEMP, gauge\n", "line 1: expected \"FIELD, type, help\" (two commas)"),
    ("# ok\nDCGM_FI_DEV_WARP_DRIVE, gauge, nope\n", "line 2: unknown field DCGM_FI_DEV_WARP_DRIVE"),
    ("DCGM_FI_DEV_GPU_TEMP, histogram, x\n", "line 1: DCGM_FI_DEV_GPU_TEMP: type must be gauge, counter or label"),
    ("DCGM_FI_DEV_GPU_TEMP, gauge, a\nDCGM_FI_DEV_GPU_TEMP, gauge, b\n", "line 2: DCGM_FI_DEV_GPU_TEMP is listed twice"),
])
def test_bad_counters_file(build, tmp_path, text, message):
    csv = tmp_path / "bad.csv"
    csv.write_text(text)
    r = subprocess.run([str(build / "gpulet"), "--simulate", "t4-pcie", "run", "--no-device-plugin",
                        "--no-labels", "--metrics-address", "127.0.0.1:0", "-f", str(csv)],
                       capture_output=True, text=True, timeout=20)
    assert r.returncode == 2
    assert f"{csv} {message}" in r.stderr


def test_hostname_label_switch(exporter):
    e = exporter("t4-pcie", "--hostname-label", "hostname", env={"NODE_NAME": "n1"})
    assert 'hostname="n1"' in e.get()[2] and "Hostname=" not in e.get()[2]
    e2 = exporter("t4-pcie", "--hostname-label", "none")
    assert "ostname=" not in e2.get()[2]


def test_dcgm_environment_variables(exporter):
    port = socket.socket()
    port.bind(("127.0.0.1", 0))
    number = port.getsockname()[1]
    port.close()
    e = exporter("t4-pcie", env={"DCGM_EXPORTER_LISTEN": f"127.0.0.1:{number}",
                                 "DCGM_EXPORTER_INTERVAL": "250",
                                 "DCGM_EXPORTER_KUBERNETES": "false"})
    assert e.port == number
    assert "interval_ms=250" in e.text()
    assert "gpulet_podresources_up" not in e.get()[2]


def test_http_endpoints_and_bad_requests(exporter):
    e = exporter("t4-pcie")
    assert e.get("/health") == (200, e.get("/health")[1], "OK")
    status, headers, body = e.get("/")
    assert status == 200 and "/metrics" in body
    assert e.get("/nope")[0] == 404
    status, headers, _ = e.get("/metrics", "POST")
    assert status == 405 and headers["Allow"] == "GET, HEAD"
    assert e.get("/metrics", "HEAD")[0] == 200
    assert e.get("/metrics?x=1")[0] == 200
    # self metrics
    fams, _ = e.families()
    assert samples(fams["gpulet_build_info"])[0].labels["version"].startswith("0.")
    scrapes = samples(family(fams, "gpulet_scrapes_total"))
    assert [s for s in scrapes if s.name.endswith("_total")][0].value >= 3
    assert samples(fams["gpulet_sample_age_seconds"])[0].value < 5
    # a client that sends a huge header, one that sends garbage, one that stalls
    big = socket.create_connection(("127.0.0.1", e.port))
    big.sendall(b"GET /metrics HTTP/1.1\r\nX-Big: " + b"a" * 20000 + b"\r\n\r\n")
    reply = big.recv(100)
    assert reply == b"" or reply.startswith(b"HTTP/1.1 4")
    big.close()
    junk = socket.create_connection(("127.0.0.1", e.port))
    junk.sendall(os.urandom(2000) + b"\r\n\r\n")
    junk.close()
    stall = socket.create_connection(("127.0.0.1", e.port))
    stall.sendall(b"GET /metrics HTTP/1.1\r\nHost: x\r\n")  # never finished
    start = time.monotonic()
    assert e.get()[0] == 200
    assert time.monotonic() - start < 1.0
    stall.close()


def test_pods_are_asked_again_right_after_an_allocation(build, tmp_path, protos):
    """The device plugin's Allocate makes the exporter list pods at once,
    not at the next 10 s interval."""
    from kubelet import Kubelet
    pr = protos
    calls = []
    uuid = node_gpus("t4-pcie")[0]["uuid"]
    answer = pr.ListPodResourcesResponse()
    server = pod_server(pr, tmp_path / "pr.sock", answer, calls=calls)
    dp, dp_grpc = load_protos(tmp_path / "dp-protos")
    kubelet = Kubelet(tmp_path / "dp", dp, dp_grpc)
    log = tmp_path / "gpulet.log"
    env = {k: v for k, v in os.environ.items() if not k.startswith("GPULET_SIM")}
    proc = subprocess.Popen([str(build / "gpulet"), "--simulate", "t4-pcie", "run",
                             "--device-plugin-dir", str(tmp_path / "dp"), "--no-labels",
                             "--metrics-address", "127.0.0.1:0",
                             "--pod-resources-socket", str(tmp_path / "pr.sock")],
                            env=env, stderr=open(log, "w"))
    try:
        kubelet.resource("nvidia.com/gpu")
        wait_for(lambda: len(calls) >= 1, what="the first List")
        before = len(calls)
        answer.pod_resources.append(pod(pr, "fresh", "ns", "c", "nvidia.com/gpu", [uuid]))
        allocated = time.monotonic()
        kubelet.allocate("nvidia.com/gpu", [uuid])
        wait_for(lambda: len(calls) > before, timeout=5, what="a List after the Allocate")
        assert calls[before] - allocated < 2.0
    finally:
        proc.send_signal(signal.SIGTERM)
        assert proc.wait(timeout=10) == 0
        kubelet.stop()
        server.stop(0)
