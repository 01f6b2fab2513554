"""`gpulet info` on every simulated node, checked against the node files."""
import json
import math
import shutil
import subprocess

import pytest

from conftest import FIXTURES, NODES, load_node, write_atomically

LEVELS = {"internal": "INTERNAL", "single": "SINGLE", "multiple": "MULTIPLE",
          "hostbridge": "HOSTBRIDGE", "node": "NODE", "system": "SYSTEM"}
ORDER = list(LEVELS)


def expected_gpus(node):
    defaults = node.get("gpu_defaults", {})
    return [{**defaults, **g} for g in node.get("gpus") or []]


def expected_links(node, count):
    """Pair -> (PCIe level, NVLinks), worked out from the node file alone."""
    topo = node.get("topology") or {}
    default = topo.get("pcie_default", "system")
    pcie = {}
    for entry in topo.get("pcie", []):
        for group in entry["groups"]:
            for a in group:
                for b in group:
                    if a != b:
                        old = pcie.get((a, b))
                        if old is None or ORDER.index(entry["level"]) < ORDER.index(old):
                            pcie[(a, b)] = entry["level"]
    nvlinks = {}
    for a, b, n in topo.get("nvlinks", []):
        nvlinks[(a, b)] = nvlinks[(b, a)] = n
    via_switches = sum(topo.get("nvswitch_links", []))
    out = {}
    for a in range(count):
        for b in range(a + 1, count):
            out[(a, b)] = (LEVELS[pcie.get((a, b), default)],
                           nvlinks.get((a, b), 0) + via_switches)
    return out


@pytest.mark.parametrize("name", FIXTURES)
def test_info_json_matches_the_node_file(gpulet, name):
    node = load_node(name)
    r = gpulet("--simulate", name, "info", "--json")
    assert r.rc == 0, r.err
    assert r.err == ""
    info = json.loads(r.out)
    assert info["simulated_node"] == name
    assert info["driver_version"] == node["driver_version"]
    assert info["nvml_version"] == node["nvml_version"]
    cuda = node["cuda_driver_version"]
    assert info["cuda_driver_version"] == f"{cuda // 1000}.{cuda % 1000 // 10}"

    gpus = expected_gpus(node)
    assert len(info["gpus"]) == len(gpus)
    for i, (got, want) in enumerate(zip(info["gpus"], gpus)):
        assert got["index"] == i
        assert got["minor"] == want.get("minor", i)
        assert got["lost"] is False
        assert got["uuid"] == want["uuid"]
        assert got["name"] == want["name"]
        assert got["serial"] == want["serial"]
        assert got["pci_bus_id"] == want["pci_bus_id"]
        assert got["pci_device_id"] == f"0x{want['pci_device_id']:08X}"
        assert got["numa_node"] == want["numa_node"]
        assert got["memory_total_mib"] == want["memory_mib"]
        assert got["memory_reserved_mib"] == want.get("memory_reserved_mib", 0)
        assert got["compute_capability"] == want["compute_capability"]
        assert got["mig"]["capable"] == want.get("mig_capable", False)
        assert got["mig"]["enabled"] == want.get("mig_enabled", False)
        migs = want.get("mig_devices", [])
        assert len(got["mig"]["devices"]) == len(migs)
        for gm, wm in zip(got["mig"]["devices"], migs):
            assert gm["uuid"] == wm["uuid"]
            assert gm["gpu_instance_id"] == wm["gpu_instance_id"]
            assert gm["compute_instance_id"] == wm["compute_instance_id"]
            assert gm["memory_mib"] == wm["memory_mib"]
            assert gm["multiprocessors"] == wm["multiprocessors"]
            assert gm["profile"] == f"{wm['slices']}g.{math.ceil(wm['memory_mib'] / 1024)}gb"

    links = {(l["a"], l["b"]): (l["pcie"], l["nvlinks"]) for l in info["topology"]}
    assert links == expected_links(node, len(gpus))


def test_fixture_shapes_match_the_issue():
    """The fixtures describe the machines they are named after."""
    shape = {name: expected_gpus(load_node(name)) for name in FIXTURES}
    assert {g["name"] for g in shape["dgx1-v100"]} == {"Tesla V100-SXM2-16GB"}
    assert len(shape["dgx1-v100"]) == 8
    assert {g["name"] for g in shape["dgx-a100"]} == {"NVIDIA A100-SXM4-80GB"}
    assert [g["numa_node"] for g in shape["dgx-a100"]] == [0, 0, 0, 0, 1, 1, 1, 1]
    assert {g["name"] for g in shape["h100-sxm"]} == {"NVIDIA H100 80GB HBM3"}
    assert all(g["gpm"] for g in shape["h100-sxm"])
    assert len(shape["t4-pcie"]) == 4 and "nvlinks" not in (load_node("t4-pcie")["topology"])
    assert [len(g["mig_devices"]) for g in shape["a100-mig"]] == [7, 3]
    assert shape["empty"] == []
    assert [g["name"] for g in shape["mixed-t4-v100"]] == [
        "Tesla T4", "Tesla V100-PCIE-32GB", "Tesla T4", "Tesla V100-PCIE-32GB"]
    assert sum(load_node("dgx-a100")["topology"]["nvswitch_links"]) == 12
    assert sum(load_node("h100-sxm")["topology"]["nvswitch_links"]) == 18


def test_text_shows_gpus_and_the_nvlink_matrix(gpulet):
    r = gpulet("--simulate", "dgx1-v100", "info")
    assert r.rc == 0, r.err
    node = expected_gpus(load_node("dgx1-v100"))
    assert f"GPU 0: Tesla V100-SXM2-16GB (UUID: {node[0]['uuid']})" in r.out
    rows = {line.split()[0]: line.split()[1:] for line in r.out.splitlines()
            if line.startswith("GPU") and len(line.split()) == 9}
    assert rows["GPU0"] == ["X", "NV1", "NV1", "NV2", "NV2", "SYS", "SYS", "SYS"]
    assert rows["GPU5"] == ["SYS", "NV2", "SYS", "SYS", "NV1", "X", "NV2", "NV1"]
    assert "(simulated node: dgx1-v100)" in r.out


def test_text_shows_the_memory_slices_are_cut_from(gpulet):
    """Slices are cut from the memory the driver can hand out (issue #23)."""
    r = gpulet("--simulate", "t4-pcie", "info")
    assert r.rc == 0, r.err
    rows = [line.split() for line in r.out.splitlines() if line.startswith("0     ")]
    assert rows and rows[0][2:8] == ["15360", "MiB", "257", "MiB", "15103", "MiB"], rows


def test_text_lists_mig_devices_like_nvidia_smi(gpulet):
    r = gpulet("--simulate", "a100-mig", "info")
    assert r.rc == 0, r.err
    lines = r.out.splitlines()
    mig_lines = [l for l in lines if l.startswith("  MIG ")]
    assert len(mig_lines) == 10
    assert mig_lines[7].split()[1] == "3g.20gb"
    assert "Device  0: (UUID: MIG-" in mig_lines[7]


def test_empty_node(gpulet):
    r = gpulet("--simulate", "empty", "info")
    assert r.rc == 0, r.err
    assert "No GPUs found." in r.out


def test_simulate_accepts_a_file(gpulet, tmp_path):
    node = tmp_path / "mine.yaml"
    node.write_text("gpus:\n  - {uuid: GPU-1, name: Tiny GPU, pci_bus_id: \"0:1:0.0\", "
                    "memory_mib: 2048, compute_capability: \"6.1\"}\n")
    r = gpulet("--simulate", node, "info", "--json")
    assert r.rc == 0, r.err
    info = json.loads(r.out)
    assert info["simulated_node"] == "mine"
    assert info["gpus"][0]["name"] == "Tiny GPU"
    assert info["gpus"][0]["pci_bus_id"] == "00000000:01:00.0"


def test_lost_gpu_is_reported_and_the_rest_still_shown(gpulet, tmp_path):
    state = tmp_path / "state.yaml"
    write_atomically(state, "gpus:\n  3: {lost: true}\n")
    r = gpulet("--simulate", "dgx-a100", "info", "--json", env={"GPULET_SIM_STATE": str(state)})
    assert r.rc == 0, r.err
    gpus = json.loads(r.out)["gpus"]
    assert [g["lost"] for g in gpus] == [False, False, False, True, False, False, False, False]
    r = gpulet("--simulate", "dgx-a100", "info", env={"GPULET_SIM_STATE": str(state)})
    assert "GPU 3: lost (fell off the bus; check dmesg for Xid 79)" in r.out


def test_old_driver_library_gives_the_same_gpus(gpulet, build):
    node = NODES / "a100-mig.yaml"
    new = gpulet("--simulate", node, "info", "--json")
    old = gpulet("--nvml-lib", build / "sim" / "old" / "libnvidia-ml.so.1", "info", "--json",
                 env={"GPULET_SIM_NODE": str(node)})
    assert old.rc == 0, old.err
    a, b = json.loads(new.out), json.loads(old.out)
    assert [g["uuid"] for g in a["gpus"]] == [g["uuid"] for g in b["gpus"]]
    assert a["gpus"][1]["mig"] == b["gpus"][1]["mig"]


def real_driver_present():
    ldconfig = shutil.which("ldconfig") or "/sbin/ldconfig"
    out = subprocess.run([ldconfig, "-p"], capture_output=True, text=True).stdout
    return "libnvidia-ml.so.1" in out


@pytest.mark.skipif(real_driver_present(), reason="this machine has an NVIDIA driver")
def test_no_driver_exits_2_with_a_clear_message(gpulet):
    r = gpulet("info")
    assert r.rc == 2
    assert r.out == ""
    assert "NVIDIA driver library libnvidia-ml.so.1 not found (looked in" in r.err
    assert "Is the NVIDIA driver installed?" in r.err
    assert "gpulet --simulate dgx-a100 info" in r.err


@pytest.mark.skipif(real_driver_present(), reason="this machine has an NVIDIA driver")
def test_driver_root_is_searched_and_named(gpulet, tmp_path):
    r = gpulet("--driver-root", tmp_path, "info")
    assert r.rc == 2
    assert f"{tmp_path}/usr/lib64, {tmp_path}/usr/lib/x86_64-linux-gnu" in r.err
    r = gpulet("info", env={"NVIDIA_DRIVER_ROOT": str(tmp_path)})
    assert r.rc == 2
    assert f"{tmp_path}/usr/lib64" in r.err


def test_malformed_node_file_names_file_and_line(gpulet, tmp_path):
    node = tmp_path / "broken.yaml"
    node.write_text("gpus:\n  - uuid: GPU-1\n    memory_mib: lots\n")
    r = gpulet("--simulate", node, "info")
    assert r.rc == 2
    assert r.out == ""
    assert f"{node} line 3: memory_mib must be a whole number from 1 to 4194304, not \"lots\"" in r.err
    node.write_text("gpus: [\n")
    r = gpulet("--simulate", node, "info")
    assert r.rc == 2
    assert f"{node} line " in r.err
