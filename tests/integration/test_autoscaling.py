"""Autoscaling on GPU utilisation: a real Prometheus scrapes gpulet with the
ServiceMonitor's settings (target labels as the Prometheus Operator sets
them), and the prometheus-adapter rules of deploy/autoscaling/ are run the
way the adapter runs them (docs/config.md of kubernetes-sigs/
prometheus-adapter): discovery through /api/v1/series, naming, resource
association, then the metricsQuery template for a custom metrics API
request. The per-pod values must be those of the GPUs each pod holds."""
import json
import re
import urllib.parse
import urllib.request

import pytest
import yaml

from conftest import ROOT, load_node, write_atomically
from kubelet import wait_for
from test_metrics import Exporter, pod, pod_server, protos  # noqa: F401 (fixture)
from test_prometheus import query, start_prometheus

AUTOSCALING = ROOT / "deploy" / "autoscaling"
SERVICE_MONITOR = ROOT / "deploy" / "kubernetes" / "base" / "servicemonitor.yaml"
# what the Prometheus Operator puts on the target: gpulet's own pod
OPERATOR_TARGET_LABELS = {"namespace": "gpulet", "pod": "gpulet-x7k2p", "container": "gpulet",
                          "service": "gpulet", "endpoint": "metrics",
                          "__meta_kubernetes_pod_node_name": "gpu-node-1"}
UTIL = {0: 80, 1: 60, 2: 20, 3: 95}  # pinned per GPU; the other GPUs idle


def scrape_config_from_service_monitor(port):
    """The scrape job the Operator would generate from our ServiceMonitor:
    honorLabels and relabelings (camelCase to Prometheus' snake_case)."""
    endpoint, = yaml.safe_load(SERVICE_MONITOR.read_text())["spec"]["endpoints"]
    keys = {"sourceLabels": "source_labels", "targetLabel": "target_label", "action": "action",
            "regex": "regex", "replacement": "replacement", "separator": "separator"}
    relabel = [{keys[k]: v for k, v in r.items()} for r in endpoint.get("relabelings", [])]
    return {"job_name": "gpulet", "scrape_interval": "1s",
            "honor_labels": endpoint.get("honorLabels", False),
            "static_configs": [{"targets": [f"127.0.0.1:{port}"],
                                "labels": OPERATOR_TARGET_LABELS}],
            "relabel_configs": relabel}


@pytest.fixture
def prometheus(build, tmp_path, protos):  # noqa: F811
    pr = protos
    uuids = [g["uuid"] for g in load_node("dgx-a100")["gpus"]]
    pods = pod_server(pr, tmp_path / "pr.sock", pr.ListPodResourcesResponse(pod_resources=[
        pod(pr, "llm-0", "serving", "server", "nvidia.com/gpu", [uuids[0], uuids[1]]),
        pod(pr, "llm-1", "serving", "server", "nvidia.com/gpu", [uuids[2]]),
        pod(pr, "batch-7", "research", "train", "nvidia.com/gpu", [uuids[3]]),
    ]))
    state = tmp_path / "state.yaml"
    write_atomically(state, "gpus:\n" + "".join(
        f"  {i}: {{utilization_pct: {UTIL.get(i, 0)}}}\n" for i in range(8)))
    exporter = Exporter(build, "dgx-a100", tmp_path,
                        ["--pod-resources-socket", tmp_path / "pr.sock"], state=state)
    proc, port = start_prometheus(tmp_path, yaml.safe_dump({
        "global": {"scrape_interval": "1s"},
        "scrape_configs": [scrape_config_from_service_monitor(exporter.port)]}))
    try:
        def scraped():
            try:
                return query(port, 'count(DCGM_FI_DEV_GPU_UTIL{pod="batch-7"})')["data"]["result"]
            except OSError:
                return None
        wait_for(scraped, timeout=30, interval=0.2, what="Prometheus to scrape gpulet")
        yield port
    finally:
        proc.terminate()
        proc.wait(timeout=20)
        exporter.stop()
        pods.stop(None)


def adapter_discover(port, rule):
    """Discovery, naming and association of one rule: {api name: resources}."""
    url = f"http://127.0.0.1:{port}/api/v1/series?" + urllib.parse.urlencode(
        {"match[]": rule["seriesQuery"]})
    with urllib.request.urlopen(url, timeout=10) as r:
        series = json.load(r)["data"]
    found = {}
    for s in series:
        name = s["__name__"]
        for f in rule.get("seriesFilters", []):
            if ("is" in f and not re.search(f["is"], name)) or \
                    ("isNot" in f and re.search(f["isNot"], name)):
                break
        else:
            m = re.search(rule.get("name", {}).get("matches", ".*"), name)
            if not m:
                continue
            default = "$1" if m.re.groups == 1 else "$0"
            api = re.sub(r"\$\{?(\d+)\}?", lambda g: m.group(int(g.group(1))),
                         rule["name"].get("as", default))
            overrides = rule["resources"]["overrides"]
            resources = {overrides[label]["resource"] for label in s if label in overrides}
            found.setdefault(api, {"series": name, "resources": set(), "pods": set()})
            found[api]["resources"] |= resources
            found[api]["pods"].add((s.get("namespace"), s.get("pod")))
    return found


def adapter_query(port, rule, series, resource, namespace, names):
    """The metricsQuery for a custom metrics API request on objects of one
    resource, rendered as the adapter renders it; {object: value}."""
    label = next(lbl for lbl, r in rule["resources"]["overrides"].items()
                 if r["resource"] == resource)
    matchers = [f'{label}=~"{"|".join(names)}"']
    if resource != "namespace":
        matchers.append(f'namespace="{namespace}"')
    fields = {"Series": series, "LabelMatchers": ",".join(matchers), "GroupBy": label}
    expr = re.sub(r"<<\s*\.(\w+)\s*>>", lambda m: fields[m.group(1)], rule["metricsQuery"])
    assert "<<" not in expr, expr
    result = query(port, expr)
    assert result["status"] == "success", result
    return {r["metric"][label]: float(r["value"][1]) for r in result["data"]["result"]}


def test_adapter_rules_give_each_pod_its_gpus_utilisation(prometheus):
    port = prometheus
    rule, = yaml.safe_load((AUTOSCALING / "prometheus-adapter-rules.yaml").read_text())["rules"]
    found = adapter_discover(port, rule)
    assert set(found) == {"gpu_utilization"}
    metric = found["gpu_utilization"]
    assert metric["resources"] == {"pod", "namespace"}
    # the idle GPUs no pod holds are not put on gpulet's own pod
    assert metric["pods"] == {("serving", "llm-0"), ("serving", "llm-1"), ("research", "batch-7")}

    # GET .../namespaces/serving/pods/*/gpu_utilization
    values = adapter_query(port, rule, metric["series"], "pod", "serving", ["llm-0", "llm-1"])
    assert values == pytest.approx({"llm-0": (UTIL[0] + UTIL[1]) / 2, "llm-1": UTIL[2]})
    # a pod without a GPU has no value, and other namespaces do not leak in
    values = adapter_query(port, rule, metric["series"], "pod", "serving", ["llm-0", "web-1"])
    assert values == pytest.approx({"llm-0": 70.0})
    values = adapter_query(port, rule, metric["series"], "namespace", None, ["research"])
    assert values == pytest.approx({"research": UTIL[3]})


def test_hpa_example_scales_a_gpu_deployment_on_the_adapters_metric():
    rule, = yaml.safe_load((AUTOSCALING / "prometheus-adapter-rules.yaml").read_text())["rules"]
    deployment, hpa = yaml.safe_load_all((AUTOSCALING / "hpa-example.yaml").read_text())
    assert hpa["apiVersion"] == "autoscaling/v2"
    target = hpa["spec"]["scaleTargetRef"]
    assert (target["kind"], target["name"]) == (deployment["kind"],
                                                 deployment["metadata"]["name"])
    assert hpa["metadata"]["namespace"] == deployment["metadata"]["namespace"]
    metric, = hpa["spec"]["metrics"]
    assert metric["type"] == "Pods"
    assert metric["pods"]["metric"]["name"] == rule["name"]["as"]
    assert 0 < float(metric["pods"]["target"]["averageValue"]) <= 100
    container, = deployment["spec"]["template"]["spec"]["containers"]
    assert container["resources"]["limits"]["nvidia.com/gpu"] == 1
    assert 1 <= hpa["spec"]["minReplicas"] <= hpa["spec"]["maxReplicas"]
