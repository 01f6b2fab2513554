"""Shared fixtures: where the gpulet build is, and how to run it."""
import os
import pathlib
import subprocess

import pytest
import yaml

ROOT = pathlib.Path(__file__).resolve().parents[2]
BUILD = pathlib.Path(os.environ.get("GPULET_BUILD", ROOT / "build"))
NODES = ROOT / "sim" / "nodes"
FIXTURES = sorted(p.stem for p in NODES.glob("*.yaml"))


class Result:
    def __init__(self, proc):
        self.rc = proc.returncode
        self.out = proc.stdout
        self.err = proc.stderr


@pytest.fixture(scope="session")
def build():
    gpulet = BUILD / "gpulet"
    if not gpulet.exists():
        pytest.fail(f"{gpulet} is missing: run `make` (or set GPULET_BUILD)")
    return BUILD


@pytest.fixture
def gpulet(build):
    """Runs gpulet with the given arguments; returns rc, stdout, stderr."""

    def run(*args, env=None, timeout=60):
        full_env = {k: v for k, v in os.environ.items()
                    if not k.startswith("GPULET_SIM") and k != "NVIDIA_DRIVER_ROOT"}
        full_env.update(env or {})
        proc = subprocess.run([str(build / "gpulet"), *map(str, args)], env=full_env,
                              capture_output=True, text=True, timeout=timeout)
        return Result(proc)

    return run


def pytest_configure(config):
    config.addinivalue_line("markers", "kubelet_v120: the kubelet simulator as v1.20 "
                            "(no GetAllocatableResources; a checkpoint)")
    config.addinivalue_line("markers", "kubelet(**options): options of the kubelet simulator")


def load_node(name):
    with open(NODES / f"{name}.yaml") as f:
        return yaml.safe_load(f)


def write_atomically(path, text):
    tmp = pathlib.Path(str(path) + ".tmp")
    tmp.write_text(text)
    os.replace(tmp, path)
