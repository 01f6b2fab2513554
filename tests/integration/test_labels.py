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
    "mixed-gpu-shared": "version: v1\nflags: {migStrategy: mixed}\nsharing:\n  timeSlicing:\n"
                        "    resources:\n    - {name: nvidia.com/gpu, replicas: 2}\n",
    "mig-mps": "version: v1\nflags: {migStrategy: mixed}\nsharing:\n  mps:\n"
               "    resources:\n    - {name: nvidia.com/gpu, replicas: 2}\n",
    "single-shared": "version: v1\nflags: {migStrategy: single}\nsharing:\n  timeSlicing:\n"
                     "    resources:\n    - {name: nvidia.com/gpu, replicas: 2}\n",
}
CASES = [(node, [], node) for node in FIXTURES] + [
    ("a100-mig", ["--mig-strategy", "mixed"], "a100-mig-mixed"),
    ("a100-mig-single", ["--mig-strategy", "single"], "a100-mig-single-single"),
    ("a100-mig", ["--mig-strategy", "single"], "a100-mig-single-invalid"),
    ("h100-mig", ["--mig-strategy", "single"], "h100-mig-single-invalid"),
    ("a100-mig", ["config:mixed-gpu-shared"], "a100-mig-mixed-gpu-shared"),
    ("a100-mig-single", ["config:single-shared"], "a100-mig-single-shared"),
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


# Expected values below restate what NVIDIA's gpu-feature-discovery does
# (its internal/lm package, k8s-device-plugin v0.17): they are not copied
# from gpulet's output.

def labels_of(gpulet, tmp_path, node, *args):
    r = gpulet("--simulate", node, "labels", "--no-timestamp", *expand(args, tmp_path))
    assert r.rc == 0, r.err
    return dict(l.split("=", 1) for l in r.out.splitlines())


CUDA_550_90 = {
    "nvidia.com/cuda.driver.major": "550", "nvidia.com/cuda.driver.minor": "90",
    "nvidia.com/cuda.driver.rev": "07", "nvidia.com/cuda.driver-version.major": "550",
    "nvidia.com/cuda.driver-version.minor": "90",
    "nvidia.com/cuda.driver-version.revision": "07",
    "nvidia.com/cuda.driver-version.full": "550.90.07",
    "nvidia.com/cuda.runtime.major": "12", "nvidia.com/cuda.runtime.minor": "4",
    "nvidia.com/cuda.runtime-version.major": "12", "nvidia.com/cuda.runtime-version.minor": "4",
    "nvidia.com/cuda.runtime-version.full": "12.4",
}


def test_a_node_without_gpus_gets_only_vgpu_present(gpulet, tmp_path):
    # GFD's device labeler is empty when the resource manager finds no
    # device; its vGPU labeler still says whether vGPUs are present.
    assert labels_of(gpulet, tmp_path, "empty") == {"nvidia.com/vgpu.present": "false"}


@pytest.mark.parametrize("node", FIXTURES)
def test_every_node_says_vgpu_present_false(gpulet, tmp_path, node):
    assert labels_of(gpulet, tmp_path, node)["nvidia.com/vgpu.present"] == "false"


@pytest.mark.parametrize("node,model", [("a100-mig", "NVIDIA-A100-SXM4-40GB"),
                                        ("h100-mig", "NVIDIA-H100-PCIe")])
def test_mig_single_on_a_node_it_cannot_serve_is_invalid(gpulet, tmp_path, node, model):
    # GFD's single-strategy labeler: MIG devices of more than one profile
    # (both nodes: 1g/2g/3g; GFD says the same for GPUs in MIG mode beside
    # GPUs outside it, or a MIG GPU without MIG devices) give
    # <model>-MIG-INVALID, count/replicas/memory 0, an empty strategy, and
    # none of the per-profile attribute labels.
    labels = labels_of(gpulet, tmp_path, node, "--mig-strategy", "single")
    assert labels["nvidia.com/gpu.product"] == f"{model}-MIG-INVALID"
    for key in ("count", "replicas", "memory"):
        assert labels[f"nvidia.com/gpu.{key}"] == "0"
    assert labels["nvidia.com/gpu.sharing-strategy"] == ""
    assert labels["nvidia.com/mig.strategy"] == "single"
    for key in ("multiprocessors", "slices.gi", "slices.ci", "engines.copy", "engines.decoder",
                "engines.encoder", "engines.jpeg", "engines.ofa"):
        assert f"nvidia.com/gpu.{key}" not in labels


def test_mig_mixed_with_every_gpu_in_mig_mode(gpulet, tmp_path):
    # GPUs in MIG mode are labelled without sharing (replicas 0); each
    # profile gets <resource>.sharing-strategy, time-slicing only for the
    # profile the configuration time-slices.
    labels = labels_of(gpulet, tmp_path, "a100-mig", "config:mig-shared")
    assert labels["nvidia.com/gpu.replicas"] == "0"
    assert labels["nvidia.com/gpu.sharing-strategy"] == "none"
    assert labels["nvidia.com/gpu.product"] == "NVIDIA-A100-SXM4-40GB"
    assert labels["nvidia.com/mig-1g.5gb.sharing-strategy"] == "time-slicing"
    assert labels["nvidia.com/mig-1g.5gb.replicas"] == "2"
    assert labels["nvidia.com/mig-1g.5gb.product"] == "NVIDIA-A100-SXM4-40GB-MIG-1g.5gb-SHARED"
    for profile in ("2g.10gb", "3g.20gb"):
        assert labels[f"nvidia.com/mig-{profile}.sharing-strategy"] == "none"
        assert labels[f"nvidia.com/mig-{profile}.replicas"] == "1"


def test_mig_mixed_and_gpu_time_slicing_every_key(gpulet, tmp_path):
    # Time-slicing nvidia.com/gpu does not touch GPUs in MIG mode: GFD
    # labels them with a nil sharing config. a100-mig: GPU 0 has seven
    # 1g.5gb, GPU 1 one 1g.5gb, one 2g.10gb and one 3g.20gb (sim/nodes).
    def profile(name, count, memory, sms, gi, copy, decoder):
        p = f"nvidia.com/mig-{name}."
        return {p + "count": str(count), p + "replicas": "1", p + "sharing-strategy": "none",
                p + "product": f"NVIDIA-A100-SXM4-40GB-MIG-{name}", p + "memory": str(memory),
                p + "multiprocessors": str(sms), p + "slices.gi": str(gi),
                p + "slices.ci": str(gi), p + "engines.copy": str(copy),
                p + "engines.decoder": str(decoder), p + "engines.encoder": "0",
                p + "engines.jpeg": "0", p + "engines.ofa": "0"}
    want = dict(CUDA_550_90)
    want.update({
        "nvidia.com/vgpu.present": "false", "nvidia.com/gpu.machine": "DGX-A100",
        "nvidia.com/mig.capable": "true", "nvidia.com/mps.capable": "false",
        "nvidia.com/mig.strategy": "mixed", "nvidia.com/gpu.mode": "compute",
        "nvidia.com/gpu.count": "2", "nvidia.com/gpu.replicas": "0",
        "nvidia.com/gpu.sharing-strategy": "none",
        "nvidia.com/gpu.product": "NVIDIA-A100-SXM4-40GB", "nvidia.com/gpu.memory": "40960",
        "nvidia.com/gpu.family": "ampere", "nvidia.com/gpu.compute.major": "8",
        "nvidia.com/gpu.compute.minor": "0",
    })
    want.update(profile("1g.5gb", 8, 4864, 14, 1, 1, 0))
    want.update(profile("2g.10gb", 1, 9856, 28, 2, 2, 1))
    want.update(profile("3g.20gb", 1, 19968, 42, 3, 3, 2))
    assert labels_of(gpulet, tmp_path, "a100-mig", "config:mixed-gpu-shared") == want


def test_mig_single_and_gpu_time_slicing_every_key(gpulet, tmp_path):
    # A valid single node: nvidia.com/gpu is the MIG devices, so
    # time-slicing nvidia.com/gpu shares them (-SHARED, replicas 2); the
    # family and compute capability still come from the GPUs.
    g = "nvidia.com/gpu."
    want = dict(CUDA_550_90)
    want.update({
        "nvidia.com/vgpu.present": "false", "nvidia.com/gpu.machine": "DGX-A100",
        "nvidia.com/mig.capable": "true", "nvidia.com/mps.capable": "false",
        "nvidia.com/mig.strategy": "single", "nvidia.com/gpu.mode": "compute",
        g + "count": "14", g + "replicas": "2", g + "sharing-strategy": "time-slicing",
        g + "product": "NVIDIA-A100-SXM4-40GB-MIG-1g.5gb-SHARED", g + "memory": "4864",
        g + "multiprocessors": "14", g + "slices.gi": "1", g + "slices.ci": "1",
        g + "engines.copy": "1", g + "engines.decoder": "0", g + "engines.encoder": "0",
        g + "engines.jpeg": "0", g + "engines.ofa": "0",
        g + "family": "ampere", g + "compute.major": "8", g + "compute.minor": "0",
    })
    assert labels_of(gpulet, tmp_path, "a100-mig-single", "config:single-shared") == want


def test_a_node_of_several_models_describes_one(gpulet, tmp_path):
    # GFD counts GPUs per product name and describes one name with that
    # name's count, memory and family (which one is left to Go's map order);
    # gpulet takes the first GPU's: mixed-t4-v100 is two T4s, then two V100s.
    labels = labels_of(gpulet, tmp_path, "mixed-t4-v100")
    assert labels["nvidia.com/gpu.product"] == "Tesla-T4"
    assert labels["nvidia.com/gpu.count"] == "2"
    assert labels["nvidia.com/gpu.memory"] == "15360"
    assert labels["nvidia.com/gpu.family"] == "turing"
    assert (labels["nvidia.com/gpu.compute.major"], labels["nvidia.com/gpu.compute.minor"]) == \
        ("7", "5")


def test_a_gpu_in_mig_mode_is_described_only_without_a_whole_gpu(gpulet, tmp_path):
    # GFD's whole-GPU labelers override its MIG-mode ones: with one GPU in
    # MIG mode and one outside, gpu.* describes the whole one, shared as
    # configured, counting both (one product name).
    node = tmp_path / "half.yaml"
    node.write_text(
        "gpu_defaults: {name: NVIDIA A100-SXM4-40GB, memory_mib: 40960, "
        "compute_capability: \"8.0\", mig_capable: true}\n"
        "gpus:\n"
        "  - {uuid: GPU-a, pci_bus_id: \"0:7:0.0\", mig_enabled: true, mig_devices: "
        "[{uuid: MIG-a, gpu_instance_id: 7, compute_instance_id: 0, slices: 1, "
        "memory_mib: 4864}]}\n"
        "  - {uuid: GPU-b, pci_bus_id: \"0:f:0.0\"}\n")
    labels = labels_of(gpulet, tmp_path, node, "config:time-slicing")
    assert labels["nvidia.com/gpu.count"] == "2"
    assert labels["nvidia.com/gpu.replicas"] == "4"
    assert labels["nvidia.com/gpu.product"] == "NVIDIA-A100-SXM4-40GB-SHARED"
    assert labels["nvidia.com/gpu.sharing-strategy"] == "time-slicing"


FABRIC_NODE = ("fabric: {cluster_uuid: 6A130F54-FAAA-4B8F-847F-BE44AB70F917, clique_id: 32766}\n"
               "gpu_defaults: {name: NVIDIA GB200, memory_mib: 189471, "
               "compute_capability: \"10.0\"}\n"
               "gpus:\n  - {uuid: GPU-1, pci_bus_id: \"0:8:0.0\"}\n"
               "  - {uuid: GPU-2, pci_bus_id: \"0:9:0.0\"}\n"
               "topology: {nvswitch_links: [18]}\n")


def test_gpu_clique_from_the_fabric(gpulet, tmp_path):
    # GFD's IMEX labeler: <cluster UUID>.<clique id> when every fabric-
    # attached GPU (registration completed and successful, cluster UUID not
    # all zero) reports the same pair; the UUID in Go's lower-case form.
    node = tmp_path / "nvl.yaml"
    node.write_text(FABRIC_NODE)
    labels = labels_of(gpulet, tmp_path, node)
    assert labels["nvidia.com/gpu.clique"] == "6a130f54-faaa-4b8f-847f-be44ab70f917.32766"
    assert labels["nvidia.com/gpu.family"] == "blackwell"


@pytest.mark.parametrize("node", ["h100-sxm", "dgx-a100", "t4-pcie"])
def test_no_clique_outside_a_multi_node_nvlink_domain(gpulet, tmp_path, node):
    # An HGX H100 board registers with the all-zero cluster UUID, which GFD
    # does not count as fabric-attached; Ampere and PCIe GPUs have no fabric.
    assert "nvidia.com/gpu.clique" not in labels_of(gpulet, tmp_path, node)


@pytest.mark.parametrize("uuid", ["6a130f54faaa4b8f847fbe44ab70f917", "6a130f54-faaa-4b8f-847f",
                                  "6a130f54-faaa-4b8f-847f-be44ab70f91g", "x" * 300])
def test_a_bad_fabric_cluster_uuid_is_refused(gpulet, tmp_path, uuid):
    node = tmp_path / "bad.yaml"
    node.write_text(FABRIC_NODE.replace("6A130F54-FAAA-4B8F-847F-BE44AB70F917", uuid))
    r = gpulet("--simulate", node, "labels")
    assert r.rc != 0
    assert "fabric.cluster_uuid" in r.err


def test_machine_unknown_when_the_node_has_no_product_name(gpulet, tmp_path):
    # GFD writes gpu.machine=unknown when it cannot read the DMI product name.
    node = tmp_path / "plain.yaml"
    node.write_text("gpus:\n  - {uuid: GPU-1, name: Tesla T4, pci_bus_id: \"0:1:0.0\", "
                    "memory_mib: 15360, compute_capability: \"7.5\"}\n")
    assert labels_of(gpulet, tmp_path, node)["nvidia.com/gpu.machine"] == "unknown"


def test_product_spaces_collapse_as_gfd_sanitises(gpulet, tmp_path):
    node = tmp_path / "spaces.yaml"
    node.write_text("machine: \"  Big   Box \"\n"
                    "gpus:\n  - {uuid: GPU-1, name: \" NVIDIA  X (rev 2) \", pci_bus_id: \"0:1:0.0\", "
                    "memory_mib: 1024, compute_capability: \"8.6\"}\n")
    labels = labels_of(gpulet, tmp_path, node)
    assert labels["nvidia.com/gpu.product"] == "NVIDIA-X-rev-2"
    assert labels["nvidia.com/gpu.machine"] == "Big-Box"


@pytest.mark.parametrize("second", ["{uuid: GPU-b, pci_bus_id: \"0:f:0.0\"}",
                                    "{uuid: GPU-b, pci_bus_id: \"0:f:0.0\", mig_enabled: true}"])
def test_mig_single_with_a_whole_or_empty_gpu_is_invalid(gpulet, tmp_path, second):
    # GFD: GPUs in MIG mode beside one outside it, or a GPU in MIG mode
    # without MIG devices, cannot be served by strategy single either.
    node = tmp_path / "half.yaml"
    node.write_text(
        "gpu_defaults: {name: NVIDIA A100-SXM4-40GB, memory_mib: 40960, "
        "compute_capability: \"8.0\", mig_capable: true}\n"
        "gpus:\n"
        "  - {uuid: GPU-a, pci_bus_id: \"0:7:0.0\", mig_enabled: true, mig_devices: "
        "[{uuid: MIG-a, gpu_instance_id: 7, compute_instance_id: 0, slices: 1, "
        "memory_mib: 4864}]}\n"
        f"  - {second}\n")
    labels = labels_of(gpulet, tmp_path, node, "--mig-strategy", "single")
    assert labels["nvidia.com/gpu.product"] == "NVIDIA-A100-SXM4-40GB-MIG-INVALID"
    assert labels["nvidia.com/gpu.count"] == "0"


def test_mps_is_not_capable_on_gpus_in_mig_mode(gpulet, tmp_path):
    # GFD refuses MPS where a GPU is in MIG mode (it stops with "MPS sharing
    # is not supported for mig devices"); gpulet labels the node and says
    # MPS is not capable there, and capable on whole GPUs.
    assert labels_of(gpulet, tmp_path, "a100-mig", "config:mig-mps")["nvidia.com/mps.capable"] == \
        "false"
    assert labels_of(gpulet, tmp_path, "dgx-a100", "config:mps")["nvidia.com/mps.capable"] == "true"


VGPU_GUEST = ("gpus:\n  - {uuid: GPU-1, name: GRID A100-40C, pci_bus_id: \"0:5:0.0\", "
              "memory_mib: 40960, compute_capability: \"8.0\", "
              "vgpu_host_driver_version: \"550.54.16\", vgpu_host_driver_branch: r550_00}\n"
              "  - {uuid: GPU-2, name: GRID A100-40C, pci_bus_id: \"0:6:0.0\", "
              "memory_mib: 40960, compute_capability: \"8.0\"}\n")


def test_a_vgpu_guest_says_so_with_its_host_driver(gpulet, tmp_path):
    # GFD's vGPU labeler: a GPU whose PCI config space has NVIDIA's
    # vendor-specific capability signed "VF" is a vGPU; its last record
    # (type 0) holds the host driver's version and branch, 10 bytes each.
    node = tmp_path / "guest.yaml"
    node.write_text(VGPU_GUEST)
    labels = labels_of(gpulet, tmp_path, node)
    assert labels["nvidia.com/vgpu.present"] == "true"
    assert labels["nvidia.com/vgpu.host-driver-version"] == "550.54.16"
    assert labels["nvidia.com/vgpu.host-driver-branch"] == "r550_00"


def test_a_vgpu_host_driver_version_longer_than_its_record_is_refused(gpulet, tmp_path):
    node = tmp_path / "guest.yaml"
    node.write_text(VGPU_GUEST.replace("550.54.16", "550.54.16.123"))
    r = gpulet("--simulate", node, "labels")
    assert r.rc != 0
    assert "vgpu_host_driver_version" in r.err
