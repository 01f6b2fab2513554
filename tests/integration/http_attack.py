"""Hostile clients of the metrics port, and a gpulet with the device plugin
and metrics on to aim them at; shared by test_metrics_hostile.py and
bench/metrics_attack.py."""
import http.client
import os
import re
import resource
import signal
import socket
import subprocess
import threading
import time

from kubelet import Kubelet, load_protos, wait_for


def cpu_seconds(pid):
    fields = open(f"/proc/{pid}/stat").read().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def rss_mib(pid):
    for line in open(f"/proc/{pid}/status"):
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) / 1024
    return 0.0


def open_fds(pid):
    return len(os.listdir(f"/proc/{pid}/fd"))


def raise_own_fd_limit():
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    resource.setrlimit(resource.RLIMIT_NOFILE, (hard, hard))


class SlowClients:
    """n connections that each send a request head one byte per second."""

    HEAD = b"GET /metrics HTTP/1.1\r\nHost: x\r\n" + b"X-Slow: " + b"a" * 4000 + b"\r\n\r\n"

    def __init__(self, port, n):
        self.socks = []
        for _ in range(n):
            s = socket.socket()
            s.setblocking(False)
            s.connect_ex(("127.0.0.1", port))
            self.socks.append(s)
        self.sent = 0
        self.stop_event = threading.Event()
        self.thread = threading.Thread(target=self._run, daemon=True)
        self.thread.start()

    def _run(self):
        while not self.stop_event.is_set():
            byte = self.HEAD[self.sent % len(self.HEAD):][:1]
            for s in self.socks:
                try:
                    s.send(byte)
                except OSError:
                    pass
            self.sent += 1
            self.stop_event.wait(1.0)

    def close(self):
        self.stop_event.set()
        self.thread.join()
        for s in self.socks:
            s.close()


class Flood:
    """Connections opened and dropped as fast as one thread can."""

    def __init__(self, port):
        self.port = port
        self.count = 0
        self.stop_event = threading.Event()
        self.thread = threading.Thread(target=self._run, daemon=True)
        self.thread.start()

    def _run(self):
        while not self.stop_event.is_set():
            s = socket.socket()
            s.setblocking(False)
            s.connect_ex(("127.0.0.1", self.port))
            s.close()
            self.count += 1

    def close(self):
        self.stop_event.set()
        self.thread.join()


class Node:
    """gpulet run with the device plugin (registered with the Python
    kubelet) and metrics on 127.0.0.1."""

    def __init__(self, build, tmp, node="dgx-a100", env=None):
        self.dp, self.dp_grpc = load_protos(tmp / "dp-protos")
        self.kubelet = Kubelet(tmp / "dp", self.dp, self.dp_grpc)
        self.log = tmp / "gpulet.log"
        full_env = {k: v for k, v in os.environ.items() if not k.startswith("GPULET_SIM")}
        full_env.update(env or {})
        self.proc = subprocess.Popen(
            [str(build / "gpulet"), "--simulate", node, "run", "--device-plugin-dir",
             str(tmp / "dp"), "--no-labels", "--no-pod-labels", "--collect-interval", "1000",
             "--metrics-address", "127.0.0.1:0"], env=full_env, stderr=open(self.log, "w"))
        m = wait_for(lambda: re.search(r'msg="serving metrics".* port=(\d+) .*max_connections=(\d+)',
                                       self.text()), what="the metrics port")
        self.port, self.max_connections = int(m.group(1)), int(m.group(2))
        wait_for(self.healthy, what="the first complete sample")
        self.res = self.kubelet.resource("nvidia.com/gpu")
        self.ids = sorted(self.kubelet.devices("nvidia.com/gpu"))

    def text(self):
        return self.log.read_text()

    def healthy(self):
        c = http.client.HTTPConnection("127.0.0.1", self.port, timeout=10)
        c.request("GET", "/health")
        status = c.getresponse().status
        c.close()
        return status == 200

    def call_ms(self):
        """One Allocate and one GetPreferredAllocation; the slower, in ms."""
        worst = 0.0
        for call in (lambda: self.kubelet.allocate("nvidia.com/gpu", self.ids[:2], timeout=5),
                     lambda: self.kubelet.preferred("nvidia.com/gpu", self.ids, [], 4, timeout=5)):
            start = time.perf_counter()
            call()
            worst = max(worst, (time.perf_counter() - start) * 1000)
        return worst

    def stop(self):
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
        code = self.proc.wait(timeout=15)
        self.kubelet.stop()
        return code
