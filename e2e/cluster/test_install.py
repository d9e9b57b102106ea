"""Point 1: `helm install` of charts/portcullis into a real apiserver; `helm upgrade` with changed
values and `helm uninstall`."""

from __future__ import annotations

import json

from conftest import CHART, OPERATOR_NAMESPACE, RELEASE
from kube import condition_true


def test_helm_install_establishes_the_crds_and_creates_rbac_and_the_operator_deployment(cluster, operator):
    status = json.loads(cluster.helm("status", RELEASE, "-n", OPERATOR_NAMESPACE, "-o", "json").stdout)
    assert status["info"]["status"] == "deployed", status["info"]
    for plural in ("mcpservers", "mcpportals", "mcppolicies"):
        crd = cluster.get_json("crd", f"{plural}.portcullis.dev")
        assert condition_true(crd, "Established", current=False), crd["status"]
        assert condition_true(crd, "NamesAccepted", current=False), crd["status"]
        assert [v["name"] for v in crd["spec"]["versions"] if v["served"]] == ["v1alpha1"]
    role = cluster.get_json("clusterrole", RELEASE)
    assert any("mcpportals/status" in r.get("resources", []) for r in role["rules"]), role["rules"]
    binding = cluster.get_json("clusterrolebinding", RELEASE)
    assert binding["subjects"] == [{"kind": "ServiceAccount", "name": RELEASE, "namespace": OPERATOR_NAMESPACE}]
    cluster.get_json("clusterrole", f"{RELEASE}-discovery")  # discovery.enabled=true in the fixture
    cluster.get_json("role", f"{RELEASE}-leader-election", "-n", OPERATOR_NAMESPACE)
    cluster.get_json("serviceaccount", RELEASE, "-n", OPERATOR_NAMESPACE)
    dep = cluster.get_json("deployment", RELEASE, "-n", OPERATOR_NAMESPACE)
    (container,) = dep["spec"]["template"]["spec"]["containers"]
    assert container["args"] == ["run"]
    assert dep["spec"]["template"]["spec"]["serviceAccountName"] == RELEASE
    # The restricted namespace admitted the operator's own pod (the controller-manager made it).
    pods = cluster.get_json("pods", "-n", OPERATOR_NAMESPACE, "-l", "app.kubernetes.io/name=portcullis-operator")
    assert len(pods["items"]) == 1, pods["items"]


def _env(dep: dict) -> dict[str, str]:
    (c,) = dep["spec"]["template"]["spec"]["containers"]
    return {e["name"]: e.get("value", "") for e in c.get("env", [])}


def test_helm_upgrade_applies_changed_values_and_uninstall_removes_the_release(cluster, operator, namespace):
    release = "second"
    full = f"{release}-portcullis"
    cluster.helm("install", release, str(CHART), "-n", namespace)
    dep = cluster.get_json("deployment", full, "-n", namespace)
    assert dep["spec"]["replicas"] == 1
    assert _env(dep)["PORTCULLIS_LOG_FORMAT"] == "json"
    assert "PORTCULLIS_DISCOVER_SHADOW" not in _env(dep)
    assert cluster.kubectl("get", "clusterrole", f"{full}-discovery", check=False).returncode != 0

    cluster.helm(
        "upgrade", release, str(CHART), "-n", namespace,
        "--set", "operator.replicas=2",
        "--set", "operator.logFormat=text",
        "--set", "discovery.enabled=true",
        "--set", f"discovery.namespaces={{{namespace}}}",
    )  # fmt: skip
    status = json.loads(cluster.helm("status", release, "-n", namespace, "-o", "json").stdout)
    assert status["version"] == 2 and status["info"]["status"] == "deployed", status["info"]
    dep = cluster.get_json("deployment", full, "-n", namespace)
    assert dep["spec"]["replicas"] == 2
    env = _env(dep)
    assert env["PORTCULLIS_LOG_FORMAT"] == "text"
    assert env["PORTCULLIS_DISCOVER_SHADOW"] == "true"
    assert env["PORTCULLIS_DISCOVER_NAMESPACES"] == namespace
    # discovery.namespaces set: a Role in that namespace, no cluster-wide pod list.
    cluster.get_json("role", f"{full}-discovery", "-n", namespace)
    assert cluster.kubectl("get", "clusterrole", f"{full}-discovery", check=False).returncode != 0

    cluster.helm("uninstall", release, "-n", namespace, "--wait", "--timeout", "60s")
    for args in (
        ("deployment", full, "-n", namespace),
        ("serviceaccount", full, "-n", namespace),
        ("clusterrole", full),
        ("clusterrolebinding", full),
        ("role", f"{full}-discovery", "-n", namespace),
    ):
        r = cluster.kubectl("get", *args, check=False)
        assert r.returncode != 0 and "NotFound" in r.stderr, (args, r.stdout, r.stderr)
    # Helm never deletes what crds/ installed: the session's release still serves.
    cluster.get_json("crd", "mcpportals.portcullis.dev")
