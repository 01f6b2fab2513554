"""The simulated CUDA driver and libgpulet-cuda.so, the interposer, driven by
tests/cuda/cudaprog.c (a driver-API program) on the simulated T4 node."""
import os
import re
import shutil
import signal
import subprocess
import tempfile
import threading
import time

import pytest

from conftest import ROOT

MIB = 1 << 20
WAYS = ["direct", "dlsym", "procaddr", "procaddr-ptsz"]
CTX = 64 * MIB  # what the simulated driver and the interposer charge a context


@pytest.fixture
def cuda(build, tmp_path):
    prog = build / "tests" / "cudaprog"
    lib = build / "libgpulet-cuda.so"
    for f in (prog, lib):
        if not f.exists():
            pytest.fail(f"{f} is missing: run `make`")

    def env_for(limits, state_dir):
        env = dict(os.environ)
        env.update({
            "GPULET_SIM_NODE": str(ROOT / "sim" / "nodes" / "t4-pcie.yaml"),
            "GPULET_SIM_DEVICE_STATE": str(tmp_path / "node.device"),
            "LD_LIBRARY_PATH": str(build / "sim" / "current"),
            # The programs carry ASan in this build, the preloaded library not.
            "ASAN_OPTIONS": "verify_asan_link_order=0:detect_leaks=1",
        })
        for k in list(env):
            if k.startswith("GPULET_CUDA_"):
                del env[k]
        if limits is not None:
            env["LD_PRELOAD"] = str(lib)
            env["GPULET_CUDA_STATE_DIR"] = str(state_dir or tmp_path / "state")
            os.makedirs(env["GPULET_CUDA_STATE_DIR"], exist_ok=True)
            env.update(limits)
        return env

    class Cuda:
        tmp = tmp_path

        def run(self, way, *ops, limits=None, state_dir=None, timeout=60, check=True, wrap=()):
            p = subprocess.run([*wrap, str(prog), way, *ops], env=env_for(limits, state_dir),
                               capture_output=True, text=True, timeout=timeout)
            assert p.returncode == 0 or not check, p.stdout + p.stderr
            return p

        def start(self, way, *ops, limits=None, state_dir=None, wrap=()):
            return subprocess.Popen([*wrap, str(prog), way, *ops], env=env_for(limits, state_dir),
                                    stdin=subprocess.PIPE, stdout=subprocess.PIPE,
                                    stderr=subprocess.PIPE, text=True)

    return Cuda()


def lines(out, op):
    return [dict(re.findall(r"(\w+)=(\d+)", l)) for l in out.splitlines() if l.startswith(op + " ")]


def one(out, op):
    found = lines(out, op)
    assert found, out
    return {k: int(v) for k, v in found[-1].items()}


def wait_holding(proc, word="holding"):
    """Reads the process's lines until it says word (it holds its memory,
    or waits). A process that dies ends the wait."""
    out = []
    while True:
        line = proc.stdout.readline()
        if not line:
            break
        out.append(line)
        if line.strip() == word:
            return "".join(out)
    raise AssertionError(f"no {word!r} line: {''.join(out)} {proc.stderr.read()}")


# ---- the simulated driver on its own ----

def test_every_kind_allocates_and_frees_on_every_way(cuda):
    ops = ["info", "alloc:1000000", "pitch:1000:10", "managed:4096", "async:4096", "pool:4096",
           "array:100:100", "array3d:10:10:10", "mipmap:64:64:0:4", "vmm:1", "ctx", "info",
           "freeall", "info"]
    for way in WAYS:
        out = cuda.run(way, *ops).stdout
        for l in out.splitlines():
            assert " rc=0" in l, (way, l)
        infos = lines(out, "info")
        before, during, after = (int(i["free"]) for i in infos)
        assert before == after
        # pitch rounds to 512, the mipmap adds its levels, VMM its granularity
        assert before - during >= 1000000 + 10 * 512 + 3 * 4096 + 40000 + 4000 + 2 * MIB + CTX


def test_driver_errors(cuda):
    out = cuda.run("direct", "alloc:0", "alloc:100000000000", "badfree:0x1234",
                   "badfree:0x4000000000000000", "array:0:4", "mipmap:64:64:0:0").stdout
    rcs = [int(l.split("rc=")[1].split()[0]) for l in out.splitlines()]
    assert rcs == [1, 2, 1, 1, 1, 1]  # INVALID_VALUE, OUT_OF_MEMORY, INVALID_VALUE...


def test_memory_is_shared_by_the_node_and_comes_back_from_the_dead(cuda):
    free0 = one(cuda.run("direct", "info").stdout, "info")["free"]
    holder = cuda.start("direct", "alloc:5000000000", "hold")
    try:
        wait_holding(holder)
        out = cuda.run("direct", "info", "nvml").stdout
        # the other process holds 5 GB and its context
        assert one(out, "info")["free"] == free0 - 5000000000 - CTX
        nv = one(out, "nvml")
        assert nv["used"] >= 5000000000 + 2 * CTX
    finally:
        holder.send_signal(signal.SIGKILL)
        holder.wait()
    assert one(cuda.run("direct", "info").stdout, "info")["free"] == free0


# ---- the interposer ----

def test_pass_through_is_byte_for_byte(cuda):
    ops = ["info", "alloc:1000000", "pitch:1000:10", "vmm:1", "array:100:100", "info", "nvml",
           "freeall", "alloc:100000000000", "badfree:0x1234", "run:busy_10:1:100:0.05", "info"]
    for way in WAYS:
        plain = cuda.run(way, *ops)
        with_lib = cuda.run(way, *ops, limits={})
        # only what moves with time differs: launch counts and utilisation
        strip = lambda s: re.sub(r"launches=\d+ wall_ns=\d+ queued_ns=\d+|util=\d+", "", s)
        assert strip(with_lib.stdout) == strip(plain.stdout)
        assert with_lib.stderr == plain.stderr == ""


LIMIT = 100 * MIB


@pytest.mark.parametrize("way", WAYS)
@pytest.mark.parametrize("kind,chunk", [
    ("alloc", MIB), ("pitch", 1024), ("managed", 1000000), ("async", MIB), ("pool", MIB),
    ("array", 1024), ("vmm", 2 * MIB), ("array3d", 256), ("mipmap", 512)])
def test_limit_holds_on_every_path(cuda, way, kind, chunk):
    fill = f"fill:{kind}:{chunk}" if kind != "mipmap" else "fill:alloc:1"
    ops = ["info", fill, "info"]
    if kind == "mipmap":  # 512x512 floats over 2 levels: 1.25 MiB each
        ops = ["info"] + ["mipmap:512:512:1:2"] * 40 + ["info"]
    out = cuda.run(way, *ops, limits={"GPULET_CUDA_MEMORY_LIMIT": "100Mi"})
    first, last = lines(out.stdout, "info")[0], lines(out.stdout, "info")[-1]
    assert int(first["total"]) == LIMIT
    assert int(first["free"]) == LIMIT - CTX
    left = int(last["free"])
    if kind == "mipmap":
        granted = [l for l in out.stdout.splitlines() if l.startswith("mipmap rc=0")]
        refused = [l for l in out.stdout.splitlines() if l.startswith("mipmap rc=2")]
        assert len(granted) == (LIMIT - CTX) // (512 * 512 * 4 + 256 * 256 * 4) and refused
    else:
        f = one(out.stdout, "fill")
        assert f["rc"] == 2  # CUDA_ERROR_OUT_OF_MEMORY
        assert f["total"] <= LIMIT - CTX
    assert "memory limit reached" in out.stderr
    assert out.stderr.count("gpulet-cuda:") == 1  # said once


def test_per_device_limit_and_context_size(cuda):
    limits = {"GPULET_CUDA_MEMORY_LIMIT": "1Gi", "GPULET_CUDA_MEMORY_LIMIT_0": "512Mi",
              "GPULET_CUDA_CONTEXT_SIZE": "1Mi"}
    out = cuda.run("direct", "info", "fill:alloc:1048576", limits=limits).stdout
    assert one(out, "info")["total"] == 512 * MIB
    assert one(out, "fill")["total"] == 511 * MIB
    limits["PROG_DEVICE"] = "1"
    limits.pop("GPULET_CUDA_MEMORY_LIMIT_0")
    out = cuda.run("direct", "info", limits=limits).stdout
    assert one(out, "info")["total"] == 1 << 30


def test_bad_settings_are_said_and_ignored(cuda):
    out = cuda.run("direct", "info", limits={"GPULET_CUDA_MEMORY_LIMIT": "lots",
                                             "GPULET_CUDA_COMPUTE_SHARE": "250"})
    assert "GPULET_CUDA_MEMORY_LIMIT=lots" in out.stderr
    assert "GPULET_CUDA_COMPUTE_SHARE=250" in out.stderr
    assert one(out.stdout, "info")["total"] == 15360 * MIB


def test_views_are_clamped(cuda):
    out = cuda.run("direct", "alloc:10485760", "info", "nvml",
                   limits={"GPULET_CUDA_MEMORY_LIMIT": "1Gi"}).stdout
    info, nv = one(out, "info"), one(out, "nvml")
    assert info["total"] == nv["total"] == 1 << 30
    assert info["free"] == nv["free"] == (1 << 30) - CTX - 10485760
    assert nv["used"] == CTX + 10485760
    assert nv["v2rc"] == 0 and out.count("total=1073741824") == 3


@pytest.mark.parametrize("procs", [2, 8])
def test_processes_of_a_container_share_one_limit(cuda, procs):
    limits = {"GPULET_CUDA_MEMORY_LIMIT": "256Mi", "GPULET_CUDA_CONTEXT_SIZE": "1Mi"}
    started = [cuda.start("direct", "wait", "fill:alloc:1048576", "hold", limits=limits)
               for _ in range(procs)]
    try:
        # all have their contexts; then they fill at once
        for p in started:
            wait_holding(p, "waiting")
        for p in started:
            p.stdin.write("go\n")
            p.stdin.flush()
        outs = [wait_holding(p) for p in started]
        total = sum(one(o, "fill")["total"] for o in outs)
        # never a byte over, and the limit is reached
        assert total == 256 * MIB - procs * MIB
        # a latecomer does not even get a context
        late = cuda.run("direct", "info", limits=limits, check=False)
        assert late.returncode == 1 and late.stdout == "setup rc=2\n"
        assert "cuDevicePrimaryCtxRetain of 1048576 bytes" in late.stderr
    finally:
        for p in started:
            p.kill()
            p.wait()


def test_a_killed_process_gives_its_share_back(cuda):
    limits = {"GPULET_CUDA_MEMORY_LIMIT": "256Mi", "GPULET_CUDA_CONTEXT_SIZE": "1Mi"}
    holder = cuda.start("direct", "fill:vmm:2097152", "hold", limits=limits)
    try:
        got = one(wait_holding(holder), "fill")["total"]
        assert got == 254 * MIB
    finally:
        holder.send_signal(signal.SIGKILL)
        holder.wait()
    out = cuda.run("direct", "fill:alloc:1048576", limits=limits).stdout
    assert one(out, "fill")["total"] == 255 * MIB


NOBODY = ["setpriv", "--reuid", "65534", "--regid", "65534", "--clear-groups"]


def shared_folders(cuda):
    """A state folder as gpulet makes a container's (0777) and a simulated
    GPU every user reaches, outside pytest's private temporary folders."""
    # in /tmp, not TMPDIR: other users must reach it, and the test runner's
    # private TMPDIR is closed to them (removed by each test's finally)
    top = tempfile.mkdtemp(prefix="gpulet-uids-", dir="/tmp")
    os.chmod(top, 0o755)
    state = os.path.join(top, "state")
    os.mkdir(state)
    os.chmod(state, 0o777)
    sim = os.path.join(top, "sim")
    os.mkdir(sim)
    os.chmod(sim, 0o777)
    return top, state, {"GPULET_SIM_DEVICE_STATE": os.path.join(sim, "node.device")}


@pytest.mark.skipif(os.geteuid() != 0, reason="running as another UID needs root")
def test_processes_under_other_uids_share_one_budget(cuda):
    """Issue #23 item 2: root holds 100 MiB + a context of a 512 MiB limit;
    a process as nobody gets the rest, not a budget of its own."""
    top, state, sim = shared_folders(cuda)
    limits = dict(sim, GPULET_CUDA_MEMORY_LIMIT="512Mi")
    holder = cuda.start("direct", "alloc:104857600", "hold", limits=limits, state_dir=state)
    try:
        wait_holding(holder)
        out = cuda.run("direct", "fill:alloc:1048576", limits=limits, state_dir=state,
                       wrap=NOBODY)
        assert one(out.stdout, "fill")["total"] == 512 * MIB - 100 * MIB - 2 * CTX, out.stderr
    finally:
        holder.send_signal(signal.SIGKILL)
        holder.wait()
        shutil.rmtree(top)


@pytest.mark.skipif(os.geteuid() != 0, reason="running as another UID needs root")
def test_a_process_that_cannot_join_the_budget_is_refused(cuda):
    """A state folder this UID cannot write: no budget of its own, every
    allocation refused (here its context already), said once."""
    top, state, sim = shared_folders(cuda)
    os.chmod(state, 0o755)
    try:
        out = cuda.run("direct", "alloc:1048576", limits=dict(sim, GPULET_CUDA_MEMORY_LIMIT="512Mi"),
                       state_dir=state, wrap=NOBODY, check=False)
        assert "setup rc=2" in out.stdout, out.stdout + out.stderr
        assert out.stderr.count("cannot join its container's budget") == 1, out.stderr
    finally:
        shutil.rmtree(top)


def test_a_dead_process_in_another_pid_namespace_gives_back_at_once(cuda):
    """Issue #23 item 10: two processes, each PID 1 of a PID namespace of
    its own, share a 512 MiB limit. When one is killed, the other sees its
    memory back at once (no allocation refused first), and exactly that."""
    limits = {"GPULET_CUDA_MEMORY_LIMIT": "512Mi"}
    ns = ["unshare", "--pid", "--fork"]
    a = cuda.start("direct", "alloc:104857600", "hold", limits=limits, wrap=ns)
    b = None
    try:
        wait_holding(a)
        b = cuda.start("direct", "alloc:52428800", "info", "wait", "info", "fill:alloc:1048576",
                       limits=limits, wrap=ns)
        before = wait_holding(b, "waiting")
        assert one(before, "info")["free"] == 512 * MIB - 2 * CTX - 150 * MIB, before
        child = open(f"/proc/{a.pid}/task/{a.pid}/children").read().split()
        assert len(child) == 1
        os.kill(int(child[0]), signal.SIGKILL)
        a.wait(timeout=30)
        out, err = b.communicate("\n", timeout=60)
        assert one(out, "info")["free"] == 512 * MIB - CTX - 50 * MIB, out + err
        assert one(out, "fill")["total"] == 512 * MIB - CTX - 50 * MIB, out + err
    finally:
        for p in (a, b):
            if p is not None and p.poll() is None:
                p.kill()
                p.wait()


def test_threads_racing_the_first_primary_retain_charge_one_context(cuda):
    """Issue #23 item 4: 16 threads retain device 1's primary context at
    once, 20 rounds: one context is charged each time, and none is left
    charged once all are released."""
    out = cuda.run("direct", "retainrace:1:16:20",
                   limits={"GPULET_CUDA_MEMORY_LIMIT": "1Gi"}).stdout
    rounds = lines(out, "retainrace")
    assert len(rounds) == 21, out
    for r in rounds[:-1]:
        assert int(r["ok"]) == 16 and int(r["free"]) == 1024 * MIB - CTX, out
    assert int(rounds[-1]["free"]) == 1024 * MIB - CTX, out


def test_a_graph_at_a_reused_address_is_measured_anew(build, tmp_path):
    """Issue #23 item 3: execs of a cheap graph and of an expensive one take
    turns at one address (each destroyed before the next is made): the
    expensive one is charged what it costs, not the rate last measured at
    the address (30 % share). Run on the plain build: ASan's allocator does
    not hand a freed handle's address straight back, glibc's does."""
    plain = build.parent / "build" if "asan" in build.name else build
    prog, lib = plain / "tests" / "cudaprog", plain / "libgpulet-cuda.so"
    for f in (prog, lib):
        if not f.exists():
            pytest.fail(f"{f} is missing: run `make build`")
    env = {k: v for k, v in os.environ.items() if not k.startswith("GPULET_CUDA_")}
    env.update({"GPULET_SIM_NODE": str(ROOT / "sim" / "nodes" / "t4-pcie.yaml"),
                "GPULET_SIM_DEVICE_STATE": str(tmp_path / "node.device"),
                "LD_LIBRARY_PATH": str(plain / "sim" / "current"), "LD_PRELOAD": str(lib),
                "GPULET_CUDA_COMPUTE_SHARE": "30"})
    out = subprocess.run([str(prog), "direct", "regraph:busy_1:busy_1000:3"], env=env,
                         capture_output=True, text=True, timeout=60, check=True).stdout
    r = one(out, "regraph")
    assert r["same"] * 8 >= r["launches"] * 0.9, out  # at the first address, or moot
    ok, got = share_within(out, "regraph", 0.30)
    assert ok, (got, out)


@pytest.mark.parametrize("way", WAYS)
def test_a_handle_released_while_mapped_stays_counted(cuda, way):
    """Issue #23 item 8: the driver keeps a VMM handle's memory until its
    last mapping goes, however early the handle is released; so does the
    count: a 256 MiB limit holds, and all of it comes back on unmapping."""
    limits = {"GPULET_CUDA_MEMORY_LIMIT": "256Mi"}
    out = cuda.run(way, "fill:vmmrel:2097152", "freeall", "fill:vmmrel:2097152",
                   limits=limits).stdout
    first, again = (int(f["total"]) for f in lines(out, "fill"))
    assert first == 256 * MIB - CTX and again == first, out


def test_the_simulated_driver_keeps_released_mapped_memory(cuda):
    """The simulator first: released while mapped, the memory stays used
    (NVML and cuMemGetInfo see it) until the unmap."""
    out = cuda.run("direct", "info", "vmmrel:104857600", "info", "freeall", "info").stdout
    before, held, after = (int(i["free"]) for i in lines(out, "info"))
    assert before - held == 100 * MIB and after == before, out


@pytest.mark.parametrize("way", WAYS)
def test_every_form_of_context_creation_is_counted(cuda, way):
    """Issue #23 item 8: cuCtxCreate_v3 and _v4 make contexts that hold
    memory as cuCtxCreate_v2's do: four beside the primary one fill
    320 MiB; a fifth is refused."""
    limits = {"GPULET_CUDA_MEMORY_LIMIT": "320Mi"}
    out = cuda.run(way, "ctx3", "ctx4", "ctx3", "ctx4", "ctx3", "info", "freeall", "info",
                   limits=limits).stdout
    rcs = [int(m["rc"]) for m in lines(out, "ctx3") + lines(out, "ctx4")]
    assert rcs == [0, 0, 2, 0, 0], out  # three ctx3 (the last refused), two ctx4
    full, empty = (int(i["free"]) for i in lines(out, "info"))
    assert full == 0 and empty == 320 * MIB - CTX, out


def test_the_legacy_entry_points_are_counted_or_refused(cuda):
    """The v1 cuCtxCreate / cuCtxDestroy / cuDevicePrimaryCtxRelease are
    watched like the _v2 ones; the
    32-bit cuMemAlloc is refused under a limit (CUDA_ERROR_NOT_SUPPORTED,
    said once)."""
    out = cuda.run("direct", "legacy", limits={"GPULET_CUDA_MEMORY_LIMIT": "256Mi"})
    # the primary context and three more fill the 256 MiB exactly
    made = lines(out.stdout, "legacy")
    assert made[0] == {"made": "3", "free": "0", "alloc": "801", "alloc2": "801"}, out.stdout
    assert made[1] == {"destroyed": "3", "free": str(256 * MIB - CTX)}, out.stdout
    # device 1's primary context released by the v1 call gives its charge back
    assert made[2] == {"primary": str(256 * MIB - CTX), "again": str(256 * MIB - CTX),
                       "after": str(256 * MIB - CTX)}, out.stdout
    assert out.stderr.count("legacy cuMemAlloc") == 1, out.stderr


@pytest.mark.parametrize("way", WAYS)
def test_raising_the_heap_or_stack_is_refused_under_a_limit(cuda, way):
    """Issue #23 item 8: cuCtxSetLimit's stack, printf FIFO and heap take
    device memory when raised (the simulator as the real driver: a 1 GiB
    heap holds 1 GiB). Under a limit a raise is refused, said once; the
    memory stays the program's to allocate; setting one lower passes."""
    out = cuda.run(way, "info", "setlimit:2:1073741824", "info").stdout
    before, after = (int(i["free"]) for i in lines(out, "info"))
    assert one(out, "setlimit")["rc"] == 0 and before - after == 1024 * MIB - 8 * MIB, out
    limits = {"GPULET_CUDA_MEMORY_LIMIT": "256Mi"}
    p = cuda.run(way, "setlimit:2:1073741824", "setlimit:0:65536", "setlimit:1:4194304",
                 "setlimit:2:4194304", "fill:alloc:1048576", limits=limits)
    assert [int(r["rc"]) for r in lines(p.stdout, "setlimit")] == [801, 801, 801, 0], p.stdout
    assert one(p.stdout, "fill")["total"] == 256 * MIB - CTX, p.stdout
    assert p.stderr.count("cuCtxSetLimit") == 1, p.stderr


def test_the_simulated_driver_has_graph_memory_and_green_contexts(cuda):
    """The simulator first: a graph's memory nodes (added, added by the
    generic call, or captured from cuMemAllocAsync) hold their memory
    while an exec of the graph lives; a green context is made."""
    out = cuda.run("direct", "info", "graphmem:capture:104857600", "graphmem:node:104857600",
                   "graphmem:generic:104857600", "info", "freeall", "info", "green").stdout
    assert [(int(g["rc"]), int(g["inst"])) for g in lines(out, "graphmem")] == [(0, 0)] * 3, out
    before, held, after = (int(i["free"]) for i in lines(out, "info"))
    assert before - held == 300 * MIB and after == before, out
    assert one(out, "green")["rc"] == 0, out


@pytest.mark.parametrize("way", WAYS)
def test_graph_memory_and_green_contexts_are_refused_under_a_limit(cuda, way):
    """Issue #23 item 8: memory a graph allocates each time it runs, and
    green contexts, are not followed by the count: under a limit they are
    refused (captured cuMemAllocAsync: STREAM_CAPTURE_UNSUPPORTED, the
    others NOT_SUPPORTED), said once; the limit stays whole."""
    out = cuda.run(way, "graphmem:capture:1048576", "graphmem:node:1048576",
                   "graphmem:generic:1048576", "green", "fill:alloc:1048576",
                   limits={"GPULET_CUDA_MEMORY_LIMIT": "256Mi"})
    assert [int(g["rc"]) for g in lines(out.stdout, "graphmem")] == [900, 801, 801], out.stdout
    assert one(out.stdout, "green")["rc"] == 801, out.stdout
    assert one(out.stdout, "fill")["total"] == 256 * MIB - CTX, out.stdout
    assert out.stderr.count("cannot hold it to") == 1, out.stderr


def busy_share(out, op, kernel_ns):
    """The GPU time of a run's launches as a share of its wall time."""
    r = one(out, op)
    assert r["rc"] == 0
    return r["launches"] * kernel_ns / r["wall_ns"]


def share_within(out, op, share, kernel_ns=1000000):
    """A run got its share within 5 points: never more than share + 0.05 of
    its wall time, and at least share - 0.05 of the time it had a CPU to
    launch from (on a loaded machine a program waiting for a CPU loses what
    its bucket cannot bank; cudaprog says how long it waited)."""
    r = one(out, op)
    assert r["rc"] == 0, out
    gpu = r["launches"] * kernel_ns
    of_wall, of_ready = gpu / r["wall_ns"], gpu / max(r["wall_ns"] - r["queued_ns"], 1)
    return of_wall <= share + 0.05 and of_ready >= share - 0.05, (of_wall, of_ready)


# The runs last 3 s: long enough for the +-5 % the issue asks of 10 s runs
# (the bucket banks at most 0.2 ms per percent, a 1 ms kernel's error each).
@pytest.mark.parametrize("op", ["run", "coop", "graph"])
def test_compute_share_alone(cuda, op):
    out = cuda.run("direct", f"{op}:busy_1000:1:1000:3",
                   limits={"GPULET_CUDA_COMPUTE_SHARE": "30"}).stdout
    ok, got = share_within(out, op, 0.30)
    assert ok, got


def test_compute_shares_of_two_containers(cuda):
    a = cuda.start("procaddr", "run:busy_1000:1:1000:3", limits={"GPULET_CUDA_COMPUTE_SHARE": "30"},
                   state_dir=cuda.tmp / "a")
    b = cuda.start("direct", "run:busy_1000:1:1000:3", limits={"GPULET_CUDA_COMPUTE_SHARE": "70"},
                   state_dir=cuda.tmp / "b")
    out_a, _ = a.communicate(timeout=60)
    out_b, _ = b.communicate(timeout=60)
    (ok_a, sa), (ok_b, sb) = share_within(out_a, "run", 0.30), share_within(out_b, "run", 0.70)
    assert ok_a and ok_b, (sa, sb)


def test_without_a_share_a_program_saturates_and_nvml_sees_it(cuda):
    """Under the interposer with no share, a program that keeps work queued
    (no synchronisation until the end: the driver's one-second queue holds
    it back) keeps the GPU busy however loaded the CPUs are, and NVML's
    utilisation says so."""
    holder = cuda.start("direct", "wait", "run:busy_1000:1:1000:3:0", "hold", limits={})
    try:
        wait_holding(holder, "waiting")
        out = []
        done = threading.Thread(target=lambda: out.append(wait_holding(holder)))
        holder.stdin.write("go\n")
        holder.stdin.flush()
        done.start()
        # NVML's utilisation covers the last second: it climbs to the top
        # while the GPU has work, until the program's final synchronisation
        # returns (its "run" line)
        util = 0
        while util < 90 and done.is_alive():
            util = one(cuda.run("direct", "nvml").stdout, "nvml")["util"]
        assert util >= 90
        done.join(60)
        assert out and busy_share(out[0], "run", 1000000) >= 0.9, out
    finally:
        holder.kill()
        holder.wait()


# ---- found by an independent test of the interposer ----

def test_made_up_handles_are_refused_not_read(cuda):
    """The simulated driver looks handles up before it reads them."""
    for limits in (None, {"GPULET_CUDA_MEMORY_LIMIT": "1Gi"}):
        out = cuda.run("direct", "badhandles:0x1234", "badhandles:0x7f0000001000",
                       limits=limits).stdout
        for found in lines(out, "badhandles"):
            assert {k: int(v) for k, v in found.items()} == {
                "ctx": 201, "stream": 400, "event": 400, "module": 400, "pool": 1, "graph": 1,
                "exec": 1}, out


@pytest.mark.parametrize("way", WAYS)
def test_pool_allocations_count_on_the_pools_device(cuda, way):
    """A pool made on device 1 fills device 1's limit, with device 0 current."""
    limits = {"GPULET_CUDA_MEMORY_LIMIT": "256Mi"}
    out = cuda.run(way, "fill:pool1:1048576", "fill:alloc:1048576", "freeall",
                   "fill:pool1:1048576", limits=limits).stdout
    pool1, dev0, again = (int(f["total"]) for f in lines(out, "fill"))
    assert pool1 == 256 * MIB, out  # device 1 holds no context of this process
    assert dev0 == 256 * MIB - CTX, out  # device 0 was not charged the pool's bytes
    assert again == 256 * MIB, out  # and freeing gave device 1 its bytes back


def test_pitch_takes_the_padded_size_first(cuda):
    limits = {"GPULET_CUDA_MEMORY_LIMIT": "100Mi"}  # 36 MiB left beside the context
    # 1000-byte rows pad to 1024: 37000 rows fit unpadded but not padded, 36864 exactly.
    p = cuda.run("direct", "pitch:1000:37000", "pitch:1000:36864", "info",
                 "pitch:0x100000000:0x100000000", limits=limits)
    refused, fits, overflow = lines(p.stdout, "pitch")
    assert int(refused["rc"]) == 2, p.stdout
    assert int(fits["rc"]) == 0 and int(fits["bytes"]) == 36 * MIB, p.stdout
    assert one(p.stdout, "info")["free"] == 0
    assert int(overflow["rc"]) == 1, p.stdout  # INVALID_VALUE, not passed on uncounted
    assert "cuMemAllocPitch of 1000 x 37000 bytes (rows padded to 512) of 37888000 bytes" \
        in p.stderr, p.stderr
    assert "cuMemAllocPitch of 4294967296 x 4294967296 bytes refused with " \
        "CUDA_ERROR_INVALID_VALUE" in p.stderr, p.stderr


def test_dlmopen_of_the_driver_gets_the_watched_one(cuda):
    """A new link-map namespace would hold an unwatched copy of the driver."""
    out = cuda.run("dlmopen", "fill:alloc:1048576",
                   limits={"GPULET_CUDA_MEMORY_LIMIT": "256Mi"}).stdout
    assert one(out, "fill")["total"] == 256 * MIB - CTX, out


@pytest.mark.parametrize("way", ["dlopen", "dlmopen", "dlopen-by-name", "dlmopen-by-name",
                                 "dlopen-by-link"])
def test_a_copy_of_the_driver_is_the_driver(cuda, build, way):
    """Issue #23 item 1: the driver copied under another name, opened by
    path, by a bare name found on LD_LIBRARY_PATH or through a symlink, in
    this namespace or a new one, is recognised by what it is (it defines
    cuInit) and answered with the watched driver (or, brought into a new
    namespace by a bare name, not opened)."""
    if way == "dlmopen-by-name" and "asan" in build.name:
        pytest.skip("the simulated driver of an ASan build cannot load in a second namespace "
                    "(ASan refuses a second runtime); the plain build runs this")
    lib = (build / "sim" / "cuda" / "libcuda.so.1").resolve()
    copy = cuda.tmp / "libnotcuda.so"
    copy.write_bytes(lib.read_bytes())
    (cuda.tmp / "liblink.so").symlink_to(copy)
    target = {"dlopen-by-name": "libnotcuda.so", "dlmopen-by-name": "libnotcuda.so",
              "dlopen-by-link": str(cuda.tmp / "liblink.so")}.get(way, str(copy))
    limits = {"GPULET_CUDA_MEMORY_LIMIT": "256Mi",
              "LD_LIBRARY_PATH": f"{build / 'sim' / 'current'}:{cuda.tmp}"}
    out = cuda.run(f"{way.split('-')[0]}={target}", "fill:alloc:1048576", limits=limits,
                   check=False)
    if way == "dlmopen-by-name":
        assert out.returncode != 0 and "a second CUDA driver" in out.stderr, out.stderr
        return
    assert one(out.stdout, "fill")["total"] == 256 * MIB - CTX, out.stdout + out.stderr
    out = out.stdout
    if way == "dlopen":  # (a second namespace cannot hold an ASan build's driver)
        # without a limit the copy is used as asked, whole
        out = cuda.run(f"{way}={copy}", "fill:alloc:1073741824", limits={}).stdout
        assert one(out, "fill")["total"] > 256 * MIB, out


@pytest.mark.parametrize("way", ["dlopen", "dlmopen"])
def test_a_library_carrying_a_driver_copy(cuda, build, way):
    """A library linked to a copy of the driver under another name: in the
    program's namespace the watchers stand in front of it (the limit holds);
    in a new namespace, where nothing preloaded reaches, it is not opened."""
    if way == "dlmopen" and "asan" in build.name:
        pytest.skip("the simulated driver of an ASan build cannot load in a second namespace "
                    "(ASan refuses a second runtime); the plain build runs this")
    lib = (build / "sim" / "cuda" / "libcuda.so.1").resolve()
    copy = cuda.tmp / "libnotcuda.so"
    copy.write_bytes(lib.read_bytes())
    # linked to the copy, the wrapper needs its soname, libcuda.so.1: found
    # beside it by its RUNPATH (in a new namespace), or already loaded
    (cuda.tmp / "libcuda.so.1").symlink_to(copy)
    wrapper = cuda.tmp / "libwrapper.so"
    src = cuda.tmp / "wrapper.c"
    src.write_text("int cuInit(unsigned int);\nint wrapped_init(void) { return cuInit(0); }\n")
    subprocess.run(["cc", "-shared", "-fPIC", "-o", str(wrapper), str(src), str(copy),
                    f"-Wl,-rpath,{cuda.tmp}"], check=True)
    out = cuda.run(f"{way}={wrapper}", "fill:alloc:1048576",
                   limits={"GPULET_CUDA_MEMORY_LIMIT": "256Mi"}, check=False)
    if way == "dlopen":
        assert one(out.stdout, "fill")["total"] == 256 * MIB - CTX, out.stdout + out.stderr
    else:
        assert out.returncode != 0, out.stdout
        assert f"brings in {cuda.tmp / 'libcuda.so.1'}, a second CUDA driver" in out.stderr, \
            out.stderr


@pytest.mark.parametrize("limits", [None, {"GPULET_CUDA_MEMORY_LIMIT": "1Gi"}])
def test_a_forked_child_cannot_free_its_parents_memory(cuda, limits):
    """The driver's state does not survive fork: the child's calls answer
    NOT_INITIALIZED and the parent's allocation stays its own."""
    out = cuda.run("direct", "info", "alloc:10485760", "fork", "info", "freeall", "info",
                   limits=limits).stdout
    assert one(out, "fork") == {"free": 3, "init": 3}, out
    before, held, after = (int(i["free"]) for i in lines(out, "info"))
    assert before - held == 10485760 and after == before, out


# ---- the limits file gpulet's Allocate mounts at /etc/gpulet/cuda-limits ----

T4 = ["GPU-ba9ab937-f3f2-dff4-966b-4f76082954b2", "GPU-4c7bc5e4-4a6b-ba25-692c-2e9269e0af96",
      "GPU-e97d94b4-7049-2690-016c-44b5f9c246a8"]


def with_limits_file(tmp, text=None, link_to=None):
    """A command prefix that runs the program in a mount namespace of its
    own whose /etc has gpulet/cuda-limits (an overlay: the host's /etc is
    not touched), since the interposer reads only that fixed path."""
    over = tmp / "over"
    (over / "gpulet").mkdir(parents=True, exist_ok=True)
    f = over / "gpulet" / "cuda-limits"
    if link_to:
        f.symlink_to(link_to)
    else:
        f.write_text(text)
    return ["unshare", "-m", "--propagation", "private", "sh", "-c",
            f'mount -t overlay overlay -o lowerdir={over}:/etc /etc && exec "$@"', "sh"]


# Variables that would raise every limit if they were read.
RAISE = {"GPULET_CUDA_MEMORY_LIMIT": "15Gi", "GPULET_CUDA_MEMORY_LIMIT_0": "15Gi",
         "GPULET_CUDA_MEMORY_LIMIT_1": "15Gi", "GPULET_CUDA_COMPUTE_SHARE": "100",
         "GPULET_CUDA_CONTEXT_SIZE": "1"}


def test_the_file_wins_over_variables_and_devices_match_by_uuid(cuda):
    state = cuda.tmp / "state"
    state.mkdir()
    # ordinal 0 of the file is the simulator's device 1, and the other way round
    wrap = with_limits_file(cuda.tmp, "# gpulet CUDA limits v1\n"
                            f"GPULET_CUDA_DEVICE_UUID_0={T4[1]}\n"
                            "GPULET_CUDA_MEMORY_LIMIT_0=209715200\n"
                            "GPULET_CUDA_COMPUTE_SHARE_0=50\n"
                            f"GPULET_CUDA_DEVICE_UUID_1={T4[0]}\n"
                            "GPULET_CUDA_MEMORY_LIMIT_1=104857600\n"
                            "GPULET_CUDA_COMPUTE_SHARE_1=12.5\n"
                            f"GPULET_CUDA_STATE_DIR={state}\n")
    env = dict(RAISE, GPULET_CUDA_LOG="debug")
    out = cuda.run("direct", "info", "fill:alloc:1048576", limits=env, wrap=wrap)
    assert one(out.stdout, "info")["total"] == LIMIT
    assert one(out.stdout, "fill")["total"] == LIMIT - CTX  # the variables' context size ignored
    assert "variables other than GPULET_CUDA_LOG are ignored" in out.stderr
    assert (state / T4[0]).exists()  # the file's state folder, not the variable's
    out = cuda.run("direct", "info", limits=dict(RAISE, PROG_DEVICE="1"), wrap=wrap).stdout
    assert one(out, "info")["total"] == 200 * MIB
    # a GPU the file does not name is not a slice: whole
    out = cuda.run("direct", "info", limits=dict(RAISE, PROG_DEVICE="2"), wrap=wrap).stdout
    assert one(out, "info")["total"] == 15360 * MIB
    # the share too comes from the file: 12.5 %, not the variables' 100
    out = cuda.run("direct", "run:busy_1000:1:1000:2", limits=RAISE, wrap=wrap).stdout
    ok, got = share_within(out, "run", 0.125)
    assert ok, got


def test_an_unusable_file_refuses_every_allocation(cuda):
    good = cuda.tmp / "good"
    good.write_text("GPULET_CUDA_MEMORY_LIMIT_0=15Gi\n")
    for i, (text, link, said) in enumerate([
            ("GPULET_CUDA_MEMORY_LIMIT_0=lots\n", None, "line 1"),
            ("GPULET_CUDA_MEMORY_LIMIT_0=1Gi\nLD_PRELOAD=/x.so\n", None, "line 2"),
            ("#" * 5000, None, "over 4096 bytes"),
            (None, good, "a symbolic link")]):
        tmp = cuda.tmp / f"case{i}"
        tmp.mkdir()
        wrap = with_limits_file(tmp, text, link)
        # even the program's context is refused: CUDA_ERROR_OUT_OF_MEMORY
        out = cuda.run("direct", "alloc:1048576", limits=RAISE, wrap=wrap, check=False)
        assert out.returncode != 0 and "setup rc=2" in out.stdout + out.stderr, out.stdout
        assert said in out.stderr and "every allocation is refused" in out.stderr, out.stderr
        assert out.stderr.count("every allocation is refused") == 1


def test_nvml_reports_each_program_and_its_utilisation(cuda):
    # HAMi-core's utilisation watcher: the unversioned process list (pid and
    # memory) and nvmlDeviceGetProcessUtilization over the last second.
    # the launch queue kept full (SYNC 0), so a loaded machine cannot idle the GPU
    holder = cuda.start("direct", "wait", "run:busy_1000:1:1000:5:0", "hold")
    try:
        wait_holding(holder, "waiting")
        holder.stdin.write("go\n")
        holder.stdin.flush()
        sm, deadline = 0, time.monotonic() + 4.5
        while sm < 90 and time.monotonic() < deadline:
            out = cuda.run("direct", "procs").stdout
            assert one(out, "procs")["rc"] == 0 and one(out, "procs")["util_rc"] == 0, out
            procs = {p["pid"]: p for p in (dict((k, int(v)) for k, v in l.items())
                                            for l in lines(out, "proc"))}
            assert holder.pid in procs, out
            sm = procs[holder.pid]["sm"]
        assert sm >= 90
        # the asking program holds only a context and runs nothing
        assert len(procs) == 2 and procs[holder.pid]["used"] >= CTX
        assert [p["sm"] for pid, p in procs.items() if pid != holder.pid] == [0]
    finally:
        holder.kill()
        holder.wait()
