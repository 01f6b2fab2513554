"""gpulet as the DRA driver gpu.nvidia.com in the one-node v1.34 cluster:
ResourceSlices with NVIDIA's attributes and capacity; a pod with a
ResourceClaimTemplate (CEL on productName) getting exactly its GPU's CDI
edits through containerd 1.7 (CRI CDIDevices); the pod deleted ->
unprepared; a kubelet restart -> slices published again within 15 s; a
gpulet restart -> prepared claims kept. The device plugin is off meanwhile
(a GPU is never offered twice); the module puts the usual gpulet back.
/metrics names the claim's pod on its GPU (pod-resources dynamic_resources).
GPU slices by claim (dra.slices, the cluster's DRAConsumableCapacity gate):
a 10Gi claim held to it by the interposer beside a 60Gi claim on one GPU,
and a 20Gi claim that does not fit left Pending. Sharing by claim: a pod
whose claim asks for MPS gets its own control daemon's pipe folder."""
import json
import os
import re
import stat
import time

import pytest
import yaml

from conftest import CLUSTER, ROOT, figure
from node import BUSYBOX_IMAGE, NAMESPACE, POD_RESOURCES, wait_for

pytestmark = pytest.mark.skipif(not CLUSTER, reason="needs the API server (GPULET_E2E_VERSION=v1.34.9)")
SLEEP = ["sh", "-c", "trap 'exit 0' TERM; while :; do sleep 1; done"]
CDI_DIR = "/var/run/cdi"  # inside the sandbox, where containerd looks


def start_dra(node, sim="dgx-a100", extra=()):
    node.state_file.write_text("gpus: {}\n")
    env = node.gpulet_env()
    node.gpulet_started = time.time()
    node.spawn("gpulet", [node.build / "gpulet", "--log-level", "debug", "--simulate", sim,
                          "--driver-root", node.driver_root, "run", "--dra",
                          "--no-device-plugin", "--no-labels",
                          "--metrics-address", f"127.0.0.1:{node.metrics_port}",
                          "--collect-interval", "500", "--pod-resources-socket", POD_RESOURCES,
                          "--health-recovery-period", "3s",
                          "--kubeconfig", node.cluster.admin_kubeconfig,
                          "--node-name", node.cluster.node_name,
                          "--state-dir", node.dir / "gpulet-state", "--cdi-dir", CDI_DIR,
                          *extra],
               node.gpulet_log, env=env)


def slices(node):
    items = node.cluster.kubectl_json("get", "resourceslices")["items"]
    return [s for s in items if s["spec"]["driver"] == "gpu.nvidia.com"]


def devices(node):
    return {d["name"]: d for s in slices(node) for d in s["spec"].get("devices", [])}


@pytest.fixture(scope="module")
def dra(node):
    node.stop("gpulet")
    start_dra(node)
    node.cluster.kubectl("apply", "-f",
                         str(ROOT / "deploy/kubernetes/overlays/dra/deviceclasses.yaml"))
    try:
        wait_for("gpulet's 8 GPUs in a ResourceSlice", lambda: len(devices(node)) == 8, 60, 0.2)
        figure("gpulet start -> ResourceSlice", time.time() - node.gpulet_started)
        yield node
    finally:
        node.stop("gpulet")
        node.start_gpulet()
        wait_for("8 GPUs registered again", lambda: len(node.registered() or []) == 8 and
                 node.checkpoint.stat().st_mtime >= node.gpulet_started, 30, 0.05)


def apply_pod(node, name, claim, image=BUSYBOX_IMAGE, env=None):
    """A pod that sleeps, its one container given the claim named by claim
    ({"resourceClaimName": ...} or {"resourceClaimTemplateName": ...})."""
    node.cluster.apply({
        "apiVersion": "v1", "kind": "Pod",
        "metadata": {"name": name, "namespace": NAMESPACE},
        "spec": {"terminationGracePeriodSeconds": 2, "automountServiceAccountToken": False,
                 "resourceClaims": [{"name": "gpu", **claim}],
                 "containers": [{"name": "main", "image": image, "imagePullPolicy": "Never",
                                 "command": SLEEP,
                                 "env": [{"name": k, "value": v} for k, v in
                                         (env or {}).items()],
                                 "resources": {"claims": [{"name": "gpu"}]}}]}})


def claim_pod(node, name, cel, device_class="gpu.nvidia.com", count=1):
    node.cluster.apply({
        "apiVersion": "resource.k8s.io/v1", "kind": "ResourceClaimTemplate",
        "metadata": {"name": name, "namespace": NAMESPACE},
        "spec": {"spec": {"devices": {"requests": [{"name": "gpu", "exactly": {
            "deviceClassName": device_class, "count": count,
            "selectors": [{"cel": {"expression": cel}}]}}]}}}})
    apply_pod(node, name, {"resourceClaimTemplateName": name})
    pod = wait_for(f"pod {name} Running", lambda: (p := node.cluster.kubectl_json(
        "get", "pod", "-n", NAMESPACE, name, check=False)) and
        p.get("status", {}).get("phase") == "Running" and p, 90, 0.2)
    claim_name = pod["status"]["resourceClaimStatuses"][0]["resourceClaimName"]
    claim = node.cluster.kubectl_json("get", "resourceclaim", "-n", NAMESPACE, claim_name)
    return pod, claim


def kexec(node, pod, command):
    return node.cluster.kubectl("exec", "-n", NAMESPACE, pod, "--", "sh", "-c", command).stdout


def delete(node, kind, name):
    node.cluster.kubectl("delete", kind, "-n", NAMESPACE, name, "--ignore-not-found",
                         "--wait=true", "--timeout=60s", timeout=70)


def spec_file(node, uid):
    return node.sandbox.outside(f"{CDI_DIR}/k8s.gpu.nvidia.com-claim_{uid}.yaml")


def test_slices_have_nvidias_attributes_and_capacity(dra):
    s = slices(dra)
    assert len(s) == 1
    spec = s[0]["spec"]
    assert spec["nodeName"] == dra.cluster.node_name
    assert spec["pool"]["name"] == dra.cluster.node_name
    assert spec["pool"]["resourceSliceCount"] == 1
    devs = devices(dra)
    assert sorted(devs) == [f"gpu-{i}" for i in range(8)]
    g0 = {**dra.node.get("gpu_defaults", {}), **dra.node["gpus"][0]}
    a = devs["gpu-0"]["attributes"]
    assert a["type"] == {"string": "gpu"}
    assert a["uuid"] == {"string": g0["uuid"]}
    assert a["productName"] == {"string": g0["name"]}
    assert a["brand"] == {"string": "Nvidia"}
    assert a["architecture"] == {"string": "Ampere"}
    assert a["cudaComputeCapability"] == {"version": "8.0.0"}
    assert a["cudaDriverVersion"] == {"version": "12.4.0"}
    assert "resource.kubernetes.io/pciBusID" in a
    assert devs["gpu-0"]["capacity"] == {"memory": {"value": f"{g0['memory_mib'] // 1024}Gi"}}
    owner = s[0]["metadata"]["ownerReferences"][0]
    assert (owner["kind"], owner["name"]) == ("Node", dra.cluster.node_name)


def test_claim_by_product_name_gets_exactly_its_gpu(dra):
    name = "dra-a100"
    product = dra.node["gpu_defaults"]["name"] if "name" in dra.node.get("gpu_defaults", {}) \
        else dra.node["gpus"][0]["name"]
    try:
        pod, claim = claim_pod(dra, name, f"device.attributes['gpu.nvidia.com'].productName == "
                                          f"'{product}'")
        results = claim["status"]["allocation"]["devices"]["results"]
        assert len(results) == 1
        assert results[0]["driver"] == "gpu.nvidia.com"
        device = results[0]["device"]
        minor = int(device.split("-")[1])
        uid = claim["metadata"]["uid"]
        spec = yaml.safe_load(spec_file(dra, uid).read_text())
        assert spec["kind"] == "k8s.gpu.nvidia.com/claim"
        seen = sorted(d for d in kexec(dra, name, "ls /dev").split() if re.fullmatch(r"nvidia\d+", d))
        assert seen == [f"nvidia{minor}"]
        env = kexec(dra, name, "env").split("\n")
        assert "NVIDIA_VISIBLE_DEVICES=void" in env

        # the metrics name the pod on its GPU (pod-resources dynamic_resources)
        def labelled():
            return {re.search(r'gpu="(\d+)"', line)[1] for line in dra.metrics().splitlines()
                    if line.startswith("DCGM_FI_DEV_GPU_UTIL{") and f'pod="{name}"' in line
                    and f'namespace="{NAMESPACE}"' in line and 'container="main"' in line}
        assert wait_for(f"{name} on /metrics", labelled, 30, 0.2) == {str(minor)}
    finally:
        delete(dra, "pod", name)
    # deleted -> unprepared: the claim's spec goes
    wait_for("the claim unprepared (its CDI spec removed)",
             lambda: not spec_file(dra, uid).exists(), 60, 0.2)
    delete(dra, "resourceclaimtemplate", name)


def test_two_gpus_in_one_claim(dra):
    name = "dra-two"
    try:
        pod, claim = claim_pod(dra, name, "device.attributes['gpu.nvidia.com'].type == 'gpu'",
                               count=2)
        results = claim["status"]["allocation"]["devices"]["results"]
        minors = sorted(int(r["device"].split("-")[1]) for r in results)
        assert len(minors) == 2 and minors[0] != minors[1]
        seen = sorted(d for d in kexec(dra, name, "ls /dev").split() if re.fullmatch(r"nvidia\d+", d))
        assert seen == sorted(f"nvidia{m}" for m in minors)
    finally:
        delete(dra, "pod", name)
        delete(dra, "resourceclaimtemplate", name)


def test_xid_takes_the_gpu_out_of_the_slice(dra):
    assert "gpu-6" in devices(dra)
    dra.inject({"gpus": {}, "events": [{"gpu": 6, "xid": 79}]})
    injected = time.time()
    wait_for("gpu-6 out of the ResourceSlice", lambda: (d := devices(dra)) and "gpu-6" not in d
             and len(d) == 7, 10, 0.05)
    # Seen out at all, it was published within the 3 s recovery period; the
    # time is a figure, not a bound: each kubectl call's own start is in it.
    figure("XID -> device out of the ResourceSlice", time.time() - injected)
    dra.inject({"gpus": {}, "events": []})
    wait_for("gpu-6 back after the recovery period (3 s)", lambda: len(devices(dra)) == 8, 30,
             0.2)


def test_device_taints_keep_a_sick_gpu_published(dra):
    """dra.deviceTaints with the cluster's DRADeviceTaints gate: an XID
    leaves gpu-5 in the ResourceSlice with gpulet's taint, which the API
    server validates and keeps; a claim for exactly that GPU is not
    scheduled while it is tainted, and is once the taint goes after the
    recovery period."""
    config = dra.dir / "dra-taints.yaml"
    config.write_text("version: v1\ndra:\n  deviceTaints: true\n")
    dra.stop("gpulet")
    # The pod must be tried by the scheduler while the taint is there: 3 s
    # from the XID to two kubectl calls and a scheduling attempt is a race
    # on a loaded machine; 15 s is not (the later option wins).
    start_dra(dra, extra=["--config-file", config, "--health-recovery-period", "15s"])
    name = "dra-tainted"
    try:
        wait_for("slices again", lambda: len(devices(dra)) == 8, 60, 0.2)
        uuid = devices(dra)["gpu-5"]["attributes"]["uuid"]["string"]
        dra.cluster.apply({
            "apiVersion": "resource.k8s.io/v1", "kind": "ResourceClaimTemplate",
            "metadata": {"name": name, "namespace": NAMESPACE},
            "spec": {"spec": {"devices": {"requests": [{"name": "gpu", "exactly": {
                "deviceClassName": "gpu.nvidia.com", "selectors": [{"cel": {"expression":
                    f"device.attributes['gpu.nvidia.com'].uuid == '{uuid}'"}}]}}]}}}})
        dra.inject({"gpus": {}, "events": [{"gpu": 5, "xid": 79}]})
        injected = time.time()
        taints = wait_for("gpu-5 tainted", lambda: devices(dra).get("gpu-5", {}).get("taints"),
                          10, 0.05)
        figure("XID -> device tainted in the ResourceSlice", time.time() - injected)
        assert len(devices(dra)) == 8  # still published
        (taint,) = taints
        assert {k: taint[k] for k in ("key", "value", "effect")} == {
            "key": "gpu.nvidia.com/xid", "value": "79", "effect": "NoSchedule"}
        assert taint["timeAdded"]
        apply_pod(dra, name, {"resourceClaimTemplateName": name})
        wait_for("the pod found unschedulable while its GPU is tainted", lambda: any(
            c["type"] == "PodScheduled" and c["status"] == "False" and
            c.get("reason") == "Unschedulable"
            for c in pod_json(dra, name).get("status", {}).get("conditions", [])), 60, 0.2)
        dra.inject({"gpus": {}, "events": []})
        wait_for("the taint gone after the recovery period (15 s)", lambda: (d := devices(dra))
                 and len(d) == 8 and "taints" not in d["gpu-5"], 30, 0.2)
        wait_for(f"pod {name} Running on gpu-5",
                 lambda: pod_json(dra, name).get("status", {}).get("phase") == "Running", 90, 0.2)
    finally:
        delete(dra, "pod", name)
        delete(dra, "resourceclaimtemplate", name)
        dra.stop("gpulet")
        start_dra(dra)
        wait_for("slices without taints", lambda: len(devices(dra)) == 8, 60, 0.2)


def test_kubelet_restart_slices_back_within_15s(dra):
    before = slices(dra)[0]["spec"]["pool"]["generation"]
    dra.cluster.stop_kubelet()
    dra.cluster.start_kubelet()
    start = time.time()
    # every kubelet start deletes the node's slices; gpulet publishes again
    wait_for("the slices deleted by the kubelet and published again",
             lambda: (s := slices(dra)) and s[0]["spec"]["pool"]["generation"] > before
             and len(devices(dra)) == 8, 30, 0.1)
    took = time.time() - start
    figure("kubelet start -> ResourceSlice again", took)
    assert took <= 15


def test_gpulet_restart_keeps_prepared_claims(dra):
    name = "dra-keep"
    try:
        pod, claim = claim_pod(dra, name, "device.attributes['gpu.nvidia.com'].type == 'gpu'")
        uid = claim["metadata"]["uid"]
        assert spec_file(dra, uid).exists()
        dra.stop("gpulet")
        start_dra(dra)
        wait_for("slices again", lambda: len(devices(dra)) == 8, 60, 0.2)
        assert spec_file(dra, uid).exists()
        cp = json.loads((dra.dir / "gpulet-state" / "dra-checkpoint.json").read_text())
        assert uid in [c["uid"] for c in cp["claims"]]
        assert dra.cluster.kubectl_json("get", "pod", "-n", NAMESPACE, name)["status"][
            "phase"] == "Running"
    finally:
        delete(dra, "pod", name)
    wait_for("the claim unprepared by the new gpulet", lambda: not spec_file(dra, uid).exists(),
             60, 0.2)
    delete(dra, "resourceclaimtemplate", name)


def test_mig_claim_gets_its_gpu_and_instance_capabilities(dra):
    """Last: it leaves gpulet on the simulated A100 MIG node."""
    sim = yaml.safe_load((ROOT / "sim/nodes/a100-mig.yaml").read_text())
    root = dra.driver_root
    caps = root / "proc/driver/nvidia-caps"
    caps.mkdir(parents=True, exist_ok=True)
    lines = []
    for g, dev in enumerate(sim["gpus"]):
        for k, d in enumerate(dev["mig_devices"]):
            base = 100 + 10 * (g * 10 + k)
            lines += [f"gpu{g}/gi{d['gpu_instance_id']}/access {base}",
                      f"gpu{g}/gi{d['gpu_instance_id']}/ci{d['compute_instance_id']}/access "
                      f"{base + 1}"]
    (caps / "mig-minors").write_text("\n".join(lines) + "\n")
    (root / "dev/nvidia-caps").mkdir(exist_ok=True)
    for line in lines:
        minor = int(line.split()[1])
        node_path = root / f"dev/nvidia-caps/nvidia-cap{minor}"
        if not node_path.exists():
            os.mknod(node_path, 0o444 | stat.S_IFCHR, os.makedev(237, minor))
    dra.stop("gpulet")
    start_dra(dra, sim="a100-mig")
    wait_for("the 10 MIG devices published", lambda: len(devices(dra)) == 10 and
             all("-mig-" in n for n in devices(dra)), 60, 0.2)
    name = "dra-mig"
    want = "gpu-0-mig-1g5gb-19-"
    try:
        pod, claim = claim_pod(dra, name, "device.attributes['gpu.nvidia.com'].profile == '1g.5gb' "
                               "&& device.attributes['gpu.nvidia.com'].parentUUID == "
                               f"'{sim['gpus'][0]['uuid']}'", device_class="mig.nvidia.com")
        device = claim["status"]["allocation"]["devices"]["results"][0]["device"]
        assert device.startswith(want), device
        uuid = devices(dra)[device]["attributes"]["uuid"]["string"]
        k = [d["uuid"] for d in sim["gpus"][0]["mig_devices"]].index(uuid)
        base = 100 + 10 * k
        seen = kexec(dra, name, "ls /dev /dev/nvidia-caps 2>/dev/null").split()
        assert sorted(x for x in seen if re.fullmatch(r"nvidia\d+", x)) == ["nvidia0"]
        assert sorted(x for x in seen if x.startswith("nvidia-cap") and x != "nvidia-caps") == \
            sorted([f"nvidia-cap{base}", f"nvidia-cap{base + 1}"])
    finally:
        delete(dra, "pod", name)
        delete(dra, "resourceclaimtemplate", name)


GIB = 1 << 30
MIB = 1 << 20
CTX = 64 * MIB  # the interposer's charge per context


def memory_claim_pod(node, name, uuid, memory, image=BUSYBOX_IMAGE, env=None):
    """A pod whose claim asks for `memory` of the GPU with that UUID."""
    node.cluster.apply({
        "apiVersion": "resource.k8s.io/v1", "kind": "ResourceClaimTemplate",
        "metadata": {"name": name, "namespace": NAMESPACE},
        "spec": {"spec": {"devices": {"requests": [{"name": "gpu", "exactly": {
            "deviceClassName": "gpu.nvidia.com",
            "selectors": [{"cel": {"expression":
                                   f"device.attributes['gpu.nvidia.com'].uuid == '{uuid}'"}}],
            "capacity": {"requests": {"memory": memory}}}}]}}}})
    apply_pod(node, name, {"resourceClaimTemplateName": name}, image, env)


def pod_json(node, name):
    return node.cluster.kubectl_json("get", "pod", "-n", NAMESPACE, name, check=False) or {}


def test_claims_share_a_gpu_by_memory_held_by_the_interposer(dra):
    """dra.slices shares GPU 7: a pod whose claim asks for 10Gi of it runs
    cudaprog under the interposer and is refused past 10 GiB (its own
    variable notwithstanding) while a second claim holds 60Gi of the same
    GPU; a third asking 20Gi does not fit the 80 GiB and stays Pending."""
    from test_slices import CUDA_IMAGE, cuda_image
    cuda_image(dra)
    config = dra.dir / "dra-slices.yaml"
    config.write_text("version: v1\ndra:\n  slices: [7]\n")
    dra.stop("gpulet")
    start_dra(dra, extra=["--config-file", config,
                          "--cuda-interposer", (dra.build / "libgpulet-cuda.so").resolve()])
    wait_for("gpu-7 published for several claims",
             lambda: (d := devices(dra)) and len(d) == 8 and
             d["gpu-7"].get("allowMultipleAllocations") is True, 60, 0.2)
    uuid = devices(dra)["gpu-7"]["attributes"]["uuid"]["string"]
    names = ("share-10g", "share-60g", "share-20g")
    try:
        memory_claim_pod(dra, names[0], uuid, "10Gi", image=CUDA_IMAGE,
                         env={"GPULET_CUDA_MEMORY_LIMIT_0": "80Gi"})
        memory_claim_pod(dra, names[1], uuid, "60Gi")
        for n in names[:2]:
            wait_for(f"pod {n} Running",
                     lambda n=n: pod_json(dra, n).get("status", {}).get("phase") == "Running",
                     90, 0.2)
        claims = {}
        for n in names[:2]:
            cname = pod_json(dra, n)["status"]["resourceClaimStatuses"][0]["resourceClaimName"]
            claims[n] = dra.cluster.kubectl_json("get", "resourceclaim", "-n", NAMESPACE, cname)
        for n, gib in ((names[0], 10), (names[1], 60)):
            r = claims[n]["status"]["allocation"]["devices"]["results"][0]
            assert r["device"] == "gpu-7"
            assert r["consumedCapacity"]["memory"] == f"{gib}Gi"

        limits = kexec(dra, names[0], "cat /etc/gpulet/cuda-limits")
        keys = dict(re.findall(r"^(\w+)=(\S+)$", limits, re.M))
        assert keys["GPULET_CUDA_MEMORY_LIMIT_0"] == str(10 * GIB), limits
        assert keys["GPULET_CUDA_DEVICE_UUID_0"] == uuid
        assert keys["GPULET_CUDA_COMPUTE_SHARE_0"] == "12.5"
        run = ("export LD_LIBRARY_PATH=/opt/sim GPULET_SIM_NODE=/opt/sim/node.yaml "
               f"GPULET_SIM_DEVICE_STATE=/tmp/node.device CUDA_VISIBLE_DEVICES={uuid}; "
               "exec /opt/sim/cudaprog direct ")
        out = kexec(dra, names[0], run + f"info fill:alloc:{64 * MIB} info")

        def result(op, text):
            found = [dict(re.findall(r"(\w+)=(\d+)", line)) for line in text.splitlines()
                     if line.startswith(op + " ")]
            assert found, text
            return {k: int(v) for k, v in found[-1].items()}
        assert result("info", out)["total"] == 10 * GIB
        fill = result("fill", out)
        assert fill["rc"] == 2, out  # CUDA_ERROR_OUT_OF_MEMORY at the claim's 10 GiB
        assert 10 * GIB - 2 * CTX < fill["total"] <= 10 * GIB - CTX, out

        # 10 + 60 + 20 > 80: the scheduler never oversubscribes the GPU
        memory_claim_pod(dra, names[2], uuid, "20Gi")
        cond = wait_for(f"pod {names[2]} unschedulable", lambda: next(
            (c for c in pod_json(dra, names[2]).get("status", {}).get("conditions", [])
             if c["type"] == "PodScheduled" and c["status"] == "False"), None), 60, 0.2)
        assert cond.get("reason") == "Unschedulable", cond
        assert pod_json(dra, names[2])["status"]["phase"] == "Pending"
    finally:
        for n in names:
            delete(dra, "pod", n)
            delete(dra, "resourceclaimtemplate", n)
        dra.stop("gpulet")
        start_dra(dra)
        wait_for("8 whole GPUs published again",
                 lambda: (d := devices(dra)) and len(d) == 8 and
                 "allowMultipleAllocations" not in d["gpu-7"], 60, 0.2)


def test_mps_claim_gives_the_pod_its_daemon(dra):
    """A pod with a ResourceClaim whose GpuConfig asks for MPS sees
    CUDA_MPS_PIPE_DIRECTORY and, there, the control socket of the daemon
    gpulet started for the claim (the simulated driver's own program, copied
    into the node's driver root); deleted, the daemon and its folders go."""
    import shutil
    for tool in ("nvidia-smi", "nvidia-cuda-mps-control"):
        shutil.copy(dra.build / "sim" / "tools" / tool, dra.driver_root / "usr/bin" / tool)
    name = "dra-mps"
    dra.cluster.apply({
        "apiVersion": "resource.k8s.io/v1", "kind": "ResourceClaim",
        "metadata": {"name": name, "namespace": NAMESPACE},
        "spec": {"devices": {
            "requests": [{"name": "gpu", "exactly": {"deviceClassName": "gpu.nvidia.com"}}],
            "config": [{"requests": ["gpu"], "opaque": {"driver": "gpu.nvidia.com", "parameters": {
                "apiVersion": "resource.nvidia.com/v1beta1", "kind": "GpuConfig",
                "sharing": {"strategy": "MPS",
                            "mpsConfig": {"defaultActiveThreadPercentage": 25}}}}}]}}})
    apply_pod(dra, name, {"resourceClaimName": name})
    uid = dra.cluster.kubectl_json("get", "resourceclaim", "-n", NAMESPACE,
                                   name)["metadata"]["uid"]
    folder = dra.sandbox.outside(str(dra.dir / "gpulet-state" / "dra" / "mps" / uid))
    try:
        wait_for(f"pod {name} Running",
                 lambda: pod_json(dra, name).get("status", {}).get("phase") == "Running", 90, 0.2)
        env = kexec(dra, name, "env").split("\n")
        assert "CUDA_MPS_PIPE_DIRECTORY=/tmp/nvidia-mps" in env
        assert "control" in kexec(dra, name, "ls /tmp/nvidia-mps").split()
        assert "set_default_active_thread_percentage 25" in \
            (folder / "log" / "control.log").read_text()
    finally:
        delete(dra, "pod", name)
    wait_for("the claim unprepared (its MPS folders removed)", lambda: not folder.exists(), 60, 0.2)
    delete(dra, "resourceclaim", name)
