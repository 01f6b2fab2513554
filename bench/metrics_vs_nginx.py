"""gpulet's /metrics against nginx serving the very same bytes, with wrk.

    /usr/bin/python3 bench/metrics_vs_nginx.py [BUILD_DIR] [SECONDS] [ROUNDS]

Starts `gpulet run --no-device-plugin` on the simulated DGX A100 (the
default field set, a 30 s interval so every scrape shows one sample),
saves one scrape's body, and starts Debian's nginx (one worker: gpulet
serves from one event loop; sendfile on, keep-alive without a request
limit, no access log) serving that file. Then, in one run, wrk at 1, 16
and 64 connections for SECONDS against each, alternating ROUNDS times,
keeping each figure's best round, for both sides alike. Prints
requests/s, p50 and p99 of both, the ratios, and gpulet's resident
memory idle, at most under load (read from /proc every 50 ms) and after. Exits 1 when a goal is missed: at
least half of nginx's throughput and a p99 within 2x of nginx's at every
concurrency, at most 8 MiB resident under load, and back within 1 MiB of
idle after.
"""
import os
import pathlib
import re
import shutil
import signal
import subprocess
import sys
import tempfile
import threading
import time
import urllib.request

UNITS = {"us": 1e-3, "ms": 1.0, "s": 1e3}


def rss_kib(pid):
    for line in open(f"/proc/{pid}/status"):
        if line.startswith("VmRSS:"):
            return int(line.split()[1])
    return 0


def wait_port(url, timeout=10):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        try:
            with urllib.request.urlopen(url, timeout=2) as r:
                if r.status == 200:
                    return r.read()
        except OSError:
            pass
        time.sleep(0.02)
    raise SystemExit(f"{url} did not answer")


def wrk(url, connections, seconds):
    """requests/s, p50 ms, p99 ms."""
    threads = 1 if connections == 1 else 2
    out = subprocess.run(["wrk", f"-t{threads}", f"-c{connections}", f"-d{seconds}s",
                          "--latency", url], capture_output=True, text=True, check=True).stdout
    rps = float(re.search(r"Requests/sec:\s+([0-9.]+)", out).group(1))
    pct = {}
    for p in ("50", "99"):
        m = re.search(rf"^\s+{p}%\s+([0-9.]+)(us|ms|s)\s*$", out, re.M)
        pct[p] = float(m.group(1)) * UNITS[m.group(2)]
    return rps, pct["50"], pct["99"]


def main():
    build = pathlib.Path(sys.argv[1] if len(sys.argv) > 1 else "build").resolve()
    seconds = int(sys.argv[2]) if len(sys.argv) > 2 else 5
    rounds = int(sys.argv[3]) if len(sys.argv) > 3 else 2
    for tool in ("wrk", "nginx"):
        if shutil.which(tool) is None and not os.path.exists(f"/usr/sbin/{tool}"):
            raise SystemExit(f"{tool} is missing: apt-get install wrk nginx-light")
    tmp = pathlib.Path(tempfile.mkdtemp(prefix="gpulet-vs-nginx-"))
    tmp.chmod(0o755)  # nginx's worker drops root's rights
    base = 20000 + os.getpid() % 20000
    gport, nport = base, base + 1
    env = {k: v for k, v in os.environ.items()
           if not k.startswith(("GPULET_SIM", "DCGM_", "NODE_"))}
    gpulet = subprocess.Popen([str(build / "gpulet"), "--simulate", "dgx-a100", "run",
                               "--no-device-plugin", "--no-labels", "--no-pod-labels",
                               "--collect-interval", "30000",
                               "--metrics-address", f"127.0.0.1:{gport}"],
                              env=env, stderr=open(tmp / "gpulet.log", "w"))
    (tmp / "www").mkdir()
    (tmp / "nginx.conf").write_text(f"""worker_processes 1;
daemon off;
pid {tmp}/nginx.pid;
error_log {tmp}/nginx-error.log;
events {{ worker_connections 1024; }}
http {{
    access_log off;
    sendfile on;
    keepalive_requests 100000000;
    keepalive_timeout 90s;
    server {{
        listen 127.0.0.1:{nport};
        root {tmp}/www;
        location = /metrics {{ default_type "text/plain; version=0.0.4; charset=utf-8"; }}
    }}
}}
""")
    nginx = None
    try:
        gurl = f"http://127.0.0.1:{gport}/metrics"
        wait_port(f"http://127.0.0.1:{gport}/health")
        body = wait_port(gurl)
        (tmp / "www" / "metrics").write_bytes(body)
        nginx = subprocess.Popen(["nginx", "-c", str(tmp / "nginx.conf"), "-p", str(tmp)],
                                 stderr=open(tmp / "nginx.log", "w"))
        nurl = f"http://127.0.0.1:{nport}/metrics"
        assert len(wait_port(nurl)) == len(body)
        idle = rss_kib(gpulet.pid)
        peak = [idle]
        stop = threading.Event()

        def watch():
            while not stop.wait(0.05):
                peak[0] = max(peak[0], rss_kib(gpulet.pid))

        watcher = threading.Thread(target=watch)
        watcher.start()
        best = {}
        for _ in range(rounds):
            for c in (1, 16, 64):
                for name, url in (("gpulet", gurl), ("nginx", nurl)):
                    r = wrk(url, c, seconds)
                    # each figure's best round, the same rule for both sides:
                    # a shared machine's hiccups land in some rounds only
                    b = best.get((name, c), (0.0, float("inf"), float("inf")))
                    best[(name, c)] = (max(b[0], r[0]), min(b[1], r[1]), min(b[2], r[2]))
        stop.set()
        watcher.join()
        # back near idle: what load allocated is returned
        time.sleep(1)
        after = rss_kib(gpulet.pid)
        print(f"body {len(body)} bytes; wrk {seconds} s per run, best of {rounds}")
        print(f"{'conns':>5} {'gpulet req/s':>12} {'nginx req/s':>11} {'ratio':>6} "
              f"{'gpulet p50':>10} {'nginx p50':>9} {'gpulet p99':>10} {'nginx p99':>9} "
              f"{'p99 ratio':>9}")
        ok = True
        for c in (1, 16, 64):
            g, n = best[("gpulet", c)], best[("nginx", c)]
            ratio, p99_ratio = g[0] / n[0], g[2] / n[2]
            ok = ok and ratio >= 0.5 and p99_ratio <= 2.0
            print(f"{c:>5} {g[0]:>12.0f} {n[0]:>11.0f} {ratio:>6.2f} {g[1]:>8.3f}ms "
                  f"{n[1]:>7.3f}ms {g[2]:>8.3f}ms {n[2]:>7.3f}ms {p99_ratio:>9.2f}")
        print(f"gpulet RSS: idle {idle / 1024:.1f} MiB, under load at most "
              f"{peak[0] / 1024:.1f} MiB, after {after / 1024:.1f} MiB")
        ok = ok and peak[0] <= 8 * 1024 and after <= idle + 1024
        print("goals met" if ok else "GOALS MISSED")
        return 0 if ok else 1
    finally:
        if nginx:
            nginx.send_signal(signal.SIGQUIT)
            nginx.wait(timeout=10)
        gpulet.terminate()
        gpulet.wait(timeout=10)


if __name__ == "__main__":
    sys.exit(main())
