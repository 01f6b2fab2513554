#!/usr/bin/python3
"""Writes the Kubernetes copies of the alert rules and the dashboard:
deploy/kubernetes/base/prometheusrule.yaml from deploy/prometheus/gpulet-rules.yaml,
deploy/kubernetes/base/dashboard-configmap.yaml from deploy/grafana/gpulet-dashboard.json.
Run it after changing either source; tests/integration/test_deploy.py fails
while they disagree."""
import pathlib

import yaml

DEPLOY = pathlib.Path(__file__).resolve().parents[1] / "deploy"

rules = yaml.safe_load((DEPLOY / "prometheus" / "gpulet-rules.yaml").read_text())
rule = {"apiVersion": "monitoring.coreos.com/v1", "kind": "PrometheusRule",
        "metadata": {"name": "gpulet", "labels": {"app.kubernetes.io/name": "gpulet",
                                                  "release": "prometheus"}},
        "spec": rules}
with open(DEPLOY / "kubernetes" / "base" / "prometheusrule.yaml", "w") as f:
    f.write("# The rules of deploy/prometheus/gpulet-rules.yaml as a PrometheusRule\n"
            "# (written by scripts/derive-manifests.py; tests check that the two agree).\n")
    yaml.safe_dump(rule, f, sort_keys=False, allow_unicode=True, width=1000)

dashboard = (DEPLOY / "grafana" / "gpulet-dashboard.json").read_text()
configmap = {"apiVersion": "v1", "kind": "ConfigMap",
             "metadata": {"name": "gpulet-dashboard", "labels": {"grafana_dashboard": "1"}},
             "data": {"gpulet-dashboard.json": dashboard}}
with open(DEPLOY / "kubernetes" / "base" / "dashboard-configmap.yaml", "w") as f:
    f.write("# deploy/grafana/gpulet-dashboard.json for the Grafana sidecar, which loads\n"
            "# ConfigMaps labelled grafana_dashboard=1 (written by scripts/derive-manifests.py;\n"
            "# tests check that the two agree).\n")
    yaml.safe_dump(configmap, f, sort_keys=False, width=1000)
