"""DLP, audit and metrics on the call path, against a recording upstream.

A portal over `py_both_eras.py --record` with an McpPolicy (no subjects: it covers everyone on
this public portal) that blocks card numbers in arguments and redacts e-mail addresses and
employee badge ids (a custom pattern) in results. The record file shows exactly what reached the
upstream; the audit file is verified as a hash chain; a real Prometheus scrapes the admin
`/metrics`, and `promtool check metrics` lints the body.
"""

from __future__ import annotations

import json
import re
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx
import pytest
from mcp.shared.exceptions import MCPError

from harness import audit, manifests, upstreams
from harness.clients import client, run, text_of, ts_client
from harness.demo import start_proxy_with_args
from harness.procs import ProcessManager
from harness.prometheus import promtool_check_metrics, start_prometheus
from harness.proxy import Portal

BLOCKED = -32003
CARD_RULE = "no-card-numbers"
REDACT_RULE = "mask-contacts"
POLICY = {
    "apiVersion": manifests.API,
    "kind": "McpPolicy",
    "metadata": {"name": "guard"},
    "spec": {
        "dlp": [
            {"name": CARD_RULE, "detectors": ["creditCard"], "direction": "arguments", "action": "block"},
            {
                "name": REDACT_RULE,
                "detectors": ["email"],
                "patterns": [r"EMP-[0-9]{6}"],
                "direction": "results",
                "action": "redact",
            },
        ]
    },
}
# Valid (Luhn) test card numbers in the shapes people paste them.
CARDS = ["4111 1111 1111 1111", "4111-1111-1111-1111", "5555555555554444", "3782 822463 10005"]
EMAIL = "alice.ops@example.com"
BADGE = "EMP-314159"


@dataclass
class Guarded:
    portal: Portal
    record: Path
    audit_file: Path

    def recorded(self) -> str:
        return self.record.read_text(encoding="utf-8") if self.record.exists() else ""

    def recorded_calls(self) -> list[dict[str, Any]]:
        """JSON-RPC `tools/call` requests the upstream received."""
        calls = []
        for line in self.recorded().splitlines():
            body = json.loads(line).get("body") or ""
            try:
                msg = json.loads(body)
            except ValueError:
                continue
            for m in msg if isinstance(msg, list) else [msg]:
                if isinstance(m, dict) and m.get("method") == "tools/call":
                    calls.append(m)
        return calls


@pytest.fixture(scope="module")
def guarded(module_pm: ProcessManager, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Guarded]:
    workdir = tmp_path_factory.mktemp("dlp")
    record = workdir / "upstream-requests.jsonl"
    audit_file = workdir / "audit.jsonl"
    try:
        rec = upstreams.py_both_eras(module_pm, "rec", record=record)
        docs = [*manifests.portal_bundle("guarded", [manifests.remote_server("rec", rec.url)]), POLICY]
        portal = start_proxy_with_args(
            module_pm, manifests.write(workdir, docs), "guarded", ["--audit-file", str(audit_file)]
        )
        portal.wait_upstreams(["rec"])
    except BaseException:
        print(f"\n===== process output =====\n{module_pm.tails()}")
        raise
    yield Guarded(portal, record, audit_file)


def digits(s: str) -> str:
    return re.sub(r"\D", "", s)


def assert_no_card(text: str, where: str) -> None:
    flat = digits(text)
    for card in CARDS:
        assert card not in text and digits(card) not in flat, f"card number {card!r} found in {where}"


async def call_expecting_block(url: str, mode: str, tool: str, args: dict[str, Any]) -> MCPError:
    async with client(url, mode=mode) as c:
        try:
            result = await c.call_tool(tool, args)
        except MCPError as e:
            return e
    raise AssertionError(f"{tool} with a card number in its arguments was not blocked: {text_of(result)}")


# --- block on arguments ---------------------------------------------------------------------


@pytest.mark.parametrize("mode", ["legacy", "2026-07-28"])
@pytest.mark.parametrize("card", CARDS)
def test_a_card_number_in_arguments_is_blocked_before_the_upstream(guarded: Guarded, mode: str, card: str) -> None:
    marker = f"blk-{mode}-card{CARDS.index(card)}"
    error = run(call_expecting_block(guarded.portal.url, mode, "rec_echo", {"message": f"{marker} pay with {card}"}))
    assert error.code == BLOCKED, f"code {error.code}: {error.message}"
    assert CARD_RULE in error.message, f"the error does not name the rule: {error.message!r}"
    assert_no_card(f"{error.message} {json.dumps(error.data)}", "the error sent to the client")
    assert marker not in guarded.recorded(), "the blocked request reached the upstream"

    # Control: the same request without the card reaches the upstream (the record works).
    async def clean() -> Any:
        async with client(guarded.portal.url, mode=mode) as c:
            return await c.call_tool("rec_echo", {"message": f"{marker} pay by invoice"})

    result = run(clean())
    assert not result.is_error, text_of(result)
    assert marker in guarded.recorded(), "the recording upstream did not record an allowed call"


def test_a_card_number_hidden_in_a_nested_or_numeric_argument_is_blocked(guarded: Guarded) -> None:
    before = len(guarded.recorded_calls())
    error = run(call_expecting_block(guarded.portal.url, "legacy", "rec_add", {"a": 4111111111111111, "b": 1}))
    assert error.code == BLOCKED and CARD_RULE in error.message, error.message
    error = run(
        call_expecting_block(
            guarded.portal.url, "legacy", "rec_echo", {"message": "x", "extra": {"billing": [{"pan": CARDS[2]}]}}
        )
    )
    assert error.code == BLOCKED and CARD_RULE in error.message, error.message
    assert len(guarded.recorded_calls()) == before, "a blocked call reached the upstream"
    assert_no_card(guarded.recorded(), "the upstream's record")


# --- redact on results ----------------------------------------------------------------------


@pytest.mark.parametrize("mode", ["legacy", "2026-07-28"])
def test_an_email_and_a_badge_id_in_results_reach_the_client_redacted(guarded: Guarded, mode: str) -> None:
    message = f"contact {EMAIL} about badge {BADGE} ({mode})"

    async def go() -> Any:
        async with client(guarded.portal.url, mode=mode) as c:
            return await c.call_tool("rec_echo", {"message": message})

    result = run(go())
    assert not result.is_error, text_of(result)
    expected = f"rec echo: contact [REDACTED:email] about badge [REDACTED:pattern] ({mode})"
    assert text_of(result) == expected
    # structuredContent stays a valid object with the same redaction (the SDK parsed it).
    assert result.structured_content == {"result": expected}, result.structured_content
    dumped = result.model_dump_json()
    assert EMAIL not in dumped and BADGE not in dumped, dumped
    # The rule scans results only: the upstream did get the arguments as sent.
    assert message in guarded.recorded()


def test_the_typescript_client_gets_redacted_valid_json_results(guarded: Guarded) -> None:
    out = ts_client(guarded.portal.url, "--call", "rec_echo", "--args", json.dumps({"message": f"ts {EMAIL} {BADGE}"}))
    call = out["call"]
    assert call.get("isError") in (None, False), call
    expected = "rec echo: ts [REDACTED:email] [REDACTED:pattern]"
    assert call["content"] == [{"type": "text", "text": expected}], call
    assert call["structuredContent"] == {"result": expected}, call


# --- Code Mode goes through the same DLP ----------------------------------------------------


def test_a_code_mode_inner_call_with_a_card_number_is_blocked_and_catchable(guarded: Guarded) -> None:
    marker = "cm-card-5f1e"
    # The card is assembled at run time: DLP sees the arguments the script actually sends.
    code = f"""async () => {{
      const card = ["4111", "1111", "1111", "1111"].join(" ");
      let caught = null;
      try {{ await codemode.rec_echo({{message: "{marker} " + card}}); }}
      catch (e) {{ caught = String(e && e.message || e); }}
      const after = await codemode.rec_echo({{message: "{marker} then {EMAIL}"}});
      return {{caught, after}};
    }}"""
    uncaught = f"""async () => codemode.rec_echo({{message: "{marker} uncaught {CARDS[1]}"}})"""

    async def go() -> tuple[Any, Any]:
        async with client(guarded.portal.url + "?codemode=search_and_execute", mode="legacy") as c:
            return await c.call_tool("portal_codemode_execute", {"code": code}), await c.call_tool(
                "portal_codemode_execute", {"code": uncaught}
            )

    caught, failed = run(go())
    assert not caught.is_error, text_of(caught)
    body = caught.structured_content
    assert body is not None and json.loads(text_of(caught)) == body
    message = body["result"]["caught"]
    assert message and "blocked" in message and CARD_RULE in message, body
    assert_no_card(message, "the error the script caught")
    # The script's next call went through, and its result was redacted before the script saw it.
    assert body["result"]["after"] == {"result": f"rec echo: {marker} then [REDACTED:email]"}, body
    assert EMAIL not in text_of(caught)

    assert failed.is_error, text_of(failed)
    error = failed.structured_content["error"]
    assert CARD_RULE in error, error
    assert_no_card(text_of(failed), "the execute result")

    recorded = guarded.recorded()
    assert f"{marker} then" in recorded, "the allowed inner call did not reach the upstream"
    assert_no_card(recorded, "the upstream's record")
    calls = [c for c in guarded.recorded_calls() if marker in json.dumps(c)]
    assert len(calls) == 1, calls

    def blocked_inner(events: list[dict[str, Any]]) -> list[dict[str, Any]]:
        return [e for e in events if e.get("origin") == "codemode" and e.get("decision") == "block"]

    events = audit.wait_events(lambda: audit.file_events(guarded.audit_file), lambda ev: len(blocked_inner(ev)) >= 2)
    for ev in blocked_inner(events):
        assert ev["server"] == "rec" and ev["tool"] == "echo", ev
        assert ev["reason"] == f"dlp rule {CARD_RULE} (arguments)", ev
        assert ev["detectors"] == {"creditCard": 1}, ev
        assert ev["upstreamMs"] is None, f"a blocked call has an upstream time: {ev}"


# --- the audit log --------------------------------------------------------------------------


def test_the_audit_log_verifies_and_holds_no_card_numbers_or_emails(guarded: Guarded, tmp_path: Path) -> None:
    marker = "audit-dlp-91ab"

    async def go() -> None:
        async with client(guarded.portal.url, mode="legacy") as c:
            with pytest.raises(MCPError):
                await c.call_tool("rec_echo", {"message": f"{marker} {CARDS[0]}"})
            r = await c.call_tool("rec_echo", {"message": f"{marker} {EMAIL} {BADGE}"})
            assert not r.is_error

    run(go())

    def has_both(events: list[dict[str, Any]]) -> bool:
        return any(e["decision"] == "block" for e in events) and any(
            e["detectors"].get("email") and e["decision"] == "allow" for e in events
        )

    events = audit.wait_events(lambda: audit.file_events(guarded.audit_file), has_both)
    text = guarded.audit_file.read_text(encoding="utf-8")
    for card in CARDS:
        assert card not in text and digits(card) not in text, f"card {card!r} is in the audit file"
    assert EMAIL not in text and "example.com" not in text and BADGE not in text and marker not in text
    stdout = audit.stdout_events(guarded.portal.proc)
    assert stdout, "no audit events on stdout"
    assert EMAIL not in json.dumps(stdout) and digits(CARDS[0]) not in json.dumps(stdout)

    block = [e for e in events if e["decision"] == "block" and e.get("origin") == "direct"]
    assert block and all(e["reason"] == f"dlp rule {CARD_RULE} (arguments)" for e in block), block
    redacted = [e for e in events if e["detectors"].get("pattern")]
    assert redacted and all(e["decision"] == "allow" and e["detectors"].get("email") for e in redacted), redacted
    required = {"time", "portal", "subject", "session", "server", "tool", "method", "origin", "decision", "reason",
                "detectors", "durationMs", "upstreamMs", "argsHash", "seq", "prev", "hash"}
    for e in events:
        assert required <= set(e), f"missing {required - set(e)} in {e}"

    n = audit.verify_chain(guarded.audit_file)
    assert n == len(events), (n, len(events))
    out = audit.verify_with_proxy(guarded.audit_file)
    assert "ok" in out, out
    stdout_lines = [line for line in guarded.portal.proc.output("stdout").splitlines() if line.startswith("{")]
    assert audit.verify_lines(stdout_lines) == len(stdout_lines)

    # Both verifiers notice an edited line (they are not vacuous).
    tampered = tmp_path / "tampered.jsonl"
    lines = text.splitlines()
    lines[0] = lines[0].replace('"decision":"', '"decision":"x', 1)
    tampered.write_text("\n".join(lines) + "\n", encoding="utf-8")
    with pytest.raises(audit.ChainError, match="line 1"):
        audit.verify_chain(tampered)
    with pytest.raises(audit.ChainError, match="line 1"):
        audit.verify_with_proxy(tampered)
    dropped = tmp_path / "dropped.jsonl"
    if len(text.splitlines()) >= 3:
        kept = text.splitlines()
        dropped.write_text("\n".join(kept[:1] + kept[2:]) + "\n", encoding="utf-8")
        with pytest.raises(audit.ChainError, match="line 2"):
            audit.verify_chain(dropped)
        with pytest.raises(audit.ChainError, match="line 2"):
            audit.verify_with_proxy(dropped)


# --- metrics --------------------------------------------------------------------------------


def test_a_real_prometheus_scrapes_the_portal_metrics(guarded: Guarded, pm: ProcessManager, tmp_path: Path) -> None:
    async def traffic() -> None:
        async with client(guarded.portal.url, mode="legacy") as c:
            assert not (await c.call_tool("rec_add", {"a": 1, "b": 2})).is_error
            with pytest.raises(MCPError):
                await c.call_tool("rec_echo", {"message": CARDS[3]})
            assert not (await c.call_tool("rec_echo", {"message": EMAIL})).is_error
        async with client(guarded.portal.url + "?codemode=search_and_execute", mode="legacy") as c:
            assert not (await c.call_tool("portal_codemode_execute", {"code": "async () => 1"})).is_error

    run(traffic())
    admin = guarded.portal.admin.removeprefix("http://")
    prom = start_prometheus(pm, tmp_path / "prometheus", [admin])

    def has(series: list[dict[str, Any]], **labels: str) -> bool:
        return any(all(s["metric"].get(k) == v for k, v in labels.items()) for s in series)

    requests = prom.wait_query(
        "portcullis_requests_total",
        lambda r: has(r, server="rec", method="tools/call", outcome="allow")
        and has(r, server="rec", method="tools/call", outcome="block"),
    )
    for s in requests:
        assert {"server", "method", "outcome", "job", "instance"} <= set(s["metric"]), s
        assert s["metric"]["job"] == "portcullis" and s["metric"]["instance"] == admin, s
        assert s["metric"]["outcome"] in ("allow", "deny", "block", "error"), s
    allowed = next(s for s in requests if s["metric"]["server"] == "rec" and s["metric"]["outcome"] == "allow")
    assert float(allowed["value"][1]) >= 2, allowed

    findings = prom.query("portcullis_dlp_findings_total")
    assert has(findings, detector="creditCard", action="block"), findings
    assert has(findings, detector="email", action="redact"), findings
    assert has(prom.query("portcullis_upstream_up"), server="rec")
    assert float(prom.query('portcullis_upstream_up{server="rec"}')[0]["value"][1]) == 1
    assert has(prom.query("portcullis_codemode_executions_total"), tool="execute", outcome="ok")
    counts = prom.query('portcullis_tool_call_duration_seconds_count{server="rec"}')
    assert counts and float(counts[0]["value"][1]) >= 3, counts
    assert prom.query("portcullis_portal_overhead_seconds_bucket"), "no overhead histogram buckets"
    target = prom.targets()
    assert [t["health"] for t in target] == ["up"], target


def test_promtool_check_metrics_reports_no_problems(guarded: Guarded) -> None:
    async def traffic() -> None:
        async with client(guarded.portal.url, mode="legacy") as c:
            await c.call_tool("rec_echo", {"message": EMAIL})
            with pytest.raises(MCPError):
                await c.call_tool("rec_echo", {"message": CARDS[0]})

    run(traffic())
    body = httpx.get(f"{guarded.portal.admin}/metrics", timeout=5).text
    assert "portcullis_requests_total" in body
    code, output = promtool_check_metrics(body)
    assert code == 0 and not output, f"promtool check metrics exited {code}:\n{output}"
