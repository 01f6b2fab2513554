"""Sharing by claim (docs/dra.md): NVIDIA's GpuConfig on a claim, applied by
`gpulet run --dra` through the simulated driver's own programs (sim/smi_sim.c,
sim/mps_control_sim.c) in a driver root: the time slice set and put back,
an MPS control daemon per claim with the claim's GPUs and defaults, its CDI
edits, kept across gpulet restarts, gone on unprepare, and a daemon that
never comes up failing the claim within the deadline with nothing left."""
import os
import pathlib
import shutil
import subprocess
import tempfile
import time

import pytest
import yaml

from conftest import BUILD
from kubelet import wait_for
from test_cdi import make_driver_root
from test_dra import (api, certs, kubeconfig, prepare, protos, reg_socket,  # noqa: F401
                      short_dir, unprepare, Gpulet, NODE)

API = "resource.nvidia.com/v1beta1"


@pytest.fixture(scope="session")
def sim_root(tmp_path_factory, build):
    """A driver root whose nvidia-smi and nvidia-cuda-mps-control are the
    simulator's builds."""
    root = make_driver_root(tmp_path_factory.mktemp("sharing-driver"))
    for tool in ("nvidia-smi", "nvidia-cuda-mps-control"):
        shutil.copy(pathlib.Path(build, "sim", "tools", tool), root / "usr/bin" / tool)
    return root


@pytest.fixture
def run(build, tmp_path, api, certs, sim_root, monkeypatch):  # noqa: F811
    # The simulated nvidia-smi records into $TMPDIR/gpulet-sim-<uid>-<node>.policy.
    tmp = tmp_path / "t"
    tmp.mkdir()
    monkeypatch.setenv("TMPDIR", str(tmp))
    started = []
    kc = kubeconfig(tmp_path / "kubeconfig", api, certs)
    # A state folder short enough for the daemons' Unix sockets (107 bytes).
    state = pathlib.Path(tempfile.mkdtemp(prefix="st", dir="/tmp"))
    (tmp_path / "state").symlink_to(state)

    def start(env=None):
        saved = dict(os.environ)
        os.environ.update(env or {})
        try:
            g = Gpulet(build, tmp_path, "dgx-a100", kc, len(started), root=sim_root,
                       extra=["--state-dir", str(state)])
        finally:
            os.environ.clear()
            os.environ.update(saved)
        started.append(g)
        wait_for(lambda: reg_socket(tmp_path).exists(), what="the registration socket")
        return g

    yield start
    for g in started:
        if g.proc.poll() is None:
            g.halt()
    # MPS daemons a failed test left
    for d in (state / "dra" / "mps").glob("*"):
        mps(d, "quit")
    shutil.rmtree(state, ignore_errors=True)
    shutil.rmtree(short_dir(tmp_path), ignore_errors=True)


def policy(tmp_path):
    """{uuid: (timeslice, compute mode)} as the simulated nvidia-smi recorded them."""
    path = tmp_path / "t" / f"gpulet-sim-{os.getuid()}-dgx-a100.policy"
    out = {}
    for line in (path.read_text().splitlines() if path.exists() else []):
        uuid, ts, mode = line.split()
        out[uuid] = (int(ts.split("=")[1]), mode.split("=")[1])
    return out


def uuids(api):
    api.wait_for(lambda: api.slices, what="slices")
    return {d["name"]: d["attributes"]["uuid"]["string"]
            for s in api.slice_list() for d in s["spec"]["devices"]}


def put_claim(api, name, devices, params, requests=()):
    uid = api.put_claim("default", name, devices)
    with api.lock:
        api.claims[("default", name)]["status"]["allocation"]["devices"]["config"] = [
            {"source": "FromClaim", "requests": list(requests),
             "opaque": {"driver": "gpu.nvidia.com", "parameters": params}}]
    return uid


def mps(folder, *commands):
    """Runs the simulated control program against a claim's daemon."""
    env = dict(os.environ, CUDA_MPS_PIPE_DIRECTORY=str(folder / "pipe"))
    return subprocess.run([str(BUILD / "sim" / "tools" / "nvidia-cuda-mps-control")],
                          input="".join(c + "\n" for c in commands), env=env,
                          capture_output=True, text=True, timeout=10)


def alive(folder):
    return mps(folder, "get_default_active_thread_percentage").returncode == 0


def marked(uid):
    """Processes carrying the claim's mark (its daemon and servers)."""
    found = []
    for p in pathlib.Path("/proc").iterdir():
        try:
            if f"GPULET_MPS_CLAIM={uid}".encode() in (p / "environ").read_bytes().split(b"\0"):
                found.append(p.name)
        except (OSError, ValueError):
            pass
    return found


def test_time_slice_applied_and_restored(run, api, protos, tmp_path):
    _, dra = protos
    run()
    ids = uuids(api)
    uid = put_claim(api, "ts", ["gpu-3"], {"apiVersion": API, "kind": "GpuConfig", "sharing": {
        "strategy": "TimeSlicing", "timeSlicingConfig": {"interval": "Long"}}})
    r = prepare(tmp_path, dra, [("default", "ts", uid)]).claims[uid]
    assert r.error == ""
    assert policy(tmp_path)[ids["gpu-3"]] == (3, "DEFAULT")
    assert ids["gpu-2"] not in policy(tmp_path)
    # no MPS edits for a time-sliced claim
    spec = yaml.safe_load((tmp_path / "cdi" / f"k8s.gpu.nvidia.com-claim_{uid}.yaml").read_text())
    assert not any("CUDA_MPS" in e for e in spec["containerEdits"].get("env", []))
    assert unprepare(tmp_path, dra, [("default", "ts", uid)]).claims[uid].error == ""
    assert policy(tmp_path)[ids["gpu-3"]] == (0, "DEFAULT")

    # a wrong interval is refused with NVIDIA's reason, and nothing is set
    bad = put_claim(api, "bad", ["gpu-4"], {"apiVersion": API, "kind": "GpuConfig", "sharing": {
        "strategy": "TimeSlicing", "timeSlicingConfig": {"interval": "Forever"}}})
    err = prepare(tmp_path, dra, [("default", "bad", bad)]).claims[bad].error
    assert "unknown time-slice interval: Forever" in err
    assert ids["gpu-4"] not in policy(tmp_path)


def test_mps_daemon_per_claim(run, api, protos, tmp_path):
    _, dra = protos
    g = run()
    ids = uuids(api)
    params = {"apiVersion": API, "kind": "GpuConfig", "sharing": {
        "strategy": "MPS", "mpsConfig": {
            "defaultActiveThreadPercentage": 40, "defaultPinnedDeviceMemoryLimit": "2Gi",
            "defaultPerDevicePinnedMemoryLimit": {"1": "1Gi"}}}}
    uid = put_claim(api, "mps", ["gpu-1", "gpu-2"], params)
    r = prepare(tmp_path, dra, [("default", "mps", uid)]).claims[uid]
    assert r.error == ""
    folder = (tmp_path / "state").resolve() / "dra" / "mps" / uid
    assert alive(folder)
    out = mps(folder, "get_default_active_thread_percentage",
              f"get_default_device_pinned_mem_limit {ids['gpu-1']}",
              f"get_default_device_pinned_mem_limit {ids['gpu-2']}")
    assert out.stdout.split() == ["40.0", "2048M", "1024M"]
    log = (folder / "log" / "control.log").read_text()
    assert f"CUDA_VISIBLE_DEVICES={ids['gpu-1']},{ids['gpu-2']}" in log
    # the daemon saw the claim's shm folder as its /dev/shm
    assert (folder / "shm" / "mps-sim").exists()
    assert policy(tmp_path)[ids["gpu-1"]] == (0, "EXCLUSIVE_PROCESS")
    spec = yaml.safe_load((tmp_path / "cdi" / f"k8s.gpu.nvidia.com-claim_{uid}.yaml").read_text())
    edits = spec["containerEdits"]
    assert "CUDA_MPS_PIPE_DIRECTORY=/tmp/nvidia-mps" in edits["env"]
    mounts = {m["containerPath"]: m for m in edits["mounts"]}
    assert mounts["/tmp/nvidia-mps"]["hostPath"] == str(folder / "pipe")
    assert mounts["/dev/shm"]["hostPath"] == str(folder / "shm")
    cp = (tmp_path / "state" / "dra-checkpoint.json").read_text()
    assert '"mps"' in cp

    # gpulet restarts: the running daemon is reused, not started again; the
    # compute mode, which a driver reload meanwhile lost, is set again
    assert g.stop() == 0
    assert alive(folder)
    policy_file(tmp_path).unlink()
    run()
    wait_for(lambda: policy(tmp_path).get(ids["gpu-2"]) == (0, "EXCLUSIVE_PROCESS"), timeout=15,
             what="the compute mode set again at start")
    again = prepare(tmp_path, dra, [("default", "mps", uid)]).claims[uid]
    assert again == r
    assert (folder / "log" / "control.log").read_text().count("Startup") == 1
    # ... and one that ended while gpulet was away is started again
    mps(folder, "quit")
    wait_for(lambda: not alive(folder), what="the daemon gone")
    run()
    wait_for(lambda: alive(folder), timeout=15, what="the daemon started again")
    # the answer waits for its defaults
    assert prepare(tmp_path, dra, [("default", "mps", uid)]).claims[uid] == r
    assert (folder / "log" / "control.log").read_text().count("Startup") == 2
    assert mps(folder, "get_default_active_thread_percentage").stdout.split() == ["40.0"]

    # unprepare: quit, nothing running, the folders gone
    assert unprepare(tmp_path, dra, [("default", "mps", uid)]).claims[uid].error == ""
    assert not folder.exists()
    assert marked(uid) == []
    assert policy(tmp_path)[ids["gpu-1"]] == (0, "DEFAULT")


def test_daemon_that_never_comes_up(run, api, protos, tmp_path):
    _, dra = protos
    run(env={"GPULET_MPS_SIM_FAULT": "exit"})
    uid = put_claim(api, "dead", ["gpu-5"], {"apiVersion": API, "kind": "GpuConfig",
                                             "sharing": {"strategy": "MPS"}})
    t0 = time.monotonic()
    r = prepare(tmp_path, dra, [("default", "dead", uid)]).claims[uid]
    took = time.monotonic() - t0
    assert "did not accept connections within 10000 ms" in r.error, r.error
    assert "claim default/dead" in r.error
    assert took < 25
    assert not (tmp_path / "state" / "dra" / "mps" / uid).exists()
    assert not (tmp_path / "cdi" / f"k8s.gpu.nvidia.com-claim_{uid}.yaml").exists()
    assert marked(uid) == []
    cp = (tmp_path / "state" / "dra-checkpoint.json")
    assert not cp.exists() or uid not in cp.read_text()


def test_daemon_that_does_not_quit(run, api, protos, tmp_path):
    """A daemon still running after quit is ended by force (with the
    servers that carry its mark), and its folders removed."""
    _, dra = protos
    run(env={"GPULET_MPS_SIM_FAULT": "deaf"})
    uid = put_claim(api, "deaf", ["gpu-5"], {"apiVersion": API, "kind": "GpuConfig",
                                             "sharing": {"strategy": "MPS"}})
    assert prepare(tmp_path, dra, [("default", "deaf", uid)]).claims[uid].error == ""
    assert marked(uid) != []
    err = unprepare(tmp_path, dra, [("default", "deaf", uid)]).claims[uid].error
    assert "5000 ms" in err, err
    assert marked(uid) == []
    assert not (tmp_path / "state" / "dra" / "mps" / uid).exists()


def test_config_kind_must_fit_the_device(run, api, protos, tmp_path):
    """A MigDeviceConfig for every request leaves a GPU alone; one naming a
    GPU's request is refused, as NVIDIA's driver refuses it."""
    _, dra = protos
    params = {"apiVersion": API, "kind": "MigDeviceConfig", "sharing": {"strategy": "MPS"}}
    run()
    uid = put_claim(api, "gpuconf", ["gpu-0"], {**params})
    err = prepare(tmp_path, dra, [("default", "gpuconf", uid)]).claims[uid].error
    assert err == ""
    assert not (tmp_path / "state" / "dra" / "mps" / uid).exists()
    named = put_claim(api, "named", ["gpu-6"], params, requests=["req0"])
    err = prepare(tmp_path, dra, [("default", "named", named)]).claims[named].error
    assert "cannot apply MigDeviceConfig to device gpu-6 of type gpu" in err


def test_mps_daemons_bounded(run, api, protos, tmp_path):
    """At most 16 claims have MPS daemons at once; an unprepared one frees
    its place."""
    _, dra = protos
    run()
    params = {"apiVersion": API, "kind": "GpuConfig", "sharing": {"strategy": "MPS"}}
    claims = [("default", f"m{i}", put_claim(api, f"m{i}", [f"gpu-{i % 8}"], params))
              for i in range(17)]
    # two calls: gpulet reads at most 16 claims from the API server at once
    for part in (claims[:8], claims[8:16]):
        answers = prepare(tmp_path, dra, part).claims
        assert [answers[uid].error for _, _, uid in part] == [""] * 8
    err = prepare(tmp_path, dra, claims[16:]).claims[claims[16][2]].error
    assert "16 MPS control daemons run on this node already" in err
    assert unprepare(tmp_path, dra, claims[:1]).claims[claims[0][2]].error == ""
    assert prepare(tmp_path, dra, claims[16:]).claims[claims[16][2]].error == ""
    out = unprepare(tmp_path, dra, claims[1:]).claims
    assert all(r.error == "" for r in out.values())
    assert list((tmp_path / "state" / "dra" / "mps").iterdir()) == []


def test_unprepare_while_the_daemon_comes_up(run, api, protos, tmp_path):
    """The kubelet unprepares a claim whose daemon is still starting: the
    prepare fails with the reason, and nothing is left once both end."""
    import threading
    _, dra = protos
    run(env={"GPULET_MPS_SIM_FAULT": "slow"})
    uid = put_claim(api, "slow", ["gpu-2"], {"apiVersion": API, "kind": "GpuConfig",
                                             "sharing": {"strategy": "MPS"}})
    folder = (tmp_path / "state").resolve() / "dra" / "mps" / uid
    answer = {}
    t = threading.Thread(target=lambda: answer.update(
        r=prepare(tmp_path, dra, [("default", "slow", uid)]).claims[uid]))
    t.start()
    log = folder / "log" / "control.log"
    wait_for(lambda: log.exists() and "Simulated fault" in log.read_text(),
             what="the daemon coming up")
    assert unprepare(tmp_path, dra, [("default", "slow", uid)]).claims[uid].error == ""
    t.join(30)
    assert "was unprepared while" in answer["r"].error
    assert not (tmp_path / "cdi" / f"k8s.gpu.nvidia.com-claim_{uid}.yaml").exists()
    wait_for(lambda: not folder.exists(), timeout=15, what="the claim's folders removed")
    wait_for(lambda: marked(uid) == [], timeout=15, what="the daemon gone")


def fill_beyond_path_max(folder):
    """What a claim's container can leave in its /dev/shm: folders nested
    past PATH_MAX, and files by the thousand."""
    fd = os.open(folder, os.O_RDONLY | os.O_DIRECTORY)
    try:
        for i in range(2000):
            os.close(os.open(f"f{i}", os.O_CREAT | os.O_WRONLY, dir_fd=fd))
        for _ in range(40):  # 40 × 201 bytes: twice PATH_MAX
            os.mkdir("d" * 200, dir_fd=fd)
            deeper = os.open("d" * 200, os.O_RDONLY | os.O_DIRECTORY, dir_fd=fd)
            os.close(fd)
            fd = deeper
        os.close(os.open("bottom", os.O_CREAT | os.O_WRONLY, dir_fd=fd))
    finally:
        os.close(fd)


def test_unprepare_removes_whatever_a_container_left(run, api, protos, tmp_path):
    """The shm folder is the claim's containers' to fill: on unprepare the
    claim's folders leave the MPS folder at once and are removed whole off
    the loop (the slice folders' reaper), links not followed."""
    _, dra = protos
    run()
    uid = put_claim(api, "full", ["gpu-3"], {"apiVersion": API, "kind": "GpuConfig",
                                             "sharing": {"strategy": "MPS"}})
    assert prepare(tmp_path, dra, [("default", "full", uid)]).claims[uid].error == ""
    folder = (tmp_path / "state").resolve() / "dra" / "mps" / uid
    outside = tmp_path / "outside"
    outside.mkdir()
    (outside / "keep").write_text("not the claim's")
    (folder / "shm" / "link").symlink_to(outside)
    fill_beyond_path_max(folder / "shm")
    assert unprepare(tmp_path, dra, [("default", "full", uid)]).claims[uid].error == ""
    assert not folder.exists()
    alloc = (tmp_path / "state").resolve() / "dra" / "alloc"
    wait_for(lambda: not alloc.exists() or list(alloc.iterdir()) == [], timeout=30,
             what="the claim's folders removed")
    assert (outside / "keep").read_text() == "not the claim's"
    assert marked(uid) == []


def test_unprepare_ends_a_daemon_gpulet_did_not_record(run, api, protos, tmp_path):
    """gpulet stopped between starting a claim's daemon and recording the
    claim: the kubelet's unprepare still ends the daemon and removes its
    folders (the checkpoint does not know the claim, its folder does)."""
    import json
    _, dra = protos
    g = run()
    uid = put_claim(api, "lost", ["gpu-4"], {"apiVersion": API, "kind": "GpuConfig",
                                             "sharing": {"strategy": "MPS"}})
    assert prepare(tmp_path, dra, [("default", "lost", uid)]).claims[uid].error == ""
    folder = (tmp_path / "state").resolve() / "dra" / "mps" / uid
    assert g.stop() == 0
    assert alive(folder)
    cp = tmp_path / "state" / "dra-checkpoint.json"
    doc = json.loads(cp.read_text())
    doc["claims"] = [c for c in doc["claims"] if c["uid"] != uid]
    cp.write_text(json.dumps(doc))
    run()
    assert unprepare(tmp_path, dra, [("default", "lost", uid)]).claims[uid].error == ""
    assert not folder.exists()
    assert marked(uid) == []


def policy_file(tmp_path):
    return tmp_path / "t" / f"gpulet-sim-{os.getuid()}-dgx-a100.policy"


def lines_with(g, *words):
    return [line for line in g.text().splitlines() if all(w in line for w in words)]


def test_time_slice_applied_again_after_a_driver_reload(run, api, protos, tmp_path):
    """The time slice lives in the driver: a reboot or a driver reload loses
    it while the checkpoint still holds the claim. The kubelet's prepare of
    the claim sets it again, and so does gpulet's start, without touching
    the compute mode another claim may have set."""
    _, dra = protos
    g = run()
    ids = uuids(api)
    uid = put_claim(api, "again", ["gpu-3"], {
        "apiVersion": API, "kind": "GpuConfig",
        "sharing": {"strategy": "TimeSlicing", "timeSlicingConfig": {"interval": "Long"}}})
    first = prepare(tmp_path, dra, [("default", "again", uid)]).claims[uid]
    assert first.error == ""
    assert policy(tmp_path)[ids["gpu-3"]] == (3, "DEFAULT")

    # the driver reloaded: its settings are gone; the kubelet prepares again
    policy_file(tmp_path).write_text(f"{ids['gpu-3']} timeslice=0 compute_mode=EXCLUSIVE_PROCESS\n")
    assert prepare(tmp_path, dra, [("default", "again", uid)]).claims[uid] == first
    assert policy(tmp_path)[ids["gpu-3"]] == (3, "EXCLUSIVE_PROCESS")

    # gpulet restarts after a driver reload: the interval is back without a prepare
    assert g.stop() == 0
    policy_file(tmp_path).unlink()
    g = run()
    wait_for(lambda: policy(tmp_path).get(ids["gpu-3"]) == (3, "DEFAULT"), timeout=15,
             what="the time slice applied again at start")
    wait_for(lambda: lines_with(g, "GPU sharing of a prepared claim applied again", uid),
             what="the start's log line")
    assert len(lines_with(g, uid, "applied again")) == 1
    assert unprepare(tmp_path, dra, [("default", "again", uid)]).claims[uid].error == ""
    assert policy(tmp_path)[ids["gpu-3"]] == (0, "DEFAULT")


def test_time_slice_that_cannot_be_applied_again(run, api, protos, tmp_path):
    """nvidia-smi failing after a restart: one log line for the claim (of
    two GPUs), the claim's prepare fails with the reason and keeps the claim,
    and succeeds once nvidia-smi works again. A prepared MPS claim keeps its
    running daemon meanwhile."""
    _, dra = protos
    g = run()
    ids = uuids(api)
    uid = put_claim(api, "broken", ["gpu-3", "gpu-4"], {
        "apiVersion": API, "kind": "GpuConfig",
        "sharing": {"strategy": "TimeSlicing", "timeSlicingConfig": {"interval": "Medium"}}})
    first = prepare(tmp_path, dra, [("default", "broken", uid)]).claims[uid]
    assert first.error == ""
    shared = put_claim(api, "shared", ["gpu-5"], {"apiVersion": API, "kind": "GpuConfig",
                                                  "sharing": {"strategy": "MPS"}})
    assert prepare(tmp_path, dra, [("default", "shared", shared)]).claims[shared].error == ""
    folder = (tmp_path / "state").resolve() / "dra" / "mps" / shared
    assert g.stop() == 0
    # nvidia-smi cannot write its settings: every call of it fails
    policy_file(tmp_path).unlink()
    policy_file(tmp_path).mkdir()
    g = run()
    wait_for(lambda: lines_with(g, "GPU sharing of a prepared claim not applied again", uid),
             timeout=15, what="the start's failure")
    err = prepare(tmp_path, dra, [("default", "broken", uid)]).claims[uid].error
    assert "nvidia-smi" in err and "failed" in err, err
    assert "claim default/broken" in err
    assert len(lines_with(g, uid, "not applied again")) == 1
    assert uid in (tmp_path / "state" / "dra-checkpoint.json").read_text()
    wait_for(lambda: lines_with(g, "not applied again", shared), timeout=15,
             what="the MPS claim's failure")
    assert "nvidia-smi" in prepare(tmp_path, dra, [("default", "shared", shared)]).claims[
        shared].error
    assert alive(folder)
    policy_file(tmp_path).rmdir()
    assert prepare(tmp_path, dra, [("default", "broken", uid)]).claims[uid] == first
    assert policy(tmp_path)[ids["gpu-3"]] == (2, "DEFAULT")
    assert policy(tmp_path)[ids["gpu-4"]] == (2, "DEFAULT")
    assert prepare(tmp_path, dra, [("default", "shared", shared)]).claims[shared].error == ""
    assert policy(tmp_path)[ids["gpu-5"]] == (0, "EXCLUSIVE_PROCESS")
    assert (folder / "log" / "control.log").read_text().count("Startup") == 1
    out = unprepare(tmp_path, dra, [("default", "broken", uid), ("default", "shared", shared)])
    assert [out.claims[u].error for u in (uid, shared)] == ["", ""]
    assert marked(shared) == []


def prepare_mps_claims(api, dra, tmp_path, devices):
    """MPS claims {name: device}, prepared in one call: their UIDs."""
    params = {"apiVersion": API, "kind": "GpuConfig", "sharing": {"strategy": "MPS"}}
    uids = [put_claim(api, name, [dev], params) for name, dev in devices.items()]
    answers = prepare(tmp_path, dra, [("default", n, u) for n, u in zip(devices, uids)])
    assert [answers.claims[u].error for u in uids] == [""] * len(uids)
    return uids


def one_claim_unrecorded(run, api, dra, tmp_path, keep, drop):
    """Two MPS claims (name, device) prepared, gpulet stopped, and drop's
    entry taken out of its checkpoint, as a hand edit or a stop between a
    daemon's start and the claim's record leaves it. The UIDs of keep and
    drop, and the MPS folder."""
    import json
    g = run()
    kept, dropped = prepare_mps_claims(api, dra, tmp_path, dict([keep, drop]))
    assert g.stop() == 0
    cp = tmp_path / "state" / "dra-checkpoint.json"
    doc = json.loads(cp.read_text())
    doc["claims"] = [c for c in doc["claims"] if c["uid"] != dropped]
    cp.write_text(json.dumps(doc))
    return kept, dropped, (tmp_path / "state").resolve() / "dra" / "mps"


def test_start_sweeps_mps_folders_the_checkpoint_lacks(run, api, protos, tmp_path):
    """A claim the checkpoint lost (a hand edit here; a crash between the
    daemon's start and the checkpoint) has its daemon ended and its folders
    removed when gpulet starts, with one log line. What gpulet did not
    make in the MPS folder — a link named like a claim, odd names, a plain
    file — and a process carrying a forged mark stay untouched."""
    _, dra = protos
    kept, lost, root = one_claim_unrecorded(run, api, dra, tmp_path, ("kept", "gpu-5"),
                                            ("lost", "gpu-4"))

    outside = tmp_path / "outside"
    (outside / "pipe").mkdir(parents=True)
    (outside / "keep").write_text("not gpulet's")
    link_uid = "0b0b0b0b-0000-4000-8000-000000000001"
    (root / link_uid).symlink_to(outside)
    for odd in ("..odd", "NOT-A-UID", "a" * 70):
        (root / odd).mkdir()
        (root / odd / "keep").write_text("not gpulet's")
    file_uid = "0b0b0b0b-0000-4000-8000-000000000002"
    (root / file_uid).write_text("not a folder")
    forged = subprocess.Popen(["sleep", "120"], env=dict(os.environ, GPULET_MPS_CLAIM=link_uid))
    try:
        g = run()
        wait_for(lambda: not (root / lost).exists(), timeout=20, what="the lost claim's folders")
        wait_for(lambda: marked(lost) == [], timeout=15, what="the lost claim's daemon gone")
        assert len(lines_with(g, "MPS folder of a claim not in the checkpoint swept", lost)) == 1
        assert lines_with(g, "swept") == lines_with(g, "swept", lost)
        assert alive(root / kept)
        assert prepare(tmp_path, dra, [("default", "kept", kept)]).claims[kept].error == ""
        assert forged.poll() is None
        assert (root / link_uid).is_symlink() and (outside / "keep").exists()
        for odd in ("..odd", "NOT-A-UID", "a" * 70):
            assert (root / odd / "keep").read_text() == "not gpulet's"
        assert (root / file_uid).read_text() == "not a folder"
        assert unprepare(tmp_path, dra, [("default", "kept", kept)]).claims[kept].error == ""
        assert marked(kept) == []
    finally:
        forged.kill()
        forged.wait()


def test_a_forged_mark_in_a_pod_is_never_signalled(run, api, protos, tmp_path):
    """A container's process that sets GPULET_MPS_CLAIM to a claim's UID
    lives in a PID namespace of its own: when gpulet ends that claim's
    daemon by force, the forged process is left alone."""
    _, dra = protos
    probe = subprocess.run(["unshare", "--pid", "--fork", "true"], capture_output=True)
    if probe.returncode != 0:
        pytest.skip("a process in a PID namespace of its own (as a pod's) needs "
                    f"CAP_SYS_ADMIN: {probe.stderr.decode().strip()}")
    run(env={"GPULET_MPS_SIM_FAULT": "deaf"})
    uid = put_claim(api, "forged", ["gpu-6"], {"apiVersion": API, "kind": "GpuConfig",
                                               "sharing": {"strategy": "MPS"}})
    assert prepare(tmp_path, dra, [("default", "forged", uid)]).claims[uid].error == ""
    daemons = set(marked(uid))
    assert daemons
    # only the sleep carries the mark, not unshare (in this namespace)
    pod = subprocess.Popen(["unshare", "--pid", "--fork", "env", f"GPULET_MPS_CLAIM={uid}",
                            "sleep", "120"])
    try:
        wait_for(lambda: len(marked(uid)) == len(daemons) + 1, what="the forged process")
        forged = set(marked(uid)) - daemons
        err = unprepare(tmp_path, dra, [("default", "forged", uid)]).claims[uid].error
        assert "5000 ms" in err, err  # the daemon did not quit: ended by force
        assert set(marked(uid)) == forged
        assert pod.poll() is None
    finally:
        for pid in set(marked(uid)) - daemons:
            os.kill(int(pid), 9)
        pod.kill()
        pod.wait()


def test_start_sweep_leaves_a_claim_prepared_meanwhile(run, api, protos, tmp_path):
    """The start's sweep of a claim the checkpoint lacks waits behind the
    prepared claims' jobs; when the kubelet prepares that claim meanwhile,
    the prepare takes its running daemon and folders over and the sweep
    leaves them (no line, no daemon ended)."""
    import threading
    _, dra = protos
    first, late, root = one_claim_unrecorded(run, api, dra, tmp_path, ("first", "gpu-1"),
                                             ("late", "gpu-2"))
    # the prepared claim's daemon ended: at start it comes up only when released
    mps(root / first, "quit")
    wait_for(lambda: not alive(root / first), what="the first daemon gone")
    g = run(env={"GPULET_MPS_SIM_FAULT": "hold"})
    log = root / first / "log" / "control.log"
    wait_for(lambda: "comes once" in log.read_text(), what="the first daemon held")
    gets = api.count("GET", "/apis/resource.k8s.io/v1/namespaces/default/resourceclaims/late")
    answer = {}
    t = threading.Thread(target=lambda: answer.update(
        r=prepare(tmp_path, dra, [("default", "late", late)]).claims[late]))
    t.start()
    try:
        wait_for(lambda: api.count(
            "GET", "/apis/resource.k8s.io/v1/namespaces/default/resourceclaims/late") > gets,
            what="the late claim read")
    finally:
        (root / first / "log" / "release").write_text("")
        t.join(30)
    assert answer["r"].error == ""
    # a prepare of the first claim queues behind the sweep: once answered, it ran
    assert prepare(tmp_path, dra, [("default", "first", first)]).claims[first].error == ""
    assert lines_with(g, "swept") == []
    assert alive(root / late)
    assert (root / late / "log" / "control.log").read_text().count("Startup") == 1
    out = unprepare(tmp_path, dra, [("default", "first", first), ("default", "late", late)])
    assert [out.claims[u].error for u in (first, late)] == ["", ""]
    assert marked(first) == [] and marked(late) == []


def held_at_start(run, api, dra, tmp_path, devices):
    """MPS claims {name: device} prepared, gpulet stopped, the first one's
    daemon ended, and gpulet started again with the simulated daemon held
    (its start job waits until released). The UIDs, the MPS folder, gpulet."""
    g = run()
    uids = prepare_mps_claims(api, dra, tmp_path, devices)
    assert g.stop() == 0
    root = (tmp_path / "state").resolve() / "dra" / "mps"
    mps(root / uids[0], "quit")
    wait_for(lambda: not alive(root / uids[0]), what="the first daemon gone")
    g = run(env={"GPULET_MPS_SIM_FAULT": "hold"})
    log = root / uids[0] / "log" / "control.log"
    wait_for(lambda: "comes once" in log.read_text(), what="the start's daemon held")
    return uids, root, g


def test_claim_unprepared_and_prepared_while_its_start_job_runs(run, api, protos, tmp_path):
    """The kubelet unprepares a claim while gpulet's start job for it runs,
    and prepares it again: the unprepare waits for that job and ends its
    daemon, the prepare starts a daemon of its own after both, and nothing
    is left once the claim is unprepared."""
    import threading
    _, dra = protos
    (uid,), root, g = held_at_start(run, api, dra, tmp_path, {"cycled": "gpu-1"})
    log = root / uid / "log" / "control.log"
    answers = {}
    gone = threading.Thread(target=lambda: answers.update(
        u=unprepare(tmp_path, dra, [("default", "cycled", uid)]).claims[uid]))
    gone.start()
    wait_for(lambda: lines_with(g, "claim unprepared", uid), what="the claim let go")
    path = "/apis/resource.k8s.io/v1/namespaces/default/resourceclaims/cycled"
    gets = api.count("GET", path)
    back = threading.Thread(target=lambda: answers.update(
        p=prepare(tmp_path, dra, [("default", "cycled", uid)]).claims[uid]))
    back.start()
    try:
        wait_for(lambda: api.count("GET", path) > gets, what="the claim read again")
        (root / uid / "log" / "release").write_text("")
        gone.join(30)
        assert answers["u"].error == ""
        # the prepare's own daemon, in folders made anew, is held in turn
        wait_for(lambda: log.exists() and "comes once" in log.read_text(),
                 what="the prepare's daemon held")
    finally:
        (root / uid / "log").mkdir(parents=True, exist_ok=True)
        (root / uid / "log" / "release").write_text("")
        back.join(30)
    assert answers["p"].error == ""
    assert alive(root / uid)
    assert log.read_text().count("Startup") == 1
    assert unprepare(tmp_path, dra, [("default", "cycled", uid)]).claims[uid].error == ""
    assert marked(uid) == []
    assert g.stop() == 0
    assert "Sanitizer" not in g.text()


def test_stopped_while_a_start_job_runs(run, api, protos, tmp_path):
    """SIGTERM while the start's job for a claim runs: gpulet stops at once,
    cleanly, and its next start brings the claim's daemon up and answers."""
    _, dra = protos
    (held, other), root, g = held_at_start(run, api, dra, tmp_path,
                                           {"held": "gpu-1", "other": "gpu-2"})
    assert g.stop() == 0
    assert "Sanitizer" not in g.text()
    (root / held / "log" / "release").write_text("")
    g = run()
    wait_for(lambda: alive(root / held), timeout=20, what="the held claim's daemon")
    answers = prepare(tmp_path, dra, [("default", "held", held), ("default", "other", other)])
    assert [answers.claims[u].error for u in (held, other)] == ["", ""]
    out = unprepare(tmp_path, dra, [("default", "held", held), ("default", "other", other)])
    assert [out.claims[u].error for u in (held, other)] == ["", ""]
    assert marked(held) == [] and marked(other) == []
