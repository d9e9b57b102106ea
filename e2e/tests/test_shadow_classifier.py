"""Shadow-MCP traffic classifier on a corpus of real recorded traffic.

Real MCP clients talk to real MCP servers through a real nginx reverse proxy, next to ordinary
traffic through the same nginx:

- `@modelcontextprotocol/server-everything` over Streamable HTTP (Python `mcp` client, legacy
  era) and over legacy HTTP+SSE (Python `mcp` SSE client: `GET /sse` + `POST /message`);
- the Python `mcp` 2.x server, driven by the Python client in `legacy` mode and in `2026-07-28`
  mode (two destination names, one server);
- ordinary traffic: a REST/JSON shop API (including `/api/messages`, JSON bodies with a `method`
  field, a plain `text/event-stream` endpoint at `/sse` and a `/message` endpoint), the same on a
  host named `mcp-metrics.example`, and a JSON-RPC 2.0 service that is not MCP (methods such as
  `getBalance`, `ping`, an LSP-style `initialize`, a batch, a notification).

Destinations are told apart by Host name: nginx routes each `server_name` to one upstream. nginx
writes two access logs of the same requests with `escape=json`: one with nginx variable names,
one with Envoy's access-log field names (Envoy itself cannot be installed here: it is not in
Debian or PyPI/npm). The clients' HTTP requests are recorded with httpx event hooks into a HAR
1.2 file and a JSON-lines file. Ground truth is the upstream each request went to (nginx's
`$upstream_addr`; for HAR/JSON lines the Host, which nginx routes to exactly one upstream),
never the classifier.

Asserted for every format: every MCP request is flagged (recall 100%), no ordinary request is
flagged, and with a manifest naming one MCP server its traffic is sanctioned and the rest shadow.
"""

from __future__ import annotations

import asyncio
import json
import subprocess
import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import httpx
import httpx2
import pytest
import yaml
from mcp import Client
from mcp.client.sse import sse_client
from mcp.client.streamable_http import streamable_http_client

from harness import manifests, paths, upstreams
from harness.ports import free_port, wait_port
from harness.procs import ProcessManager

# Destination name -> what it is. MCP names deliberately avoid the `mcp.` prefix, so the protocol
# signals must find them; one ordinary host deliberately looks like MCP by name.
MCP_HOSTS = {
    "everything.tools.test": "server-everything streamableHttp",
    "sse.everything.test": "server-everything sse",
    "py-legacy.tools.test": "python mcp server, legacy era",
    "py-modern.tools.test": "python mcp server, 2026-07-28 era",
}
ORDINARY_HOSTS = {
    "api.shop.test": "REST/JSON",
    "mcp-metrics.example": "REST/JSON",
    "rpc.ledger.test": "JSON-RPC 2.0, not MCP",
}
SANCTIONED_HOST = "py-modern.tools.test"

NGINX_FORMAT = (
    '{"time_local":"$time_local","remote_addr":"$remote_addr","request_method":"$request_method",'
    '"request_uri":"$request_uri","host":"$host","status":"$status","upstream_addr":"$upstream_addr",'
    '"http_user_agent":"$http_user_agent","http_accept":"$http_accept","http_content_type":"$http_content_type",'
    '"http_mcp_session_id":"$http_mcp_session_id","http_mcp_protocol_version":"$http_mcp_protocol_version",'
    '"http_mcp_method":"$http_mcp_method","http_mcp_name":"$http_mcp_name","request_body":"$request_body"}'
)
# Envoy's field names (its default JSON format plus %REQ(...)% headers); `request_body` has no
# Envoy operator and is what a body-logging filter would add.
ENVOY_FORMAT = (
    '{"start_time":"$time_iso8601","method":"$request_method","path":"$request_uri",'
    '"protocol":"$server_protocol","response_code":$status,"bytes_received":$request_length,'
    '"bytes_sent":$bytes_sent,"user_agent":"$http_user_agent","request_id":"$request_id",'
    '"authority":"$http_host","upstream_host":"$upstream_addr","accept":"$http_accept",'
    '"content_type":"$http_content_type","mcp_session_id":"$http_mcp_session_id",'
    '"mcp_protocol_version":"$http_mcp_protocol_version","mcp_method":"$http_mcp_method",'
    '"request_body":"$request_body"}'
)


# --- ordinary services ---------------------------------------------------------------------------


class _Plain(BaseHTTPRequestHandler):
    """A small REST/JSON API and a JSON-RPC 2.0 service (not MCP), on one handler."""

    protocol_version = "HTTP/1.1"

    def log_message(self, *args: Any) -> None:  # quiet
        pass

    def _send(self, status: int, body: bytes, ctype: str = "application/json") -> None:
        self.send_response(status)
        self.send_header("Content-Type", ctype)
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def do_GET(self) -> None:  # noqa: N802
        if self.path.startswith("/sse"):
            self._send(200, b"event: tick\ndata: {\"n\": 1}\n\n", "text/event-stream")
        else:
            self._send(200, json.dumps({"path": self.path, "items": [1, 2, 3]}).encode())

    def do_POST(self) -> None:  # noqa: N802
        n = int(self.headers.get("Content-Length", "0"))
        raw = self.rfile.read(n)
        if self.path.startswith("/rpc"):
            req = json.loads(raw)

            def answer(m: dict[str, Any]) -> dict[str, Any] | None:
                if "id" not in m:
                    return None
                return {"jsonrpc": "2.0", "id": m["id"], "result": {"method": m.get("method"), "ok": True}}

            out = [a for a in map(answer, req) if a] if isinstance(req, list) else answer(req)
            if out is None or out == []:
                self._send(204, b"")
            else:
                self._send(200, json.dumps(out).encode())
        else:
            self._send(201, json.dumps({"received": len(raw)}).encode())

    def do_DELETE(self) -> None:  # noqa: N802
        self._send(204, b"")


def _start_plain() -> tuple[ThreadingHTTPServer, int]:
    server = ThreadingHTTPServer(("127.0.0.1", 0), _Plain)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    return server, server.server_address[1]


# --- recording -------------------------------------------------------------------------------------


class Recorder:
    """httpx/httpx2 event hooks that record every request the clients send (HAR + JSON lines)."""

    def __init__(self) -> None:
        self.entries: list[dict[str, Any]] = []

    def on_request_sync(self, request: Any) -> None:
        """httpx (sync) hook; our clients never send streaming bodies."""
        self.entries.append(
            {
                "method": request.method,
                "url": str(request.url),
                "headers": [(k, v) for k, v in request.headers.multi_items()],
                "body": request.content.decode("utf-8", "replace"),
                "time": time.strftime("%Y-%m-%dT%H:%M:%S.000Z", time.gmtime()),
            }
        )

    async def on_request(self, request: Any) -> None:
        """httpx2 (async) hook, used by the MCP clients."""
        self.on_request_sync(request)

    def host_of(self, e: dict[str, Any]) -> str:
        return next(v for k, v in e["headers"] if k.lower() == "host").lower()

    def write_har(self, path: Path) -> None:
        entries = []
        for e in self.entries:
            req: dict[str, Any] = {
                "method": e["method"],
                "url": e["url"],
                "httpVersion": "HTTP/1.1",
                "cookies": [],
                "headers": [{"name": k, "value": v} for k, v in e["headers"]],
                "queryString": [],
                "headersSize": -1,
                "bodySize": len(e["body"].encode()),
            }
            if e["body"]:
                ctype = next((v for k, v in e["headers"] if k.lower() == "content-type"), "")
                req["postData"] = {"mimeType": ctype, "text": e["body"]}
            entries.append(
                {
                    "startedDateTime": e["time"],
                    "time": 0,
                    "request": req,
                    "response": {
                        "status": 0,
                        "statusText": "",
                        "httpVersion": "HTTP/1.1",
                        "cookies": [],
                        "headers": [],
                        "content": {"size": 0, "mimeType": ""},
                        "redirectURL": "",
                        "headersSize": -1,
                        "bodySize": -1,
                    },
                    "cache": {},
                    "timings": {"send": 0, "wait": 0, "receive": 0},
                }
            )
        har = {"log": {"version": "1.2", "creator": {"name": "portcullis-e2e", "version": "1"}, "entries": entries}}
        path.write_text(json.dumps(har, indent=2), encoding="utf-8")

    def write_jsonl(self, path: Path) -> None:
        with path.open("w", encoding="utf-8") as f:
            for e in self.entries:
                url = httpx.URL(e["url"])
                target = url.raw_path.decode()
                rec = {
                    "host": self.host_of(e),
                    "path": target,
                    "method": e["method"],
                    "headers": {k: v for k, v in e["headers"]},
                    "body": e["body"] or None,
                }
                f.write(json.dumps(rec) + "\n")


# --- nginx ----------------------------------------------------------------------------------------


def _start_nginx(pm: ProcessManager, workdir: Path, routes: dict[str, str]) -> tuple[int, Path, Path]:
    binary = paths.require(paths.NGINX, "nginx (apt-get install nginx)")
    (workdir / "logs").mkdir(parents=True, exist_ok=True)
    port = free_port()
    servers = "\n".join(
        f"""  server {{
    listen 127.0.0.1:{port};
    server_name {name};
    location / {{
      proxy_pass http://{backend};
      proxy_http_version 1.1;
      proxy_set_header Connection "";
      proxy_buffering off;
      proxy_read_timeout 60s;
    }}
  }}"""
        for name, backend in routes.items()
    )
    nginx_log, envoy_log = workdir / "logs" / "nginx.json.log", workdir / "logs" / "envoy.json.log"
    conf = f"""
daemon off;
worker_processes 1;
pid {workdir}/nginx.pid;
error_log {workdir}/logs/error.log info;
events {{ worker_connections 256; }}
http {{
  log_format nginxjson escape=json '{NGINX_FORMAT}';
  log_format envoyjson escape=json '{ENVOY_FORMAT}';
  access_log {nginx_log} nginxjson;
  access_log {envoy_log} envoyjson;
  client_body_buffer_size 1m;
  client_body_temp_path {workdir}/client_body;
  proxy_temp_path {workdir}/proxy;
  fastcgi_temp_path {workdir}/fastcgi;
  uwsgi_temp_path {workdir}/uwsgi;
  scgi_temp_path {workdir}/scgi;
  server {{
    listen 127.0.0.1:{port} default_server;
    return 421;
  }}
{servers}
}}
"""
    conf_path = workdir / "nginx.conf"
    conf_path.write_text(conf, encoding="utf-8")
    pm.start("nginx", [binary, "-p", str(workdir), "-c", str(conf_path), "-e", str(workdir / "logs" / "error.log")])
    wait_port(port)
    return port, nginx_log, envoy_log


# --- traffic --------------------------------------------------------------------------------------


def _mcp_http_client(rec: Recorder, host: str) -> httpx2.AsyncClient:
    return httpx2.AsyncClient(
        headers={"Host": host},
        timeout=httpx2.Timeout(30.0, read=60.0),
        event_hooks={"request": [rec.on_request]},
    )


async def _mcp_session(client: Client) -> None:
    async with client as c:
        tools = await c.list_tools()
        assert tools.tools, "the server lists tools"
        names = {t.name for t in tools.tools}
        tool = "echo" if "echo" in names else sorted(names)[0]
        await c.call_tool(tool, {"message": "hello"})


async def _mcp_traffic(rec: Recorder, base: str) -> None:
    # server-everything over Streamable HTTP (legacy era: initialize + Mcp-Session-Id + DELETE).
    async with _mcp_http_client(rec, "everything.tools.test") as h:
        await _mcp_session(Client(streamable_http_client(f"{base}/mcp", http_client=h), mode="legacy", read_timeout_seconds=30))
    # The Python server in both eras.
    async with _mcp_http_client(rec, "py-legacy.tools.test") as h:
        await _mcp_session(Client(streamable_http_client(f"{base}/mcp", http_client=h), mode="legacy", read_timeout_seconds=30))
    async with _mcp_http_client(rec, "py-modern.tools.test") as h:
        await _mcp_session(Client(streamable_http_client(f"{base}/mcp", http_client=h), mode="2026-07-28", read_timeout_seconds=30))

    # server-everything over legacy HTTP+SSE.
    def factory(headers: Any = None, timeout: Any = None, auth: Any = None) -> httpx2.AsyncClient:
        c = _mcp_http_client(rec, "sse.everything.test")
        if headers:
            c.headers.update(headers)
        if auth is not None:
            c.auth = auth
        return c

    await _mcp_session(Client(sse_client(f"{base}/sse", httpx_client_factory=factory), mode="legacy", read_timeout_seconds=30))


def _ordinary_traffic(rec: Recorder, base: str) -> None:
    hooks = {"request": [rec.on_request_sync]}
    with httpx.Client(base_url=base, event_hooks=hooks, timeout=10) as c:
        for host in ("api.shop.test", "mcp-metrics.example"):
            h = {"Host": host}
            assert c.get("/api/products?page=2", headers=h).status_code == 200
            assert c.post("/api/orders", headers=h, json={"method": "card", "items": [1, 2]}).status_code == 201
            # A REST messages API: path and a JSON "method" field, no JSON-RPC.
            assert c.post("/api/messages", headers=h, json={"method": "email", "to": "a@b.test", "message": "hi"}).status_code == 201
            assert c.post("/message", headers=h, json={"text": "hello", "method": "tools/call"}).status_code == 201
            # A plain server-sent-events endpoint (not MCP).
            r = c.get("/sse", headers={**h, "Accept": "text/event-stream"})
            assert r.status_code == 200 and "tick" in r.text
            assert c.get("/metrics", headers=h).status_code == 200
            assert c.delete("/api/orders/7", headers=h).status_code == 204
        h = {"Host": "rpc.ledger.test"}
        calls: list[Any] = [
            {"jsonrpc": "2.0", "id": 1, "method": "getBalance", "params": {"account": "42"}},
            {"jsonrpc": "2.0", "id": 2, "method": "subtract", "params": [42, 23]},
            {"jsonrpc": "2.0", "method": "update", "params": [1, 2, 3]},
            {"jsonrpc": "2.0", "id": 3, "method": "ping"},
            # An LSP-style initialize (no MCP protocolVersion).
            {"jsonrpc": "2.0", "id": 4, "method": "initialize", "params": {"processId": 1, "rootUri": None, "capabilities": {}}},
            [
                {"jsonrpc": "2.0", "id": 5, "method": "eth_blockNumber", "params": []},
                {"jsonrpc": "2.0", "id": 6, "method": "getUser", "params": {"id": 1}},
            ],
        ]
        for body in calls:
            assert c.post("/rpc", headers=h, json=body).status_code in (200, 204)


# --- the scan -------------------------------------------------------------------------------------


def _scan(*args: str) -> tuple[int, str, str]:
    proxy = paths.require(paths.PROXY_BIN, "portcullis-proxy (make build)")
    p = subprocess.run([str(proxy), "shadow", "scan", *args], capture_output=True, text=True, timeout=60)
    return p.returncode, p.stdout, p.stderr


def _hits(stdout: str) -> dict[int, dict[str, Any]]:
    return {h["line"]: h for h in map(json.loads, stdout.splitlines())}


@pytest.fixture(scope="module")
def corpus(module_pm: ProcessManager, tmp_path_factory: pytest.TempPathFactory) -> dict[str, Any]:
    work = tmp_path_factory.mktemp("shadow")
    everything = upstreams.everything_streamable(module_pm, "every-http")
    everything_sse = upstreams.everything_sse(module_pm, "every-sse")
    py = upstreams.py_both_eras(module_pm, "pyboth")
    shop, shop_port = _start_plain()
    ledger, ledger_port = _start_plain()
    hostport = lambda url: url.split("/")[2]  # noqa: E731
    backends = {
        "everything.tools.test": hostport(everything.url),
        "sse.everything.test": hostport(everything_sse.url),
        "py-legacy.tools.test": hostport(py.url),
        "py-modern.tools.test": hostport(py.url),
        "api.shop.test": f"127.0.0.1:{shop_port}",
        "mcp-metrics.example": f"127.0.0.1:{shop_port}",
        "rpc.ledger.test": f"127.0.0.1:{ledger_port}",
    }
    port, nginx_log, envoy_log = _start_nginx(module_pm, work / "nginx", backends)
    base = f"http://127.0.0.1:{port}"
    rec = Recorder()
    try:
        asyncio.run(asyncio.wait_for(_mcp_traffic(rec, base), 90))
        _ordinary_traffic(rec, base)
        # nginx writes a line when a request completes (an SSE stream when the client closes
        # it): wait until both logs hold every request the clients sent.
        deadline = time.monotonic() + 20
        while time.monotonic() < deadline:
            counts = [len(p.read_text().splitlines()) if p.exists() else 0 for p in (nginx_log, envoy_log)]
            if min(counts) >= len(rec.entries):
                break
            time.sleep(0.2)
    finally:
        shop.shutdown()
        ledger.shutdown()
    har, jsonl = work / "traffic.har", work / "traffic.jsonl"
    rec.write_har(har)
    rec.write_jsonl(jsonl)
    upstream_kind = {addr: ("mcp" if name in MCP_HOSTS else "ordinary") for name, addr in backends.items()}
    manifest = work / "sanctioned.yaml"
    manifest.write_text(
        yaml.safe_dump(manifests.remote_server("py-modern", f"http://{SANCTIONED_HOST}/mcp")), encoding="utf-8"
    )
    return {
        "nginx": nginx_log,
        "envoy": envoy_log,
        "har": har,
        "jsonl": jsonl,
        "requests": len(rec.entries),
        "upstream_kind": upstream_kind,
        "manifest": manifest,
    }


def _truth(corpus: dict[str, Any], fmt: str) -> tuple[dict[int, str], dict[int, str]]:
    """line -> host of MCP requests, and of ordinary requests, from where each request went."""
    mcp, ordinary = {}, {}
    if fmt in ("nginx", "envoy"):
        for n, line in enumerate(corpus[fmt].read_text().splitlines(), 1):
            r = json.loads(line)
            upstream = r["upstream_addr"] if fmt == "nginx" else r["upstream_host"]
            host = r["host"] if fmt == "nginx" else r["authority"]
            assert upstream in corpus["upstream_kind"], f"{fmt} line {n} went to no known upstream: {line}"
            (mcp if corpus["upstream_kind"][upstream] == "mcp" else ordinary)[n] = host
    else:
        if fmt == "har":
            entries = json.loads(corpus["har"].read_text())["log"]["entries"]
            hosts = [next(h["value"] for h in e["request"]["headers"] if h["name"].lower() == "host") for e in entries]
        else:
            hosts = [json.loads(line)["host"] for line in corpus["jsonl"].read_text().splitlines()]
        for n, host in enumerate(hosts, 1):
            assert host in MCP_HOSTS or host in ORDINARY_HOSTS, host
            (mcp if host in MCP_HOSTS else ordinary)[n] = host
    return mcp, ordinary


def test_the_corpus_holds_both_eras_both_transports_and_tricky_ordinary_traffic(corpus: dict[str, Any]) -> None:
    records = [json.loads(line) for line in corpus["nginx"].read_text().splitlines()]
    assert len(records) == corpus["requests"], "nginx logged every request the clients sent"
    assert len(corpus["envoy"].read_text().splitlines()) == corpus["requests"]
    by_host: dict[str, list[dict[str, Any]]] = {}
    for r in records:
        by_host.setdefault(r["host"], []).append(r)
    assert set(by_host) == set(MCP_HOSTS) | set(ORDINARY_HOSTS), sorted(by_host)
    bodies = lambda host: " ".join(r["request_body"] for r in by_host[host])  # noqa: E731
    assert '"method":"initialize"' in bodies("py-legacy.tools.test").replace(" ", "")
    assert any(r["http_mcp_session_id"] for r in by_host["py-legacy.tools.test"]), "legacy sessions"
    modern = by_host["py-modern.tools.test"]
    assert any(r["http_mcp_method"] for r in modern), "2026-07-28 requests carry Mcp-Method"
    assert "initialize" not in bodies("py-modern.tools.test"), "the modern era has no handshake"
    sse = by_host["sse.everything.test"]
    assert any(r["request_method"] == "GET" and r["request_uri"] == "/sse" for r in sse)
    assert any(r["request_uri"].startswith("/message?sessionId=") for r in sse)
    assert any(r["request_method"] == "DELETE" for r in by_host["everything.tools.test"])
    assert '"jsonrpc"' in bodies("rpc.ledger.test").replace(" ", "")


@pytest.mark.parametrize("fmt", ["nginx", "envoy", "har", "jsonl"])
def test_every_mcp_request_is_found_and_no_ordinary_request_is_flagged(corpus: dict[str, Any], fmt: str) -> None:
    mcp, ordinary = _truth(corpus, fmt)
    assert len(mcp) >= 15 and len(ordinary) >= 15, (len(mcp), len(ordinary))
    code, out, err = _scan("--json", str(corpus[fmt]))  # auto-detected format
    assert code == 1, f"shadow MCP found means exit 1\n{err}"
    assert err == "", err
    hits = _hits(out)
    missed = {n: h for n, h in mcp.items() if n not in hits}
    assert not missed, f"{fmt}: MCP requests not found: {missed}"
    flagged = {n: hits[n] for n in ordinary if n in hits}
    assert not flagged, f"{fmt}: ordinary requests flagged: {flagged}"
    for n, hit in hits.items():
        assert hit["host"].split(":")[0] == mcp[n], hit
        assert hit["confidence"] >= 0.6 and hit["evidence"], hit
        assert hit["sanctioned"] is False

    code, out, _ = _scan("--format", fmt, str(corpus[fmt]))
    assert code == 1
    lines = out.splitlines()
    for host in MCP_HOSTS:
        assert any(line.startswith(host) and " shadow " in line for line in lines), (host, out)
    for host in ORDINARY_HOSTS:
        assert not any(line.startswith(host) for line in lines), (host, out)


def test_a_manifest_sanctions_its_servers_traffic_and_the_rest_stays_shadow(corpus: dict[str, Any]) -> None:
    code, out, err = _scan("--json", "--manifests", str(corpus["manifest"]), str(corpus["nginx"]))
    assert code == 1, err
    hits = list(_hits(out).values())
    sanctioned = {h["host"] for h in hits if h["sanctioned"]}
    shadow = {h["host"] for h in hits if not h["sanctioned"]}
    assert sanctioned == {SANCTIONED_HOST}
    assert shadow == set(MCP_HOSTS) - {SANCTIONED_HOST}

    code, out, _ = _scan("--manifests", str(corpus["manifest"]), str(corpus["nginx"]))
    assert any(line.startswith(SANCTIONED_HOST) and " sanctioned " in line for line in out.splitlines()), out

    # Everything sanctioned: no shadow MCP, exit 0.
    others = [a for h in MCP_HOSTS if h != SANCTIONED_HOST for a in ("--sanctioned", h)]
    code, out, err = _scan("--manifests", str(corpus["manifest"]), *others, str(corpus["envoy"]), str(corpus["har"]))
    assert code == 0, out + err
    assert "0 shadow" in out, out
