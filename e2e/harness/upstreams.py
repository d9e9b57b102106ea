"""Real upstream MCP servers, started as child processes on loopback ports."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from . import paths
from .ports import free_port, wait_port
from .procs import Proc, ProcessManager


@dataclass
class Upstream:
    name: str
    url: str
    proc: Proc


def everything_streamable(pm: ProcessManager, name: str = "everything-http") -> Upstream:
    """`@modelcontextprotocol/server-everything streamableHttp` (listens on $PORT, path /mcp)."""
    paths.require(paths.EVERYTHING_JS, "@modelcontextprotocol/server-everything")
    port = free_port()
    proc = pm.start(name, [paths.NODE, paths.EVERYTHING_JS, "streamableHttp"], env={"PORT": str(port)})
    proc.wait_for(r"listening on port", timeout=30)
    wait_port(port)
    return Upstream(name, f"http://127.0.0.1:{port}/mcp", proc)


def everything_sse(pm: ProcessManager, name: str = "everything-sse") -> Upstream:
    """`@modelcontextprotocol/server-everything sse`: legacy HTTP+SSE, `GET /sse` + `POST /message`."""
    paths.require(paths.EVERYTHING_JS, "@modelcontextprotocol/server-everything")
    port = free_port()
    proc = pm.start(name, [paths.NODE, paths.EVERYTHING_JS, "sse"], env={"PORT": str(port)})
    proc.wait_for(r"running on port", timeout=30)
    wait_port(port)
    return Upstream(name, f"http://127.0.0.1:{port}/sse", proc)


def everything_stdio_command() -> tuple[list[str], list[str]]:
    """(command, args) that run server-everything over stdio, for a `deployment` McpServer."""
    paths.require(paths.EVERYTHING_JS, "@modelcontextprotocol/server-everything")
    return [paths.NODE], [str(paths.EVERYTHING_JS), "stdio"]


def py_both_eras(
    pm: ProcessManager,
    name: str = "pyboth",
    record: Path | None = None,
    stateless: bool = False,
    tls: tuple[Path, Path] | None = None,
) -> Upstream:
    """Our Python `mcp` 2.x server (e2e/servers/py_both_eras.py): legacy and 2026-07-28 eras."""
    python = paths.require(paths.VENV_PYTHON, "the e2e virtualenv")
    port = free_port()
    cmd = [python, paths.SERVERS / "py_both_eras.py", "--port", str(port), "--name", name]
    if record is not None:
        cmd += ["--record", str(record)]
    if stateless:
        cmd.append("--stateless")
    if tls is not None:
        cmd += ["--tls-cert", str(tls[0]), "--tls-key", str(tls[1])]
    proc = pm.start(name, cmd)
    m = proc.wait_for(r"py_both_eras: serving (https?://\S+/mcp)", timeout=30, stream="stdout")
    return Upstream(name, m.group(1), proc)


def conformance_fixture(pm: ProcessManager, name: str = "conformance") -> Upstream:
    """Our TS SDK server exposing what the conformance suite's server scenarios expect."""
    paths.require(paths.NODE_MODULES / "@modelcontextprotocol" / "sdk", "@modelcontextprotocol/sdk")
    proc = pm.start(name, [paths.NODE, paths.SERVERS / "conformance_fixture.mjs", "--port", "0"])
    m = proc.wait_for(r"conformance_fixture: serving (http://\S+/mcp)", timeout=30, stream="stdout")
    return Upstream(name, m.group(1), proc)
