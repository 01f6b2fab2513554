"""Times what the kubelet waits for: from kubelet.sock re-created to every
resource registered again, and from an injected XID to the device being
Unhealthy on the ListAndWatch stream. Prints p50 / max in milliseconds.

    /usr/bin/python3 bench/kubelet_timings.py BUILD_DIR [ROUNDS]
"""
import os
import pathlib
import signal
import statistics
import subprocess
import sys
import tempfile
import time

sys.path.insert(0, str(pathlib.Path(__file__).resolve().parents[1] / "tests" / "integration"))
from kubelet import Kubelet, load_protos, wait_for  # noqa: E402

import yaml  # noqa: E402


def main():
    build = pathlib.Path(sys.argv[1] if len(sys.argv) > 1 else "build").resolve()
    rounds = int(sys.argv[2]) if len(sys.argv) > 2 else 20
    tmp = pathlib.Path(tempfile.mkdtemp(prefix="gpulet-bench-"))
    dp, dp_grpc = load_protos(tmp / "protos")
    state = tmp / "state.yaml"
    state.write_text("events: []\n")
    kubelet = Kubelet(tmp / "dp", dp, dp_grpc)
    env = dict(os.environ, GPULET_SIM_STATE=str(state))
    proc = subprocess.Popen([str(build / "gpulet"), "--simulate", "dgx-a100", "run",
                             "--device-plugin-dir", str(tmp / "dp"), "--no-metrics", "--no-labels"], env=env,
                            stderr=subprocess.DEVNULL)
    try:
        kubelet.resource("nvidia.com/gpu")
        register = []
        for _ in range(rounds):
            before = len(kubelet.registrations)
            kubelet.restart()
            start = time.monotonic()
            wait_for(lambda: len(kubelet.registrations) > before, timeout=10)
            register.append((kubelet.registrations[before][0] - start) * 1000)
            kubelet.resource("nvidia.com/gpu")
        xid = []
        events = []
        for gpu, uuid in enumerate(node_uuids()):
            events.append({"gpu": gpu, "xid": 79})
            tmp_state = state.with_suffix(".tmp")
            tmp_state.write_text(yaml.safe_dump({"events": events}))
            start = time.monotonic()
            os.replace(tmp_state, state)
            wait_for(lambda: kubelet.devices("nvidia.com/gpu")[uuid][0] == "Unhealthy",
                     timeout=10, interval=0.001)
            xid.append((time.monotonic() - start) * 1000)
        print(f"{'what':<44} {'rounds':>6} {'p50 ms':>8} {'max ms':>8}")
        print(f"{'kubelet.sock re-created -> registered':<44} {len(register):>6} "
              f"{statistics.median(register):>8.1f} {max(register):>8.1f}")
        print(f"{'XID injected -> Unhealthy on the stream':<44} {len(xid):>6} "
              f"{statistics.median(xid):>8.1f} {max(xid):>8.1f}")
    finally:
        proc.send_signal(signal.SIGTERM)
        proc.wait(timeout=10)
        kubelet.stop()


def node_uuids():
    node = yaml.safe_load((pathlib.Path(__file__).resolve().parents[1] / "sim" / "nodes" /
                           "dgx-a100.yaml").read_text())
    return [g["uuid"] for g in node["gpus"]]


if __name__ == "__main__":
    main()
