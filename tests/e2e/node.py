"""A real Kubernetes node for the e2e suite: a real kubelet — v1.20.2 in
standalone mode with Debian's containerd, or v1.34.9 in a one-node cluster
(cluster.py) with containerd 1.7 — runc, and gpulet on a simulated DGX
A100, all in one sandbox (sandbox.py) and run folder and stopped by PID.
Static pods (read-only port) serve the tests both versions share. Images
are made locally (no registry is reachable)."""
import hashlib
import io
import json
import os
import pathlib
import re
import shutil
import socket
import stat
import subprocess
import tarfile
import time

import yaml

from cluster import Cluster, containerd_toml
from sandbox import Sandbox, wait_for

ROOT = pathlib.Path(__file__).resolve().parents[2]
NAMESPACE = "gpulet-e2e"
NODE_NAME = "gpulet-e2e-node"
RESOURCE = "nvidia.com/gpu"
DRIVER_VERSION = "550.90.07"  # the dgx-a100 fixture's driver
DRIVER_LIBS = ["libcuda", "libnvidia-ml", "libnvidia-ptxjitcompiler"]
BUSYBOX_IMAGE = "docker.io/gpulet-e2e/busybox:1"
PAUSE_IMAGE = "docker.io/gpulet-e2e/pause:1"
PATH = "PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin"
READ_ONLY_PORT = 10255
RECOVERY_S = 10  # long enough to look at the node while the GPU is out
# Inside the sandbox. The device-plugin folder is fixed whatever --root-dir says.
KUBELET_ROOT = pathlib.Path("/var/lib/kubelet")
PLUGIN_DIR = KUBELET_ROOT / "device-plugins"
POD_RESOURCES = KUBELET_ROOT / "pod-resources/kubelet.sock"

PAUSE_C = r"""
#include <signal.h>
#include <stdlib.h>
#include <sys/wait.h>
#include <unistd.h>
static void stop(int sig) { (void)sig; _exit(0); }
static void reap(int sig) { (void)sig; while (waitpid(-1, NULL, WNOHANG) > 0) {} }
int main(void)
{
    signal(SIGINT, stop);
    signal(SIGTERM, stop);
    signal(SIGCHLD, reap);
    for (;;)
        pause();
}
"""


def free_port():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def klog_time(line):
    """Seconds of the day of a klog line (I0520 05:33:17.123456 ...)."""
    m = re.match(r"[IWEF]\d{4} (\d\d):(\d\d):(\d\d\.\d+)", line)
    return int(m[1]) * 3600 + int(m[2]) * 60 + float(m[3]) if m else None


def docker_archive(path, tag, files, config):
    """A docker-save tarball with one layer made of files: {path: (mode, bytes or
    ('link', target))}."""
    layer = io.BytesIO()
    with tarfile.open(fileobj=layer, mode="w") as t:
        for name, (mode, content) in sorted(files.items()):
            info = tarfile.TarInfo(name)
            info.mtime = 0
            if content is None:
                info.type, info.mode = tarfile.DIRTYPE, mode
                t.addfile(info)
            elif isinstance(content, tuple):
                info.type, info.linkname, info.mode = tarfile.SYMTYPE, content[1], 0o777
                t.addfile(info)
            else:
                info.size, info.mode = len(content), mode
                t.addfile(info, io.BytesIO(content))
    layer = layer.getvalue()
    diff = hashlib.sha256(layer).hexdigest()
    conf = json.dumps({"architecture": "amd64", "os": "linux", "config": config,
                       "rootfs": {"type": "layers", "diff_ids": [f"sha256:{diff}"]}}).encode()
    conf_name = hashlib.sha256(conf).hexdigest() + ".json"
    manifest = json.dumps([{"Config": conf_name, "RepoTags": [tag],
                            "Layers": [f"{diff}/layer.tar"]}]).encode()
    with tarfile.open(path, "w") as t:
        for name, data in ((f"{diff}/layer.tar", layer), (conf_name, conf),
                           ("manifest.json", manifest)):
            info = tarfile.TarInfo(name)
            info.size = len(data)
            t.addfile(info, io.BytesIO(data))


def busybox_files():
    """busybox-static and its applets' links, as docker_archive files."""
    busybox = shutil.which("busybox") or "/bin/busybox"
    applets = subprocess.run([busybox, "--list"], capture_output=True, text=True,
                             check=True).stdout.split()
    files = {"bin": (0o755, None), "etc": (0o755, None), "tmp": (0o1777, None),
             "bin/busybox": (0o755, pathlib.Path(busybox).read_bytes())}
    files.update({f"bin/{a}": (0o777, ("link", "busybox")) for a in applets if a != "busybox"})
    return files


def make_images(work):
    """The pause and busybox images as docker-save tarballs."""
    src = work / "pause.c"
    src.write_text(PAUSE_C)
    subprocess.run(["gcc", "-static", "-O2", "-o", str(work / "pause"), str(src)], check=True)
    pause = work / "pause.tar"
    docker_archive(pause, PAUSE_IMAGE, {"pause": (0o755, (work / "pause").read_bytes())},
                   {"Entrypoint": ["/pause"]})
    box = work / "busybox.tar"
    docker_archive(box, BUSYBOX_IMAGE, busybox_files(), {"Cmd": ["sh"], "Env": [PATH]})
    return [pause, box]


def make_driver_root(root):
    """A fake driver root for the simulated driver: real shared objects with
    sonames and an ld cache, device nodes made with mknod."""
    lib = root / "usr/lib/x86_64-linux-gnu"
    lib.mkdir(parents=True)
    (root / "etc").mkdir()
    src = root / "x.c"
    src.write_text("int gpulet_fake;\n")
    for name in DRIVER_LIBS:
        subprocess.run(["gcc", "-shared", "-fPIC", f"-Wl,-soname,{name}.so.1", "-o",
                        str(lib / f"{name}.so.{DRIVER_VERSION}"), str(src)], check=True)
    (root / "etc/ld.so.conf").write_text("/usr/lib/x86_64-linux-gnu\n")
    subprocess.run([shutil.which("ldconfig") or "/sbin/ldconfig", "-r", str(root)], check=True)
    (root / "usr/bin").mkdir(parents=True)
    (root / "usr/bin/nvidia-smi").write_text("#!/bin/sh\n")
    (root / "dev").mkdir()
    os.mknod(root / "dev/nvidiactl", 0o666 | stat.S_IFCHR, os.makedev(195, 255))
    for minor in range(8):
        os.mknod(root / f"dev/nvidia{minor}", 0o666 | stat.S_IFCHR, os.makedev(195, minor))


class Node:
    """gpulet on a real node of one Kubernetes version, in a Sandbox: with
    kubelet (a v1.20 binary) a standalone kubelet and Debian's containerd;
    with cluster_bins (fetch-k8s.sh's) a v1.34 Cluster (control plane,
    containerd 1.7, kubelet). Paths the tests read are outside paths."""

    def __init__(self, build, run_dir, kubelet=None, cluster_bins=None, version="v1.20.2"):
        self.build = pathlib.Path(build)
        self.kubelet_bin = kubelet
        self.version = version
        self.dir = pathlib.Path(run_dir)
        # DRAConsumableCapacity (alpha): GPUs shared by claims of their memory
        self.cluster = Cluster(self.dir, cluster_bins,
                               feature_gates={"DRAConsumableCapacity": True}) \
            if cluster_bins else None
        self.sandbox = self.cluster.sandbox if self.cluster else Sandbox(self.dir, [NODE_NAME])
        self.sock = self.cluster.sock if self.cluster else self.dir / "containerd.sock"
        self.kubelet_root = self.sandbox.outside(KUBELET_ROOT)
        self.plugin_dir = self.sandbox.outside(PLUGIN_DIR)
        self.pod_resources = self.sandbox.outside(POD_RESOURCES)
        self.checkpoint = self.plugin_dir / "kubelet_internal_checkpoint"
        self.manifests = self.dir / "manifests"
        self.state_file = self.dir / "sim-state.yaml"
        self.metrics_port = free_port()
        self.kubelet_starts = 0
        self._kubelet_log = None
        self.gpulet_log = self.dir / "gpulet.log"
        self.gpulet_started = None
        self.sim = "dgx-a100"
        self.node = yaml.safe_load((ROOT / "sim/nodes/dgx-a100.yaml").read_text())
        self.uuids = [g["uuid"] for g in self.node["gpus"]]

    @property
    def kubelet_log(self):
        return self.cluster.kubelet_log if self.cluster else self._kubelet_log

    # ---- processes ----
    def spawn(self, name, argv, log, env=None):
        return self.sandbox.spawn(name, argv, log, env)

    def stop(self, name, timeout=30):
        self.sandbox.stop_process(name, timeout)

    def alive(self, name):
        return self.sandbox.alive(name)

    def ctr(self, *args, check=True, timeout=60):
        if self.cluster:
            return self.cluster.ctr(*args, check=check, timeout=timeout)
        return self.sandbox.run(["ctr", "--address", self.sock, "-n", "k8s.io", *args],
                                capture_output=True, text=True, check=check, timeout=timeout)

    def start(self):
        """The sandbox, (the control plane,) containerd, the kubelet."""
        self.sandbox.start()
        if self.cluster:
            self.cluster.start_control_plane()
        self.start_containerd()
        self.start_kubelet()
        if self.cluster:
            self.cluster.wait_ready()

    # ---- containerd ----
    def start_containerd(self):
        cdi = self.dir / "cdi"
        cdi.mkdir()
        driver = self.dir / "driver"
        make_driver_root(driver)
        self.driver_root = driver
        r = subprocess.run([self.build / "gpulet", "--simulate", "dgx-a100", "cdi", "generate",
                            "--driver-root", driver, "--output", cdi / "nvidia.yaml",
                            "--hook-path", (self.build / "gpulet-hook").resolve()],
                           capture_output=True, text=True)
        assert r.returncode == 0, r.stderr
        if self.cluster:
            # containerd 1.7 applies CDI devices the kubelet names from /etc/cdi
            self.cluster.pause_image = PAUSE_IMAGE
            shutil.copy(cdi / "nvidia.yaml", self.sandbox.outside("/etc/cdi/nvidia.yaml"))
            conf = self.cluster.write_containerd_config()
        else:
            conf = self.dir / "containerd" / "config.toml"
            conf.parent.mkdir()
            conf.write_text(containerd_toml(self.dir, self.sock, PAUSE_IMAGE, cdi=False))
        # The static pods have no RuntimeClass: nvidia is the default.
        r = subprocess.run([self.build / "gpulet", "runtime", "configure", "--runtime",
                            "containerd", "--config", conf, "--set-as-default"],
                           capture_output=True, text=True)
        assert r.returncode == 0, r.stderr
        self.containerd_config = conf
        env = dict(os.environ, GPULET_CDI_SPEC_DIRS=str(cdi))
        if self.cluster:
            self.cluster.start_containerd(env)
        else:
            self.spawn("containerd", ["containerd", "--config", conf],
                       self.dir / "containerd.log", env=env)
            wait_for("containerd's socket", lambda: self.ctr("version", check=False).returncode
                     == 0 or not self.alive("containerd"), 30, 0.05)
            assert self.alive("containerd"), (self.dir / "containerd.log").read_text()[-3000:]
        for tarball in make_images(self.dir):
            self.ctr("images", "import", "--snapshotter", "native", tarball)

    # ---- the kubelet ----
    def kubelet_config(self):
        conf = self.dir / "kubelet-config.yaml"
        conf.write_text(yaml.safe_dump({
            "apiVersion": "kubelet.config.k8s.io/v1beta1", "kind": "KubeletConfiguration",
            "staticPodPath": str(self.manifests), "fileCheckFrequency": "1s",
            "cgroupDriver": "cgroupfs", "cgroupRoot": self.sandbox.cgroup_root,
            "failSwapOn": False,
            "authentication": {"anonymous": {"enabled": True}, "webhook": {"enabled": False}},
            "authorization": {"mode": "AlwaysAllow"},
            "address": "127.0.0.1", "readOnlyPort": READ_ONLY_PORT,
            "healthzBindAddress": "127.0.0.1", "healthzPort": 10248,
            "evictionHard": {"memory.available": "1Mi", "nodefs.available": "1%",
                             "imagefs.available": "1%"},
        }))
        return conf

    def start_kubelet(self):
        self.manifests.mkdir(exist_ok=True)
        self.kubelet_started = time.time()
        if self.cluster:
            self.cluster.start_kubelet()
        else:
            self.kubelet_starts += 1
            self._kubelet_log = self.dir / f"kubelet-{self.kubelet_starts}.log"
            self.spawn("kubelet", [self.kubelet_bin, "--config", self.kubelet_config(),
                                   "--root-dir", KUBELET_ROOT, "--cert-dir", KUBELET_ROOT / "pki",
                                   "--container-runtime=remote",
                                   f"--container-runtime-endpoint=unix://{self.sock}",
                                   f"--hostname-override={NODE_NAME}", "--v=4"],
                       self._kubelet_log)
            wait_for("the kubelet's registration socket", lambda: (
                self.plugin_dir / "kubelet.sock").exists() or not self.alive("kubelet"), 60, 0.02)
            assert self.alive("kubelet"), self.kubelet_log.read_text()[-3000:]
        wait_for("the kubelet's read-only port", lambda: self.pods(check=False) is not None, 30, 0.1)

    def stop_kubelet(self):
        self.stop("kubelet")

    def log(self):
        return self.kubelet_log.read_text(errors="replace")

    def log_lines(self, pattern):
        return [l for l in self.log().splitlines() if re.search(pattern, l)]

    # ---- gpulet ----
    def start_gpulet(self, extra=(), sim="dgx-a100"):
        """gpulet on a simulated node (sim/nodes/SIM.yaml), in the sandbox
        beside the kubelet; extra: more arguments (a config file)."""
        self.state_file.write_text("gpus: {}\n")
        env = self.gpulet_env()
        self.sim = sim
        self.gpulet_started = time.time()
        self.spawn("gpulet", [self.build / "gpulet", "--simulate", sim, "run",
                              "--device-plugin-dir", PLUGIN_DIR,
                              "--labels-file", self.dir / "labels" / "gfd",
                              "--metrics-address", f"127.0.0.1:{self.metrics_port}",
                              "--collect-interval", "500",
                              "--pod-resources-socket", POD_RESOURCES,
                              "--health-recovery-period", f"{RECOVERY_S}s", *extra],
                   self.gpulet_log, env=env)

    def gpulet_env(self):
        """gpulet's environment: the simulated node's state file, and a
        TMPDIR in the run folder, so that what a killed gpulet leaves there
        (the simulated sysfs) goes with the run."""
        env = {k: v for k, v in os.environ.items() if not k.startswith("GPULET_SIM")}
        env["GPULET_SIM_STATE"] = str(self.state_file)
        env["TMPDIR"] = str(self.dir / "tmp")
        (self.dir / "tmp").mkdir(exist_ok=True)
        return env

    def kill_gpulet(self):
        """As a crash would: SIGKILL, nothing cleaned up."""
        self.sandbox.kill_process("gpulet")

    def inject(self, state):
        tmp = self.dir / "sim-state.yaml.tmp"
        tmp.write_text(yaml.safe_dump(state))
        os.replace(tmp, self.state_file)

    def metrics(self):
        return self.sandbox.urlopen(f"http://127.0.0.1:{self.metrics_port}/metrics").decode()

    # ---- what the kubelet says ----
    def read_checkpoint(self):
        """(registered healthy devices, pod entries) from the device manager's
        checkpoint, or None before it holds gpulet's resource."""
        try:
            data = json.loads(self.checkpoint.read_text())["Data"]
        except (OSError, ValueError, KeyError):
            return None
        return (data.get("RegisteredDevices") or {}).get(RESOURCE), data.get("PodDeviceEntries") or []

    def registered(self, resource=RESOURCE):
        try:
            data = json.loads(self.checkpoint.read_text())["Data"]
        except (OSError, ValueError, KeyError):
            return None
        return (data.get("RegisteredDevices") or {}).get(resource)

    def allocated(self, pod_uid, resource=RESOURCE):
        cp = self.read_checkpoint() or (None, [])
        ids = []
        for e in cp[1]:
            if e["PodUID"] == pod_uid and e["ResourceName"] == resource:
                d = e["DeviceIDs"]  # per NUMA node since 1.20, a list before
                ids += [i for v in d.values() for i in v] if isinstance(d, dict) else d
        return sorted(ids)

    def pods(self, check=True):
        try:
            return json.loads(self.sandbox.urlopen(
                f"http://127.0.0.1:{READ_ONLY_PORT}/pods"))["items"] or []
        except OSError:
            if check:
                raise
            return None

    def pod(self, name):
        full = f"{name}-{NODE_NAME}"
        for p in self.pods() or []:
            if p["metadata"]["name"] == full and p["metadata"]["namespace"] == NAMESPACE:
                return p
        return None

    # ---- static pods ----
    def add_pod(self, name, gpus=0, cpu=None, env=None,
                command="trap 'exit 0' TERM; while :; do sleep 1; done",
                resource=RESOURCE, image=BUSYBOX_IMAGE):
        container = {"name": "main", "image": image, "imagePullPolicy": "Never",
                     "command": ["sh", "-c", command],
                     "env": [{"name": k, "value": v} for k, v in (env or {}).items()]}
        limits = {resource: str(gpus)} if gpus else {}
        if cpu:
            limits["cpu"] = cpu
        if limits:
            container["resources"] = {"limits": limits}
        manifest = {"apiVersion": "v1", "kind": "Pod",
                    "metadata": {"name": name, "namespace": NAMESPACE},
                    "spec": {"hostNetwork": True, "restartPolicy": "Never",
                             "terminationGracePeriodSeconds": 5, "containers": [container]}}
        tmp = self.dir / f".{name}.json"
        tmp.write_text(json.dumps(manifest))
        os.replace(tmp, self.manifests / f"{name}.json")

    def remove_pod(self, name):
        (self.manifests / f"{name}.json").unlink(missing_ok=True)
        wait_for(f"pod {name} to go", lambda: self.pod(name) is None, 60, 0.1)

    def running_container(self, name, timeout=60):
        def check():
            p = self.pod(name)
            for s in (p or {}).get("status", {}).get("containerStatuses", []):
                if "running" in s.get("state", {}):
                    return p, s["containerID"].split("://", 1)[1]
            return None
        return wait_for(f"pod {name} running", check, timeout, 0.1)

    def exec(self, container_id, command):
        r = self.ctr("tasks", "exec", "--exec-id", f"e2e{time.monotonic_ns()}", container_id,
                     "sh", "-c", command, check=False)
        assert r.returncode == 0, r.stderr
        return r.stdout

    def tasks(self):
        r = self.ctr("tasks", "ls", "-q", check=False)
        return r.stdout.split() if r.returncode == 0 else []

    # ---- the end ----
    def teardown(self):
        """Every pod gone before the kubelet stops (a short wait: what is
        left dies with the sandbox), then each process by PID; the mounts
        go with the sandbox's namespaces."""
        if self.manifests.exists():
            for m in self.manifests.glob("*.json"):
                m.unlink()
        if self.alive("kubelet") and self.alive("containerd"):
            try:
                wait_for("every task to end", lambda: not self.tasks(), 30, 0.2)
            except AssertionError:
                pass  # still stop everything below
        if self.cluster:
            self.cluster.stop(first=["gpulet"])
        else:
            self.sandbox.stop(order=["kubelet", "gpulet", "containerd"])
