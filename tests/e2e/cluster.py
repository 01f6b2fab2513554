"""A one-node Kubernetes v1.34 cluster for tests, reusable by any e2e
suite: etcd 3.5, kube-apiserver (Node,RBAC), kube-controller-manager,
kube-scheduler, containerd 1.7 (CDI on) and a kubelet, with a self-made
PKI, all in a Sandbox (private network and mount namespaces, own cgroup
root). The binaries come from tests/e2e/fetch-k8s.sh (NAME=PATH lines).

    with running(cache, pause_image, images, feature_gates={"DRAConsumableCapacity": True}) as c:
        c.kubectl("get", "nodes")     # control plane, containerd, kubelet; node Ready
        c.kubectl_json("get", "node", c.node_name)
    # every process stopped by PID, mounts and cgroups gone, run folder removed

or by hand: Cluster(run_dir, bins, ...), start(pause_image, images), stop().

Feature gates also come from GPULET_E2E_FEATURE_GATES ("A=true,B=false")
and API groups from GPULET_E2E_RUNTIME_CONFIG (kube-apiserver's
--runtime-config); both go to every component that takes them.
`admin_kubeconfig` is an admin client's kubeconfig; its server
(https://127.0.0.1:6443) is reachable inside the sandbox only, so run
clients with `c.sandbox.run([...])` or `c.kubectl(...)`. Devices plugins
and drivers under test are started with `c.sandbox.spawn(name, argv, log)`;
they see the kubelet's /var/lib/kubelet inside the sandbox."""
import contextlib
import json
import os
import pathlib
import shutil
import subprocess
import tempfile
import time

import yaml

from sandbox import NODE_IP, Sandbox, wait_for

SERVICE_RANGE = "198.51.100.0/24"  # TEST-NET-2
SERVICE_IP = "198.51.100.1"
POD_RANGE = "203.0.113.0/24"  # TEST-NET-3
APISERVER = "https://127.0.0.1:6443"
ETCD = "http://127.0.0.1:2379"
NODE_NAME = "gpulet-e2e-node"
KUBELET_ROOT = pathlib.Path("/var/lib/kubelet")  # inside the sandbox
CNI_BIN = "/usr/lib/cni"  # Debian's containernetworking-plugins


def parse_gates(text):
    gates = {}
    for item in filter(None, (t.strip() for t in (text or "").split(","))):
        name, _, value = item.partition("=")
        if value.lower() not in ("true", "false"):
            raise ValueError(f"feature gate {item!r}: want NAME=true or NAME=false")
        gates[name] = value.lower() == "true"
    return gates


def containerd_toml(run_dir, sock, pause_image, cdi):
    """A private containerd's config: root, state and sockets in run_dir,
    the native snapshotter, pods on the sandbox's CNI config; cdi: CDI on
    (containerd 1.7; 1.6 has no such keys)."""
    cdi_keys = ('  enable_cdi = true\n  cdi_spec_dirs = ["/etc/cdi", "/var/run/cdi"]\n'
                if cdi else "")
    return f"""version = 2
root = "{run_dir}/containerd/root"
state = "{run_dir}/containerd/state"
[grpc]
  address = "{sock}"
[ttrpc]
  address = "{sock}.ttrpc"
[plugins."io.containerd.grpc.v1.cri"]
  sandbox_image = "{pause_image}"
  restrict_oom_score_adj = true
{cdi_keys}[plugins."io.containerd.grpc.v1.cri".containerd]
  snapshotter = "native"
[plugins."io.containerd.grpc.v1.cri".cni]
  bin_dir = "{CNI_BIN}"
  conf_dir = "/etc/cni/net.d"
"""


def read_bins(text):
    """fetch-k8s.sh's NAME=PATH lines as a dict."""
    return dict(line.split("=", 1) for line in text.splitlines() if "=" in line)


class PKI:
    """One CA and the certificates of the cluster, made with openssl."""

    def __init__(self, folder):
        self.dir = pathlib.Path(folder)
        self.dir.mkdir(parents=True, exist_ok=True)
        self.ca = self.dir / "ca.crt"
        self.ca_key = self.dir / "ca.key"
        self._openssl("req", "-x509", "-newkey", "rsa:2048", "-nodes", "-keyout", self.ca_key,
                      "-out", self.ca, "-days", "2", "-subj", "/CN=gpulet-e2e-ca")

    def _openssl(self, *args):
        r = subprocess.run(["openssl", *map(str, args)], capture_output=True, text=True)
        assert r.returncode == 0, f"openssl {args[0]}: {r.stderr[-2000:]}"

    def cert(self, name, cn, org=None, sans=(), server=False):
        """(certificate, key) paths signed by the CA."""
        key, csr, crt = (self.dir / f"{name}.{e}" for e in ("key", "csr", "crt"))
        subj = f"/CN={cn}" + (f"/O={org}" if org else "")
        self._openssl("req", "-newkey", "rsa:2048", "-nodes", "-keyout", key, "-out", csr,
                      "-subj", subj)
        ext = self.dir / f"{name}.ext"
        usage = "serverAuth" if server else "clientAuth"
        lines = ["basicConstraints=CA:FALSE", "keyUsage=digitalSignature,keyEncipherment",
                 f"extendedKeyUsage={usage}"]
        if sans:
            lines.append("subjectAltName=" + ",".join(
                (f"IP:{s}" if s[0].isdigit() else f"DNS:{s}") for s in sans))
        ext.write_text("\n".join(lines) + "\n")
        self._openssl("x509", "-req", "-in", csr, "-CA", self.ca, "-CAkey", self.ca_key,
                      "-CAcreateserial", "-out", crt, "-days", "2", "-extfile", ext)
        return crt, key

    def kubeconfig(self, name, cn, org=None):
        crt, key = self.cert(name, cn, org)
        path = self.dir / f"{name}.kubeconfig"
        path.write_text(yaml.safe_dump({
            "apiVersion": "v1", "kind": "Config", "current-context": "e2e",
            "clusters": [{"name": "e2e", "cluster": {"server": APISERVER,
                                                      "certificate-authority": str(self.ca)}}],
            "users": [{"name": name, "user": {"client-certificate": str(crt),
                                              "client-key": str(key)}}],
            "contexts": [{"name": "e2e", "context": {"cluster": "e2e", "user": name}}]}))
        return path


class Cluster:
    def __init__(self, run_dir, bins, feature_gates=None, runtime_config=None,
                 kubelet_config=None, containerd_extra="", node_name=NODE_NAME):
        """bins: NAME -> path (kubelet, kube-apiserver, kube-controller-manager,
        kube-scheduler, kubectl, etcd, containerd, containerd-shim-runc-v2).
        kubelet_config: keys merged into the KubeletConfiguration.
        containerd_extra: TOML appended to containerd's config."""
        self.dir = pathlib.Path(run_dir)
        self.bins = bins
        self.gates = parse_gates(os.environ.get("GPULET_E2E_FEATURE_GATES"))
        self.gates.update(feature_gates or {})
        self.runtime_config = runtime_config or os.environ.get("GPULET_E2E_RUNTIME_CONFIG", "")
        self.kubelet_extra = kubelet_config or {}
        self.containerd_extra = containerd_extra
        self.node_name = node_name
        self.sandbox = Sandbox(self.dir, [node_name])
        self.sock = self.dir / "containerd.sock"
        self.containerd_config = self.dir / "containerd" / "config.toml"
        self.manifests = self.dir / "manifests"
        self.kubelet_starts = 0
        self.kubelet_log = None
        self.timings = {}

    # ---- helpers ----
    def gate_flag(self):
        return ["--feature-gates=" + ",".join(f"{k}={str(v).lower()}" for k, v in
                                              sorted(self.gates.items()))] if self.gates else []

    def kubectl(self, *args, check=True, timeout=60, input=None):
        # its discovery cache in the run folder, not in $HOME/.kube
        r = self.sandbox.run([self.bins["kubectl"], "--kubeconfig", self.admin_kubeconfig,
                              "--cache-dir", self.dir / "kubectl-cache", *map(str, args)], capture_output=True, text=True, timeout=timeout,
                             input=input)
        if check and r.returncode != 0:
            raise AssertionError(f"kubectl {' '.join(map(str, args))}: {r.stderr[-2000:]}")
        return r

    def kubectl_json(self, *args, check=True):
        r = self.kubectl(*args, "-o", "json", check=check)
        return json.loads(r.stdout) if r.returncode == 0 else None

    def apply(self, obj):
        self.kubectl("apply", "-f", "-", input=json.dumps(obj))

    def ctr(self, *args, check=True, timeout=60):
        # inside: ctr makes its exec fifos under the private /run/containerd
        ctr = pathlib.Path(self.bins["containerd"]).with_name("ctr")
        return self.sandbox.run([ctr, "--address", self.sock, "-n", "k8s.io", *args],
                                capture_output=True, text=True, check=check, timeout=timeout)

    def log(self, name):
        return (self.dir / f"{name}.log").read_text(errors="replace")

    def _spawn(self, name, argv, env=None):
        self.sandbox.spawn(name, argv, self.dir / f"{name}.log", env=env)

    def _alive_or_fail(self, name, log=None):
        if not self.sandbox.alive(name):
            text = (log or self.dir / f"{name}.log").read_text(errors="replace")[-3000:]
            raise AssertionError(f"{name} exited:\n{text}")

    # ---- the control plane ----
    def start_control_plane(self):
        t0 = time.monotonic()
        pki = self.pki = PKI(self.dir / "pki")
        api_crt, api_key = pki.cert("apiserver", "kube-apiserver", server=True, sans=(
            "kubernetes", "kubernetes.default", "kubernetes.default.svc",
            "kubernetes.default.svc.cluster.local", "127.0.0.1", NODE_IP, SERVICE_IP))
        kc_crt, kc_key = pki.cert("apiserver-kubelet", "kube-apiserver-kubelet-client",
                                  org="system:masters")
        sa_key = self.dir / "pki" / "sa.key"
        sa_pub = self.dir / "pki" / "sa.pub"
        pki._openssl("genrsa", "-out", sa_key, "2048")
        pki._openssl("rsa", "-in", sa_key, "-pubout", "-out", sa_pub)
        self.admin_kubeconfig = pki.kubeconfig("admin", "gpulet-e2e-admin", "system:masters")
        cm_kubeconfig = pki.kubeconfig("controller-manager", "system:kube-controller-manager")
        sched_kubeconfig = pki.kubeconfig("scheduler", "system:kube-scheduler")
        self.kubelet_kubeconfig = pki.kubeconfig("kubelet", f"system:node:{self.node_name}",
                                                 "system:nodes")
        self.kubelet_tls = pki.cert("kubelet-serving", self.node_name, server=True,
                                    sans=(self.node_name, NODE_IP, "127.0.0.1"))
        self.timings["pki"] = time.monotonic() - t0

        self._spawn("etcd", [self.bins["etcd"], "--data-dir", self.dir / "etcd",
                             "--listen-client-urls", ETCD, "--advertise-client-urls", ETCD,
                             "--listen-peer-urls", "http://127.0.0.1:2380",
                             "--unsafe-no-fsync"])
        runtime = ["--runtime-config", self.runtime_config] if self.runtime_config else []
        self._spawn("kube-apiserver", [
            self.bins["kube-apiserver"], "--etcd-servers", ETCD,
            "--authorization-mode=Node,RBAC", "--enable-admission-plugins=NodeRestriction",
            f"--service-cluster-ip-range={SERVICE_RANGE}", f"--advertise-address={NODE_IP}",
            "--bind-address=0.0.0.0", "--secure-port=6443", "--client-ca-file", pki.ca,
            "--tls-cert-file", api_crt, "--tls-private-key-file", api_key,
            "--kubelet-client-certificate", kc_crt, "--kubelet-client-key", kc_key,
            "--kubelet-certificate-authority", pki.ca,
            "--kubelet-preferred-address-types=InternalIP",  # no DNS in the sandbox
            "--service-account-key-file", sa_pub, "--service-account-signing-key-file", sa_key,
            "--service-account-issuer", "https://kubernetes.default.svc",
            *self.gate_flag(), *runtime])
        wait_for("the API server to answer /readyz", lambda: self._ready_api()
                 or not self.sandbox.alive("kube-apiserver"), 90, 0.2)
        self._alive_or_fail("kube-apiserver")
        self.timings["apiserver ready"] = time.monotonic() - t0
        self._spawn("kube-controller-manager", [
            self.bins["kube-controller-manager"], "--kubeconfig", cm_kubeconfig,
            "--authentication-kubeconfig", cm_kubeconfig,
            "--authorization-kubeconfig", cm_kubeconfig,
            "--use-service-account-credentials", "--leader-elect=false",
            "--service-account-private-key-file", sa_key, "--root-ca-file", pki.ca,
            "--bind-address=127.0.0.1", *self.gate_flag()])
        self._spawn("kube-scheduler", [
            self.bins["kube-scheduler"], "--kubeconfig", sched_kubeconfig,
            "--authentication-kubeconfig", sched_kubeconfig,
            "--authorization-kubeconfig", sched_kubeconfig,
            "--leader-elect=false", "--bind-address=127.0.0.1", *self.gate_flag()])

    def _ready_api(self):
        r = self.kubectl("get", "--raw", "/readyz", check=False, timeout=10)
        return r.returncode == 0 and r.stdout.strip() == "ok"

    # ---- containerd ----
    def write_containerd_config(self):
        conf = self.containerd_config
        conf.parent.mkdir(parents=True, exist_ok=True)
        net = self.sandbox.outside("/etc/cni/net.d")
        (net / "10-gpulet-e2e.conflist").write_text(json.dumps({
            "cniVersion": "1.0.0", "name": "gpulet-e2e", "plugins": [
                {"type": "bridge", "bridge": "cni0", "isGateway": True, "ipMasq": False,
                 "ipam": {"type": "host-local", "ranges": [[{"subnet": POD_RANGE}]],
                          "routes": [{"dst": "0.0.0.0/0"}]}},
                {"type": "loopback"}]}))
        conf.write_text(containerd_toml(self.dir, self.sock, self.pause_image, cdi=True)
                        + self.containerd_extra)
        return conf

    def start_containerd(self, env=None):
        """containerd 1.7 with the config written (write_containerd_config,
        then whatever the caller adds to it)."""
        shim_dir = str(pathlib.Path(self.bins["containerd-shim-runc-v2"]).parent)
        env = dict(env or os.environ)
        env["PATH"] = shim_dir + ":" + env.get("PATH", "/usr/sbin:/usr/bin:/sbin:/bin")
        self._spawn("containerd", [self.bins["containerd"], "--config", self.containerd_config],
                    env=env)
        wait_for("containerd's socket", lambda: self.ctr("version", check=False).returncode == 0
                 or not self.sandbox.alive("containerd"), 30, 0.05)
        self._alive_or_fail("containerd")

    # ---- the kubelet ----
    def kubelet_config(self):
        crt, key = self.kubelet_tls
        conf = {
            "apiVersion": "kubelet.config.k8s.io/v1beta1", "kind": "KubeletConfiguration",
            "containerRuntimeEndpoint": f"unix://{self.sock}",
            "staticPodPath": str(self.manifests), "fileCheckFrequency": "1s",
            "cgroupDriver": "cgroupfs", "cgroupRoot": self.sandbox.cgroup_root,
            "failSwapOn": False, "podLogsDir": "/var/log/pods",
            "authentication": {"anonymous": {"enabled": False}, "webhook": {"enabled": True},
                               "x509": {"clientCAFile": str(self.pki.ca)}},
            "authorization": {"mode": "Webhook"},
            "tlsCertFile": str(crt), "tlsPrivateKeyFile": str(key),
            "address": "0.0.0.0", "readOnlyPort": 10255,  # the sandbox's addresses only
            "healthzBindAddress": "127.0.0.1", "healthzPort": 10248,
            "nodeStatusUpdateFrequency": "1s", "nodeStatusReportFrequency": "1s",
            "syncFrequency": "5s",
            "evictionHard": {"memory.available": "1Mi", "nodefs.available": "1%",
                             "imagefs.available": "1%", "nodefs.inodesFree": "1%"},
            "featureGates": dict(self.gates),
        }
        conf.update(self.kubelet_extra)
        path = self.dir / "kubelet-config.yaml"
        path.write_text(yaml.safe_dump(conf))
        return path

    def start_kubelet(self, verbosity=4):
        self.manifests.mkdir(exist_ok=True)
        self.kubelet_starts += 1
        self.kubelet_log = self.dir / f"kubelet-{self.kubelet_starts}.log"
        self.sandbox.spawn("kubelet", [self.bins["kubelet"], "--config", self.kubelet_config(),
                                       "--kubeconfig", self.kubelet_kubeconfig,
                                       f"--hostname-override={self.node_name}",
                                       f"--node-ip={NODE_IP}", f"--v={verbosity}"],
                           self.kubelet_log)
        wait_for("the kubelet's registration socket", lambda: self.sandbox.outside(
            KUBELET_ROOT / "device-plugins/kubelet.sock").exists()
            or not self.sandbox.alive("kubelet"), 60, 0.02)
        self._alive_or_fail("kubelet", self.kubelet_log)

    def stop_kubelet(self):
        self.sandbox.stop_process("kubelet")

    def node(self):
        return self.kubectl_json("get", "node", self.node_name, check=False)

    def node_ready(self):
        n = self.node()
        return bool(n) and any(c["type"] == "Ready" and c["status"] == "True"
                               for c in n["status"].get("conditions", []))

    def wait_ready(self, timeout=90):
        wait_for(f"node {self.node_name} Ready", lambda: self.node_ready()
                 or not self.sandbox.alive("kubelet"), timeout, 0.5)
        self._alive_or_fail("kubelet", self.kubelet_log)
        # pods need the namespace's default service account
        wait_for("the default service account", lambda: self.kubectl(
            "get", "serviceaccount", "default", check=False).returncode == 0, 60, 0.5)

    # ---- the whole ----
    def start(self, pause_image, images=(), before_kubelet=None):
        """Sandbox, control plane, containerd (images imported), kubelet,
        node Ready. before_kubelet(cluster): a hook after containerd."""
        self.pause_image = pause_image
        self.sandbox.start()
        self.start_control_plane()
        self.write_containerd_config()
        self.start_containerd()
        for tarball in images:
            self.ctr("images", "import", "--snapshotter", "native", tarball)
        if before_kubelet:
            before_kubelet(self)
        self.start_kubelet()
        self.wait_ready()

    def stop(self, first=()):
        """Processes named in first, then the kubelet, containerd and the
        control plane, then everything else of the run by PID."""
        self.sandbox.stop(order=[*first, "kubelet", "containerd", "kube-scheduler",
                                 "kube-controller-manager", "kube-apiserver", "etcd"])


@contextlib.contextmanager
def running(cache, pause_image, images=(), keep=False, **kw):
    """A started Cluster (kw: Cluster's arguments) in a new run folder under
    /tmp, the binaries from tests/e2e/fetch-k8s.sh CACHE; stopped and its
    folder removed (unless keep) however the block ends."""
    r = subprocess.run([pathlib.Path(__file__).with_name("fetch-k8s.sh"), cache],
                       capture_output=True, text=True)
    if r.returncode != 0:
        raise AssertionError(f"fetch-k8s.sh: {r.stderr.strip()[-2000:]}")
    c = Cluster(tempfile.mkdtemp(prefix="gpulet-e2e-"), read_bins(r.stdout), **kw)
    try:
        c.start(pause_image, images)
        yield c
    finally:
        c.stop()
        if not keep:
            shutil.rmtree(c.dir, ignore_errors=True)
