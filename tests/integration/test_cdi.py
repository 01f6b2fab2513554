"""gpulet cdi generate on a fake driver root: real shared objects with
sonames, an ld cache made by ldconfig, device nodes made with mknod."""
import json
import os
import shutil
import stat
import subprocess

import pytest
import yaml

from conftest import load_node

VERSION = "550.90.07"  # the driver of the a100-mig and dgx-a100 fixtures
LIBS = ["libcuda", "libnvidia-ml", "libnvidia-ptxjitcompiler", "libEGL_nvidia"]


@pytest.fixture(scope="session")
def driver_root(tmp_path_factory):
    root = tmp_path_factory.mktemp("driver")
    lib = root / "usr/lib/x86_64-linux-gnu"
    lib.mkdir(parents=True)
    (root / "etc").mkdir()
    src = root / "x.c"
    src.write_text("int gpulet_fake;\n")

    def shared_object(name, soname):
        subprocess.run(["gcc", "-shared", "-fPIC", f"-Wl,-soname,{soname}", "-o", str(lib / name),
                        str(src)], check=True)

    for l in LIBS:
        shared_object(f"{l}.so.{VERSION}", f"{l}.so.1")
    shared_object(f"libother.so.{VERSION}", "libother.so.1")   # not the driver's
    shared_object("libnvidia-cfg.so.1.0.0", "libnvidia-cfg.so.1")  # not this version
    (root / "etc/ld.so.conf").write_text("/usr/lib/x86_64-linux-gnu\n")
    ldconfig = shutil.which("ldconfig") or "/sbin/ldconfig"
    subprocess.run([ldconfig, "-r", str(root)], check=True)
    (root / "usr/bin").mkdir(parents=True)
    (root / "usr/bin/nvidia-smi").write_text("#!/bin/sh\n")
    fw = root / f"lib/firmware/nvidia/{VERSION}"
    fw.mkdir(parents=True)
    (fw / "gsp_ga10x.bin").write_bytes(b"\0")
    caps = root / "proc/driver/nvidia-caps"
    caps.mkdir(parents=True)
    (caps / "mig-minors").write_text("config 1\nmonitor 2\ngpu1/gi2/access 21\n"
                                     "gpu1/gi2/ci0/access 22\n")
    (root / "dev").mkdir()
    os.mknod(root / "dev/nvidiactl", 0o666 | stat.S_IFCHR, os.makedev(195, 255))
    for minor in range(8):
        os.mknod(root / f"dev/nvidia{minor}", 0o666 | stat.S_IFCHR, os.makedev(195, minor))
    return root


def generate(gpulet, node, *args):
    r = gpulet("--simulate", node, "cdi", "generate", *args)
    assert r.rc == 0, r.err
    return r.out


def test_spec_devices_and_edits(gpulet, driver_root):
    spec = yaml.safe_load(generate(gpulet, "a100-mig", "--driver-root", driver_root))
    assert spec["cdiVersion"] == "0.5.0" and spec["kind"] == "nvidia.com/gpu"
    node = load_node("a100-mig")
    gpus = node["gpus"]
    names = [d["name"] for d in spec["devices"]]
    want = {"0", "1", "all", gpus[0]["uuid"], gpus[1]["uuid"]}
    want |= {f"{g}:{m}" for g, gpu in enumerate(gpus) for m in range(len(gpu["mig_devices"]))}
    want |= {m["uuid"] for gpu in gpus for m in gpu["mig_devices"]}
    assert set(names) == want
    assert names == sorted(names[:-1]) + ["all"]
    big = next(d for d in spec["devices"] if d["name"] == "1:0")  # 3g.20gb, GPU instance 2
    assert [n["path"] for n in big["containerEdits"]["deviceNodes"]] == [
        "/dev/nvidia1", "/dev/nvidia-caps/nvidia-cap21", "/dev/nvidia-caps/nvidia-cap22"]
    dev1 = next(d for d in spec["devices"] if d["name"] == "1")
    assert dev1["containerEdits"]["deviceNodes"] == [
        {"path": "/dev/nvidia1", "hostPath": f"{driver_root}/dev/nvidia1"}]
    edits = spec["containerEdits"]
    assert edits["env"] == ["NVIDIA_VISIBLE_DEVICES=void"]
    assert edits["deviceNodes"] == [{"path": "/dev/nvidiactl", "hostPath": f"{driver_root}/dev/nvidiactl"}]
    mounts = {m["containerPath"]: m["hostPath"] for m in edits["mounts"]}
    lib = "/usr/lib/x86_64-linux-gnu"
    for l in LIBS:
        assert mounts[f"{lib}/{l}.so.{VERSION}"] == f"{driver_root}{lib}/{l}.so.{VERSION}"
        assert mounts[f"{lib}/{l}.so.1"] == f"{driver_root}{lib}/{l}.so.{VERSION}"
    assert not any("libother" in p or "libnvidia-cfg" in p for p in mounts)
    assert mounts["/usr/bin/nvidia-smi"] == f"{driver_root}/usr/bin/nvidia-smi"
    assert f"/lib/firmware/nvidia/{VERSION}/gsp_ga10x.bin" in mounts
    assert all(m["options"] == ["ro", "nosuid", "nodev", "rbind", "rprivate"] for m in edits["mounts"])


def test_yaml_and_json_agree_and_output_is_deterministic(gpulet, driver_root, tmp_path):
    out = tmp_path / "cdi" / "nvidia.json"
    out.parent.mkdir()
    generate(gpulet, "dgx-a100", "--driver-root", driver_root, "--output", out)
    as_json = json.loads(out.read_text())
    first = generate(gpulet, "dgx-a100", "--driver-root", driver_root)
    assert first == generate(gpulet, "dgx-a100", "--driver-root", driver_root)
    assert yaml.safe_load(first) == as_json
    assert [p.name for p in out.parent.iterdir()] == ["nvidia.json"]  # no temporary left
    forced = generate(gpulet, "dgx-a100", "--driver-root", driver_root, "--format", "json")
    assert json.loads(forced) == as_json


def test_dev_root_apart_from_driver_root(gpulet, driver_root, tmp_path):
    (tmp_path / "dev").mkdir()
    os.mknod(tmp_path / "dev/nvidia-uvm", 0o666 | stat.S_IFCHR, os.makedev(511, 0))
    spec = yaml.safe_load(generate(gpulet, "dgx-a100", "--driver-root", driver_root,
                                   "--dev-root", tmp_path))
    nodes = spec["containerEdits"]["deviceNodes"]
    assert nodes == [{"path": "/dev/nvidia-uvm", "hostPath": f"{tmp_path}/dev/nvidia-uvm"}]
    assert spec["containerEdits"]["mounts"][0]["hostPath"].startswith(str(driver_root))


def test_wrong_driver_version_or_no_cache(gpulet, driver_root, tmp_path):
    r = gpulet("--simulate", "t4-pcie", "cdi", "generate", "--driver-root", driver_root)
    assert r.rc == 1
    assert "lists no NVIDIA driver library ending in .so.550.127.05" in r.err
    r = gpulet("--simulate", "dgx-a100", "cdi", "generate", "--driver-root", tmp_path)
    assert r.rc == 1
    assert f"cannot read the driver root's ld cache {tmp_path}/etc/ld.so.cache" in r.err
    (tmp_path / "etc").mkdir()
    (tmp_path / "etc/ld.so.cache").write_bytes(b"glibc-ld.so.cache1.1" + b"\xff" * 40)
    r = gpulet("--simulate", "dgx-a100", "cdi", "generate", "--driver-root", tmp_path)
    assert r.rc == 1
    assert "is cut short or corrupt" in r.err
    r = gpulet("--simulate", "dgx-a100", "cdi", "generate", "--format", "toml")
    assert r.rc == 2 and "--format must be yaml or json" in r.err
    r = gpulet("--simulate", "dgx-a100", "cdi")
    assert r.rc == 2 and "which action? (generate)" in r.err
