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


# Libraries of the driver's version that nvidia-ctk mounts beyond the
# compute/utility/video basics (graphics, capture, OptiX, NGX, PKCS#11).
EXTRA_LIBS = ["libGLESv1_CM_nvidia", "libnvidia-fbc", "libnvidia-glvkspirv", "libnvidia-ngx",
              "libnvidia-pkcs11", "libnvidia-pkcs11-openssl3", "libnvidia-rtcore", "libnvoptix",
              "libGLX_nvidia", "libnvidia-opticalflow", "libnvidia-allocator"]
EGL_GBM = "libnvidia-egl-gbm.so.1.1.2"  # versioned apart from the driver


def mig_minors_text():
    """/proc/driver/nvidia-caps/mig-minors as the driver numbers it: config
    1, monitor 2, then per GPU (up to 32) and GPU instance (15) the
    instance's access node followed by its 8 compute instances'."""
    lines, minor = ["config 1", "monitor 2"], 3
    for gpu in range(32):
        for gi in range(15):
            lines.append(f"gpu{gpu}/gi{gi}/access {minor}")
            minor += 1
            for ci in range(8):
                lines.append(f"gpu{gpu}/gi{gi}/ci{ci}/access {minor}")
                minor += 1
    return "\n".join(lines) + "\n"


def mig_minor(gpu, gi, ci=None):
    return 3 + gpu * 135 + gi * 9 + (0 if ci is None else 1 + ci)


def make_driver_root(root, version=VERSION):
    lib = root / "usr/lib/x86_64-linux-gnu"
    (lib / "vdpau").mkdir(parents=True)
    (root / "etc").mkdir()
    src = root / "x.c"
    src.write_text("int gpulet_fake;\n")

    def shared_object(name, soname):
        subprocess.run(["gcc", "-shared", "-fPIC", f"-Wl,-soname,{soname}", "-o", str(lib / name),
                        str(src)], check=True)

    for l in LIBS + EXTRA_LIBS:
        shared_object(f"{l}.so.{version}", f"{l}.so.1" if l != "libGLX_nvidia" else f"{l}.so.0")
    shared_object(f"libother.so.{version}", "libother.so.1")   # beside libcuda: NVIDIA takes it
    shared_object("libnvidia-cfg.so.1.0.0", "libnvidia-cfg.so.1")  # not this version
    shared_object(EGL_GBM, "libnvidia-egl-gbm.so.1")
    shared_object(f"vdpau/libvdpau_nvidia.so.{version}", "libvdpau_nvidia.so.1")
    (root / "etc/ld.so.conf").write_text("/usr/lib/x86_64-linux-gnu\n")
    ldconfig = shutil.which("ldconfig") or "/sbin/ldconfig"
    subprocess.run([ldconfig, "-r", str(root)], check=True)
    (root / "usr/bin").mkdir(parents=True)
    for tool in ("nvidia-smi", "nvidia-imex"):
        (root / "usr/bin" / tool).write_text("#!/bin/sh\n")
    fw = root / f"lib/firmware/nvidia/{version}"
    fw.mkdir(parents=True)
    (fw / "gsp_ga10x.bin").write_bytes(b"\0")
    (fw / "gsp_tu10x.bin").write_bytes(b"\0")
    share = root / "usr/share"
    for rel in ("glvnd/egl_vendor.d/10_nvidia.json", "vulkan/icd.d/nvidia_icd.json",
                "egl/egl_external_platform.d/15_nvidia_gbm.json"):
        (share / rel).parent.mkdir(parents=True, exist_ok=True)
        (share / rel).write_text("{}\n")
    for sock in ("run/nvidia-persistenced/socket", "var/run/nvidia-fabricmanager/socket"):
        (root / sock).parent.mkdir(parents=True)
        (root / sock).write_bytes(b"")
    caps = root / "proc/driver/nvidia-caps"
    caps.mkdir(parents=True)
    (caps / "mig-minors").write_text(mig_minors_text())
    (root / "dev").mkdir()
    os.mknod(root / "dev/nvidiactl", 0o666 | stat.S_IFCHR, os.makedev(195, 255))
    for minor in range(8):
        os.mknod(root / f"dev/nvidia{minor}", 0o666 | stat.S_IFCHR, os.makedev(195, minor))
    return root


@pytest.fixture(scope="session")
def driver_root(tmp_path_factory):
    return make_driver_root(tmp_path_factory.mktemp("driver"))


@pytest.fixture(scope="session")
def root_for(tmp_path_factory, driver_root):
    """A driver root for the driver version of a node."""
    roots = {VERSION: driver_root}

    def get(node):
        version = load_node(node)["driver_version"]
        if version not in roots:
            roots[version] = make_driver_root(tmp_path_factory.mktemp("driver"), version)
        return roots[version]
    return get


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
        "/dev/nvidia1", f"/dev/nvidia-caps/nvidia-cap{mig_minor(1, 2)}",
        f"/dev/nvidia-caps/nvidia-cap{mig_minor(1, 2, 0)}"]
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
    assert not any("libnvidia-cfg" in p for p in mounts)
    assert mounts["/usr/bin/nvidia-smi"] == f"{driver_root}/usr/bin/nvidia-smi"
    assert f"/lib/firmware/nvidia/{VERSION}/gsp_ga10x.bin" in mounts
    # nvidia-ctk's options: single files need no recursive bind
    assert all(m["options"][:4] == ["ro", "nosuid", "nodev", "bind"] for m in edits["mounts"])


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


def test_libraries_links_files_and_sockets_as_nvidia_ctk(gpulet, driver_root):
    """nvidia-ctk (v1.17) mounts every *.so.<driver version> in libcuda's
    folder and its vdpau/ folder, the EGL platform libraries under their own
    versions, the graphics configuration (Vulkan files under /etc), the IMEX
    tools, every gsp*.bin of the version and the IPC sockets (noexec); its
    create-symlinks hooks add libcuda.so, libGLX_indirect.so.0,
    libnvidia-opticalflow.so and gbm/nvidia-drm_gbm.so."""
    spec = yaml.safe_load(generate(gpulet, "dgx-a100", "--driver-root", driver_root))
    edits = spec["containerEdits"]
    mounts = {m["containerPath"]: m for m in edits["mounts"]}
    lib = "/usr/lib/x86_64-linux-gnu"
    for l in EXTRA_LIBS + ["libother"]:
        assert mounts[f"{lib}/{l}.so.{VERSION}"]["hostPath"] == f"{driver_root}{lib}/{l}.so.{VERSION}"
    assert f"{lib}/vdpau/libvdpau_nvidia.so.{VERSION}" in mounts
    assert mounts[f"{lib}/{EGL_GBM}"]["hostPath"] == f"{driver_root}{lib}/{EGL_GBM}"
    assert mounts[f"{lib}/libnvidia-egl-gbm.so.1"]["hostPath"] == f"{driver_root}{lib}/{EGL_GBM}"
    links = {"libcuda.so": "libcuda", "libGLX_indirect.so.0": "libGLX_nvidia",
             "libnvidia-opticalflow.so": "libnvidia-opticalflow",
             "gbm/nvidia-drm_gbm.so": "libnvidia-allocator"}
    for link, target in links.items():
        assert mounts[f"{lib}/{link}"]["hostPath"] == f"{driver_root}{lib}/{target}.so.{VERSION}"
    assert mounts["/usr/share/glvnd/egl_vendor.d/10_nvidia.json"]["hostPath"] == \
        f"{driver_root}/usr/share/glvnd/egl_vendor.d/10_nvidia.json"
    assert mounts["/usr/share/egl/egl_external_platform.d/15_nvidia_gbm.json"]
    assert mounts["/etc/vulkan/icd.d/nvidia_icd.json"]["hostPath"] == \
        f"{driver_root}/usr/share/vulkan/icd.d/nvidia_icd.json"
    assert "/usr/bin/nvidia-imex" in mounts
    assert {f"/lib/firmware/nvidia/{VERSION}/gsp_{g}.bin" for g in ("ga10x", "tu10x")} <= set(mounts)
    for sock in ("/run/nvidia-persistenced/socket", "/var/run/nvidia-fabricmanager/socket"):
        assert mounts[sock]["options"] == ["ro", "nosuid", "nodev", "bind", "noexec"]
    # the hook: ld cache folders of libraries only (not gbm/), with the
    # driver version for CUDA forward compatibility
    hook, = edits["hooks"]
    assert hook["args"][:4] == ["gpulet-hook", "update-ldcache", "--host-driver-version", VERSION]
    assert hook["args"][4:] == ["--folder", lib, "--folder", f"{lib}/vdpau"]


@pytest.mark.parametrize("node", ["a100-mig", "a100-mig-single", "h100-mig", "dgx-a100"])
def test_all_gives_every_gpu_and_mig_device(gpulet, root_for, node):
    """nvidia-ctk's "all" merges the edits of every device: each GPU node,
    and each MIG device's GPU- and compute-instance capabilities (22 nodes
    on a100-mig: 2 GPUs, 10 MIG devices)."""
    spec = yaml.safe_load(generate(gpulet, node, "--driver-root", root_for(node)))
    gpus = load_node(node)["gpus"]
    want = {f"/dev/nvidia{i}" for i in range(len(gpus))}
    for i, gpu in enumerate(gpus):
        for m in gpu.get("mig_devices") or []:
            want.add(f"/dev/nvidia-caps/nvidia-cap{mig_minor(i, m['gpu_instance_id'])}")
            want.add(f"/dev/nvidia-caps/nvidia-cap"
                     f"{mig_minor(i, m['gpu_instance_id'], m['compute_instance_id'])}")
    all_dev = next(d for d in spec["devices"] if d["name"] == "all")
    paths = [n["path"] for n in all_dev["containerEdits"]["deviceNodes"]]
    assert len(paths) == len(set(paths)) and set(paths) == want
    if node == "a100-mig":
        assert len(paths) == 22


def test_driver_root_links_stay_inside_it(gpulet, tmp_path):
    """Files of the driver's version that are links out of the driver root
    (absolute, or through ..), loops, or folders are not mounted; the
    others are."""
    root = make_driver_root(tmp_path / "root")
    lib = root / "usr/lib/x86_64-linux-gnu"
    outside = tmp_path / "outside.so"
    outside.write_text("host file\n")
    os.symlink(str(outside), lib / f"libnvidia-abs.so.{VERSION}")
    os.symlink("../../../../outside.so", lib / f"libnvidia-up.so.{VERSION}")
    os.symlink(f"libnvidia-loop.so.{VERSION}", lib / f"libnvidia-loop.so.{VERSION}")
    (lib / f"libnvidia-dir.so.{VERSION}").mkdir()
    spec = yaml.safe_load(generate(gpulet, "dgx-a100", "--driver-root", root))
    mounts = {m["containerPath"]: m["hostPath"] for m in spec["containerEdits"]["mounts"]}
    assert not any(n in p for p in mounts for n in ("abs", "-up", "loop", "-dir"))
    assert not any(h == str(outside) for h in mounts.values())
    assert all(h.startswith(str(root)) for h in mounts.values())
    assert f"/usr/lib/x86_64-linux-gnu/libcuda.so.{VERSION}" in mounts


def test_only_the_64_bit_libraries(gpulet, tmp_path):
    """A driver root with 32-bit copies (i386 folder listed first in
    ld.so.conf): nvidia-ctk mounts the folder of the 64-bit libcuda only."""
    root = tmp_path / "root"
    i386, x64 = root / "usr/lib/i386-linux-gnu", root / "usr/lib/x86_64-linux-gnu"
    for folder in (i386, x64, root / "etc"):
        folder.mkdir(parents=True)
    (tmp_path / "x.c").write_text("int x;\n")
    for folder, flags in ((i386, ["-m32", "-nostdlib"]), (x64, [])):
        for l in ("libcuda", "libnvidia-ml"):
            subprocess.run(["gcc", *flags, "-shared", "-fPIC", f"-Wl,-soname,{l}.so.1", "-o",
                            str(folder / f"{l}.so.{VERSION}"), str(tmp_path / "x.c")], check=True)
    (root / "etc/ld.so.conf").write_text("/usr/lib/i386-linux-gnu\n/usr/lib/x86_64-linux-gnu\n")
    subprocess.run([shutil.which("ldconfig") or "/sbin/ldconfig", "-r", str(root)], check=True)
    spec = yaml.safe_load(generate(gpulet, "dgx-a100", "--driver-root", root))
    paths = [m["containerPath"] for m in spec["containerEdits"]["mounts"]]
    assert f"/usr/lib/x86_64-linux-gnu/libnvidia-ml.so.{VERSION}" in paths
    assert "/usr/lib/x86_64-linux-gnu/libcuda.so.1" in paths
    assert not any("i386" in p for p in paths)
