"""gpulet doctor on simulated nodes: a healthy node, then each problem it
must name — the nvidia runtime missing from containerd, a GPU held by a pod
that runs nothing, missing device nodes, no driver."""
import json
import os
import stat

import pytest

from conftest import load_node, write_atomically
from test_cdi import driver_root  # noqa: F401 (the fixture)
from test_metrics import pod, pod_server, protos  # noqa: F401 (fixtures)

NODE = "t4-pcie"  # driver 550.127.05: the CDI spec comes from its own root below


@pytest.fixture
def node(tmp_path, gpulet, protos):  # noqa: F811
    """A node where everything is in order; tests then break one thing."""
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
    dp.mkdir()
    (dp / "kubelet.sock").write_text("")
    (dp / "nvidia-gpu.sock").write_text("")
    state = tmp_path / "state.yaml"
    write_atomically(state, "gpus:\n  0:\n    processes: [{pid: 4242, used_mib: 100}]\n")
    answer = protos.ListPodResourcesResponse(pod_resources=[
        pod(protos, "trainer", "ml", "main", "nvidia.com/gpu", [gpus[0]["uuid"]])])
    server = pod_server(protos, tmp_path / "pr.sock", answer)
    args = ["--dev-root", tmp_path, "--device-plugin-dir", dp, "--pod-resources-socket",
            tmp_path / "pr.sock", "--containerd-config", containerd, "--docker-config",
            tmp_path / "none.json", "--crio-dir", tmp_path / "no-crio", "--cdi-dirs", cdi]

    class Node:
        pass
    n = Node()
    n.args, n.answer, n.gpus, n.dev, n.containerd, n.state = args, answer, gpus, dev, containerd, state

    def doctor(*extra, env=None):
        e = {"GPULET_SIM_STATE": str(state)}
        e.update(env or {})
        return gpulet("--simulate", NODE, "doctor", *map(str, args), *map(str, extra), env=e)
    n.doctor = doctor
    yield n
    server.stop(0)


def statuses(r):
    return {c["check"]: c for c in json.loads(r.out)["checks"]}


def test_a_healthy_node(node):
    r = node.doctor("--json")
    assert r.rc == 0, r.out
    checks = statuses(r)
    assert {c["status"] for c in checks.values()} == {"ok"}, checks
    assert "1 GPU(s) held by pods, none idle" in checks["idle gpus"]["message"]
    text = node.doctor()
    assert text.rc == 0 and text.out.startswith("ok    driver")


def test_runtime_entry_missing(node):
    node.containerd.write_text("version = 2\n# rewritten by another tool\n")
    for drop in (node.containerd.parent / "conf.d").iterdir():
        drop.unlink()
    r = node.doctor("--json")
    assert r.rc == 1
    c = statuses(r)["containerd"]
    assert c["status"] == "fail" and "has no nvidia runtime" in c["message"]
    assert "gpulet runtime configure --runtime containerd" in c["fix"]


def test_idle_gpu_held_by_a_pod(node, protos):  # noqa: F811
    node.answer.pod_resources.append(pod(protos, "finished-job", "batch", "job",
                                         "nvidia.com/gpu", [node.gpus[2]["uuid"]]))
    r = node.doctor("--json")
    assert r.rc == 1
    c = statuses(r)["idle gpus"]
    assert c["status"] == "warn"
    assert "held by pod batch/finished-job (container job) but runs no process" in c["message"]
    assert "ttlSecondsAfterFinished" in c["fix"]


def test_device_nodes_missing(node):
    (node.dev / "nvidia3").unlink()
    r = node.doctor("--json")
    assert r.rc == 1
    c = statuses(r)["device nodes"]
    assert c["status"] == "fail" and str(node.dev / "nvidia3") in c["message"]


def test_no_driver(node, tmp_path, gpulet):
    r = gpulet("--nvml-lib", tmp_path / "absent.so", "doctor", "--json",
               *map(str, node.args))
    assert r.rc == 1
    c = statuses(r)["driver"]
    assert c["status"] == "fail" and "cannot load the NVML library" in c["message"]
