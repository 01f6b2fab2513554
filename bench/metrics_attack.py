"""Kubelet call latency while /metrics is under attack.

    /usr/bin/python3 bench/metrics_attack.py [BUILD_DIR] [CALLS]

Starts `gpulet run` on a simulated DGX A100 with the device plugin
(registered with the Python kubelet of tests/integration) and metrics, and
times Allocate + GetPreferredAllocation (the slower of the pair per round)
idle, with 1,000 slow clients holding the metrics port (1 byte/s each),
and with a connection flood on top. Prints p50 / p99 / max side by side,
the ratio to idle, the daemon's CPU share and resident memory.
"""
import pathlib
import statistics
import sys
import tempfile
import time

sys.path.insert(0, str(pathlib.Path(__file__).resolve().parents[1] / "tests" / "integration"))
from http_attack import (Flood, Node, SlowClients, cpu_seconds, open_fds,  # noqa: E402
                         raise_own_fd_limit, rss_mib, wait_for)


def measure(node, calls):
    cpu0, t0 = cpu_seconds(node.proc.pid), time.monotonic()
    times = sorted(node.call_ms() for _ in range(calls))
    cpu = (cpu_seconds(node.proc.pid) - cpu0) / (time.monotonic() - t0)
    return times, cpu, rss_mib(node.proc.pid)


def main():
    build = pathlib.Path(sys.argv[1] if len(sys.argv) > 1 else "build").resolve()
    calls = int(sys.argv[2]) if len(sys.argv) > 2 else 300
    raise_own_fd_limit()
    node = Node(build, pathlib.Path(tempfile.mkdtemp(prefix="gpulet-attack-bench-")))
    rows = []
    try:
        rows.append(("idle",) + measure(node, calls))
        slow = SlowClients(node.port, 1000)
        # Time only once the clients hold the port up to its cap.
        wait_for(lambda: open_fds(node.proc.pid) >= node.max_connections,
                 what="the slow clients connected")
        rows.append(("1000 slow clients",) + measure(node, calls))
        flood = Flood(node.port)
        rows.append(("slow + flood",) + measure(node, calls))
        flood.close()
        slow.close()
    finally:
        node.stop()
    idle = rows[0][1]
    p50_0, p99_0 = statistics.median(idle), idle[len(idle) * 99 // 100]
    print(f"{'metrics port':<18} {'calls':>5} {'p50 ms':>7} {'p99 ms':>7} {'max ms':>7} "
          f"{'p50 x':>6} {'p99 x':>6} {'CPU':>5} {'RSS MiB':>8}")
    for name, times, cpu, rss in rows:
        p50, p99 = statistics.median(times), times[len(times) * 99 // 100]
        print(f"{name:<18} {len(times):>5} {p50:>7.2f} {p99:>7.2f} {times[-1]:>7.2f} "
              f"{p50 / p50_0:>6.2f} {p99 / p99_0:>6.2f} {cpu:>5.0%} {rss:>8.1f}")
    print(f"flood: {flood.count} connections opened and dropped; "
          f"max_connections={node.max_connections}")


if __name__ == "__main__":
    main()
