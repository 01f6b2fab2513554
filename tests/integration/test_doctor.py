"""gpulet doctor on simulated nodes: a healthy node, with gpulet running
against the Python kubelet, then each problem it must name — the nvidia
runtime missing from containerd, a GPU held by a pod that runs nothing,
missing device nodes, no driver, gpulet killed, a GPU made unhealthy by an
XID, a kubelet that refused the registration or does not watch, a kubelet
without GetAllocatableResources (v1.20), a plugin socket that hangs."""
import json
import os
import signal
import stat
import subprocess
import threading
import time
from concurrent import futures

import grpc
import pytest

from conftest import load_node, write_atomically
from kubelet import Kubelet, load_protos, wait_for
from test_cdi import driver_root  # noqa: F401 (the fixture)
from test_metrics import pod, pod_server, protos  # noqa: F401 (fixtures)


@pytest.fixture(scope="session")
def dp_protos(tmp_path_factory):
    return load_protos(tmp_path_factory.mktemp("dp-protos"))

NODE = "t4-pcie"  # driver 550.127.05: the CDI spec comes from its own root below


@pytest.fixture
def node(request, tmp_path, gpulet, build, protos, dp_protos):  # noqa: F811
    """A node where everything is in order, gpulet serving a kubelet of
    1.23+ (GetAllocatableResources); tests then break one thing. Marks:
    kubelet_v120 (no GetAllocatableResources, a checkpoint instead),
    kubelet(**options) for the simulator."""
    gpus = [{**load_node(NODE)["gpu_defaults"], **g} for g in load_node(NODE)["gpus"]]
    dev = tmp_path / "dev"
    dev.mkdir()
    os.mknod(dev / "nvidiactl", 0o666 | stat.S_IFCHR, os.makedev(195, 255))
    for minor in range(len(gpus)):
        os.mknod(dev / f"nvidia{minor}", 0o666 | stat.S_IFCHR, os.makedev(195, minor))
    containerd = tmp_path / "containerd" / "config.toml"
    containerd.parent.mkdir()
    containerd.write_text("version = 2\n")
    r = gpulet("runtime", "configure", "--runtime", "containerd", "--config", containerd,
               "--runtime-path", "/usr/local/bin/gpulet-runtime")
    assert r.rc == 0, r.err
    cdi = tmp_path / "cdi"
    cdi.mkdir()
    # a spec that names every GPU and the driver version, as generate would
    (cdi / "nvidia.yaml").write_text(
        "cdiVersion: 0.5.0\nkind: nvidia.com/gpu\n# driver 550.127.05\ndevices:\n" +
        "".join(f"- name: {g['uuid']}\n  containerEdits: {{}}\n" for g in gpus))
    dp = tmp_path / "dp"
    state = tmp_path / "state.yaml"
    write_atomically(state, "gpus:\n  0:\n    processes: [{pid: 4242, used_mib: 100}]\n")
    v120 = request.node.get_closest_marker("kubelet_v120") is not None
    options = getattr(request.node.get_closest_marker("kubelet"), "kwargs", {})
    kubelet = Kubelet(dp, *dp_protos, checkpoint=v120, **options)
    env = {k: v for k, v in os.environ.items() if not k.startswith("GPULET_SIM")}
    env["GPULET_SIM_STATE"] = str(state)
    # One test kills gpulet: what it leaves in its TMPDIR stays in this test's folder.
    env["TMPDIR"] = str(tmp_path)
    daemon = subprocess.Popen(
        [str(build / "gpulet"), "--simulate", NODE, "run", "--device-plugin-dir", dp,
         "--no-metrics", "--labels-file", tmp_path / "labels", "--health-recovery-period", "0"],
        env=env, stdout=subprocess.DEVNULL, stderr=open(tmp_path / "gpulet.log", "w"))
    if not options:
        kubelet.resource("nvidia.com/gpu")
        if v120:
            wait_for(lambda: (dp / "kubelet_internal_checkpoint").exists(), what="a checkpoint")
    answer = protos.ListPodResourcesResponse(pod_resources=[
        pod(protos, "trainer", "ml", "main", "nvidia.com/gpu", [gpus[0]["uuid"]])])
    server = pod_server(protos, tmp_path / "pr.sock", answer,
                        allocatable=None if v120 else kubelet.allocatable)
    args = ["--dev-root", tmp_path, "--device-plugin-dir", dp, "--pod-resources-socket",
            tmp_path / "pr.sock", "--containerd-config", containerd, "--docker-config",
            tmp_path / "none.json", "--crio-dir", tmp_path / "no-crio", "--cdi-dirs", cdi]

    class Node:
        pass
    n = Node()
    n.args, n.answer, n.gpus, n.dev, n.containerd, n.state = args, answer, gpus, dev, containerd, state
    n.kubelet, n.daemon, n.dp = kubelet, daemon, dp

    def doctor(*extra, env=None):
        e = {"GPULET_SIM_STATE": str(state)}
        e.update(env or {})
        return gpulet("--simulate", NODE, "doctor", *map(str, args), *map(str, extra), env=e)
    n.doctor = doctor
    yield n
    server.stop(0)
    if daemon.poll() is None:
        daemon.terminate()
    try:
        daemon.wait(timeout=15)
    finally:
        if daemon.poll() is None:
            daemon.kill()
            daemon.wait()
        kubelet.stop()


def statuses(r):
    return {c["check"]: c for c in json.loads(r.out)["checks"]}


def failing(node, check):
    """Runs doctor, which must exit 1; returns the named check."""
    r = node.doctor("--json")
    assert r.rc == 1, r.out
    return statuses(r)[check]


def test_a_healthy_node(node):
    r = node.doctor("--json")
    assert r.rc == 0, r.out
    checks = statuses(r)
    assert {c["status"] for c in checks.values()} == {"ok"}, checks
    assert "1 GPU(s) held by pods, none idle" in checks["idle gpus"]["message"]
    assert checks["device plugin"]["message"].startswith(
        "nvidia.com/gpu: gpulet serves 4 device(s), registered, the kubelet watching")
    assert checks["kubelet"]["message"] == ("nvidia.com/gpu: the kubelet offers all 4 healthy "
                                            "device(s) (from pod-resources "
                                            "GetAllocatableResources)")
    assert checks["gpu health"]["message"] == "nvidia.com/gpu: all 4 device(s) healthy"
    text = node.doctor()
    assert text.rc == 0 and text.out.startswith("ok    driver")


@pytest.mark.kubelet_v120
def test_a_kubelet_without_get_allocatable_resources(node):
    """Kubelet v1.20: no GetAllocatableResources; its checkpoint says."""
    r = node.doctor("--json")
    assert r.rc == 0, r.out
    c = statuses(r)["kubelet"]
    assert c["status"] == "ok"
    assert "offers all 4 healthy device(s) (from the kubelet's checkpoint " \
        "kubelet_internal_checkpoint; this kubelet has no GetAllocatableResources (1.23+))" \
        in c["message"]


@pytest.mark.kubelet_v120
def test_a_checkpoint_that_differs_is_a_failure(node):
    """The kubelet (v1.20) recorded fewer devices than gpulet serves."""
    cp = node.dp / "kubelet_internal_checkpoint"
    node.kubelet.checkpoint = False  # keep our version
    doc = json.loads(cp.read_text())
    doc["Data"]["RegisteredDevices"]["nvidia.com/gpu"] = [node.gpus[0]["uuid"]]
    write_atomically(cp, json.dumps(doc))
    c = failing(node, "kubelet")
    assert c["status"] == "fail"
    assert "the kubelet offers 1 device(s) but gpulet has 4 healthy" in c["message"]


@pytest.mark.kubelet_v120
@pytest.mark.parametrize("text", ["{not json", '{"Data": []}', "\0" * 100,
                                  json.dumps({"Data": {"RegisteredDevices": {
                                      "nvidia.com/gpu": [1, None, {"a": 2}]}}})])
def test_a_malformed_checkpoint(node, text):
    node.kubelet.checkpoint = False
    write_atomically(node.dp / "kubelet_internal_checkpoint", text)
    c = failing(node, "kubelet")
    if "RegisteredDevices" in text:  # well formed, but not IDs
        assert c["status"] == "fail" and "offers 3 device(s)" in c["message"]
    else:
        assert c["status"] == "warn" and "cannot ask the kubelet what it offers" in c["message"]
        assert f"checkpoint: {node.dp / 'kubelet_internal_checkpoint'} has no " \
            "Data.RegisteredDevices object" in c["message"]


def test_gpulet_killed_leaves_its_socket(node):
    node.daemon.send_signal(signal.SIGKILL)
    node.daemon.wait()
    assert (node.dp / "nvidia-gpu.sock").is_socket()  # left behind
    r = node.doctor("--json")
    assert r.rc == 1
    checks = statuses(r)
    assert checks["device plugin"]["status"] == "fail"
    assert checks["device plugin"]["message"].startswith(
        f"{node.dp / 'nvidia-gpu.sock'} is left behind but nobody listens: gpulet is not running")
    assert "kubelet" not in checks  # nothing to compare with


def test_an_xid_makes_a_gpu_unhealthy_with_its_reason(node):
    uuid = node.gpus[2]["uuid"]
    write_atomically(node.state, "events:\n  - {gpu: 2, xid: 79}\n")
    wait_for(lambda: node.kubelet.devices("nvidia.com/gpu")[uuid][0] == "Unhealthy",
             what="GPU 2 unhealthy at the kubelet")
    r = node.doctor("--json")
    assert r.rc == 1
    checks = statuses(r)
    assert checks["gpu health"]["status"] == "warn"
    assert checks["gpu health"]["message"] == (
        f"nvidia.com/gpu: 1 of 4 device(s) unhealthy, not allocatable: {uuid} (XID 79)")
    assert "recovery period" in checks["gpu health"]["fix"]
    assert checks["kubelet"]["status"] == "ok"
    assert "offers all 3 healthy device(s)" in checks["kubelet"]["message"]


@pytest.mark.kubelet(refuse="node is shutting down")
def test_a_kubelet_that_has_no_registration(node):
    wait_for(lambda: node.kubelet.refused, what="a refused Register")
    r = wait_for(lambda: (lambda r: r if "shutting down" in r.out else None)(
        node.doctor("--json")), what="doctor naming the kubelet's answer")
    assert r.rc == 1
    c = statuses(r)["device plugin"]
    assert c["status"] == "fail"
    assert c["message"] == ("nvidia.com/gpu: gpulet serves it but the kubelet has not "
                            "registered it: Register answered FAILED_PRECONDITION: node is "
                            "shutting down")


@pytest.mark.kubelet(watch=False)
def test_a_kubelet_that_registered_but_does_not_watch(node):
    """As the real kubelet whose ListAndWatch streams were reset: capacity 0."""
    wait_for(lambda: node.kubelet.resources.get("nvidia.com/gpu"), what="a Register")
    c = failing(node, "device plugin")
    assert c["status"] == "fail"
    assert "registered, but the kubelet holds no ListAndWatch stream" in c["message"]
    assert "capacity 0" in c["message"]


def test_a_plugin_socket_that_hangs_costs_the_deadline(node):
    """Something else serving nvidia-*.sock and never answering: doctor
    gives up after its deadline and says so."""
    release = threading.Event()

    def hang(request, context):
        release.wait(20)
        return b""
    server = grpc.server(futures.ThreadPoolExecutor(max_workers=2))
    server.add_generic_rpc_handlers((grpc.method_handlers_generic_handler("gpulet.v1.Status", {
        "Get": grpc.unary_unary_rpc_method_handler(hang)}),))
    server.add_insecure_port(f"unix:{node.dp / 'nvidia-other.sock'}")
    server.start()
    try:
        started = time.monotonic()
        r = node.doctor("--json")
        took = time.monotonic() - started
    finally:
        release.set()
        server.stop(0)
    assert r.rc == 1
    other = [c for c in json.loads(r.out)["checks"] if "nvidia-other.sock" in c["message"]]
    assert len(other) == 1 and other[0]["status"] == "fail"
    assert "deadline" in other[0]["message"].lower()
    assert took < 10, took


def test_runtime_entry_missing(node):
    node.containerd.write_text("version = 2\n# rewritten by another tool\n")
    for drop in (node.containerd.parent / "conf.d").iterdir():
        drop.unlink()
    c = failing(node, "containerd")
    assert c["status"] == "fail" and "has no nvidia runtime" in c["message"]
    assert "gpulet runtime configure --runtime containerd" in c["fix"]


def test_idle_gpu_held_by_a_pod(node, protos):  # noqa: F811
    node.answer.pod_resources.append(pod(protos, "finished-job", "batch", "job",
                                         "nvidia.com/gpu", [node.gpus[2]["uuid"]]))
    c = failing(node, "idle gpus")
    assert c["status"] == "warn"
    assert "held by pod batch/finished-job (container job) but runs no process" in c["message"]
    assert "ttlSecondsAfterFinished" in c["fix"]


def test_device_nodes_missing(node):
    (node.dev / "nvidia3").unlink()
    c = failing(node, "device nodes")
    assert c["status"] == "fail" and str(node.dev / "nvidia3") in c["message"]


def test_no_driver(node, tmp_path, gpulet):
    r = gpulet("--nvml-lib", tmp_path / "absent.so", "doctor", "--json",
               *map(str, node.args))
    assert r.rc == 1
    c = statuses(r)["driver"]
    assert c["status"] == "fail" and "cannot load the NVML library" in c["message"]
