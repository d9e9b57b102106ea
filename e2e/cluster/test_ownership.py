"""Point 9: what a portal (or a deployed server) owns carries its controller owner reference;
deleting the McpPortal lets the garbage collector remove its ConfigMap, Deployment, Service and
PodDisruptionBudget (and the ReplicaSets and Pods below); deleting the namespace completes."""

from __future__ import annotations

import objects
from kube import wait_until

PORTAL_KINDS = ("configmap", "deployment", "service", "poddisruptionbudget")
SERVER_KINDS = ("configmap", "deployment", "service", "networkpolicy")


def _gone(cluster, kind: str, name: str, ns: str) -> bool:
    r = cluster.kubectl("get", kind, name, "-n", ns, check=False)
    return r.returncode != 0 and "NotFound" in r.stderr


def _owned_by(obj: dict, owner: dict) -> bool:
    refs = obj["metadata"].get("ownerReferences") or []
    return any(
        r["uid"] == owner["metadata"]["uid"] and r.get("controller") and r["kind"] == owner["kind"] for r in refs
    )


def test_deleting_a_portal_garbage_collects_everything_it_owned_and_the_namespace_deletes(
    cluster, operator, kubelet, namespace
):
    cluster.apply([objects.deployed_server("docs"), objects.portal("gc", replicas=2)], namespace)
    portal = cluster.get_json("mcpportal", "gc", "-n", namespace)
    server = cluster.get_json("mcpserver", "docs", "-n", namespace)
    for kind in PORTAL_KINDS:
        obj = wait_until(f"{kind}/gc-portal", lambda: cluster.get_json(kind, "gc-portal", "-n", namespace), timeout=30)
        assert _owned_by(obj, portal), (kind, obj["metadata"].get("ownerReferences"))
    for kind in SERVER_KINDS:
        obj = wait_until(f"{kind}/docs-mcp", lambda: cluster.get_json(kind, "docs-mcp", "-n", namespace), timeout=30)
        assert _owned_by(obj, server), (kind, obj["metadata"].get("ownerReferences"))
    wait_until(
        "the portal's pods (created by its ReplicaSet)",
        lambda: len(cluster.get_json("pods", "-n", namespace, "-l", "portcullis.dev/portal=gc")["items"]) == 2,
        timeout=30,
    )

    cluster.kubectl("delete", "mcpportal", "gc", "-n", namespace, "--wait=true", "--timeout=30s")
    # The garbage collector rediscovers new CRDs about every 30 s: allow for one round.
    for kind in PORTAL_KINDS:
        wait_until(f"{kind}/gc-portal to be garbage collected", lambda: _gone(cluster, kind, "gc-portal", namespace), timeout=75)
    wait_until(
        "the portal's ReplicaSets and Pods to be garbage collected",
        lambda: not cluster.get_json("replicasets,pods", "-n", namespace, "-l", "portcullis.dev/portal=gc")["items"],
        timeout=60,
    )
    # The server is untouched by its portal's deletion; deleting it collects its objects.
    for kind in SERVER_KINDS:
        cluster.get_json(kind, "docs-mcp", "-n", namespace)
    cluster.kubectl("delete", "mcpserver", "docs", "-n", namespace, "--wait=true", "--timeout=30s")
    for kind in SERVER_KINDS:
        wait_until(f"{kind}/docs-mcp to be garbage collected", lambda: _gone(cluster, kind, "docs-mcp", namespace), timeout=75)

    # A namespace with live Portcullis objects in it deletes completely (no finalizer hangs).
    cluster.apply([objects.deployed_server("docs2"), objects.portal("gc2")], namespace)
    wait_until("deployment/gc2-portal", lambda: cluster.get_json("deployment", "gc2-portal", "-n", namespace), timeout=30)
    cluster.kubectl("delete", "namespace", namespace, "--wait=true", "--timeout=90s")
    assert _gone(cluster, "namespace", namespace, "default")
