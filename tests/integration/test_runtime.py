"""gpulet-runtime around a real runc, running busybox containers from a
bundle against the fake driver root of test_cdi (device nodes made with
mknod, real shared objects)."""
import hashlib
import json
import os
import re
import shutil
import stat
import subprocess

import pytest

from conftest import load_node
from test_cdi import driver_root, make_driver_root, mig_minor  # noqa: F401 (the fixture)

RUNC = shutil.which("runc") or "/usr/sbin/runc"
BUSYBOX = shutil.which("busybox") or "/bin/busybox"
pytestmark = pytest.mark.skipif(not os.path.exists(RUNC) or not os.path.exists(BUSYBOX),
                                reason="runc and busybox-static are needed")


@pytest.fixture
def cdi_dir(gpulet, build, driver_root, tmp_path):  # noqa: F811
    d = tmp_path / "cdi"
    d.mkdir()
    r = gpulet("--simulate", "dgx-a100", "cdi", "generate", "--driver-root", driver_root,
               "--output", d / "nvidia.yaml", "--hook-path", (build / "gpulet-hook").resolve())
    assert r.rc == 0, r.err
    return d


@pytest.fixture
def bundle(tmp_path):
    b = tmp_path / "bundle"
    rootfs = b / "rootfs" / "bin"
    rootfs.mkdir(parents=True)
    shutil.copy(BUSYBOX, rootfs / "busybox")
    for cmd in ("sh", "ls", "cat", "env", "grep"):
        os.symlink("busybox", rootfs / cmd)
    (b / "rootfs" / "etc").mkdir()
    subprocess.run([RUNC, "spec"], cwd=b, check=True)
    config = json.loads((b / "config.json").read_text())
    config["process"]["terminal"] = False
    config["process"]["args"] = ["sh", "-c", "ls /dev; ls /usr/lib/x86_64-linux-gnu 2>&1; env"]
    config["root"]["readonly"] = False
    (b / "config.json").write_text(json.dumps(config, indent=1))
    return b


def edit(bundle, change):
    config = json.loads((bundle / "config.json").read_text())
    change(config)
    (bundle / "config.json").write_text(json.dumps(config, indent=1))


def run(build, bundle, cdi_dir, tmp_path, name="c1", extra_env=None, globals_=()):
    # the node's /etc/gpulet/runtime.conf never reaches a test
    env = dict(os.environ, GPULET_CDI_SPEC_DIRS=str(cdi_dir), GPULET_RUNTIME=RUNC,
               GPULET_RUNTIME_CONFIG=str(tmp_path / "no-runtime.conf"))
    env.update(extra_env or {})
    return subprocess.run([str(build / "gpulet-runtime"), "--root", str(tmp_path / "state"),
                           *map(str, globals_), "run", "--bundle", str(bundle), name], env=env,
                          capture_output=True, text=True, timeout=60)


def devices(output):
    return sorted(w for w in output.split() if w.startswith("nvidia"))


def test_visible_devices_by_index(build, bundle, cdi_dir, tmp_path):
    edit(bundle, lambda c: c["process"]["env"].append("NVIDIA_VISIBLE_DEVICES=0"))
    r = run(build, bundle, cdi_dir, tmp_path)
    assert r.returncode == 0, r.stderr
    assert devices(r.stdout) == ["nvidia0", "nvidiactl"]
    assert "libcuda.so.1" in r.stdout and "libnvidia-ml.so.550.90.07" in r.stdout
    assert "libnvidia-cfg" not in r.stdout  # not of the driver's version
    words = r.stdout.split()  # nvidia-ctk's wider choice and its links
    assert {"libnvidia-rtcore.so.550.90.07", "libnvoptix.so.550.90.07", "libcuda.so",
            "libGLX_indirect.so.0", "gbm"} <= set(words)
    config = json.loads((bundle / "config.json").read_text())
    rules = config["linux"]["resources"]["devices"]
    assert {"allow": True, "type": "c", "major": 195, "minor": 0, "access": "rwm"} in rules
    assert config["ociVersion"]  # fields it does not know stay


def test_cdi_annotation_and_uuid(build, bundle, cdi_dir, tmp_path):
    uuid = load_node("dgx-a100")["gpus"][3]["uuid"]
    edit(bundle, lambda c: c.setdefault("annotations", {}).update(
        {"cdi.k8s.io/gpulet_gpu_1": f"nvidia.com/gpu={uuid},nvidia.com/gpu=1,vendor.com/x=y"}))
    r = run(build, bundle, cdi_dir, tmp_path)
    assert r.returncode == 0, r.stderr
    assert devices(r.stdout) == ["nvidia1", "nvidia3", "nvidiactl"]


def test_volume_mount_request(build, bundle, cdi_dir, tmp_path):
    uuid = load_node("dgx-a100")["gpus"][5]["uuid"]
    edit(bundle, lambda c: (c["mounts"].append({
        "destination": f"/var/run/nvidia-container-devices/{uuid}", "type": "bind",
        "source": "/dev/null", "options": ["rbind", "ro"]}),
        c["process"]["env"].append("NVIDIA_VISIBLE_DEVICES=all")))
    r = run(build, bundle, cdi_dir, tmp_path)
    assert r.returncode == 0, r.stderr
    # the mounts win over the variable: a pod cannot widen its own request
    assert devices(r.stdout) == ["nvidia5", "nvidiactl"]


def test_cdi_edits_replace_entries_at_the_same_path(build, bundle, cdi_dir, tmp_path):
    # an image or engine that already put something where CDI puts the
    # driver: CDI's entry replaces it, never stands beside it
    def prefill(c):
        c["process"]["env"].append("NVIDIA_VISIBLE_DEVICES=0")
        c["mounts"].append({"destination": "/usr/bin/nvidia-smi", "type": "bind",
                            "source": "/dev/null", "options": ["rbind", "ro"]})
        c["linux"].setdefault("devices", []).append(
            {"path": "/dev/nvidiactl", "type": "c", "major": 1, "minor": 3})
    edit(bundle, prefill)
    r = run(build, bundle, cdi_dir, tmp_path)
    assert r.returncode == 0, r.stderr
    config = json.loads((bundle / "config.json").read_text())
    smi = [m for m in config["mounts"] if m["destination"] == "/usr/bin/nvidia-smi"]
    assert len(smi) == 1 and smi[0]["source"] != "/dev/null"
    ctl = [d for d in config["linux"]["devices"] if d["path"] == "/dev/nvidiactl"]
    assert len(ctl) == 1 and ctl[0]["major"] == 195


def test_all(build, bundle, cdi_dir, tmp_path):
    edit(bundle, lambda c: c["process"]["env"].append("NVIDIA_VISIBLE_DEVICES=all"))
    r = run(build, bundle, cdi_dir, tmp_path)
    assert r.returncode == 0, r.stderr
    assert devices(r.stdout) == sorted([f"nvidia{i}" for i in range(8)] + ["nvidiactl"])


def test_all_on_a_mig_node_gives_every_mig_device(gpulet, build, bundle, tmp_path):
    """NVIDIA_VISIBLE_DEVICES=all on a100-mig: the container gets both GPUs
    and every MIG device's capability nodes (the spec's "all")."""
    root = make_driver_root(tmp_path / "root")
    (root / "dev/nvidia-caps").mkdir()
    want = set()
    for i, gpu in enumerate(load_node("a100-mig")["gpus"]):
        for m in gpu["mig_devices"]:
            for minor in (mig_minor(i, m["gpu_instance_id"]),
                          mig_minor(i, m["gpu_instance_id"], m["compute_instance_id"])):
                os.mknod(root / f"dev/nvidia-caps/nvidia-cap{minor}", 0o444 | stat.S_IFCHR,
                         os.makedev(240, minor))
                want.add(f"nvidia-cap{minor}")
    cdi = tmp_path / "cdi"
    cdi.mkdir()
    r = gpulet("--simulate", "a100-mig", "cdi", "generate", "--driver-root", root,
               "--output", cdi / "nvidia.yaml", "--no-hook")
    assert r.rc == 0, r.err
    edit(bundle, lambda c: (c["process"]["env"].append("NVIDIA_VISIBLE_DEVICES=all"),
                            c["process"].__setitem__("args", ["sh", "-c",
                                                              "ls /dev /dev/nvidia-caps"])))
    r = run(build, bundle, cdi, tmp_path)
    assert r.returncode == 0, r.stderr
    assert set(devices(r.stdout)) == {"nvidia-caps", "nvidia0", "nvidia1", "nvidiactl"} | want
    assert len(want) == 20


# ---- accept-envvar-unprivileged: any image can set NVIDIA_VISIBLE_DEVICES ----

def settings(tmp_path, text):
    conf = tmp_path / "runtime.conf"
    conf.write_text(text)
    return {"GPULET_RUNTIME_CONFIG": str(conf)}


REFUSE = "# the device plugin hands out GPUs\naccept-envvar-unprivileged = false  # not ENV\n"


def test_envvar_from_an_unprivileged_container_is_ignored_when_refused(build, bundle, cdi_dir,
                                                                        tmp_path):
    """An image with ENV NVIDIA_VISIBLE_DEVICES=all and no GPU from the
    device plugin got every GPU of the node."""
    edit(bundle, lambda c: c["process"]["env"].append("NVIDIA_VISIBLE_DEVICES=all"))
    before = hashlib.sha256((bundle / "config.json").read_bytes()).hexdigest()
    log = tmp_path / "log.json"
    r = run(build, bundle, cdi_dir, tmp_path, extra_env=settings(tmp_path, REFUSE),
            globals_=["--log", log, "--log-format", "json"])
    assert r.returncode == 0, r.stderr
    assert devices(r.stdout) == []  # it runs, without GPUs
    assert hashlib.sha256((bundle / "config.json").read_bytes()).hexdigest() == before
    warnings = [line for line in json_log_lines(log) if line["level"] == "warning"]
    assert len(warnings) == 1 and "NVIDIA_VISIBLE_DEVICES ignored" in warnings[0]["msg"]
    assert str(tmp_path / "runtime.conf") in warnings[0]["msg"]
    assert r.stderr.count("NVIDIA_VISIBLE_DEVICES ignored") == 1


def test_envvar_from_a_privileged_container_is_honoured_when_refused(build, bundle, cdi_dir,
                                                                      tmp_path):
    edit(bundle, lambda c: (c["process"]["env"].append("NVIDIA_VISIBLE_DEVICES=0"),
                            c["process"]["capabilities"]["bounding"].append("CAP_SYS_ADMIN")))
    r = run(build, bundle, cdi_dir, tmp_path, extra_env=settings(tmp_path, REFUSE))
    assert r.returncode == 0, r.stderr
    assert devices(r.stdout) == ["nvidia0", "nvidiactl"] and "ignored" not in r.stderr


def device_plugin_request(how, gpu):
    """A bundle edit asking for GPU gpu of the DGX A100 as the device
    plugin does: by its volume mounts or a CDI annotation (with what the
    volume-mounts strategy puts in the variable), or by the variable."""
    uuid = load_node("dgx-a100")["gpus"][gpu]["uuid"]

    def request(c):
        if how == "NVIDIA_VISIBLE_DEVICES":
            c["process"]["env"].append(f"NVIDIA_VISIBLE_DEVICES={gpu}")
            return
        c["process"]["env"].append("NVIDIA_VISIBLE_DEVICES=/var/run/nvidia-container-devices")
        if how == "volume mounts":
            c["mounts"].append({"destination": f"/var/run/nvidia-container-devices/{uuid}",
                                "type": "bind", "source": "/dev/null", "options": ["rbind", "ro"]})
        else:
            c.setdefault("annotations", {})["cdi.k8s.io/gpulet"] = f"nvidia.com/gpu={uuid}"
    return request


@pytest.mark.parametrize("how", ["volume mounts", "CDI annotation"])
def test_device_plugin_requests_work_when_envvar_is_refused(build, bundle, cdi_dir, tmp_path, how):
    edit(bundle, device_plugin_request(how, 5))
    r = run(build, bundle, cdi_dir, tmp_path, extra_env=settings(tmp_path, REFUSE))
    assert r.returncode == 0, r.stderr
    assert devices(r.stdout) == ["nvidia5", "nvidiactl"] and "ignored" not in r.stderr


@pytest.mark.parametrize("text", [None, "", "accept-envvar-unprivileged = true\n"])
def test_envvar_is_accepted_by_default(build, bundle, cdi_dir, tmp_path, text):
    edit(bundle, lambda c: c["process"]["env"].append("NVIDIA_VISIBLE_DEVICES=1"))
    env = None if text is None else settings(tmp_path, text)
    r = run(build, bundle, cdi_dir, tmp_path, extra_env=env)
    assert r.returncode == 0, r.stderr
    assert devices(r.stdout) == ["nvidia1", "nvidiactl"]


@pytest.mark.parametrize("text, message", [
    ("accept-envvar-unprivileged = no\n", "line 1: accept-envvar-unprivileged must be true or"),
    ("\naccept-envar-unprivileged = false\n", "line 2: unknown setting \"accept-envar-"),
    ("x" * 5000, "larger than"),
    ("accept-envvar-unprivileged = true\0\naccept-envvar-unprivileged = false\n", "NUL byte"),
])
def test_a_settings_file_it_cannot_read_fails_the_create(build, bundle, cdi_dir, tmp_path, text,
                                                         message):
    """A typo must not leave the GPUs open to every image: the create fails."""
    edit(bundle, lambda c: c["process"]["env"].append("NVIDIA_VISIBLE_DEVICES=all"))
    r = run(build, bundle, cdi_dir, tmp_path, extra_env=settings(tmp_path, text))
    assert r.returncode == 1 and message in r.stderr
    assert not (tmp_path / "state" / "c1").exists()  # runc never ran


@pytest.mark.parametrize("value", [None, "none", "void", ""])
@pytest.mark.parametrize("text", ["accept-envvar-unprivileged = maybe\n", "x" * 5000, None])
def test_a_container_asking_for_no_gpu_never_reads_the_settings(build, bundle, cdi_dir, tmp_path,
                                                                text, value):
    """Issue #23 item 12: with gpulet-runtime as the engine's default
    runtime, a typo in its settings failed every pod sandbox. A container
    that asks for no GPU passes through untouched, whatever that file says
    (None: a FIFO, which would block a reader)."""
    if value is not None:
        edit(bundle, lambda c: c["process"]["env"].append(f"NVIDIA_VISIBLE_DEVICES={value}"))
    before = hashlib.sha256((bundle / "config.json").read_bytes()).hexdigest()
    if text is None:
        os.mkfifo(tmp_path / "runtime.conf")
        env = {"GPULET_RUNTIME_CONFIG": str(tmp_path / "runtime.conf")}
    else:
        env = settings(tmp_path, text)
    log = tmp_path / "log.json"
    r = run(build, bundle, cdi_dir, tmp_path, extra_env=env,
            globals_=["--log", log, "--log-format", "json"])
    assert r.returncode == 0, r.stderr
    assert devices(r.stdout) == [] and "gpulet-runtime" not in r.stderr
    assert hashlib.sha256((bundle / "config.json").read_bytes()).hexdigest() == before
    assert not log.exists() or not any("gpulet-runtime" in line["msg"]
                                       for line in json_log_lines(log))  # runc may write its own


@pytest.mark.parametrize("how", ["NVIDIA_VISIBLE_DEVICES", "volume mounts", "CDI annotation"])
def test_a_gpu_container_gets_the_settings_error(build, bundle, cdi_dir, tmp_path, how):
    edit(bundle, device_plugin_request(how, 2))
    before = (bundle / "config.json").read_bytes()
    log = tmp_path / "log.json"
    r = run(build, bundle, cdi_dir, tmp_path,
            extra_env=settings(tmp_path, "accept-envvar-unprivileged = maybe\n"),
            globals_=["--log", log, "--log-format", "json"])
    assert r.returncode == 1
    want = f"{tmp_path / 'runtime.conf'} line 1: accept-envvar-unprivileged must be true or false"
    assert want in r.stderr
    errors = [line for line in json_log_lines(log) if line["level"] == "error"]
    assert len(errors) == 1 and want in errors[0]["msg"]
    assert (bundle / "config.json").read_bytes() == before
    assert not (tmp_path / "state" / "c1").exists()  # runc never ran


def test_settings_file_that_is_no_regular_file_is_refused_without_blocking(build, bundle,
                                                                           cdi_dir, tmp_path):
    edit(bundle, lambda c: c["process"]["env"].append("NVIDIA_VISIBLE_DEVICES=0"))
    fifo = tmp_path / "runtime.conf"
    os.mkfifo(fifo)
    r = run(build, bundle, cdi_dir, tmp_path, extra_env={"GPULET_RUNTIME_CONFIG": str(fifo)})
    assert r.returncode == 1 and str(fifo) in r.stderr


@pytest.mark.parametrize("value", [None, "none", "void", ""])
def test_nothing_asked_leaves_the_bundle_untouched(build, bundle, cdi_dir, tmp_path, value):
    if value is not None:
        edit(bundle, lambda c: c["process"]["env"].append(f"NVIDIA_VISIBLE_DEVICES={value}"))
    before = hashlib.sha256((bundle / "config.json").read_bytes()).hexdigest()
    r = run(build, bundle, cdi_dir, tmp_path)
    assert r.returncode == 0, r.stderr
    assert devices(r.stdout) == []
    assert hashlib.sha256((bundle / "config.json").read_bytes()).hexdigest() == before


def test_unknown_gpu_fails_the_create(build, bundle, cdi_dir, tmp_path):
    edit(bundle, lambda c: c["process"]["env"].append("NVIDIA_VISIBLE_DEVICES=GPU-not-here"))
    before = (bundle / "config.json").read_bytes()
    r = run(build, bundle, cdi_dir, tmp_path)
    assert r.returncode == 1
    assert 'asks (through NVIDIA_VISIBLE_DEVICES) for GPU "GPU-not-here"' in r.stderr
    assert (bundle / "config.json").read_bytes() == before
    assert not (tmp_path / "state" / "c1").exists()  # runc never ran


def json_log_lines(path):
    return [json.loads(line) for line in path.read_text().splitlines()]


def test_refusals_reach_the_engines_log_file(build, bundle, cdi_dir, tmp_path):
    """containerd shows a failed create's reason from runc's --log file
    (JSON lines), not from stderr: gpulet's refusal must be there."""
    edit(bundle, lambda c: c["process"]["env"].append("NVIDIA_VISIBLE_DEVICES=GPU-not-here"))
    log = tmp_path / "log.json"
    log.write_text('{"level":"info","msg":"earlier","time":"2024-01-01T00:00:00Z"}\n')
    r = run(build, bundle, cdi_dir, tmp_path, globals_=["--log", log, "--log-format", "json"])
    assert r.returncode == 1
    lines = json_log_lines(log)
    assert lines[0]["msg"] == "earlier"  # appended, not truncated
    assert len(lines) == 2 and lines[1]["level"] == "error"
    assert lines[1]["msg"].startswith("gpulet-runtime: ")
    assert 'for GPU "GPU-not-here"' in lines[1]["msg"] and lines[1]["msg"][16:] in r.stderr
    # RFC 3339 in UTC, as Go's time.Time reads it
    assert re.fullmatch(r"\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d\.\d{9}Z", lines[1]["time"])
    assert not (tmp_path / "state" / "c1").exists()  # runc never ran

    text = tmp_path / "log.txt"  # runc's default format, the = forms
    r = run(build, bundle, cdi_dir, tmp_path, globals_=[f"--log={text}", "--log-format=text"])
    assert r.returncode == 1
    assert re.fullmatch(r'time="[0-9T:.Z-]+" level=error msg="gpulet-runtime: .*'
                        r'for GPU \\"GPU-not-here\\".*"\n', text.read_text())


def test_the_log_file_is_opened_safely(build, bundle, cdi_dir, tmp_path):
    edit(bundle, lambda c: c["process"]["env"].append("NVIDIA_VISIBLE_DEVICES=GPU-" + "x" * 100))
    target = tmp_path / "elsewhere"
    target.write_text("keep\n")
    link = tmp_path / "log.json"
    os.symlink(target, link)
    r = run(build, bundle, cdi_dir, tmp_path, globals_=["--log", link, "--log-format", "json"])
    assert r.returncode == 1 and "cannot write the error to the log" in r.stderr
    assert target.read_text() == "keep\n" and "GPU-xxx" in r.stderr  # still said on stderr
    fifo = tmp_path / "fifo"
    os.mkfifo(fifo)  # no reader: must neither block nor write
    r = run(build, bundle, cdi_dir, tmp_path, globals_=["--log", fifo, "--log-format", "json"])
    assert r.returncode == 1 and "cannot write the error to the log" in r.stderr
    deep = tmp_path / "/".join(["d" * 200] * 18)  # a 3.6 kB bundle path, no config.json
    deep.mkdir(parents=True)
    log = tmp_path / "real.json"
    r = subprocess.run([str(build / "gpulet-runtime"), "--log", str(log), "--log-format", "json",
                        "create", "--bundle", str(deep), "c1"], capture_output=True, text=True,
                       env=dict(os.environ, GPULET_RUNTIME=RUNC), timeout=60)
    assert r.returncode == 1
    (line,) = json_log_lines(log)
    assert "dddd" in line["msg"] and len(line["msg"]) <= 4096  # a bounded message


def test_hostile_bundles_fail_safely(build, bundle, cdi_dir, tmp_path):
    outside = tmp_path / "outside.json"
    outside.write_text((bundle / "config.json").read_text())
    (bundle / "config.json").unlink()
    os.symlink(outside, bundle / "config.json")
    before = outside.read_bytes()
    log = tmp_path / "log.json"
    r = run(build, bundle, cdi_dir, tmp_path, globals_=["--log", log, "--log-format", "json"])
    assert r.returncode == 1 and "is a symbolic link; refusing to read it" in r.stderr
    assert "is a symbolic link; refusing to read it" in json_log_lines(log)[0]["msg"]
    assert outside.read_bytes() == before
    (bundle / "config.json").unlink()
    (bundle / "config.json").write_text('{"ociVersion": "1.0.2", "process": {"env": [')
    r = run(build, bundle, cdi_dir, tmp_path)
    assert r.returncode == 1 and "cannot parse" in r.stderr and "config.json line 1" in r.stderr
    (bundle / "config.json").write_text('{"process": {"env": ["NVIDIA_VISIBLE_DEVICES=0",'
                                        ' "LD_PRELOAD=/evil.so", "X=' + "a" * 100000 + '"]}}')
    r = run(build, bundle, cdi_dir, tmp_path)
    # edits applied, then runc refuses the incomplete spec: never our crash
    assert "gpulet-runtime:" not in r.stderr
    assert sorted(p.name for p in bundle.iterdir()) == ["config.json", "rootfs"]


def test_other_commands_pass_straight_through(build):
    r = subprocess.run([str(build / "gpulet-runtime"), "--version"], capture_output=True,
                       text=True, env=dict(os.environ, GPULET_RUNTIME=RUNC))
    assert r.returncode == 0 and r.stdout.startswith("runc version")


def test_crun(build, bundle, cdi_dir, tmp_path):
    crun = shutil.which("crun")
    if crun is None:
        pytest.skip("crun is not installed (crun 1.8 also refuses hybrid cgroup v1+v2 "
                    "hosts: 'cgroups in hybrid mode not supported')")
    edit(bundle, lambda c: c["process"]["env"].append("NVIDIA_VISIBLE_DEVICES=0"))
    r = run(build, bundle, cdi_dir, tmp_path, extra_env={"GPULET_RUNTIME": crun})
    if "cgroups in hybrid mode not supported" in r.stderr:
        pytest.skip("crun refuses hybrid cgroups on this machine")
    assert r.returncode == 0, r.stderr
    assert devices(r.stdout) == ["nvidia0", "nvidiactl"]


def test_a_gpu_named_once_per_replica(build, bundle, cdi_dir, tmp_path):
    """The device plugin names a time-sliced GPU once per replica, as
    NVIDIA's does: the container gets it once."""
    uuid = load_node("dgx-a100")["gpus"][1]["uuid"]
    edit(bundle, lambda c: c["process"]["env"].append(f"NVIDIA_VISIBLE_DEVICES={uuid},{uuid}"))
    r = run(build, bundle, cdi_dir, tmp_path)
    assert r.returncode == 0, r.stderr
    assert devices(r.stdout) == ["nvidia1", "nvidiactl"]
    config = json.loads((bundle / "config.json").read_text())
    assert [d["path"] for d in config["linux"]["devices"]].count("/dev/nvidia1") == 1


def test_spaces_in_the_list(build, bundle, cdi_dir, tmp_path):
    """Found by the fuzzer: a trailing space made the request parser loop."""
    edit(bundle, lambda c: c["process"]["env"].append("NVIDIA_VISIBLE_DEVICES= 2 , 0 "))
    r = run(build, bundle, cdi_dir, tmp_path)
    assert r.returncode == 0, r.stderr
    assert devices(r.stdout) == ["nvidia0", "nvidia2", "nvidiactl"]


def test_the_hook_fills_the_containers_ld_cache(build, bundle, cdi_dir, tmp_path):
    edit(bundle, lambda c: (c["process"]["env"].append("NVIDIA_VISIBLE_DEVICES=0"),
                            c["process"].__setitem__("args", ["sh", "-c",
                                                              "grep -c libcuda.so.1 /etc/ld.so.cache"])))
    r = run(build, bundle, cdi_dir, tmp_path)
    assert r.returncode == 0, r.stderr
    assert int(r.stdout.strip()) >= 1
    hooks = json.loads((bundle / "config.json").read_text())["hooks"]["createContainer"]
    assert hooks[0]["path"] == str((build / "gpulet-hook").resolve())
    assert hooks[0]["args"][:6] == ["gpulet-hook", "update-ldcache", "--host-driver-version",
                                    "550.90.07", "--folder", "/usr/lib/x86_64-linux-gnu"]


def cached_libcuda(hook, tmp_path, compat_version, host_version="550.90.07", image_cache=True):
    """Runs the hook on an image with CUDA forward-compatibility libraries;
    returns where the container's ld cache finds libcuda.so.1, in order."""
    root = tmp_path / "bundle" / "rootfs"
    lib, compat = root / "usr/lib/x86_64-linux-gnu", root / "usr/local/cuda-12.8/compat"
    for folder in (lib, compat, root / "etc"):
        if not folder.is_symlink():
            folder.mkdir(parents=True, exist_ok=True)
    os.symlink("cuda-12.8", root / "usr/local/cuda")
    (tmp_path / "x.c").write_text("int x;\n")
    for folder, version in ((lib, host_version), (compat, compat_version)):
        subprocess.run(["gcc", "-shared", "-fPIC", "-Wl,-soname,libcuda.so.1", "-o",
                        str(folder / f"libcuda.so.{version}"), str(tmp_path / "x.c")], check=True)
    if image_cache:
        (root / "etc/ld.so.cache").write_bytes(b"")
    (tmp_path / "bundle" / "config.json").write_text('{"root": {"path": "rootfs"}}')
    r = subprocess.run([hook, "update-ldcache", "--host-driver-version", host_version,
                        "--folder", "/usr/lib/x86_64-linux-gnu"],
                       input=json.dumps({"bundle": str(tmp_path / "bundle")}),
                       capture_output=True, text=True)
    assert r.returncode == 0, r.stderr
    listing = subprocess.run(["/sbin/ldconfig", "-p", "-C", str(root / "etc/ld.so.cache")],
                             capture_output=True, text=True, check=True).stdout
    return [line.split(" => ")[1] for line in listing.splitlines() if "libcuda.so.1 " in line]


def test_the_hook_never_takes_compat_libraries_from_outside_the_image(build, tmp_path):
    """An image whose compat folder is a link to a host path, or that has
    two compat libcudas (NVIDIA's hook wants exactly one): the driver's
    libcuda only, and nothing read from the host's folder."""
    host = tmp_path / "host-compat"
    host.mkdir()
    (tmp_path / "y.c").write_text("int y;\n")
    subprocess.run(["gcc", "-shared", "-fPIC", "-Wl,-soname,libcuda.so.1", "-o",
                    str(host / "libcuda.so.570.86.10"), str(tmp_path / "y.c")], check=True)
    hook = str(build / "gpulet-hook")
    linked = tmp_path / "linked"
    linked.mkdir()
    root = linked / "bundle" / "rootfs"
    (root / "usr/local/cuda-12.8").mkdir(parents=True)
    os.symlink(str(host), root / "usr/local/cuda-12.8/compat")
    found = cached_libcuda(hook, linked, "570.86.10")
    assert found == ["/usr/lib/x86_64-linux-gnu/libcuda.so.1"]
    assert sorted(os.listdir(host)) == ["libcuda.so.570.86.10"]  # no link made there
    two = tmp_path / "two"
    two.mkdir()
    compat = two / "bundle/rootfs/usr/local/cuda-12.8/compat"
    compat.mkdir(parents=True)
    shutil.copy(host / "libcuda.so.570.86.10", compat / "libcuda.so.575.51.03")
    assert cached_libcuda(hook, two, "570.86.10") == ["/usr/lib/x86_64-linux-gnu/libcuda.so.1"]


def test_the_hook_puts_newer_cuda_compat_libraries_first(build, tmp_path):
    """NVIDIA's enable-cuda-compat: an image's compat libcuda of a higher
    major version than the host driver is what the loader finds first."""
    found = cached_libcuda(str(build / "gpulet-hook"), tmp_path, "570.86.10")
    assert found == ["/usr/local/cuda/compat/libcuda.so.1", "/usr/lib/x86_64-linux-gnu/libcuda.so.1"]


@pytest.mark.parametrize("compat, image_cache", [("550.54.15", True), ("530.30.02", True),
                                                 ("570.86.10", False)])
def test_the_hook_leaves_compat_libraries_alone(build, tmp_path, compat, image_cache):
    """Not newer in its major version than the driver (NVIDIA compares only
    that), or an image without an ld cache: the driver's libcuda only."""
    found = cached_libcuda(str(build / "gpulet-hook"), tmp_path, compat, image_cache=image_cache)
    assert found == ["/usr/lib/x86_64-linux-gnu/libcuda.so.1"]


def test_the_hook_refuses_bad_input(build, tmp_path):
    hook = str(build / "gpulet-hook")
    r = subprocess.run([hook, "update-ldcache", "--folder", "relative"], input="{}",
                       capture_output=True, text=True)
    assert r.returncode == 1 and "expected --folder /absolute/path" in r.stderr
    for version in ("", "x.1", "-1"):
        r = subprocess.run([hook, "update-ldcache", "--host-driver-version", version], input="{}",
                           capture_output=True, text=True)
        assert r.returncode == 1 and "--host-driver-version VERSION" in r.stderr
    r = subprocess.run([hook, "update-ldcache", "--folder", "/usr/lib"], input="not json",
                       capture_output=True, text=True)
    assert r.returncode == 1 and "no absolute bundle path" in r.stderr
    # a folder that escapes through a symlink is looked up inside the root
    root = tmp_path / "bundle" / "rootfs"
    (root / "etc").mkdir(parents=True)
    os.symlink("/etc", root / "escape")
    (tmp_path / "bundle" / "config.json").write_text('{"root": {"path": "rootfs"}}')
    host_cache = open("/etc/ld.so.cache", "rb").read()
    r = subprocess.run([hook, "update-ldcache", "--folder", "/escape"],
                       input=json.dumps({"bundle": str(tmp_path / "bundle")}),
                       capture_output=True, text=True, env={"LD_PRELOAD": "/nonexistent.so"})
    assert r.returncode == 0, r.stderr
    assert open("/etc/ld.so.cache", "rb").read() == host_cache  # the host's is untouched
    assert (root / "etc" / "ld.so.cache").exists()


def test_edits_computed_from_the_driver_when_no_spec_is_on_disk(build, bundle, driver_root,  # noqa: F811
                                                                tmp_path):
    from conftest import NODES
    edit(bundle, lambda c: c["process"]["env"].append("NVIDIA_VISIBLE_DEVICES=1"))
    asked = (bundle / "config.json").read_bytes()
    r = run(build, bundle, tmp_path / "no-specs-here", tmp_path, extra_env={
        "GPULET_NVML_LIB": str(build / "sim" / "current" / "libnvidia-ml.so.1"),
        "GPULET_SIM_NODE": str(NODES / "dgx-a100.yaml"),
        "NVIDIA_DRIVER_ROOT": str(driver_root)})
    assert r.returncode == 0, r.stderr
    assert devices(r.stdout) == ["nvidia1", "nvidiactl"]
    assert "libcuda.so.1" in r.stdout
    # and without a driver it says why, before runc runs
    (bundle / "config.json").write_bytes(asked)
    r = run(build, bundle, tmp_path / "no-specs-here", tmp_path, name="c2", extra_env={
        "GPULET_NVML_LIB": str(tmp_path / "absent.so")})
    assert r.returncode == 1 and "cannot load the NVML library" in r.stderr


def test_runtime_option_names_the_real_runtime(build, tmp_path):
    fake = tmp_path / "fake-runc"
    fake.write_text("#!/bin/sh\necho fake-runc \"$@\"\n")
    fake.chmod(0o755)
    r = subprocess.run([str(build / "gpulet-runtime"), "--runtime", str(fake), "--root", "/x",
                        "state", "c1"], capture_output=True, text=True,
                       env={"PATH": "/usr/bin:/bin"})
    assert r.returncode == 0, r.stderr
    assert r.stdout.strip() == "fake-runc --root /x state c1"
