"""An API server for tests: just enough of Kubernetes' resource.k8s.io/v1
for a DRA driver, over real TLS (Python's ssl with openssl-made
certificates, client certificates required).

It keeps ResourceSlices (create with generateName, list and watch with the
spec.nodeName/spec.driver field selector, delete), ResourceClaims (put by
the test) and one Node. Tests can make it answer a path with garbage, a
huge body, an error status or not at all (stall), and read what it was
asked. As Kubernetes does, a watch first gets the events since the
resourceVersion it names (from a bounded history; a version older than the
history gets a 410 ERROR event), then those that follow.
"""
import json
import queue
import ssl
import subprocess
import threading
import time
import uuid
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from urllib.parse import parse_qs, urlparse


def make_certs(d):
    """A CA, a server certificate for 127.0.0.1 and a client certificate."""
    def run(*args):
        subprocess.run(["openssl", *args], check=True, capture_output=True)
    run("req", "-x509", "-newkey", "rsa:2048", "-nodes", "-days", "2", "-subj", "/CN=test-ca",
        "-keyout", f"{d}/ca.key", "-out", f"{d}/ca.crt")
    for name, ext in (("server", "subjectAltName=IP:127.0.0.1,DNS:localhost"),
                      ("client", "extendedKeyUsage=clientAuth")):
        run("req", "-newkey", "rsa:2048", "-nodes", "-subj", f"/CN={name}/O=system:nodes",
            "-keyout", f"{d}/{name}.key", "-out", f"{d}/{name}.csr")
        with open(f"{d}/{name}.ext", "w") as f:
            f.write(ext + "\n")
        run("x509", "-req", "-in", f"{d}/{name}.csr", "-CA", f"{d}/ca.crt", "-CAkey",
            f"{d}/ca.key", "-CAcreateserial", "-days", "2", "-extfile", f"{d}/{name}.ext",
            "-out", f"{d}/{name}.crt")


class ApiServer:
    HISTORY = 1000  # events kept for watches that name an older version

    def __init__(self, certs, node="node1"):
        self.node = node
        self.node_uid = str(uuid.uuid4())
        # reentrant: a wait_for condition may call count() or slice_list()
        self.lock = threading.RLock()
        self.changed = threading.Condition(self.lock)
        self.slices = {}          # name -> object
        self.claims = {}          # (ns, name) -> object
        self.rv = 1
        self.watchers = []        # queues of events
        self.history = []         # (resourceVersion, event), the last HISTORY
        self.requests = []        # (method, path)
        self.overrides = {}       # path prefix -> ("status", code, body) | ("stall",) | ("gate", ev) | ...
        self.stop_watches = False
        self.consumable_capacity = True  # the DRAConsumableCapacity gate
        self.device_taints = True        # the DRADeviceTaints gate
        ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
        ctx.load_cert_chain(f"{certs}/server.crt", f"{certs}/server.key")
        ctx.load_verify_locations(f"{certs}/ca.crt")
        ctx.verify_mode = ssl.CERT_REQUIRED
        server = self

        class Handler(BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"
            # headers and body go out in two writes: without this, Nagle
            # holds the body for the client's delayed ACK (40 ms)
            disable_nagle_algorithm = True

            def log_message(self, *args):
                pass

            def do_GET(self):
                server.handle(self, "GET")

            def do_POST(self):
                server.handle(self, "POST")

            def do_DELETE(self):
                server.handle(self, "DELETE")

            def do_PUT(self):
                server.handle(self, "PUT")

        self.httpd = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.httpd.daemon_threads = True
        self.httpd.socket = ctx.wrap_socket(self.httpd.socket, server_side=True)
        self.port = self.httpd.server_address[1]
        self.url = f"https://127.0.0.1:{self.port}"
        self.thread = threading.Thread(target=self.httpd.serve_forever, daemon=True)
        self.thread.start()

    def close(self):
        with self.lock:
            self.stop_watches = True
            for q in self.watchers:
                q.put(None)
        self.httpd.shutdown()
        self.httpd.server_close()

    # ---- what tests use ----

    def put_claim(self, ns, name, devices, uid=None, pool=None, driver="gpu.nvidia.com",
                  memory=None):
        """memory: the consumedCapacity of each device, as the scheduler
        records it for a device that allows several allocations."""
        uid = uid or str(uuid.uuid4())
        results = [{"request": f"req{i}", "driver": driver, "pool": pool or self.node,
                    "device": d} for i, d in enumerate(devices)]
        for r in results if memory is not None else []:
            r["shareID"] = str(uuid.uuid4())
            r["consumedCapacity"] = {"memory": memory}
        obj = {"apiVersion": "resource.k8s.io/v1", "kind": "ResourceClaim",
               "metadata": {"name": name, "namespace": ns, "uid": uid},
               "spec": {"devices": {"requests": []}},
               "status": {"allocation": {"devices": {"results": results}}}}
        with self.lock:
            self.claims[(ns, name)] = obj
        return uid

    def slice_list(self):
        with self.lock:
            return [json.loads(json.dumps(s)) for s in self.slices.values()]

    def delete_all_slices(self):
        """What a kubelet start does."""
        with self.lock:
            for name in list(self.slices):
                self._delete(name)

    def wait_for(self, cond, timeout=10.0, what="condition"):
        deadline = time.monotonic() + timeout
        with self.lock:
            while True:
                value = cond()
                if value:
                    return value
                left = deadline - time.monotonic()
                if left <= 0:
                    raise AssertionError(f"timed out after {timeout}s waiting for {what}")
                self.changed.wait(min(left, 0.2))

    def count(self, method, prefix):
        with self.lock:
            return sum(1 for m, p in self.requests if m == method and p.startswith(prefix))

    # ---- inside ----

    def _event(self, kind, obj):
        ev = {"type": kind, "object": json.loads(json.dumps(obj))}  # as it was then
        self.history.append((self.rv, ev))
        del self.history[:-self.HISTORY]
        for q in self.watchers:
            q.put(ev)

    def _delete(self, name):
        obj = self.slices.pop(name, None)
        if obj is not None:
            self.rv += 1
            obj["metadata"]["resourceVersion"] = str(self.rv)
            self._event("DELETED", obj)
            self.changed.notify_all()
        return obj

    def _send(self, h, status, body, ctype="application/json"):
        data = body if isinstance(body, bytes) else json.dumps(body).encode()
        h.send_response(status)
        h.send_header("Content-Type", ctype)
        h.send_header("Content-Length", str(len(data)))
        h.end_headers()
        h.wfile.write(data)

    def handle(self, h, method):
        url = urlparse(h.path)
        query = parse_qs(url.query)
        length = int(h.headers.get("Content-Length") or 0)
        body = h.rfile.read(length) if length else b""
        with self.lock:
            self.requests.append((method, h.path))
            self.changed.notify_all()
            override = None
            for prefix, o in self.overrides.items():
                if url.path.startswith(prefix) and (o[0] != "method" or o[1] == method):
                    override = o[2:] if o[0] == "method" else o
                    break
        if override:
            kind = override[0]
            if kind == "stall":
                time.sleep(override[1])
                return
            if kind == "gate":  # held until the test sets the event, then answered
                override[1].wait(30)
            if kind == "raw":
                h.send_response(200)
                h.send_header("Content-Type", "application/json")
                h.send_header("Content-Length", str(len(override[1])))
                h.end_headers()
                h.wfile.write(override[1])
                return
            if kind == "status":
                self._send(h, override[1], override[2] if len(override) > 2 else
                           {"kind": "Status", "code": override[1]})
                return
        path = url.path
        if method == "GET" and path == f"/api/v1/nodes/{self.node}":
            return self._send(h, 200, {"kind": "Node", "metadata": {"name": self.node,
                                                                    "uid": self.node_uid}})
        if path.startswith("/apis/resource.k8s.io/v1/namespaces/"):
            parts = path.split("/")
            if method == "GET" and len(parts) == 8 and parts[6] == "resourceclaims":
                with self.lock:
                    obj = self.claims.get((parts[5], parts[7]))
                if obj is None:
                    return self._send(h, 404, {"kind": "Status", "code": 404})
                return self._send(h, 200, obj)
        if path == "/apis/resource.k8s.io/v1/resourceslices":
            if method == "POST":
                obj = json.loads(body)
                for d in obj["spec"].get("devices", []) if not self.consumable_capacity else []:
                    # what an API server with the gate off does to the fields
                    d.pop("allowMultipleAllocations", None)
                    for c in d.get("capacity", {}).values():
                        c.pop("requestPolicy", None)
                for d in obj["spec"].get("devices", []):
                    if not self.device_taints:
                        d.pop("taints", None)  # dropped, as the gate off does
                    for t in d.get("taints", []):
                        # what validation refuses (1.34: NoSchedule or NoExecute)
                        if (t.get("effect") not in ("NoSchedule", "NoExecute") or
                                not t.get("key") or len(t.get("value", "")) > 63):
                            return self._send(h, 422, {"kind": "Status", "code": 422,
                                                       "message": f"invalid taint {t}"})
                with self.lock:
                    name = obj["metadata"]["generateName"] + uuid.uuid4().hex[:5]
                    obj["metadata"]["name"] = name
                    self.rv += 1
                    obj["metadata"]["resourceVersion"] = str(self.rv)
                    self.slices[name] = obj
                    self._event("ADDED", obj)
                    self.changed.notify_all()
                return self._send(h, 201, obj)
            if method == "GET" and query.get("watch") == ["true"]:
                return self._watch(h, query)
            if method == "GET":
                sel = query.get("fieldSelector", [""])[0]
                assert f"spec.nodeName={self.node}" in sel, sel
                with self.lock:
                    items = list(self.slices.values())
                    rv = str(self.rv)
                return self._send(h, 200, {"kind": "ResourceSliceList", "items": items,
                                           "metadata": {"resourceVersion": rv}})
        if path.startswith("/apis/resource.k8s.io/v1/resourceslices/") and method == "DELETE":
            name = path.rsplit("/", 1)[1]
            with self.lock:
                obj = self._delete(name)
            if obj is None:
                return self._send(h, 404, {"kind": "Status", "code": 404})
            return self._send(h, 200, obj)
        return self._send(h, 404, {"kind": "Status", "code": 404})

    def _watch(self, h, query):
        q = queue.Queue()
        h.send_response(200)
        h.send_header("Content-Type", "application/json")
        h.send_header("Transfer-Encoding", "chunked")
        h.end_headers()
        with self.lock:
            if self.stop_watches:  # as a proxy that cuts streams: ended at once
                h.wfile.write(b"0\r\n\r\n")
                return
            try:
                since = int(query.get("resourceVersion", ["0"])[0] or 0)
            except ValueError:
                since = 0
            if since and self.history and since < self.history[0][0] - 1:
                q.put({"type": "ERROR", "object": {"kind": "Status", "code": 410,
                                                   "reason": "Expired"}})
                q.put(None)
            elif since:
                for rv, ev in self.history:
                    if rv > since:
                        q.put(ev)
            self.watchers.append(q)
        try:
            while True:
                ev = q.get()
                if ev is None:
                    break
                data = json.dumps(ev).encode() + b"\n"
                h.wfile.write(b"%x\r\n%s\r\n" % (len(data), data))
                h.wfile.flush()
            h.wfile.write(b"0\r\n\r\n")
        except OSError:
            pass
        finally:
            with self.lock:
                if q in self.watchers:
                    self.watchers.remove(q)

    def end_watches(self, event=None):
        """Ends every open watch, after one event (e.g. a 410 ERROR)."""
        with self.lock:
            for q in self.watchers:
                if event:
                    q.put(event)
                q.put(None)
