"""Builders for the YAML documents `portcullis-proxy --manifests` reads (our CRDs + Secrets)."""

from __future__ import annotations

import secrets
from pathlib import Path
from typing import Any

import yaml

API = "portcullis.dev/v1alpha1"
LABEL = "portcullis.dev/e2e"


def remote_server(
    name: str,
    url: str,
    transport: str = "streamableHttp",
    prefix: str | None = None,
    timeout_seconds: int | None = None,
    labels: dict[str, str] | None = None,
) -> dict[str, Any]:
    spec: dict[str, Any] = {"remote": {"url": url, "transport": transport}}
    if prefix is not None:
        spec["prefix"] = prefix
    if timeout_seconds is not None:
        spec["timeoutSeconds"] = timeout_seconds
    return {
        "apiVersion": API,
        "kind": "McpServer",
        "metadata": {"name": name, "labels": labels if labels is not None else {LABEL: "true"}},
        "spec": spec,
    }


def stdio_server(
    name: str,
    command: list[str],
    args: list[str] | None = None,
    env: dict[str, str] | None = None,
    prefix: str | None = None,
    timeout_seconds: int | None = None,
    labels: dict[str, str] | None = None,
) -> dict[str, Any]:
    deployment: dict[str, Any] = {
        "image": "unused-locally",
        "command": command,
        "args": args or [],
        "transport": "stdio",
    }
    if env:
        deployment["env"] = [{"name": k, "value": v} for k, v in env.items()]
    spec: dict[str, Any] = {"deployment": deployment}
    if prefix is not None:
        spec["prefix"] = prefix
    if timeout_seconds is not None:
        spec["timeoutSeconds"] = timeout_seconds
    return {
        "apiVersion": API,
        "kind": "McpServer",
        "metadata": {"name": name, "labels": labels if labels is not None else {LABEL: "true"}},
        "spec": spec,
    }


def secret(name: str, string_data: dict[str, str]) -> dict[str, Any]:
    return {"apiVersion": "v1", "kind": "Secret", "metadata": {"name": name}, "stringData": string_data}


def session_key() -> str:
    """A fresh 48-byte key, URL-safe text (shared by replicas through one Secret)."""
    return secrets.token_urlsafe(48)


def portal(
    name: str,
    names: list[str] | None = None,
    selector: dict[str, str] | None = None,
    session_secret: str | None = "portal-session",
    extra_spec: dict[str, Any] | None = None,
) -> dict[str, Any]:
    servers: dict[str, Any] = {}
    if names is not None:
        servers["names"] = names
    if selector is not None:
        servers["selector"] = {"matchLabels": selector}
    spec: dict[str, Any] = {"public": True, "servers": servers}
    if session_secret:
        spec["sessionKeyFrom"] = {"name": session_secret, "key": "key"}
    spec.update(extra_spec or {})
    return {"apiVersion": API, "kind": "McpPortal", "metadata": {"name": name}, "spec": spec}


def portal_bundle(portal_name: str, servers: list[dict[str, Any]], key: str | None = None) -> list[dict[str, Any]]:
    """Servers, a portal over exactly them (by name) and its session-key Secret."""
    return [
        *servers,
        secret("portal-session", {"key": key or session_key()}),
        portal(portal_name, names=[s["metadata"]["name"] for s in servers]),
    ]


def write(directory: Path, docs: list[dict[str, Any]], filename: str = "portal.yaml") -> Path:
    directory.mkdir(parents=True, exist_ok=True)
    path = directory / filename
    path.write_text(yaml.safe_dump_all(docs, sort_keys=False), encoding="utf-8")
    return path
