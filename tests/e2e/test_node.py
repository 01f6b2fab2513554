"""gpulet on a real node: a real kubelet (v1.20.2 standalone with Debian's
containerd, or v1.34.9 with a control plane and containerd 1.7), runc,
gpulet-runtime as containerd's default runtime, and gpulet on a simulated
DGX A100. Everything is checked through the kubelet itself: its
checkpoint, its log, its read-only port, the containers; on v1.34 the node
status comes from the API server."""
import json
import os
import re
import subprocess
import time

from conftest import figure, node_status
from node import NAMESPACE, RECOVERY_S, DRIVER_VERSION, DRIVER_LIBS, klog_time, wait_for

START_TO_CAPACITY_MAX_S = 10
# Registration follows the new kubelet.sock quickly: a first Register that
# is refused is retried after 10 ms (issue 11), so <= 50 ms as a rule (the
# median of the restarts); one restart may be slower on a loaded machine,
# but never near the 250 ms wait of the bug.
REREGISTER_MAX_S = 0.05
REREGISTER_BUG_S = 0.2
KUBELET_RESTARTS = 3


def test_capacity_and_allocatable_8_within_10s(node):
    assert node.start_to_capacity <= START_TO_CAPACITY_MAX_S
    assert sorted(node.registered()) == sorted(node.uuids)
    assert node_status(node, expect=(8, 8)) == (8, 8)
    assert "PROTOCOL_ERROR" not in node.log()  # the :authority bug of issue 11


def test_a_pod_gets_exactly_its_two_gpus(node, gpu_pod):
    pod, cid, uuids = gpu_pod
    minors = sorted(node.uuids.index(u) for u in uuids)
    assert node.log_lines(r"Making allocation request for dev")
    out = node.exec(cid, "ls /dev")
    assert sorted(w for w in out.split() if w.startswith("nvidia")) == \
        sorted([f"nvidia{m}" for m in minors] + ["nvidiactl"])
    # the device cgroup lets it open those and nothing else of the driver's
    rules = node.exec(cid, "cat /sys/fs/cgroup/devices/devices.list").split("\n")
    assert sorted(r for r in rules if r.startswith("c 195:")) == \
        sorted([f"c 195:{m} rwm" for m in minors] + ["c 195:255 rwm"])
    libs = node.exec(cid, "ls /usr/lib/x86_64-linux-gnu").split()
    for lib in DRIVER_LIBS:
        assert f"{lib}.so.{DRIVER_VERSION}" in libs and f"{lib}.so.1" in libs
    assert "nvidia-smi" in node.exec(cid, "ls /usr/bin")
    # mounted read-only, and the container's ld cache knows the libraries
    r = node.ctr("tasks", "exec", "--exec-id", "ro", cid, "sh", "-c",
                 f"echo x > /usr/lib/x86_64-linux-gnu/libcuda.so.{DRIVER_VERSION}", check=False)
    assert r.returncode != 0 and "Read-only file system" in r.stderr + r.stdout
    assert node.exec(cid, "grep -c libcuda.so.1 /etc/ld.so.cache").strip() != "0"
    env = node.exec(cid, "env")
    assert sorted(re.search(r"NVIDIA_VISIBLE_DEVICES=(\S+)", env)[1].split(",")) == uuids


def test_a_pod_asking_for_more_than_is_free_is_refused(node, gpu_pod):
    node.add_pod("gpu7", gpus=7)
    status = wait_for("pod gpu7 refused", lambda: (node.pod("gpu7") or {}).get("status", {})
                      .get("phase") == "Failed" and node.pod("gpu7")["status"], 60, 0.05)
    assert status["reason"] == "UnexpectedAdmissionError"
    assert "Requested: 7, Available: 6" in status["message"]
    node.remove_pod("gpu7")
    assert node.allocated(gpu_pod[0]["metadata"]["uid"]) == gpu_pod[2]  # untouched


def test_metrics_name_the_pod_on_exactly_its_gpus(node, gpu_pod):
    pod, cid, uuids = gpu_pod
    name = pod["metadata"]["name"]

    def labelled():
        held = set()
        for line in node.metrics().splitlines():
            if line.startswith("DCGM_FI_DEV_GPU_UTIL{") and f'pod="{name}"' in line:
                assert f'namespace="{NAMESPACE}"' in line and 'container="main"' in line
                held.add(re.search(r'UUID="([^"]+)"', line)[1])
        return held
    assert wait_for("pod labels on /metrics", labelled, 30, 0.2) == set(uuids)


def test_an_unknown_gpu_shows_gpulets_reason_in_the_pod_status(node):
    node.add_pod("nogpu", env={"NVIDIA_VISIBLE_DEVICES": "GPU-does-not-exist"})

    def reason():
        for s in (node.pod("nogpu") or {}).get("status", {}).get("containerStatuses", []):
            text = json.dumps(s["state"])
            if "gpulet-runtime:" in text or "unable to retrieve OCI runtime error" in text:
                return text
        return None
    text = wait_for("the refusal in the pod's status", reason, 60, 0.1)
    assert 'GPU \\"GPU-does-not-exist\\"' in text and "unable to retrieve" not in text
    assert node.log_lines(r'gpulet-runtime: .*GPU-does-not-exist')
    node.remove_pod("nogpu")


def test_kubelet_restart_is_followed_by_reregistration(node, gpu_pod):
    took = []
    for _ in range(KUBELET_RESTARTS):
        node.stop_kubelet()
        restarted = time.time()
        node.start_kubelet()
        got = wait_for("gpulet's registration in the kubelet's log", lambda: node.log_lines(
            r'Got registration request from device plugin with resource.*"nvidia\.com/gpu"'),
            30)
        # from the new kubelet.sock's creation (its bind; the log line before
        # it, v1.34's "Starting ...", comes earlier by the kubelet's own work)
        # to the kubelet's log line of the Register it received
        took.append(klog_time(got[0]) - seconds_of_day(
            (node.plugin_dir / "kubelet.sock").stat().st_mtime))
        assert 0 <= took[-1] < REREGISTER_BUG_S, took
        wait_for("8 GPUs in the new kubelet's checkpoint", lambda: len(node.registered() or []) == 8
                 and node.checkpoint.stat().st_mtime >= restarted, 30)
    figure("kubelet restart (kubelet.sock made) -> gpulet registered", *took)
    assert sorted(took)[len(took) // 2] <= REREGISTER_MAX_S, took
    assert node_status(node, expect=(8, 8)) == (8, 8)
    # the new kubelet lists its static pods only once it has read their
    # manifests again: until then the pod is absent, not gone
    wait_for("the GPU pod running under the new kubelet", lambda: (
        node.pod("gpu2") or {}).get("status", {}).get("phase") == "Running", 30)


def seconds_of_day(epoch):
    """A file time as klog stamps its lines (local time, seconds of the day)."""
    t = time.localtime(epoch)
    return t.tm_hour * 3600 + t.tm_min * 60 + t.tm_sec + epoch % 1


def test_an_xid_79_takes_a_gpu_out_until_the_recovery_period_ends(node, gpu_pod):
    pod, cid, uuids = gpu_pod
    victim = next(i for i, u in enumerate(node.uuids) if u not in uuids)
    injected = time.time()
    node.inject({"gpus": {}, "events": [{"gpu": victim, "xid": 79}]})
    wait_for("allocatable 7 (the kubelet's checkpoint)", lambda: (node.registered() or []) and
             node.uuids[victim] not in node.registered(), 10, 0.005)
    dropped = time.time()
    figure("XID 79 injected -> kubelet allocatable 7", dropped - injected)
    assert sorted(node.registered()) == sorted(u for u in node.uuids if u != node.uuids[victim])
    assert node_status(node, expect=(8, 7)) == (8, 7)
    rc, checks = doctor(node)
    sick = [c for c in checks["gpu health"] if c["status"] != "ok"]
    assert rc == 1 and len(sick) == 1 and node.uuids[victim] in sick[0]["message"] and \
        "79" in sick[0]["message"], checks["gpu health"]
    wait_for("the GPU back after the recovery period", lambda: len(node.registered()) == 8,
             RECOVERY_S + 15, 0.005)
    back = time.time()
    figure(f"allocatable 7 -> 8 again (recovery period {RECOVERY_S} s)", back - dropped)
    assert back - dropped >= RECOVERY_S - 0.5
    assert node_status(node, expect=(8, 8)) == (8, 8)


def doctor(node):
    r = subprocess.run([node.build / "gpulet", "--simulate", "dgx-a100", "doctor", "--json",
                        "--dev-root", node.driver_root,
                        "--device-plugin-dir", node.plugin_dir,
                        "--pod-resources-socket", node.kubelet_root / "pod-resources/kubelet.sock",
                        "--containerd-config", node.containerd_config,
                        "--docker-config", node.dir / "none.json",
                        "--crio-dir", node.dir / "none.d",
                        "--cdi-dirs", node.dir / "cdi"], capture_output=True, text=True,
                       env={k: v for k, v in os.environ.items() if not k.startswith("GPULET_SIM")},
                       timeout=60)
    report = json.loads(r.stdout)
    checks = {}
    for c in report["checks"]:
        checks.setdefault(c["check"], []).append(c)
    return r.returncode, checks


def test_doctor_reports_what_is_true(node, gpu_pod):
    pod, cid, uuids = gpu_pod
    rc, checks = doctor(node)
    for name in ("driver", "device nodes", "containerd", "cdi spec", "device plugin", "kubelet",
                 "gpu health", "mig"):
        assert [c["status"] for c in checks[name]] == ["ok"], checks[name]
    assert "serves 8 device(s), registered, the kubelet watching" in \
        checks["device plugin"][0]["message"]
    assert "the kubelet offers all 8 healthy device(s)" in checks["kubelet"][0]["message"]
    # The pod holding 2 GPUs runs no process on them: true, and said.
    idle = checks["idle gpus"]
    assert all(c["status"] == "warn" and pod["metadata"]["name"] in c["message"] for c in idle)
    assert sorted(re.search(r"\((GPU-[^)]+)\)", c["message"])[1] for c in idle) == uuids
    assert rc == 1  # a warning is not "everything ok"


def test_doctor_says_when_gpulet_is_not_serving(node):
    node.kill_gpulet()
    try:
        rc, checks = doctor(node)
        assert rc == 1 and checks["device plugin"][0]["status"] == "fail", checks["device plugin"]
        assert "nobody listens" in checks["device plugin"][0]["message"]
    finally:
        node.start_gpulet()
        wait_for("the kubelet to register gpulet's 8 GPUs again", lambda: len(
            node.registered() or []) == 8 and node.checkpoint.stat().st_mtime >= node.gpulet_started,
            30)
