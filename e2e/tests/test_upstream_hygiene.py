"""What reaches an upstream: a recording upstream logs every HTTP request it receives."""

from __future__ import annotations

import json
from pathlib import Path

import httpx2

from harness import manifests, upstreams
from harness.clients import run, text_of
from harness.procs import ProcessManager
from harness.proxy import start_proxy
from mcp import Client
from mcp.client.streamable_http import streamable_http_client

CLIENT_TOKEN = "client-token-that-must-stay-at-the-portal"


def test_the_clients_authorization_header_and_session_never_reach_the_upstream(pm: ProcessManager, tmp_path: Path) -> None:
    record = tmp_path / "upstream-requests.jsonl"
    rec = upstreams.py_both_eras(pm, "rec", record=record)
    docs = manifests.portal_bundle("hyg", [manifests.remote_server("rec", rec.url)])
    portal = start_proxy(pm, manifests.write(tmp_path / "manifests", docs), "hyg")
    portal.wait_upstreams(["rec"])

    async def go() -> str:
        http = httpx2.AsyncClient(headers={"Authorization": f"Bearer {CLIENT_TOKEN}", "X-Client-Secret": CLIENT_TOKEN})
        async with Client(streamable_http_client(portal.url, http_client=http), mode="legacy") as c:
            result = await c.call_tool("rec_whoami", {})
            assert not result.is_error, text_of(result)
            return text_of(result)

    seen = run(go())
    upstream_headers = json.loads(seen)
    assert "authorization" not in upstream_headers, upstream_headers
    lines = record.read_text(encoding="utf-8").splitlines()
    assert lines, "the recording upstream saw no requests"
    leaked = [json.loads(line)["headers"] for line in lines if CLIENT_TOKEN in line]
    assert not leaked, f"the client's credential reached the upstream: {leaked}"
