"""MCP over http.client: the bench's requests and the checks that an endpoint answers them."""

from __future__ import annotations

import http.client
import json

MODERN = "2026-07-28"
LEGACY = "2025-11-25"
MESSAGE = "portcullis-bench"

META = {
    "io.modelcontextprotocol/protocolVersion": MODERN,
    "io.modelcontextprotocol/clientInfo": {"name": "portcullis-bench", "version": "1"},
    "io.modelcontextprotocol/clientCapabilities": {},
}


def modern_headers(method: str, name: str | None = None) -> dict[str, str]:
    h = {
        "content-type": "application/json",
        "accept": "application/json, text/event-stream",
        "mcp-protocol-version": MODERN,
        "mcp-method": method,
    }
    if name is not None:
        h["mcp-name"] = name
    return h


def call_body(tool: str, rid: int = 2, modern: bool = True) -> str:
    params: dict = {"name": tool, "arguments": {"message": MESSAGE}}
    if modern:
        params["_meta"] = META
    return json.dumps({"jsonrpc": "2.0", "id": rid, "method": "tools/call", "params": params}, separators=(",", ":"))


def rpc_message(body: bytes) -> dict:
    """The JSON-RPC message of a JSON or SSE response (the last `data:` event that parses)."""
    text = body.decode("utf-8")
    if text.lstrip().startswith("{"):
        return json.loads(text)
    last = None
    for line in text.splitlines():
        if line.startswith("data:") and line[5:].strip():
            try:
                last = json.loads(line[5:].strip())
            except ValueError:
                pass
    if last is None:
        raise ValueError(f"no JSON-RPC message in response: {text[:300]!r}")
    return last


class Client:
    """One keep-alive HTTP/1.1 connection to an MCP endpoint."""

    def __init__(self, url: str):
        rest = url.split("://", 1)[1]
        hostport, _, path = rest.partition("/")
        host, _, port = hostport.partition(":")
        self.path = "/" + path
        self.conn = http.client.HTTPConnection(host, int(port), timeout=30)

    def post(self, body: str, headers: dict[str, str]) -> tuple[int, dict[str, str], bytes]:
        self.conn.request("POST", self.path, body=body.encode(), headers=headers)
        r = self.conn.getresponse()
        data = r.read()
        return r.status, {k.lower(): v for k, v in r.getheaders()}, data

    def close(self) -> None:
        self.conn.close()


def check_call(url: str, tool: str) -> None:
    c = Client(url)
    try:
        status, _, body = c.post(call_body(tool), modern_headers("tools/call", tool))
        msg = rpc_message(body)
        text = msg.get("result", {}).get("content", [{}])[0].get("text")
        if status != 200 or text != MESSAGE:
            raise RuntimeError(f"tools/call {tool} at {url}: HTTP {status}: {body[:300]!r}")
    finally:
        c.close()


def legacy_session(url: str) -> str:
    """initialize + notifications/initialized; returns the Mcp-Session-Id."""
    c = Client(url)
    try:
        init = {
            "jsonrpc": "2.0",
            "id": 1,
            "method": "initialize",
            "params": {"protocolVersion": LEGACY, "capabilities": {}, "clientInfo": {"name": "portcullis-bench", "version": "1"}},
        }
        h = {"content-type": "application/json", "accept": "application/json, text/event-stream"}
        status, headers, body = c.post(json.dumps(init), h)
        sid = headers.get("mcp-session-id")
        if status != 200 or not sid:
            raise RuntimeError(f"initialize at {url}: HTTP {status} {headers} {body[:300]!r}")
        rpc_message(body)
        h2 = dict(h, **{"mcp-session-id": sid, "mcp-protocol-version": LEGACY})
        status, _, body = c.post(json.dumps({"jsonrpc": "2.0", "method": "notifications/initialized"}), h2)
        if status not in (200, 202):
            raise RuntimeError(f"notifications/initialized at {url}: HTTP {status} {body[:300]!r}")
        return sid
    finally:
        c.close()


def check_legacy_call(url: str, sid: str, tool: str) -> None:
    c = Client(url)
    try:
        h = legacy_headers(sid)
        status, _, body = c.post(call_body(tool, modern=False), h)
        text = rpc_message(body).get("result", {}).get("content", [{}])[0].get("text")
        if status != 200 or text != MESSAGE:
            raise RuntimeError(f"legacy tools/call {tool} at {url}: HTTP {status}: {body[:300]!r}")
    finally:
        c.close()


def legacy_headers(sid: str) -> dict[str, str]:
    return {
        "content-type": "application/json",
        "accept": "application/json, text/event-stream",
        "mcp-protocol-version": LEGACY,
        "mcp-session-id": sid,
    }

