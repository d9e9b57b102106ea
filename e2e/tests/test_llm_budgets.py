"""LLM budgets (McpPolicy `budgets`) end to end: two real proxy replicas behind real nginx
sharing a real redis-server (append-only persistence), the official `openai` and `anthropic`
SDKs (pinned) as clients, the provider emulator (e2e/servers/llm_emulator.py, the one stand-in)
as both providers, with its own accounting of the tokens it billed, and real tokens signed by
the real IdP's key.

Groups and their budgets (each user has their own counter unless said otherwise):
  tiny    300 tokens per UTC day, hard      crowd  400 tokens per day, hard (the concurrency run)
  soft    20 tokens per day, soft           money  0.0005 (currency units) per rolling hour
  capped  5,000 tokens per day, hard        team   200 tokens per month shared by the group
"""

from __future__ import annotations

import concurrent.futures
import json
import subprocess
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import anthropic
import httpx
import httpx2
import openai
import pytest

from harness import manifests, paths
from harness.nginx import Nginx, start_nginx
from harness.ports import free_port
from harness.procs import ProcessManager
from harness.prometheus import promtool_check_metrics
from harness.proxy import ADMIN, SERVING, Portal
from harness.redis import Redis, start_redis

from .auth_support import Idp, start_idp

OPENAI_KEY = "sk-dummy-openai"
ANTHROPIC_KEY = "sk-ant-dummy"
AUDIENCE = "portcullis-llm-budgets"
GROUPS = ["tiny", "crowd", "soft", "money", "capped", "team"]


@dataclass
class Emulator:
    name: str
    url: str

    def requests(self) -> list[dict[str, Any]]:
        return httpx.get(f"{self.url}/_emulator/requests", timeout=5).raise_for_status().json()

    def usage(self) -> dict[str, Any]:
        return httpx.get(f"{self.url}/_emulator/usage", timeout=5).raise_for_status().json()

    def fail(self, **spec: Any) -> None:
        httpx.post(f"{self.url}/_emulator/fail", json=spec, timeout=5).raise_for_status()


@dataclass
class Replica:
    name: str
    port: int
    portal: Portal
    audit: Path


@dataclass
class Env:
    idp: Idp
    oa: Emulator
    an: Emulator
    redis: Redis
    replicas: list[Replica]
    lb: Nginx
    manifest: Path
    pm: ProcessManager

    @property
    def base(self) -> str:
        return self.lb.url

    def token(self, sub: str, groups: list[str]) -> str:
        now = int(time.time())
        return self.idp.sign({"iss": self.idp.issuer, "aud": AUDIENCE, "sub": sub, "groups": groups,
                              "scope": "mcp", "iat": now, "exp": now + 900})

    def openai(self, sub: str, group: str, **kw: Any) -> openai.OpenAI:
        kw.setdefault("max_retries", 0)
        return openai.OpenAI(base_url=f"{self.base}/llm/openai/v1", api_key=self.token(sub, [group]), timeout=30, **kw)

    def anthropic(self, sub: str, group: str, **kw: Any) -> anthropic.Anthropic:
        kw.setdefault("max_retries", 0)
        return anthropic.Anthropic(base_url=f"{self.base}/llm/anthropic", auth_token=self.token(sub, [group]),
                                   timeout=30, **kw)

    def spend(self, sub: str, group: str, replica: int = 0) -> dict[str, Any]:
        r = httpx.get(f"{self.replicas[replica].portal.admin}/admin/spend",
                      params={"subject": sub, "group": group}, timeout=10)
        assert r.status_code == 200, r.text
        return r.json()

    def spent(self, sub: str, group: str, replica: int = 0) -> int:
        b = self.spend(sub, group, replica)["budgets"]
        assert len(b) == 1, b
        return int(b[0]["spent"]["tokens"])

    def audit_events(self) -> list[dict[str, Any]]:
        out = []
        for r in self.replicas:
            if r.audit.exists():
                out += [json.loads(line) for line in r.audit.read_text().splitlines() if line.strip()]
        return out

    def metrics(self) -> str:
        return "".join(httpx.get(f"{r.portal.admin}/metrics", timeout=5).text for r in self.replicas)


def warm(env: Env, r: Replica) -> None:
    deadline = time.monotonic() + 20
    headers = {"authorization": f"Bearer {env.token('warm', ['tiny'])}"}
    while httpx.get(f"{r.portal.base}/llm/openai/v1/models", headers=headers, timeout=10).status_code != 200:
        assert time.monotonic() < deadline, f"{r.name} does not authenticate"
        time.sleep(0.2)


def start_emulator(pm: ProcessManager, name: str, key: str) -> Emulator:
    python = paths.require(paths.VENV_PYTHON, "the e2e virtualenv")
    proc = pm.start(name, [python, paths.SERVERS / "llm_emulator.py", "--port", str(free_port()), "--name", name, "--key", key])
    m = proc.wait_for(r"llm-emulator: \S+ listening (http://\S+)", timeout=20, stream="stdout")
    return Emulator(name, m.group(1))


def start_replica(pm: ProcessManager, manifest: Path, name: str, port: int, audit: Path) -> Replica:
    binary = paths.require(paths.PROXY_BIN, "the portcullis-proxy binary (cargo build --workspace --bins)")
    proc = pm.start(name, [binary, "--manifests", manifest, "--portal", "budgets", "--listen", f"127.0.0.1:{port}",
                           "--admin-listen", "127.0.0.1:0", "--audit-file", audit, "--no-audit-stdout"],
                    env={"RUST_LOG": "info", "RUST_BACKTRACE": "1"})
    m = proc.wait_for(SERVING, timeout=60, stream="stdout")
    a = proc.wait_for(ADMIN, timeout=60, stream="stdout")
    return Replica(name, port, Portal("budgets", m.group(2), a.group(1).rstrip("/"), proc), audit)


@pytest.fixture(scope="module")
def env(module_pm: ProcessManager, tmp_path_factory: pytest.TempPathFactory) -> Env:
    workdir = tmp_path_factory.mktemp("budgets")
    try:
        idp = start_idp(module_pm, workdir)
        oa = start_emulator(module_pm, "openai-emu", OPENAI_KEY)
        an = start_emulator(module_pm, "anthropic-emu", ANTHROPIC_KEY)
        redis = start_redis(module_pm, workdir / "redis")
        oa_target = {"provider": "openAICompatible", "baseUrl": f"{oa.url}/v1", "model": "gpt-4o-mini",
                     "apiKeyFrom": {"name": "llm-keys", "key": "openai"}, "timeoutSeconds": 10,
                     "price": {"input": "1.00", "output": "2.00"}}
        an_target = {"provider": "anthropic", "baseUrl": an.url, "model": "claude-haiku-4-5",
                     "apiKeyFrom": {"name": "llm-keys", "key": "anthropic"}, "timeoutSeconds": 10,
                     "price": {"input": "3.00", "output": "15.00", "cachedInput": "0.30"}}
        portal = manifests.portal("budgets", names=[], extra_spec={
            "auth": {"issuer": idp.issuer, "audience": AUDIENCE, "scopes": ["mcp"], "groupsClaim": "groups"},
            "llm": {
                "routes": [
                    {"alias": "gpt", "targets": [oa_target]},
                    {"alias": "claude", "targets": [an_target]},
                    {"alias": "fast", "targets": [oa_target, an_target]},
                ],
                # Generous: 200 concurrent calls on a loaded 2-core CI machine can keep a Redis round
                # trip past a few hundred ms, and a timeout is a 503 (fail closed). A stopped Redis
                # refuses connections at once, so this does not slow the restart test.
                "budgetStore": {"redis": {"urlFrom": {"name": "budget-redis", "key": "url"}, "timeoutMillis": 3000}},
            },
        })
        del portal["spec"]["public"]

        def budget_policy(group: str, budget: dict[str, Any]) -> dict[str, Any]:
            return {"apiVersion": manifests.API, "kind": "McpPolicy", "metadata": {"name": f"{group}-budget"},
                    "spec": {"portals": ["budgets"], "include": [{"group": group}], "budgets": [budget]}}

        day = {"calendar": "day"}
        docs = [
            manifests.secret("portal-session", {"key": manifests.session_key()}),
            manifests.secret("llm-keys", {"openai": OPENAI_KEY, "anthropic": ANTHROPIC_KEY}),
            manifests.secret("budget-redis", {"url": redis.url}),
            portal,
            {"apiVersion": manifests.API, "kind": "McpPolicy", "metadata": {"name": "models"},
             "spec": {"portals": ["budgets"], "include": [{"group": g} for g in GROUPS], "models": ["*"]}},
            budget_policy("tiny", {"name": "daily", "tokens": 300, "window": day}),
            budget_policy("crowd", {"name": "daily", "tokens": 400, "window": day}),
            budget_policy("soft", {"name": "daily", "tokens": 20, "window": day, "enforcement": "soft"}),
            budget_policy("money", {"name": "hourly", "cost": "0.0005", "window": {"rollingSeconds": 3600}}),
            budget_policy("capped", {"name": "daily", "tokens": 5000, "window": day}),
            budget_policy("team", {"name": "shared", "scope": "group", "group": "team", "tokens": 200,
                                   "window": {"calendar": "month"}}),
        ]
        manifest = manifests.write(workdir, docs)
        ports = [free_port(), free_port()]
        replicas = [start_replica(module_pm, manifest, f"proxy-{i}", p, workdir / f"audit-{i}.jsonl")
                    for i, p in enumerate(ports)]
        lb = start_nginx(module_pm, workdir / "nginx", [f"127.0.0.1:{p}" for p in ports])
        env = Env(idp, oa, an, redis, replicas, lb, manifest, module_pm)
        # Each replica reads the IdP's keys once before the tests start.
        for r in replicas:
            warm(env, r)
        return env
    except BaseException:
        print(f"\n===== process output =====\n{module_pm.tails()}")
        raise


def last_event(env: Env, sub: str, count: int = 1) -> dict[str, Any]:
    """The subject's last audit event, once it has `count` of them (a stream is settled and
    audited after its last event reached the client)."""
    deadline = time.monotonic() + 10
    while True:
        events = [e for e in env.audit_events() if e.get("subject") == sub]
        if len(events) >= count:
            return events[-1]
        assert time.monotonic() < deadline, f"no audit event for {sub}"
        time.sleep(0.1)


def words(n: int) -> str:
    """`n` words of one token each (for o200k_base and for the emulator's word count)."""
    return " ".join(["hello"] * n)


# --- refusals in each dialect, before any provider sees the request --------------------------


def test_the_openai_sdk_gets_insufficient_quota_with_retry_after_and_does_not_retry(env: Env) -> None:
    c = env.openai("tina", "tiny")
    r = c.chat.completions.create(model="gpt", max_tokens=20, user="tina",
                                  messages=[{"role": "user", "content": "hello there"}])
    assert r.choices[0].message.content == "openai-emu says: hello there"
    first = env.spent("tina", "tiny")
    assert first == r.usage.prompt_tokens + r.usage.completion_tokens, "charged what the provider reported"

    seen_before = len(env.oa.requests())
    attempts: list[str] = []
    http = httpx2.Client(event_hooks={"request": [lambda req: attempts.append(str(req.url))]})
    # The SDK's default retries are on: x-should-retry: false must stop them.
    retrying = openai.OpenAI(base_url=f"{env.base}/llm/openai/v1", api_key=env.token("tina", ["tiny"]),
                             http_client=http, max_retries=2)
    with pytest.raises(openai.RateLimitError) as e:
        retrying.chat.completions.create(model="gpt", max_tokens=300, user="tina",
                                         messages=[{"role": "user", "content": "too much"}])
    assert len(attempts) == 1, attempts
    resp = e.value.response
    assert resp.headers["x-should-retry"] == "false"
    retry_after = int(resp.headers["retry-after"])
    midnight = 86400 - int(time.time()) % 86400
    assert abs(retry_after - midnight) <= 5, (retry_after, midnight)
    body = resp.json()["error"]
    assert body["type"] == "insufficient_quota" and body["code"] == "insufficient_quota", body
    assert "tiny-budget/daily" in body["message"]
    assert len(env.oa.requests()) == seen_before, "the provider saw a refused request"
    assert env.spent("tina", "tiny") == first, "a refusal costs nothing"


def test_the_anthropic_sdk_gets_rate_limit_error_and_does_not_retry(env: Env) -> None:
    seen_before = len(env.an.requests())
    attempts: list[str] = []
    http = httpx2.Client(event_hooks={"request": [lambda req: attempts.append(str(req.url))]})
    c = anthropic.Anthropic(base_url=f"{env.base}/llm/anthropic", auth_token=env.token("tom", ["tiny"]),
                            http_client=http, max_retries=2)
    with pytest.raises(anthropic.RateLimitError) as e:
        c.messages.create(model="claude", max_tokens=1000, messages=[{"role": "user", "content": "x"}])
    assert len(attempts) == 1, attempts
    assert e.value.response.headers["x-should-retry"] == "false"
    assert int(e.value.response.headers["retry-after"]) > 0
    assert e.value.body["error"]["type"] == "rate_limit_error", e.value.body
    assert len(env.an.requests()) == seen_before
    # The same user within budget is served (Anthropic's usage: message_start + message_delta).
    m = c.messages.create(model="claude", max_tokens=50, messages=[{"role": "user", "content": "fits fine"}])
    assert env.spent("tom", "tiny") == m.usage.input_tokens + m.usage.output_tokens


def test_without_max_tokens_a_call_gets_what_is_left_and_the_provider_is_told_that_limit(env: Env) -> None:
    c = env.openai("tess", "tiny")
    # 300-token day, a 150-token prompt: the default reservation (4096) does not fit, what is
    # left (about 140) does; the provider is asked for no more, and the answer (152 words) is cut.
    r = c.chat.completions.create(model="gpt", user="tess", messages=[{"role": "user", "content": words(150)}])
    sent = env.oa.requests()[-1]["body"]
    cap = sent["max_tokens"]
    assert 100 < cap < 150, sent
    assert r.usage.completion_tokens == cap
    assert r.choices[0].finish_reason == "length"
    assert env.spent("tess", "tiny") == r.usage.prompt_tokens + cap <= 300


# --- streams -------------------------------------------------------------------------------------


def test_an_openai_stream_is_charged_its_usage_chunk_which_the_client_does_not_see(env: Env) -> None:
    c = env.openai("cato", "capped")
    before = env.oa.usage()["by_user"].get("cato", {"input": 0, "output": 0})
    chunks = list(c.chat.completions.create(model="gpt", max_tokens=50, user="cato", stream=True,
                                            messages=[{"role": "user", "content": "stream me please"}]))
    assert all(ch.usage is None for ch in chunks), "a usage chunk the client did not ask for"
    last_event(env, "cato")
    text = "".join(ch.choices[0].delta.content or "" for ch in chunks if ch.choices)
    assert text == "openai-emu says: stream me please"
    asked = env.oa.requests()[-1]["body"]
    assert asked["stream_options"] == {"include_usage": True}
    after = env.oa.usage()["by_user"]["cato"]
    billed = after["input"] + after["output"] - before["input"] - before["output"]
    assert env.spent("cato", "capped") == billed


def test_an_anthropic_stream_is_charged_message_start_input_and_the_last_delta_output(env: Env) -> None:
    c = env.anthropic("cleo", "capped")
    with c.messages.stream(model="claude", max_tokens=50, messages=[{"role": "user", "content": "stream this one"}]) as s:
        final = s.get_final_message()
    last_event(env, "cleo")
    assert env.spent("cleo", "capped") == final.usage.input_tokens + final.usage.output_tokens


def test_a_stream_that_crosses_its_hard_cap_is_ended_with_an_error_event_in_each_dialect(env: Env) -> None:
    # The provider ignores max_tokens and streams 60 words more than the 10 allowed.
    env.oa.fail(overrun=60, count=1)
    c = env.openai("cara", "capped")
    got = []
    with pytest.raises(openai.APIError) as e:
        for ch in c.chat.completions.create(model="gpt", max_tokens=10, user="cara", stream=True,
                                            messages=[{"role": "user", "content": "go"}]):
            got += [ch.choices[0].delta.content or ""] if ch.choices else []
    assert "budget allowed" in str(e.value), e.value
    last_event(env, "cara")
    streamed = len("".join(got).split())
    assert streamed <= 10, got
    spent = env.spent("cara", "capped")
    prompt = env.oa.requests()[-1]
    # Overshoot bound: what was charged exceeds the reservation (prompt + 10) by at most the
    # tokens of one provider event (one word here: at most 3 tokens, like "more12").
    reservation = spent_reservation(env, "cara")
    assert reservation < spent <= reservation + 3, (spent, reservation, prompt)

    env.an.fail(overrun=60, count=1)
    a = env.anthropic("cody", "capped")
    with pytest.raises(anthropic.APIStatusError) as ae:
        with a.messages.stream(model="claude", max_tokens=10, messages=[{"role": "user", "content": "go"}]) as s:
            for _ in s.text_stream:
                pass
    assert "budget allowed" in str(ae.value), ae.value
    ev = last_event(env, "cody")
    assert ev["decision"] == "error" and "budget allowed" in ev["reason"], ev


def spent_reservation(env: Env, sub: str) -> int:
    """The reservation of a user's last call: counted prompt + max_tokens (from its audit event's
    estimated prompt when the stream was cut before the provider's usage)."""
    ev = [e for e in env.audit_events() if e.get("subject") == sub][-1]
    return int(ev["llm"]["inputTokens"]) + 10


def test_a_client_that_leaves_a_stream_is_charged_for_what_was_streamed(env: Env) -> None:
    text = words(400)
    body = {"model": "gpt", "max_tokens": 1000, "stream": True, "user": "cyd",
            "messages": [{"role": "user", "content": text}]}
    headers = {"authorization": f"Bearer {env.token('cyd', ['capped'])}"}
    with httpx.Client(timeout=30) as h:
        with h.stream("POST", f"{env.base}/llm/openai/v1/chat/completions", json=body, headers=headers) as r:
            assert r.status_code == 200
            n = 0
            for line in r.iter_lines():
                if line.startswith("data: "):
                    n += 1
                if n >= 5:
                    break
    ev = last_event(env, "cyd")
    assert ev["reason"] == "the caller left during the stream", ev
    full_answer = 402  # "openai-emu says:" and the 400 words
    spent = env.spent("cyd", "capped")
    prompt = int(ev["llm"]["inputTokens"])
    streamed = spent - prompt
    assert 4 <= streamed < full_answer, (spent, prompt)
    assert ev["llm"]["estimated"] is True


# --- other budgets --------------------------------------------------------------------------------


def test_a_soft_budget_serves_past_its_limit_and_counts_the_crossing(env: Env) -> None:
    c = env.openai("sam", "soft")
    for _ in range(3):
        c.chat.completions.create(model="gpt", max_tokens=20, user="sam",
                                  messages=[{"role": "user", "content": "one two three four five"}])
    assert env.spent("sam", "soft") > 20
    assert 'portcullis_llm_budget_soft_exceeded_total{portal="budgets",budget="soft-budget/daily"}' in env.metrics()


def test_a_money_budget_charges_each_target_at_its_price_and_refuses_by_cost(env: Env) -> None:
    c = env.openai("mia", "money")
    r = c.chat.completions.create(model="gpt", max_tokens=20, user="mia",
                                  messages=[{"role": "user", "content": words(50)}])
    u = r.usage
    expected = (u.prompt_tokens * 1.00 + u.completion_tokens * 2.00) / 1e6
    report = env.spend("mia", "money")["budgets"][0]
    assert abs(float(report["spent"]["cost"]) - expected) < 1e-9, (report, expected)
    ev = last_event(env, "mia")
    assert abs(float(ev["llm"]["cost"]) - expected) < 1e-9, ev
    # 0.0005 an hour: 300 prompt tokens at 1.00/M plus 200 out at 2.00/M are too dear now.
    with pytest.raises(openai.RateLimitError) as e:
        c.chat.completions.create(model="gpt", max_tokens=200, user="mia",
                                  messages=[{"role": "user", "content": words(300)}])
    assert "spending budget" in e.value.response.json()["error"]["message"]
    assert report["window"] == "rolling 3600s"


def test_a_group_budget_is_one_counter_for_every_member(env: Env) -> None:
    used = 0
    for sub in ("gus", "gia"):
        r = env.openai(sub, "team").chat.completions.create(model="gpt", max_tokens=30, user=sub,
                                                            messages=[{"role": "user", "content": words(10)}])
        used += r.usage.total_tokens
    a, b = env.spend("gus", "team")["budgets"][0], env.spend("gia", "team")["budgets"][0]
    assert a["counter"] == b["counter"] == "team-budget/shared/m/g:team"
    assert a["spent"] == b["spent"] and a["spent"]["tokens"] == used
    with pytest.raises(openai.RateLimitError):
        env.openai("gwen", "team").chat.completions.create(model="gpt", max_tokens=200, user="gwen",
                                                           messages=[{"role": "user", "content": words(40)}])


def test_a_provider_without_usage_is_counted_with_tiktoken_and_marked_estimated(env: Env) -> None:
    env.oa.fail(no_usage=True, count=1)
    c = env.openai("ned", "capped")
    r = c.chat.completions.create(model="gpt", max_tokens=40, user="ned",
                                  messages=[{"role": "user", "content": "count this for me"}])
    assert r.usage is None
    ev = last_event(env, "ned")
    assert ev["llm"]["estimated"] is True
    billed = env.oa.usage()["by_user"]["ned"]
    spent = env.spent("ned", "capped")
    # tiktoken counts at least a token per word, plus the messages' framing.
    assert spent >= billed["input"] + billed["output"]
    assert spent == ev["llm"]["inputTokens"] + ev["llm"]["outputTokens"]


# --- observability --------------------------------------------------------------------------------


def test_spend_is_in_the_cli_and_the_metrics_carry_no_user(env: Env) -> None:
    binary = paths.require(paths.PROXY_BIN, "the portcullis-proxy binary")
    out = subprocess.run([binary, "spend", "--admin", env.replicas[1].portal.admin, "--subject", "tina",
                          "--group", "tiny", "--format", "json"], capture_output=True, text=True, timeout=30)
    assert out.returncode == 0, out.stderr
    cli = json.loads(out.stdout)
    admin = env.spend("tina", "tiny")["budgets"]
    for b in cli["budgets"] + admin:
        b.pop("resetsInSeconds")
    assert cli["budgets"] == admin
    assert cli["store"] == "redis"
    text = subprocess.run([binary, "spend", "--admin", env.replicas[0].portal.admin, "--subject", "tina",
                           "--group", "tiny"], capture_output=True, text=True, timeout=30)
    assert "tiny-budget/daily" in text.stdout and "300 tok" in text.stdout, text.stdout
    metrics = httpx.get(f"{env.replicas[0].portal.admin}/metrics", timeout=5).text
    assert 'portcullis_llm_tokens_total{portal="budgets",model="gpt",provider="openAICompatible",token_type="input",outcome="ok"}' in metrics
    assert "portcullis_llm_cost_total{" in metrics
    assert 'portcullis_llm_budget_refusals_total{portal="budgets",budget="tiny-budget/daily"}' in env.metrics()
    for sub in ("tina", "tom", "cato", "mia"):
        assert f'"{sub}"' not in metrics
    promtool_check_metrics(metrics)


# --- shared state: two replicas, one Redis --------------------------------------------------------


def test_two_hundred_concurrent_calls_from_five_users_through_two_replicas_never_exceed_the_budget(env: Env) -> None:
    users = [f"crowd{i}" for i in range(5)]
    limit = 400

    def call(i: int) -> int:
        sub = users[i % 5]
        c = env.openai(sub, "crowd")
        try:
            c.chat.completions.create(model="gpt", max_tokens=8, user=sub,
                                      messages=[{"role": "user", "content": f"request {i} {words(6)}"}])
            return 200
        except openai.RateLimitError as e:
            assert e.response.headers["x-should-retry"] == "false"
            return 429

    with concurrent.futures.ThreadPoolExecutor(max_workers=50) as pool:
        statuses = list(pool.map(call, range(200)))
    assert statuses.count(200) > 0 and statuses.count(429) > 0, statuses
    served = {e["upstream"] for e in env.lb.entries() if "/llm/" in e["uri"]}
    assert len(served) == 2, f"not served by both replicas: {served}"
    billed = env.oa.usage()["by_user"]
    for sub in users:
        spent = [env.spent(sub, "crowd", replica) for replica in (0, 1)]
        assert spent[0] == spent[1], "the replicas disagree"
        own = billed[sub]["input"] + billed[sub]["output"]
        assert spent[0] == own, f"{sub}: portal counted {spent[0]}, the provider billed {own}"
        assert spent[0] <= limit, f"{sub} spent {spent[0]} of {limit}"
        assert env.spend(sub, "crowd")["budgets"][0]["reserved"]["tokens"] == 0
    print(f"\nconcurrency: {statuses.count(200)} of 200 calls served, {statuses.count(429)} refused; spent per user "
          f"{[env.spent(u, 'crowd') for u in users]} of {limit}")


def test_a_replica_restart_and_a_redis_restart_lose_no_settled_spend(env: Env) -> None:
    before = {f"crowd{i}": env.spent(f"crowd{i}", "crowd") for i in range(5)}
    old = env.replicas[0]
    old.portal.proc.kill()
    env.replicas[0] = start_replica(env.pm, env.manifest, "proxy-0b", old.port, old.audit)
    warm(env, env.replicas[0])
    assert {s: env.spent(s, "crowd", 0) for s in before} == before
    env.redis.stop()
    # Redis down: a hard budget fails closed (503) and the provider never sees the call.
    seen = len(env.oa.requests())
    with pytest.raises(openai.APIStatusError) as e:
        env.openai("crowd0", "crowd").chat.completions.create(model="gpt", max_tokens=1, user="crowd0",
                                                              messages=[{"role": "user", "content": "x"}])
    assert e.value.status_code == 503, e.value
    assert len(env.oa.requests()) == seen
    env.redis.start()
    # Each replica reconnects within a call or two.
    for r in env.replicas:
        deadline = time.monotonic() + 15
        while httpx.get(f"{r.portal.admin}/admin/spend", params={"subject": "crowd0", "group": "crowd"},
                        timeout=10).status_code != 200:
            assert time.monotonic() < deadline, f"{r.name} did not reconnect to Redis"
            time.sleep(0.3)
    assert {s: env.spent(s, "crowd", 1) for s in before} == before
    assert {s: env.spent(s, "crowd", 0) for s in before} == before
