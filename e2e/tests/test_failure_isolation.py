"""One upstream dies mid-test; the portal keeps serving the others and says the dead one is down."""

from __future__ import annotations

import time
from dataclasses import dataclass

import httpx
import pytest
from mcp.shared.exceptions import MCPError

from harness import manifests, upstreams
from harness.clients import client, list_all_tools, run, text_of
from harness.procs import ProcessManager
from harness.proxy import Portal, start_proxy

# The dead server's timeout is long on purpose: "fail fast" means well before it.
DEAD_TIMEOUT_SECONDS = 120
FAST = 15.0


@dataclass
class AfterKill:
    portal: Portal
    killed_at: float
    victim_url: str


@pytest.fixture(scope="module")
def after_kill(module_pm: ProcessManager, tmp_path_factory: pytest.TempPathFactory) -> AfterKill:
    http = upstreams.everything_streamable(module_pm, "victim")
    sse = upstreams.everything_sse(module_pm, "every-sse")
    py = upstreams.py_both_eras(module_pm, "pyboth")
    docs = manifests.portal_bundle(
        "iso",
        [
            manifests.remote_server("victim", http.url, timeout_seconds=DEAD_TIMEOUT_SECONDS),
            manifests.remote_server("every-sse", sse.url, "sse"),
            manifests.remote_server("pyboth", py.url),
        ],
    )
    portal = start_proxy(module_pm, manifests.write(tmp_path_factory.mktemp("iso"), docs), "iso")
    portal.wait_upstreams(["victim", "every-sse", "pyboth"])

    async def warm() -> None:
        async with client(portal.url, mode="legacy") as c:
            names = [t.name for t in await list_all_tools(c)]
            assert "victim_echo" in names, names
            assert not (await c.call_tool("victim_echo", {"message": "alive"})).is_error

    run(warm())
    http.proc.hard_kill()
    return AfterKill(portal, time.monotonic(), http.url)


def _call_error(portal: Portal, tool: str, args: dict) -> str:
    """The error text of a call that must fail (an isError result or a JSON-RPC error)."""

    async def go() -> str:
        async with client(portal.url, mode="legacy") as c:
            try:
                result = await c.call_tool(tool, args)
            except MCPError as e:
                return f"JSON-RPC error {e.error.code}: {e.error.message}"
            assert result.is_error, f"call to {tool} on a dead upstream succeeded: {text_of(result)}"
            return text_of(result)

    return run(go(), timeout=DEAD_TIMEOUT_SECONDS + 30)


def test_a_call_to_the_dead_servers_tool_fails_fast_with_an_error_naming_it(after_kill: AfterKill) -> None:
    started = time.monotonic()
    message = _call_error(after_kill.portal, "victim_echo", {"message": "anyone there?"})
    elapsed = time.monotonic() - started
    assert elapsed < FAST, f"the call took {elapsed:.1f}s to fail (upstream timeout is {DEAD_TIMEOUT_SECONDS}s)"
    assert "victim" in message, f"error does not name the server: {message!r}"


def test_the_error_for_a_dead_server_does_not_leak_its_address_or_internals(after_kill: AfterKill) -> None:
    """Internal errors are logged, never sent to clients (DESIGN.md): no upstream URL, no
    transport type names."""
    message = _call_error(after_kill.portal, "victim_echo", {"message": "x"})
    port = after_kill.victim_url.rsplit(":", 1)[1].split("/")[0]
    assert after_kill.victim_url not in message and f":{port}" not in message, message
    assert "rmcp::" not in message and "reqwest" not in message, message


def test_the_other_upstreams_keep_working_after_one_dies(after_kill: AfterKill) -> None:
    async def go() -> None:
        async with client(after_kill.portal.url, mode="legacy") as c:
            add = await c.call_tool("pyboth_add", {"a": 1, "b": 1})
            assert add.structured_content == {"sum": 2, "operands": [1, 1]}, text_of(add)
            echo = await c.call_tool("every-sse_echo", {"message": "still here"})
            assert not echo.is_error and "still here" in text_of(echo), text_of(echo)
        async with client(after_kill.portal.url, mode="2026-07-28") as c:
            assert text_of(await c.call_tool("pyboth_echo", {"message": "m"})) == "pyboth echo: m"

    run(go())


def test_the_dead_servers_tools_disappear_from_the_list(after_kill: AfterKill) -> None:
    deadline = time.monotonic() + 30
    names: list[str] = []
    while time.monotonic() < deadline:

        async def go() -> list[str]:
            async with client(after_kill.portal.url, mode="legacy") as c:
                return [t.name for t in await list_all_tools(c)]

        names = run(go())
        if not any(n.startswith("victim_") for n in names):
            break
        time.sleep(0.5)
    assert not any(n.startswith("victim_") for n in names), f"dead server's tools still listed 30s after: {names}"
    assert "pyboth_add" in names and "every-sse_echo" in names, names


def test_admin_upstreams_shows_the_dead_server_down_and_the_others_ready(after_kill: AfterKill) -> None:
    deadline = time.monotonic() + 30
    state: dict = {}
    while time.monotonic() < deadline:
        try:
            state = after_kill.portal.upstream("victim")
        except (httpx.HTTPError, AssertionError):
            state = {}
        if state.get("state") == "down":
            break
        time.sleep(0.5)
    assert state.get("state") == "down", f"/admin/upstreams: {after_kill.portal.upstreams()}"
    assert state.get("error"), f"a down upstream should say why: {state}"
    assert state.get("tools") in (0, None, []), state
    others = {u["name"]: u["state"] for u in after_kill.portal.upstreams() if u["name"] != "victim"}
    assert others == {"every-sse": "ready", "pyboth": "ready"}, others
