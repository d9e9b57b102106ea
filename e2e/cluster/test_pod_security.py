"""Point 8: the examples' namespace enforces the `restricted` Pod Security Standard; the Pods the
ReplicaSets of the operator's Deployments create are admitted. A rejection would be a
FailedCreate event on the ReplicaSet: the test fails on any. A Deployment whose pod breaks
`restricted` shows that the check can fail."""

from __future__ import annotations

import json

from kube import wait_until


def _failed_creates(cluster, ns: str) -> list[str]:
    events = cluster.get_json("events", "-n", ns, "--field-selector", "reason=FailedCreate")["items"]
    return [f"{e['involvedObject']['kind']}/{e['involvedObject']['name']}: {e.get('message')}" for e in events]


def test_the_examples_namespace_enforces_restricted_pod_security(cluster, demo):
    labels = cluster.get_json("namespace", demo.namespace)["metadata"]["labels"]
    assert labels.get("pod-security.kubernetes.io/enforce") == "restricted", labels


def test_every_pod_of_the_operators_deployments_is_admitted_under_restricted(cluster, demo):
    ns = demo.namespace
    owned = ["engineering-portal", "tickets-mcp", "docs-mcp"]

    def all_created():
        out = {}
        for name in owned:
            dep = cluster.get_json("deployment", name, "-n", ns)
            rs = [
                r
                for r in cluster.get_json("replicasets", "-n", ns)["items"]
                if any(o["uid"] == dep["metadata"]["uid"] for o in r["metadata"].get("ownerReferences") or [])
            ]
            if not rs or any((r.get("status") or {}).get("replicas", 0) != r["spec"]["replicas"] for r in rs):
                return None
            out[name] = rs
        return out

    try:
        replicasets = wait_until("every ReplicaSet to have created its Pods", all_created, timeout=60)
    finally:
        rejected = _failed_creates(cluster, ns)
        assert not rejected, f"Pod Security admission rejected pods: {rejected}"
    pods = cluster.get_json("pods", "-n", ns)["items"]
    for name, rs in replicasets.items():
        want = sum(r["spec"]["replicas"] for r in rs)
        have = [
            p for p in pods if any(o["name"] in {r["metadata"]["name"] for r in rs} for o in p["metadata"].get("ownerReferences") or [])
        ]
        assert len(have) == want and want > 0, (name, want, [p["metadata"]["name"] for p in have])


def test_a_pod_that_breaks_restricted_is_refused_with_failed_create(cluster, demo, namespace):
    """The control of the test above: the same check sees a rejection when there is one."""
    dep = {
        "apiVersion": "apps/v1",
        "kind": "Deployment",
        "metadata": {"name": "unrestricted"},
        "spec": {
            "replicas": 1,
            "selector": {"matchLabels": {"app": "unrestricted"}},
            "template": {
                "metadata": {"labels": {"app": "unrestricted"}},
                # No securityContext: may run as root, escalate, keeps capabilities.
                "spec": {"containers": [{"name": "c", "image": "busybox"}]},
            },
        },
    }
    cluster.kubectl("apply", "-n", namespace, "-f", "-", input=json.dumps(dep))
    rejected = wait_until("a FailedCreate event", lambda: _failed_creates(cluster, namespace), timeout=30)
    assert any("violates PodSecurity" in r and "restricted" in r for r in rejected), rejected
