"""The container image (`make image`, scripts/build-image.sh): built offline
FROM scratch with buildah, small, started with podman; the daemon in it
serves metrics on a read-only root; and the containerd overlay's host-setup
init containers, run as the kubelet would run them, install a bundle that
runs on the host and configure containerd to use it (podman with vfs
storage, cgroupfs and runc)."""
import os
import pathlib
import re
import shutil
import socket
import subprocess
import tempfile
import urllib.error
import urllib.request

import pytest
import yaml

from conftest import ROOT
from kubelet import Kubelet, load_protos, wait_for
from test_prometheus import free_port


def probe_status(url):
    try:
        with urllib.request.urlopen(url, timeout=5) as r:
            return r.status
    except urllib.error.HTTPError as e:
        return e.code


BUILDAH = shutil.which("buildah")
PODMAN = shutil.which("podman")
KUBECTL = shutil.which("kubectl")
pytestmark = pytest.mark.skipif(BUILDAH is None or PODMAN is None,
                                reason="buildah and podman are needed (Debian packages)")
IMAGE = "localhost/gpulet:0.1.0"
DS_METRICS_PORT = 9400  # the DaemonSet's containerPort, gpulet's default
RUN = ["run", "--rm", "--runtime", "runc", "--ulimit", "nofile=1024:1024",
       "--ulimit", "nproc=1024:1024"]


class Image:
    def __init__(self, podman, report):
        self.podman = podman
        self.report = report

    def run(self, *args, options=(), timeout=120):
        return subprocess.run([*self.podman, *RUN, *options, IMAGE, *args],
                              capture_output=True, text=True, timeout=timeout)


@pytest.fixture(scope="module")
def image():
    store = tempfile.mkdtemp(prefix="gpulet-image-")
    try:
        built = subprocess.run([str(ROOT / "scripts" / "build-image.sh"), str(ROOT / "build-image")],
                               env=dict(os.environ, GPULET_IMAGE_STORE=store),
                               capture_output=True, text=True, timeout=900)
        assert built.returncode == 0, built.stdout + built.stderr
        assert "not a dynamic executable" not in built.stdout + built.stderr  # the static hook
        podman = [PODMAN, "--root", f"{store}/storage", "--runroot", f"{store}/run",
                  "--storage-driver", "vfs", "--cgroup-manager", "cgroupfs"]
        yield Image(podman, built.stdout)
        subprocess.run([*podman, "rm", "-a", "-f"], capture_output=True, timeout=120)
        subprocess.run([*podman, "rmi", "-a", "-f"], capture_output=True, timeout=120)
    finally:
        shutil.rmtree(store, ignore_errors=True)


def test_image_is_small_and_holds_only_the_bundle(image):
    m = re.search(r"([\d.]+) MiB compressed", image.report)
    assert m, image.report
    assert float(m.group(1)) <= 20.0
    archive = ROOT / "build-image" / "gpulet.oci.tar"
    assert archive.stat().st_size <= 20 * 1024 * 1024
    root = ROOT / "build-image" / "context" / "root"
    files = [p.relative_to(root).as_posix() for p in root.rglob("*") if p.is_file()]
    assert files and all(f.startswith("usr/local/gpulet/") for f in files)
    # exactly the libraries the programs load: glibc's loader, libc, ours
    libs = {f.rsplit("/", 1)[1] for f in files if f.count("/") == 4 and "/lib/" in f}
    assert {"libc.so.6", "libjansson.so.4", "libevent-2.1.so.7",
            "libnghttp2.so.14", "libprotobuf-c.so.1", "libyaml-0.so.2"} <= libs
    assert any(name.startswith("ld-linux") for name in libs)  # glibc's loader
    assert "libgpulet-cuda.so" in libs  # where Allocate's --cuda-interposer looks
    # the DRA driver's HTTPS client: Debian's libcurl with OpenSSL
    assert {"libcurl.so.4", "libssl.so.3", "libcrypto.so.3"} <= libs
    assert not any(name.startswith("libstdc++") for name in libs)


def test_image_starts_with_podman(image):
    r = image.run("--version")
    assert r.returncode == 0, r.stderr
    assert r.stdout.strip() == "gpulet 0.1.0"
    r = image.run("--simulate", "dgx-a100", "info")
    assert r.returncode == 0, r.stderr
    assert r.stdout.count("NVIDIA A100-SXM4-80GB") == 8
    assert "simulated node: dgx-a100" in r.stdout


def test_image_installs_only_where_its_programs_can_run(image, tmp_path):
    # the programs' loader is /usr/local/gpulet/lib/ld-linux-*: a bundle put
    # anywhere else could not start, so it is refused and nothing is written
    r = image.run("runtime", "install", "--to", "/host/opt/gpulet",
                  options=["-v", f"{tmp_path}:/host"])
    assert r.returncode == 2, r.stderr
    assert "run only from the host's /usr/local/gpulet" in r.stderr
    assert os.listdir(tmp_path) == []


def test_image_without_a_driver_says_so(image):
    r = image.run("info")
    assert r.returncode == 2  # README: 2 for usage errors and no driver
    assert "libnvidia-ml.so.1" in r.stderr and "Is the NVIDIA driver installed?" in r.stderr


def test_daemon_in_the_image_serves_metrics_on_a_read_only_root(image):
    port = free_port()
    name = f"gpulet-image-test-{os.getpid()}"
    started = subprocess.run(
        [*image.podman, *RUN, "-d", "--name", name, "--read-only", "--network", "host",
         IMAGE, "--simulate", "dgx-a100", "run", "--no-device-plugin", "--no-labels",
         "--metrics-address", f"127.0.0.1:{port}", "--collect-interval", "200"],
        capture_output=True, text=True, timeout=120)
    assert started.returncode == 0, started.stderr

    def metrics():
        try:
            with urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=2) as r:
                return r.read().decode()
        except OSError:
            return None

    try:
        wait_for(lambda: metrics() and "DCGM_FI_DEV_GPU_TEMP" in metrics(), timeout=30,
                 what="metrics from the container")
        text = metrics()
        assert len(re.findall(r"^DCGM_FI_DEV_GPU_TEMP\{", text, re.M)) == 8
    finally:
        subprocess.run([*image.podman, "stop", "-t", "5", name], capture_output=True, timeout=60)


def run_on_host(bundle, script):
    """Runs script where the host's /usr/local/gpulet is bundle, in a mount
    namespace of its own, so this machine's /usr/local is not touched."""
    return subprocess.run(
        ["unshare", "--mount", "sh", "-ec",
         "mount -t tmpfs gpulet /usr/local && mkdir /usr/local/gpulet && "
         f"mount --bind {bundle} /usr/local/gpulet && {script}"],
        capture_output=True, text=True, timeout=60)


@pytest.mark.skipif(KUBECTL is None, reason="kubectl (client) is not installed")
def test_host_setup_init_containers_install_and_configure(image, tmp_path):
    rendered = subprocess.run([KUBECTL, "kustomize", str(ROOT / "deploy" / "kubernetes" /
                                                         "overlays" / "containerd")],
                              capture_output=True, text=True, timeout=60, check=True).stdout
    ds, = [d for d in yaml.safe_load_all(rendered) if d["kind"] == "DaemonSet"]
    spec = ds["spec"]["template"]["spec"]
    volumes = {v["name"]: v["hostPath"]["path"] for v in spec["volumes"] if "hostPath" in v}
    host = tmp_path / "host"
    (host / "etc" / "containerd").mkdir(parents=True)
    (host / "etc" / "containerd" / "config.toml").write_text(
        'version = 2\n[plugins."io.containerd.grpc.v1.cri"]\n  sandbox_image = "pause:3.9"\n')

    def run_init_containers():
        outputs = []
        for init in spec["initContainers"]:
            options = ["--read-only", "--cap-drop", "all"]
            for m in init["volumeMounts"]:
                source = host / volumes[m["name"]].lstrip("/")
                source.mkdir(parents=True, exist_ok=True)  # DirectoryOrCreate
                options += ["-v", f"{source}:{m['mountPath']}"]
            r = image.run(*init["args"], options=options)
            assert r.returncode == 0, (init["name"], r.stderr)
            outputs.append(r.stdout)
        return outputs

    installed, configured = run_init_containers()
    bundle = host / "usr" / "local" / "gpulet"
    assert "installed /host/usr/local/gpulet/bin/gpulet-runtime" in installed
    assert (bundle / "bin" / "gpulet-runtime").stat().st_mode & 0o111
    assert "installed /host/usr/local/gpulet/lib/libgpulet-cuda.so" in installed
    assert (bundle / "lib" / "libgpulet-cuda.so").stat().st_size > 0
    toml = "".join(p.read_text() for p in (host / "etc" / "containerd").rglob("*.toml"))
    assert '"/usr/local/gpulet/bin/gpulet-runtime"' in toml
    assert 'sandbox_image = "pause:3.9"' in toml  # nothing else lost

    # the bundle runs on the host, with its own loader and libraries
    r = run_on_host(bundle, "/usr/local/gpulet/bin/gpulet --version && "
                            "/usr/local/gpulet/bin/gpulet-runtime --version")
    assert r.returncode == 0, r.stderr
    assert "gpulet 0.1.0" in r.stdout and "runc version" in r.stdout

    # a restarted pod runs them again: nothing changes
    installed, configured = run_init_containers()
    assert "already up to date" in installed
    assert "installed " not in installed


def render_daemonset(overlay):
    rendered = subprocess.run([KUBECTL, "kustomize", str(ROOT / "deploy" / "kubernetes" / overlay)],
                              capture_output=True, text=True, timeout=60, check=True).stdout
    ds, = [d for d in yaml.safe_load_all(rendered) if d["kind"] == "DaemonSet"]
    return ds["spec"]["template"]["spec"]


def port_in_use(port):
    with socket.socket() as s:
        return s.connect_ex(("127.0.0.1", port)) == 0


@pytest.mark.skipif(KUBECTL is None, reason="kubectl (client) is not installed")
def test_daemonset_container_runs_as_the_kubelet_would_run_it(image, tmp_path):
    if port_in_use(DS_METRICS_PORT):
        pytest.skip(f"port {DS_METRICS_PORT} is taken on this machine")
    spec = render_daemonset("base")
    c, = spec["containers"]
    volumes = {v["name"]: v["hostPath"]["path"] for v in spec["volumes"]}
    # short: the kubelet's socket path must fit a sockaddr_un
    host = pathlib.Path(tempfile.mkdtemp(prefix="gpulet-ds-"))
    kubelet = Kubelet(host / "var/lib/kubelet/device-plugins",
                      *load_protos(tmp_path / "protos"))
    options = ["-d", "--name", f"gpulet-ds-test-{os.getpid()}", "--network", "host"]
    if c["securityContext"].get("readOnlyRootFilesystem"):
        options.append("--read-only")
    if c["securityContext"].get("privileged"):
        options.append("--privileged")
    for e in c["env"]:
        value = "gpu-node-1" if "valueFrom" in e else e["value"]  # spec.nodeName
        options += ["-e", f"{e['name']}={value}"]
    for m in c["volumeMounts"]:
        path = volumes[m["name"]]
        # the host's own / and /dev, as the kubelet mounts them; the kubelet's
        # and NFD's folders are this test's
        source = pathlib.Path(path) if path in ("/", "/dev") else host / path.lstrip("/")
        source.mkdir(parents=True, exist_ok=True)
        options += ["-v", f"{source}:{m['mountPath']}{':ro' if m.get('readOnly') else ''}"]
    name = options[2]
    labels = host / "etc/kubernetes/node-feature-discovery/features.d/gfd"
    try:
        # the same arguments, on a simulated DGX A100
        started = subprocess.run([*image.podman, *RUN, *options, IMAGE, "--simulate", "dgx-a100",
                                  *c["args"]], capture_output=True, text=True, timeout=120)
        assert started.returncode == 0, started.stderr
        # registered with the kubelet, through the mounted device-plugin folder
        assert len(kubelet.resource("nvidia.com/gpu", timeout=30).devices) == 8
        # the labels reach NFD's folder on the host
        wait_for(lambda: labels.exists() and "nvidia.com/gpu.count=8" in labels.read_text(),
                 timeout=30, what="the labels file")
        # the probes answer where the manifest points them
        for probe in ("livenessProbe", "readinessProbe"):
            get = c[probe]["httpGet"]
            port = {p["name"]: p["containerPort"] for p in c["ports"]}.get(get["port"], get["port"])
            assert port == DS_METRICS_PORT
            # 503 until the first complete sample, a fraction of a second after start
            wait_for(lambda: probe_status(f"http://127.0.0.1:{port}{get['path']}") == 200,
                     timeout=10, what=f"the {probe}")
    finally:
        stopped = subprocess.run([*image.podman, "stop", "-t", "10", name],
                                 capture_output=True, text=True, timeout=60)
        logs = subprocess.run([*image.podman, "logs", name], capture_output=True, text=True,
                              timeout=60)
        subprocess.run([*image.podman, "rm", "-f", name], capture_output=True, timeout=60)
        kubelet.stop()
        gone = not labels.exists()
        shutil.rmtree(host, ignore_errors=True)
    assert stopped.returncode == 0, stopped.stderr
    # SIGTERM from the engine: gpulet stops cleanly and takes its labels away
    assert gone, logs.stdout + logs.stderr
