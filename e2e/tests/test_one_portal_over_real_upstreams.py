"""server-everything over streamableHttp, sse and stdio plus the Python server, all behind ONE portal."""

from __future__ import annotations

import json
import re

from harness.clients import client, list_all_prompts, list_all_resources, list_all_tools, run, text_of

EVERYTHING_CORE = ("echo", "get-env", "get-sum", "get-structured-content", "get-tiny-image")
EVERYTHING_SERVERS = ("every-http", "every-sse", "every-stdio")
TOOL_NAME = re.compile(r"^[A-Za-z0-9_.-]{1,128}$")


def test_tools_of_every_upstream_are_listed_as_server_underscore_tool(multi) -> None:
    async def go() -> tuple[list[str], list[str]]:
        async with client(multi.portal.url, mode="legacy") as c:
            first = [t.name for t in await list_all_tools(c)]
            second = [t.name for t in await list_all_tools(c)]
            return first, second

    names, again = run(go())
    for server in EVERYTHING_SERVERS:
        for tool in EVERYTHING_CORE:
            assert f"{server}_{tool}" in names, f"{server}_{tool} missing: {names}"
    assert sorted(n for n in names if n.startswith("pyboth_")) == ["pyboth_add", "pyboth_echo", "pyboth_whoami"]
    assert len(names) == len(set(names)), f"duplicate tool names: {names}"
    assert all(TOOL_NAME.match(n) for n in names), [n for n in names if not TOOL_NAME.match(n)]
    assert all(n.split("_", 1)[0] in multi.names for n in names), names
    assert names == again, "tools/list order is not deterministic"


def test_a_call_is_routed_to_each_upstream(multi) -> None:
    """get-env reports the environment of the process that answered: PORT tells the HTTP and SSE
    instances apart, and the stdio instance carries the env the McpServer manifest set."""
    http_port = multi.http.url.split(":")[2].split("/")[0]
    sse_port = multi.sse.url.split(":")[2].split("/")[0]

    async def go() -> dict[str, dict[str, str]]:
        envs = {}
        async with client(multi.portal.url, mode="legacy") as c:
            for server in EVERYTHING_SERVERS:
                result = await c.call_tool(f"{server}_get-env", {})
                assert not result.is_error, f"{server}_get-env failed: {text_of(result)[:500]}"
                envs[server] = json.loads(text_of(result))
            py = await c.call_tool("pyboth_echo", {"message": "ping"})
            assert text_of(py) == "pyboth echo: ping"
        return envs

    envs = run(go())
    assert envs["every-http"].get("PORT") == http_port
    assert envs["every-sse"].get("PORT") == sse_port
    assert envs["every-stdio"].get("E2E_UPSTREAM") == "every-stdio"


def test_structured_content_and_output_schema_pass_through_the_portal(multi) -> None:
    async def go() -> None:
        async with client(multi.portal.url, mode="2026-07-28") as c:
            tools = {t.name: t for t in await list_all_tools(c)}
            add = tools["pyboth_add"]
            assert add.output_schema and add.output_schema["properties"]["sum"]["type"] == "integer", add
            result = await c.call_tool("pyboth_add", {"a": 1, "b": 2})
            assert result.structured_content == {"sum": 3, "operands": [1, 2]}
            weather = await c.call_tool("every-stdio_get-structured-content", {"location": "Chicago"})
            assert not weather.is_error, text_of(weather)
            assert set(weather.structured_content or {}) >= {"temperature", "conditions", "humidity"}

    run(go())


def test_resources_of_every_upstream_are_listed_under_distinct_uris_and_read_back(multi) -> None:
    async def go() -> None:
        async with client(multi.portal.url, mode="legacy") as c:
            resources = await list_all_resources(c)
            uris = [r.uri for r in resources]
            assert len(uris) == len(set(uris)), f"resource URIs collide across upstreams: {uris}"
            # 7 static documents per server-everything instance, 1 greeting from the Python server.
            assert len(uris) == 3 * 7 + 1, f"expected 22 resources, got {len(uris)}: {uris}"
            greeting = [r for r in resources if "greeting" in str(r.uri) or "greeting" in r.name]
            assert len(greeting) == 1, f"no single greeting resource: {uris}"
            read = await c.read_resource(str(greeting[0].uri))
            assert text_of(read) == "hello from pyboth"
            for r in resources:
                contents = (await c.read_resource(str(r.uri))).contents
                assert contents, f"reading {r.uri} through the portal returned no contents"
                assert getattr(contents[0], "text", None) or getattr(contents[0], "blob", None), r.uri

    run(go())


def test_resource_contents_carry_the_portal_uri_that_was_read(multi) -> None:
    """A client reads URI X through the portal; the contents it gets back should say X, not the
    upstream's own URI (which may collide with another upstream's)."""

    async def go() -> list[tuple[str, str]]:
        mismatches = []
        async with client(multi.portal.url, mode="legacy") as c:
            for r in await list_all_resources(c):
                for item in (await c.read_resource(str(r.uri))).contents:
                    if str(item.uri) != str(r.uri):
                        mismatches.append((str(r.uri), str(item.uri)))
        return mismatches

    assert run(go()) == []


def test_a_resource_template_is_listed_and_read_through_the_portal(multi) -> None:
    async def go() -> None:
        async with client(multi.portal.url, mode="legacy") as c:
            templates = (await c.list_resource_templates()).resource_templates
            notes = [t for t in templates if "notes" in t.uri_template]
            assert len(notes) == 1, [t.uri_template for t in templates]
            uri = notes[0].uri_template.replace("{topic}", "tides")
            assert text_of(await c.read_resource(uri)) == "note about tides"

    run(go())


def test_a_prompt_is_fetched_through_the_portal(multi) -> None:
    async def go() -> None:
        async with client(multi.portal.url, mode="legacy") as c:
            names = [p.name for p in await list_all_prompts(c)]
            assert "pyboth_summarize" in names and "every-http_simple-prompt" in names, names
            py = await c.get_prompt("pyboth_summarize", {"topic": "portals"})
            assert text_of(py) == "Please summarize portals in one sentence."
            ev = await c.get_prompt("every-stdio_simple-prompt", {})
            assert "simple prompt" in text_of(ev)

    run(go())


def test_healthy_upstreams_stay_ready_across_health_checks(multi) -> None:
    """Watch /admin/upstreams for longer than a health-check interval: nobody died, so every
    upstream stays ready (a probe the upstream's protocol era does not have must not mark it down)."""
    import time

    deadline = time.monotonic() + 20
    flaps: list[tuple[str, str, str]] = []
    while time.monotonic() < deadline:
        for u in multi.portal.upstreams():
            if u.get("state") != "ready":
                flaps.append((u.get("name"), u.get("state"), str(u.get("error"))))
        time.sleep(0.2)
    assert not flaps, f"healthy upstreams left the ready state: {sorted(set(flaps))}"
