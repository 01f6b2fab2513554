"""deploy/kubernetes: every overlay renders offline with `kubectl
kustomize`, and the rendered objects hold what the daemon needs."""
import json
import shutil
import subprocess

import pytest
import yaml

from conftest import ROOT

KUBECTL = shutil.which("kubectl")
DEPLOY = ROOT / "deploy"
OVERLAYS = ["base", "overlays/containerd", "overlays/k3s", "overlays/metrics-only",
            "overlays/device-plugin-only", "overlays/dra"]
needs_kubectl = pytest.mark.skipif(KUBECTL is None, reason="kubectl (client) is not installed; "
                                   "it is not a Debian package")


def render(which):
    r = subprocess.run([KUBECTL, "kustomize", str(DEPLOY / "kubernetes" / which)],
                       capture_output=True, text=True, timeout=60)
    assert r.returncode == 0, r.stderr
    return [d for d in yaml.safe_load_all(r.stdout) if d]


def by_kind(docs, kind):
    return [d for d in docs if d["kind"] == kind]


@needs_kubectl
@pytest.mark.parametrize("which", OVERLAYS)
def test_every_overlay_renders_with_what_the_daemon_needs(which):
    docs = render(which)
    assert all(d["metadata"].get("namespace", "gpulet") == "gpulet" for d in docs
               if d["kind"] not in ("Namespace", "RuntimeClass"))
    ds, = by_kind(docs, "DaemonSet")
    spec = ds["spec"]["template"]["spec"]
    c = spec["containers"][0]
    mounts = {m["mountPath"] for m in c["volumeMounts"]}
    assert {"/var/lib/kubelet/device-plugins", "/var/lib/kubelet/pod-resources", "/dev",
            "/host", "/etc/kubernetes/node-feature-discovery/features.d", "/var/lib/gpulet"} <= mounts
    volumes = {v["name"]: v for v in spec["volumes"]}
    state = next(m for m in c["volumeMounts"] if m["mountPath"] == "/var/lib/gpulet")
    assert volumes[state["name"]]["hostPath"]["path"] == "/var/lib/gpulet"  # the same path
    assert spec["priorityClassName"] == "system-node-critical"
    assert {"key": "nvidia.com/gpu", "operator": "Exists", "effect": "NoSchedule"} in spec["tolerations"]
    terms = spec["affinity"]["nodeAffinity"]["requiredDuringSchedulingIgnoredDuringExecution"][
        "nodeSelectorTerms"]
    keys = [[e["key"] for e in t["matchExpressions"]] for t in terms]
    assert ["feature.node.kubernetes.io/pci-10de.present", "nvidia.com/gpu.deploy.operands"] in keys
    assert all("nvidia.com/gpu.deploy.operands" in k for k in keys)
    assert c["resources"]["limits"]["memory"] and c["resources"]["requests"]["cpu"]
    env = {e["name"]: e for e in c["env"]}
    assert env["NODE_NAME"]["valueFrom"]["fieldRef"]["fieldPath"] == "spec.nodeName"
    assert "livenessProbe" in c
    # no privileged container without a stated reason
    reason = ds["spec"]["template"]["metadata"].get("annotations", {}).get(
        "gpulet.io/privileged-reason", "")
    for container in spec["containers"] + spec.get("initContainers", []):
        if container.get("securityContext", {}).get("privileged"):
            assert len(reason) > 40, container["name"]
    if which != "overlays/device-plugin-only":
        assert c["livenessProbe"]["httpGet"]["path"] == "/health"
        assert c["readinessProbe"]["httpGet"]["path"] == "/health"
        assert by_kind(docs, "ServiceMonitor") and by_kind(docs, "Service")
    if which == "overlays/containerd":
        install, configure = spec["initContainers"]
        assert install["args"] == ["runtime", "install", "--to=/host/usr/local/gpulet"]
        assert configure["args"][:2] == ["runtime", "configure"]
        assert "--runtime-path=/usr/local/gpulet/bin/gpulet-runtime" in configure["args"]
        volumes = {v["name"]: v for v in spec["volumes"]}
        for init in (install, configure):
            assert init["securityContext"]["capabilities"] == {"drop": ["ALL"]}
            for m in init["volumeMounts"]:
                # each host folder is mounted where the arguments expect it
                host = volumes[m["name"]]["hostPath"]["path"]
                assert m["mountPath"] == "/host" + host
    else:
        assert "initContainers" not in spec  # the host setup is off by default


@needs_kubectl
def test_overlay_specifics():
    metrics = by_kind(render("overlays/metrics-only"), "DaemonSet")[0]
    assert metrics["spec"]["template"]["spec"]["containers"][0]["args"] == [
        "run", "--no-device-plugin", "--no-labels"]
    dp = render("overlays/device-plugin-only")
    assert {d["kind"] for d in dp} == {"Namespace", "ServiceAccount", "DaemonSet", "RuntimeClass",
                                       "ClusterRole", "ClusterRoleBinding"}
    assert "--no-metrics" in by_kind(dp, "DaemonSet")[0]["spec"]["template"]["spec"][
        "containers"][0]["args"]


@needs_kubectl
def test_dra_overlay():
    docs = render("overlays/dra")
    ds, = by_kind(docs, "DaemonSet")
    spec = ds["spec"]["template"]["spec"]
    c = spec["containers"][0]
    assert "--dra" in c["args"]
    assert spec["automountServiceAccountToken"] is True
    mounts = {m["mountPath"]: m for m in c["volumeMounts"]}
    assert {"/var/lib/kubelet/plugins", "/var/lib/kubelet/plugins_registry"} <= set(mounts)
    assert not mounts["/var/run/cdi"].get("readOnly")  # per-claim specs are written
    # the specs name the hook where the host-setup component installs it
    env = {e["name"]: e.get("value") for e in c["env"]}
    assert env["GPULET_HOST_DRIVER_ROOT"] == "/"
    install = by_kind(render("overlays/containerd"), "DaemonSet")[0]["spec"]["template"]["spec"][
        "initContainers"][0]
    to = next(a for a in install["args"] if a.startswith("--to=/host"))[len("--to=/host"):]
    assert env["GPULET_HOST_HOOK_PATH"] == f"{to}/bin/gpulet-hook"
    volumes = {v["name"]: v["hostPath"]["path"] for v in spec["volumes"]}
    for path, m in mounts.items():
        if path.startswith("/var/lib/kubelet/plugins"):
            assert volumes[m["name"]] == path
    classes = {d["metadata"]["name"]: d for d in by_kind(docs, "DeviceClass")}
    assert set(classes) == {"gpu.nvidia.com", "mig.nvidia.com"}
    assert "type == 'gpu'" in classes["gpu.nvidia.com"]["spec"]["selectors"][0]["cel"]["expression"]
    assert all("namespace" not in d["metadata"] for d in classes.values())
    role, = by_kind(docs, "ClusterRole")
    verbs = {(r["apiGroups"][0], res): set(r["verbs"]) for r in role["rules"]
             for res in r["resources"]}
    assert {"create", "update", "delete", "list", "watch"} <= verbs[("resource.k8s.io",
                                                                     "resourceslices")]
    assert verbs[("resource.k8s.io", "resourceclaims")] == {"get"}
    assert verbs[("", "nodes")] == {"get"}
    binding, = by_kind(docs, "ClusterRoleBinding")
    assert binding["subjects"] == [{"kind": "ServiceAccount", "name": "gpulet",
                                    "namespace": "gpulet"}]
    # without the overlay the token stays out of the pod
    base = by_kind(render("base"), "DaemonSet")[0]["spec"]["template"]["spec"]
    assert not base.get("automountServiceAccountToken")


def test_derived_manifests_agree_with_their_sources():
    rules = yaml.safe_load((DEPLOY / "prometheus" / "gpulet-rules.yaml").read_text())
    pr = yaml.safe_load((DEPLOY / "kubernetes" / "base" / "prometheusrule.yaml").read_text())
    assert pr["spec"] == rules
    cm = yaml.safe_load((DEPLOY / "kubernetes" / "base" / "dashboard-configmap.yaml").read_text())
    assert cm["metadata"]["labels"] == {"grafana_dashboard": "1"}
    assert json.loads(cm["data"]["gpulet-dashboard.json"]) == json.loads(
        (DEPLOY / "grafana" / "gpulet-dashboard.json").read_text())
