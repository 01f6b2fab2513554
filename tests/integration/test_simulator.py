"""The simulated NVML as a product: docs/simulator.md names every function
it exports, on the right side (answered or not simulated), and the sysfs
tree it makes is there when asked for and gone afterwards."""
import re
import subprocess

import pytest

from conftest import ROOT

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
