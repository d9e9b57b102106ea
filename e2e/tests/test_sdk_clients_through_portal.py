"""Real SDK clients (Python `mcp` 2.x in every mode, TypeScript SDK v1) list and call through one portal."""

from __future__ import annotations

import pytest

from harness.clients import MODES, client, list_all_tools, run, text_of, ts_client


@pytest.mark.parametrize("mode", MODES)
def test_python_sdk_client_lists_and_calls_tools_through_the_portal(multi, mode: str) -> None:
    async def go() -> None:
        async with client(multi.portal.url, mode=mode) as c:
            if mode == "legacy":
                assert c.protocol_version in ("2025-06-18", "2025-11-25"), c.protocol_version
            elif mode == "2026-07-28":
                assert c.protocol_version == "2026-07-28"
            names = [t.name for t in await list_all_tools(c)]
            for expected in ("pyboth_add", "pyboth_echo", "every-http_echo", "every-sse_echo", "every-stdio_echo"):
                assert expected in names, f"{expected} missing from tools/list in {mode} mode: {names}"
            result = await c.call_tool("pyboth_add", {"a": 20, "b": 22})
            assert not result.is_error, text_of(result)
            assert result.structured_content == {"sum": 42, "operands": [20, 22]}
            echoed = await c.call_tool("every-http_echo", {"message": f"hello in {mode}"})
            assert not echoed.is_error, text_of(echoed)
            assert f"hello in {mode}" in text_of(echoed)

    run(go())


def test_python_sdk_client_in_auto_mode_negotiates_the_modern_era_with_the_portal(multi) -> None:
    async def go() -> str:
        async with client(multi.portal.url, mode="auto") as c:
            return c.protocol_version

    assert run(go()) == "2026-07-28"


def test_typescript_sdk_client_lists_and_calls_tools_through_the_portal(multi) -> None:
    out = ts_client(multi.portal.url, "--call", "pyboth_add", "--args", '{"a": 2, "b": 3}')
    assert "pyboth_add" in out["tools"] and "every-stdio_echo" in out["tools"], out["tools"]
    assert out["call"].get("isError") in (None, False), out["call"]
    assert out["call"]["structuredContent"] == {"sum": 5, "operands": [2, 3]}
    echo = ts_client(multi.portal.url, "--call", "every-sse_echo", "--args", '{"message": "from ts"}')
    assert any("from ts" in c.get("text", "") for c in echo["call"]["content"]), echo["call"]


def test_ending_a_legacy_session_with_delete_is_acknowledged(multi) -> None:
    """DELETE with the session id ends a legacy session: 200 or 204 (or 405 if not supported);
    the Python SDK warns on anything else."""
    import httpx

    headers = {"accept": "application/json, text/event-stream", "content-type": "application/json"}
    init = {
        "jsonrpc": "2.0",
        "id": 1,
        "method": "initialize",
        "params": {"protocolVersion": "2025-11-25", "capabilities": {}, "clientInfo": {"name": "e2e", "version": "1"}},
    }
    with httpx.Client(timeout=10) as h:
        r = h.post(multi.portal.url, json=init, headers=headers)
        assert r.status_code == 200, r.text
        sid = r.headers.get("mcp-session-id")
        assert sid, f"no Mcp-Session-Id on the initialize response: {dict(r.headers)}"
        proto = {"mcp-session-id": sid, "mcp-protocol-version": "2025-11-25"}
        note = h.post(multi.portal.url, json={"jsonrpc": "2.0", "method": "notifications/initialized"}, headers={**headers, **proto})
        assert note.status_code == 202, note.text
        d = h.delete(multi.portal.url, headers=proto)
        assert d.status_code in (200, 204, 405), f"DELETE answered {d.status_code}: {d.text}"


def _fast_path_calls(portal, era: str = "modern") -> float:
    import httpx

    name = "portcullis_fast_path_tool_calls_total " if era == "modern" else "portcullis_fast_path_legacy_tool_calls_total "
    text = httpx.get(f"{portal.admin}/metrics", timeout=5).text
    for line in text.splitlines():
        if line.startswith(name):
            return float(line.split()[1])
    raise AssertionError(f"no {name.strip()} counter in /metrics:\n{text[:2000]}")


def _direct_calls(portal, name: str) -> int:
    return int(portal.upstream(name).get("direct_calls", -1))


def test_a_modern_sdk_call_takes_both_fast_paths(multi) -> None:
    """The Python SDK in 2026-07-28 mode sends plain stateless calls: the portal answers them
    without rmcp's serve loop (http/fast.rs) and reaches the 2026-07-28 Python upstream with one
    POST (upstream/direct.rs). A legacy session's call (the SDK declares no sampling or
    elicitation) takes the legacy fast path, without rmcp's session worker, and reaches that
    upstream directly too."""
    before_fast = _fast_path_calls(multi.portal)
    before_legacy = _fast_path_calls(multi.portal, "legacy")
    before_direct = _direct_calls(multi.portal, "pyboth")
    assert before_direct >= 0, multi.portal.upstream("pyboth")

    async def call(mode: str) -> None:
        async with client(multi.portal.url, mode=mode) as c:
            result = await c.call_tool("pyboth_add", {"a": 1, "b": 2})
            assert result.structured_content == {"sum": 3, "operands": [1, 2]}, text_of(result)

    run(call("2026-07-28"))
    assert _fast_path_calls(multi.portal) == before_fast + 1
    assert _direct_calls(multi.portal, "pyboth") == before_direct + 1
    run(call("legacy"))
    assert _fast_path_calls(multi.portal) == before_fast + 1, "a legacy session's call is not a modern one"
    assert _fast_path_calls(multi.portal, "legacy") == before_legacy + 1
    assert _direct_calls(multi.portal, "pyboth") == before_direct + 2
