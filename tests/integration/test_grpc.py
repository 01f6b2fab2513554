"""src/grpc/ against Python grpcio, in both directions (through grpc_probe)."""
import os
import queue
import signal
import socket
import subprocess
import threading
import time
from concurrent import futures

import grpc
import pytest


def fnv1a(data):
    h = 2166136261
    for b in data:
        h = ((h ^ b) * 16777619) & 0xFFFFFFFF
    return f"{h:08x}"


def pattern(n):
    return bytes((i * 7 + 3) & 0xFF for i in range(n))


class Probe:
    """A running `grpc_probe serve`, its stdout lines in a queue."""

    def __init__(self, build, path):
        self.proc = subprocess.Popen([str(build / "tests" / "grpc_probe"), "serve", str(path)],
                                     stdout=subprocess.PIPE, text=True)
        self.lines = queue.Queue()
        threading.Thread(target=self._pump, daemon=True).start()
        assert self.expect("ready", 10)

    def _pump(self):
        for line in self.proc.stdout:
            self.lines.put(line.strip())

    def expect(self, text, timeout=5.0):
        """Waits for a line equal to text (or any of a tuple of texts)."""
        wanted = text if isinstance(text, tuple) else (text,)
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            try:
                line = self.lines.get(timeout=max(0.01, deadline - time.monotonic()))
            except queue.Empty:
                break
            if line in wanted:
                return True
        return False

    def stop(self):
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            self.proc.wait(timeout=10)


@pytest.fixture
def probe(build, tmp_path):
    p = Probe(build, tmp_path / "probe.sock")
    p.path = tmp_path / "probe.sock"
    yield p
    p.stop()
    assert p.proc.returncode == 0


@pytest.fixture
def channel(probe):
    ch = grpc.insecure_channel(f"unix:{probe.path}")
    yield ch
    ch.close()


def unary(channel, method, payload, timeout=10):
    return channel.unary_unary(f"/test.Echo/{method}")(payload, timeout=timeout)


# ---- our server, grpcio client ----

def test_unary_echo_small_and_large(channel):
    assert unary(channel, "Unary", b"hello") == b"hello"
    assert unary(channel, "Unary", b"") == b""
    big = pattern(3 * 1024 * 1024)  # far past the 16 KiB frame and 64 KiB window
    assert unary(channel, "Unary", big) == big


def test_status_and_message_reach_the_client(channel):
    with pytest.raises(grpc.RpcError) as e:
        unary(channel, "Fail", "5 no such GPU: 100% gone, é".encode())
    assert e.value.code() == grpc.StatusCode.NOT_FOUND
    assert e.value.details() == "no such GPU: 100% gone, é"


def test_unknown_method_is_unimplemented(channel):
    with pytest.raises(grpc.RpcError) as e:
        channel.unary_unary("/test.Echo/Nope")(b"x", timeout=5)
    assert e.value.code() == grpc.StatusCode.UNIMPLEMENTED
    assert "/test.Echo/Nope" in e.value.details()


def test_server_streaming_with_large_messages(channel):
    replies = list(channel.unary_stream("/test.Echo/Stream")(b"50 40000", timeout=20))
    assert len(replies) == 50
    assert replies[7] == bytes((7 + i) & 0xFF for i in range(40000))


def test_many_concurrent_streams(channel):
    call = channel.unary_unary("/test.Echo/Delay")
    futs = [call.future(f"{chr(65 + i % 26)}-{i}".encode(), timeout=20) for i in range(300)]
    assert [f.result() for f in futs] == [f"{chr(65 + i % 26)}-{i}".encode() for i in range(300)]


def test_deadline_ends_the_call_on_both_sides(channel, probe):
    start = time.monotonic()
    with pytest.raises(grpc.RpcError) as e:
        unary(channel, "Hold", b"x", timeout=0.3)
    assert e.value.code() == grpc.StatusCode.DEADLINE_EXCEEDED
    assert time.monotonic() - start < 3
    # whichever comes first: our deadline timer or grpcio's RST_STREAM
    assert probe.expect(("closed DEADLINE_EXCEEDED", "closed CANCELLED"))


def test_client_that_vanishes_mid_stream(build, probe):
    script = (
        "import grpc, os\n"
        f"ch = grpc.insecure_channel('unix:{probe.path}')\n"
        "it = ch.unary_stream('/test.Echo/Endless')(b'')\n"
        "for i, m in enumerate(it):\n"
        "    if i == 5: os._exit(0)\n")
    subprocess.run(["/usr/bin/python3", "-c", script], timeout=30, check=True)
    assert probe.expect("closed CANCELLED", 10)
    # and the server carries on
    ch = grpc.insecure_channel(f"unix:{probe.path}")
    assert unary(ch, "Unary", b"still here") == b"still here"
    ch.close()


@pytest.mark.parametrize("junk", [
    b"GET / HTTP/1.1\r\nHost: x\r\n\r\n",
    os.urandom(4096),
    b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n" + b"\xff" * 64,
])
def test_garbage_closes_that_connection_only(channel, probe, junk):
    assert unary(channel, "Unary", b"before") == b"before"
    s = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    s.settimeout(5)
    s.connect(str(probe.path))
    s.sendall(junk)
    data = b""
    while True:  # the server may say GOAWAY first; then it must hang up
        chunk = s.recv(65536)
        if not chunk:
            break
        data += chunk
    s.close()
    assert unary(channel, "Unary", b"after") == b"after"


def test_oversized_message_is_refused(channel):
    with pytest.raises(grpc.RpcError) as e:
        channel.unary_unary("/test.Echo/Unary")(b"x" * (5 * 1024 * 1024), timeout=10)
    assert e.value.code() in (grpc.StatusCode.RESOURCE_EXHAUSTED, grpc.StatusCode.CANCELLED,
                              grpc.StatusCode.INTERNAL)
    assert unary(channel, "Unary", b"ok") == b"ok"


def test_graceful_shutdown_ends_streams_and_removes_the_socket(build, tmp_path):
    p = Probe(build, tmp_path / "s.sock")
    ch = grpc.insecure_channel(f"unix:{tmp_path / 's.sock'}")
    it = ch.unary_stream("/test.Echo/Endless")(b"")
    assert next(it).startswith(b"tick")
    p.proc.send_signal(signal.SIGTERM)
    with pytest.raises(grpc.RpcError) as e:
        for _ in it:
            pass
    assert e.value.code() == grpc.StatusCode.UNAVAILABLE
    assert p.proc.wait(timeout=10) == 0
    assert p.expect("bye connections=0")
    assert not (tmp_path / "s.sock").exists()
    ch.close()


# ---- grpcio server, our client ----

class Holder:
    def __init__(self):
        self.cancelled = threading.Event()


@pytest.fixture
def py_server(tmp_path):
    holder = Holder()

    def echo(req, ctx):
        return req

    def stream(req, ctx):
        n, size = map(int, req.split())
        for m in range(n):
            yield bytes((m + i) & 0xFF for i in range(size))

    def fail(req, ctx):
        ctx.abort(grpc.StatusCode.PERMISSION_DENIED, "not allowed: 50% off")

    def hold(req, ctx):
        ctx.add_callback(holder.cancelled.set)
        holder.cancelled.wait(30)
        return b""

    def endless(req, ctx):
        for i in range(5):
            yield f"tick {i}".encode()
        holder.cancelled.wait(30)  # then the test stops the server under us

    handlers = grpc.method_handlers_generic_handler("test.Echo", {
        "Unary": grpc.unary_unary_rpc_method_handler(echo),
        "Delay": grpc.unary_unary_rpc_method_handler(echo),
        "Stream": grpc.unary_stream_rpc_method_handler(stream),
        "Fail": grpc.unary_unary_rpc_method_handler(fail),
        "Hold": grpc.unary_unary_rpc_method_handler(hold),
        "Endless": grpc.unary_stream_rpc_method_handler(endless),
    })
    server = grpc.server(futures.ThreadPoolExecutor(max_workers=16))
    server.add_generic_rpc_handlers((handlers,))
    path = tmp_path / "py.sock"
    server.add_insecure_port(f"unix:{path}")
    server.start()
    server.path = path
    server.holder = holder
    yield server
    holder.cancelled.set()
    server.stop(0)


def probe_client(build, *args, timeout=60):
    proc = subprocess.run([str(build / "tests" / "grpc_probe"), *map(str, args)],
                          capture_output=True, text=True, timeout=timeout)
    return proc.returncode, [l.strip() for l in proc.stdout.splitlines()], proc.stderr


def test_our_client_unary_small_and_large(build, py_server):
    rc, lines, _ = probe_client(build, "call", py_server.path, "/test.Echo/Unary", "hello")
    assert rc == 0
    assert lines == [f"msg 5 {fnv1a(b'hello')}", "status 0"]
    rc, lines, _ = probe_client(build, "call", py_server.path, "/test.Echo/Unary", "@2000000")
    assert rc == 0
    assert lines[0] == f"msg 2000000 {fnv1a(pattern(2000000))}"


def test_our_client_streaming(build, py_server):
    rc, lines, _ = probe_client(build, "stream", py_server.path, "/test.Echo/Stream", "30 20000")
    assert rc == 0
    assert len(lines) == 31
    assert lines[3] == f"msg 20000 {fnv1a(bytes((3 + i) & 0xFF for i in range(20000)))}"
    assert lines[-1] == "status 0"


def test_our_client_sees_status_and_message(build, py_server):
    rc, lines, _ = probe_client(build, "call", py_server.path, "/test.Echo/Fail", "x")
    assert rc == 1
    assert lines == ["status 7 not allowed: 50% off"]
    rc, lines, _ = probe_client(build, "call", py_server.path, "/test.Echo/Missing", "x")
    assert lines[-1].startswith("status 12")


def test_our_client_deadline(build, py_server):
    start = time.monotonic()
    rc, lines, _ = probe_client(build, "call", py_server.path, "/test.Echo/Hold", "x", 300)
    # our timer or the server's own deadline, whichever fires first
    assert len(lines) == 1 and lines[0].startswith("status 4 ")
    assert time.monotonic() - start < 5
    assert py_server.holder.cancelled.wait(5), "the server never saw the cancellation"


def test_our_client_many_concurrent(build, py_server):
    rc, lines, err = probe_client(build, "many", py_server.path, 200)
    assert rc == 0, err
    assert lines == ["ok 200 bad 0"]


def test_our_client_when_the_server_vanishes_mid_stream(build, py_server):
    proc = subprocess.Popen([str(build / "tests" / "grpc_probe"), "stream", str(py_server.path),
                             "/test.Echo/Endless", "x"], stdout=subprocess.PIPE, text=True)
    lines = [proc.stdout.readline().strip() for _ in range(5)]
    assert all(l.startswith("msg ") for l in lines)
    py_server.stop(0)
    rest = proc.stdout.read().splitlines()
    assert proc.wait(timeout=10) == 1
    assert rest[-1].split()[1] in ("1", "14"), rest  # CANCELLED or UNAVAILABLE


def test_our_client_without_a_server(build, tmp_path):
    rc, _, err = probe_client(build, "call", tmp_path / "none.sock", "/test.Echo/Unary", "x")
    assert rc == 2
    assert f"cannot connect to {tmp_path}/none.sock: No such file or directory" in err


# ---- any :authority, and the request checks that stay ----

def h2_request(build, path, *headers, payload="hi"):
    out = subprocess.run([str(build / "tests" / "h2_request"), str(path), *headers,
                          "--", payload], capture_output=True, text=True, timeout=20)
    assert out.returncode == 0, out.stderr
    return out.stdout.strip()


GRPC_REQUEST = (":method=POST", ":scheme=http", ":path=/test.Echo/Unary",
                "content-type=application/grpc", "te=trailers")


@pytest.mark.parametrize("authority", [
    "/var/lib/kubelet/device-plugins/nvidia-gpu.sock",  # the real kubelet (grpc-go)
    "unix:/var/lib/kubelet/device-plugins/nvidia-gpu.sock",
    "unix:///var/lib/kubelet/device-plugins/nvidia-gpu.sock",
    "%2Fvar%2Flib%2Fkubelet%2Fdevice-plugins%2Fnvidia-gpu.sock",
    "localhost",  # grpcio
    "",
    "a b\t{}|\\^`\"<>",
])
def test_any_authority_is_served(build, probe, authority):
    assert h2_request(build, probe.path, *GRPC_REQUEST[:3], f":authority={authority}",
                      *GRPC_REQUEST[3:]) == "reply 200 0 hi"


def test_grpcio_with_the_socket_path_as_authority(probe):
    ch = grpc.insecure_channel(f"unix:{probe.path}",
                               options=[("grpc.default_authority", str(probe.path))])
    assert unary(ch, "Unary", b"kubelet") == b"kubelet"
    ch.close()


@pytest.mark.parametrize("headers", [
    (":method=POST", ":scheme=http", "content-type=application/grpc"),  # no :path
    (":method=POST", ":path=/test.Echo/Unary", "content-type=application/grpc"),  # no :scheme
    (":scheme=http", ":path=/test.Echo/Unary", "content-type=application/grpc"),  # no :method
    (":method=POST", ":scheme=http", "content-type=application/grpc", ":path=/test.Echo/Unary"),
    (*GRPC_REQUEST, ":path=/test.Echo/Unary"),  # twice
    (*GRPC_REQUEST, ":protocol=x"),
    (":method=POST", ":scheme=http", ":path=", "content-type=application/grpc"),
    (*GRPC_REQUEST, "X-Upper=1"),
    (*GRPC_REQUEST, "bad name=1"),
    (*GRPC_REQUEST, "connection=keep-alive"),
    (*GRPC_REQUEST, "te=gzip"),
    (*GRPC_REQUEST, "x-big=@20000"),  # over the 16 KiB header list bound
    (*GRPC_REQUEST, *[f"x-{i}=@900" for i in range(20)]),
], ids=["no-path", "no-scheme", "no-method", "pseudo-after-regular", "path-twice",
        "unknown-pseudo", "empty-path", "upper-case", "bad-name", "connection", "te",
        "one-big-field", "many-fields"])
def test_malformed_requests_are_reset_and_the_server_carries_on(build, probe, channel, headers):
    assert h2_request(build, probe.path, *headers) == "reset PROTOCOL_ERROR"
    assert unary(channel, "Unary", b"after") == b"after"

