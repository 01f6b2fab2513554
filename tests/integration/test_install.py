"""gpulet runtime install: copies a bundle's bin/ and lib/ to a host folder,
libraries first, atomically, leaving identical files alone; refuses what is
not a bundle before creating anything. (The image's own bundle, installed
and run on a "host", is in test_image.py.)"""
import os
import stat
import subprocess

import pytest


def make_bundle(root):
    (root / "bin").mkdir(parents=True)
    (root / "lib" / "gpulet").mkdir(parents=True)
    (root / "bin" / "gpulet-runtime").write_bytes(b"\x7fELF runtime")
    (root / "bin" / "gpulet-runtime").chmod(0o755)
    (root / "bin" / "gpulet-hook").write_bytes(b"\x7fELF hook")
    (root / "bin" / "gpulet-hook").chmod(0o755)
    (root / "lib" / "libc.so.6").write_bytes(b"libc" * 1000)
    (root / "lib" / "ld-linux-x86-64.so.2").write_bytes(b"loader")
    (root / "lib" / "ld-linux-x86-64.so.2").chmod(0o755)
    (root / "lib" / "gpulet" / "libnvidia-ml.so.1").write_bytes(b"simulator")
    (root / "lib" / ".hidden").write_bytes(b"not copied")
    return root


def test_install_copies_libraries_then_programs_and_is_idempotent(gpulet, tmp_path):
    bundle = make_bundle(tmp_path / "image" / "usr" / "local" / "gpulet")
    host = tmp_path / "host" / "usr" / "local" / "gpulet"
    host.parent.mkdir(parents=True)
    r = gpulet("runtime", "install", "--from", bundle, "--to", host)
    assert r.rc == 0, r.err
    lines = r.out.splitlines()
    assert lines == [f"installed {host}/lib/ld-linux-x86-64.so.2",
                     f"installed {host}/lib/libc.so.6",
                     f"installed {host}/bin/gpulet-hook",
                     f"installed {host}/bin/gpulet-runtime",
                     "gpulet runtime install: done"]
    assert (host / "lib" / "libc.so.6").read_bytes() == b"libc" * 1000
    assert stat.S_IMODE((host / "bin" / "gpulet-runtime").stat().st_mode) == 0o755
    assert stat.S_IMODE((host / "lib" / "libc.so.6").stat().st_mode) == 0o644
    assert stat.S_IMODE((host / "lib" / "ld-linux-x86-64.so.2").stat().st_mode) == 0o755
    # the simulator and hidden files stay behind; no temporary files are left
    assert sorted(os.listdir(host / "lib")) == ["ld-linux-x86-64.so.2", "libc.so.6"]
    assert sorted(os.listdir(host / "bin")) == ["gpulet-hook", "gpulet-runtime"]

    inode = (host / "bin" / "gpulet-hook").stat().st_ino
    (bundle / "bin" / "gpulet-runtime").write_bytes(b"\x7fELF runtime v2")
    r = gpulet("runtime", "install", "--from", bundle, "--to", host)
    assert r.rc == 0, r.err
    assert f"installed {host}/bin/gpulet-runtime" in r.out
    assert f"unchanged {host}/bin/gpulet-hook" in r.out
    assert (host / "bin" / "gpulet-hook").stat().st_ino == inode  # not rewritten
    assert (host / "bin" / "gpulet-runtime").read_bytes() == b"\x7fELF runtime v2"

    r = gpulet("runtime", "install", "--from", bundle, "--to", host)
    assert r.rc == 0 and r.out.endswith("already up to date\n")


def test_install_refuses_what_is_not_a_bundle_and_creates_nothing(gpulet, tmp_path):
    not_bundle = tmp_path / "src"
    (not_bundle / "bin").mkdir(parents=True)
    target = tmp_path / "target"
    r = gpulet("runtime", "install", "--from", not_bundle, "--to", target)
    assert r.rc == 2
    assert f"{not_bundle} is not a gpulet bundle: it has no lib/ folder" in r.err
    assert not target.exists()
    r = gpulet("runtime", "install", "--from", not_bundle, "--to", "relative/dir")
    assert r.rc == 2 and "give an absolute folder" in r.err


def test_install_usage_errors(gpulet):
    r = gpulet("runtime", "install")
    assert r.rc == 2 and "--to DIR is required" in r.err
    r = gpulet("runtime", "install", "--to")
    assert r.rc == 2 and "option '--to' needs a value" in r.err
    r = gpulet("runtime", "install", "--to", "/x", "extra")
    assert r.rc == 2 and "unexpected argument" in r.err
    r = gpulet("runtime", "install", "--help")
    assert r.rc == 0 and "gpulet runtime install --to DIR" in r.out


def test_install_into_a_read_only_place_fails_clearly(gpulet, tmp_path):
    bundle = make_bundle(tmp_path / "bundle")
    r = gpulet("runtime", "install", "--from", bundle, "--to", "/proc/gpulet-test")
    assert r.rc == 1
    assert "cannot create /proc/gpulet-test" in r.err and "is the host folder mounted?" in r.err


def bundle_with_programs(root, tmp_path, loader_in_bundle=True):
    """A bundle whose programs name the bundle's own loader, as the image's do
    (the loader is ld-linux's name under PREFIX/lib, fixed at build time)."""
    make_bundle(root)
    src = tmp_path / "main.c"
    src.write_text("int main(void) { return 0; }\n")
    interp = "/usr/local/gpulet/lib/ld-linux-x86-64.so.2" if loader_in_bundle \
        else "/lib64/ld-linux-x86-64.so.2"
    for name in ("gpulet-runtime", "gpulet"):
        subprocess.run(["gcc", "-o", str(root / "bin" / name), str(src),
                        f"-Wl,--dynamic-linker={interp}"], check=True)
    return root


@pytest.mark.parametrize("to", ["opt/gpulet", "usr/local/gpulet2", "usr/local"])
def test_install_refuses_a_folder_its_programs_cannot_run_from(gpulet, tmp_path, to):
    bundle = bundle_with_programs(tmp_path / "image" / "usr" / "local" / "gpulet", tmp_path)
    target = tmp_path / "host" / to
    r = gpulet("runtime", "install", "--from", bundle, "--to", target)
    assert r.rc == 2 and r.out == ""
    assert (f"--to {target}: the bundle's programs load their loader and libraries from "
            "/usr/local/gpulet/lib") in r.err
    assert "give that folder as this process sees it" in r.err
    assert not (tmp_path / "host").exists()


def test_install_takes_the_host_folder_wherever_the_host_is_mounted(gpulet, tmp_path):
    bundle = bundle_with_programs(tmp_path / "image" / "usr" / "local" / "gpulet", tmp_path)
    for host in ("host", "mnt/node-root"):
        target = tmp_path / host / "usr" / "local" / "gpulet"
        target.parent.mkdir(parents=True)
        r = gpulet("runtime", "install", "--from", bundle, "--to", f"{target}/")
        assert r.rc == 0, r.err
        assert (target / "bin" / "gpulet-runtime").exists()


def test_install_of_programs_on_the_systems_loader_goes_anywhere(gpulet, tmp_path):
    bundle = bundle_with_programs(tmp_path / "b", tmp_path, loader_in_bundle=False)
    r = gpulet("runtime", "install", "--from", bundle, "--to", tmp_path / "anywhere")
    assert r.rc == 0, r.err
