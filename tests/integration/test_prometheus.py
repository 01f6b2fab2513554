"""The alert rules with promtool, and a real Prometheus server scraping
gpulet, running the rules and every query of the Grafana dashboard."""
import json
import re
import socket
import subprocess
import time
import urllib.parse
import urllib.request

import pytest

from conftest import ROOT, load_node
from kubelet import wait_for
from test_metrics import Exporter, pod, pod_server, protos  # noqa: F401 (fixture)

RULES = ROOT / "deploy" / "prometheus"
DASHBOARD = ROOT / "deploy" / "grafana" / "gpulet-dashboard.json"


def test_alert_rules_pass_their_unit_tests():
    check = subprocess.run(["promtool", "check", "rules", str(RULES / "gpulet-rules.yaml")],
                           capture_output=True, text=True)
    assert check.returncode == 0, check.stdout + check.stderr
    assert "SUCCESS: 11 rules found" in check.stdout
    test = subprocess.run(["promtool", "test", "rules", "gpulet-rules.test.yaml"], cwd=RULES,
                          capture_output=True, text=True)
    assert test.returncode == 0, test.stdout + test.stderr


def free_port():
    s = socket.socket()
    s.bind(("127.0.0.1", 0))
    port = s.getsockname()[1]
    s.close()
    return port


def start_prometheus(tmp_path, config):
    """A Prometheus server on loopback with this configuration (YAML text);
    returns the process and its port."""
    port = free_port()
    (tmp_path / "prometheus.yml").write_text(config)
    proc = subprocess.Popen(["prometheus", f"--config.file={tmp_path / 'prometheus.yml'}",
                             f"--storage.tsdb.path={tmp_path / 'tsdb'}",
                             f"--web.listen-address=127.0.0.1:{port}"],
                            stdout=subprocess.DEVNULL, stderr=open(tmp_path / "prom.log", "w"))
    return proc, port


def query(port, expr):
    url = f"http://127.0.0.1:{port}/api/v1/query?" + urllib.parse.urlencode({"query": expr})
    with urllib.request.urlopen(url, timeout=10) as r:
        return json.load(r)


@pytest.fixture
def prometheus(build, tmp_path, protos):  # noqa: F811
    pr = protos
    uuid = load_node("h100-sxm")["gpus"][0]["uuid"]
    pods = pod_server(pr, tmp_path / "pr.sock", pr.ListPodResourcesResponse(
        pod_resources=[pod(pr, "llm-0", "serving", "engine", "nvidia.com/gpu", [uuid])]))
    exporter = Exporter(build, "h100-sxm", tmp_path, ["--pod-resources-socket", tmp_path / "pr.sock"])
    proc, port = start_prometheus(tmp_path, f"""global:
  scrape_interval: 1s
  evaluation_interval: 1s
rule_files:
  - {RULES / 'gpulet-rules.yaml'}
scrape_configs:
  - job_name: gpulet
    static_configs:
      - targets: ['127.0.0.1:{exporter.port}']
""")
    try:
        def scraped():
            try:
                r = query(port, 'count(DCGM_FI_PROF_PIPE_TENSOR_ACTIVE{pod="llm-0"})')
            except OSError:
                return None
            return r["data"]["result"]
        wait_for(scraped, timeout=30, interval=0.2, what="Prometheus to scrape gpulet")
        yield port, uuid
    finally:
        proc.terminate()
        proc.wait(timeout=20)
        exporter.stop()
        pods.stop(0)


def test_prometheus_scrapes_and_runs_the_rules(prometheus):
    port, uuid = prometheus
    up = query(port, 'up{job="gpulet"}')["data"]["result"]
    assert [r["value"][1] for r in up] == ["1"]
    temps = query(port, "DCGM_FI_DEV_GPU_TEMP")["data"]["result"]
    assert len(temps) == 8
    g0 = next(r["metric"] for r in temps if r["metric"]["gpu"] == "0")
    assert g0["UUID"] == uuid and g0["pod"] == "llm-0" and g0["namespace"] == "serving"
    assert g0["modelName"] == "NVIDIA H100 80GB HBM3"
    # the simulated H100s 0-3 are ~95% busy: the utilisation alert is pending or firing
    wait_for(lambda: any(a["metric"]["alertname"] == "GPUUtilizationHigh"
                         for a in query(port, "ALERTS")["data"]["result"]),
             timeout=20, what="the utilisation alert")
    with urllib.request.urlopen(f"http://127.0.0.1:{port}/api/v1/rules", timeout=10) as r:
        groups = json.load(r)["data"]["groups"]
    rules = [rule for g in groups for rule in g["rules"]]
    assert len(rules) == 11
    assert all(rule["health"] != "err" for rule in rules), rules


def test_every_dashboard_query_runs(prometheus):
    port, _ = prometheus
    dash = json.loads(DASHBOARD.read_text())
    assert {v["name"] for v in dash["templating"]["list"]} == {"datasource", "instance", "gpu"}
    exprs = [t["expr"] for p in dash["panels"] for t in p.get("targets", [])]
    assert len(exprs) >= 15
    empty = []
    for expr in exprs:
        concrete = expr.replace("$instance", ".*").replace("$gpu", ".*")
        r = query(port, concrete)
        assert r["status"] == "success", (expr, r)
        # no XIDs, remapped rows or sliced containers on this node: those may be empty
        if not r["data"]["result"] and not any(
                k in expr for k in ("xid", "REMAPPED", "gpulet_container_")):
            empty.append(expr)
    assert empty == []
    # the 12239 panels, same queries
    titles = {p["title"] for p in dash["panels"]}
    assert {"GPU Temperature", "GPU Power Usage", "GPU SM Clocks", "GPU Utilization",
            "GPU Framebuffer Mem Used", "Tensor Core Utilization"} <= titles
