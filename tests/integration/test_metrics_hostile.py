"""The metrics port under attack: slow clients, floods, descriptor
exhaustion, malformed and oversized requests, HEAD and pipelining; and the
device plugin answering the kubelet throughout."""
import os
import re
import resource
import signal
import socket
import statistics
import subprocess
import time

import pytest

from http_attack import (Flood, Node, SlowClients, cpu_seconds, open_fds, raise_own_fd_limit,
                         rss_mib)
from kubelet import load_protos, wait_for

HTTP_LOG = re.compile(r"HTTP connection limit|cannot accept HTTP|libevent")


@pytest.fixture
def node(build, tmp_path):
    n = Node(build, tmp_path)
    yield n
    assert n.stop() == 0, n.text()


def response(f):
    """The status line and headers of the next answer on f."""
    status = f.readline()
    assert status.startswith(b"HTTP/1.1 "), status
    headers = {}
    for line in iter(f.readline, b"\r\n"):
        k, v = line.decode().split(":", 1)
        headers[k.strip().lower()] = v.strip()
    return status, headers


def exchange(port, data):
    """Sends data in one write; the answer's status and headers, and what
    follows them until the server closes."""
    s = socket.create_connection(("127.0.0.1", port), timeout=10)
    s.sendall(data)
    f = s.makefile("rb")
    status, headers = response(f)
    rest = f.read()
    s.close()
    return int(status.split()[1]), headers, rest


def get(port, path="/metrics", timeout=10):
    s = socket.create_connection(("127.0.0.1", port), timeout=timeout)
    s.sendall(f"GET {path} HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n".encode())
    data = b""
    while chunk := s.recv(65536):
        data += chunk
    s.close()
    return data


def test_slow_clients_and_a_flood_leave_the_kubelet_answered(node):
    raise_own_fd_limit()
    idle = [node.call_ms() for _ in range(20)]
    rss_before = rss_mib(node.proc.pid)
    slow = SlowClients(node.port, 1000)
    flood = None
    try:
        # the cap is reached: every slot holds a slow client
        wait_for(lambda: open_fds(node.proc.pid) >= node.max_connections, what="the cap reached")
        cpu0, t0 = cpu_seconds(node.proc.pid), time.monotonic()
        held = [node.call_ms() for _ in range(20)]
        time.sleep(2)  # a window to measure CPU over, not a synchronisation
        cpu_held = (cpu_seconds(node.proc.pid) - cpu0) / (time.monotonic() - t0)
        flood = Flood(node.port)
        flooded = [node.call_ms() for _ in range(40)]
        flood.close()
        rss_during = rss_mib(node.proc.pid)
    finally:
        if flood:
            flood.close()
        slow.close()
    print(f"kubelet calls ms p50/max: idle {statistics.median(idle):.1f}/{max(idle):.1f}, "
          f"1000 slow clients {statistics.median(held):.1f}/{max(held):.1f}, "
          f"+flood ({flood.count} connections) {statistics.median(flooded):.1f}/"
          f"{max(flooded):.1f}; CPU {cpu_held:.0%}; RSS {rss_before:.1f} -> {rss_during:.1f} MiB")
    # answered at once while every slot is held and during the flood; the
    # worst call may lose a time slice to the load beside the test, never
    # wait out a slow client (those hold for seconds)
    assert statistics.median(held) < 100 and statistics.median(flooded) < 100
    assert max(held) < 1000 and max(flooded) < 1000
    assert cpu_held < 0.25  # not spinning
    assert rss_during - rss_before < 16
    assert open_fds(node.proc.pid) <= node.max_connections + 64
    # the log says it once, not per connection
    assert len(HTTP_LOG.findall(node.text())) <= 3, node.text()
    assert "Too many open files" not in node.text()
    # and scrapes work again once the slow clients are gone
    wait_for(lambda: b"DCGM_FI_DEV_GPU_TEMP" in get(node.port), timeout=15,
             what="a scrape after the attack")


def test_a_client_trickling_its_head_is_closed_at_the_deadline(node):
    s = socket.create_connection(("127.0.0.1", node.port))
    start = time.monotonic()
    head = b"GET /metrics HTTP/1.1\r\nX-Slow: " + b"a" * 200
    closed_at = None
    for byte in head:
        try:
            s.send(bytes([byte]))
        except OSError:
            closed_at = time.monotonic() - start
            break
        s.settimeout(0.5)
        try:
            if s.recv(100) == b"":
                closed_at = time.monotonic() - start
                break
        except socket.timeout:
            pass
        except OSError:
            closed_at = time.monotonic() - start
            break
    s.close()
    assert closed_at is not None and 9.5 <= closed_at <= 12, closed_at


def test_head_answers_headers_only_and_pipelining_stays_in_sync(node):
    # HEAD has the GET's Content-Length and no body: the next answer follows at once
    req = (b"HEAD / HTTP/1.1\r\nHost: x\r\n\r\n" b"GET / HTTP/1.1\r\nHost: x\r\n\r\n"
           b"HEAD /metrics HTTP/1.1\r\nHost: x\r\n\r\n"
           b"GET /health HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n")
    s = socket.create_connection(("127.0.0.1", node.port), timeout=10)
    s.sendall(req)
    f = s.makefile("rb")

    st, h_head = response(f)
    assert st.startswith(b"HTTP/1.1 200")
    st, h_get = response(f)
    assert st.startswith(b"HTTP/1.1 200"), st  # not the HEAD's body
    body = f.read(int(h_get["content-length"]))
    assert b"/metrics" in body and h_head["content-length"] == h_get["content-length"]
    st, h = response(f)
    assert st.startswith(b"HTTP/1.1 200") and int(h["content-length"]) > 1000
    st, h = response(f)
    assert st.startswith(b"HTTP/1.1 200") and f.read(int(h["content-length"])) == b"OK"
    assert h["connection"] == "close" and f.read() == b""
    s.close()

    # 100 requests in one write, a refused method with a body among them
    many = b"".join(b"GET /health HTTP/1.1\r\nHost: x\r\n\r\n" if i % 10 else
                    b"POST /metrics HTTP/1.1\r\nContent-Length: 5\r\n\r\nhello" for i in range(100))
    s = socket.create_connection(("127.0.0.1", node.port), timeout=10)
    s.sendall(many + b"GET /nope HTTP/1.1\r\nConnection: close\r\n\r\n")
    f = s.makefile("rb")
    statuses = []
    for _ in range(101):
        st, h = response(f)
        f.read(int(h["content-length"]))
        statuses.append(int(st.split()[1]))
    assert statuses == [405 if i % 10 == 0 else 200 for i in range(100)] + [404]
    assert f.read() == b""
    s.close()


@pytest.mark.parametrize("request_bytes,status", [
    (b"GET /" + b"a" * 5000 + b" HTTP/1.1\r\n\r\n", 414),
    (b"GET /" + b"a" * 5000, 414),  # not even finished
    (b"GET /" + b"a" * 300 + b" HTTP/1.1\r\n\r\n", 414),  # a path beyond 256 bytes
    (b"GET / HTTP/1.1\r\nX-Big: " + b"a" * 9000 + b"\r\n\r\n", 431),
    (b"GET / HTTP/1.1\r\n" + b"X-H: 1\r\n" * 100 + b"\r\n", 431),
    (b"POST / HTTP/1.1\r\nContent-Length: 5000\r\n\r\n", 413),
    (b"POST / HTTP/1.1\r\nTransfer-Encoding: chunked\r\n\r\n0\r\n\r\n", 501),
    (b"GET / HTTP/3.0\r\n\r\n", 505),
    (b"\x16\x03\x01\x02\x00\x01\x00\x01\xfc\x03\x03 hello\r\n\r\n", 400),  # TLS to a plain port
], ids=["line", "unfinished-line", "path", "header", "headers", "body", "chunked", "version",
        "tls"])
def test_oversized_and_malformed_requests_are_answered_and_closed(node, request_bytes, status):
    got, headers, rest = exchange(node.port, request_bytes)
    assert got == status
    assert headers["connection"] == "close"
    assert len(rest) == int(headers["content-length"])  # the short body, then the end
    assert get(node.port, "/health").endswith(b"OK")


def test_descriptor_exhaustion_backs_off_and_recovers(node):
    pid = node.proc.pid
    soft, hard = resource.prlimit(pid, resource.RLIMIT_NOFILE)
    resource.prlimit(pid, resource.RLIMIT_NOFILE, (open_fds(pid), hard))
    raise_own_fd_limit()
    clients = []
    try:
        clients = [socket.create_connection(("127.0.0.1", node.port)) for _ in range(20)]
        wait_for(lambda: "cannot accept HTTP connections" in node.text(), what="the EMFILE line")
        cpu0, t0 = cpu_seconds(pid), time.monotonic()
        calls = [node.call_ms() for _ in range(10)]
        time.sleep(2)  # a window to measure CPU over
        cpu = (cpu_seconds(pid) - cpu0) / (time.monotonic() - t0)
        assert cpu < 0.25, cpu
        assert statistics.median(calls) < 100 and max(calls) < 1000, calls
        assert node.text().count("cannot accept HTTP connections") == 1
        assert "libevent" not in node.text()
    finally:
        resource.prlimit(pid, resource.RLIMIT_NOFILE, (soft, hard))
        for c in clients:
            c.close()
    # the waiting connections are served once descriptors are free again
    wait_for(lambda: b"DCGM_FI_DEV_GPU_TEMP" in get(node.port), timeout=10,
             what="a scrape after descriptors came back")


def test_sigterm_is_honoured_while_a_big_pod_list_is_processed(build, tmp_path):
    from test_metrics import node_gpus, pod, pod_server
    load_protos(tmp_path / "protos")
    from podresources.v1 import api_pb2 as pr
    uuid = node_gpus("dgx-a100")[0]["uuid"]
    answer = pr.ListPodResourcesResponse(pod_resources=[
        pod(pr, f"pod-{i}", "ns", "c", "nvidia.com/gpu", [f"{uuid}::{i}"]) for i in range(30000)])
    assert answer.ByteSize() < 4 * 1024 * 1024
    calls = []
    server = pod_server(pr, tmp_path / "pr.sock", answer, calls=calls)
    log = tmp_path / "gpulet.log"
    env = {k: v for k, v in os.environ.items() if not k.startswith("GPULET_SIM")}
    proc = subprocess.Popen([str(build / "gpulet"), "--simulate", "dgx-a100", "run",
                             "--no-device-plugin", "--no-labels", "--metrics-address",
                             "127.0.0.1:0", "--pod-resources-socket", str(tmp_path / "pr.sock")],
                            env=env, stderr=open(log, "w"))
    try:
        wait_for(lambda: calls, what="the List call")
        proc.send_signal(signal.SIGTERM)
        start = time.monotonic()
        assert proc.wait(timeout=10) == 0
        assert time.monotonic() - start < 2.0
    finally:
        if proc.poll() is None:
            proc.kill()
        server.stop(0)
