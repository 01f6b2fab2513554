"""dra.deviceTaints: an unhealthy device stays in the ResourceSlice with a
taint (DRADeviceTaints), keyed as NVIDIA's driver keys them, removed after
the recovery period; an API server that drops the field (its gate off)
gets the device left out instead, so a sick device never stays
allocatable."""
import os
import time

import yaml

from kubelet import wait_for
from test_cdi import driver_root  # noqa: F401 (run_gpulet uses it)
from test_dra import api, certs, devices_of, run_gpulet  # noqa: F401


def start(run_gpulet, tmp_path, taints=True):
    """gpulet on a T4 node, health events from a state file; the file."""
    state = tmp_path / "state.yaml"
    state.write_text(yaml.safe_dump({"events": []}))
    config = tmp_path / "config.yaml"
    config.write_text(yaml.safe_dump({"version": "v1", "dra": {"deviceTaints": taints}}))
    g = run_gpulet("t4-pcie", extra=["--health-recovery-period", "2s", "--config-file",
                                     str(config)], state=state)
    return g, state


def inject(tmp_path, state, events):
    tmp = tmp_path / "state.tmp"
    tmp.write_text(yaml.safe_dump({"events": events}))
    os.replace(tmp, state)


def test_xid_taints_the_device(run_gpulet, api, tmp_path):
    g, state = start(run_gpulet, tmp_path)
    api.wait_for(lambda: api.slices and api.watchers, what="a slice and a watch")
    everything = sorted(devices_of(list(api.slices.values())))
    assert "gpu-1" in everything

    def devs():
        return devices_of(list(api.slices.values())) if api.slices else {}

    # Seen tainted at all, it was published within the 2 s recovery period; a
    # tighter wall-clock bound fails on a loaded machine.
    # The devices as seen tainted: the taint goes 2 s later, so a second
    # look at the API server may find it gone on a loaded machine.
    inject(tmp_path, state, [{"gpu": 0, "xid": 31}, {"gpu": 1, "xid": 79}])
    seen = api.wait_for(lambda: "taints" in devs().get("gpu-1", {}) and devs(), timeout=5,
                        what="gpu-1 tainted")
    assert sorted(seen) == everything  # still published
    (taint,) = seen["gpu-1"]["taints"]
    assert {k: taint[k] for k in ("key", "value", "effect")} == {
        "key": "gpu.nvidia.com/xid", "value": "79", "effect": "NoSchedule"}
    added = time.strptime(taint["timeAdded"], "%Y-%m-%dT%H:%M:%SZ")
    assert abs(time.mktime(added) - time.mktime(time.gmtime())) < 60
    assert not [n for n, d in seen.items() if n != "gpu-1" and "taints" in d]  # XID 31: ignored
    assert "device tainted in the ResourceSlice" in g.text()
    api.wait_for(lambda: not any("taints" in d for d in devs().values()) and
                 sorted(devs()) == everything, timeout=10,
                 what="the taint gone after the recovery period")
    assert "device taint removed" in g.text()


def test_taints_dropped_by_the_api_server(run_gpulet, api, tmp_path):
    """The gate off: the API server drops the field, gpulet says so once
    and takes the device out of the slice instead."""
    api.device_taints = False
    g, state = start(run_gpulet, tmp_path)
    api.wait_for(lambda: api.slices and api.watchers, what="a slice and a watch")

    def names():
        return sorted(devices_of(list(api.slices.values()))) if api.slices else []

    everything = api.wait_for(names, what="devices")
    inject(tmp_path, state, [{"gpu": 1, "xid": 79}])
    api.wait_for(lambda: api.slices and "gpu-1" not in names(), timeout=5,
                 what="gpu-1 out of the slice")
    wait_for(lambda: "DRADeviceTaints" in g.text(), what="the gate-off warning")
    api.wait_for(lambda: names() == everything, timeout=10, what="gpu-1 back")
    # appended: the simulator delivers what was added since
    inject(tmp_path, state, [{"gpu": 1, "xid": 79}, {"gpu": 2, "xid": 48}])  # said once only
    api.wait_for(lambda: api.slices and "gpu-2" not in names(), timeout=5,
                 what="gpu-2 out of the slice")
    assert g.text().count("DRADeviceTaints") == 1


def test_taints_off_by_default(run_gpulet, api, tmp_path):
    g, state = start(run_gpulet, tmp_path, taints=False)
    api.wait_for(lambda: api.slices and api.watchers, what="a slice and a watch")
    inject(tmp_path, state, [{"gpu": 1, "xid": 79}])
    api.wait_for(lambda: api.slices and "gpu-1" not in devices_of(list(api.slices.values())),
                 timeout=5, what="gpu-1 out of the slice")
    assert "taints" not in str(api.requests) and "tainted" not in g.text()
