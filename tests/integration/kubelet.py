"""A kubelet for tests: the device-plugin side of the real kubelet, in
Python grpcio, following the kubelet's device plugin and pod-resources APIs
as Kubernetes documents them.

It serves Registration on <dir>/kubelet.sock. On Register it checks the
version and the resource name, dials the plugin's socket and calls
GetDevicePluginOptions before it answers, then keeps a ListAndWatch stream
open per resource and remembers the latest device list. Tests ask it to
allocate as the kubelet does, and to restart (delete every socket file,
serve again). As kubelet v1.20 it can write its checkpoint
(kubelet_internal_checkpoint: the healthy devices of each resource) at
every update; it can refuse Register, or not watch (as a kubelet whose
ListAndWatch streams break).
"""
import json
import os
import pathlib
import subprocess
import sys
import threading
import time
from concurrent import futures

import grpc

ROOT = pathlib.Path(__file__).resolve().parents[2]


def load_protos(out_dir):
    """Generates the Python modules for our .proto files and imports them."""
    out_dir = pathlib.Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    if not (out_dir / "deviceplugin" / "v1beta1" / "api_pb2.py").exists():
        subprocess.run([sys.executable, "-m", "grpc_tools.protoc", f"-I{ROOT / 'proto'}",
                        f"--python_out={out_dir}", f"--grpc_python_out={out_dir}",
                        "deviceplugin/v1beta1/api.proto", "podresources/v1/api.proto"],
                       check=True)
    if str(out_dir) not in sys.path:
        sys.path.insert(0, str(out_dir))
    from deviceplugin.v1beta1 import api_pb2 as dp, api_pb2_grpc as dp_grpc  # noqa: E402
    return dp, dp_grpc


def wait_for(condition, timeout=10.0, interval=0.01, what="condition"):
    """Polls condition() until it is true; fails the test after timeout."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        value = condition()
        if value:
            return value
        time.sleep(interval)
    raise AssertionError(f"timed out after {timeout}s waiting for {what}")


class Resource:
    def __init__(self, name, endpoint, options):
        self.name = name
        self.endpoint = endpoint
        self.options = options
        self.devices = None        # latest list: {id: (health, [numa ids])}
        self.updates = 0
        self.stream_ended = threading.Event()
        self.channel = None
        self.stub = None


class Kubelet:
    def __init__(self, directory, dp, dp_grpc, checkpoint=False, refuse=None, watch=True):
        self.dir = pathlib.Path(directory)
        self.dp, self.dp_grpc = dp, dp_grpc
        self.checkpoint, self.refuse, self.watch = checkpoint, refuse, watch
        self.resources = {}
        self.registrations = []    # (time, resource name) of each accepted Register
        self.register_received = []  # time each Register call arrived, before any check
        self.served_at = []        # time each start began, just before kubelet.sock exists
        self.refused = []
        self.lock = threading.Lock()
        self.server = None
        self.start()

    # -- the Registration service --
    def Register(self, request, context):
        self.register_received.append(time.monotonic())
        if request.version != "v1beta1":
            self.refused.append(f"version {request.version}")
            context.abort(grpc.StatusCode.INVALID_ARGUMENT, f"unsupported version {request.version}")
        if self.refuse:
            self.refused.append(self.refuse)
            context.abort(grpc.StatusCode.FAILED_PRECONDITION, self.refuse)
        name = request.resource_name
        if "/" not in name or not name.split("/")[0] or not name.split("/")[1]:
            self.refused.append(f"name {name}")
            context.abort(grpc.StatusCode.INVALID_ARGUMENT, f"invalid resource name {name}")
        # As the real kubelet's grpc-go: the socket path as :authority.
        path = self.dir / request.endpoint
        channel = grpc.insecure_channel(f"unix:{path}",
                                        options=[("grpc.default_authority", str(path))])
        stub = self.dp_grpc.DevicePluginStub(channel)
        # As the real kubelet: ask for the options before answering Register.
        options = stub.GetDevicePluginOptions(self.dp.Empty(), timeout=5)
        res = Resource(name, request.endpoint, options)
        res.channel, res.stub = channel, stub
        with self.lock:
            old = self.resources.get(name)
            self.resources[name] = res
            self.registrations.append((time.monotonic(), name))
        if old is not None:
            old.channel.close()
        if self.watch:
            threading.Thread(target=self._watch, args=(res,), daemon=True).start()
        return self.dp.Empty()

    def _watch(self, res):
        try:
            for msg in res.stub.ListAndWatch(self.dp.Empty()):
                devices = {d.ID: (d.health, [n.ID for n in d.topology.nodes]) for d in msg.devices}
                with self.lock:
                    res.devices = devices
                    res.updates += 1
                    if self.checkpoint:
                        self._write_checkpoint()
        except (grpc.RpcError, ValueError):
            pass  # ValueError: a restart closed the channel before the stream began
        res.stream_ended.set()

    def allocatable(self):
        """{resource: [healthy device IDs]}, as the kubelet offers them."""
        with self.lock:
            return {name: [i for i, (h, _) in (r.devices or {}).items() if h == "Healthy"]
                    for name, r in self.resources.items()}

    def _write_checkpoint(self):
        """As kubelet v1.20's device manager: the healthy devices of each
        resource, written at every update (the lock is held)."""
        doc = {"Data": {"PodDeviceEntries": [], "RegisteredDevices": {
            name: [i for i, (h, _) in (r.devices or {}).items() if h == "Healthy"]
            for name, r in self.resources.items()}}, "Checksum": 0}
        tmp = self.dir / ".kubelet_internal_checkpoint.tmp"
        tmp.write_text(json.dumps(doc))
        os.replace(tmp, self.dir / "kubelet_internal_checkpoint")

    def start(self):
        self.dir.mkdir(parents=True, exist_ok=True)
        server = grpc.server(futures.ThreadPoolExecutor(max_workers=8))
        handler = grpc.method_handlers_generic_handler("v1beta1.Registration", {
            "Register": grpc.unary_unary_rpc_method_handler(
                self.Register, request_deserializer=self.dp.RegisterRequest.FromString,
                response_serializer=self.dp.Empty.SerializeToString)})
        server.add_generic_rpc_handlers((handler,))
        self.served_at.append(time.monotonic())  # add_insecure_port binds kubelet.sock
        server.add_insecure_port(f"unix:{self.dir / 'kubelet.sock'}")
        server.start()
        self.server = server

    def stop(self):
        if self.server:
            self.server.stop(0)
            self.server = None
        for res in list(self.resources.values()):
            res.channel.close()

    def restart(self):
        """As the kubelet at start: drop every socket file, serve again."""
        self.stop()
        with self.lock:
            self.resources = {}
        for p in self.dir.iterdir():
            if p.is_socket():
                p.unlink()
        self.start()

    # -- helpers for tests --
    def resource(self, name, timeout=10.0):
        return wait_for(lambda: self.resources.get(name) if self.resources.get(name) and
                        self.resources[name].devices is not None else None,
                        timeout, what=f"{name} registered with a device list")

    def devices(self, name):
        with self.lock:
            return dict(self.resources[name].devices)

    def allocate(self, name, ids, timeout=5):
        req = self.dp.AllocateRequest(container_requests=[
            self.dp.ContainerAllocateRequest(devices_ids=list(ids))])
        return self.resources[name].stub.Allocate(req, timeout=timeout)

    def preferred(self, name, available, must, size, timeout=5):
        req = self.dp.PreferredAllocationRequest(container_requests=[
            self.dp.ContainerPreferredAllocationRequest(
                available_deviceIDs=list(available), must_include_deviceIDs=list(must),
                allocation_size=size)])
        resp = self.resources[name].stub.GetPreferredAllocation(req, timeout=timeout)
        return list(resp.container_responses[0].deviceIDs)
