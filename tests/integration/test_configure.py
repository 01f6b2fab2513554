"""gpulet runtime configure: Docker's daemon.json and CRI-O drop-ins, from
configs that already hold other runtimes and options."""
import json
import os

import pytest

from conftest import ROOT

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
    r = configure(gpulet, "--runtime", "docker", "--config", cfg, "--dry-run")
    assert r.rc == 0 and "would become" in r.out
    assert not cfg.exists()
    r = configure(gpulet, "--runtime", "docker", "--config", cfg)
    assert r.rc == 0, r.err
    golden("docker-new.json", cfg.read_text())
    assert not (tmp_path / "docker" / "daemon.json.gpulet-backup").exists()


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
    assert (tmp_path / "crio.conf.d" / "99-gpulet.toml.gpulet-backup").exists()


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
])
def test_containerd_config_it_cannot_use_is_left_alone(gpulet, tmp_path, text, message):
    cfg = tmp_path / "config.toml"
    cfg.write_text(text)
    r = configure(gpulet, "--runtime", "containerd", "--config", cfg)
    assert r.rc == 1
    assert message in r.err and "nothing was changed" in r.err
    assert cfg.read_text() == text
    assert sorted(p.name for p in tmp_path.iterdir()) == ["config.toml"]
