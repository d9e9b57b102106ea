"""Per-subject tool-call rate limits (McpPolicy `limits`) shared by replicas through
`spec.rateLimitStore.redis`: two real proxy replicas behind real nginx (round robin) over a real
redis-server, the bundled demo MCP server as upstream (stdio), tokens signed by the real IdP's key.

The policy gives group `limited` a bucket of 10 calls refilled at 1 per minute, so within a test
(seconds) exactly 10 calls of a subject are served wherever they land; without the store each
replica has its own bucket and a subject gets 20 through two replicas (the control portal).
"""

from __future__ import annotations

import concurrent.futures
import json
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx
import pytest

from harness import manifests
from harness.demo import DEMO_SERVERS, demo_servers
from harness.nginx import Nginx, start_nginx
from harness.procs import ProcessManager
from harness.proxy import Portal, start_proxy
from harness.redis import Redis, start_redis

from .auth_support import Idp, start_idp

AUDIENCE = "portcullis-rate-limits"
TOOL = "tickets_list_tickets"
BURST = 10
RATE_LIMITED = -32029
META = {
    "io.modelcontextprotocol/protocolVersion": "2026-07-28",
    "io.modelcontextprotocol/clientInfo": {"name": "rate-limit-e2e", "version": "1"},
    "io.modelcontextprotocol/clientCapabilities": {},
}


def docs(idp: Idp, portal: str, store: dict[str, Any] | None, redis_url: str | None) -> list[dict[str, Any]]:
    spec: dict[str, Any] = {"auth": {"issuer": idp.issuer, "audience": AUDIENCE, "scopes": ["mcp"],
                                     "groupsClaim": "groups"}}
    if store is not None:
        spec["rateLimitStore"] = store
    p = manifests.portal(portal, names=list(DEMO_SERVERS), extra_spec=spec)
    del p["spec"]["public"]
    out = [
        *demo_servers(),
        manifests.secret("portal-session", {"key": manifests.session_key()}),
        p,
        {"apiVersion": manifests.API, "kind": "McpPolicy", "metadata": {"name": "limited"},
         "spec": {"portals": [portal], "subjects": [{"group": "limited"}], "rules": [{"access": "write"}],
                  "limits": {"callsPerMinute": 1, "burst": BURST}}},
        {"apiVersion": manifests.API, "kind": "McpPolicy", "metadata": {"name": "free"},
         "spec": {"portals": [portal], "subjects": [{"group": "free"}], "rules": [{"access": "write"}]}},
    ]
    if redis_url is not None:
        out.append(manifests.secret("limits-redis", {"url": redis_url}))
    return out


@dataclass
class Setup:
    idp: Idp
    replicas: list[Portal]
    lb: Nginx
    redis: Redis | None

    def token(self, sub: str, group: str = "limited") -> str:
        now = int(time.time())
        return self.idp.sign({"iss": self.idp.issuer, "aud": AUDIENCE, "sub": sub, "groups": [group],
                              "scope": "mcp", "iat": now, "exp": now + 900})

    def metric(self, name: str) -> float:
        total = 0.0
        for r in self.replicas:
            for line in httpx.get(f"{r.admin}/metrics", timeout=5).text.splitlines():
                if line.startswith(name + " ") or line.startswith(name + "{"):
                    total += float(line.rsplit(" ", 1)[1])
        return total


def call(base: str, tok: str, client: httpx.Client | None = None) -> dict[str, Any]:
    """One stateless 2026-07-28 tools/call; the JSON-RPC message."""
    body = {"jsonrpc": "2.0", "id": 7, "method": "tools/call",
            "params": {"name": TOOL, "arguments": {}, "_meta": META}}
    headers = {"authorization": f"Bearer {tok}", "content-type": "application/json",
               "accept": "application/json, text/event-stream", "mcp-protocol-version": "2026-07-28",
               "mcp-method": "tools/call", "mcp-name": TOOL}
    r = (client or httpx).post(f"{base}/mcp", json=body, headers=headers, timeout=30)
    assert r.status_code == 200, r.text
    text = r.text
    if not text.lstrip().startswith("{"):
        text = [line[5:] for line in text.splitlines() if line.startswith("data:")][-1]
    return json.loads(text)


def served(msgs: list[dict[str, Any]]) -> int:
    for m in msgs:
        assert "result" in m or m.get("error", {}).get("code") == RATE_LIMITED, m
    return sum(1 for m in msgs if "result" in m)


def start(pm: ProcessManager, workdir: Path, idp: Idp, portal: str, store: dict[str, Any] | None,
          redis: Redis | None) -> Setup:
    path = manifests.write(workdir / portal, docs(idp, portal, store, redis.url if redis else None))
    replicas = [start_proxy(pm, path, portal, name=f"{portal}-{i}") for i in range(2)]
    for r in replicas:
        r.wait_upstreams(list(DEMO_SERVERS))
    lb = start_nginx(pm, workdir / f"{portal}-nginx", [r.base.split("//")[1] for r in replicas])
    s = Setup(idp, replicas, lb, redis)
    # Each replica reads the IdP's keys once (a subject without limits: takes no token).
    for r in replicas:
        assert "result" in call(r.base, s.token("warm", "free"))
    return s


@pytest.fixture(scope="module")
def idp(module_pm: ProcessManager, tmp_path_factory: pytest.TempPathFactory) -> Idp:
    return start_idp(module_pm, tmp_path_factory.mktemp("rl-idp"))


@pytest.fixture(scope="module")
def shared(module_pm: ProcessManager, tmp_path_factory: pytest.TempPathFactory, idp: Idp) -> Setup:
    workdir = tmp_path_factory.mktemp("rl-shared")
    redis = start_redis(module_pm, workdir / "redis")
    store = {"redis": {"urlFrom": {"name": "limits-redis", "key": "url"}, "keyPrefix": "rl:", "timeoutMillis": 300}}
    return start(module_pm, workdir, idp, "shared", store, redis)


def test_a_subjects_burst_holds_across_both_replicas(shared: Setup) -> None:
    tok = shared.token("alice")
    with httpx.Client() as c:
        msgs = [call(shared.lb.url, tok, c) for _ in range(2 * BURST)]
    assert served(msgs) == BURST
    # Both replicas served and refused: the limit is not one replica's.
    upstreams = {e["upstream"] for e in shared.lb.entries() if e["uri"] == "/mcp"}
    assert len(upstreams) == 2, upstreams
    err = next(m["error"] for m in msgs if "error" in m)
    assert "Rate limit exceeded: 1 calls per minute on this portal" in err["message"], err
    assert 0 < err["data"]["retryAfterMs"] <= 60_000, err
    # The bucket is a Redis hash under the configured prefix that expires once it would be full.
    assert shared.redis is not None
    ttl = int(shared.redis.command("PTTL", "rl:p:alice").lstrip(":"))
    assert 0 < ttl <= (BURST * 60 + 1) * 1000, ttl
    # Another subject has its own bucket.
    assert "result" in call(shared.lb.url, shared.token("bob"))


def test_concurrent_calls_from_one_subject_take_exactly_the_burst(shared: Setup) -> None:
    tok = shared.token("carol")
    with concurrent.futures.ThreadPoolExecutor(20) as ex:
        msgs = list(ex.map(lambda _: call(shared.lb.url, tok), range(40)))
    assert served(msgs) == BURST
    assert shared.metric("portcullis_rate_limited_total") >= 30


def test_without_redis_the_replicas_own_buckets_decide_by_default(shared: Setup) -> None:
    assert shared.redis is not None
    before = shared.metric("portcullis_rate_limit_store_errors_total")
    shared.redis.stop()
    try:
        tok = shared.token("dave")
        with httpx.Client() as c:
            msgs = [call(shared.lb.url, tok, c) for _ in range(2 * BURST + 4)]
        # perReplica: each replica's bucket of 10, so 20 through two replicas.
        assert served(msgs) == 2 * BURST
        assert shared.metric("portcullis_rate_limit_store_errors_total") >= before + 2 * BURST + 4
        # A subject without limits never asks the store.
        errors = shared.metric("portcullis_rate_limit_store_errors_total")
        assert "result" in call(shared.lb.url, shared.token("erin", "free"))
        assert shared.metric("portcullis_rate_limit_store_errors_total") == errors
    finally:
        shared.redis.start()
    # Redis is back on the same port with its data (append-only file): alice's bucket is still
    # there, and the replicas share buckets again once they have reconnected.
    assert shared.redis.command("EXISTS", "rl:p:alice") == ":1"
    probe = shared.token("probe", "limited")
    for r in shared.replicas:  # each replica reconnects on its next use of the store
        deadline = time.monotonic() + 15
        while True:
            errors = shared.metric("portcullis_rate_limit_store_errors_total")
            call(r.base, probe)
            if shared.metric("portcullis_rate_limit_store_errors_total") == errors:
                break
            assert time.monotonic() < deadline, "a replica does not reconnect to Redis"
            time.sleep(0.2)
    errors = shared.metric("portcullis_rate_limit_store_errors_total")
    tok = shared.token("frank")
    with httpx.Client() as c:
        msgs = [call(shared.lb.url, tok, c) for _ in range(BURST + 4)]
    assert served(msgs) == BURST
    assert shared.metric("portcullis_rate_limit_store_errors_total") == errors


def test_without_a_store_each_replica_counts_alone(module_pm: ProcessManager, tmp_path_factory: pytest.TempPathFactory,
                                                  idp: Idp) -> None:
    """The control: the same portal and policy without `rateLimitStore` lets a subject through
    twice the burst behind two replicas (what the store exists to prevent)."""
    s = start(module_pm, tmp_path_factory.mktemp("rl-local"), idp, "local", None, None)
    tok = s.token("alice")
    with httpx.Client() as c:
        msgs = [call(s.lb.url, tok, c) for _ in range(2 * BURST + 4)]
    assert served(msgs) == 2 * BURST


@pytest.mark.parametrize("fallback", ["failOpen", "failClosed"])
def test_fail_open_and_fail_closed_while_redis_cannot_be_reached(module_pm: ProcessManager,
                                                                 tmp_path_factory: pytest.TempPathFactory,
                                                                 idp: Idp, fallback: str) -> None:
    workdir = tmp_path_factory.mktemp(f"rl-{fallback}")
    # A Redis that was started and stopped: nothing listens on its port.
    redis = start_redis(module_pm, workdir / "redis")
    redis.stop()
    store = {"redis": {"urlFrom": {"name": "limits-redis", "key": "url"}, "timeoutMillis": 100},
             "onUnavailable": fallback}
    s = start(module_pm, workdir, idp, fallback.lower(), store, redis)
    tok = s.token("alice")
    with httpx.Client() as c:
        msgs = [call(s.lb.url, tok, c) for _ in range(BURST + 4)]
    if fallback == "failOpen":
        assert served(msgs) == BURST + 4
    else:
        assert served(msgs) == 0
        assert all(m["error"]["code"] == RATE_LIMITED for m in msgs)
    assert s.metric("portcullis_rate_limit_store_errors_total") >= BURST + 4
    # Subjects without limits are served either way.
    assert "result" in call(s.lb.url, s.token("erin", "free"))
