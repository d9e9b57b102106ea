"""Real MCP clients: the Python SDK (`mcp` 2.x) and the TypeScript SDK v1 (a node script)."""

from __future__ import annotations

import asyncio
import json
import os
import subprocess
from collections.abc import Awaitable
from typing import Any, TypeVar

from mcp import Client

from . import paths

T = TypeVar("T")
MODES = ("legacy", "2026-07-28", "auto")


def run(coro: Awaitable[T], timeout: float = 60.0) -> T:
    """Run one async client interaction to completion, bounded in time."""

    async def bounded() -> T:
        return await asyncio.wait_for(coro, timeout)  # type: ignore[arg-type]

    return asyncio.run(bounded())


def client(url: str, mode: str = "auto", **kwargs: Any) -> Client:
    return Client(url, mode=mode, read_timeout_seconds=30, **kwargs)


async def list_all_tools(c: Client) -> list[Any]:
    tools, cursor = [], None
    for _ in range(100):
        page = await c.list_tools(cursor=cursor) if cursor else await c.list_tools()
        tools.extend(page.tools)
        cursor = page.next_cursor
        if not cursor:
            break
    return tools


async def list_all_resources(c: Client) -> list[Any]:
    out, cursor = [], None
    for _ in range(100):
        page = await c.list_resources(cursor=cursor) if cursor else await c.list_resources()
        out.extend(page.resources)
        cursor = page.next_cursor
        if not cursor:
            break
    return out


async def list_all_prompts(c: Client) -> list[Any]:
    out, cursor = [], None
    for _ in range(100):
        page = await c.list_prompts(cursor=cursor) if cursor else await c.list_prompts()
        out.extend(page.prompts)
        cursor = page.next_cursor
        if not cursor:
            break
    return out


def text_of(result: Any) -> str:
    """All text content of a CallToolResult / GetPromptResult / ReadResourceResult, joined."""
    parts: list[str] = []
    for item in getattr(result, "content", None) or []:
        if getattr(item, "text", None):
            parts.append(item.text)
    for item in getattr(result, "contents", None) or []:
        if getattr(item, "text", None):
            parts.append(item.text)
    for msg in getattr(result, "messages", None) or []:
        if getattr(msg.content, "text", None):
            parts.append(msg.content.text)
    return "\n".join(parts)


def ts_client(url: str, *args: str, timeout: float = 60.0) -> dict[str, Any]:
    """Run e2e/clients/ts_client.mjs with Node; returns its JSON output."""
    paths.require(paths.NODE_MODULES / "@modelcontextprotocol" / "sdk", "@modelcontextprotocol/sdk")
    p = subprocess.run(
        [paths.NODE, str(paths.CLIENTS / "ts_client.mjs"), url, *args],
        capture_output=True,
        text=True,
        timeout=timeout,
        env={**os.environ, "TS_CLIENT_TIMEOUT_MS": str(int(timeout * 1000) - 2000)},
    )
    if p.returncode != 0:
        raise AssertionError(f"ts_client exited {p.returncode}\nstdout: {p.stdout}\nstderr: {p.stderr}")
    return json.loads(p.stdout.strip().splitlines()[-1])
