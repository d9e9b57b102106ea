"""The portal's listener under connection abuse (spec.limits.headerReadTimeoutSeconds,
bodyReadTimeoutSeconds).

Ten thousand connections opened and left idle, and a client sending its headers a byte at a
time, do not keep an MCP client from being served; the idle and slow connections are cut after
the header timeout, and the proxy keeps serving. A client sending its body a byte at a time gets
408 after the body timeout, and is cut, while others are served.
"""

from __future__ import annotations

import resource
import socket
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from harness import manifests, upstreams
from harness.clients import client, run, text_of
from harness.demo import start_proxy_with_args
from harness.procs import ProcessManager
from harness.proxy import Portal

HEADER_TIMEOUT = 2
BODY_TIMEOUT = 2


@pytest.fixture(scope="module")
def portal(module_pm: ProcessManager, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Portal]:
    workdir: Path = tmp_path_factory.mktemp("limits")
    try:
        up = upstreams.py_both_eras(module_pm, "lim")
        docs = manifests.portal_bundle("limits", [manifests.remote_server("lim", up.url)])
        for d in docs:
            if d["kind"] == "McpPortal":
                d["spec"]["limits"] = {"headerReadTimeoutSeconds": HEADER_TIMEOUT,
                                       "bodyReadTimeoutSeconds": BODY_TIMEOUT}
        p = start_proxy_with_args(module_pm, manifests.write(workdir, docs), "limits", [])
        p.wait_upstreams(["lim"])
    except BaseException:
        print(f"\n===== process output =====\n{module_pm.tails()}")
        raise
    yield p


def address(portal: Portal) -> tuple[str, int]:
    host, port = portal.base.removeprefix("http://").rsplit(":", 1)
    return host, int(port)


def echo(portal: Portal, message: str) -> str:
    async def go() -> str:
        async with client(portal.url, mode="2026-07-28") as c:
            return text_of(await c.call_tool("lim_echo", {"message": message}))

    return run(go(), timeout=30)


def closed_by_server(s: socket.socket, within: float) -> bool:
    s.settimeout(within)
    try:
        return s.recv(1024) == b""
    except ConnectionResetError:
        return True
    except TimeoutError:
        return False


def test_ten_thousand_idle_connections_do_not_keep_a_client_out(portal: Portal) -> None:
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    n = min(10_000, hard - 500)
    assert n >= 1_000, f"this machine allows only {hard} open files"
    resource.setrlimit(resource.RLIMIT_NOFILE, (max(soft, n + 500), hard))
    idle: list[socket.socket] = []
    try:
        for _ in range(n):
            idle.append(socket.create_connection(address(portal), timeout=10))
        assert "through the crowd" in echo(portal, "through the crowd")
        # The idle ones are cut after the header timeout (checked on a sample).
        for s in idle[:: max(1, n // 20)]:
            assert closed_by_server(s, HEADER_TIMEOUT + 10), "an idle connection outlived the header timeout"
    finally:
        for s in idle:
            s.close()
        resource.setrlimit(resource.RLIMIT_NOFILE, (soft, hard))
    assert "after" in echo(portal, "after")


def test_headers_sent_a_byte_at_a_time_are_cut_and_others_are_served(portal: Portal) -> None:
    slow = socket.create_connection(address(portal), timeout=10)
    request = b"POST /mcp HTTP/1.1\r\nHost: 127.0.0.1\r\nContent-Type: application/json\r\n" + b"X-Slow: " + b"a" * 100
    started = time.monotonic()
    cut_after: float | None = None
    try:
        for i, byte in enumerate(request):
            try:
                slow.sendall(bytes([byte]))
            except (BrokenPipeError, ConnectionResetError):
                cut_after = time.monotonic() - started
                break
            if i % 4 == 0:
                # Others are served while the slow client dribbles.
                assert f"meanwhile {i}" in echo(portal, f"meanwhile {i}")
            if closed_by_server(slow, 0.25):
                cut_after = time.monotonic() - started
                break
    finally:
        slow.close()
    assert cut_after is not None, f"a client sending {len(request)} header bytes slowly was never cut off"


@pytest.mark.parametrize("path", ["/mcp", "/llm/openai/v1/chat/completions"])
def test_a_body_sent_a_byte_at_a_time_gets_408_and_others_are_served(portal: Portal, path: str) -> None:
    body = b'{"jsonrpc":"2.0","id":1,"method":"tools/list","params":{}}'.ljust(400)
    slow = socket.create_connection(address(portal), timeout=10)
    head = (f"POST {path} HTTP/1.1\r\nHost: 127.0.0.1\r\nContent-Type: application/json\r\n"
            f"Accept: application/json, text/event-stream\r\nContent-Length: {len(body)}\r\n\r\n").encode()
    answer = b""
    started = time.monotonic()
    try:
        slow.sendall(head)
        # 400 bytes at 4 a second: 100 s if the portal waited for all of them.
        for i, byte in enumerate(body):
            try:
                slow.sendall(bytes([byte]))
            except (BrokenPipeError, ConnectionResetError):
                break
            if i % 4 == 0:
                assert f"meanwhile {i}" in echo(portal, f"meanwhile {i}")
            slow.settimeout(0.25)
            try:
                chunk = slow.recv(65536)
            except TimeoutError:
                continue
            except ConnectionResetError:
                break
            answer += chunk
            if not chunk or b"\r\n\r\n" in answer:
                break
        slow.settimeout(5)
        try:
            while chunk := slow.recv(65536):
                answer += chunk
        except (TimeoutError, ConnectionResetError):
            pass
    finally:
        slow.close()
    took = time.monotonic() - started
    text = answer.decode(errors="replace")
    assert text.startswith("HTTP/1.1 408"), f"after {took:.1f} s: {text[:500]!r}"
    assert "bodyReadTimeoutSeconds" in text, text
    assert took < 60, f"cut only after {took:.1f} s"
    assert "after" in echo(portal, "after")
