"""The real node of the e2e suite, started once per session and stopped
(every pod gone, then each process by PID) at its end. tests/e2e/run.sh
(`make e2e`) builds the kubelet and names it in GPULET_E2E_KUBELET."""
import os
import pathlib
import re
import subprocess
import tempfile
import time

import pytest

from node import Node, RESOURCE, wait_for

ROOT = pathlib.Path(__file__).resolve().parents[2]
BUILD = pathlib.Path(os.environ.get("GPULET_BUILD", ROOT / "build"))
CACHE = pathlib.Path(os.environ.get("GPULET_E2E_CACHE", BUILD / "e2e-cache"))
FIGURES = {}  # name -> text, printed at the end


def figure(name, seconds):
    FIGURES.setdefault(name, []).append(seconds)


@pytest.fixture(scope="session")
def node():
    for prog in ("gpulet", "gpulet-runtime", "gpulet-hook"):
        if not (BUILD / prog).exists():
            pytest.fail(f"{BUILD / prog} is missing: run `make` (or set GPULET_BUILD)")
    kubelet = os.environ.get("GPULET_E2E_KUBELET")
    if not kubelet:
        r = subprocess.run([ROOT / "tests/e2e/build-kubelet.sh", CACHE], capture_output=True,
                           text=True)
        if r.returncode == 77:
            pytest.skip(r.stderr.strip())
        assert r.returncode == 0, r.stderr[-3000:]
        kubelet = r.stdout.strip()
    n = Node(BUILD, kubelet, tempfile.mkdtemp(prefix="gpulet-e2e-"))
    if n.another_kubelet():
        os.rmdir(n.dir)
        pytest.skip("a kubelet already serves /var/lib/kubelet/device-plugins on this machine")
    try:
        n.start_containerd()
        started = time.time()
        n.start_kubelet()
        n.start_gpulet()
        # Polled every 5 ms: a figure is at most that late.
        wait_for("the kubelet to register gpulet's 8 GPUs (its checkpoint)",
                 lambda: len(n.registered() or []) == 8
                 and n.checkpoint.stat().st_mtime >= n.gpulet_started, 30, 0.005)
        at = time.time()
        n.start_to_capacity = at - n.gpulet_started
        figure("gpulet start -> kubelet capacity", n.start_to_capacity)
        figure("kubelet start -> kubelet capacity", at - started)
        yield n
    finally:
        n.teardown()
        if os.environ.get("GPULET_E2E_KEEP"):
            print(f"\ne2e: kept {n.dir}")
        else:
            subprocess.run(["rm", "-rf", "--one-file-system", str(n.dir)])


@pytest.fixture(scope="session")
def gpu_pod(node):
    """A pod holding 2 of the 8 GPUs: (pod, container id, the GPUs' UUIDs)."""
    node.add_pod("gpu2", gpus=2)
    pod, cid = node.running_container("gpu2")
    uuids = node.allocated(pod["metadata"]["uid"])
    assert len(uuids) == 2, uuids
    yield pod, cid, uuids
    node.remove_pod("gpu2")


def node_status(node, probe=[0]):
    """The kubelet's capacity and allocatable for gpulet's resource. A
    standalone kubelet computes its node status only to admit a pod, so a
    pod that cannot fit (1000 CPUs) is offered and refused: nothing runs.
    The status is logged while that pod is admitted: capacity always,
    allocatable only where it differs from capacity."""
    probe[0] += 1
    name = f"status{probe[0]}"
    node.add_pod(name, cpu="1000")

    def window():
        lines = node.log().splitlines()
        add = [i for i, l in enumerate(lines) if f'SyncLoop (ADD, "file"): "{name}-' in l]
        end = [i for i, l in enumerate(lines) if f"Failed to admit pod {name}-" in l]
        return lines[add[0]:end[0]] if add and end else None
    lines = wait_for(f"the kubelet to admit (and refuse) pod {name}", window, 30, 0.05)
    node.remove_pod(name)

    def last(what):
        found = [int(m[1]) for l in lines
                 if (m := re.search(f"Update {what} for {RESOURCE} to (\\d+)", l))]
        return found[-1] if found else None
    capacity = last("capacity")
    allocatable = last("allocatable")
    return capacity, capacity if allocatable is None else allocatable


def pytest_terminal_summary(terminalreporter):
    if not FIGURES:
        return
    terminalreporter.write_sep("-", "e2e figures (real kubelet v1.20.2, simulated DGX A100)")
    for name, values in FIGURES.items():
        ms = ", ".join(f"{v * 1000:.0f}" for v in values)
        terminalreporter.write_line(f"{name}: {ms} ms")
    out = os.environ.get("GPULET_E2E_FIGURES")
    if out:
        with open(out, "w") as f:
            for name, values in FIGURES.items():
                f.write(f"{name}: {', '.join(f'{v * 1000:.0f}' for v in values)} ms\n")
