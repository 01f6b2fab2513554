"""Private network and mount namespaces and a cgroup root for one e2e run,
so that a kubelet or containerd already on the machine (or a second run of
the harness) neither blocks nor is disturbed by this one.

One holder process (`unshare --net --mount --propagation private`) keeps
the namespaces; every process of the run is started in them with
`nsenter -t HOLDER -n -m`. Inside, the fixed paths of the kubelet and
containerd (/var/lib/kubelet, /run/containerd, /var/log/pods, ...) are bind
mounts of folders in the run folder, so they are private to the run and
readable from outside under `run folder/fs/...`; the network has only `lo`,
with a documentation address (192.0.2.10) and a default route on it.

stop() ends every process of the run by PID (those in the holder's mount
namespace, those in the run's cgroups, then the holder), which drops the
namespaces and with them every mount made inside, then removes the run's
cgroups and the mount points it had to make on the machine (empty folders)
unless another run still mounts them."""
import concurrent.futures
import contextlib
import ctypes
import fcntl
import os
import pathlib
import shlex
import signal
import socket
import subprocess
import time
import urllib.request

NODE_IP = "192.0.2.10"  # TEST-NET-1: the kubelet refuses a loopback node IP
CLONE_NEWNET = 0x40000000
# Paths that the kubelet, containerd and the CNI plugins use whatever their
# configuration says, made private to the run.
PRIVATE = ["/var/lib/kubelet", "/run/containerd", "/var/log/pods", "/var/log/containers",
           "/var/lib/cni", "/etc/cni/net.d", "/etc/cdi", "/var/run/cdi", "/var/run/netns"]
CGROUP_FS = pathlib.Path("/sys/fs/cgroup")
# Should the harness itself be killed (SIGKILL: no finally runs), what it
# started directly dies with it instead of holding the namespaces.
ORPHAN_KILL = ["setpriv", "--pdeathsig", "KILL", "--"]


@contextlib.contextmanager
def machine_lock():
    """One run at a time makes or removes mount points on the machine. The
    lock is on "/" itself, so that taking it leaves no file behind."""
    fd = os.open("/", os.O_RDONLY | os.O_DIRECTORY)
    try:
        fcntl.flock(fd, fcntl.LOCK_EX)
        yield
    finally:
        os.close(fd)


def mounted_elsewhere(paths):
    """Of paths, those another mount namespace has as a mount point:
    {path: whether a sandbox mounted it there (its source a run folder's
    fs/PATH)}."""
    own = os.readlink("/proc/self/ns/mnt")
    seen, found = {own}, {}
    for p in pathlib.Path("/proc").iterdir():
        if not p.name.isdigit():
            continue
        try:
            ns = os.readlink(p / "ns/mnt")
            if ns in seen:
                continue
            seen.add(ns)
            text = (p / "mountinfo").read_text()
        except OSError:
            continue
        for line in text.splitlines():
            fields = line.split()
            root, point = fields[3], fields[4]
            if point in paths:
                found[point] = found.get(point, False) or root.endswith("/fs" + point)
    return found


def make_folders(path):
    """os.makedirs(path), returning the folders it made, outermost first."""
    made, p = [], pathlib.Path(path)
    while not p.exists():
        made.insert(0, str(p))
        p = p.parent
    os.makedirs(path, exist_ok=True)
    return made


def wait_for(what, check, timeout, interval=0.02):
    """Polls check() until it returns something true; fails after timeout."""
    end = time.monotonic() + timeout
    while True:
        value = check()
        if value:
            return value
        if time.monotonic() > end:
            raise AssertionError(f"timed out after {timeout} s waiting for {what}")
        time.sleep(interval)


def cgroup_hierarchies():
    """Mounted cgroup hierarchies (v1 controllers, name=systemd, the v2
    mount of a hybrid machine)."""
    out = []
    for line in pathlib.Path("/proc/self/mountinfo").read_text().splitlines():
        left, _, right = line.partition(" - ")
        if right.split()[0] in ("cgroup", "cgroup2"):
            point = pathlib.Path(left.split()[4])
            if point.parent == CGROUP_FS or point == CGROUP_FS:
                out.append(point)
    return sorted(set(out))


class Sandbox:
    def __init__(self, run_dir, hostnames=(), private=PRIVATE):
        """hostnames: names that resolve to NODE_IP inside; private: the
        paths made private (PRIVATE)."""
        self.dir = pathlib.Path(run_dir)
        self.private = list(private)
        self.made = []  # mount points this run made on the machine, or took over
        self.hostnames = list(hostnames)
        self.fs = self.dir / "fs"  # what the private paths hold, seen from outside
        # unique per run: two runs at once get two roots
        self.cgroup_root = "/" + self.dir.name
        self.holder = None
        self.mnt_ns = None
        self.procs = {}  # name -> Popen
        self._net = None  # one thread inside the network namespace

    def outside(self, path):
        """Where a private path (e.g. /var/lib/kubelet/x) is seen from outside."""
        p = str(path)
        for private in self.private:
            if p == private or p.startswith(private + "/"):
                return self.fs / private.lstrip("/") / p[len(private) + 1:]
        return pathlib.Path(p)

    def start(self):
        with machine_lock():
            # held until the mounts are made, so that a run stopping meanwhile
            # sees them and leaves their mount points
            self._start()

    def _start(self):
        mounts = []
        others = mounted_elsewhere(self.private)
        for private in self.private:
            inside = self.fs / private.lstrip("/")
            inside.mkdir(parents=True, exist_ok=True)
            # The mount point must exist on the machine: made if missing and
            # removed at stop; one a run still going made is taken over, so
            # the last of the two to stop removes it.
            made = make_folders(private)
            self.made += made or ([private] if others.get(private) else [])
            mounts.append(f"mount --bind {shlex.quote(str(inside))} {private}")
        # No resolver answers inside: names fail at once instead of after
        # timeouts, and the node's name is its address.
        etc = self.dir / "etc"
        etc.mkdir(exist_ok=True)
        (etc / "resolv.conf").write_text("nameserver 127.0.0.1\noptions timeout:1 attempts:1\n")
        (etc / "hosts").write_text(f"127.0.0.1 localhost\n{NODE_IP} {socket.gethostname()} "
                                   f"{' '.join(self.hostnames)}\n")
        for f in ("resolv.conf", "hosts"):
            mounts.append(f"mount --bind {shlex.quote(str(etc / f))} /etc/{f}")
        ready = self.dir / ".sandbox-ready"
        setup = " && ".join(["ip link set lo up", f"ip addr add {NODE_IP}/32 dev lo",
                             "ip route add default dev lo",
                             # cloud metadata probes fail at once, not after timeouts
                             "ip route add unreachable 169.254.0.0/16",
                             *mounts, f"touch {shlex.quote(str(ready))}"])
        log = open(self.dir / "sandbox.log", "ab")
        self.holder = subprocess.Popen(
            [*ORPHAN_KILL, "unshare", "--net", "--mount", "--propagation", "private", "--",
             "sh", "-c",
             f"{setup} && exec sleep infinity"], stdout=log, stderr=subprocess.STDOUT,
            start_new_session=True)
        log.close()
        wait_for("the sandbox's namespaces", lambda: ready.exists()
                       or self.holder.poll() is not None, 30)
        if self.holder.poll() is not None:
            raise AssertionError("the sandbox could not be set up: " +
                                 (self.dir / "sandbox.log").read_text()[-2000:])
        self.mnt_ns = os.readlink(f"/proc/{self.holder.pid}/ns/mnt")
        for h in cgroup_hierarchies():
            d = h / self.cgroup_root.lstrip("/")
            d.mkdir(exist_ok=True)
            for f in ("cpuset.cpus", "cpuset.mems"):  # empty ones refuse every task
                if (h / f).exists():
                    (d / f).write_text((h / f).read_text())

    # ---- processes ----
    def argv(self, argv):
        """argv run inside the namespaces."""
        return [*ORPHAN_KILL, "nsenter", "-t", str(self.holder.pid), "-n", "-m", "--",
                *map(str, argv)]

    def spawn(self, name, argv, log, env=None):
        out = open(log, "ab")
        self.procs[name] = subprocess.Popen(self.argv(argv), stdout=out, stderr=subprocess.STDOUT,
                                            env=env, start_new_session=True)
        out.close()
        return self.procs[name]

    def run(self, argv, **kw):
        return subprocess.run(self.argv(argv), **kw)

    def alive(self, name):
        p = self.procs.get(name)
        return p is not None and p.poll() is None

    def stop_process(self, name, timeout=30):
        p = self.procs.pop(name, None)
        if p is None or p.poll() is not None:
            return
        p.send_signal(signal.SIGTERM)
        try:
            p.wait(timeout)
        except subprocess.TimeoutExpired:
            p.kill()
            p.wait(10)

    def kill_process(self, name):
        p = self.procs.pop(name)
        p.kill()
        p.wait(10)

    # ---- the network inside ----
    def _enter_net(self):
        fd = os.open(f"/proc/{self.holder.pid}/ns/net", os.O_RDONLY)
        try:
            if ctypes.CDLL(None, use_errno=True).setns(fd, CLONE_NEWNET) != 0:
                raise OSError(ctypes.get_errno(), "setns into the sandbox's network")
        finally:
            os.close(fd)

    def urlopen(self, url, timeout=5, data=None):
        """The body of url, fetched from inside the network namespace (by a
        thread that entered it: setns moves only the calling thread)."""
        if self._net is None:
            self._net = concurrent.futures.ThreadPoolExecutor(1, initializer=self._enter_net)

        def get():
            with urllib.request.urlopen(url, timeout=timeout, data=data) as r:
                return r.read()
        return self._net.submit(get).result(timeout + 5)

    # ---- the end ----
    def members(self):
        """PIDs of the run: in the holder's mount namespace (containerd's
        shims too) or in the run's cgroups (the containers)."""
        pids = set()
        # The holder's namespace read as this process's own would make every
        # process of the machine a member, to be killed by stop().
        if self.mnt_ns == os.readlink("/proc/self/ns/mnt"):
            raise AssertionError(f"the sandbox's mount namespace {self.mnt_ns} is this "
                                 "process's own: refusing to list its processes")
        for p in pathlib.Path("/proc").iterdir():
            if p.name.isdigit() and self.mnt_ns and int(p.name) != self.holder.pid:
                try:
                    if os.readlink(p / "ns/mnt") == self.mnt_ns:
                        pids.add(int(p.name))
                except OSError:
                    pass
        for h in cgroup_hierarchies():
            root = h / self.cgroup_root.lstrip("/")
            for procs in root.rglob("cgroup.procs") if root.is_dir() else []:
                try:
                    pids.update(int(x) for x in procs.read_text().split())
                except (OSError, ValueError):
                    pass
        return pids

    def stop(self, order=()):
        """Named processes in order (SIGTERM, then SIGKILL), every other
        process of the run by PID, the holder, then the cgroups."""
        try:
            for name in order:
                self.stop_process(name)
            for name in list(self.procs):
                self.stop_process(name)
            # Even with the holder gone (killed from outside), processes
            # that entered its namespaces keep them, and their mounts, alive.
            if self.mnt_ns is not None:
                for _ in range(3):  # shims may start a last child while dying
                    pids = self.members()
                    if not pids:
                        break
                    for pid in pids:
                        try:
                            os.kill(pid, signal.SIGKILL)
                        except ProcessLookupError:
                            pass
                    try:
                        wait_for("the run's processes to end", lambda: not (
                            self.members() & pids), 10, 0.05)
                    except AssertionError:
                        pass
        finally:
            if self._net is not None:
                self._net.shutdown(wait=False)
            if self.holder is not None and self.holder.poll() is None:
                self.holder.kill()
                self.holder.wait(10)
            self.remove_cgroups()
            self.remove_mount_points()

    def remove_mount_points(self):
        """The folders this run made (or took over) for its mounts, innermost
        first, once no other namespace mounts them; only empty ones go."""
        with machine_lock():
            busy = mounted_elsewhere(self.made)
            for d in sorted(set(self.made), key=lambda d: d.count("/"), reverse=True):
                if d not in busy:
                    try:
                        os.rmdir(d)
                    except OSError:
                        pass
        self.made = []

    def remove_cgroups(self):
        for h in cgroup_hierarchies():
            root = h / self.cgroup_root.lstrip("/")
            if not root.is_dir():
                continue
            dirs = sorted((d for d in root.rglob("*") if d.is_dir()), key=lambda d: len(d.parts),
                          reverse=True) + [root]

            def gone():
                for d in dirs:
                    try:
                        d.rmdir()
                    except FileNotFoundError:
                        pass
                    except OSError:
                        return False
                return True
            try:
                wait_for(f"{root} to be removable", gone, 10, 0.05)
            except AssertionError:
                pass  # left for the report: its tasks would not die
