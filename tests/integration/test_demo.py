"""`make demo` without a terminal (as in CI): it runs its whole tour, ends
by itself, and leaves no process and no file behind."""
import os
import pathlib
import re
import shutil
import signal
import subprocess
import tempfile

from conftest import ROOT

STEPS = ["== 1. Registration with the kubelet", "== 2. A pod asks for nvidia.com/gpu: 2",
         "== 3. Node labels", "== 4. /metrics", "== 5. An XID error makes a GPU unhealthy",
         "No terminal: the tour ends here.", "Tour done."]


def tree(*dirs):
    return {p for d in dirs for p in (ROOT / d).rglob("*")}


def processes_naming(text):
    """Processes whose command line mentions text."""
    found = []
    for p in pathlib.Path("/proc").iterdir():
        if not p.name.isdigit():
            continue
        try:
            if text.encode() in (p / "cmdline").read_bytes():
                found.append(p.name)
        except OSError:
            pass  # ended meanwhile
    return found


def test_make_demo_without_a_terminal(build):
    # a short TMPDIR of our own: socket paths must stay under 108 bytes
    tmp = pathlib.Path(tempfile.mkdtemp(prefix="gd-", dir="/tmp"))
    try:
        check_demo(build, tmp)
    finally:
        shutil.rmtree(tmp)


def check_demo(build, tmp):
    before = tree("scripts", "tests", "sim", "docs")
    env = {**{k: v for k, v in os.environ.items() if k != "MAKEFLAGS"}, "TMPDIR": str(tmp)}
    proc = subprocess.run(["make", "-s", "-C", str(ROOT), "demo", f"BUILD={build}"], env=env,
                          stdin=subprocess.DEVNULL, capture_output=True, text=True, timeout=180)
    out = proc.stdout
    assert proc.returncode == 0, out + proc.stderr
    at = 0
    for s in STEPS:  # every step, in order
        at = out.index(s, at)
    assert 'msg="registered with the kubelet" resource=nvidia.com/gpu' in out
    assert re.search(r"env +NVIDIA_VISIBLE_DEVICES=GPU-[0-9a-f-]+,GPU-[0-9a-f-]+\n", out)
    assert re.search(r"device +/dev/nvidia\d <- ", out)
    assert "nvidia.com/gpu.product=NVIDIA-A100-SXM4-80GB" in out
    assert re.search(r"http://127\.0\.0\.1:\d+/metrics", out)
    assert len(re.findall(r'DCGM_FI_DEV_GPU_UTIL\{[^}]*pod="trainer-0"\} 87', out)) == 2
    assert 'msg="device unhealthy"' in out and "is Unhealthy" in out
    assert 'msg="device healthy again"' in out and "is Healthy again" in out
    assert "gpulet exited with 0" in out
    seconds = float(re.search(r"\((\d+\.\d) s\)\n$", out).group(1))
    assert seconds < 60
    # nothing left: the temporary folder is gone, no process names it,
    # nothing new in the source tree (no __pycache__ either)
    assert list(tmp.iterdir()) == []
    assert processes_naming(str(tmp)) == []
    assert tree("scripts", "tests", "sim", "docs") == before


def test_make_demo_on_a_terminal_runs_until_ctrl_c(build):
    """On a terminal the demo keeps gpulet running after the tour; Ctrl-C
    stops it and cleans up."""
    import fcntl
    import pty
    import select
    import termios
    import time
    tmp = pathlib.Path(tempfile.mkdtemp(prefix="gd-", dir="/tmp"))
    master, slave = pty.openpty()
    env = {**{k: v for k, v in os.environ.items() if k != "MAKEFLAGS"}, "TMPDIR": str(tmp)}
    def controlling_terminal():
        os.setsid()  # a session of its own, with the pty as its terminal, so ^C is SIGINT
        fcntl.ioctl(0, termios.TIOCSCTTY, 0)
        # as a user's shell starts it: pytest run in the background by a
        # script ignores SIGINT, and an ignored signal stays ignored across
        # exec (make and the demo never saw the ^C)
        signal.signal(signal.SIGINT, signal.SIG_DFL)

    proc = subprocess.Popen(["make", "-s", "-C", str(ROOT), "demo", f"BUILD={build}"], env=env,
                            stdin=slave, stdout=slave, stderr=slave,
                            preexec_fn=controlling_terminal)
    os.close(slave)
    out = b""

    def read_until(text, timeout):
        nonlocal out
        deadline = time.monotonic() + timeout
        while text not in out:
            left = deadline - time.monotonic()
            assert left > 0, f"no {text!r} in {out.decode(errors='replace')}"
            if select.select([master], [], [], left)[0]:
                try:
                    out += os.read(master, 65536)
                except OSError:  # the terminal closed: everyone exited
                    assert text in out, out.decode(errors="replace")

    try:
        read_until(b"Press Ctrl-C to stop", 120)
        # still serving after the tour
        assert processes_naming(str(tmp)) != []
        os.write(master, b"\x03")  # Ctrl-C, through the terminal's line discipline
        read_until(b"gpulet exited with 0", 30)
        proc.wait(timeout=30)  # make reports the interrupt its own way: its code is not checked
        deadline = time.monotonic() + 10
        while processes_naming(str(tmp)) and time.monotonic() < deadline:
            time.sleep(0.05)
        assert processes_naming(str(tmp)) == []
        assert list(tmp.iterdir()) == []
    finally:
        if proc.poll() is None:
            os.killpg(proc.pid, 9)
            proc.wait()
        for pid in processes_naming(str(tmp)):  # a failed run leaves no daemon behind
            try:
                os.kill(int(pid), 9)
            except OSError:
                pass  # ended meanwhile
        os.close(master)
        shutil.rmtree(tmp, ignore_errors=True)
