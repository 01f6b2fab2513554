"""Trying gpulet changes nothing on the machine: under --simulate every
output defaults to a private folder (printed at start, removed at exit) and
/metrics to loopback; the simulated node brings a simulated driver root, so
`cdi generate` and `doctor` work; every --simulate command of the README
works as written."""
import json
import os
import pathlib
import re
import shutil
import signal
import stat
import subprocess
import tempfile
import time

import pytest
import yaml

from conftest import ROOT, load_node
from kubelet import wait_for
from test_cdi import driver_root  # noqa: F401 (a fixture: a driver root with an ld cache)

ROOT_ONLY = pytest.mark.skipif(os.geteuid() != 0 or shutil.which("unshare") is None,
                               reason="needs root and unshare(1) for a network namespace of "
                                      "its own (the default port 9400 is machine-wide)")

# Where gpulet writes on a real node; a simulated run must leave them as they were.
REAL_NODE_PATHS = ["/etc/kubernetes/node-feature-discovery/features.d/gfd",
                   "/etc/kubernetes/node-feature-discovery/features.d",
                   "/var/lib/kubelet/device-plugins", "/var/lib/gpulet", "/var/run/cdi", "/etc/cdi"]

# Runs argv in a new network namespace with its loopback up, as the same process.
IN_NETNS = ("import fcntl, os, socket, struct, sys\n"
            "s = socket.socket()\n"
            "fcntl.ioctl(s, 0x8914, struct.pack('16sH14x', b'lo', 0x41))  # SIOCSIFFLAGS UP|RUNNING\n"
            "os.execv(sys.argv[1], sys.argv[1:])\n")


def snapshot(paths):
    def one(p):
        try:
            st = os.lstat(p)
        except FileNotFoundError:
            return None
        listing = sorted(os.listdir(p)) if stat.S_ISDIR(st.st_mode) else None
        return (st.st_ino, st.st_mtime_ns, listing)
    return {p: one(p) for p in paths}


@pytest.fixture
def tmpdir_env():
    """A short TMPDIR of the test's own (socket paths stay under 108 bytes),
    and gpulet's environment without the tests' simulator settings."""
    tmp = pathlib.Path(tempfile.mkdtemp(prefix="gs-", dir="/tmp"))
    env = {k: v for k, v in os.environ.items()
           if not k.startswith(("GPULET_", "DCGM_")) and k != "NVIDIA_DRIVER_ROOT"}
    env["TMPDIR"] = str(tmp)
    yield tmp, env
    shutil.rmtree(tmp, ignore_errors=True)


class Daemon:
    def __init__(self, argv, env, log, netns=True, cwd=None):
        self.log = log
        cmd = ["unshare", "--net", "/usr/bin/python3", "-c", IN_NETNS, *map(str, argv)] \
            if netns else list(map(str, argv))
        self.proc = subprocess.Popen(cmd, env=env, cwd=cwd, stdin=subprocess.DEVNULL,
                                     stdout=subprocess.DEVNULL, stderr=open(log, "w"),
                                     start_new_session=True)

    def text(self):
        return self.log.read_text()

    def running(self):
        return wait_for(lambda: "gpulet running" in self.text() or self.proc.poll() is not None,
                        30, 0.02, "gpulet to start") and self.proc.poll() is None

    def folder(self):
        m = re.search(r"private folder, removed at exit\" folder=(\S+)", self.text())
        assert m, self.text()
        return pathlib.Path(m.group(1))

    def stop(self, sig=signal.SIGTERM):
        self.proc.send_signal(sig)
        return self.proc.wait(30)

    def kill(self):
        if self.proc.poll() is None:
            self.proc.kill()
            self.proc.wait()


def listening(pid):
    """(address, port) of every listening TCP socket in pid's network namespace."""
    found = []
    for name in ("tcp", "tcp6"):
        for line in pathlib.Path(f"/proc/{pid}/net/{name}").read_text().splitlines()[1:]:
            local, state = line.split()[1], line.split()[3]
            if state == "0A":
                addr, port = local.split(":")
                found.append((addr, int(port, 16)))
    return found


@ROOT_ONLY
@pytest.mark.parametrize("sig", [signal.SIGTERM, signal.SIGINT])
def test_a_simulated_run_writes_only_into_its_private_folder(build, tmpdir_env, sig):
    tmp, env = tmpdir_env
    before = snapshot(REAL_NODE_PATHS)
    d = Daemon([build / "gpulet", "--simulate", "dgx-a100", "run", "--collect-interval", "200"],
               env, tmp.parent / f"{tmp.name}.log")
    try:
        assert d.running(), d.text()
        folder = d.folder()
        assert folder.parent == tmp and folder.name.startswith("gpulet-simulate-")
        assert stat.S_IMODE(folder.stat().st_mode) == 0o700
        wait_for(lambda: (folder / "features.d" / "gfd").exists(), 10, 0.02, "the labels file")
        assert "nvidia.com/gpu.count=8" in (folder / "features.d" / "gfd").read_text()
        assert (folder / "device-plugins" / "nvidia-gpu.sock").exists()
        # /metrics on loopback only, at dcgm-exporter's port
        wait_for(lambda: listening(d.proc.pid), 10, 0.02, "the metrics port")
        assert listening(d.proc.pid) == [("0100007F", 9400)]
        assert snapshot(REAL_NODE_PATHS) == before
        assert "not simulated" not in d.text(), d.text()  # the fan speed among them
        assert d.stop(sig) == 0, d.text()
        assert not folder.exists()
        assert os.listdir(tmp) == []
        assert snapshot(REAL_NODE_PATHS) == before
    finally:
        d.kill()
        pathlib.Path(d.log).unlink(missing_ok=True)


@pytest.mark.parametrize("sig", [signal.SIGTERM, signal.SIGINT, signal.SIGHUP])
def test_a_stop_signal_while_run_starts_still_removes_the_folder(build, tmpdir_env, sig):
    """Between making the private folder and handling signals itself, `run`
    must not die of one and leave the folder behind. It is held in that
    window by a full stderr pipe: its first log line, which follows the
    folder, blocks until the pipe is read."""
    tmp, env = tmpdir_env
    read_end, write_end = os.pipe()
    os.set_blocking(write_end, False)
    for chunk in (b"x" * 4096, b"x"):  # full to the last byte
        try:
            while True:
                os.write(write_end, chunk)
        except BlockingIOError:
            pass
    os.set_blocking(write_end, True)
    proc = subprocess.Popen([build / "gpulet", "--simulate", "t4-pcie", "run", "--no-metrics"],
                            env=env, stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL,
                            stderr=write_end, start_new_session=True)
    os.close(write_end)
    try:
        wait_for(lambda: os.listdir(tmp) or proc.poll() is not None, 30, 0.01,
                 "the private folder")
        folders = os.listdir(tmp)
        assert folders and proc.poll() is None
        proc.send_signal(sig)
        if sig == signal.SIGHUP:  # a reload, once handled: then a stop
            proc.send_signal(signal.SIGTERM)
        with os.fdopen(read_end, "rb") as err:
            text = err.read()[-4000:].decode(errors="replace")  # until gpulet exits
        read_end = None
        assert proc.wait(30) == 0, text
        assert os.listdir(tmp) == [], text
        assert "gpulet stopped" in text
    finally:
        if read_end is not None:
            os.close(read_end)
        if proc.poll() is None:
            proc.kill()
            proc.wait()


def test_sigquit_stops_a_simulated_run_and_removes_its_folders(build, tmpdir_env):
    """SIGQUIT (Ctrl-backslash) would end gpulet with a core dump, past its cleanup:
    under --simulate `run` stops cleanly on it, as on SIGTERM."""
    tmp, env = tmpdir_env
    log = tmp.parent / f"{tmp.name}.log"
    d = Daemon([build / "gpulet", "--simulate", "t4-pcie", "run", "--no-metrics"], env, log,
               netns=False)
    try:
        assert d.running(), d.text()
        assert os.listdir(tmp)
        assert d.stop(signal.SIGQUIT) == 0, d.text()
        assert os.listdir(tmp) == [], d.text()
        assert "signal=SIGQUIT" in d.text()
    finally:
        d.kill()
        log.unlink(missing_ok=True)


def dead_pid():
    p = subprocess.Popen(["true"])
    p.wait()
    return p.pid


def test_the_next_simulate_removes_what_a_killed_one_left(build, tmpdir_env):
    """SIGKILL cannot be caught: the private folder and the simulated
    sysfs stay. The next --simulate start removes them, by their owner
    mark, and nothing else: not a live run's, not a folder without a mark
    or of another PID namespace or open to others, not through a link."""
    tmp, env = tmpdir_env
    logs = [tmp.parent / f"{tmp.name}-{n}.log" for n in range(2)]
    outside = pathlib.Path(tempfile.mkdtemp(prefix="gs-outside-", dir="/tmp"))
    live = killed = None
    try:
        live = Daemon([build / "gpulet", "--simulate", "t4-pcie", "run", "--no-metrics"], env,
                      logs[0], netns=False)
        assert live.running(), live.text()
        wait_for(lambda: len(os.listdir(tmp)) == 2, 10, 0.02, "the folder and the sysfs")
        live_left = set(os.listdir(tmp))
        killed = Daemon([build / "gpulet", "--simulate", "t4-pcie", "run", "--no-metrics"], env,
                        logs[1], netns=False)
        assert killed.running(), killed.text()
        wait_for(lambda: len(os.listdir(tmp)) == 4, 10, 0.02, "the second pair")
        left = set(os.listdir(tmp)) - live_left
        folder = killed.folder()
        assert {p.split("-")[1] for p in left} == {"simulate", "sim"}
        mark = (folder / ".gpulet-owner").read_text()
        killed.kill()
        assert set(os.listdir(tmp)) == live_left | left  # what SIGKILL leaves

        # a stale mark: the killed run's, naming a PID that has ended
        stale = re.sub(r"pid=\d+", f"pid={dead_pid()}", mark)
        (outside / "keep").write_text("not gpulet's")

        def fake(name, text, mode=0o700):
            p = tmp / name
            p.mkdir()
            if text is not None:
                (p / ".gpulet-owner").write_text(text)
            p.chmod(mode)
            return p
        escape = fake("gpulet-simulate-escape", stale)
        (escape / "out").symlink_to(outside)
        (escape / "file").symlink_to(outside / "keep")
        kept = [fake("gpulet-simulate-nomark", None),
                fake("gpulet-simulate-otherns", re.sub(r"pidns=\d+", "pidns=1", stale)),
                fake("gpulet-simulate-open", stale, 0o755),
                fake("gpulet-simulate-fifo", None),
                fake("gpulet-other-name", stale)]
        os.mkfifo(kept[3] / ".gpulet-owner")
        (tmp / "gpulet-simulate-link").symlink_to(fake("linked-target", stale))

        r = subprocess.run([build / "gpulet", "--simulate", "t4-pcie", "info"], env=env,
                           capture_output=True, text=True, timeout=60)
        assert r.returncode == 0, r.stderr
        assert not (left & set(os.listdir(tmp))), r.stderr
        assert not escape.exists() and (outside / "keep").read_text() == "not gpulet's"
        assert r.stderr.count("private folder removed: its maker is gone") == 3, r.stderr
        for p in kept + [tmp / "gpulet-simulate-link", tmp / "linked-target"]:
            assert os.path.lexists(p), p
        assert live_left <= set(os.listdir(tmp))
        assert live.stop() == 0, live.text()
        assert not (live_left & set(os.listdir(tmp)))
    finally:
        for d in (live, killed):
            if d:
                d.kill()
        for log in logs:
            log.unlink(missing_ok=True)
        shutil.rmtree(outside, ignore_errors=True)


def test_a_spec_file_naming_the_private_folder_is_refused(build, tmpdir_env, tmp_path,
                                                          driver_root):  # noqa: F811
    """The simulated driver root goes when gpulet exits: a spec file naming
    it would outlive it and fail every container that asks for a GPU.
    Printed, the spec is for reading; written, it needs a lasting root."""
    tmp, env = tmpdir_env
    out = tmp_path / "nvidia.yaml"
    r = subprocess.run([build / "gpulet", "--simulate", "dgx-a100", "cdi", "generate",
                        "--output", out], env=env, capture_output=True, text=True, timeout=60)
    assert r.returncode == 2, r.stderr
    assert "--driver-root" in r.stderr and "removed when gpulet exits" in r.stderr, r.stderr
    assert not out.exists() and os.listdir(tmp) == []
    r = subprocess.run([build / "gpulet", "--simulate", "dgx-a100", "cdi", "generate",
                        "--driver-root", driver_root, "--output", out], env=env, capture_output=True,
                       text=True, timeout=60)
    assert r.returncode == 0, r.stderr
    assert str(tmp) not in out.read_text()


@pytest.mark.parametrize("args", [["cdi", "generate"], ["doctor"], ["info"]])
def test_a_reader_that_stops_early_leaves_no_folder(build, tmpdir_env, args):
    """`gpulet --simulate dgx-a100 cdi generate | head` closes the pipe
    gpulet writes to: SIGPIPE must wait until the folders are gone."""
    tmp, env = tmpdir_env
    read_end, write_end = os.pipe()
    os.close(read_end)
    r = subprocess.run([build / "gpulet", "--simulate", "dgx-a100", *args], env=env,
                       stdout=write_end, stderr=subprocess.PIPE, timeout=60)
    os.close(write_end)
    assert r.returncode == -signal.SIGPIPE, r.stderr[-2000:]
    assert os.listdir(tmp) == []


@ROOT_ONLY
def test_a_folder_that_cannot_be_removed_is_named(build, tmpdir_env):
    """What is left behind must be said, not found later: a mount inside
    the private folder (in gpulet's own mount namespace here) stops its
    removal."""
    tmp, env = tmpdir_env
    log = tmp.parent / f"{tmp.name}.log"
    proc = subprocess.Popen(["unshare", "--mount", "--propagation", "private", build / "gpulet",
                             "--simulate", "t4-pcie", "run", "--no-metrics"], env=env,
                            stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL,
                            stderr=open(log, "w"), start_new_session=True)
    try:
        wait_for(lambda: "gpulet running" in log.read_text() or proc.poll() is not None, 30,
                 0.02, "gpulet to start")
        m = re.search(r"folder=(\S+)", log.read_text())
        assert m and proc.poll() is None, log.read_text()
        subprocess.run(["nsenter", "-t", str(proc.pid), "-m", "mount", "-t", "tmpfs", "gpulet-test",
                        f"{m.group(1)}/state"], check=True)
        proc.send_signal(signal.SIGTERM)
        assert proc.wait(30) == 0, log.read_text()
        assert re.search(r'cannot remove the simulated node\'s private folder .*by hand" '
                         f"folder={m.group(1)}$", log.read_text(), re.M), log.read_text()
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
        log.unlink(missing_ok=True)


def test_explicit_paths_and_addresses_still_win(build, tmpdir_env, tmp_path):
    tmp, env = tmpdir_env
    env["DCGM_EXPORTER_LISTEN"] = "127.0.0.1:0"
    labels = tmp_path / "labels" / "gfd"
    labels.parent.mkdir()
    d = Daemon([build / "gpulet", "--simulate", "t4-pcie", "run", "--labels-file", labels,
                "--device-plugin-dir", tmp_path / "dp", "--collect-interval", "200"],
               env, tmp_path / "gpulet.log", netns=False)
    try:
        assert d.running(), d.text()
        assert f"device_plugin_dir={tmp_path / 'dp'} labels={labels} metrics=127.0.0.1:0" \
            in d.text()
        wait_for(labels.exists, 10, 0.02, "the labels file")
        assert (tmp_path / "dp" / "nvidia-gpu.sock").exists()
        assert d.stop() == 0, d.text()
        assert os.listdir(tmp) == []
    finally:
        d.kill()


def test_commands_that_write_nothing_make_no_folder(gpulet, tmpdir_env):
    tmp, env = tmpdir_env
    for args in (["info"], ["labels"], ["info", "--json"], ["version"]):
        r = gpulet("--simulate", "a100-mig", *args, env=env)
        assert r.rc == 0, r.err
        assert os.listdir(tmp) == [], args


def driver_libraries():
    """The simulated driver's library list, read from its one place."""
    text = (ROOT / "src" / "simroot" / "simroot.c").read_text()
    table = text.split("driver_libraries[] = {")[1].split("};")[0]
    return re.findall(r'\{"([^"]+)", (?:"([^"]+)"|NULL)\}', table)


def test_cdi_generate_on_a_simulated_node(gpulet, tmpdir_env):
    tmp, env = tmpdir_env
    r = gpulet("--simulate", "dgx-a100", "cdi", "generate", env=env)
    assert r.rc == 0, r.err
    assert os.listdir(tmp) == []  # the driver root went with gpulet
    spec = yaml.safe_load(r.out)
    version = load_node("dgx-a100")["driver_version"]
    root = re.search(r"hostPath: (\S+/gpulet-simulate-\w+/driver)/", r.out).group(1)
    assert root.startswith(str(tmp))
    assert [d["name"] for d in spec["devices"]] == [
        *map(str, range(8)), *sorted(g["uuid"] for g in load_node("dgx-a100")["gpus"]), "all"]
    edits = spec["containerEdits"]
    assert [n["path"] for n in edits["deviceNodes"]] == [
        "/dev/nvidiactl", "/dev/nvidia-uvm", "/dev/nvidia-uvm-tools", "/dev/nvidia-modeset"]
    mounts = {m["containerPath"]: m["hostPath"] for m in edits["mounts"]}
    libdir = "/usr/lib/x86_64-linux-gnu"
    libraries = dict(driver_libraries())
    assert len(libraries) >= 20
    # every library the spec mounts is one of the simulated driver's, at its
    # versioned name and its soname; those of each capability are there
    mounted = {p[len(root + libdir) + 1:] for p in mounts.values() if p.startswith(root + libdir)}
    assert mounted == {f"{name}.so.{version}" for name in libraries} & mounted
    for name in ("libnvidia-ml", "libnvidia-cfg", "libcuda", "libnvidia-ptxjitcompiler",
                 "libnvidia-nvvm", "libnvidia-gpucomp", "libnvcuvid", "libnvidia-encode",
                 "libEGL_nvidia", "libnvidia-glcore"):
        real = f"{libdir}/{name}.so.{version}"
        assert mounts[real] == root + real, name
        if libraries[name]:
            assert mounts[f"{libdir}/{libraries[name]}"] == root + real, name
    assert mounts["/usr/bin/nvidia-smi"] == root + "/usr/bin/nvidia-smi"
    assert mounts[f"/lib/firmware/nvidia/{version}/gsp_ga10x.bin"].startswith(root)
    assert edits["hooks"][0]["args"][:2] == ["gpulet-hook", "update-ldcache"]


def test_a_relative_or_unusable_tmpdir_still_gives_absolute_paths_or_says_why(build, tmpdir_env):
    """A CDI spec's host paths and the daemon's folders must be absolute: a
    relative TMPDIR is taken from the working folder; one that is not a
    folder, or too long to hold the private folder, is named."""
    tmp, env = tmpdir_env
    (tmp / "rel").mkdir()
    r = subprocess.run([build / "gpulet", "--simulate", "t4-pcie", "cdi", "generate"],
                       env={**env, "TMPDIR": "rel"}, cwd=tmp, capture_output=True, text=True,
                       timeout=60)
    assert r.returncode == 0, r.stderr
    paths = re.findall(r"hostPath: (\S+)", r.stdout)
    assert paths and all(p.startswith(f"{tmp}/rel/gpulet-simulate-") for p in paths), paths
    assert os.listdir(tmp / "rel") == []
    (tmp / "file").write_text("")
    deep = tmp  # a folder whose path fits PATH_MAX (4096) but not with the folder's name
    while len(str(deep)) < 4080 - 101:
        deep = deep / ("x" * 100)
    deep = deep / ("y" * (4080 - len(str(deep)) - 1))
    deep.mkdir(parents=True)
    for bad, why in ((tmp / "file", "Not a directory"), (tmp / "absent", "No such file"),
                     (deep, "too long")):
        r = subprocess.run([build / "gpulet", "--simulate", "t4-pcie", "cdi", "generate"],
                           env={**env, "TMPDIR": str(bad)}, capture_output=True, text=True,
                           timeout=60)
        assert r.returncode == 1 and "TMPDIR" in r.stderr and why in r.stderr, r.stderr[-300:]


def test_cdi_generate_on_a_simulated_mig_node_names_the_capabilities(gpulet, tmpdir_env):
    tmp, env = tmpdir_env
    r = gpulet("--simulate", "a100-mig", "cdi", "generate", "--format", "json", env=env)
    assert r.rc == 0, r.err
    spec = json.loads(r.out)
    node = load_node("a100-mig")
    for g, gpu in enumerate(node["gpus"]):
        for m, mig in enumerate(gpu["mig_devices"]):
            dev = next(d for d in spec["devices"] if d["name"] == f"{g}:{m}")
            paths = [n["path"] for n in dev["containerEdits"]["deviceNodes"]]
            gi, ci = mig["gpu_instance_id"], mig["compute_instance_id"]
            # the driver's numbering: after config (1) and monitor (2), nine
            # minors per GPU instance (its own, then its compute instances 0-7)
            first = 3 + (g * 15 + gi) * 9
            assert paths == [f"/dev/nvidia{g}", f"/dev/nvidia-caps/nvidia-cap{first}",
                             f"/dev/nvidia-caps/nvidia-cap{first + 1 + ci}"], (g, m)


def test_explicit_driver_root_wins_over_the_simulated_one(gpulet, tmpdir_env, tmp_path):
    tmp, env = tmpdir_env
    r = gpulet("--simulate", "dgx-a100", "cdi", "generate", "--driver-root", tmp_path, env=env)
    assert r.rc == 1 and f"the driver root's ld cache {tmp_path}/etc/ld.so.cache" in r.err
    assert os.listdir(tmp) == []


def test_doctor_on_a_simulated_node(gpulet, tmpdir_env):
    tmp, env = tmpdir_env
    r = gpulet("--simulate", "t4-pcie", "doctor", "--json", env=env)
    assert r.rc in (0, 1), r.err  # the verdict on kubelet and engine depends on the machine
    checks = {c["check"]: c for c in json.loads(r.out)["checks"]}
    assert checks["driver"]["status"] == "ok"
    # character devices where this process may make them (root), else files
    assert checks["device nodes"]["status"] == ("ok" if os.geteuid() == 0 else "fail")
    assert os.listdir(tmp) == []


def readme_blocks():
    """The README's shell blocks that use --simulate, as lists of commands
    (console blocks: the `$ ` lines)."""
    text = (ROOT / "README.md").read_text()
    blocks = []
    for kind, body in re.findall(r"```(sh|console)\n(.*?)```", text, re.S):
        lines = body.splitlines()
        if kind == "console":
            lines = [l[2:] for l in lines if l.startswith("$ ")]
        lines = [l for l in lines if l.strip() and not l.startswith("#")]
        if any("--simulate" in l for l in lines):
            blocks.append(lines)
    return blocks


def test_the_readme_has_simulate_examples():
    blocks = readme_blocks()
    commands = [l for b in blocks for l in b if "build/gpulet --simulate" in l]
    assert len(commands) >= 6, commands
    assert any(" run" in c and c.rstrip().endswith("&") for c in commands)


@ROOT_ONLY
@pytest.mark.parametrize("block", readme_blocks(), ids=lambda b: b[0][:40])
def test_every_readme_simulate_command_works_as_written(build, tmpdir_env, tmp_path, block):
    """Each line as the README writes it, run from a folder whose build/ is
    the build under test; /tmp/ becomes the test's folder. A daemon (a line
    ending in `&`, or a run in the foreground, which a user stops with
    Ctrl-C) runs in a network namespace of its own; curl runs there too."""
    tmp, env = tmpdir_env
    work = tmp_path / "work"
    work.mkdir()
    (work / "build").symlink_to(build)
    scratch = tmp_path / "scratch"
    scratch.mkdir()
    daemons = []
    try:
        for line in block:
            line = line.split("  #")[0].replace("/tmp/", f"{scratch}/").rstrip()
            if "gpulet " in line and " run" in line and "--simulate" in line:
                argv = line.rstrip("&").split()
                d = Daemon(argv, env, tmp_path / f"daemon-{len(daemons)}.log", cwd=work)
                daemons.append(d)
                assert d.running(), (line, d.text())
                continue
            if "gpulet " in line and "--simulate" not in line:
                continue  # the real driver: not on this machine
            if line.startswith("curl"):
                pid = daemons[-1].proc.pid
                cmd = ["nsenter", f"--net=/proc/{pid}/ns/net", "sh", "-c", line]
                out = wait_for(lambda: subprocess.run(cmd, cwd=work, env=env, text=True,
                                                      capture_output=True).stdout,
                               30, 0.1, f"output of {line}")
                assert out.strip(), line
                continue
            r = subprocess.run(["sh", "-ec", line], cwd=work, env=env, capture_output=True,
                               text=True, timeout=60)
            assert r.returncode == 0, (line, r.stderr)
            if "gpulet" in line:
                assert r.stdout.strip(), line
        for d in daemons:
            folder = d.folder()
            assert d.stop(signal.SIGINT) == 0, d.text()  # Ctrl-C
            assert not folder.exists()
        assert os.listdir(tmp) == []
    finally:
        for d in daemons:
            d.kill()


@pytest.mark.parametrize("engine,real", [("containerd", "/etc/containerd"),
                                         ("docker", "/etc/docker"), ("crio", "/etc/crio")])
def test_runtime_configure_under_simulate_leaves_the_real_engine_alone(gpulet, tmpdir_env,
                                                                      tmp_path, engine, real):
    tmp, env = tmpdir_env
    before = snapshot([real])
    r = gpulet("--simulate", "dgx-a100", "runtime", "configure", "--runtime", engine, env=env)
    assert r.rc == 2 and r.out == ""
    assert "would edit the engine's real configuration: give --config FILE or --dry-run" in r.err
    assert snapshot([real]) == before
    # a file of the user's own, or a dry run, are fine
    r = gpulet("--simulate", "dgx-a100", "runtime", "configure", "--runtime", engine,
               "--config", tmp_path / "engine.conf", "--runtime-path", "/x/gpulet-runtime",
               env=env)
    assert r.rc == 0, r.err
    assert os.listdir(tmp) == []
