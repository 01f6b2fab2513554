"""gpulet in a one-node Kubernetes v1.34 cluster, checked through the API
server (kubectl): the node's capacity and allocatable for whole GPUs, MIG
(mixed), time-slicing and slices as `gpulet info` and the configuration
say; a Deployment placed by kube-scheduler on distinct GPUs, and what does
not fit left Pending with the scheduler's reason; the CDI list strategies
applied by containerd 1.7; pod-resources List and Get naming the pod on the
GPUs gpulet's metrics name; a kubelet restart, a gpulet restart and an XID
seen in the node's status. tests/e2e/run.sh runs this file on v1.34 only."""
import collections
import json
import re
import subprocess
import sys
import time

import grpc
import pytest
import yaml

from conftest import CACHE, CLUSTER, ROOT, api_status, figure
from node import BUSYBOX_IMAGE, NAMESPACE, RECOVERY_S, RESOURCE, wait_for

pytestmark = pytest.mark.skipif(not CLUSTER, reason="needs the API server (GPULET_E2E_VERSION=v1.34.9)")
SLEEP = ["sh", "-c", "trap 'exit 0' TERM; while :; do sleep 1; done"]


def gpulet_info(node, sim):
    r = subprocess.run([node.build / "gpulet", "--simulate", sim, "info", "--json"],
                       capture_output=True, text=True, check=True)
    return json.loads(r.stdout)


def restart_gpulet(node, extra=(), sim="dgx-a100"):
    node.stop("gpulet")
    node.start_gpulet(list(extra), sim=sim)


def nvidia_status(node):
    """{resource: (capacity, allocatable)} of nvidia.com/* in the node's status."""
    st = node.cluster.node()["status"]
    names = {k for k in {**st.get("capacity", {}), **st.get("allocatable", {})}
             if k.startswith("nvidia.com/")}
    return {n: api_status(node, n) for n in names}


def wait_status(node, want, timeout=30):
    """Until every resource of want has (capacity, allocatable) = (n, n) and
    every other nvidia.com/ resource allocatable 0 (the kubelet keeps a
    stopped plugin's resource a while, with nothing allocatable)."""
    seen = {}

    def check():
        seen.update(status=nvidia_status(node))
        s = seen["status"]
        return all(s.get(r) == (n, n) for r, n in want.items()) and \
            all(a == 0 for r, (_, a) in s.items() if r not in want)
    try:
        wait_for(f"node status {want}", check, timeout, 0.2)
    except AssertionError:
        raise AssertionError(f"node status {seen.get('status')}, want {want}")
    return seen["status"]


def pods(node, selector):
    return node.cluster.kubectl_json("get", "pods", "-n", NAMESPACE, "-l", selector)["items"]


def pod_manifest(name, gpus, labels=None, resource=RESOURCE):
    return {"metadata": {"name": name, "namespace": NAMESPACE, "labels": labels or {}},
            "spec": {"terminationGracePeriodSeconds": 2, "automountServiceAccountToken": False,
                     "containers": [{"name": "main", "image": BUSYBOX_IMAGE,
                                     "imagePullPolicy": "Never", "command": SLEEP,
                                     "resources": {"limits": {resource: str(gpus)}}}]}}


def run_pod(node, name, gpus):
    """A pod through the API server, Running: (pod, its GPUs' IDs)."""
    manifest = pod_manifest(name, gpus)
    node.cluster.apply({"apiVersion": "v1", "kind": "Pod", **manifest})
    pod = wait_for(f"pod {name} Running", lambda: (p := node.cluster.kubectl_json(
        "get", "pod", "-n", NAMESPACE, name, check=False)) and
        p["status"].get("phase") == "Running" and p, 60, 0.2)
    return pod, node.allocated(pod["metadata"]["uid"])


def delete(node, kind, name, timeout=60):
    node.cluster.kubectl("delete", kind, "-n", NAMESPACE, name, "--ignore-not-found",
                         "--wait=true", f"--timeout={timeout}s", timeout=timeout + 10)


def kexec(node, pod, command):
    r = node.cluster.kubectl("exec", "-n", NAMESPACE, pod, "--", "sh", "-c", command)
    return r.stdout


def held(node):
    cp = node.read_checkpoint() or (None, [])
    return {i for e in cp[1] if e["ResourceName"] == RESOURCE for v in
            (e["DeviceIDs"].values() if isinstance(e["DeviceIDs"], dict) else [e["DeviceIDs"]])
            for i in v}


# ---- capacity and allocatable, as gpulet says ----

def whole(node):
    return [], "dgx-a100", {RESOURCE: len(gpulet_info(node, "dgx-a100")["gpus"])}


def mig_mixed(node):
    want = collections.Counter()
    for g in gpulet_info(node, "a100-mig")["gpus"]:
        mig = g.get("mig") or {}
        if mig.get("enabled"):
            for d in mig["devices"]:
                want["nvidia.com/mig-" + d["profile"].replace("+", ".")] += 1
        else:
            want[RESOURCE] += 1
    return ["--mig-strategy", "mixed"], "a100-mig", dict(want)


def time_slicing(node):
    path = node.dir / "timeslicing.yaml"
    path.write_text("version: v1\nsharing:\n  timeSlicing:\n    resources:\n"
                    f"    - name: {RESOURCE}\n      replicas: 4\n")
    return ["--config-file", path], "dgx-a100", {
        RESOURCE: 4 * len(gpulet_info(node, "dgx-a100")["gpus"])}


def slices(node):
    path = node.dir / "slices-status.yaml"
    path.write_text("version: v1\nsharing:\n  slices:\n    resources:\n"
                    f"    - name: {RESOURCE}\n      devices: [6, 7]\n      memory: 10Gi\n"
                    "      rename: gpu-10gb\n")
    gpus = gpulet_info(node, "dgx-a100")["gpus"]
    # slices are cut from what the driver can hand out: total less reserved
    per = [(g["memory_total_mib"] - g["memory_reserved_mib"]) // 10240 for g in gpus[6:8]]
    return ["--config-file", path, "--state-dir", node.dir / "gpulet-state-status",
            "--cuda-interposer", (node.build / "libgpulet-cuda.so").resolve()], "dgx-a100", {
        RESOURCE: len(gpus) - 2, "nvidia.com/gpu-10gb": sum(per)}


@pytest.mark.parametrize("case", [whole, mig_mixed, time_slicing, slices],
                         ids=["whole", "mig-mixed", "time-slicing", "slices"])
def test_node_capacity_and_allocatable_are_what_gpulet_serves(node, case):
    extra, sim, want = case(node)
    assert sum(want.values()) > 0
    restart_gpulet(node, extra, sim)
    try:
        status = wait_status(node, want)
        figure(f"gpulet start ({case.__name__}) -> node status on the API server",
               time.time() - node.gpulet_started)
        for r, n in want.items():
            assert status[r] == (n, n)
    finally:
        restart_gpulet(node)
        wait_status(node, {RESOURCE: 8})


# ---- the scheduler ----

def test_a_deployment_gets_distinct_gpus_and_what_does_not_fit_pends(node):
    free = 8 - len(held(node))
    assert free >= 3
    labels = {"app": "gpu-deploy"}
    deploy = {"apiVersion": "apps/v1", "kind": "Deployment",
              "metadata": {"name": "gpu-deploy", "namespace": NAMESPACE},
              "spec": {"replicas": 2, "selector": {"matchLabels": labels},
                       "template": pod_manifest(None, 1, labels)}}
    del deploy["spec"]["template"]["metadata"]["name"]
    del deploy["spec"]["template"]["metadata"]["namespace"]
    node.cluster.apply(deploy)
    try:
        def running(n):
            ps = pods(node, "app=gpu-deploy")
            up = [p for p in ps if p["status"].get("phase") == "Running"]
            return len(up) == n and up
        up = wait_for("2 replicas Running", lambda: running(2), 90, 0.3)
        ids = [node.allocated(p["metadata"]["uid"]) for p in up]
        assert all(len(i) == 1 for i in ids) and ids[0] != ids[1], ids
        for p, i in zip(up, ids):  # through the API server's exec
            assert kexec(node, p["metadata"]["name"], "echo $NVIDIA_VISIBLE_DEVICES").strip() == i[0]

        node.cluster.kubectl("scale", "deployment", "-n", NAMESPACE, "gpu-deploy",
                             f"--replicas={free + 1}")

        def settled():
            ps = pods(node, "app=gpu-deploy")
            up = [p for p in ps if p["status"].get("phase") == "Running"]
            pending = [p for p in ps if p["status"].get("phase") == "Pending" and any(
                c["type"] == "PodScheduled" and c["status"] == "False"
                for c in p["status"].get("conditions", []))]
            return len(ps) == free + 1 and len(up) == free and len(pending) == 1 and (ps, pending)
        ps, pending = wait_for(f"{free} replicas Running and one Pending", settled, 180, 0.5)
        assert not [p for p in ps if p["status"].get("phase") == "Failed"]
        cond = next(c for c in pending[0]["status"]["conditions"] if c["type"] == "PodScheduled")
        assert cond["reason"] == "Unschedulable", cond
        assert f"Insufficient {RESOURCE}" in cond["message"], cond
        given = [i for p in ps if p["status"].get("phase") == "Running"
                 for i in node.allocated(p["metadata"]["uid"])]
        assert len(given) == free and len(set(given)) == free
        assert not set(given) & held(node) - set(given)  # none shared with another pod
        events = node.cluster.kubectl_json("get", "events", "-n", NAMESPACE, "--field-selector",
                                           f"involvedObject.name={pending[0]['metadata']['name']}")
        assert any(e["reason"] == "FailedScheduling" and f"Insufficient {RESOURCE}" in e["message"]
                   for e in events["items"]), events["items"]
    finally:
        delete(node, "deployment", "gpu-deploy")
        wait_for("the Deployment's pods gone", lambda: not pods(node, "app=gpu-deploy"), 90, 0.5)


# ---- CDI through containerd 1.7 ----

def cdi_edits(node, ids):
    """(device node paths, env) the CDI spec gives devices ids, with its
    common edits."""
    spec = yaml.safe_load((node.dir / "cdi" / "nvidia.yaml").read_text())
    kind = spec["kind"]
    devs = {d["name"]: d for d in spec["devices"]}
    edits = [spec.get("containerEdits") or {}]
    for i in ids:
        assert i in devs, f"{kind}={i} not in the spec ({sorted(devs)})"
        edits.append(devs[i].get("containerEdits") or {})
    nodes = {n["path"] for e in edits for n in e.get("deviceNodes") or []}
    env = {v for e in edits for v in e.get("env") or []}
    return nodes, env


@pytest.mark.parametrize("strategy", ["cdi-cri", "cdi-annotations"])
def test_a_cdi_strategy_gives_the_container_exactly_the_cdi_edits_of_its_gpus(node, strategy):
    restart_gpulet(node, ["--device-list-strategy", strategy])
    name = "cdi-" + strategy.split("-")[1]
    try:
        wait_for("8 GPUs registered again", lambda: len(node.registered() or []) == 8 and
                 node.checkpoint.stat().st_mtime >= node.gpulet_started, 30, 0.05)
        pod, ids = run_pod(node, name, 2)
        assert len(ids) == 2
        nodes, env = cdi_edits(node, ids)
        devs = kexec(node, name, "ls /dev").split()
        assert sorted(f"/dev/{d}" for d in devs if d.startswith("nvidia")) == sorted(
            n for n in nodes if n.startswith("/dev/nvidia"))
        minors = sorted(node.uuids.index(i) for i in ids)
        assert sorted(n for n in nodes if re.fullmatch(r"/dev/nvidia\d+", n)) == \
            sorted(f"/dev/nvidia{m}" for m in minors)
        seen = set(kexec(node, name, "env").split("\n"))
        assert env <= seen, env - seen
        # the runtime got them through CDI, not from a variable of the plugin's
        assert not [v for v in seen if v.startswith("NVIDIA_VISIBLE_DEVICES=") and
                    v not in env]
    finally:
        delete(node, "pod", name)
        restart_gpulet(node)
        wait_for("8 GPUs registered again", lambda: len(node.registered() or []) == 8 and
                 node.checkpoint.stat().st_mtime >= node.gpulet_started, 30, 0.05)


# ---- pod-resources v1 on the kubelet ----

def podresources(node):
    out = CACHE / "e2e-protos"
    out.mkdir(parents=True, exist_ok=True)
    if not (out / "podresources" / "v1" / "api_pb2.py").exists():
        subprocess.run([sys.executable, "-m", "grpc_tools.protoc", f"-I{ROOT / 'proto'}",
                        f"--python_out={out}", f"--grpc_python_out={out}",
                        "podresources/v1/api.proto"], check=True)
    if str(out) not in sys.path:
        sys.path.insert(0, str(out))
    from podresources.v1 import api_pb2, api_pb2_grpc
    return api_pb2, api_pb2_grpc


def test_pod_resources_get_and_list_and_the_metrics_agree(node):
    pb, pb_grpc = podresources(node)
    pod, ids = run_pod(node, "pr2", 2)
    try:
        with grpc.insecure_channel(f"unix://{node.pod_resources}") as ch:
            stub = pb_grpc.PodResourcesListerStub(ch)
            listed = [p for p in stub.List(pb.ListPodResourcesRequest(), timeout=10).pod_resources
                      if p.name == "pr2" and p.namespace == NAMESPACE]
            got = stub.Get(pb.GetPodResourcesRequest(pod_name="pr2", pod_namespace=NAMESPACE),
                           timeout=10).pod_resources

        def devices(p):
            return sorted(i for c in p.containers for d in c.devices
                          if d.resource_name == RESOURCE for i in d.device_ids)
        assert len(listed) == 1 and devices(listed[0]) == ids
        assert got.name == "pr2" and [c.name for c in got.containers] == ["main"]
        assert devices(got) == ids

        def labelled():
            on = set()
            for line in node.metrics().splitlines():
                if line.startswith("DCGM_FI_DEV_GPU_UTIL{") and 'pod="pr2"' in line:
                    assert f'namespace="{NAMESPACE}"' in line and 'container="main"' in line
                    on.add(re.search(r'UUID="([^"]+)"', line)[1])
            return on
        assert wait_for("pr2 on /metrics", labelled, 30, 0.2) == set(ids)
    finally:
        delete(node, "pod", "pr2")


# ---- restarts and an XID, in the node's status ----

def test_kubelet_restart_gpulet_restart_and_an_xid_show_in_the_node_status(node):
    pod, ids = run_pod(node, "steady", 1)
    try:
        # the kubelet restarts: gpulet registers again, the node is Ready
        # with all 8, the pod keeps running
        node.stop_kubelet()
        restarted = time.time()
        node.start_kubelet()
        wait_for("the node Ready again", node.cluster.node_ready, 60, 0.3)
        wait_status(node, {RESOURCE: 8})
        figure("kubelet restart -> node status 8 again", time.time() - restarted)
        p = node.cluster.kubectl_json("get", "pod", "-n", NAMESPACE, "steady")
        assert p["status"]["phase"] == "Running" and p["metadata"]["uid"] == pod["metadata"]["uid"]

        # gpulet stops: nothing allocatable (capacity kept); back: 8
        node.stop("gpulet")
        wait_for("allocatable 0 while gpulet is down", lambda: api_status(node)[1] == 0, 30, 0.2)
        node.start_gpulet()
        wait_status(node, {RESOURCE: 8})
        figure("gpulet restart -> node status 8 again", time.time() - node.gpulet_started)

        # an XID 79 on a free GPU: allocatable 7, capacity 8, then 8 again
        victim = next(i for i, u in enumerate(node.uuids) if u not in held(node))
        # the time before the write: a lower bound taken after it could
        # start after gpulet saw the XID (the test descheduled meanwhile)
        injected = time.time()
        node.inject({"gpus": {}, "events": [{"gpu": victim, "xid": 79}]})
        wait_for("allocatable 7 on the API server", lambda: api_status(node) == (8, 7), 15, 0.1)
        figure("XID 79 -> allocatable 7 on the API server", time.time() - injected)
        wait_for("allocatable 8 after the recovery period", lambda: api_status(node) == (8, 8),
                 RECOVERY_S + 20, 0.2)
        assert time.time() - injected >= RECOVERY_S - 0.5
    finally:
        delete(node, "pod", "steady")
        # injected events are appended: a fresh gpulet (and state file) for the next test
        restart_gpulet(node)
        wait_status(node, {RESOURCE: 8})
