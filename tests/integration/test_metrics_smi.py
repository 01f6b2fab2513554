"""The nvidia-smi schema of /metrics (--metrics-schema): nvidia_gpu_exporter's
names, units, labels and help texts from the same sample as the dcgm schema,
checked by promtool on every simulated node and by a real Prometheus."""
import json
import os
import re
import subprocess
import time
import urllib.request

import pytest
from prometheus_client.parser import text_string_to_metric_families

from conftest import ROOT, load_node, write_atomically
from kubelet import wait_for
from test_metrics import Exporter, exporter, pod, pod_server, protos  # noqa: F401 (fixtures)
from test_prometheus import RULES, query, start_prometheus

# the names seen in nvidia_gpu_exporter's published test captures (facts)
REFERENCE = ROOT / "tests" / "integration" / "golden" / "metrics" / "nvidia-smi-names.txt"
# nvidia_gpu_exporter's NVML mode and self metrics add these to the CSV names
NVML_MODE = {"nvidia_smi_pcie_throughput_tx_bytes_per_second",
             "nvidia_smi_pcie_throughput_rx_bytes_per_second",
             "nvidia_smi_xid_last_timestamp_seconds", "nvidia_smi_mig_info",
             "nvidia_smi_mig_memory_used_bytes", "nvidia_smi_mig_memory_total_bytes",
             "nvidia_smi_last_collect_timestamp_seconds",
             "nvidia_smi_last_collect_duration_seconds", "nvidia_smi_energy_joules_total",
             "nvidia_smi_xid_errors_total", "nvidia_smi_clocks_current_graphics_clock_hz",
             "nvidia_smi_remapped_rows_failure", "nvidia_smi_pstate",
             # nvidia-smi query fields of older GPUs, and gpulet's NVLink error counters
             "nvidia_smi_retired_pages_single_bit_ecc_count",
             "nvidia_smi_retired_pages_double_bit_count", "nvidia_smi_retired_pages_pending",
             "nvidia_smi_nvlink_crc_flit_errors_total", "nvidia_smi_nvlink_crc_data_errors_total",
             "nvidia_smi_nvlink_replay_errors_total", "nvidia_smi_nvlink_recovery_errors_total",
             "nvidia_smi_mig_sm_activity_ratio", "nvidia_smi_mig_tensor_activity_ratio"}
# what dashboard 14574 reads (the reference's list) that a simulated H100 has
DASHBOARD_14574 = ["nvidia_smi_gpu_info", "nvidia_smi_index", "nvidia_smi_pstate",
                   "nvidia_smi_temperature_gpu", "nvidia_smi_utilization_gpu_ratio",
                   "nvidia_smi_utilization_memory_ratio", "nvidia_smi_memory_used_bytes",
                   "nvidia_smi_memory_total_bytes", "nvidia_smi_power_draw_watts",
                   "nvidia_smi_enforced_power_limit_watts", "nvidia_smi_power_limit_watts",
                   "nvidia_smi_power_default_limit_watts",
                   "nvidia_smi_clocks_current_graphics_clock_hz",
                   "nvidia_smi_clocks_current_video_clock_hz",
                   "nvidia_smi_clocks_current_sm_clock_hz",
                   "nvidia_smi_clocks_current_memory_clock_hz",
                   "nvidia_smi_clocks_max_graphics_clock_hz",
                   "nvidia_smi_clocks_max_memory_clock_hz",
                   "nvidia_smi_clocks_event_reasons_gpu_idle",
                   "nvidia_smi_clocks_event_reasons_sw_power_cap",
                   "nvidia_smi_clocks_event_reasons_hw_slowdown",
                   "nvidia_smi_clocks_event_reasons_hw_power_brake_slowdown",
                   "nvidia_smi_compute_mode", "nvidia_smi_energy_joules_total",
                   "nvidia_smi_pcie_throughput_tx_bytes_per_second",
                   "nvidia_smi_pcie_throughput_rx_bytes_per_second",
                   # the "Process Collection" panel
                   "nvidia_smi_compute_apps_last_collect_success"]
MIB = 1048576
NODES = sorted(p.stem for p in (ROOT / "sim" / "nodes").glob("*.yaml"))


def parse(body):
    """{name: [(labels, value)]} and {name: (type, help)} of a body."""
    series, meta = {}, {}
    for line in body.splitlines():
        m = re.match(r"# (HELP|TYPE) (\S+) (.*)", line)
        if m:
            meta.setdefault(m.group(2), {})[m.group(1)] = m.group(3)
            continue
        m = re.match(r"(\w+)\{(.*)\} (\S+)$", line) or re.match(r"(\w+)() (\S+)$", line)
        assert m, line
        labels = dict(re.findall(r'(\w+)="((?:[^"\\]|\\.)*)"', m.group(2)))
        series.setdefault(m.group(1), []).append((labels, float(m.group(3))))
    return series, meta


def smi_uuid(uuid):
    return uuid.removeprefix("GPU-").lower()


def test_the_same_sample_in_both_schemas(exporter, tmp_path):
    state = tmp_path / "state.yaml"
    write_atomically(state, "gpus:\n  0:\n    processes:\n      - {pid: %d, used_mib: 2048}\n"
                            "  1: {clock_event_reasons: 68}\n" % os.getpid())
    e = exporter("h100-sxm", "--metrics-schema", "dcgm,nvidia-smi", state=state)
    # the sample has the GPM rates as well (second sample taken)
    wait_for(lambda: "nvidia_smi_pcie_throughput_tx_bytes_per_second{" in e.get()[2],
             what="the PCIe rates")
    _, headers, body = e.get()
    series, meta = parse(body)
    smi = {n for n in series if n.startswith("nvidia_smi_")}
    reference = set(REFERENCE.read_text().split())
    assert smi <= reference | NVML_MODE, smi - reference - NVML_MODE
    assert set(DASHBOARD_14574) <= smi, set(DASHBOARD_14574) - smi
    # help texts: the nvidia-smi field and its unit
    assert meta["nvidia_smi_utilization_gpu_ratio"] == {"HELP": "utilization.gpu [%]",
                                                         "TYPE": "gauge"}
    assert meta["nvidia_smi_memory_used_bytes"]["HELP"] == "memory.used [MiB]"
    assert meta["nvidia_smi_temperature_gpu"]["HELP"] == "temperature.gpu"
    assert meta["nvidia_smi_energy_joules_total"]["TYPE"] == "counter"
    gpus = load_node("h100-sxm")["gpus"]
    uuids = {smi_uuid(g["uuid"]): i for i, g in enumerate(gpus)}
    # every per-GPU series carries the short lower-case uuid and nothing of dcgm's
    for name in smi - {"nvidia_smi_last_collect_success", "nvidia_smi_failed_scrapes_total",
                       "nvidia_smi_compute_apps_last_collect_success",
                       "nvidia_smi_last_collect_timestamp_seconds",
                       "nvidia_smi_last_collect_duration_seconds"}:
        for labels, _ in series[name]:
            assert labels["uuid"] in uuids, (name, labels)
            assert "gpu" not in labels and "UUID" not in labels
    by_gpu = {name: {uuids.get(lab.get("uuid"), lab.get("gpu")): v for lab, v in series[name]}
              for name in series}

    def dcgm(name, i):
        return next(v for lab, v in series[name] if lab["gpu"] == str(i))

    for i in range(len(gpus)):
        assert by_gpu["nvidia_smi_index"][i] == i
        assert by_gpu["nvidia_smi_temperature_gpu"][i] == dcgm("DCGM_FI_DEV_GPU_TEMP", i)
        assert by_gpu["nvidia_smi_utilization_gpu_ratio"][i] == pytest.approx(
            dcgm("DCGM_FI_DEV_GPU_UTIL", i) / 100)
        assert by_gpu["nvidia_smi_memory_used_bytes"][i] == dcgm("DCGM_FI_DEV_FB_USED", i) * MIB
        assert by_gpu["nvidia_smi_power_draw_watts"][i] == dcgm("DCGM_FI_DEV_POWER_USAGE", i)
        assert by_gpu["nvidia_smi_clocks_current_sm_clock_hz"][i] == \
            dcgm("DCGM_FI_DEV_SM_CLOCK", i) * 1e6
        assert by_gpu["nvidia_smi_energy_joules_total"][i] == pytest.approx(
            dcgm("DCGM_FI_DEV_TOTAL_ENERGY_CONSUMPTION", i) / 1000)
        assert by_gpu["nvidia_smi_pcie_throughput_tx_bytes_per_second"][i] == pytest.approx(
            dcgm("DCGM_FI_PROF_PCIE_TX_BYTES", i))
        assert by_gpu["nvidia_smi_power_limit_watts"][i] == 700
        assert by_gpu["nvidia_smi_memory_total_bytes"][i] % MIB == 0
        assert by_gpu["nvidia_smi_pstate"][i] in (0, 8)  # busy P0, idle P8
    # the clock event reasons: 68 = 0x44, sw_power_cap and hw_thermal_slowdown
    assert by_gpu["nvidia_smi_clocks_event_reasons_active"][1] == 68
    assert by_gpu["nvidia_smi_clocks_event_reasons_sw_power_cap"][1] == 1
    assert by_gpu["nvidia_smi_clocks_event_reasons_hw_thermal_slowdown"][1] == 1
    assert by_gpu["nvidia_smi_clocks_event_reasons_gpu_idle"][1] == 0
    info = {lab["uuid"]: lab for lab, _ in series["nvidia_smi_gpu_info"]}
    assert set(info) == set(uuids)
    g0 = info[smi_uuid(gpus[0]["uuid"])]
    assert g0["name"] == "NVIDIA H100 80GB HBM3" and g0["index"] == "0"
    assert g0["compute_cap"] == "9.0" and g0["driver_version"] == load_node(
        "h100-sxm")["driver_version"]
    assert re.fullmatch(r"\d+\.\d", g0["cuda_version"])
    # a process: its memory in bytes, its name from /proc
    apps = series["nvidia_smi_compute_app_used_memory_bytes"]
    assert [(a["uuid"], a["pid"], a["process_name"], v) for a, v in apps] == [
        (smi_uuid(gpus[0]["uuid"]), str(os.getpid()), open("/proc/self/comm").read().strip(),
         2048 * MIB)]
    # the per-process collection read every GPU: one app on GPU 0, an
    # explicit 0 on the others (nvidia_gpu_exporter zero-fills the count)
    assert series["nvidia_smi_compute_apps_last_collect_success"] == [({}, 1)]
    counts = {lab["uuid"]: v for lab, v in series["nvidia_smi_compute_apps"]}
    assert counts == {u: (1 if i == 0 else 0) for u, i in uuids.items()}
    # prometheus_client reads it whole
    assert {f.name for f in text_string_to_metric_families(body)} >= {"nvidia_smi_gpu_info"}


def test_mig_and_xid_series(exporter, tmp_path):
    state = tmp_path / "state.yaml"
    write_atomically(state, "events: []\n")
    e = exporter("a100-mig", "--metrics-schema", "nvidia-smi", state=state)
    early = []

    def watching():  # the health checks watch only after their first look
        early.append("  - {gpu: 0, xid: 13}\n")
        write_atomically(state, "events:\n" + "".join(early))
        return 'xid="13"}' in e.get()[2]

    wait_for(watching, what="the health checks watching")
    before = time.time()
    write_atomically(state, "events:\n" + "".join(early) + "  - {gpu: 1, xid: 79}\n")
    wait_for(lambda: 'xid="79"} 1' in e.get()[2], what="the XID counter")
    series, meta = parse(e.get()[2])
    assert not any(n.startswith("DCGM_") for n in series)
    node = load_node("a100-mig")
    gpus = [{**node.get("gpu_defaults", {}), **g} for g in node["gpus"]]
    u1 = smi_uuid(gpus[1]["uuid"])
    assert meta["nvidia_smi_xid_errors_total"]["TYPE"] == "counter"
    assert ({"uuid": u1, "xid": "79"}, 1) in series["nvidia_smi_xid_errors_total"]
    last = dict((lab["uuid"], v) for lab, v in series["nvidia_smi_xid_last_timestamp_seconds"])
    assert before - 1 <= last[u1] <= time.time() + 1
    migs = [lab for lab, _ in series["nvidia_smi_mig_info"]]
    assert migs and all(re.fullmatch(r"\dc\.\dg\.\d+gb", m["profile"]) for m in migs)
    used = series["nvidia_smi_mig_memory_used_bytes"]
    total = series["nvidia_smi_mig_memory_total_bytes"]
    assert len(used) == len(migs) == len(total)
    for (lab, u), (lab2, t) in zip(used, total):
        assert lab == lab2 and set(lab) == {"uuid", "gpu_instance_id"}
        assert 0 <= u <= t and t % MIB == 0


def test_fabric_state_supported_reasons_and_info_labels(exporter):
    h100 = exporter("h100-sxm", "--metrics-schema", "nvidia-smi")
    a100 = exporter("a100-mig", "--metrics-schema", "nvidia-smi")
    wait_for(lambda: h100.get("/health")[0] == 200 and a100.get("/health")[0] == 200,
             what="the first samples")
    series, meta = parse(h100.get()[2])
    node = load_node("h100-sxm")
    uuids = {smi_uuid(g["uuid"]) for g in node["gpus"]}
    # H100s on NVSwitches: the fabric manager has registered them (3 = completed)
    assert meta["nvidia_smi_fabric_state"]["HELP"] == "fabric.state"
    assert {lab["uuid"]: v for lab, v in series["nvidia_smi_fabric_state"]} == \
        dict.fromkeys(uuids, 3)
    # what the driver can report: the nine reasons 0x1 ... 0x100
    assert {lab["uuid"]: v for lab, v in series["nvidia_smi_clocks_event_reasons_supported"]} \
        == dict.fromkeys(uuids, 0x1FF)
    # vbios from the node file, the subsystem id as nvidia-smi writes it
    for lab, _ in series["nvidia_smi_gpu_info"]:
        assert lab["vbios_version"] == node["gpu_defaults"]["vbios_version"]
        assert lab["pci_sub_device_id"] == "0x16C110DE"
    assert "pci_sub_device_id" in meta["nvidia_smi_gpu_info"]["HELP"]
    # A100s: no fabric state (NVML answers NOT_SUPPORTED), a plausible vbios
    series, _ = parse(a100.get()[2])
    assert "nvidia_smi_fabric_state" not in series
    assert len(series["nvidia_smi_clocks_event_reasons_supported"]) == 2
    for lab, _ in series["nvidia_smi_gpu_info"]:
        assert re.fullmatch(r"92\.00\.[0-9A-F]{2}\.00\.[0-9A-F]{2}", lab["vbios_version"])
        assert lab["pci_sub_device_id"] == "0x134F10DE"


def test_mig_gpm_activity(exporter):
    e = exporter("h100-mig", "--metrics-schema", "dcgm,nvidia-smi")
    wait_for(lambda: "nvidia_smi_mig_tensor_activity_ratio{" in e.get()[2],
             what="the MIG activity (second GPM sample)")
    series, meta = parse(e.get()[2])
    node = load_node("h100-mig")
    gpu = node["gpus"][0]
    assert meta["nvidia_smi_mig_sm_activity_ratio"] == {"HELP": "mig.sm_activity [%]",
                                                         "TYPE": "gauge"}
    sm = {lab["gpu_instance_id"]: v for lab, v in series["nvidia_smi_mig_sm_activity_ratio"]}
    tensor = {lab["gpu_instance_id"]: v
              for lab, v in series["nvidia_smi_mig_tensor_activity_ratio"]}
    gis = {str(m["gpu_instance_id"]): m["slices"] for m in gpu["mig_devices"]}
    assert set(sm) == set(tensor) == set(gis)
    assert all(lab["uuid"] == smi_uuid(gpu["uuid"])
               for lab, _ in series["nvidia_smi_mig_sm_activity_ratio"])
    # the simulated GPU is busy: each instance in proportion to its slices
    for gi, slices in gis.items():
        assert 0 < tensor[gi] < sm[gi] <= 1
    assert sm["2"] > sm["3"] > sm["9"]
    # the dcgm schema keeps dcgm-exporter's whole-GPU profiling series
    assert [lab.get("GPU_I_ID") for lab, _ in series["DCGM_FI_PROF_PIPE_TENSOR_ACTIVE"]] == [None]


@pytest.mark.parametrize("node", NODES)
def test_promtool_checks_both_schemas(build, tmp_path, node):
    e = Exporter(build, node, tmp_path, ["--metrics-schema", "dcgm,nvidia-smi"])
    try:
        wait_for(lambda: e.get("/health")[0] == 200 or "gpus=0" in e.text(),
                 what="the first sample")
        wait_for(lambda: "gpulet_sample_age_seconds" in e.get()[2], what="a sample")
        body = e.get()[2]
        check = subprocess.run(["promtool", "check", "metrics"], input=body,
                               capture_output=True, text=True)
        out = check.stdout + check.stderr
        assert "error while linting" not in out, out
        # dcgm-exporter's names break the naming lints; nvidia_smi_* must not,
        # but for the two names nvidia-smi's own fields give ("….count")
        lints = [l for l in out.splitlines() if l.startswith("nvidia_smi_")]
        assert all(l.startswith(("nvidia_smi_retired_pages_single_bit_ecc_count ",
                                 "nvidia_smi_retired_pages_double_bit_count "))
                   and '"_count" suffix' in l for l in lints), out
        if load_node(node).get("gpus"):
            assert "nvidia_smi_gpu_info{" in body and "DCGM_FI_DEV_GPU_TEMP{" in body
    finally:
        assert e.stop() == 0, e.text()


def test_schema_option(build, tmp_path):
    bad = subprocess.run([str(build / "gpulet"), "--simulate", "t4-pcie", "run",
                          "--metrics-schema", "prometheus"], capture_output=True, text=True,
                         timeout=30)
    assert bad.returncode == 2
    assert "--metrics-schema: the metrics schema must be dcgm, nvidia-smi or dcgm,nvidia-smi, " \
           "not 'prometheus'" in bad.stderr
    for value in ("dcgm,", ",nvidia-smi", "nvidia_smi", ""):
        r = subprocess.run([str(build / "gpulet"), "--simulate", "t4-pcie", "run",
                            "--metrics-schema", value], capture_output=True, text=True, timeout=30)
        assert r.returncode == 2, value
    # the environment, and the default
    e = Exporter(build, "t4-pcie", tmp_path, env={"GPULET_METRICS_SCHEMA": "nvidia-smi"})
    d = Exporter(build, "t4-pcie", tmp_path)
    try:
        wait_for(lambda: e.get("/health")[0] == 200 and d.get("/health")[0] == 200,
                 what="the first samples")
        body = e.get()[2]
        assert "nvidia_smi_temperature_gpu{" in body and "DCGM_" not in body
        assert "schema=nvidia-smi" in e.text()
        body = d.get()[2]
        assert "nvidia_smi_" not in body and "DCGM_FI_DEV_GPU_TEMP{" in body
    finally:
        assert e.stop() == 0 and d.stop() == 0


def test_prometheus_scrapes_the_nvidia_smi_schema(build, tmp_path, protos):  # noqa: F811
    pr = protos
    node = load_node("h100-sxm")
    uuid = node["gpus"][0]["uuid"]
    pods = pod_server(pr, tmp_path / "pr.sock", pr.ListPodResourcesResponse(
        pod_resources=[pod(pr, "llm-0", "serving", "engine", "nvidia.com/gpu", [uuid])]))
    e = Exporter(build, "h100-sxm", tmp_path, ["--pod-resources-socket", tmp_path / "pr.sock",
                                               "--metrics-schema", "nvidia-smi"])
    proc, port = start_prometheus(tmp_path, f"""global:
  scrape_interval: 1s
  evaluation_interval: 1s
rule_files:
  - {RULES / 'gpulet-rules.yaml'}
scrape_configs:
  - job_name: gpu
    static_configs:
      - targets: ['127.0.0.1:{e.port}']
""")
    try:
        def values(expr):
            try:
                r = query(port, expr)
            except OSError:
                return None
            return {tuple(sorted(x["metric"].items())): float(x["value"][1])
                    for x in r["data"]["result"]}

        wait_for(lambda: values('nvidia_smi_temperature_gpu{pod="llm-0"}'), timeout=30,
                 interval=0.2, what="Prometheus to scrape gpulet")
        short = smi_uuid(uuid)
        # labels: the short uuid, the pod on its GPU only
        temps = query(port, "nvidia_smi_temperature_gpu")["data"]["result"]
        assert len(temps) == 8
        g0 = next(t["metric"] for t in temps if t["metric"]["uuid"] == short)
        assert (g0["pod"], g0["namespace"], g0["container"]) == ("llm-0", "serving", "engine")
        assert sum("pod" in t["metric"] for t in temps) == 1
        # ratios as dashboards and alerts compute them
        power = values("nvidia_smi_power_draw_watts / nvidia_smi_enforced_power_limit_watts")
        assert len(power) == 8 and all(0 < v <= 1 for v in power.values())
        memory = values("nvidia_smi_memory_used_bytes / nvidia_smi_memory_total_bytes")
        assert len(memory) == 8 and all(0 <= v < 1 for v in memory.values())
        # the busy H100s (0-3) use 72000 of 81559 MiB, the idle ones nothing
        assert sorted(round(v, 3) for v in memory.values()) == [0.0] * 4 + [0.883] * 4
        # dashboard 14574's variables and its join on uuid
        idx = values("nvidia_smi_index")
        assert sorted(idx.values()) == list(range(8))
        joined = query(port, "nvidia_smi_temperature_gpu * on(uuid) group_left(name, index) "
                             "nvidia_smi_gpu_info")["data"]["result"]
        assert len(joined) == 8
        assert {r["metric"]["name"] for r in joined} == {"NVIDIA H100 80GB HBM3"}
        assert sorted(r["metric"]["index"] for r in joined) == [str(i) for i in range(8)]
        hot = values("max by (uuid) (nvidia_smi_temperature_gpu * on(uuid) group_left "
                     'nvidia_smi_gpu_info{index="0"})')
        assert list(hot) == [(("uuid", short),)]
        # enums as numbers, watts per watt of limit, hertz
        assert set(values("nvidia_smi_pstate").values()) <= {0.0, 8.0}
        assert set(values("nvidia_smi_clocks_max_graphics_clock_hz").values()) == {1980e6}
        # the nvidia-smi rule group: H100s 0-3 are ~95% busy, so utilisation
        # is pending or firing for them; the seed's "> 90" on the ratio, never
        assert len(values("nvidia_smi_utilization_gpu_ratio > 0.9")) == 4
        assert values("nvidia_smi_utilization_gpu_ratio > 90") == {}
        wait_for(lambda: {a["metric"]["uuid"] for a in query(port, "ALERTS")["data"]["result"]
                          if a["metric"]["alertname"] == "NvidiaSmiGPUUtilizationHigh"}
                 == {smi_uuid(g["uuid"]) for g in node["gpus"][:4]},
                 timeout=20, what="the utilisation alert")
        with urllib.request.urlopen(f"http://127.0.0.1:{port}/api/v1/rules", timeout=10) as r:
            groups = {g["name"]: g["rules"] for g in json.load(r)["data"]["groups"]}
        assert all(rule["health"] == "ok" for rule in groups["gpulet-nvidia-smi"])
    finally:
        proc.terminate()
        proc.wait(timeout=20)
        assert e.stop() == 0
        pods.stop(0)


EXTRA_DCGM = ["DCGM_FI_DEV_CLOCK_THROTTLE_REASONS", "DCGM_FI_DEV_ECC_SBE_VOL_TOTAL",
              "DCGM_FI_DEV_ECC_DBE_VOL_TOTAL", "DCGM_FI_DEV_ECC_SBE_AGG_TOTAL",
              "DCGM_FI_DEV_ECC_DBE_AGG_TOTAL", "DCGM_FI_DEV_RETIRED_SBE", "DCGM_FI_DEV_RETIRED_DBE",
              "DCGM_FI_DEV_RETIRED_PENDING", "DCGM_FI_DEV_NVLINK_CRC_FLIT_ERROR_COUNT_TOTAL",
              "DCGM_FI_DEV_NVLINK_CRC_DATA_ERROR_COUNT_TOTAL",
              "DCGM_FI_DEV_NVLINK_REPLAY_ERROR_COUNT_TOTAL",
              "DCGM_FI_DEV_NVLINK_RECOVERY_ERROR_COUNT_TOTAL", "DCGM_FI_DEV_POWER_MGMT_LIMIT",
              "DCGM_FI_DEV_POWER_MGMT_LIMIT_MIN", "DCGM_FI_DEV_POWER_MGMT_LIMIT_MAX",
              "DCGM_FI_DEV_POWER_MGMT_LIMIT_DEF", "DCGM_FI_DEV_ENFORCED_POWER_LIMIT",
              "DCGM_FI_DEV_PSTATE", "DCGM_FI_DEV_FAN_SPEED", "DCGM_FI_DEV_MAX_SM_CLOCK",
              "DCGM_FI_DEV_MAX_MEM_CLOCK", "DCGM_FI_DEV_GET_GPU_RECOVERY_ACTION"]


@pytest.mark.parametrize("node", ["dgx1-v100", "dgx-a100"])
def test_extra_fields_in_both_schemas(exporter, tmp_path, node):
    csv = tmp_path / "counters.csv"
    kind = {n: "counter" if any(k in n for k in ("ECC", "RETIRED", "ERROR")) else "gauge"
            for n in EXTRA_DCGM}
    csv.write_text("".join(f"{n}, {kind[n]}, x\n" for n in EXTRA_DCGM))
    state = tmp_path / "state.yaml"
    write_atomically(state, "gpus:\n  1: {remapped_correctable: 4, remapped_uncorrectable: 2, "
                            "remapped_pending: 1, clock_event_reasons: 4}\n")
    e = exporter(node, "-f", csv, "--metrics-schema", "dcgm,nvidia-smi", state=state)
    series, meta = parse(e.get()[2])
    gpus = load_node(node)["gpus"]
    u1 = smi_uuid(gpus[1]["uuid"])

    def dcgm(name):
        return {lab["gpu"]: v for lab, v in series.get(name, [])}

    def smi(name):
        return {lab["uuid"]: v for lab, v in series.get(name, [])}

    old = node == "dgx1-v100"  # Volta retires pages; Ampere remaps rows
    assert dcgm("DCGM_FI_DEV_ECC_SBE_VOL_TOTAL")["1"] == 4
    assert dcgm("DCGM_FI_DEV_ECC_DBE_AGG_TOTAL")["1"] == 2
    assert dcgm("DCGM_FI_DEV_ECC_DBE_AGG_TOTAL")["0"] == 0
    assert meta["DCGM_FI_DEV_ECC_DBE_AGG_TOTAL"]["TYPE"] == "counter"
    assert smi("nvidia_smi_ecc_errors_corrected_volatile_total")[u1] == 4
    assert smi("nvidia_smi_ecc_errors_uncorrected_aggregate_total")[u1] == 2
    assert smi("nvidia_smi_ecc_mode_current")[u1] == 1
    assert dcgm("DCGM_FI_DEV_GET_GPU_RECOVERY_ACTION")["1"] == 1  # a pending remap: reset
    assert dcgm("DCGM_FI_DEV_GET_GPU_RECOVERY_ACTION")["0"] == 0
    assert smi("nvidia_smi_gpu_recovery_action")[u1] == 1
    if old:
        assert dcgm("DCGM_FI_DEV_RETIRED_SBE")["1"] == 4
        assert dcgm("DCGM_FI_DEV_RETIRED_DBE")["1"] == 2
        assert dcgm("DCGM_FI_DEV_RETIRED_PENDING")["1"] == 1
        assert smi("nvidia_smi_retired_pages_double_bit_count")[u1] == 2
    else:
        assert "DCGM_FI_DEV_RETIRED_SBE" not in series
        assert "nvidia_smi_retired_pages_pending" not in series
    # both nodes have NVLink: its error counters, zero here
    assert set(dcgm("DCGM_FI_DEV_NVLINK_REPLAY_ERROR_COUNT_TOTAL").values()) == {0}
    assert set(smi("nvidia_smi_nvlink_crc_flit_errors_total").values()) == {0}
    assert meta["nvidia_smi_nvlink_crc_flit_errors_total"]["TYPE"] == "counter"
    limit = load_node(node).get("gpu_defaults", {}).get("power_limit_w") or gpus[0]["power_limit_w"]
    assert set(dcgm("DCGM_FI_DEV_POWER_MGMT_LIMIT").values()) == {limit}
    assert set(dcgm("DCGM_FI_DEV_POWER_MGMT_LIMIT_MIN").values()) == {limit * 0.6}
    assert set(dcgm("DCGM_FI_DEV_ENFORCED_POWER_LIMIT").values()) == {limit}
    assert set(dcgm("DCGM_FI_DEV_PSTATE").values()) <= {0, 8}
    assert dcgm("DCGM_FI_DEV_CLOCK_THROTTLE_REASONS")["1"] == 4
    assert smi("nvidia_smi_clocks_event_reasons_sw_power_cap")[u1] == 1
    # passively cooled boards: no fan series in either schema
    assert "DCGM_FI_DEV_FAN_SPEED" not in series and "nvidia_smi_fan_speed_ratio" not in series


def test_a_board_with_a_fan_reports_it_and_a_passive_one_stays_quiet(exporter, tmp_path):
    # dgx-a100 with GPU 1 given a fan of its own; the others answer NOT_SUPPORTED,
    # as passively cooled boards do, which is no warning
    node = load_node("dgx-a100")
    node["gpus"][1]["fan_speed_pct"] = 40
    path = tmp_path / "fan.yaml"
    path.write_text(json.dumps(node))
    csv = tmp_path / "counters.csv"
    csv.write_text("DCGM_FI_DEV_FAN_SPEED, gauge, fan\n")
    e = exporter(path, "-f", csv, "--metrics-schema", "dcgm,nvidia-smi")
    series, _ = parse(e.get()[2])
    assert {lab["gpu"]: v for lab, v in series["DCGM_FI_DEV_FAN_SPEED"]} == {"1": 40}
    u1 = smi_uuid(node["gpus"][1]["uuid"])
    assert {lab["uuid"]: v for lab, v in series["nvidia_smi_fan_speed_ratio"]} == {u1: 0.4}
    assert "not simulated" not in e.text() and "FanSpeed" not in e.text()


def test_a_failed_process_collection_shows_only_its_gauge(exporter, tmp_path):
    # nvidia_gpu_exporter: when the process list of any GPU cannot be read
    # the collection failed; it says 0 and leaves every per-process series
    # out, so "could not look" is never mistaken for "no processes".
    state = tmp_path / "state.yaml"
    write_atomically(state, "gpus:\n  0:\n    processes:\n      - {pid: %d, used_mib: 64}\n"
                     % os.getpid())
    e = exporter("dgx-a100", "--metrics-schema", "nvidia-smi", state=state)
    wait_for(lambda: "nvidia_smi_compute_app_info{" in e.get()[2], what="the process")
    write_atomically(state, "gpus:\n  0:\n    processes:\n      - {pid: %d, used_mib: 64}\n"
                     "  3: {lost: true}\n" % os.getpid())
    wait_for(lambda: "nvidia_smi_compute_apps_last_collect_success 0" in e.get()[2],
             what="the failed collection")
    series, meta = parse(e.get()[2])
    assert meta["nvidia_smi_compute_apps_last_collect_success"]["TYPE"] == "gauge"
    for name in ("nvidia_smi_compute_app_info", "nvidia_smi_compute_app_used_memory_bytes",
                 "nvidia_smi_compute_apps"):
        assert name not in series
    write_atomically(state, "gpus:\n  3: {lost: false}\n")
    wait_for(lambda: "nvidia_smi_compute_apps_last_collect_success 1" in e.get()[2],
             what="the collection back")


def test_a_busy_gpu_still_reports_its_processes(exporter, tmp_path):
    # More processes than gpulet keeps a series for (64): the list is read
    # whole, the first 64 get their series and the count says all of them,
    # instead of the whole collection failing on INSUFFICIENT_SIZE.
    state = tmp_path / "state.yaml"
    procs = "".join("      - {pid: %d, used_mib: 1}\n" % (100000 + i) for i in range(100))
    write_atomically(state, "gpus:\n  0:\n    processes:\n" + procs)
    e = exporter("dgx-a100", "--metrics-schema", "nvidia-smi", state=state)
    wait_for(lambda: "nvidia_smi_compute_app_info{" in e.get()[2], what="the processes")
    series, _ = parse(e.get()[2])
    assert series["nvidia_smi_compute_apps_last_collect_success"] == [({}, 1)]
    u0 = smi_uuid(load_node("dgx-a100")["gpus"][0]["uuid"])
    counts = {lab["uuid"]: v for lab, v in series["nvidia_smi_compute_apps"]}
    assert counts[u0] == 100
    pids = [lab["pid"] for lab, _ in series["nvidia_smi_compute_app_info"] if lab["uuid"] == u0]
    assert pids == [str(100000 + i) for i in range(64)]
    assert len(series["nvidia_smi_compute_app_used_memory_bytes"]) == 64
