"""Small builders of the Portcullis resources the cluster tests apply (plain dicts)."""

from __future__ import annotations

from typing import Any

API = "portcullis.dev/v1alpha1"
TEAM = "portcullis.dev/team"


def remote_server(name: str, url: str, team: str = "e2e", secret: tuple[str, str] | None = None) -> dict[str, Any]:
    remote: dict[str, Any] = {"url": url}
    if secret:
        remote["headers"] = [{"name": "X-Api-Key", "valueFrom": {"name": secret[0], "key": secret[1]}}]
    return {
        "apiVersion": API,
        "kind": "McpServer",
        "metadata": {"name": name, "labels": {TEAM: team}},
        "spec": {"remote": remote, "timeoutSeconds": 20},
    }


def deployed_server(name: str, team: str = "e2e") -> dict[str, Any]:
    """An http server the operator deploys with the proxy as a sidecar (the demo `docs`)."""
    return {
        "apiVersion": API,
        "kind": "McpServer",
        "metadata": {"name": name, "labels": {TEAM: team}},
        "spec": {
            "deployment": {
                "image": "portcullis-proxy:dev",
                "command": ["portcullis-demo"],
                "args": ["docs", "--listen", "0.0.0.0:8080"],
                "transport": "http",
                "port": 8080,
                "path": "/mcp",
            }
        },
    }


def portal(name: str, team: str = "e2e", replicas: int = 1) -> dict[str, Any]:
    return {
        "apiVersion": API,
        "kind": "McpPortal",
        "metadata": {"name": name},
        "spec": {"public": True, "replicas": replicas, "servers": {"selector": {"matchLabels": {TEAM: team}}}},
    }


def policy(name: str, portal: str, calls_per_minute: int = 60) -> dict[str, Any]:
    return {
        "apiVersion": API,
        "kind": "McpPolicy",
        "metadata": {"name": name},
        "spec": {
            "portals": [portal],
            "subjects": [{"group": "e2e"}],
            "rules": [{"servers": ["*"], "access": "read"}],
            "limits": {"callsPerMinute": calls_per_minute},
        },
    }


def secret(name: str, key: str, value: str) -> dict[str, Any]:
    return {"apiVersion": "v1", "kind": "Secret", "metadata": {"name": name}, "stringData": {key: value}}
