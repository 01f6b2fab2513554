"""gpulet runtime configure: Docker's daemon.json and CRI-O drop-ins, from
configs that already hold other runtimes and options."""
import json
import os

import pytest

from conftest import BUILD, ROOT

GOLDEN = ROOT / "tests" / "integration" / "golden" / "runtime"
EXISTING_DOCKER = {
    "registry-mirrors": ["https://mirror.example"],
    "features": {"buildkit": True, "cdi": True},
    "runtimes": {"kata": {"path": "/usr/bin/kata-runtime"}},
    "log-driver": "journald",
}


def configure(gpulet, *args):
    return gpulet("runtime", "configure", "--runtime-path", "/usr/local/bin/gpulet-runtime", *args)


def golden(name, text):
    path = GOLDEN / name
    if os.environ.get("GPULET_UPDATE_GOLDEN"):
        path.write_text(text)
    assert text == path.read_text()


def test_docker_keeps_everything_else_and_is_idempotent(gpulet, tmp_path):
    cfg = tmp_path / "daemon.json"
    cfg.write_text(json.dumps(EXISTING_DOCKER, indent=4))
    original = cfg.read_text()
    r = configure(gpulet, "--runtime", "docker", "--config", cfg, "--set-as-default")
    assert r.rc == 0, r.err
    golden("docker-existing.json", cfg.read_text())
    result = json.loads(cfg.read_text())
    for key, value in EXISTING_DOCKER.items():
        if key != "runtimes":
            assert result[key] == value
    assert result["runtimes"]["kata"] == EXISTING_DOCKER["runtimes"]["kata"]
    assert result["runtimes"]["nvidia"] == {"path": "/usr/local/bin/gpulet-runtime", "args": []}
    assert result["default-runtime"] == "nvidia"
    assert (tmp_path / "daemon.json.gpulet-backup").read_text() == original
    assert "kind: RuntimeClass" in r.out and "handler: nvidia" in r.out
    again = configure(gpulet, "--runtime", "docker", "--config", cfg, "--set-as-default")
    assert again.rc == 0 and "already configured; nothing changed" in again.out
    assert json.loads(cfg.read_text()) == result


def test_docker_from_nothing_and_dry_run(gpulet, tmp_path):
    cfg = tmp_path / "docker" / "daemon.json"
    cfg.parent.mkdir()  # Docker's package makes /etc/docker; daemon.json is optional
    r = configure(gpulet, "--runtime", "docker", "--config", cfg, "--dry-run")
    assert r.rc == 0 and "would become" in r.out
    # a dry run changed nothing, so there is nothing to restart
    assert r.out.endswith("# --dry-run: nothing was changed\n") and "restart" not in r.out
    assert not cfg.exists()
    r = configure(gpulet, "--runtime", "docker", "--config", cfg)
    assert r.rc == 0, r.err
    assert "Then restart the engine and apply this RuntimeClass" in r.out
    golden("docker-new.json", cfg.read_text())
    assert not (tmp_path / "docker" / "daemon.json.gpulet-backup").exists()
    r = configure(gpulet, "--runtime", "docker", "--config", cfg)
    assert r.rc == 0 and "already configured" in r.out and "restart" not in r.out


@pytest.mark.parametrize("engine,path", [
    ("docker", "dokcer/daemon.json"), ("containerd", "containred/config.toml"),
    ("crio", "crio/crio.conf.d/99-gpulet.toml"), ("docker", "file/daemon.json")])
def test_a_mistyped_path_is_refused_and_nothing_is_created(gpulet, tmp_path, engine, path):
    (tmp_path / "file").write_text("")  # a file where the folder should be
    cfg = tmp_path / path
    for dry in ([], ["--dry-run"]):
        r = configure(gpulet, "--runtime", engine, "--config", cfg, *dry)
        assert r.rc == 2 and r.out == ""
        folder = cfg.parent.parent if engine == "crio" else cfg.parent
        assert f"{cfg}: its folder {folder} is not there (" in r.err
        assert "is the path right?" in r.err and "nothing was changed" in r.err
        assert sorted(p.name for p in tmp_path.iterdir()) == ["file"]


@pytest.mark.parametrize("text", ['{"runtimes": {', "[1, 2]", '{"runtimes": "runc"}'])
def test_docker_file_it_cannot_parse_is_left_alone(gpulet, tmp_path, text):
    cfg = tmp_path / "daemon.json"
    cfg.write_text(text)
    r = configure(gpulet, "--runtime", "docker", "--config", cfg)
    assert r.rc == 1
    assert "nothing was changed" in r.err
    assert cfg.read_text() == text
    assert sorted(p.name for p in tmp_path.iterdir()) == ["daemon.json"]


def test_crio_drop_in(gpulet, tmp_path):
    cfg = tmp_path / "crio.conf.d" / "99-gpulet.toml"
    r = configure(gpulet, "--runtime", "crio", "--config", cfg, "--set-as-default")
    assert r.rc == 0, r.err
    golden("crio-default.toml", cfg.read_text())
    again = configure(gpulet, "--runtime", "crio", "--config", cfg, "--set-as-default")
    assert "nothing changed" in again.out
    r = configure(gpulet, "--runtime", "crio", "--config", cfg)
    assert r.rc == 0
    golden("crio.toml", cfg.read_text())
    # CRI-O loads every file in crio.conf.d: the backup is kept above it
    assert (tmp_path / "99-gpulet.toml.gpulet-backup").read_text() == \
        (GOLDEN / "crio-default.toml").read_text()
    assert os.listdir(tmp_path / "crio.conf.d") == ["99-gpulet.toml"]


def test_crio_drop_in_folder_gets_only_the_drop_in(gpulet, tmp_path):
    """CRI-O loads every file of crio.conf.d, in name order: a backup
    there (an older gpulet's) came after 99-gpulet.toml and its old values
    won; a temporary file left by a killed run would be loaded too."""
    folder = tmp_path / "crio.conf.d"
    folder.mkdir()
    cfg = folder / "99-gpulet.toml"
    cfg.write_text('[crio.runtime]\ndefault_runtime = "crun"\n')
    stale = [folder / "99-gpulet.toml.gpulet-backup", folder / ".99-gpulet.toml.gpulet-a1B2c3"]
    for f in stale:
        f.write_text('[crio.runtime]\ndefault_runtime = "runc"\n')
    (folder / "10-operator.conf").write_text("# theirs\n")
    r = configure(gpulet, "--runtime", "crio", "--config", cfg)
    assert r.rc == 0, r.err
    assert sorted(os.listdir(folder)) == ["10-operator.conf", "99-gpulet.toml"]
    assert str(tmp_path / "99-gpulet.toml.gpulet-backup") in r.out
    assert "default_runtime = \"crun\"" in cfg.read_text()


def test_usage_errors(gpulet, tmp_path):
    r = gpulet("runtime", "configure", "--runtime", "podman")
    assert r.rc == 2 and "--runtime must be docker, crio or containerd" in r.err
    r = gpulet("runtime", "configure", "--runtime", "docker", "--runtime-path", "relative/path",
               "--config", tmp_path / "d.json")
    assert r.rc == 2 and "must be absolute" in r.err


# ---- containerd ----

import shutil  # noqa: E402
import subprocess  # noqa: E402


def containerd_case(tmp_path, name):
    cfg = tmp_path / "config.toml"
    shutil.copy(GOLDEN / f"{name}-before.toml", cfg)
    return cfg


def normalise(text, tmp_path):
    return text.replace(str(tmp_path), "/etc/containerd")


@pytest.mark.parametrize("name", ["containerd-v2", "containerd-v3"])
def test_containerd_drop_in_and_imports(gpulet, tmp_path, name):
    cfg = containerd_case(tmp_path, name)
    before = cfg.read_text()
    r = configure(gpulet, "--runtime", "containerd", "--config", cfg, "--set-as-default")
    assert r.rc == 0, r.err
    drop = tmp_path / "conf.d" / "99-gpulet.toml"
    golden(f"{name}-drop-in.toml", normalise(drop.read_text(), tmp_path))
    golden(f"{name}-after.toml", normalise(cfg.read_text(), tmp_path))
    assert (tmp_path / "config.toml.gpulet-backup").read_text() == before
    again = configure(gpulet, "--runtime", "containerd", "--config", cfg, "--set-as-default")
    assert "already configured; nothing changed" in again.out
    # the drop-in is gpulet's whole: rewritten without a backup, and
    # nothing else of gpulet's is ever in its folder
    changed = configure(gpulet, "--runtime", "containerd", "--config", cfg)
    assert changed.rc == 0, changed.err
    assert os.listdir(tmp_path / "conf.d") == ["99-gpulet.toml"]
    assert sorted(os.listdir(tmp_path)) == ["conf.d", "config.toml", "config.toml.gpulet-backup"]
    configure(gpulet, "--runtime", "containerd", "--config", cfg, "--set-as-default")
    if shutil.which("containerd") and name == "containerd-v2":
        dump = subprocess.run(["containerd", "--config", str(cfg), "config", "dump"],
                              capture_output=True, text=True, timeout=30)
        assert dump.returncode == 0, dump.stderr
        out = dump.stdout
        assert '[plugins."io.containerd.grpc.v1.cri".containerd.runtimes.nvidia.options]' in out
        assert 'BinaryName = "/usr/local/bin/gpulet-runtime"' in out
        assert 'default_runtime_name = "nvidia"' in out
        assert 'sandbox_image = "registry.k8s.io/pause:3.9"' in out  # kept
        assert "runtimes.kata]" in out                                 # kept


@pytest.mark.parametrize("pattern", ["*", "config.toml*", ".config*"])
def test_containerd_import_that_would_load_gpulets_own_files_is_refused(gpulet, tmp_path,
                                                                        pattern):
    cfg = tmp_path / "config.toml"
    text = f'version = 2\nimports = ["{tmp_path}/{pattern}"]\n'
    cfg.write_text(text)
    r = configure(gpulet, "--runtime", "containerd", "--config", cfg)
    assert r.rc != 0 and "a file gpulet writes" in r.err and "nothing was changed" in r.err
    assert cfg.read_text() == text and sorted(os.listdir(tmp_path)) == ["config.toml"]


def test_containerd_operators_import_of_the_whole_drop_in_folder(gpulet, tmp_path):
    """imports = ["conf.d/*"] loads every file there: gpulet leaves only its
    drop-in in it."""
    cfg = tmp_path / "config.toml"
    cfg.write_text(f'version = 2\nimports = ["{tmp_path}/conf.d/*"]\n')
    for args in ((), ("--set-as-default",)):
        r = configure(gpulet, "--runtime", "containerd", "--config", cfg, *args)
        assert r.rc == 0, r.err
        assert os.listdir(tmp_path / "conf.d") == ["99-gpulet.toml"]
    if shutil.which("containerd"):
        dump = subprocess.run(["containerd", "--config", str(cfg), "config", "dump"],
                              capture_output=True, text=True, timeout=30)
        assert dump.returncode == 0, dump.stderr
        assert 'default_runtime_name = "nvidia"' in dump.stdout


def test_containerd_without_a_config(gpulet, tmp_path):
    cfg = tmp_path / "config.toml"
    r = configure(gpulet, "--runtime", "containerd", "--config", cfg)
    assert r.rc == 0, r.err
    assert cfg.read_text() == f'version = 2\nimports = ["{tmp_path}/conf.d/*.toml"]\n'
    assert "runtimes.nvidia]" in (tmp_path / "conf.d" / "99-gpulet.toml").read_text()


@pytest.mark.parametrize("text,message", [
    ("version = 2\n[plugins\n", "config.toml:2: a table header that does not parse"),
    ("version = 2\nroot = \"/x\" junk\n", "config.toml:2: unexpected text after the value"),
    ("version = 2\nimports = [\"a\",\n", "config.toml:2: an array that is never closed"),
    ("root = \"/var/lib/containerd\"\n", "is containerd config version 1"),
    ("version = 2\nimports = 7\n", "config.toml line 2: imports must be a path or a list"),
    ("version = 2\nimports = ['/nonexistent/x.toml']\n", "cannot read /nonexistent/x.toml"),
    ("version = 2\nimports = ['conf.d/*.toml']\n", "is a pattern relative to containerd's working"),
    ('version = "2"\n', "line 1: version is not a number"),
    ('version = 2\nplugins."io.containerd.grpc.v1.cri".containerd = 1\n', "\"containerd\" is not a table"),
    ("version = 2\na = {b = 1}\n[a.c]\n", "config.toml:3: \"a\" is already an inline table"),
])
def test_containerd_config_it_cannot_use_is_left_alone(gpulet, tmp_path, text, message):
    cfg = tmp_path / "config.toml"
    cfg.write_text(text)
    r = configure(gpulet, "--runtime", "containerd", "--config", cfg)
    assert r.rc == 1
    assert message in r.err and "nothing was changed" in r.err
    assert cfg.read_text() == text
    assert sorted(p.name for p in tmp_path.iterdir()) == ["config.toml"]


# ---- every TOML form containerd accepts, checked with `containerd config dump` ----

import resource  # noqa: E402
import signal  # noqa: E402
import stat  # noqa: E402
import tomllib  # noqa: E402

CRI = "io.containerd.grpc.v1.cri"
NEEDS_CONTAINERD = pytest.mark.skipif(shutil.which("containerd") is None,
                                      reason="containerd is not installed (apt-get install containerd)")


def dump(cfg):
    r = subprocess.run(["containerd", "--config", str(cfg), "config", "dump"],
                       capture_output=True, text=True, timeout=60)
    assert r.returncode == 0, r.stderr
    return tomllib.loads(r.stdout)


def assert_subset(old, new, path=""):
    """Every key of old is in new with the same value. A key with Go's zero
    value ("", 0, false, []) may go: containerd reads it into a struct
    (the default runc's options) where absent and zero are the same."""
    for key, value in old.items():
        if key not in new and value in ("", 0, False, []):
            continue
        assert key in new, f"{path}{key} lost"
        if isinstance(value, dict):
            assert_subset(value, new[key], f"{path}{key}.")
        else:
            assert new[key] == value, f"{path}{key}: {value!r} became {new[key]!r}"


def kept_and_configured(gpulet, tmp_path, text):
    """configure, then the merged config keeps everything containerd loaded
    before and has the nvidia runtime; a second run changes nothing."""
    cfg = tmp_path / "config.toml"
    cfg.write_bytes(text.encode() if isinstance(text, str) else text)
    before = dump(cfg)
    r = configure(gpulet, "--runtime", "containerd", "--config", cfg)
    assert r.rc == 0, r.err
    after = dump(cfg)
    before.pop("imports", None)
    after.pop("imports", None)
    assert_subset(before, after)
    nvidia = after["plugins"][CRI]["containerd"]["runtimes"]["nvidia"]
    assert nvidia["options"]["BinaryName"] == "/usr/local/bin/gpulet-runtime"
    again = configure(gpulet, "--runtime", "containerd", "--config", cfg)
    assert again.rc == 0 and "already configured; nothing changed" in again.out
    return after


FORMS = {
    "inline-containerd-table": f'version = 2\n[plugins."{CRI}"]\nsandbox_image = "x/pause:7"\n'
                               'containerd = { snapshotter = "native", runtimes = { runc = '
                               '{ runtime_type = "io.containerd.runc.v2", options = '
                               '{ SystemdCgroup = true } } } }\n',
    "cri-inline-under-plugins": f'version = 2\n[plugins]\n"{CRI}" = {{ sandbox_image = '
                                '"x/pause:7", containerd = { snapshotter = "native" } }\n',
    "dotted-keys": f'version = 2\nplugins."{CRI}".sandbox_image = "x/pause:7"\n'
                   f"plugins . '{CRI}' . containerd.snapshotter = 'native'\n",
    "strings-and-comments": "# top\nversion = 2 # two\n"
                            f"[plugins.'{CRI}'] # literal key\n"
                            "sandbox_image = '''x/pause:7'''\n"
                            'disable_apparmor = true\n'
                            '[plugins."io.containerd.grpc.v1.cri".registry]\n'
                            'config_path = """/etc/containerd/\\\n    certs.d"""\n',
    "bom-crlf": "\ufeffversion = 2\r\n[plugins.\"" + CRI + "\"]\r\nsandbox_image = \"x/pause:7\"\r\n",
    "600-tables": "version = 2\n" + f'[plugins."{CRI}"]\nsandbox_image = "x/pause:7"\n' + "".join(
        f'[plugins."{CRI}".containerd.runtimes.r{i}]\nruntime_type = "io.containerd.runc.v2"\n'
        for i in range(600)),
}


@NEEDS_CONTAINERD
@pytest.mark.parametrize("form", FORMS)
def test_containerd_every_form_keeps_every_key(gpulet, tmp_path, form):
    after = kept_and_configured(gpulet, tmp_path, FORMS[form])
    assert after["plugins"][CRI]["sandbox_image"] == "x/pause:7"
    if form == "600-tables":
        assert len(after["plugins"][CRI]["containerd"]["runtimes"]) == 601
    if form == "inline-containerd-table":
        assert after["plugins"][CRI]["containerd"]["runtimes"]["nvidia"]["options"][
            "SystemdCgroup"] is True


@NEEDS_CONTAINERD
def test_containerd_existing_nvidia_runtime_keeps_the_operators_settings(gpulet, tmp_path):
    """A node configured before (by hand or another toolkit) has an nvidia
    runtime with settings of its own: gpulet changes its binary and type
    only. It used to replace the whole entry, silently turning off
    privileged_without_host_devices (privileged pods then got every host
    device) and the systemd cgroup driver."""
    nvidia = f'[plugins."{CRI}".containerd.runtimes.nvidia]'
    after = kept_and_configured(gpulet, tmp_path, (
        f'version = 2\n{nvidia}\nruntime_type = "io.containerd.runc.v2"\n'
        'privileged_without_host_devices = true\npod_annotations = ["nvidia.com/*"]\n'
        f'{nvidia[:-1]}.options]\nBinaryName = "/usr/local/bin/gpulet-runtime"\n'
        'SystemdCgroup = true\nRoot = "/run/nvidia-runc"\n'))
    entry = after["plugins"][CRI]["containerd"]["runtimes"]["nvidia"]
    assert entry["privileged_without_host_devices"] is True
    assert entry["pod_annotations"] == ["nvidia.com/*"]
    assert entry["options"]["SystemdCgroup"] is True
    assert entry["options"]["Root"] == "/run/nvidia-runc"


@NEEDS_CONTAINERD
def test_containerd_imports_as_a_string(gpulet, tmp_path):
    """containerd 1.6 refuses a string; gpulet reads it as one path and
    writes a list, which loads with the other file's settings."""
    other = tmp_path / "other.toml"
    other.write_text('version = 2\n[metrics]\naddress = "127.0.0.1:1339"\n')
    cfg = tmp_path / "config.toml"
    cfg.write_text(f'version = 2\nimports = "{other}"\n[plugins."{CRI}"]\n'
                   'sandbox_image = "x/pause:7"\n[debug]\nlevel = "info"\n')
    r = configure(gpulet, "--runtime", "containerd", "--config", cfg)
    assert r.rc == 0, r.err
    assert f'imports = ["{other}", "{tmp_path}/conf.d/*.toml"]\n[plugins' in cfg.read_text()
    after = dump(cfg)
    assert after["metrics"]["address"] == "127.0.0.1:1339"
    assert after["debug"]["level"] == "info"
    assert after["plugins"][CRI]["sandbox_image"] == "x/pause:7"
    assert "nvidia" in after["plugins"][CRI]["containerd"]["runtimes"]
    again = configure(gpulet, "--runtime", "containerd", "--config", cfg)
    assert "already configured; nothing changed" in again.out


@NEEDS_CONTAINERD
def test_containerd_cri_settings_from_an_import_are_kept(gpulet, tmp_path):
    (tmp_path / "conf.d").mkdir()
    (tmp_path / "conf.d" / "10-site.toml").write_text(
        f'version = 2\n[plugins."{CRI}"]\nsandbox_image = "site/pause:1"\n')
    text = (f'version = 2\nimports = ["{tmp_path}/conf.d/*.toml"]\n[plugins."{CRI}"]\n'
            'sandbox_image = "x"\n')
    after = kept_and_configured(gpulet, tmp_path, text)
    assert after["plugins"][CRI]["sandbox_image"] == "site/pause:1"


def test_containerd_import_that_would_hide_the_runtime_is_refused(gpulet, tmp_path):
    (tmp_path / "conf.d").mkdir()
    late = tmp_path / "conf.d" / "zz-late.toml"
    late.write_text(f'version = 2\n[plugins."{CRI}"]\nsandbox_image = "late"\n')
    cfg = tmp_path / "config.toml"
    text = f'version = 2\nimports = ["{tmp_path}/conf.d/*.toml"]\n'
    cfg.write_text(text)
    r = configure(gpulet, "--runtime", "containerd", "--config", cfg)
    assert r.rc == 1
    assert f"{late} replaces the CRI plugin's table" in r.err and "nothing was changed" in r.err
    assert cfg.read_text() == text
    assert sorted(p.name for p in (tmp_path / "conf.d").iterdir()) == ["zz-late.toml"]


def test_crio_file_with_other_settings_keeps_them(gpulet, tmp_path):
    cfg = tmp_path / "crio.conf"
    text = ('[crio]\nroot = "/var/lib/containers"\n[crio.runtime]\ndefault_runtime = "crun"\n'
            'runtimes.crun = { runtime_path = "/usr/bin/crun" }\n[crio.network]\n'
            'plugin_dirs = ["/opt/cni/bin"]\n')
    cfg.write_text(text)
    r = configure(gpulet, "--runtime", "crio", "--config", cfg)
    assert r.rc == 0, r.err
    result = tomllib.loads(cfg.read_text())
    assert_subset(tomllib.loads(text), result)
    assert result["crio"]["runtime"]["runtimes"]["nvidia"] == {
        "runtime_path": "/usr/local/bin/gpulet-runtime", "runtime_type": "oci"}
    bad = tmp_path / "bad.conf"
    bad.write_text("[crio.runtime]\nruntimes = 1\n")
    r = configure(gpulet, "--runtime", "crio", "--config", bad)
    assert r.rc == 1 and "\"runtimes\" is not a table" in r.err
    assert bad.read_text() == "[crio.runtime]\nruntimes = 1\n"


def test_crio_and_docker_existing_nvidia_runtime_keeps_its_settings(gpulet, tmp_path):
    """Only the runtime's binary (and CRI-O's type) are gpulet's: the rest
    of an nvidia entry someone wrote before stays."""
    cfg = tmp_path / "crio.conf"
    cfg.write_text('[crio.runtime.runtimes.nvidia]\nruntime_path = "/usr/bin/nvidia-container-runtime"\n'
                   'privileged_without_host_devices = true\n'
                   'allowed_annotations = ["io.kubernetes.cri-o.Devices"]\n')
    r = configure(gpulet, "--runtime", "crio", "--config", cfg)
    assert r.rc == 0, r.err
    assert tomllib.loads(cfg.read_text())["crio"]["runtime"]["runtimes"]["nvidia"] == {
        "runtime_path": "/usr/local/bin/gpulet-runtime", "privileged_without_host_devices": True,
        "allowed_annotations": ["io.kubernetes.cri-o.Devices"], "runtime_type": "oci"}
    cfg = tmp_path / "daemon.json"
    cfg.write_text(json.dumps({"runtimes": {"nvidia": {"path": "/usr/bin/nvidia-container-runtime",
                                                       "runtimeArgs": ["--debug"]}}}))
    r = configure(gpulet, "--runtime", "docker", "--config", cfg)
    assert r.rc == 0, r.err
    assert json.loads(cfg.read_text())["runtimes"]["nvidia"] == {
        "path": "/usr/local/bin/gpulet-runtime", "runtimeArgs": ["--debug"], "args": []}


# ---- files: modes, owners, backups, full disks ----

@pytest.mark.parametrize("mode", [0o444, 0o600, 0o640])
def test_target_and_backup_keep_the_mode(gpulet, tmp_path, mode):
    cfg = tmp_path / "daemon.json"
    cfg.write_text('{"debug": true}')
    cfg.chmod(mode)
    r = configure(gpulet, "--runtime", "docker", "--config", cfg)
    assert r.rc == 0, r.err
    assert stat.S_IMODE(cfg.stat().st_mode) == mode
    backup = tmp_path / "daemon.json.gpulet-backup"
    assert stat.S_IMODE(backup.stat().st_mode) == mode
    assert json.loads(cfg.read_text())["debug"] is True


def test_backup_symlink_is_not_followed(gpulet, tmp_path):
    victim = tmp_path / "victim"
    victim.write_text("precious\n")
    cfg = tmp_path / "config.toml"
    cfg.write_text("version = 2\n")
    (tmp_path / "config.toml.gpulet-backup").symlink_to(victim)
    r = configure(gpulet, "--runtime", "containerd", "--config", cfg)
    assert r.rc == 0, r.err
    assert victim.read_text() == "precious\n"
    backup = tmp_path / "config.toml.gpulet-backup"
    assert not backup.is_symlink() and backup.read_text() == "version = 2\n"


def test_symlinked_or_special_target_is_refused(gpulet, tmp_path):
    real = tmp_path / "real.json"
    real.write_text("{}")
    link = tmp_path / "daemon.json"
    link.symlink_to(real)
    r = configure(gpulet, "--runtime", "docker", "--config", link)
    assert r.rc == 1 and "is a symbolic link" in r.err and "nothing was changed" in r.err
    assert link.is_symlink() and real.read_text() == "{}"
    fifo = tmp_path / "fifo.toml"
    os.mkfifo(fifo)
    r = configure(gpulet, "--runtime", "containerd", "--config", fifo)
    assert r.rc == 1 and "is not a regular file" in r.err


def test_full_disk_keeps_the_good_backup_and_the_target(gpulet, tmp_path):
    """A write that fails half way (RLIMIT_FSIZE stands for a full disk)
    leaves the target, the previous backup and no temporary file."""
    cfg = tmp_path / "daemon.json"
    cfg.write_text('{"debug": true}')
    assert configure(gpulet, "--runtime", "docker", "--config", cfg).rc == 0
    good_backup = (tmp_path / "daemon.json.gpulet-backup").read_text()
    big = json.dumps({"labels": ["x" * 100] * 100})
    cfg.write_text(big)

    def small_files():
        resource.setrlimit(resource.RLIMIT_FSIZE, (4096, 4096))
        signal.signal(signal.SIGXFSZ, signal.SIG_IGN)

    r = subprocess.run([str(BUILD / "gpulet"), "runtime", "configure", "--runtime", "docker",
                        "--runtime-path", "/usr/local/bin/gpulet-runtime", "--config", str(cfg)],
                       capture_output=True, text=True, timeout=60, preexec_fn=small_files)
    assert r.returncode == 1
    assert "cannot back up" in r.stderr and "nothing was changed" in r.stderr
    assert cfg.read_text() == big
    assert (tmp_path / "daemon.json.gpulet-backup").read_text() == good_backup
    assert sorted(p.name for p in tmp_path.iterdir()) == ["daemon.json",
                                                          "daemon.json.gpulet-backup"]


@pytest.mark.skipif(shutil.which("unshare") is None or os.geteuid() != 0,
                    reason="needs unshare(1) and root for a PID namespace")
def test_a_temporary_file_left_by_a_killed_run_does_not_block_the_next(tmp_path):
    """gpulet is PID 1 in its init container on every run: a temporary file
    named after the PID, left by a run killed mid-write, made every later
    run fail with "File exists"."""
    cfg = tmp_path / "daemon.json"
    cfg.write_text('{"debug": true}')
    for name in (".daemon.json.gpulet-1.tmp", ".daemon.json.gpulet-backup.gpulet-1.tmp"):
        (tmp_path / name).write_text("half written")
    r = subprocess.run(["unshare", "--pid", "--fork", "--mount-proc", str(BUILD / "gpulet"),
                        "runtime", "configure", "--runtime", "docker", "--runtime-path",
                        "/usr/local/bin/gpulet-runtime", "--config", str(cfg)],
                       capture_output=True, text=True, timeout=60)
    assert r.returncode == 0, r.stderr
    assert json.loads(cfg.read_text())["runtimes"]["nvidia"]["path"] == \
        "/usr/local/bin/gpulet-runtime"
