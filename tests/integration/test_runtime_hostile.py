"""Hostile bundles and specs against gpulet-runtime, gpulet-hook and a real
runc (and podman, which applies the CDI spec itself): the container's
environment must never reach a hook (LD_PRELOAD of a library in the image,
the CVE-2025-23266 class), wrongly typed config.json fields fail with an
error naming the field, and a FIFO where a file should be never blocks."""
import json
import os
import shutil
import subprocess
import tempfile

import pytest
import yaml

from test_cdi import driver_root  # noqa: F401 (the fixture)
from test_runtime import RUNC, bundle, cdi_dir, edit, run  # noqa: F401 (fixtures)

HOOK_ENV = ["PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin"]
PODMAN = shutil.which("podman")
BUSYBOX = shutil.which("busybox") or "/bin/busybox"

EVIL_C = r"""
#include <fcntl.h>
#include <unistd.h>
__attribute__((constructor)) static void escape(void)
{
    int fd = open(MARKER, O_WRONLY | O_CREAT | O_APPEND, 0644);
    if (fd >= 0) {
        char exe[256];
        ssize_t n = readlink("/proc/self/exe", exe, sizeof exe - 1);
        if (n > 0) {
            exe[n] = '\n';
            write(fd, exe, (size_t)n + 1);
        }
        close(fd);
    }
}
"""

# What an image sets: its own library, by a path that needs no knowledge of
# the host. ASAN_OPTIONS lets the library load into a sanitizer build too,
# so the attack is as strong against the test build as against a release.
ATTACK_ENV = ["LD_PRELOAD=/proc/self/cwd/evil.so", "ASAN_OPTIONS=verify_asan_link_order=0"]


def evil_library(rootfs, marker):
    """A library in the image's root that writes the host path marker
    (with the program it loaded into) when it is loaded."""
    src = rootfs.parent / "evil.c"
    src.write_text(EVIL_C)
    subprocess.run(["gcc", "-shared", "-fPIC", f'-DMARKER="{marker}"', "-o",
                    str(rootfs / "evil.so"), str(src)], check=True)


def without_hook_env(spec_text):
    """The spec as one without env on its hook would be, with /bin/true
    (a dynamically linked program) as the hook."""
    spec = yaml.safe_load(spec_text)
    for hook in spec["containerEdits"]["hooks"]:
        del hook["env"]
        hook["path"] = "/bin/true"
    return yaml.safe_dump(spec)


def plain_runc(bundle, tmp_path, name):  # noqa: F811
    return subprocess.run([RUNC, "--root", str(tmp_path / "state"), "run", "--bundle",
                           str(bundle), name], capture_output=True, text=True, timeout=60)


def test_the_attack_works_on_a_hook_without_env(bundle, tmp_path):  # noqa: F811
    """The control: runc runs a createContainer hook that has no env with
    the container's environment, and the image's library loads into it as
    root on the host. (/bin/true stands for any dynamically linked hook.)"""
    marker = tmp_path / "marker"
    evil_library(bundle / "rootfs", marker)
    edit(bundle, lambda c: (c["process"]["env"].extend(ATTACK_ENV),
                            c.setdefault("hooks", {}).setdefault("createContainer", []).append(
                                {"path": "/bin/true"})))
    r = plain_runc(bundle, tmp_path, "control")
    assert r.returncode == 0, r.stderr
    assert marker.exists() and "/bin/true" in marker.read_text()


def test_wrapper_hooks_never_see_the_containers_environment(build, bundle, cdi_dir,  # noqa: F811
                                                            tmp_path):
    marker = tmp_path / "marker"
    evil_library(bundle / "rootfs", marker)
    edit(bundle, lambda c: (c["process"]["env"].extend(ATTACK_ENV + ["NVIDIA_VISIBLE_DEVICES=0"]),
                            c["process"].__setitem__("args", ["sh", "-c", "echo ran"])))
    r = run(build, bundle, cdi_dir, tmp_path)
    assert r.returncode == 0, r.stderr
    assert r.stdout.strip() == "ran"
    assert not marker.exists(), marker.read_text()
    hooks = json.loads((bundle / "config.json").read_text())["hooks"]["createContainer"]
    assert [h["env"] for h in hooks] == [HOOK_ENV]


def test_a_spec_hook_without_env_gets_the_minimal_one(build, bundle, cdi_dir,  # noqa: F811
                                                      tmp_path):
    """A spec written before hooks carried env (or by hand): the wrapper
    gives the hook gpulet's environment, never the container's."""
    marker = tmp_path / "marker"
    evil_library(bundle / "rootfs", marker)
    spec = cdi_dir / "nvidia.yaml"
    # written by gpulet: the hook entry in the spec carries env itself
    assert yaml.safe_load(spec.read_text())["containerEdits"]["hooks"][0]["env"] == HOOK_ENV
    spec.write_text(without_hook_env(spec.read_text()))
    edit(bundle, lambda c: c["process"]["env"].extend(ATTACK_ENV + ["NVIDIA_VISIBLE_DEVICES=0"]))
    r = run(build, bundle, cdi_dir, tmp_path)
    assert r.returncode == 0, r.stderr
    assert not marker.exists(), marker.read_text()
    hooks = json.loads((bundle / "config.json").read_text())["hooks"]["createContainer"]
    assert hooks == [{"path": "/bin/true", "env": HOOK_ENV,
                      "args": hooks[0]["args"]}]


@pytest.fixture
def podman_image(tmp_path):
    """podman (vfs storage, cgroupfs, runc, bounded rlimits) with a busybox
    image whose root holds evil.so and whose environment preloads it."""
    if PODMAN is None:
        pytest.skip("podman is not installed")
    short = tempfile.mkdtemp(prefix="gpulet-podman-")
    base = [PODMAN, "--root", f"{short}/storage", "--runroot", f"{short}/run",
            "--storage-driver", "vfs", "--cgroup-manager", "cgroupfs"]
    try:
        rootfs = tmp_path / "image" / "rootfs"
        (rootfs / "bin").mkdir(parents=True)
        (rootfs / "etc").mkdir()
        shutil.copy(BUSYBOX, rootfs / "bin" / "busybox")
        os.symlink("busybox", rootfs / "bin" / "sh")
        marker = tmp_path / "marker"
        evil_library(rootfs, marker)
        tar = subprocess.Popen(["tar", "-C", str(rootfs), "-c", "."], stdout=subprocess.PIPE)
        imported = subprocess.run([*base, "import", "--change", f"ENV {ATTACK_ENV[0]}", "--change",
                                   f"ENV {ATTACK_ENV[1]}", "-", "localhost/gpulet-evil"],
                                  stdin=tar.stdout, capture_output=True, text=True, timeout=120)
        # tar gets SIGPIPE, not a pipe no one reads, where podman stopped early
        tar.stdout.close()
        tar.wait(timeout=60)
        assert imported.returncode == 0, imported.stderr
        yield base, marker
        subprocess.run([*base, "rmi", "-a", "-f"], capture_output=True, timeout=120)
    finally:
        shutil.rmtree(short, ignore_errors=True)


def podman_run(base, spec_text):
    # podman 4.3 reads specs from /etc/cdi and /var/run/cdi only; a kind of
    # our own keeps this spec apart from any other test's.
    os.makedirs("/var/run/cdi", exist_ok=True)
    spec = f"/var/run/cdi/gpulet-hostile-{os.getpid()}.yaml"
    with open(spec, "w") as f:
        f.write(spec_text.replace("kind: nvidia.com/gpu", f"kind: gpulet-test.io/g{os.getpid()}"))
    try:
        return subprocess.run([*base, "run", "--rm", "--runtime", "runc",
                               "--ulimit", "nofile=1024:1024", "--ulimit", "nproc=1024:1024",
                               "--device", f"gpulet-test.io/g{os.getpid()}=0",
                               "localhost/gpulet-evil", "sh", "-c", "echo ran"],
                              capture_output=True, text=True, timeout=120)
    finally:
        os.unlink(spec)


def test_podman_applies_the_hooks_env_from_our_spec(gpulet, build, driver_root,  # noqa: F811
                                                     podman_image, tmp_path):
    base, marker = podman_image
    out = tmp_path / "spec.yaml"
    r = gpulet("--simulate", "dgx-a100", "cdi", "generate", "--driver-root", driver_root,
               "--hook-path", (build / "gpulet-hook").resolve(), "--output", out)
    assert r.rc == 0, r.err
    text = out.read_text()
    # the control: the same spec with its hook's env removed and a
    # dynamically linked program as the hook lets the image in
    r = podman_run(base, without_hook_env(text))
    assert r.returncode == 0, r.stderr
    assert marker.exists() and "/bin/true" in marker.read_text()
    marker.unlink()
    # gpulet's spec: podman passes the hook its env, the library never loads
    r = podman_run(base, text)
    assert r.returncode == 0, r.stderr
    assert r.stdout.strip() == "ran"
    assert not marker.exists(), marker.read_text()


# ---- wrongly typed config.json fields ----

TYPED_WRONG = [
    ({"process": "x"}, "process must be an object, not a string"),
    ({"process": {"env": {}}}, "process.env must be an array, not an object"),
    ({"process": {"env": ["NVIDIA_VISIBLE_DEVICES=0", 1]}}, "process.env[1] must be a string"),
    ({"linux": "x"}, "linux must be an object, not a string"),
    ({"linux": {"devices": {}}}, "linux.devices must be an array, not an object"),
    ({"linux": {"devices": [1]}}, "linux.devices[0] must be an object, not a number"),
    ({"linux": {"resources": []}}, "linux.resources must be an object, not an array"),
    ({"linux": {"resources": {"devices": "x"}}},
     "linux.resources.devices must be an array, not a string"),
    ({"hooks": [1]}, "hooks must be an object, not an array"),
    ({"hooks": {"createContainer": {}}}, "hooks.createContainer must be an array, not an object"),
    ({"hooks": {"createContainer": [1]}}, "hooks.createContainer[0] must be an object"),
    ({"mounts": "x"}, "mounts must be an array, not a string"),
    ({"mounts": [[]]}, "mounts[0] must be an object, not an array"),
    ({"annotations": []}, "annotations must be an object, not an array"),
    ({"annotations": {"cdi.k8s.io/x": 1}}, 'annotations["cdi.k8s.io/x"] must be a string'),
]


@pytest.mark.parametrize("change,message", TYPED_WRONG,
                         ids=[m.split(" must")[0] for _, m in TYPED_WRONG])
def test_wrongly_typed_fields_are_refused_by_name(build, bundle, cdi_dir, tmp_path,  # noqa: F811
                                                  change, message):
    def apply(c):
        c["process"]["env"].append("NVIDIA_VISIBLE_DEVICES=0")
        for key, value in change.items():
            if key == "process" and isinstance(value, dict):
                c["process"].update(value)
            else:
                c[key] = value
    edit(bundle, apply)
    before = (bundle / "config.json").read_bytes()
    r = run(build, bundle, cdi_dir, tmp_path)
    assert r.returncode == 1
    assert f"gpulet-runtime: config.json: {message}" in r.stderr, r.stderr
    assert (bundle / "config.json").read_bytes() == before
    assert not (tmp_path / "state" / "c1").exists()  # runc never ran


def test_null_fields_count_as_absent(build, bundle, cdi_dir, tmp_path):  # noqa: F811
    edit(bundle, lambda c: (c["process"]["env"].append("NVIDIA_VISIBLE_DEVICES=0"),
                            c.update({"hooks": None, "annotations": None}),
                            c["linux"].update({"devices": None})))
    r = run(build, bundle, cdi_dir, tmp_path)
    assert r.returncode == 0, r.stderr


# ---- FIFOs where files should be ----

def test_a_fifo_config_json_fails_at_once(build, bundle, cdi_dir, tmp_path):  # noqa: F811
    (bundle / "config.json").unlink()
    os.mkfifo(bundle / "config.json")
    r = run(build, bundle, cdi_dir, tmp_path)  # a 60 s timeout: a block would fail it
    assert r.returncode == 1
    assert "config.json is not a regular file" in r.stderr
    hook = subprocess.run([str(build / "gpulet-hook"), "update-ldcache", "--folder", "/usr/lib"],
                          input=json.dumps({"bundle": str(bundle)}), capture_output=True,
                          text=True, timeout=30)
    assert hook.returncode == 1 and "cannot read root.path" in hook.stderr


def test_a_fifo_cdi_spec_fails_at_once(build, bundle, cdi_dir, tmp_path):  # noqa: F811
    (cdi_dir / "nvidia.yaml").unlink()
    os.mkfifo(cdi_dir / "nvidia.yaml")
    edit(bundle, lambda c: c["process"]["env"].append("NVIDIA_VISIBLE_DEVICES=0"))
    r = run(build, bundle, cdi_dir, tmp_path)
    assert r.returncode == 1
    assert "nvidia.yaml: not a regular file" in r.stderr


def test_an_alias_bomb_spec_is_refused(build, bundle, cdi_dir, tmp_path):  # noqa: F811
    lol = '["lol","lol","lol","lol","lol","lol","lol","lol","lol"]'
    lines = ["kind: nvidia.com/gpu", f"a: &a {lol}"]
    for prev, cur in zip("abcdefgh", "bcdefghi"):
        lines.append(f"{cur}: &{cur} [" + ",".join([f"*{prev}"] * 9) + "]")
    (cdi_dir / "nvidia.yaml").write_text("\n".join(lines) + "\n")
    edit(bundle, lambda c: c["process"]["env"].append("NVIDIA_VISIBLE_DEVICES=0"))
    r = run(build, bundle, cdi_dir, tmp_path)
    assert r.returncode == 1
    assert "nvidia.yaml line 3: YAML aliases (*a) are not accepted" in r.stderr


@pytest.mark.parametrize("where,value,message", [
    ("mounts", "ro", "mount options must be a list of strings"),
    ("hooks", {"PATH": "/bin"}, "hook env must be a list of strings"),
    ("hooks", [{"x": "y"}], "hook args must be a list of strings"),  # YAML scalars are strings
])
def test_wrongly_typed_spec_edits_are_refused(build, bundle, cdi_dir, tmp_path,  # noqa: F811
                                              where, value, message):
    spec_path = cdi_dir / "nvidia.yaml"
    spec = yaml.safe_load(spec_path.read_text())
    entry = spec["containerEdits"][where][0]
    entry[{"mounts": "options", "hooks": "env" if isinstance(value, dict) else "args"}[where]] = value
    spec_path.write_text(yaml.safe_dump(spec))
    edit(bundle, lambda c: c["process"]["env"].append("NVIDIA_VISIBLE_DEVICES=0"))
    before = (bundle / "config.json").read_bytes()
    r = run(build, bundle, cdi_dir, tmp_path)
    assert r.returncode == 1
    assert f"gpulet-runtime: {spec_path}: {message}" in r.stderr, r.stderr
    assert (bundle / "config.json").read_bytes() == before


# ---- the container's proc, reachable from ldconfig's chroot ----

SONAME_C = "int gpulet_probe(void) { return 1; }\n"


def host_library_folder(tmp_path):
    """A host folder holding libprobe.so.1.0 (soname libprobe.so.1): an
    ldconfig that scans it creates the link libprobe.so.1 there."""
    folder = tmp_path / "host-libs"
    folder.mkdir()
    src = tmp_path / "probe.c"
    src.write_text(SONAME_C)
    subprocess.run(["gcc", "-shared", "-fPIC", "-Wl,-soname,libprobe.so.1", "-o",
                    str(folder / "libprobe.so.1.0"), str(src)], check=True)
    return folder


@pytest.mark.parametrize("how", ["etc-symlink", "ld.so.conf"])
def test_ldconfig_never_reaches_the_host_through_the_containers_proc(build, bundle, cdi_dir,  # noqa: F811
                                                                     tmp_path, how):
    """runc mounts the container's proc before createContainer hooks run,
    and /proc/1/root there is runc's root: the host's. An image whose /etc
    links through it made the host-root ldconfig write ld.so.cache into any
    host folder; one whose ld.so.conf names a folder through it made
    ldconfig create links there."""
    host = host_library_folder(tmp_path)
    etc = bundle / "rootfs" / "etc"
    if how == "etc-symlink":
        etc.rmdir()
        os.symlink(f"/proc/1/root{host}", etc)
    else:
        (etc / "ld.so.conf").write_text(f"/proc/1/root{host}\n")
    edit(bundle, lambda c: (c["process"]["env"].append("NVIDIA_VISIBLE_DEVICES=0"),
                            c["process"].__setitem__("args", ["sh", "-c", "echo ran"])))
    r = run(build, bundle, cdi_dir, tmp_path)
    assert sorted(os.listdir(host)) == ["libprobe.so.1.0"], r.stderr
    if how == "ld.so.conf":  # the container still starts, with its cache
        assert r.returncode == 0, r.stderr
        assert r.stdout.strip() == "ran"
        assert (etc / "ld.so.cache").exists()


def test_a_pods_own_volume_at_the_device_folder_asks_for_nothing(build, bundle, cdi_dir,  # noqa: F811
                                                                 tmp_path):
    """A pod may mount an emptyDir at /var/run/nvidia-container-devices/all
    itself: only the device plugin's mounts (of /dev/null) are requests.
    Such a container used to get every GPU of the node without any
    allocation."""
    empty = tmp_path / "emptydir"
    empty.mkdir()
    edit(bundle, lambda c: (c["mounts"].append({
        "destination": "/var/run/nvidia-container-devices/all", "type": "bind",
        "source": str(empty), "options": ["rbind"]}),
        c["process"].__setitem__("args", ["sh", "-c", "ls /dev"])))
    r = run(build, bundle, cdi_dir, tmp_path)
    assert r.returncode == 0, r.stderr
    assert "nvidia" not in r.stdout
