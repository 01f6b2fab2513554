"""Time from starting gpulet to its first complete scrape.

    /usr/bin/python3 bench/first_scrape.py [BUILD_DIR] [RUNS]

Starts `gpulet run --no-device-plugin` on the simulated H100 node (GPM and
NVLink: the rate series need two samples) with the default 30 s interval,
polls /metrics every millisecond and prints, per run and as p50 / max,
the time until a scrape carries every rate series. Exits 1 if the worst
run exceeds 1.5 s.
"""
import http.client
import os
import pathlib
import re
import statistics
import subprocess
import sys
import tempfile
import time

RATES = [b"DCGM_FI_PROF_PIPE_TENSOR_ACTIVE{", b"DCGM_FI_DEV_NVLINK_BANDWIDTH_TOTAL{",
         b"nvidia_smi_pcie_throughput_tx_bytes_per_second{"]
LIMIT_S = 1.5


def scrape(port):
    try:
        conn = http.client.HTTPConnection("127.0.0.1", port, timeout=2)
        conn.request("GET", "/metrics")
        body = conn.getresponse().read()
        conn.close()
        return body
    except OSError:
        return b""


def one_run(build, tmp, port):
    env = {k: v for k, v in os.environ.items()
           if not k.startswith(("GPULET_SIM", "DCGM_", "NODE_"))}
    log = tmp / f"run-{time.monotonic_ns()}.log"
    start = time.monotonic()
    proc = subprocess.Popen([str(build / "gpulet"), "--simulate", "h100-sxm", "run",
                             "--no-device-plugin", "--no-labels", "--no-pod-labels",
                             "--metrics-schema", "dcgm,nvidia-smi",
                             "--metrics-address", f"127.0.0.1:{port}"],
                            env=env, stderr=open(log, "w"))
    try:
        while time.monotonic() - start < 10:
            body = scrape(port)
            if all(r in body for r in RATES):
                return time.monotonic() - start
            time.sleep(0.001)
        raise SystemExit(f"no complete scrape in 10 s; log: {log}")
    finally:
        proc.terminate()
        proc.wait(timeout=10)


def main():
    build = pathlib.Path(sys.argv[1] if len(sys.argv) > 1 else "build").resolve()
    runs = int(sys.argv[2]) if len(sys.argv) > 2 else 10
    tmp = pathlib.Path(tempfile.mkdtemp(prefix="gpulet-first-scrape-"))
    port = 19400 + os.getpid() % 500
    times = [one_run(build, tmp, port) for _ in range(runs)]
    print("start -> complete scrape (s): " + " ".join(f"{t:.3f}" for t in times))
    print(f"p50 {statistics.median(times):.3f} s, max {max(times):.3f} s (limit {LIMIT_S} s)")
    return 0 if max(times) <= LIMIT_S else 1


if __name__ == "__main__":
    sys.exit(main())
