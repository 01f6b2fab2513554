"""A raw HTTP/2 peer for hostile-client tests: frames built by hand (HPACK
literals only), sent whether or not the server wants them, read only when
the test says so. Also the RSS of a process from /proc."""
import socket
import struct
import time

PREFACE = b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n"
DATA, HEADERS, RST_STREAM, SETTINGS, PING, GOAWAY, WINDOW_UPDATE = 0, 1, 3, 4, 6, 7, 8
END_STREAM, ACK, END_HEADERS = 0x1, 0x1, 0x4
INITIAL_WINDOW_SIZE = 4


def rss_kib(pid):
    with open(f"/proc/{pid}/status") as f:
        for line in f:
            if line.startswith("VmRSS:"):
                return int(line.split()[1])
    raise AssertionError(f"no VmRSS for {pid}")


def frame(ftype, flags, stream, payload=b""):
    return struct.pack(">I", len(payload))[1:] + bytes([ftype, flags]) + \
        struct.pack(">I", stream & 0x7FFFFFFF) + payload


def _hpack_int(value, prefix_bits, first):
    limit = (1 << prefix_bits) - 1
    if value < limit:
        return bytes([first | value])
    out = bytearray([first | limit])
    value -= limit
    while value >= 128:
        out.append(value % 128 + 128)
        value //= 128
    out.append(value)
    return bytes(out)


def hpack(headers):
    """Literal header fields without indexing, new names, no Huffman."""
    out = b""
    for name, value in headers:
        name, value = name.encode(), value.encode()
        out += b"\x00" + _hpack_int(len(name), 7, 0) + name + _hpack_int(len(value), 7, 0) + value
    return out


def grpc_headers(method):
    return hpack([(":method", "POST"), (":scheme", "http"), (":path", method),
                  (":authority", "localhost"), ("content-type", "application/grpc"),
                  ("te", "trailers")])


def grpc_message(payload):
    return b"\x00" + struct.pack(">I", len(payload)) + payload


def settings(**values):
    ids = {"initial_window_size": INITIAL_WINDOW_SIZE}
    return frame(SETTINGS, 0, 0, b"".join(struct.pack(">HI", ids[k], v)
                                          for k, v in values.items()))


class Peer:
    """One raw connection. Non-blocking sends: flood() sends until the
    server stops taking bytes (back-pressure) or the time is up."""

    def __init__(self, path, **settings_values):
        self.sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        self.sock.connect(str(path))
        self.sock.sendall(PREFACE + settings(**settings_values))
        self.sock.setblocking(False)
        self.inbuf = b""
        self.closed = False

    def send(self, data, timeout=5.0):
        """Sends all of data unless the server stops reading for `timeout`;
        returns the bytes sent."""
        sent = 0
        deadline = time.monotonic() + timeout
        while sent < len(data) and time.monotonic() < deadline:
            try:
                sent += self.sock.send(data[sent:])
            except BlockingIOError:
                time.sleep(0.001)
            except (BrokenPipeError, ConnectionResetError):
                self.closed = True
                break
        return sent

    def flood(self, unit, seconds):
        """Sends copies of unit for `seconds` or until the connection ends;
        returns (bytes sent, whether the server stopped reading)."""
        chunk = unit * max(1, 65536 // len(unit))
        total, stalled_since = 0, None
        deadline = time.monotonic() + seconds
        while time.monotonic() < deadline and not self.closed:
            try:
                total += self.sock.send(chunk)
                stalled_since = None
            except BlockingIOError:
                stalled_since = stalled_since or time.monotonic()
                time.sleep(0.005)
            except (BrokenPipeError, ConnectionResetError):
                self.closed = True
        return total, stalled_since is not None

    def frames(self, timeout=5.0, until=None, first=False):
        """Reads frames for up to timeout seconds, or until until(frame), or
        (first) as soon as some came and no more are waiting."""
        got = []
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            while len(self.inbuf) >= 9:
                n = int.from_bytes(self.inbuf[:3], "big")
                if len(self.inbuf) < 9 + n:
                    break
                f = (self.inbuf[3], self.inbuf[4],
                     int.from_bytes(self.inbuf[5:9], "big") & 0x7FFFFFFF, self.inbuf[9:9 + n])
                self.inbuf = self.inbuf[9 + n:]
                got.append(f)
                if until and until(f):
                    return got
            try:
                data = self.sock.recv(65536)
                if not data:
                    self.closed = True
                    return got
                self.inbuf += data
            except BlockingIOError:
                if first and got:
                    return got
                time.sleep(0.002)
            except ConnectionResetError:
                self.closed = True
                return got
        return got

    def close(self):
        self.sock.close()
