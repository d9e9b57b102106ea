"""The Deployments `portcullis-operator render` writes for examples/operator/portal.yaml run, as
their pod specs say, under the pod runner (e2e/cluster/podrunner.py: each pod in its own
network and mount namespace, volumes at their mount paths, probes on the pod IP), with the
example's own `wiki` Deployment and every Service: the official Python MCP client lists and
calls tools through the portal and through a deployed server's sidecar, in both protocol eras.
No cluster needed (the cluster suite does the same with what the operator wrote)."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest
import yaml

ROOT = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(ROOT / "e2e" / "cluster"))

from mcp_session import session_in_subprocess  # noqa: E402
from podrunner import Cluster, PodError, fetch_from_objects, proxy_image  # noqa: E402

NAMESPACE = "portcullis-demo"  # the wiki McpServer's URL names it
MODES = ("legacy", "2026-07-28")


def example_documents(policy: bool) -> list[dict[str, Any]]:
    """examples/operator/portal.yaml; without its McpPolicy unless `policy`: the policy opens
    tools to the group `engineering` only, which no caller of a `public` (unauthenticated)
    portal is in, so an anonymous client sees no tools (checked below)."""
    docs = [d for d in yaml.safe_load_all((ROOT / "examples" / "operator" / "portal.yaml").read_text()) if d]
    return [d for d in docs if policy or d["kind"] != "McpPolicy"]


def rendered_and_example_objects(operator_bin: Path, tmp: Path, policy: bool = False) -> list[dict[str, Any]]:
    example = tmp / "portal.yaml"
    example.write_text(yaml.safe_dump_all(example_documents(policy)))
    out = subprocess.run(
        [str(operator_bin), "render", "--manifests", str(example), "--namespace", NAMESPACE],
        check=True, capture_output=True, text=True,
    ).stdout
    docs = [d for d in yaml.safe_load_all(out) if d]
    # The plain Kubernetes objects of the example file (the wiki Deployment, its Service, the
    # Secret), as kubectl would apply them into the namespace.
    for d in example_documents(policy):
        if d and d["apiVersion"] in ("v1", "apps/v1"):
            d["metadata"].setdefault("namespace", NAMESPACE)
            docs.append(d)
    return docs


def by_kind(docs: list[dict[str, Any]], kind: str) -> dict[str, dict[str, Any]]:
    return {d["metadata"]["name"]: d for d in docs if d["kind"] == kind}


@pytest.fixture(scope="module")
def demo_bin(proxy_bin: Path) -> Path:
    p = proxy_bin.parent / "portcullis-demo"
    assert p.exists(), f"{p} missing: run `cargo build -p portcullis-proxy --bins` first"
    return p


@pytest.fixture(scope="module")
def running(operator_bin: Path, proxy_bin: Path, demo_bin: Path, tmp_path_factory: pytest.TempPathFactory):
    docs = rendered_and_example_objects(operator_bin, tmp_path_factory.mktemp("render"))
    deployments = by_kind(docs, "Deployment")
    assert set(deployments) == {"wiki", "tickets-mcp", "docs-mcp", "engineering-portal"}, deployments.keys()
    with Cluster(
        fetch_from_objects(docs), proxy_image(proxy_bin, demo_bin), NAMESPACE,
        workdir=tmp_path_factory.mktemp("pods"),
    ) as cluster:
        for svc in by_kind(docs, "Service").values():
            cluster.expose(svc)
        pods = {name: cluster.run(deployments[name]) for name in ("wiki", "tickets-mcp", "docs-mcp", "engineering-portal")}
        yield cluster, pods, deployments


def test_the_portal_pod_runs_the_proxy_with_exactly_the_command_line_of_its_pod_spec(running) -> None:
    _, pods, deployments = running
    spec = deployments["engineering-portal"]["spec"]["template"]["spec"]["containers"][0]
    argv = pods["engineering-portal"].argv("proxy")
    assert argv == ["/usr/local/bin/portcullis-proxy", *spec["args"]], argv
    assert "0.0.0.0:9180" in argv and "/etc/portcullis/config" in argv, argv


def test_the_stdio_server_pod_runs_the_proxy_its_init_container_copied_in(running) -> None:
    _, pods, deployments = running
    pod_spec = deployments["tickets-mcp"]["spec"]["template"]["spec"]
    assert [c["name"] for c in pod_spec["initContainers"]] == ["install-proxy"]
    assert pods["tickets-mcp"].argv("server")[0] == "/portcullis/bin/portcullis-proxy"
    copied = pods["tickets-mcp"].dir / "volumes" / "portcullis-bin" / "portcullis-proxy"
    assert copied.stat().st_uid == 65532, "the init container ran as the pod's user"


@pytest.mark.parametrize("mode", MODES)
def test_a_deployed_stdio_servers_sidecar_serves_its_tools_over_http(running, mode: str) -> None:
    _, pods, _ = running
    out = session_in_subprocess(pods["tickets-mcp"].url(9180), mode, [("get_ticket", {"key": "PORT-101"})])
    assert "list_tickets" in out["tools"] and "get_ticket" in out["tools"], out["tools"]
    call = out["calls"][0]
    assert not call["is_error"] and "PORT-101" in call["text"], call


@pytest.mark.parametrize("mode", MODES)
def test_the_rendered_portal_lists_and_calls_the_tools_of_all_three_servers(running, mode: str) -> None:
    _, pods, _ = running
    out = session_in_subprocess(
        pods["engineering-portal"].url(9180), mode,
        [("tickets_get_ticket", {"key": "PORT-101"}), ("handbook_search_documents", {"query": "portal"})],
    )
    tools = out["tools"]
    assert "tickets_get_ticket" in tools, tools
    assert any(t.startswith("handbook_") for t in tools), tools  # docs, deployed http, prefix handbook
    assert any(t.startswith("wiki_") for t in tools), tools  # the remote server, through its Service
    for call in out["calls"]:
        assert not call["is_error"] and call["text"], call
    assert "PORT-101" in out["calls"][0]["text"]


def test_a_missing_secret_fails_the_portal_pod_with_a_message_naming_the_volume(
    operator_bin: Path, proxy_bin: Path, demo_bin: Path, tmp_path: Path
) -> None:
    (tmp_path / "pods").mkdir()
    docs = [d for d in rendered_and_example_objects(operator_bin, tmp_path) if d["kind"] != "Secret"]
    with Cluster(fetch_from_objects(docs), proxy_image(proxy_bin, demo_bin), NAMESPACE, workdir=tmp_path / "pods") as c:
        with pytest.raises(PodError, match=r'volumes\[\d+\] \(secret-0\): secret "wiki-credentials" not found'):
            c.run(by_kind(docs, "Deployment")["engineering-portal"])


def test_with_the_examples_policy_an_anonymous_caller_of_the_public_portal_sees_no_tools(
    operator_bin: Path, proxy_bin: Path, demo_bin: Path, tmp_path: Path
) -> None:
    docs = rendered_and_example_objects(operator_bin, tmp_path, policy=True)
    deployments = by_kind(docs, "Deployment")
    with Cluster(fetch_from_objects(docs), proxy_image(proxy_bin, demo_bin), NAMESPACE, workdir=tmp_path / "pods") as c:
        for svc in by_kind(docs, "Service").values():
            c.expose(svc)
        for name in ("wiki", "tickets-mcp", "docs-mcp"):
            c.run(deployments[name])
        portal = c.run(deployments["engineering-portal"])
        assert session_in_subprocess(portal.url(9180), "legacy", [])["tools"] == []
