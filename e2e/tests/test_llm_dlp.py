"""DLP on the LLM gateway's prompts and completions, through the official `openai` and `anthropic`
Python SDKs, against the provider emulator (the one stand-in), with real tokens from the real IdP.

Policy `llm-dlp` (finance):
- `cards-in-prompts`: creditCard in prompts of every alias, block (the provider never sees it);
- `emails`: email both ways, redact, only on aliases `gpt` and `claude` (`models` globs);
- `keys-in-answers`: awsAccessKey in completions, redact (the emulator echoes the prompt, so a
  key in the prompt comes back in the answer: the prompt passes, the answer is redacted);
- `topsecret-answers`: custom pattern `TOPSECRET-[A-Z]{8}` in completions, block;
- `tool-only`: ipv4 on tool `x` only, block: covers no LLM call.

Streams are asked to split the text every 3 characters (`chunk_chars`), so each secret reaches the
portal across several deltas.
"""

from __future__ import annotations

import json
import time
from pathlib import Path
from typing import Any

import anthropic
import httpx
import openai
import pytest

from harness import manifests
from harness.procs import ProcessManager
from harness.proxy import start_proxy

from .auth_support import start_idp
from .test_llm_gateway import ANTHROPIC_KEY, OPENAI_KEY, Emulator, Gateway, start_emulator

KEY = "AKIAZ7Q4M2X8R5T1W3YV"
CARD = "4111 1111 1111 1111"


@pytest.fixture(scope="module")
def gw(module_pm: ProcessManager, tmp_path_factory: pytest.TempPathFactory) -> Gateway:
    workdir = tmp_path_factory.mktemp("llm-dlp")
    try:
        idp = start_idp(module_pm, workdir)
        oa = start_emulator(module_pm, "openai-emu", OPENAI_KEY)
        an = start_emulator(module_pm, "anthropic-emu", ANTHROPIC_KEY)
        oa_t = {"provider": "openAICompatible", "baseUrl": f"{oa.url}/v1", "model": "gpt-4o-mini",
                "apiKeyFrom": {"name": "llm-keys", "key": "openai"}}
        an_t = {"provider": "anthropic", "baseUrl": an.url, "model": "claude-haiku-4-5",
                "apiKeyFrom": {"name": "llm-keys", "key": "anthropic"}}
        portal = manifests.portal("llm", names=[], extra_spec={
            "auth": {"issuer": idp.issuer, "scopes": ["mcp"], "groupsClaim": "groups"},
            "llm": {"routes": [
                {"alias": "gpt", "targets": [oa_t]},
                {"alias": "claude", "targets": [an_t]},
                {"alias": "fast", "targets": [oa_t]},
            ]},
        })
        del portal["spec"]["public"]
        docs = [
            manifests.secret("portal-session", {"key": manifests.session_key()}),
            manifests.secret("llm-keys", {"openai": OPENAI_KEY, "anthropic": ANTHROPIC_KEY}),
            portal,
            {"apiVersion": manifests.API, "kind": "McpPolicy", "metadata": {"name": "llm-dlp"},
             "spec": {"portals": ["llm"], "subjects": [{"group": "finance"}], "models": ["*"], "dlp": [
                 {"name": "cards-in-prompts", "detectors": ["creditCard"], "direction": "arguments",
                  "action": "block", "models": ["*"]},
                 {"name": "emails", "detectors": ["email"], "action": "redact", "models": ["gpt", "claude"]},
                 {"name": "keys-in-answers", "detectors": ["awsAccessKey"], "direction": "results",
                  "action": "redact", "models": ["*"]},
                 {"name": "topsecret-answers", "patterns": ["TOPSECRET-[A-Z]{8}"], "direction": "results",
                  "action": "block", "models": ["*"]},
                 {"name": "tool-only", "detectors": ["ipv4"], "tools": ["x"], "action": "block"},
             ]}},
        ]
        path = manifests.write(workdir, docs)
        audit = workdir / "audit.jsonl"
        p = start_proxy(module_pm, path, "llm", extra=["--audit-file", str(audit)])
        return Gateway(p, idp, oa, an, audit, path, docs)
    except BaseException:
        print(f"\n===== process output =====\n{module_pm.tails()}")
        raise


def llm_events(gw: Gateway) -> list[dict[str, Any]]:
    return [e for e in gw.audit_events() if e.get("llm")]


def last_event(gw: Gateway) -> dict[str, Any]:
    return llm_events(gw)[-1]


def next_event(gw: Gateway, before: int, timeout: float = 10) -> dict[str, Any]:
    """The first LLM audit event after the `before` first ones: a stream's event is written when
    its relay ends, which may be just after the client read the last bytes."""
    deadline = time.monotonic() + timeout
    while len(events := llm_events(gw)) <= before:
        assert time.monotonic() < deadline, "no audit event for the call"
        time.sleep(0.05)
    return events[before]


def emu_of(gw: Gateway, alias: str) -> Emulator:
    return gw.an if alias == "claude" else gw.oa


def openai_stream_text(gw: Gateway, alias: str, content: str) -> str:
    stream = gw.openai().chat.completions.create(model=alias, stream=True,
                                                 messages=[{"role": "user", "content": content}])
    return "".join(c.choices[0].delta.content or "" for c in stream if c.choices)


def anthropic_stream_text(gw: Gateway, alias: str, content: str) -> str:
    with gw.anthropic().messages.stream(model=alias, max_tokens=200,
                                        messages=[{"role": "user", "content": content}]) as s:
        return "".join(s.text_stream)


@pytest.mark.parametrize("alias", ["gpt", "claude"])
def test_a_card_number_in_a_prompt_is_refused_in_the_callers_dialect_and_no_provider_sees_it(gw: Gateway, alias: str) -> None:
    before = len(emu_of(gw, alias).requests())
    with pytest.raises(openai.BadRequestError) as e:
        gw.openai().chat.completions.create(model=alias, messages=[
            {"role": "system", "content": "You are a clerk."},
            {"role": "user", "content": f"charge {CARD} please"}])
    assert e.value.code == "content_filter"
    assert 'DLP rule "cards-in-prompts"' in e.value.body["message"] and "creditCard" in e.value.body["message"]
    with pytest.raises(anthropic.BadRequestError) as a:
        gw.anthropic().messages.create(model=alias, max_tokens=20, system=f"the card is {CARD}",
                                       messages=[{"role": "user", "content": "hi"}])
    assert a.value.body["error"]["type"] == "invalid_request_error"
    assert "cards-in-prompts" in a.value.body["error"]["message"]
    # A card in a tool result sent back to the model is a prompt too.
    with pytest.raises(openai.BadRequestError):
        gw.openai().chat.completions.create(model=alias, messages=[
            {"role": "user", "content": "pay"},
            {"role": "assistant", "content": None, "tool_calls": [
                {"id": "c1", "type": "function", "function": {"name": "lookup", "arguments": "{}"}}]},
            {"role": "tool", "tool_call_id": "c1", "content": f"card on file: {CARD}"}])
    assert len(emu_of(gw, alias).requests()) == before, "the provider saw a blocked prompt"
    ev = last_event(gw)
    assert ev["decision"] == "block" and ev["detectors"] == {"creditCard": 1}
    assert ev["reason"] == "prompt blocked by DLP rule cards-in-prompts"
    assert "4111" not in gw.audit.read_text(), "the audit trail never holds the data"


def test_emails_in_prompts_are_redacted_before_the_provider_only_on_the_aliases_the_rule_names(gw: Gateway) -> None:
    before = len(gw.oa.requests())
    r = gw.openai().chat.completions.create(model="gpt", messages=[
        {"role": "user", "content": "mail bob.jones@example.com the report"}])
    sent = gw.oa.requests()[before]["body"]["messages"][0]["content"]
    assert sent == "mail [REDACTED:email] the report"
    assert r.choices[0].message.content == "openai-emu says: mail [REDACTED:email] the report"
    assert last_event(gw)["detectors"] == {"email": 1} and last_event(gw)["decision"] == "allow"
    # `fast` is not named by the rule: the address goes through.
    r = gw.openai().chat.completions.create(model="fast", messages=[
        {"role": "user", "content": "mail bob.jones@example.com the report"}])
    assert "bob.jones@example.com" in r.choices[0].message.content
    # An Anthropic caller's system prompt is a prompt too.
    before = len(gw.an.requests())
    gw.anthropic().messages.create(model="claude", max_tokens=50, system="escalate to ops@example.org",
                                   messages=[{"role": "user", "content": "hello"}])
    assert gw.an.requests()[before]["body"]["system"] == "escalate to [REDACTED:email]"


def test_a_tools_only_rule_leaves_llm_traffic_alone(gw: Gateway) -> None:
    r = gw.openai().chat.completions.create(model="gpt", messages=[{"role": "user", "content": "ping 10.1.2.3"}])
    assert r.choices[0].message.content.endswith("ping 10.1.2.3")


@pytest.mark.parametrize("alias", ["gpt", "claude"])
def test_a_key_in_a_whole_answer_is_redacted_in_both_dialects(gw: Gateway, alias: str) -> None:
    r = gw.openai().chat.completions.create(model=alias, messages=[{"role": "user", "content": f"echo {KEY} now"}])
    assert r.choices[0].message.content.endswith(f"says: echo [REDACTED:awsAccessKey] now")
    m = gw.anthropic().messages.create(model=alias, max_tokens=50, messages=[{"role": "user", "content": f"echo {KEY} now"}])
    assert m.content[0].text.endswith("says: echo [REDACTED:awsAccessKey] now")
    ev = last_event(gw)
    assert ev["detectors"] == {"awsAccessKey": 1} and ev["decision"] == "allow"


@pytest.mark.parametrize("alias", ["gpt", "claude"])
@pytest.mark.parametrize("sdk", ["openai", "anthropic"])
def test_a_key_split_across_stream_deltas_is_redacted_and_the_rest_arrives_intact(gw: Gateway, alias: str, sdk: str) -> None:
    emu = emu_of(gw, alias)
    words = " ".join(f"w{i}" for i in range(120))  # longer than the hold-back window
    prompt = f"start {KEY} middle {words} {KEY} end"
    emu.fail(chunk_chars=3, count=1)
    before = len(llm_events(gw))
    text = openai_stream_text(gw, alias, prompt) if sdk == "openai" else anthropic_stream_text(gw, alias, prompt)
    assert text == f"{emu.name} says: " + prompt.replace(KEY, "[REDACTED:awsAccessKey]")
    ev = next_event(gw, before)
    assert ev["llm"]["stream"] and ev["decision"] == "allow" and ev["detectors"] == {"awsAccessKey": 2}
    assert KEY not in gw.audit.read_text()


@pytest.mark.parametrize("alias", ["gpt", "claude"])
def test_a_blocked_answer_is_withheld_whole_or_ends_the_stream_before_the_secret(gw: Gateway, alias: str) -> None:
    secret = "TOPSECRET-QWERTZUI"
    with pytest.raises(openai.PermissionDeniedError) as e:
        gw.openai().chat.completions.create(model=alias, messages=[{"role": "user", "content": f"say {secret}"}])
    assert e.value.code == "content_filter" and "topsecret-answers" in e.value.body["message"]
    assert secret not in json.dumps(e.value.body)
    assert last_event(gw)["decision"] == "block" and last_event(gw)["reason"] == "answer blocked by DLP rule topsecret-answers"
    # Streamed: what arrived before the secret is relayed, then an error event; never the secret.
    emu_of(gw, alias).fail(chunk_chars=3, count=1)
    before = len(llm_events(gw))
    got = []
    with pytest.raises(openai.APIError) as s:
        for c in gw.openai().chat.completions.create(model=alias, stream=True,
                                                     messages=[{"role": "user", "content": f"say {secret} " + "x " * 150}]):
            if c.choices:
                got.append(c.choices[0].delta.content or "")
    assert "topsecret-answers" in str(s.value)
    assert "TOPSECRET" not in "".join(got)
    ev = next_event(gw, before)
    assert ev["decision"] == "block" and ev["llm"]["stream"] and ev["detectors"] == {"pattern": 1}
    emu_of(gw, alias).fail(chunk_chars=3, count=1)
    with pytest.raises(anthropic.APIStatusError) as a:
        with gw.anthropic().messages.stream(model=alias, max_tokens=300,
                                            messages=[{"role": "user", "content": f"say {secret}"}]) as st:
            text = "".join(st.text_stream)
            assert "TOPSECRET" not in text
    assert "topsecret-answers" in str(a.value)


def test_dlp_findings_are_counted_by_detector_and_action_without_users(gw: Gateway) -> None:
    body = httpx.get(f"{gw.portal.admin}/metrics", timeout=5).text
    assert 'portcullis_dlp_findings_total{detector="creditCard",action="block"}' in body
    assert 'portcullis_dlp_findings_total{detector="awsAccessKey",action="redact"}' in body
    assert "alice" not in body


def test_the_responses_api_stream_is_redacted_like_chat(gw: Gateway) -> None:
    gw.oa.fail(chunk_chars=3, count=1)
    with gw.openai().responses.stream(model="gpt", input=f"echo {KEY} done") as s:
        text = "".join(e.delta for e in s if e.type == "response.output_text.delta")
        final = s.get_final_response()
    assert text == final.output_text == "openai-emu says: echo [REDACTED:awsAccessKey] done"


def audit_path(gw: Gateway) -> Path:
    return gw.audit
