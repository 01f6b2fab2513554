"""The real node of the e2e suite, started once per session and stopped
(every pod gone, then each process by PID) at its end. tests/e2e/run.sh
(`make e2e`) runs the suite once per Kubernetes version:
GPULET_E2E_VERSION=v1.20.2 with the kubelet it built in GPULET_E2E_KUBELET,
GPULET_E2E_VERSION=v1.34.9 with the binaries of tests/e2e/fetch-k8s.sh."""
import os
import pathlib
import re
import signal
import subprocess
import tempfile
import time

import pytest

from cluster import read_bins
from node import NAMESPACE, Node, RESOURCE, wait_for

ROOT = pathlib.Path(__file__).resolve().parents[2]
BUILD = pathlib.Path(os.environ.get("GPULET_BUILD", ROOT / "build"))
CACHE = pathlib.Path(os.environ.get("GPULET_E2E_CACHE", BUILD / "e2e-cache"))
FIGURES = {}  # name -> text, printed at the end
VERSION = os.environ.get("GPULET_E2E_VERSION", "v1.20.2")
CLUSTER = VERSION != "v1.20.2"  # a control plane, the API server to ask


def pytest_sessionstart(session):
    """SIGTERM and the run's deadline (GPULET_E2E_DEADLINE seconds, 900 by
    default) interrupt the session as Ctrl-C does, so the node's teardown
    still stops every process and removes the cgroups."""
    def interrupt(signum, frame):
        raise KeyboardInterrupt(f"e2e: {'deadline' if signum == signal.SIGALRM else 'SIGTERM'}")
    signal.signal(signal.SIGTERM, interrupt)
    signal.signal(signal.SIGALRM, interrupt)
    signal.alarm(int(os.environ.get("GPULET_E2E_DEADLINE", "900")))


def figure(name, seconds):
    FIGURES.setdefault(name, []).append(seconds)


@pytest.fixture(scope="session")
def node():
    for prog in ("gpulet", "gpulet-runtime", "gpulet-hook"):
        if not (BUILD / prog).exists():
            pytest.fail(f"{BUILD / prog} is missing: run `make` (or set GPULET_BUILD)")
    if CLUSTER:
        r = subprocess.run([ROOT / "tests/e2e/fetch-k8s.sh", CACHE], capture_output=True,
                           text=True)
        assert r.returncode == 0, r.stderr[-3000:]
        n = Node(BUILD, tempfile.mkdtemp(prefix="gpulet-e2e-"), cluster_bins=read_bins(r.stdout),
                 version=VERSION)
    else:
        kubelet = os.environ.get("GPULET_E2E_KUBELET")
        if not kubelet:
            r = subprocess.run([ROOT / "tests/e2e/build-kubelet.sh", CACHE], capture_output=True,
                               text=True)
            assert r.returncode == 0, r.stderr[-3000:]
            kubelet = r.stdout.strip()
        n = Node(BUILD, tempfile.mkdtemp(prefix="gpulet-e2e-"), kubelet=kubelet)
    try:
        n.start()
        if CLUSTER:
            n.cluster.kubectl("create", "namespace", NAMESPACE)
        n.start_gpulet()
        # Polled every 5 ms: a figure is at most that late.
        wait_for("the kubelet to register gpulet's 8 GPUs (its checkpoint)",
                 lambda: len(n.registered() or []) == 8
                 and n.checkpoint.stat().st_mtime >= n.gpulet_started, 30, 0.005)
        at = time.time()
        n.start_to_capacity = at - n.gpulet_started
        figure("gpulet start -> kubelet capacity", n.start_to_capacity)
        figure("kubelet start -> kubelet capacity", at - n.kubelet_started)
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


def api_status(node, resource=RESOURCE):
    """(capacity, allocatable) of resource in the node's status on the API
    server, 0 where absent."""
    st = node.cluster.node()["status"]
    return (int(st.get("capacity", {}).get(resource, 0)),
            int(st.get("allocatable", {}).get(resource, 0)))


def node_status(node, probe=[0], expect=None):
    """The kubelet's capacity and allocatable for gpulet's resource. With
    an API server: the node's status there, polled until it is expect (the
    kubelet reports every second). Without: a
    standalone kubelet computes its node status only to admit a pod, so a
    pod that cannot fit (1000 CPUs) is offered and refused: nothing runs.
    The status is logged while that pod is admitted: capacity always,
    allocatable only where it differs from capacity."""
    if node.cluster:
        seen = []
        try:
            wait_for(f"node status {expect}", lambda: seen.append(api_status(node))
                     or expect is None or seen[-1] == expect, 15, 0.2)
        except AssertionError:
            pass  # the caller's assertion shows what was seen
        return seen[-1]
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
    terminalreporter.write_sep("-", f"e2e figures (real kubelet {VERSION}, simulated DGX A100)")
    for name, values in FIGURES.items():
        ms = ", ".join(f"{v * 1000:.0f}" for v in values)
        terminalreporter.write_line(f"{name}: {ms} ms")
    out = os.environ.get("GPULET_E2E_FIGURES")
    if out:
        with open(out, "w") as f:
            for name, values in FIGURES.items():
                f.write(f"{name}: {', '.join(f'{v * 1000:.0f}' for v in values)} ms\n")
