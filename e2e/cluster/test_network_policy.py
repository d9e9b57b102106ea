"""Point 11: the NetworkPolicy of a deployed server, read back from the apiserver, admits only
the portal pods of its namespace and the operator pods of the operator's own namespace.

No CNI enforces policies here, so the test evaluates the stored policy's `from` peers the way
the NetworkPolicy API defines them (podSelector within the policy's namespace, or within the
namespaces a namespaceSelector picks by their labels, read from the apiserver)."""

from __future__ import annotations

from typing import Any

import objects
from conftest import OPERATOR_NAMESPACE
from kube import wait_until


def _selects(selector: dict[str, Any] | None, labels: dict[str, str]) -> bool:
    """Label selector semantics (matchLabels and matchExpressions)."""
    if selector is None:
        return False
    for k, v in (selector.get("matchLabels") or {}).items():
        if labels.get(k) != v:
            return False
    for e in selector.get("matchExpressions") or []:
        key, op, values = e["key"], e["operator"], e.get("values") or []
        if op == "In" and labels.get(key) not in values:
            return False
        if op == "NotIn" and key in labels and labels[key] in values:
            return False
        if op == "Exists" and key not in labels:
            return False
        if op == "DoesNotExist" and key in labels:
            return False
    return True


def admits(policy: dict[str, Any], pod_labels: dict[str, str], pod_ns: str, ns_labels: dict[str, str]) -> bool:
    """Whether any ingress rule's `from` admits a pod (its labels, namespace and that
    namespace's labels) on some port."""
    own_ns = policy["metadata"]["namespace"]
    for rule in policy["spec"].get("ingress") or []:
        peers = rule.get("from")
        if peers is None:
            return True
        for peer in peers:
            if "ipBlock" in peer:
                continue
            ns_sel = peer.get("namespaceSelector")
            ns_ok = pod_ns == own_ns if ns_sel is None else _selects(ns_sel, ns_labels)
            pod_sel = peer.get("podSelector")
            pod_ok = True if pod_sel is None else _selects(pod_sel, pod_labels)
            if ns_ok and pod_ok:
                return True
    return False


def test_a_deployed_servers_network_policy_admits_only_its_portals_and_the_operators_own_pods(
    cluster, operator, namespace
):
    cluster.apply(objects.deployed_server("docs"), namespace)
    policy = wait_until(
        "NetworkPolicy docs-mcp",
        lambda: cluster.get_json("networkpolicy", "docs-mcp", "-n", namespace),
        timeout=30,
    )
    assert policy["spec"]["policyTypes"] == ["Ingress"]
    assert policy["spec"]["podSelector"]["matchLabels"]["portcullis.dev/server"] == "docs"

    other = f"{namespace}-tenant"
    cluster.kubectl("create", "namespace", other)
    try:
        ns_labels = {
            n: cluster.get_json("namespace", n)["metadata"]["labels"] for n in (namespace, other, OPERATOR_NAMESPACE)
        }
        operator_pod = cluster.get_json(
            "pods", "-n", OPERATOR_NAMESPACE, "-l", "app.kubernetes.io/name=portcullis-operator"
        )["items"][0]["metadata"]["labels"]
        portal_pod = {"portcullis.dev/component": "portal", "portcullis.dev/portal": "any"}
        cases = [
            ("a portal pod of the server's namespace", portal_pod, namespace, True),
            ("the chart's operator pod in its own namespace", operator_pod, OPERATOR_NAMESPACE, True),
            ("a portal pod of another namespace", portal_pod, other, False),
            ("a tenant pod wearing the operator's labels", operator_pod, other, False),
            ("a tenant pod wearing the operator's labels in the server's namespace", operator_pod, namespace, False),
            ("any other pod of the server's namespace", {"app": "curl"}, namespace, False),
        ]
        wrong = [
            f"{what}: admitted={got}, want {want}"
            for what, labels, ns, want in cases
            if (got := admits(policy, labels, ns, ns_labels[ns])) != want
        ]
        assert not wrong, f"{wrong}\npolicy spec: {policy['spec']}"
    finally:
        cluster.kubectl("delete", "namespace", other, "--wait=false")
