"""GPU slices that hold, the node's side (issue #23): usage figures a
container writes are clamped before /metrics shows them; removing a gone
pod's flooded state folder never stalls the device plugin; slices are cut
from the memory a GPU can hand out, so a packed GPU gives every slice its
limit."""
import os
import re
import signal
import struct
import subprocess
import time

import pytest

from conftest import ROOT, load_node
from kubelet import Kubelet, load_protos, wait_for
from test_device_plugin import Daemon
from test_metrics import pod, pod_server
from test_slices import scrape
from test_slices_cuda import CONFIG, CTX, MIB, RESOURCE  # GPU 2 of the T4 in quarters

RULES = ROOT / "deploy" / "prometheus" / "gpulet-rules.yaml"


@pytest.fixture(scope="module")
def pr(tmp_path_factory):
    load_protos(tmp_path_factory.mktemp("protos"))
    from podresources.v1 import api_pb2  # noqa: E402
    return api_pb2


class Node:
    """gpulet on a simulated T4 node (sim: its name or a node file) with
    this config, metrics on, a pod-resources server answering what the
    test puts in .resp, and the Python kubelet."""

    def __init__(self, build, tmp_path, pr, config=CONFIG, sim="t4-pcie"):
        self.resp = pr.ListPodResourcesResponse()
        self.calls = []
        self.server = pod_server(pr, tmp_path / "pr.sock", self.resp, calls=self.calls)
        self.kubelet = Kubelet(tmp_path / "dp", *load_protos(tmp_path / "protos"))
        (tmp_path / "config.yaml").write_text(config)
        env = {k: v for k, v in os.environ.items()
               if not k.startswith(("GPULET_", "DCGM_")) and k not in
               ("CONFIG_FILE", "DEVICE_LIST_STRATEGY", "DEVICE_ID_STRATEGY")}
        self.d = Daemon(build, ["--simulate", sim, "run", "--device-plugin-dir", tmp_path / "dp",
                                "--no-labels", "--config-file", tmp_path / "config.yaml",
                                "--state-dir", tmp_path / "state",
                                "--cuda-interposer", build / "libgpulet-cuda.so",
                                "--metrics-address", "127.0.0.1:0", "--collect-interval", "1000",
                                "--pod-resources-socket", tmp_path / "pr.sock"], env,
                        tmp_path / "gpulet.log")
        self.kubelet.resource(RESOURCE)
        self.kubelet.resource("nvidia.com/gpu")
        self.uuid = load_node("t4-pcie")["gpus"][2]["uuid"]

    def relist(self):
        """An Allocate makes gpulet ask pod-resources again soon."""
        listed = len(self.calls)
        self.kubelet.allocate("nvidia.com/gpu", [load_node("t4-pcie")["gpus"][0]["uuid"]])
        wait_for(lambda: len(self.calls) > listed, what="pod-resources listed")

    def port(self):
        return int(wait_for(lambda: re.search(r'msg="serving metrics".* port=(\d+)',
                                               self.d.text()), what="the metrics port").group(1))

    def stop(self):
        self.d.stop()  # SIGTERM: a killed gpulet would leave its simulated sysfs behind
        self.kubelet.stop()
        self.server.stop(0)


@pytest.fixture
def node(build, tmp_path, pr):
    n = Node(build, tmp_path, pr)
    yield n
    n.stop()


def cuda_env(build, tmp_path, state_dir, limit, context=None,
             sim=ROOT / "sim" / "nodes" / "t4-pcie.yaml"):
    """cudaprog on the simulated driver under the interposer, on GPU 2,
    with the limits an Allocate answer gave."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("GPULET_CUDA_")}
    if context:
        env["GPULET_CUDA_CONTEXT_SIZE"] = str(context)
    env.update({
        "GPULET_SIM_NODE": str(sim),
        "GPULET_SIM_DEVICE_STATE": str(tmp_path / "node.device"),
        "LD_LIBRARY_PATH": str(build / "sim" / "current"),
        "LD_PRELOAD": str(build / "libgpulet-cuda.so"),
        "ASAN_OPTIONS": "verify_asan_link_order=0:detect_leaks=0",
        "CUDA_VISIBLE_DEVICES": "2",
        "GPULET_CUDA_STATE_DIR": str(state_dir),
        "GPULET_CUDA_MEMORY_LIMIT_0": str(limit),
    })
    return env


def promtool_alerts(tmp_path, series, alert):
    """The alerts `alert` of the project's rules fires at 2 minutes over
    these series (name{labels} -> value, held constant), by promtool."""
    lines = ["rule_files:", f"- {RULES}", "evaluation_interval: 15s", "tests:",
             "- interval: 15s", "  input_series:"]
    for name, value in series.items():
        lines += [f"  - series: '{name}'", f"    values: '{value}+0x10'"]
    lines += ["  alert_rule_test:", "  - eval_time: 2m", f"    alertname: {alert}",
              "    exp_alerts: []"]
    path = tmp_path / "alerts.test.yaml"
    path.write_text("\n".join(lines) + "\n")
    r = subprocess.run(["promtool", "test", "rules", str(path)], capture_output=True, text=True)
    return r.returncode != 0 and alert in r.stdout + r.stderr


def test_usage_a_container_writes_is_clamped(build, node, pr, tmp_path):
    """Issue #23 item 7: a container writes its own state file; one saying
    16 EiB showed 16 EiB for its pod and fired GPUMemoryAlmostFull for the
    whole GPU. The figure is shown as its limit, counted, and logged once
    per listing, not once per scrape."""
    prog = build / "tests" / "cudaprog"
    if not prog.exists():
        pytest.fail(f"{prog} is missing: run `make`")
    ids = [f"{node.uuid}::s0"]
    answer = node.kubelet.allocate(RESOURCE, ids).container_responses[0]
    state = next(m.host_path for m in answer.mounts if m.container_path == "/run/gpulet/cuda")
    quarter = int(re.search(r"GPULET_CUDA_MEMORY_LIMIT_0=(\d+)", open(next(
        m.host_path for m in answer.mounts if m.container_path == "/etc/gpulet/cuda-limits"))
        .read()).group(1))
    # a real state file, written by the interposer for a process holding 256 MiB
    hold = subprocess.Popen([str(prog), "direct", f"alloc:{256 * MIB}", "hold"],
                            env=cuda_env(build, tmp_path, state, quarter),
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    try:
        wait_for(lambda: hold.stdout.readline() in ("holding\n", ""), what="cudaprog holding")
        assert hold.poll() is None, hold.stderr.read()
        files = [f for f in os.listdir(state) if f.upper().endswith(node.uuid[4:].upper())]
        assert len(files) == 1, os.listdir(state)
        # the container makes its figure 16 EiB: every place that held its true usage
        path = os.path.join(state, files[0])
        data = bytearray(open(path, "rb").read())
        true_used = struct.pack("<Q", 64 * MIB + 256 * MIB)
        assert true_used in data
        data = data.replace(true_used, struct.pack("<Q", (1 << 64) - 1))
        with open(path, "r+b") as f:
            f.write(data)

        node.resp.pod_resources.append(pod(pr, "big", "team", "main", RESOURCE, ids))
        port = node.port()
        node.relist()
        labels = f'{{gpu="2",UUID="{node.uuid}",pod="big",namespace="team",container="main"}}'
        body = wait_for(lambda: (lambda b: b if f"gpulet_container_memory_used_bytes{labels}"
                                 in b else None)(scrape(port)), what="the container's usage")
        assert f"gpulet_container_memory_used_bytes{labels} {quarter}\n" in body
        fb = re.search(r'DCGM_FI_DEV_FB_USED\{gpu="2",[^}]*pod="big"[^}]*\} (\S+)', body)
        assert fb and int(fb.group(1)) == quarter // MIB, body
        # scraped many times over several listings: one log line per listing
        for _ in range(2):
            for _ in range(30):
                scrape(port)
            node.relist()
        # relist() returns when the kubelet got the call, before gpulet has
        # read the answer, and gpulet lists on its own every 10 s too: the
        # log first, then the count (a scrape sees a listing's count and
        # line both or neither), until no listing came in between
        def settled():
            lines = re.findall(r".*usage above its limit.*", node.d.text())
            body = scrape(port)
            clamped = int(re.search(r"gpulet_container_memory_used_clamped_total (\d+)", body)
                          .group(1))
            return clamped >= 3 and len(lines) == clamped and (clamped, lines, body)
        clamped, lines, body = wait_for(settled, what="the third listing read, logged once")
        assert clamped <= len(node.calls)
        assert f"first_read={(1 << 64) - 1} first_shown={quarter}" in lines[0]
        assert f"gpulet_container_memory_used_bytes{labels} {quarter}\n" in body

        # GPUMemoryAlmostFull over what /metrics shows for GPU 2, and over
        # the same with the raw figure: only the raw one fires
        shown = {}
        for m in re.finditer(r'^(DCGM_FI_DEV_FB_(?:USED|FREE)\{gpu="2",[^}]*\}) (\S+)$', body,
                             re.M):
            shown[m.group(1)] = m.group(2)
        assert len(shown) == 2, shown
        assert not promtool_alerts(tmp_path, shown, "GPUMemoryAlmostFull")
        raw = {k: (str(((1 << 64) - 1) >> 20) if "FB_USED" in k else v) for k, v in shown.items()}
        assert promtool_alerts(tmp_path, raw, "GPUMemoryAlmostFull")
    finally:
        hold.kill()
        hold.wait()


def flood(state, victim):
    """What a hostile container leaves in its state folder: 100,000 files,
    links to a folder and a file outside, and a chain of 40 nested folders
    with a link at its bottom."""
    for k in range(100000):
        os.close(os.open(os.path.join(state, f"f{k:06}"), os.O_CREAT | os.O_WRONLY, 0o644))
    os.symlink(victim, os.path.join(state, "dir-link"))
    os.symlink(victim / "keep", os.path.join(state, "file-link"))
    deep = state
    for _ in range(40):
        deep = os.path.join(deep, "d")
        os.mkdir(deep)
    os.symlink(victim, os.path.join(deep, "link"))


def test_removing_a_flooded_folder_never_stalls_the_plugin(node, pr, tmp_path):
    """Issue #23 item 6: a gone pod's state folder holding 100,000 entries
    was removed in one go on the event loop, and every kubelet call waited
    3-5 s behind it. It is now taken out of use at once (a rename) and
    removed by a thread of its own: kubelet calls made all through the
    removal are about as quick as the same calls before it (a bound loose
    enough for a loaded machine, far under the seconds of a stall).
    Nothing outside the folder is followed."""
    ids = [f"{node.uuid}::s0"]
    answer = node.kubelet.allocate(RESOURCE, ids).container_responses[0]
    state = next(m.host_path for m in answer.mounts if m.container_path == "/run/gpulet/cuda")
    folder = os.path.dirname(state)
    victim = tmp_path / "victim"
    victim.mkdir()
    (victim / "keep").write_text("outside the folder")
    flood(state, victim)
    old = time.time() - 120  # past the grace a new folder gets
    os.utime(os.path.join(folder, "devices"), (old, old))

    others = sorted(s for s in node.kubelet.devices(RESOURCE) if s not in ids)

    def call():
        t = time.monotonic()
        assert len(node.kubelet.preferred(RESOURCE, others, [], 1)) == 1
        return time.monotonic() - t

    before = [call() for _ in range(200)]
    node.relist()  # pod-resources lists nobody: the folder goes
    wait_for(lambda: not os.path.exists(folder), what="the folder taken out of use")
    alloc = os.path.dirname(folder)
    during = []
    deadline = time.monotonic() + 300
    while os.listdir(alloc) and time.monotonic() < deadline:
        during.append(call())
    assert os.listdir(alloc) == [], "the folder was not removed within 300 s"
    print(f"{len(during)} calls during the removal: longest {max(during):.3f} s; "
          f"before it: longest {max(before):.3f} s")
    # the calls made all through the removal, against the same calls before it
    assert len(during) >= 20, len(during)
    assert max(during) <= max(0.5, 3 * max(before)), (max(during), max(before))
    line = wait_for(lambda: re.search(r".*slice allocation folders reaped.*", node.d.text()),
                    what="the removal's log line").group(0)
    fields = dict(re.findall(r"(\w+)=(\d+)", line))
    assert int(fields["entries"]) >= 100000
    assert (victim / "keep").read_text() == "outside the folder"
    assert node.d.proc.poll() is None


def fill_every_slice(build, node, tmp_path, sim, context):
    """A process per slice of GPU 2, each taking its limit less one context
    and holding it, all at once. Returns the processes, their limits and
    state folders, and each one's output up to its holding."""
    prog = build / "tests" / "cudaprog"
    slices = sorted(node.kubelet.devices(RESOURCE))
    assert len(slices) == 4
    held, limits, states, outs = [], [], [], []
    for s in slices:
        answer = node.kubelet.allocate(RESOURCE, [s]).container_responses[0]
        env = dict(answer.envs)
        limit = int(env["GPULET_CUDA_MEMORY_LIMIT_0"])
        assert int(env.get("GPULET_CUDA_CONTEXT_SIZE", CTX)) == context
        state = next(m.host_path for m in answer.mounts if m.container_path == "/run/gpulet/cuda")
        p = subprocess.Popen([str(prog), "direct", f"alloc:{limit - context}", "hold"],
                             env=cuda_env(build, tmp_path, state, limit,
                                          env.get("GPULET_CUDA_CONTEXT_SIZE"), sim),
                             stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
        held.append(p)
        out = []
        while not out or out[-1] not in ("holding\n", ""):
            out.append(p.stdout.readline())
        limits.append(limit)
        states.append(state)
        outs.append(out)
    return held, limits, states, outs


def test_a_packed_gpu_gives_every_slice_its_limit(build, node, tmp_path):
    """Issue #23 item 11: slices were cut from the GPU's whole memory, so on
    a GPU packed with them the last could not have its limit: the driver
    (not the interposer) refused it, its reserved memory being gone. Cut
    from what the driver can hand out, every slice's program holds its
    limit less its context at once, and the interposer, not the driver,
    refuses a byte more."""
    prog = build / "tests" / "cudaprog"
    usable = (15360 - 257) * MIB  # the T4's memory less what its driver reserves
    held = []
    try:
        held, limits, states, outs = fill_every_slice(build, node, tmp_path,
                                                      ROOT / "sim" / "nodes" / "t4-pcie.yaml", CTX)
        for limit, out in zip(limits, outs):
            assert "alloc rc=0 bytes=%d\n" % (limit - CTX) in out, outs
        assert len(set(limits)) == 1 and 4 * limits[0] <= usable < 4 * limits[0] + 4 * MIB
        # full: another process of a slice is refused by the interposer (its
        # context does not fit the limit), not by the driver
        r = subprocess.run([str(prog), "direct", "alloc:1"],
                           env=cuda_env(build, tmp_path, states[0], limits[0]),
                           capture_output=True, text=True, timeout=60)
        assert re.search(r"\brc=2\b", r.stdout), r.stdout + r.stderr  # CUDA_ERROR_OUT_OF_MEMORY
        assert "gpulet-cuda: memory limit reached" in r.stderr, r.stderr
    finally:
        for p in held:
            p.kill()
            p.wait()


REAL_CTX = 300 * MIB  # closer to what a real T4's context takes than the default


def test_slices_hold_contexts_as_big_as_real_ones(build, tmp_path, pr):
    """A real context takes a few hundred MiB, more than the interposer's
    default charge (64 MiB): on a simulated T4 whose contexts take 300 MiB,
    a packed GPU runs out in the driver first, unless contextMemory tells
    gpulet (and through the limits file the interposer) what they take;
    then every slice again holds its limit less its context at once."""
    sim = tmp_path / "t4-real-contexts.yaml"
    sim.write_text((ROOT / "sim" / "nodes" / "t4-pcie.yaml").read_text() +
                   f"\ncontext_mib: {REAL_CTX // MIB}\n")
    told = CONFIG.replace("      replicas: 4\n",
                          f"      replicas: 4\n      contextMemory: {REAL_CTX // MIB}Mi\n")
    for config, context, fits in ((CONFIG, CTX, False), (told, REAL_CTX, True)):
        run = tmp_path / str(context)
        run.mkdir()
        node = Node(build, run, pr, config=config, sim=sim)
        held = []
        try:
            held, limits, _, outs = fill_every_slice(build, node, run, sim, context)
            ok = ["alloc rc=0 bytes=%d\n" % (limit - context) in out
                  for limit, out in zip(limits, outs)]
            if fits:
                assert all(ok), outs
                limits_file = (tmp_path / str(context) / "state" / "alloc").iterdir()
                assert any(f"GPULET_CUDA_CONTEXT_SIZE={REAL_CTX}\n" in (d / "limits").read_text()
                           for d in limits_file)
            else:
                # the last slice's memory went to the others' uncounted context costs
                assert ok[:3] == [True] * 3 and ok[3] is False, outs
                held[3].kill()
                assert "memory limit reached" not in held[3].communicate()[1]  # the driver refused
        finally:
            for p in held:
                p.kill()
                p.wait()
            node.stop()
