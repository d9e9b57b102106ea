"""Point 7: the Deployments the operator writes are proxies that run. No kubelet runs here, so the
pod runner (podrunner.py) reads each Deployment, its ConfigMaps and Secrets **from the
apiserver** and starts its containers as the pod spec says: each pod in its own network and
mount namespace, volumes at their mount paths, the proxy's own args (`--listen 0.0.0.0:9180`),
readiness on the pod IP. The official Python MCP client then lists and calls tools through the
portal and through a deployed server's sidecar, in both protocol eras.

The examples (without their McpPolicy, see below) are applied into the test's namespace (the
wiki McpServer's URL, which names `portcullis-demo`, is pointed at it). Each Service the runner serves is also routed in
`cluster.network`, so the operator's probes reach the pods too, as they would in a cluster."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
import yaml

from kube import get_object, wait_until, workspace_binary
from mcp_session import session
from podrunner import Cluster, Pod, fetch_with_kubectl, proxy_image

REPO = Path(__file__).resolve().parents[2]
EXAMPLE = REPO / "examples" / "operator" / "portal.yaml"
MODES = ("legacy", "2026-07-28")
SERVERS = ("wiki", "tickets-mcp", "docs-mcp")


def condition(obj: dict[str, Any] | None, type_: str) -> bool:
    for c in ((obj or {}).get("status") or {}).get("conditions") or []:
        if c.get("type") == type_:
            return c.get("status") == "True" and c.get("observedGeneration", obj["status"].get("observedGeneration")) == obj["metadata"]["generation"]
    return False


def run_and_route(cluster, pods: Cluster, namespace: str, name: str) -> Pod:
    """Run Deployment `name` as the apiserver has it; route its Service in cluster.network."""
    deployment = wait_until(f"Deployment {name}", lambda: get_object(cluster, namespace, "deployment", name), 60)
    pod = pods.run(deployment)
    svc = get_object(cluster, namespace, "service", name)
    assert svc is not None, f"Service {name} missing"
    pods.expose(svc)
    for p in svc["spec"]["ports"]:
        cluster.network.route(
            f"{name}.{namespace}.svc.cluster.local", int(p["port"]), pod.port(pod.container_port(p["targetPort"]))
        )
    return pod


@pytest.fixture
def running(cluster, operator, namespace: str, tmp_path: Path):
    # Without the example's McpPolicy: it opens tools to the group `engineering` only, which no
    # caller of a public (unauthenticated) portal is in (e2e/operator/test_podrunner_offline.py
    # checks that an anonymous caller then sees no tools).
    docs = [d for d in yaml.safe_load_all(EXAMPLE.read_text().replace("wiki.portcullis-demo.svc", f"wiki.{namespace}.svc")) if d]
    text = yaml.safe_dump_all([d for d in docs if d["kind"] != "McpPolicy"])
    cluster.kubectl("apply", "-n", namespace, "-f", "-", input=text)
    routed: list[tuple[str, int]] = []
    with Cluster(
        fetch_with_kubectl(cluster.kubectl, namespace),
        proxy_image(workspace_binary("portcullis-proxy"), workspace_binary("portcullis-demo")),
        namespace,
        workdir=tmp_path / "pods",
    ) as pods:
        try:
            servers = {name: run_and_route(cluster, pods, namespace, name) for name in SERVERS}
            routed += [(f"{n}.{namespace}.svc.cluster.local", 80) for n in SERVERS]
            # The operator probes the servers (now reachable) and re-renders the portal: run the
            # portal's Deployment only once the portal is Ready at its generation.
            wait_until("McpPortal engineering Ready", lambda: condition(get_object(cluster, namespace, "mcpportal", "engineering"), "Ready"), 90)
            portal = run_and_route(cluster, pods, namespace, "engineering-portal")
            routed.append((f"engineering-portal.{namespace}.svc.cluster.local", 80))
            yield servers, portal
        except BaseException:
            print("\n".join(p.logs() for p in pods.pods))
            raise
        finally:
            for host, port in routed:
                cluster.network.unroute(host, port)


def test_the_portal_deployment_from_the_apiserver_is_a_proxy_that_serves_both_eras(running, cluster, namespace):
    servers, portal = running
    deployment = get_object(cluster, namespace, "deployment", "engineering-portal")
    (container,) = deployment["spec"]["template"]["spec"]["containers"]
    # Started exactly as the pod spec says (the image's ENTRYPOINT, then the spec's args).
    assert portal.argv("proxy") == ["/usr/local/bin/portcullis-proxy", *container["args"]]
    # Its configuration is the ConfigMap the operator wrote, mounted where the args say.
    cm = get_object(cluster, namespace, "configmap", "engineering-portal")
    mounted = portal.dir / "volumes" / "config" / "manifests.yaml"
    assert mounted.read_text() == cm["data"]["manifests.yaml"]
    import urllib.request

    listed = session(portal.url(9180), "legacy", [])["tools"]
    verdicts = urllib.request.urlopen(portal.url(9464, "/admin/tools"), timeout=10).read().decode()
    assert "tickets_get_ticket" in listed, (listed, verdicts, portal.logs())
    for mode in MODES:
        out = session(
            portal.url(9180), mode,
            [("tickets_get_ticket", {"key": "PORT-101"}), ("handbook_search_documents", {"query": "portal"})],
        )
        assert "tickets_get_ticket" in out["tools"], (mode, out["tools"])
        assert any(t.startswith("handbook_") for t in out["tools"]), (mode, out["tools"])
        assert any(t.startswith("wiki_") for t in out["tools"]), (mode, out["tools"])
        for call in out["calls"]:
            assert not call["is_error"] and call["text"], (mode, call)
        assert "PORT-101" in out["calls"][0]["text"], (mode, out["calls"][0])


def test_a_deployed_stdio_servers_sidecar_from_the_apiserver_serves_both_eras(running, cluster, namespace):
    servers, _ = running
    tickets = servers["tickets-mcp"]
    deployment = get_object(cluster, namespace, "deployment", "tickets-mcp")
    spec = deployment["spec"]["template"]["spec"]
    # The init container copied the proxy in; the server container runs it in front of the
    # stdio command of the McpServer.
    assert [c["name"] for c in spec["initContainers"]] == ["install-proxy"]
    (server,) = spec["containers"]
    assert tickets.argv("server") == [*server["command"], *server["args"]]
    manifests = yaml.safe_load_all((tickets.dir / "volumes" / "config" / "manifests.yaml").read_text())
    assert any(d and d["kind"] == "McpServer" for d in manifests)
    for mode in MODES:
        out = session(tickets.url(9180), mode, [("get_ticket", {"key": "PORT-101"})])
        assert {"list_tickets", "get_ticket"} <= set(out["tools"]), (mode, out["tools"])
        assert not out["calls"][0]["is_error"] and "PORT-101" in out["calls"][0]["text"], (mode, out["calls"])
