"""One session of the official Python MCP client (`mcp`, e2e/.venv) against a URL: list every
tool, then make calls; the result as JSON. Importable (`session(url, mode, calls)`) from suites
that run in e2e/.venv, and a command for suites whose venv has no `mcp` (e2e/operator):

    e2e/.venv/bin/python e2e/cluster/mcp_session.py URL MODE '[["tool", {"arg": 1}], ...]'

prints {"tools": [names], "calls": [{"name", "is_error", "text"}]}."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path
from typing import Any

E2E = Path(__file__).resolve().parents[1]
VENV_PYTHON = E2E / ".venv" / "bin" / "python"


def session(url: str, mode: str, calls: list[tuple[str, dict[str, Any]]], timeout: float = 60) -> dict[str, Any]:
    sys.path.insert(0, str(E2E))
    from harness.clients import client, list_all_tools, run, text_of

    async def go() -> dict[str, Any]:
        async with client(url, mode=mode) as c:
            tools = [t.name for t in await list_all_tools(c)]
            out = []
            for name, args in calls:
                r = await c.call_tool(name, args)
                out.append({"name": name, "is_error": bool(r.is_error), "text": text_of(r)})
        return {"tools": tools, "calls": out}

    return run(go(), timeout)


def session_in_subprocess(url: str, mode: str, calls: list[tuple[str, dict[str, Any]]], timeout: float = 90) -> dict[str, Any]:
    """`session` run by e2e/.venv's Python (for a caller whose interpreter lacks `mcp`)."""
    assert VENV_PYTHON.exists(), f"{VENV_PYTHON} missing: run `make e2e-setup` first"
    p = subprocess.run(
        [str(VENV_PYTHON), __file__, url, mode, json.dumps(calls)],
        capture_output=True, text=True, timeout=timeout,
    )
    if p.returncode != 0:
        raise AssertionError(f"MCP client ({mode}) against {url} exited {p.returncode}:\n{p.stderr[-4000:]}")
    return json.loads(p.stdout.strip().splitlines()[-1])


if __name__ == "__main__":
    url, mode, calls = sys.argv[1], sys.argv[2], json.loads(sys.argv[3])
    print(json.dumps(session(url, mode, [(n, a) for n, a in calls])))
