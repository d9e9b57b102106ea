"""A real Python MCP server (PyPI `mcp` 2.x) that serves both protocol eras over Streamable HTTP.

Legacy clients (`initialize`, `Mcp-Session-Id`) and modern 2026-07-28 clients (`server/discover`,
per-request `_meta`) talk to the same endpoint: the SDK picks the era per request.

    python py_both_eras.py --port 8123 [--name pyboth] [--record FILE] [--stateless]

Tools: `add` (structured output with an outputSchema), `echo`, `whoami` (reports the upstream
request headers, for tests that check what the portal forwards). Resource `memo://greeting` and
template `memo://notes/{topic}`. Prompt `summarize`.

With `--record FILE`, every HTTP request this server receives is appended to FILE as one JSON
line: method, path, headers and body (a "recording" upstream for security tests).

Prints `py_both_eras: serving http://127.0.0.1:PORT/mcp` once it listens.
"""

from __future__ import annotations

import argparse
import json
import sys
import threading
import urllib.parse
from contextvars import ContextVar
from typing import Any

import uvicorn
from pydantic import BaseModel, Field

from mcp.server.mcpserver import MCPServer

_request_headers: ContextVar[dict[str, str]] = ContextVar("request_headers", default={})


class Sum(BaseModel):
    """Result of `add`."""

    sum: int = Field(description="a + b")
    operands: list[int] = Field(description="the two operands")


def build(name: str) -> MCPServer:
    mcp = MCPServer(name=name, version="1.0.0", instructions="Python test upstream for Portcullis e2e.")

    @mcp.tool(description="Add two integers; returns structured content")
    def add(a: int, b: int) -> Sum:
        return Sum(sum=a + b, operands=[a, b])

    @mcp.tool(description="Echo a message back, prefixed with the server name")
    def echo(message: str) -> str:
        return f"{name} echo: {message}"

    @mcp.tool(description="Return the HTTP request headers this server received for this call")
    def whoami() -> str:
        return json.dumps(_request_headers.get(), sort_keys=True)

    @mcp.resource("memo://greeting", name="greeting", description="A fixed greeting", mime_type="text/plain")
    def greeting() -> str:
        return f"hello from {name}"

    @mcp.resource("memo://notes/{topic}", name="note", description="A note on a topic", mime_type="text/plain")
    def note(topic: str) -> str:
        return f"note about {urllib.parse.unquote(topic)}"

    @mcp.prompt(description="Ask for a summary of a topic")
    def summarize(topic: str) -> str:
        return f"Please summarize {topic} in one sentence."

    return mcp


class Recorder:
    """ASGI middleware: remembers request headers for `whoami` and optionally records requests."""

    def __init__(self, app: Any, record_path: str | None):
        self.app = app
        self.record_path = record_path
        self.lock = threading.Lock()

    async def __call__(self, scope: dict[str, Any], receive: Any, send: Any) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        headers = {k.decode("latin-1").lower(): v.decode("latin-1") for k, v in scope.get("headers", [])}
        _request_headers.set(headers)
        chunks: list[bytes] = []
        more = True
        while more:
            message = await receive()
            if message["type"] != "http.request":
                break
            chunks.append(message.get("body", b""))
            more = message.get("more_body", False)
        body = b"".join(chunks)
        if self.record_path:
            line = json.dumps(
                {
                    "method": scope["method"],
                    "path": scope["path"],
                    "query": scope.get("query_string", b"").decode("latin-1"),
                    "headers": headers,
                    "body": body.decode("utf-8", "replace"),
                }
            )
            with self.lock, open(self.record_path, "a", encoding="utf-8") as f:
                f.write(line + "\n")
        sent = False

        async def replay() -> dict[str, Any]:
            nonlocal sent
            if not sent:
                sent = True
                return {"type": "http.request", "body": body, "more_body": False}
            return await receive()

        await self.app(scope, replay, send)


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--port", type=int, required=True)
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--name", default="pyboth")
    parser.add_argument("--record", default=None)
    parser.add_argument("--stateless", action="store_true")
    parser.add_argument("--tls-cert", default=None, help="PEM certificate: serve https")
    parser.add_argument("--tls-key", default=None)
    args = parser.parse_args()

    mcp = build(args.name)
    app = mcp.streamable_http_app(stateless_http=args.stateless, host=args.host)
    config = uvicorn.Config(
        Recorder(app, args.record),
        host=args.host,
        port=args.port,
        log_level="warning",
        ssl_certfile=args.tls_cert,
        ssl_keyfile=args.tls_key,
    )
    scheme = "https" if args.tls_cert else "http"
    server = uvicorn.Server(config)

    original_startup = server.startup

    async def startup(sockets: Any = None) -> None:
        await original_startup(sockets)
        print(f"py_both_eras: serving {scheme}://{args.host}:{args.port}/mcp", flush=True)

    server.startup = startup  # type: ignore[method-assign]
    server.run()


if __name__ == "__main__":
    sys.exit(main())
