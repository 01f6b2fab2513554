"""Node labels: golden sets for every fixture and configuration, the
features file the daemon keeps, and label validity."""
import os
import pathlib
import signal
import subprocess
import threading
import time

import pytest

from conftest import FIXTURES, ROOT
from kubelet import wait_for

GOLDEN = ROOT / "tests" / "integration" / "golden" / "labels"
CONFIGS = {
    "time-slicing": "version: v1\nsharing:\n  timeSlicing:\n    resources:\n"
                    "    - name: nvidia.com/gpu\n      replicas: 4\n",
    "time-slicing-renamed": "version: v1\nsharing:\n  timeSlicing:\n    renameByDefault: true\n"
                            "    resources:\n    - name: nvidia.com/gpu\n      replicas: 4\n",
    "mps": "version: v1\nsharing:\n  mps:\n    resources:\n    - {name: nvidia.com/gpu, replicas: 2}\n",
    "models": "version: v1\nflags: {gfd: {shortLabels: true}}\nresources:\n  gpus:\n"
              "  - {pattern: \"*V100*\", name: v100}\n"
              "sharing:\n  timeSlicing:\n    resources:\n"
              "    - {name: nvidia.com/v100, replicas: 2, devices: [3]}\n",
    "mig-models": "version: v1\nflags: {migStrategy: mixed}\nresources:\n  mig:\n"
                  "  - {pattern: \"[12]g.*\", name: mig-small}\n",
    "mig-shared": "version: v1\nflags: {migStrategy: mixed}\nsharing:\n  timeSlicing:\n"
                  "    resources:\n    - {name: nvidia.com/mig-1g.5gb, replicas: 2}\n",
    "slices": "version: v1\nsharing:\n  timeSlicing:\n    resources:\n"
              "    - {name: nvidia.com/gpu, replicas: 4, devices: [3], rename: gpu.shared}\n"
              "  slices:\n    resources:\n"
              "    - {name: nvidia.com/gpu, devices: [0, 1], memory: 10Gi, rename: gpu-10gb}\n"
              "    - {name: nvidia.com/gpu, devices: [2], replicas: 8, rename: gpu.eighth}\n",
    "slices-all": "version: v1\nsharing:\n  slices:\n    resources:\n"
                  "    - {name: nvidia.com/gpu, memory: 5Gi}\n",
}
CASES = [(node, [], node) for node in FIXTURES] + [
    ("a100-mig", ["--mig-strategy", "mixed"], "a100-mig-mixed"),
    ("a100-mig-single", ["--mig-strategy", "single"], "a100-mig-single-single"),
    ("a100-mig-single", ["--mig-strategy", "mixed"], "a100-mig-single-mixed"),
    # NVIDIA writes mig.strategy on nodes without MIG too.
    ("dgx1-v100", ["--mig-strategy", "mixed"], "dgx1-v100-mixed"),
    ("t4-pcie", ["--mig-strategy", "single"], "t4-pcie-single"),
    ("t4-pcie", ["config:time-slicing"], "t4-pcie-time-slicing"),
    ("t4-pcie", ["config:time-slicing-renamed"], "t4-pcie-time-slicing-renamed"),
    ("dgx-a100", ["config:mps"], "dgx-a100-mps"),
    ("a100-mig", ["config:mig-shared"], "a100-mig-mixed-shared"),
    ("mixed-t4-v100", ["config:models"], "mixed-t4-v100-models"),
    ("a100-mig", ["config:mig-models"], "a100-mig-models"),
    ("dgx-a100", ["config:slices"], "dgx-a100-slices"),
    ("t4-pcie", ["config:slices-all"], "t4-pcie-slices"),
    ("dgx1-v100", ["--short-labels"], "dgx1-v100-short"),
    ("h100-sxm", ["--short-labels"], "h100-sxm-short"),
]


def expand(args, tmp_path):
    out = []
    for a in args:
        if a.startswith("config:"):
            path = tmp_path / f"{a[7:]}.yaml"
            path.write_text(CONFIGS[a[7:]])
            out += ["--config-file", path]
        else:
            out.append(a)
    return out


@pytest.mark.parametrize("node,args,golden", CASES, ids=[c[2] for c in CASES])
def test_golden_label_sets(gpulet, tmp_path, node, args, golden):
    r = gpulet("--simulate", node, "labels", "--no-timestamp", *expand(args, tmp_path))
    assert r.rc == 0, r.err
    path = GOLDEN / f"{golden}.txt"
    if os.environ.get("GPULET_UPDATE_GOLDEN"):
        path.write_text(r.out)
    assert r.out == path.read_text()


def test_every_label_is_valid_kubernetes_syntax():
    import re
    name = re.compile(r"^[A-Za-z0-9]([A-Za-z0-9._-]{0,61}[A-Za-z0-9])?$")
    for path in GOLDEN.glob("*.txt"):
        for line in path.read_text().splitlines():
            key, value = line.split("=", 1)
            prefix, label = key.split("/")
            assert prefix == "nvidia.com" and name.match(label), line
            assert value == "" or name.match(value), line


def test_timestamp_label(gpulet):
    before = int(time.time())
    r = gpulet("--simulate", "t4-pcie", "labels")
    assert r.rc == 0
    stamp = dict(l.split("=", 1) for l in r.out.splitlines())["nvidia.com/gfd.timestamp"]
    assert before <= int(stamp) <= int(time.time())


def test_invalid_labels_are_left_out_with_a_log_line(gpulet, tmp_path):
    node = tmp_path / "long.yaml"
    node.write_text("machine: \"A machine name far too long to be a Kubernetes label value, "
                    "really, by any measure at all\"\n"
                    "gpus:\n  - {uuid: GPU-1, name: \"NVIDIA Ünïcode GPU (rev 2)\", "
                    "pci_bus_id: \"0:1:0.0\", memory_mib: 1024, compute_capability: \"8.6\"}\n")
    r = gpulet("--simulate", node, "labels", "--no-timestamp")
    assert r.rc == 0
    labels = dict(l.split("=", 1) for l in r.out.splitlines())
    assert labels["nvidia.com/gpu.product"] == "NVIDIA-ncode-GPU-rev-2"
    assert labels["nvidia.com/gpu.family"] == "ampere"
    assert "nvidia.com/gpu.machine" not in labels
    assert 'msg="label left out: not a valid Kubernetes label" key="nvidia.com/gpu.machine"' in r.err


def test_the_daemon_keeps_the_features_file(build, tmp_path):
    features = tmp_path / "nfd" / "features.d" / "gfd"
    proc = subprocess.Popen([str(build / "gpulet"), "--simulate", "dgx-a100", "run",
                             "--no-device-plugin", "--no-metrics", "--labels-file", str(features),
                             "--labels-interval", "100ms"],
                            stderr=subprocess.DEVNULL)
    try:
        wait_for(features.exists, what="the features file")
        want = subprocess.run([str(build / "gpulet"), "--simulate", "dgx-a100", "labels",
                               "--no-timestamp"], capture_output=True, text=True).stdout
        keys = [l.split("=")[0] for l in want.splitlines()] + ["nvidia.com/gfd.timestamp"]
        # Read while it is rewritten ten times a second: never half a file.
        seen = set()
        deadline = time.monotonic() + 1.5
        while time.monotonic() < deadline:
            text = features.read_text()
            got = sorted(l.split("=")[0] for l in text.splitlines())
            assert got == sorted(keys), text
            seen.add(dict(l.split("=", 1) for l in text.splitlines())["nvidia.com/gfd.timestamp"])
        assert len(seen) >= 1
        assert not any(p.name.endswith(".tmp") and not p.name.startswith(".")
                       for p in features.parent.iterdir())
    finally:
        proc.send_signal(signal.SIGTERM)
        assert proc.wait(timeout=10) == 0
    assert not features.exists()  # removed on a clean exit


def test_unwritable_labels_are_retried_and_said_once(build, tmp_path):
    blocker = tmp_path / "not-a-folder"
    blocker.write_text("a file where the folder should be\n")
    log = tmp_path / "gpulet.log"
    proc = subprocess.Popen([str(build / "gpulet"), "--log-level", "debug", "--simulate",
                             "t4-pcie", "run", "--no-device-plugin", "--no-metrics",
                             "--labels-file", str(blocker / "gfd"),
                             "--labels-interval", "100ms"], stderr=open(log, "w"))
    try:
        wait_for(lambda: log.read_text().count("node labels not written; will retry") >= 4,
                 what="several attempts")
        assert log.read_text().count("cannot write the node labels") == 1
        assert proc.poll() is None
    finally:
        proc.send_signal(signal.SIGTERM)
        assert proc.wait(timeout=10) == 0
