"""Scrape latency and memory of gpulet's /metrics on simulated 8-GPU nodes.

    /usr/bin/python3 bench/metrics_bench.py [BUILD_DIR] [SCRAPES]

Starts `gpulet run --no-device-plugin` per node, scrapes it SCRAPES times
one after another, and prints p50 / p99 latency, the response size, the
sampler's own duration and the daemon's resident memory.
"""
import http.client
import os
import pathlib
import re
import signal
import statistics
import subprocess
import sys
import tempfile
import time


def rss_kib(pid):
    for line in open(f"/proc/{pid}/status"):
        if line.startswith("VmRSS:"):
            return int(line.split()[1])
    return 0


def main():
    build = pathlib.Path(sys.argv[1] if len(sys.argv) > 1 else "build").resolve()
    scrapes = int(sys.argv[2]) if len(sys.argv) > 2 else 1000
    tmp = pathlib.Path(tempfile.mkdtemp(prefix="gpulet-metrics-bench-"))
    print(f"{'node':<10} {'scrapes':>7} {'p50 µs':>8} {'p99 µs':>8} {'KiB/scrape':>10} "
          f"{'sample ms':>9} {'RSS MiB':>8}")
    for node in ("dgx-a100", "h100-sxm", "a100-mig"):
        log = tmp / f"{node}.log"
        env = {k: v for k, v in os.environ.items() if not k.startswith("GPULET_SIM")}
        proc = subprocess.Popen([str(build / "gpulet"), "--simulate", node, "run",
                                 "--no-device-plugin", "--no-labels", "--no-pod-labels",
                                 "--metrics-address", "127.0.0.1:0", "--collect-interval", "1000"],
                                env=env, stderr=open(log, "w"))
        try:
            deadline = time.monotonic() + 10
            port = None
            while port is None and time.monotonic() < deadline:
                m = re.search(r'msg="serving metrics".* port=(\d+)', log.read_text())
                port = int(m.group(1)) if m else None
                time.sleep(0.02)
            conn = http.client.HTTPConnection("127.0.0.1", port, timeout=10)
            body = b""
            while b"DCGM_FI_DEV_GPU_TEMP" not in body:
                conn.request("GET", "/metrics")
                body = conn.getresponse().read()
            times = []
            for _ in range(scrapes):
                start = time.perf_counter()
                conn.request("GET", "/metrics")
                body = conn.getresponse().read()
                times.append((time.perf_counter() - start) * 1e6)
            times.sort()
            sample = float(re.search(rb"gpulet_sample_duration_seconds ([0-9.e-]+)", body).group(1))
            print(f"{node:<10} {scrapes:>7} {statistics.median(times):>8.0f} "
                  f"{times[len(times) * 99 // 100]:>8.0f} {len(body) / 1024:>10.1f} "
                  f"{sample * 1000:>9.2f} {rss_kib(proc.pid) / 1024:>8.1f}")
        finally:
            proc.send_signal(signal.SIGTERM)
            proc.wait(timeout=10)


if __name__ == "__main__":
    main()
