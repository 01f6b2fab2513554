"""The ld-cache hook a claim's CDI spec names is a path the host's
container runtime runs: --host-hook-path (GPULET_HOST_HOOK_PATH, set by
overlays/dra to where the host-setup component installs the bundle),
looked at through the driver root when gpulet sees the host there, and
left out (said once) while it is not there — a spec naming a missing
hook would fail every container given the claim. `gpulet cdi generate`
leaves a missing hook out the same way."""
import shutil

import yaml

from kubelet import wait_for
from test_cdi import driver_root, generate  # noqa: F401 (run_gpulet uses driver_root)
from test_dra import (api, certs, claim_spec, prepare, protos, reg_socket,  # noqa: F401
                      run_gpulet)

HOOK = "/usr/local/gpulet/bin/gpulet-hook"


def hooks(spec):
    return spec["containerEdits"].get("hooks", [])


def test_spec_names_the_host_hook_once_it_is_there(run_gpulet, api, protos, tmp_path,
                                                   driver_root):  # noqa: F811
    _, dra = protos
    # the DaemonSet's view: the host's / at the driver root
    g = run_gpulet("dgx-a100", extra=["--host-driver-root", "/", "--host-hook-path", HOOK])
    wait_for(lambda: reg_socket(tmp_path).exists(), what="the registration socket")
    seen = driver_root / HOOK.lstrip("/")
    assert not seen.exists()
    try:
        for name in ("a", "b"):
            uid = api.put_claim("default", name, ["gpu-2"])
            assert prepare(tmp_path, dra, [("default", name, uid)]).claims[uid].error == ""
            assert hooks(claim_spec(tmp_path, uid)) == []
        assert g.text().count("name no ld-cache hook") == 1  # said once
        assert str(seen) in g.text()  # where it looked

        # not a program: still left out
        seen.parent.mkdir(parents=True)
        seen.write_text("#!/bin/sh\n")
        uid = api.put_claim("default", "c", ["gpu-2"])
        assert prepare(tmp_path, dra, [("default", "c", uid)]).claims[uid].error == ""
        assert hooks(claim_spec(tmp_path, uid)) == []

        # installed: the spec names the host's path, not the one gpulet sees
        seen.chmod(0o755)
        uid = api.put_claim("default", "d", ["gpu-2"])
        assert prepare(tmp_path, dra, [("default", "d", uid)]).claims[uid].error == ""
        hook, = hooks(claim_spec(tmp_path, uid))
        assert hook["path"] == HOOK and hook["args"][:2] == ["gpulet-hook", "update-ldcache"]
        assert "name the ld-cache hook again" in g.text()
    finally:
        shutil.rmtree(driver_root / "usr" / "local", ignore_errors=True)


def test_default_hook_beside_gpulet(run_gpulet, api, protos, tmp_path, build):
    _, dra = protos
    run_gpulet("dgx-a100")
    wait_for(lambda: reg_socket(tmp_path).exists(), what="the registration socket")
    uid = api.put_claim("default", "a", ["gpu-2"])
    assert prepare(tmp_path, dra, [("default", "a", uid)]).claims[uid].error == ""
    hook, = hooks(claim_spec(tmp_path, uid))
    assert hook["path"] == str(build.resolve() / "gpulet-hook")


def test_relative_host_hook_path_refused(gpulet, tmp_path):
    for how in (["--host-hook-path", "bin/gpulet-hook"], []):
        r = gpulet("--simulate", "dgx-a100", "run", "--dra", "--no-device-plugin",
                   "--kubelet-root", tmp_path / "k", "--node-name", "node1",
                   "--state-dir", tmp_path / "s", "--cdi-dir", tmp_path / "c", *how,
                   env={"GPULET_HOST_HOOK_PATH": "relative/gpulet-hook"})
        assert r.rc == 2, r.err
        assert "--host-hook-path" in r.err and "absolute path" in r.err


def test_cdi_generate_leaves_a_missing_hook_out(gpulet, driver_root, tmp_path):  # noqa: F811
    r = gpulet("--simulate", "dgx-a100", "cdi", "generate", "--driver-root", driver_root,
               "--hook-path", tmp_path / "nowhere" / "gpulet-hook")
    assert r.rc == 0, r.err
    assert "names no ld-cache hook" in r.err and "nowhere" in r.err
    assert hooks(yaml.safe_load(r.out)) == []
    hook, = hooks(yaml.safe_load(generate(gpulet, "dgx-a100", "--driver-root", driver_root)))
    assert hook["args"][:2] == ["gpulet-hook", "update-ldcache"]
