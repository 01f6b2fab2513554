"""The simulated NVML as a product: docs/simulator.md names every function
it exports, on the right side (answered or not simulated), and the sysfs
tree it makes is there when asked for and gone afterwards."""
import re
import shutil
import subprocess

import pytest
import yaml

from conftest import ROOT
from test_cdi import make_driver_root

DOC = ROOT / "docs" / "simulator.md"
STUBS = ROOT / "sim" / "nvml_sim_stubs.c"


def exported(lib):
    out = subprocess.run(["nm", "-D", "--defined-only", str(lib)], capture_output=True,
                         text=True, check=True).stdout
    return {line.split()[2] for line in out.splitlines()
            if len(line.split()) == 3 and line.split()[1] == "T"
            and line.split()[2].startswith("nvml")}


def doc_section(title):
    text = DOC.read_text()
    start = text.index(f"## {title}")
    end = text.find("\n## ", start + 1)
    return set(re.findall(r"`(nvml[A-Za-z0-9_]+)`", text[start:end if end > 0 else None]))


@pytest.mark.parametrize("flavour", ["current", "old"])
def test_docs_list_every_exported_function_on_its_side(build, flavour):
    names = exported(build / "sim" / flavour / "libnvidia-ml.so.1")
    stubs = set(re.findall(r"X\((nvml[A-Za-z0-9_]+)\)", STUBS.read_text()))
    answered = doc_section("NVML functions")
    unanswered = doc_section("Calls it does not answer")
    assert len(stubs) > 150
    assert stubs <= names
    assert not answered & unanswered, answered & unanswered
    assert names - stubs <= answered, f"undocumented: {sorted(names - stubs - answered)}"
    assert stubs == unanswered, sorted(stubs ^ unanswered)
    if flavour == "current":
        # The "old driver lacks" list is part of the answered section.
        assert answered == names - stubs, sorted(answered ^ (names - stubs))


def test_simulated_nodes_have_a_pci_class_and_leave_no_tree(gpulet, tmp_path):
    tmp = tmp_path / "tmp"
    tmp.mkdir()
    r = gpulet("--simulate", "h100-sxm", "labels", "--no-timestamp", env={"TMPDIR": str(tmp)})
    assert r.rc == 0, r.err
    assert "nvidia.com/gpu.mode=compute\n" in r.out
    assert list(tmp.iterdir()) == []  # the private sysfs went with nvmlShutdown


def test_a_named_sysfs_tree_is_kept_and_rewritten(gpulet, tmp_path):
    root = tmp_path / "sys"
    dev = root / "bus" / "pci" / "devices" / "0000:3b:00.0"
    r = gpulet("--simulate", "t4-pcie", "info", env={"GPULET_SIM_SYSFS": str(root)})
    assert r.rc == 0, r.err
    assert (dev / "class").read_text() == "0x030200\n"
    assert (dev / "device").read_text() == "0x1eb8\n"
    assert (root / "class" / "dmi" / "id" / "product_name").read_text() == "PowerEdge R740\n"
    (dev / "class").write_text("0x030000\n")  # changed by hand: the next start rewrites it
    r = gpulet("--simulate", "t4-pcie", "labels", "--no-timestamp",
               env={"GPULET_SIM_SYSFS": str(root)})
    assert "nvidia.com/gpu.mode=compute\n" in r.out


def test_a_graphics_class_says_graphics(gpulet, tmp_path):
    node = tmp_path / "vga.yaml"
    node.write_text("gpus:\n  - {uuid: GPU-1, name: NVIDIA RTX A6000, pci_bus_id: \"0:1:0.0\", "
                    "memory_mib: 49140, compute_capability: \"8.6\", pci_class: 0x030000}\n")
    r = gpulet("--simulate", node, "labels", "--no-timestamp")
    assert r.rc == 0, r.err
    assert "nvidia.com/gpu.mode=graphics\n" in r.out


def test_an_unwritable_sysfs_folder_is_a_clear_error(gpulet, tmp_path):
    blocker = tmp_path / "file"
    blocker.write_text("not a folder")
    r = gpulet("--simulate", "t4-pcie", "info", env={"GPULET_SIM_SYSFS": str(blocker / "sys")})
    assert r.rc != 0
    assert "cannot write the simulated sysfs" in r.err
    assert str(blocker) in r.err


def test_a_named_procfs_tree_has_the_mig_minors(gpulet, tmp_path):
    # The driver's numbering (NVIDIA's MIG user guide shows gpu0/gi2/access
    # as minor 21): config 1, monitor 2, then per GPU minor 15 GPU
    # instances of one access capability and 8 compute instance ones.
    proc = tmp_path / "proc"
    r = gpulet("--simulate", "a100-mig", "info", env={"GPULET_SIM_PROCFS": str(proc)})
    assert r.rc == 0, r.err
    text = (proc / "driver" / "nvidia-caps" / "mig-minors").read_text()
    minors = dict(line.split(" ") for line in text.splitlines())
    assert len(minors) == 2 + 2 * 15 * 9
    assert minors["config"] == "1" and minors["monitor"] == "2"
    assert minors["gpu0/gi0/access"] == "3" and minors["gpu0/gi0/ci7/access"] == "11"
    assert minors["gpu0/gi2/access"] == "21" and minors["gpu0/gi2/ci0/access"] == "22"
    assert minors["gpu1/gi2/access"] == "156" and minors["gpu1/gi14/ci7/access"] == "272"
    assert len(set(minors.values())) == len(minors)


def test_gpulet_finds_mig_capabilities_in_the_simulated_procfs(gpulet, tmp_path):
    # A test driver root with the simulated procfs as its proc/: the MIG
    # device on GPU 1, GPU instance 2 gets the capability nodes the driver
    # numbers. (A root of links to another root's folders will not do:
    # gpulet resolves every link inside the driver root.)
    root = make_driver_root(tmp_path / "root")
    shutil.rmtree(root / "proc")
    r = gpulet("--simulate", "a100-mig", "cdi", "generate", "--driver-root", root,
               env={"GPULET_SIM_PROCFS": str(root / "proc")})
    assert r.rc == 0, r.err
    spec = yaml.safe_load(r.out)
    big = next(d for d in spec["devices"] if d["name"] == "1:0")  # 3g.20gb, GPU instance 2
    assert [n["path"] for n in big["containerEdits"]["deviceNodes"]][1:] == [
        "/dev/nvidia-caps/nvidia-cap156", "/dev/nvidia-caps/nvidia-cap157"]


def test_the_documented_mount_shows_programs_the_simulated_files(gpulet, tmp_path):
    # docs/simulator.md: a private mount namespace puts the tree where
    # NVIDIA's programs look, /proc/driver (the DMI product name they are
    # pointed at by a flag: this machine may have no /sys/class/dmi).
    if shutil.which("unshare") is None or subprocess.run(
            ["unshare", "-rm", "true"], capture_output=True).returncode != 0:
        pytest.skip("unprivileged mount namespaces are not available here")
    proc, sys_ = tmp_path / "proc", tmp_path / "sys"
    r = gpulet("--simulate", "a100-mig", "info",
               env={"GPULET_SIM_PROCFS": str(proc), "GPULET_SIM_SYSFS": str(sys_)})
    assert r.rc == 0, r.err
    script = (f"mount --bind {proc}/driver /proc/driver && "
              "grep -x 'gpu1/gi2/access 156' /proc/driver/nvidia-caps/mig-minors && "
              f"cat {sys_}/class/dmi/id/product_name")
    out = subprocess.run(["unshare", "-rm", "sh", "-c", script], capture_output=True, text=True)
    assert out.returncode == 0, out.stderr
    assert out.stdout == "gpu1/gi2/access 156\nDGX A100\n"


def test_an_unwritable_procfs_folder_is_a_clear_error(gpulet, tmp_path):
    blocker = tmp_path / "file"
    blocker.write_text("not a folder")
    r = gpulet("--simulate", "a100-mig", "info", env={"GPULET_SIM_PROCFS": str(blocker / "p")})
    assert r.rc != 0
    assert "cannot write the simulated procfs" in r.err
