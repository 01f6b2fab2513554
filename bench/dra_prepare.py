"""NodePrepareResources latency of gpulet's DRA driver, the claim read from
an API server over TLS included, and gpulet's RSS with DRA on and off.

The per-claim CDI specs go to a tmpfs (/dev/shm), as /var/run/cdi is
one on a node; the checkpoint to the state folder on disk. The API
server is the tests' (tests/integration/apiserver.py: Python,
TLS with client certificates, one thread per connection), so the figures
include its own latency; the client is grpcio as the kubelet's grpc-go
would be. Each round prepares a new claim (a GET, the CDI spec written and
fsync'ed, the checkpoint written and fsync'ed) and unprepares it.

    /usr/bin/python3 bench/dra_prepare.py [BUILD_DIR] [ROUNDS]
"""
import os
import pathlib
import shutil
import signal
import statistics
import subprocess
import sys
import tempfile
import time

ROOT = pathlib.Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "tests" / "integration"))
sys.path.insert(0, str(ROOT / "bench"))

import grpc  # noqa: E402

from apiserver import ApiServer, make_certs  # noqa: E402
from runtime_create import fake_driver_root  # noqa: E402
from test_dra import kubeconfig, load_dra_protos  # noqa: E402

NODE = "node1"


def rss_kib(pid):
    """(RSS, its anonymous part) in KiB: the rest is file-backed, the
    libraries' code and read-only data, clean pages the kernel can drop."""
    fields = {}
    for line in pathlib.Path(f"/proc/{pid}/smaps_rollup").read_text().splitlines()[1:]:
        key, _, value = line.partition(":")
        fields[key] = int(value.split()[0])
    return fields["Rss"], fields["Anonymous"]


def wait_for(cond, timeout=20):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if cond():
            return
        time.sleep(0.01)
    raise SystemExit("timed out")


def cdi_dir(tmp):
    """/var/run/cdi is a tmpfs on a node: the specs go to one here too."""
    shm = pathlib.Path("/dev/shm")
    return (shm if shm.is_dir() else tmp) / f"gpulet-bench-cdi-{os.getpid()}"


def start(build, tmp, sim, kc, dra):
    kubelet = pathlib.Path(tempfile.mkdtemp(prefix="kl", dir="/tmp"))
    args = [str(build / "gpulet"), *(["--log-level", "debug"] if os.environ.get("DEBUG") else []), "--simulate", sim, "--driver-root", str(tmp / "driver"), "run",
            "--no-device-plugin", "--no-labels",
            "--no-metrics", "--state-dir", str(tmp / "state"), "--cdi-dir", str(cdi_dir(tmp))]
    if dra:
        args += ["--dra", "--kubelet-root", str(kubelet), "--node-name", NODE, "--kubeconfig",
                 str(kc)]
    env = {k: v for k, v in os.environ.items() if not k.startswith("GPULET_SIM")}
    proc = subprocess.Popen(args, env=env, stdout=subprocess.DEVNULL, stderr=open(os.environ.get("DEBUG", os.devnull), "a"))
    return proc, kubelet


def measure(build, tmp, api, kc, protos, sim, devices, rounds):
    _, dra = protos
    proc, kubelet = start(build, tmp, sim, kc, True)
    sock = kubelet / "plugins/gpu.nvidia.com/dra.sock"
    try:
        wait_for(lambda: (kubelet / "plugins_registry/gpu.nvidia.com-reg.sock").exists())
        wait_for(lambda: api.slices)
        times = []
        with grpc.insecure_channel(f"unix:{sock}") as ch:
            prep = ch.unary_unary("/k8s.io.kubelet.pkg.apis.dra.v1.DRAPlugin/NodePrepareResources",
                                  request_serializer=lambda m: m.SerializeToString(),
                                  response_deserializer=dra.NodePrepareResourcesResponse.FromString)
            unprep = ch.unary_unary(
                "/k8s.io.kubelet.pkg.apis.dra.v1.DRAPlugin/NodeUnprepareResources",
                request_serializer=lambda m: m.SerializeToString(),
                response_deserializer=dra.NodeUnprepareResourcesResponse.FromString)
            for i in range(rounds + 5):
                name = f"c{i}"
                uid = api.put_claim("default", name, [devices[i % len(devices)]])
                claim = dra.Claim(namespace="default", name=name, uid=uid)
                t0 = time.perf_counter()
                r = prep(dra.NodePrepareResourcesRequest(claims=[claim]), timeout=30)
                t1 = time.perf_counter()
                assert r.claims[uid].error == "", r.claims[uid].error
                unprep(dra.NodeUnprepareResourcesRequest(claims=[claim]), timeout=30)
                if i >= 5:  # warm-up: the first TLS handshake, page cache
                    times.append((t1 - t0) * 1000)
        rss = rss_kib(proc.pid)
    finally:
        proc.send_signal(signal.SIGTERM)
        proc.wait(timeout=15)
        shutil.rmtree(kubelet, ignore_errors=True)
        api.slices.clear()
    times.sort()
    return times, rss


def main():
    build = pathlib.Path(sys.argv[1] if len(sys.argv) > 1 else ROOT / "build").resolve()
    rounds = int(sys.argv[2]) if len(sys.argv) > 2 else 200
    with tempfile.TemporaryDirectory() as d:
        tmp = pathlib.Path(d)
        (tmp / "certs").mkdir()
        make_certs(tmp / "certs")
        fake_driver_root(tmp / "driver")
        api = ApiServer(tmp / "certs", node=NODE)
        kc = kubeconfig(tmp / "kubeconfig", api, tmp / "certs")
        protos = load_dra_protos(tmp / "protos")
        try:
            rss_on = None
            for sim, devices, what in (("dgx-a100", [f"gpu-{i}" for i in range(8)], "GPU claim"),
                                       ("a100-mig", ["gpu-0-mig-1g5gb-19-0"], "MIG claim")):
                times, rss = measure(build, tmp, api, kc, protos, sim, devices, rounds)
                rss_on = rss_on or rss
                p50 = statistics.median(times)
                p99 = times[min(len(times) - 1, int(len(times) * 0.99))]
                print(f"NodePrepareResources, {what} ({sim}), {len(times)} rounds: "
                      f"p50 {p50:.2f} ms, p99 {p99:.2f} ms (claim GET over TLS included)")
            proc, kubelet = start(build, tmp, "dgx-a100", kc, False)
            time.sleep(2)  # nothing to wait for: no socket, no API server
            off = rss_kib(proc.pid)
            proc.send_signal(signal.SIGTERM)
            proc.wait(timeout=15)
            shutil.rmtree(kubelet, ignore_errors=True)
            anon = rss_on[1] - off[1]
            print(f"gpulet RSS (dgx-a100, device plugin off): DRA off {off[0]} KiB, DRA on after "
                  f"{rounds} claims {rss_on[0]} KiB (+{rss_on[0] - off[0]} KiB: anonymous "
                  f"{anon:+d} KiB, file-backed {rss_on[0] - off[0] - anon:+d} KiB)")
        finally:
            api.close()
            shutil.rmtree(cdi_dir(tmp), ignore_errors=True)


if __name__ == "__main__":
    main()
