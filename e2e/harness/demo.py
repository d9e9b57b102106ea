"""The bundled demo servers (`portcullis-demo tickets|docs --stdio`) as stdio McpServers, and a
portal over them started with an audit file (Code Mode and audit tests)."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from . import manifests, paths
from .procs import ProcessManager
from .proxy import ADMIN, SERVING, Portal

DEMO_BIN = paths.TARGET_DIR / "debug" / "portcullis-demo"
DEMO_SERVERS = ("tickets", "docs")


def demo_servers() -> list[dict[str, Any]]:
    """McpServer documents for the two demo servers, run by the proxy as stdio child processes
    (the same shape as examples/demo/portal.yaml, with the binary from this build)."""
    binary = paths.require(DEMO_BIN, "the portcullis-demo binary (cargo build --workspace --bins)")
    return [manifests.stdio_server(name, [str(binary)], [name, "--stdio"]) for name in DEMO_SERVERS]


def start_proxy_with_args(
    pm: ProcessManager,
    manifest_path: Path,
    portal: str,
    extra_args: list[str],
    name: str = "proxy",
    timeout: float = 60.0,
) -> Portal:
    """`harness.proxy.start_proxy` plus extra command-line flags (e.g. `--audit-file PATH`)."""
    binary = paths.require(paths.PROXY_BIN, "the portcullis-proxy binary (cargo build --workspace --bins)")
    proc = pm.start(
        name,
        [
            binary,
            "--manifests",
            manifest_path,
            "--portal",
            portal,
            "--listen",
            "127.0.0.1:0",
            "--admin-listen",
            "127.0.0.1:0",
            *extra_args,
        ],
        env={"RUST_LOG": "info", "RUST_BACKTRACE": "1", "RUST_LIB_BACKTRACE": "0"},
    )
    m = proc.wait_for(SERVING, timeout=timeout, stream="stdout")
    a = proc.wait_for(ADMIN, timeout=timeout, stream="stdout")
    assert m.group(1) == portal, f"proxy serves portal {m.group(1)!r}, wanted {portal!r}"
    return Portal(portal, m.group(2), a.group(1).rstrip("/"), proc)
