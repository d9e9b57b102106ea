"""The system under test: `portcullis-proxy --manifests ... --portal ...` on loopback."""

from __future__ import annotations

import time
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx

from . import paths
from .procs import Proc, ProcessManager

SERVING = r"portcullis-proxy: portal (\S+) serving (http://\S+/mcp)"
ADMIN = r"portcullis-proxy: admin (http://\S+?)/?$"


@dataclass
class Portal:
    name: str
    url: str  # the MCP endpoint, http://127.0.0.1:P/mcp
    admin: str  # http://127.0.0.1:Q
    proc: Proc

    @property
    def base(self) -> str:
        return self.url.rsplit("/mcp", 1)[0]

    def upstreams(self) -> list[dict[str, Any]]:
        r = httpx.get(f"{self.admin}/admin/upstreams", timeout=5)
        r.raise_for_status()
        body = r.json()
        # Accept a bare list or {"upstreams": [...]}.
        return body["upstreams"] if isinstance(body, dict) and "upstreams" in body else body

    def upstream(self, name: str) -> dict[str, Any]:
        for u in self.upstreams():
            if u.get("name") == name:
                return u
        raise AssertionError(f"upstream {name!r} not in /admin/upstreams: {self.upstreams()}")

    def wait_upstreams(self, names: list[str], state: str = "ready", timeout: float = 60.0) -> list[dict[str, Any]]:
        """Poll /admin/upstreams until every named upstream is in `state`."""
        deadline = time.monotonic() + timeout
        last: Any = None
        while True:
            if not self.proc.alive:
                raise AssertionError(f"portcullis-proxy exited with {self.proc.popen.returncode}\n{self.proc.tail()}")
            try:
                last = self.upstreams()
                states = {u.get("name"): u.get("state") for u in last}
                if all(states.get(n) == state for n in names):
                    return last
            except (httpx.HTTPError, ValueError) as e:
                last = repr(e)
            if time.monotonic() > deadline:
                raise AssertionError(
                    f"upstreams {names} not all {state!r} after {timeout}s; /admin/upstreams: {last}\n{self.proc.tail()}"
                )
            time.sleep(0.2)


def start_proxy(
    pm: ProcessManager,
    manifests: Path,
    portal: str,
    name: str = "proxy",
    timeout: float = 60.0,
    env: dict[str, str] | None = None,
    binary: Path | None = None,
    extra: Sequence[str] = (),
) -> Portal:
    """`binary` (default: the debug build the e2e suite tests) with `extra` arguments after ours."""
    if binary is None:
        binary = paths.require(paths.PROXY_BIN, "the portcullis-proxy binary (cargo build --workspace --bins)")
    proc = pm.start(
        name,
        [binary, "--manifests", manifests, "--portal", portal, "--listen", "127.0.0.1:0", "--admin-listen", "127.0.0.1:0",
         *extra],
        env={"RUST_LOG": "info", "RUST_BACKTRACE": "1", "RUST_LIB_BACKTRACE": "0", **(env or {})},
    )
    m = proc.wait_for(SERVING, timeout=timeout, stream="stdout")
    a = proc.wait_for(ADMIN, timeout=timeout, stream="stdout")
    assert m.group(1) == portal, f"proxy serves portal {m.group(1)!r}, wanted {portal!r}"
    return Portal(portal, m.group(2), a.group(1).rstrip("/"), proc)
