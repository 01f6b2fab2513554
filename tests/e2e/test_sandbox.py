"""The sandbox both versions run in (tests/e2e/sandbox.py): private
network and mount namespaces and a cgroup root, and nothing of the run
left once it stops — a process that ignores SIGTERM, one that detached
itself, the bind mounts, the cgroups."""
import os
import pathlib
import subprocess
import tempfile

import pytest

from sandbox import NODE_IP, PRIVATE, Sandbox, cgroup_hierarchies, wait_for


@pytest.fixture
def sandbox():
    s = Sandbox(tempfile.mkdtemp(prefix="gpulet-e2e-"), ["gpulet-e2e-node"])
    s.start()
    s.made_at_start = list(s.made)
    try:
        yield s
    finally:
        s.stop()
        subprocess.run(["rm", "-rf", "--one-file-system", str(s.dir)])


def test_the_sandbox_is_private_and_leaves_nothing(sandbox):
    marker = f"{pathlib.Path(sandbox.dir).name}-marker"
    r = sandbox.run(["sh", "-c", f"touch /var/lib/kubelet/{marker} && ip -o addr show && "
                     "getent hosts gpulet-e2e-node"], capture_output=True, text=True, timeout=30)
    assert r.returncode == 0, r.stderr
    assert NODE_IP in r.stdout and "eth" not in r.stdout  # only lo
    # written inside /var/lib/kubelet: in the run folder, not the machine's folder
    assert sandbox.outside(f"/var/lib/kubelet/{marker}").exists()
    assert not pathlib.Path(f"/var/lib/kubelet/{marker}").exists()

    # one that ignores SIGTERM, one that left its parent's session
    stubborn = sandbox.spawn("stubborn", ["sh", "-c", "trap '' TERM; while :; do sleep 1; done"],
                             sandbox.dir / "stubborn.log")
    sandbox.run(["sh", "-c", "setsid sleep 1000 </dev/null >/dev/null 2>&1 &"], timeout=30)
    detached = wait_for("the detached sleep", lambda: [
        p for p in sandbox.members() if p != stubborn.pid and
        pathlib.Path(f"/proc/{p}/cmdline").read_bytes().startswith(b"sleep\0")], 10)
    assert os.readlink(f"/proc/{detached[0]}/ns/net") != os.readlink("/proc/self/ns/net")
    # a process in the run's cgroups (as a container is) but outside its namespaces
    caged = subprocess.Popen(["sleep", "1000"])
    for h in cgroup_hierarchies():
        (h / sandbox.cgroup_root.lstrip("/") / "cgroup.procs").write_text(str(caged.pid))
    holder = sandbox.holder.pid
    sandbox.procs["stubborn"] = stubborn
    sandbox.stop_process("stubborn", timeout=1)  # SIGTERM ignored: SIGKILL
    assert stubborn.poll() is not None
    sandbox.stop()
    caged.wait(10)
    for pid in (detached[0], holder):
        assert not pathlib.Path(f"/proc/{pid}").exists() or \
            "Z" in pathlib.Path(f"/proc/{pid}/stat").read_text().split()[2]
    assert not [h for h in cgroup_hierarchies() if (h / sandbox.cgroup_root.lstrip("/")).exists()]
    mounts = pathlib.Path("/proc/self/mountinfo").read_text()
    assert str(sandbox.dir) not in mounts
    # the machine's folders it mounted over are still there; none it made is
    assert all(os.path.isdir(p) for p in PRIVATE if p not in sandbox.made_at_start)


def test_a_run_whose_holder_died_is_still_stopped(sandbox):
    """The holder killed from outside (OOM, a stray kill) must not let the
    run's processes, and with them its namespaces and mounts, outlive it."""
    orphan = sandbox.spawn("orphan", ["sh", "-c", "trap '' TERM; while :; do sleep 1; done"],
                           sandbox.dir / "orphan.log")
    inside = wait_for("the orphan's shell inside", lambda: [
        p for p in sandbox.members()
        if pathlib.Path(f"/proc/{p}/cmdline").read_bytes().startswith(b"sh\0")], 10)
    sandbox.procs.pop("orphan")  # known only as a member of the run, as a detached one is
    sandbox.holder.kill()
    sandbox.holder.wait(10)
    sandbox.stop()
    orphan.wait(10)
    for pid in inside:
        assert not pathlib.Path(f"/proc/{pid}").exists() or \
            "Z" in pathlib.Path(f"/proc/{pid}/stat").read_text().split()[2]


def test_a_sandbox_that_shares_this_namespace_stops_nothing_else(sandbox):
    """Should the holder's mount namespace ever read as this process's own,
    stop() would take every process of the machine for a member."""
    ns, sandbox.mnt_ns = sandbox.mnt_ns, os.readlink("/proc/self/ns/mnt")
    try:
        with pytest.raises(AssertionError, match="mount namespace"):
            sandbox.members()
    finally:
        sandbox.mnt_ns = ns  # the fixture's stop() must see the run's own


def test_a_run_folder_with_a_space_in_its_name(tmp_path):
    """The run folder comes from TMPDIR: the holder's shell must take its
    path as one word."""
    s = Sandbox(tempfile.mkdtemp(prefix="gpulet-e2e- x;", dir=tmp_path))
    try:
        s.start()
        r = s.run(["sh", "-c", "touch /var/lib/kubelet/marker"], timeout=30)
        assert r.returncode == 0
        assert s.outside("/var/lib/kubelet/marker").exists()
    finally:
        s.stop()


def test_mount_points_it_made_go_when_the_last_run_using_them_stops():
    """A private path missing on the machine needs an empty folder to mount
    on: made at start, removed at stop, but not while another run (started
    meanwhile, which takes it over) still mounts it."""
    probe = f"/var/lib/{pathlib.Path(tempfile.mktemp(prefix='gpulet-e2e-probe-')).name}/inner"
    assert not os.path.exists(os.path.dirname(probe))
    runs = [Sandbox(tempfile.mkdtemp(prefix="gpulet-e2e-"), private=[probe]) for _ in range(2)]
    try:
        runs[0].start()
        assert os.path.isdir(probe)
        assert runs[0].made == [os.path.dirname(probe), probe]
        runs[1].start()
        assert runs[1].made == [probe]  # taken over
        runs[0].stop()
        assert os.path.isdir(probe)  # the second run still mounts it
        r = runs[1].run(["sh", "-c", f"touch {probe}/x"], timeout=30)
        assert r.returncode == 0 and runs[1].outside(f"{probe}/x").exists()
        assert not os.path.exists(f"{probe}/x")
        runs[1].stop()
        assert not os.path.exists(probe)
        # its parent, which the first run made and could not remove then,
        # is the one thing left: the second run never knew it was made
        assert os.listdir(os.path.dirname(probe)) == []
    finally:
        for s in runs:
            s.stop()
            subprocess.run(["rm", "-rf", "--one-file-system", str(s.dir)])
        for d in (probe, os.path.dirname(probe)):
            if os.path.isdir(d):
                os.rmdir(d)
