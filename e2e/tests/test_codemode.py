"""Code Mode through the portal, with real MCP clients over the bundled demo servers.

`?codemode=search_and_execute` replaces the tool list with `portal_codemode_search` and
`portal_codemode_execute`; scripts call the caller's tools through the same pipeline as direct
calls (and the same audit log, with `origin: codemode`); hostile scripts fail cleanly and the
portal keeps serving.
"""

from __future__ import annotations

import hashlib
import json
import re
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest

from harness import audit, manifests
from harness.clients import client, list_all_tools, run, text_of, ts_client
from harness.demo import DEMO_SERVERS, demo_servers, start_proxy_with_args
from harness.procs import ProcessManager
from harness.proxy import Portal

SEARCH = "portal_codemode_search"
EXECUTE = "portal_codemode_execute"
CODE_MODE = "?codemode=search_and_execute"
# The wall-clock cap is lowered from the 30 s default so a script the sandbox fails to see as
# stuck still ends well inside the test's time box; every other limit keeps its default.
WALL_MS = 5000


@dataclass
class DemoPortal:
    portal: Portal
    audit_file: Path

    @property
    def code_mode_url(self) -> str:
        return self.portal.url + CODE_MODE


@pytest.fixture(scope="module")
def demo(module_pm: ProcessManager, tmp_path_factory: pytest.TempPathFactory) -> Iterator[DemoPortal]:
    workdir = tmp_path_factory.mktemp("codemode")
    docs = [
        *demo_servers(),
        manifests.secret("portal-session", {"key": manifests.session_key()}),
        manifests.portal("demo", names=list(DEMO_SERVERS), extra_spec={"codeMode": {"wallMs": WALL_MS}}),
    ]
    audit_file = workdir / "audit.jsonl"
    try:
        portal = start_proxy_with_args(module_pm, manifests.write(workdir, docs), "demo", ["--audit-file", str(audit_file)])
        portal.wait_upstreams(list(DEMO_SERVERS))
    except BaseException:
        print(f"\n===== process output =====\n{module_pm.tails()}")
        raise
    yield DemoPortal(portal, audit_file)


def body_of(result: Any) -> dict[str, Any]:
    """A Code Mode result: structuredContent `{result, console?, error?, truncated?}`, which the
    text content repeats as JSON."""
    structured = result.structured_content
    assert isinstance(structured, dict) and "result" in structured, f"no structured Code Mode body: {result}"
    assert json.loads(text_of(result)) == structured, f"text and structuredContent differ: {result}"
    return structured


def args_hash(args: dict[str, Any]) -> str:
    """The audit log's `argsHash`: sha256 of canonical JSON (sorted keys, no whitespace)."""
    canonical = json.dumps(args, sort_keys=True, separators=(",", ":"), ensure_ascii=False)
    return "sha256:" + hashlib.sha256(canonical.encode("utf-8")).hexdigest()


# --- (a) the tool list ----------------------------------------------------------------------


@pytest.mark.parametrize("mode", ["legacy", "2026-07-28"])
def test_code_mode_lists_exactly_the_two_small_tools(demo: DemoPortal, mode: str) -> None:
    async def go() -> tuple[list[Any], list[str]]:
        async with client(demo.code_mode_url, mode=mode) as c:
            coded = await list_all_tools(c)
        async with client(demo.portal.url, mode=mode) as c:
            plain = [t.name for t in await list_all_tools(c)]
        return coded, plain

    coded, plain = run(go())
    assert sorted(t.name for t in coded) == sorted([SEARCH, EXECUTE]), [t.name for t in coded]
    for t in coded:
        schema = t.input_schema
        assert schema.get("required") == ["code"], schema
        assert schema["properties"]["code"]["type"] == "string", schema
    size = len(json.dumps([t.model_dump(mode="json", by_alias=True, exclude_none=True) for t in coded]))
    assert size < 2000, f"the two Code Mode tools take {size} chars of JSON"
    # The plain URL still lists the demo tools themselves.
    for name in ("tickets_list_tickets", "tickets_attach_document", "docs_search_documents", "docs_get_document"):
        assert name in plain, plain
    assert SEARCH not in plain and EXECUTE not in plain, plain


def test_typescript_client_sees_only_the_two_code_mode_tools(demo: DemoPortal) -> None:
    out = ts_client(demo.code_mode_url)
    assert sorted(out["tools"]) == sorted([SEARCH, EXECUTE]), out["tools"]


# --- (b) search -----------------------------------------------------------------------------

FIND_LISTING = """async () => (await codemode.tools())
  .filter(t => /list/i.test(t.description || "") && /ticket/i.test(t.description || ""))
  .map(t => ({name: t.name, tool: t.tool, hasSchema: typeof t.inputSchema === "object"}))"""


def test_search_finds_list_tickets_by_filtering_descriptions(demo: DemoPortal) -> None:
    async def go() -> Any:
        async with client(demo.code_mode_url, mode="legacy") as c:
            return await c.call_tool(SEARCH, {"code": FIND_LISTING})

    result = run(go())
    assert not result.is_error, text_of(result)
    found = body_of(result)["result"]
    names = [t["name"] for t in found]
    assert "tickets_list_tickets" in names, found
    entry = next(t for t in found if t["name"] == "tickets_list_tickets")
    assert entry == {"name": "tickets_list_tickets", "tool": "tickets_list_tickets", "hasSchema": True}, entry
    assert not any(n.startswith("docs_") for n in names), f"the description filter let docs tools through: {names}"


def test_typescript_client_searches_tools_through_code_mode(demo: DemoPortal) -> None:
    out = ts_client(demo.code_mode_url, "--call", SEARCH, "--args", json.dumps({"code": FIND_LISTING}))
    call = out["call"]
    assert call.get("isError") in (None, False), call
    assert "tickets_list_tickets" in [t["name"] for t in call["structuredContent"]["result"]], call


# --- (c) the demo workflow in one execute call ----------------------------------------------

WORKFLOW = """async () => {
  const listed = await codemode.tickets_list_tickets({status: "in_progress"});
  if (listed.tickets.length !== 1) throw new Error("expected one in-progress ticket, got " + listed.tickets.length);
  const key = listed.tickets[0].key;
  const hits = await codemode.docs_search_documents({query: "runbook"});
  const hit = hits.results.find(h => /^runbook/i.test(h.title));
  if (!hit) throw new Error("no runbook among " + JSON.stringify(hits.results.map(h => h.title)));
  const doc = await codemode.docs_get_document({id: hit.id});
  const attached = await codemode.tickets_attach_document({key, title: doc.title, content: doc.content});
  console.log("attached", doc.id, "to", attached.key);
  return attached.key;
}"""


def test_demo_workflow_runs_in_one_execute_call_and_attaches_the_runbook(demo: DemoPortal) -> None:
    async def go() -> tuple[Any, Any]:
        async with client(demo.code_mode_url, mode="legacy") as c:
            executed = await c.call_tool(EXECUTE, {"code": WORKFLOW})
        async with client(demo.portal.url, mode="legacy") as c:
            fetched = await c.call_tool("tickets_get_ticket", {"key": "PORT-102"})
        return executed, fetched

    executed, fetched = run(go())
    assert not executed.is_error, text_of(executed)
    body = body_of(executed)
    assert body["result"] == "PORT-102", body
    assert body.get("console") == ["attached runbook-session-key-rotation to PORT-102"], body
    assert "error" not in body, body

    assert not fetched.is_error, text_of(fetched)
    ticket = fetched.structured_content
    assert ticket["key"] == "PORT-102" and ticket["status"] == "in_progress", ticket
    titles = [d["title"] for d in ticket.get("documents", [])]
    assert titles == ["Runbook: rotate the session encryption key"], titles
    assert "Promote `next` to `current`" in ticket["documents"][0]["content"], ticket["documents"][0]


# --- (d) hostile scripts --------------------------------------------------------------------

HOSTILE = {
    "busy_loop": ("async () => { while (true) {} }", r"CPU time limit exceeded"),
    "never_settling_promise": (
        "async () => { await new Promise(() => {}); return 'unreachable'; }",
        r"never settles|wall-clock time limit exceeded",
    ),
    "require_fs": ("async () => require('fs').readFileSync('/etc/passwd', 'utf8')", r"require is not defined"),
    "fetch": ("async () => (await fetch('http://x')).text()", r"fetch is not defined"),
    "process_env": ("async () => JSON.stringify(process.env)", r"process is not defined"),
    "ten_thousand_sequential_calls": (
        "async () => { for (let i = 0; i < 10000; i++) { await codemode.tickets_list_tickets({}); } return 'all done'; }",
        r"tool call limit exceeded",
    ),
    "ten_thousand_concurrent_calls": (
        "async () => { const ps = []; for (let i = 0; i < 10000; i++) ps.push(codemode.tickets_list_tickets({}));"
        " await Promise.all(ps); return 'all done'; }",
        r"tool call limit exceeded",
    ),
}


@pytest.mark.parametrize("case", list(HOSTILE))
def test_hostile_script_fails_with_a_clear_error_and_the_portal_keeps_serving(demo: DemoPortal, case: str) -> None:
    code, expected = HOSTILE[case]

    async def go() -> tuple[Any, Any, Any]:
        async with client(demo.code_mode_url, mode="legacy") as c:
            hostile = await c.call_tool(EXECUTE, {"code": code})
            # The same session goes on working after the hostile script.
            benign = await c.call_tool(
                EXECUTE, {"code": "async () => (await codemode.tickets_get_ticket({key: 'PORT-101'})).key"}
            )
        async with client(demo.portal.url, mode="2026-07-28") as c:
            direct = await c.call_tool("tickets_list_tickets", {"status": "in_progress"})
        return hostile, benign, direct

    hostile, benign, direct = run(go(), timeout=45)
    assert hostile.is_error, f"{case}: the hostile script did not fail: {text_of(hostile)}"
    body = body_of(hostile)
    assert body["result"] is None, body
    assert re.search(expected, body.get("error") or ""), f"{case}: error {body.get('error')!r} does not match /{expected}/"
    assert len(body["error"]) < 500, f"{case}: the error is not short: {body['error']!r}"

    assert not benign.is_error, f"{case}: Code Mode stopped working afterwards: {text_of(benign)}"
    assert body_of(benign)["result"] == "PORT-101"
    assert not direct.is_error, f"{case}: direct calls stopped working afterwards: {text_of(direct)}"
    assert [t["key"] for t in direct.structured_content["tickets"]] == ["PORT-102"]
    assert demo.portal.proc.alive
    states = {u["name"]: u["state"] for u in demo.portal.upstreams()}
    assert states == {"tickets": "ready", "docs": "ready"}, states


def test_the_ten_thousand_call_script_reaches_the_upstream_at_most_a_hundred_times(demo: DemoPortal) -> None:
    """The tool-call cap (default 100) bounds what reaches upstreams: count the script's inner
    calls in the audit log (every inner call is audited) by its session."""
    code = "async () => { for (let i = 0; i < 10000; i++) { await codemode.tickets_get_ticket({key: 'PORT-104'}); } }"

    async def go() -> Any:
        async with client(demo.code_mode_url, mode="legacy") as c:
            return await c.call_tool(EXECUTE, {"code": code})

    result = run(go())
    assert result.is_error and "tool call limit" in body_of(result)["error"], text_of(result)
    h = args_hash({"key": "PORT-104"})

    def done(events: list[dict[str, Any]]) -> bool:
        return any(e["tool"] == EXECUTE and e.get("reason") == "limit: ToolCalls" for e in events)

    events = audit.wait_events(lambda: audit.file_events(demo.audit_file), done)
    inner = [e for e in events if e.get("origin") == "codemode" and e.get("argsHash") == h]
    assert 1 <= len(inner) <= 100, f"{len(inner)} inner calls were audited for a 100-call cap"


# --- (e) inner calls in the audit log -------------------------------------------------------


def test_an_execute_calls_inner_calls_are_audited_with_origin_codemode(demo: DemoPortal) -> None:
    marker = "audit-marker-7f3c"
    code = f"""async () => {{
      const t = await codemode.tickets_get_ticket({{key: "PORT-103"}});
      const d = await codemode.docs_search_documents({{query: "{marker}"}});
      return [t.key, d.results.length];
    }}"""

    async def go() -> Any:
        async with client(demo.code_mode_url, mode="legacy") as c:
            return await c.call_tool(EXECUTE, {"code": code})

    result = run(go())
    assert not result.is_error, text_of(result)
    assert body_of(result)["result"] == ["PORT-103", 0]

    ticket_hash = args_hash({"key": "PORT-103"})
    search_hash = args_hash({"query": marker})
    code_hash = "sha256:" + hashlib.sha256(json.dumps(code, ensure_ascii=False).encode("utf-8")).hexdigest()

    def complete(events: list[dict[str, Any]]) -> bool:
        return any(e.get("argsHash") == code_hash for e in events)

    for source, read in (
        ("--audit-file", lambda: audit.file_events(demo.audit_file)),
        ("stdout", lambda: audit.stdout_events(demo.portal.proc)),
    ):
        events = audit.wait_events(read, complete)
        outer = [e for e in events if e.get("argsHash") == code_hash]
        assert len(outer) == 1, f"{source}: {outer}"
        outer_event = outer[0]
        assert outer_event["tool"] == EXECUTE and outer_event["origin"] == "direct", outer_event
        assert outer_event["decision"] == "allow", outer_event
        session = outer_event["session"]
        assert session, f"{source}: a legacy-session call has no session tag: {outer_event}"

        ticket = [e for e in events if e.get("argsHash") == ticket_hash and e.get("session") == session]
        search = [e for e in events if e.get("argsHash") == search_hash]
        assert len(ticket) == 1 and len(search) == 1, f"{source}: inner events {ticket} {search}"
        for ev, server, tool in ((ticket[0], "tickets", "get_ticket"), (search[0], "docs", "search_documents")):
            assert ev["origin"] == "codemode", ev
            assert ev["server"] == server and ev["tool"] == tool, ev
            assert ev["method"] == "tools/call" and ev["decision"] == "allow", ev
            assert ev["session"] == session and ev["portal"] == "demo", ev
            assert isinstance(ev["durationMs"], (int, float)) and isinstance(ev["upstreamMs"], (int, float)), ev
            # Inner calls are logged before the execute call that made them ends.
            assert ev["seq"] < outer_event["seq"], (ev, outer_event)
        # Values never reach the log, only their hash.
        assert marker not in json.dumps(events), f"{source}: an argument value is in the audit log"

    assert audit.verify_chain(demo.audit_file) > 0
    audit.verify_with_proxy(demo.audit_file)
    stdout_lines = [line for line in demo.portal.proc.output("stdout").splitlines() if line.startswith("{")]
    assert audit.verify_lines(stdout_lines) == len(stdout_lines)


def test_an_inner_call_cut_off_by_the_wall_clock_deadline_is_still_audited(pm: ProcessManager, tmp_path: Path) -> None:
    """Every tools/call that reaches an upstream gets an audit event, including a Code Mode
    inner call still in flight when the execution's wall-clock deadline ends it (server-everything's
    `trigger-long-running-operation` takes 5 s; the portal's wall-clock cap is 1.5 s)."""
    from harness import upstreams

    every = upstreams.everything_streamable(pm, "every")
    docs = [
        manifests.remote_server("every", every.url),
        manifests.secret("portal-session", {"key": manifests.session_key()}),
        manifests.portal("slow", names=["every"], extra_spec={"codeMode": {"wallMs": 1500}}),
    ]
    audit_file = tmp_path / "audit.jsonl"
    portal = start_proxy_with_args(pm, manifests.write(tmp_path, docs), "slow", ["--audit-file", str(audit_file)])
    portal.wait_upstreams(["every"])
    find = "async () => (await codemode.tools()).filter(t => t.tool === 'every_trigger-long-running-operation').map(t => t.name)"

    async def go() -> tuple[Any, Any]:
        async with client(portal.url + CODE_MODE, mode="legacy") as c:
            found = await c.call_tool(SEARCH, {"code": find})
            [js_name] = body_of(found)["result"]
            slow = await c.call_tool(
                EXECUTE, {"code": f"async () => codemode[{json.dumps(js_name)}]({{duration: 5, steps: 1}})"}
            )
            return found, slow

    _, slow = run(go(), timeout=30)
    assert slow.is_error and "wall-clock" in body_of(slow)["error"], text_of(slow)
    h = args_hash({"duration": 5, "steps": 1})

    def execute_logged(events: list[dict[str, Any]]) -> bool:
        return any(e["tool"] == EXECUTE and e.get("reason") == "limit: Wall" for e in events)

    events = audit.wait_events(lambda: audit.file_events(audit_file), execute_logged)
    inner = [e for e in events if e.get("origin") == "codemode" and e.get("argsHash") == h]
    assert len(inner) == 1, (
        "the inner call in flight at the wall-clock deadline (already sent upstream) has no audit event "
        f"(events: {[(e['tool'], e['origin'], e['decision'], e['reason']) for e in events]})"
    )
    assert inner[0]["server"] == "every" and inner[0]["decision"] == "error", inner[0]
