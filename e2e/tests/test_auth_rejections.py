"""Every bad credential gets the right status, and nothing reaches an upstream.

Tokens are real (from the IdP: client credentials) or forged with the IdP's own key (read from
the key file the IdP wrote), so only the property under test is wrong in each.
"""

from __future__ import annotations

import time
from typing import Any

import httpx
import pytest

from harness.procs import ProcessManager

from .auth_support import AuthPortal, forge_hs256, fresh_rsa_key, start_auth_portal, tamper, unsigned


@pytest.fixture(scope="module")
def secure(module_pm: ProcessManager, tmp_path_factory: pytest.TempPathFactory) -> AuthPortal:
    try:
        return start_auth_portal(module_pm, tmp_path_factory.mktemp("auth-rej"))
    except BaseException:
        print(f"\n===== process output =====\n{module_pm.tails()}")
        raise


HEADERS = {"content-type": "application/json", "accept": "application/json, text/event-stream"}
MODERN_META = {
    "io.modelcontextprotocol/protocolVersion": "2026-07-28",
    "io.modelcontextprotocol/clientInfo": {"name": "e2e", "version": "0"},
    "io.modelcontextprotocol/clientCapabilities": {},
}


def call(secure: AuthPortal, token: str | None, name: str = "pyboth_echo") -> httpx.Response:
    headers = dict(HEADERS, **{"mcp-protocol-version": "2026-07-28", "mcp-method": "tools/call", "mcp-name": name})
    if token is not None:
        headers["authorization"] = f"Bearer {token}"
    body = {"jsonrpc": "2.0", "id": 1, "method": "tools/call", "params": {"name": name, "arguments": {"message": "x"}, "_meta": MODERN_META}}
    return httpx.post(secure.portal.url, json=body, headers=headers, timeout=15)


def forged(secure: AuthPortal) -> dict[str, str]:
    now = int(time.time())
    good = secure.claims("ci-bot", ["engineering"])
    real = secure.idp.client_credentials("ci-bot", "ci-bot-secret", secure.resource)
    kid = secure.idp.private_jwk()["kid"]
    return {
        "expired": secure.idp.sign({**good, "iat": now - 900, "exp": now - 300}),
        "not yet valid": secure.idp.sign({**good, "nbf": now + 600}),
        "wrong issuer": secure.idp.sign({**good, "iss": "http://127.0.0.1:1"}),
        "wrong audience": secure.idp.sign({**good, "aud": "some-client-id"}),
        "for another resource": secure.idp.client_credentials("ci-bot", "ci-bot-secret", "http://127.0.0.1:9/mcp"),
        "bad signature": tamper(real, sub="someone-else"),
        "alg none": unsigned(good),
        "HS256 signed with the public key": forge_hs256(good, secure.idp.public_pem(), kid),
        "unknown kid": secure.idp.sign(good, kid="rotated-unknown", key=fresh_rsa_key()),
        "known kid, other key": secure.idp.sign(good, key=fresh_rsa_key()),
    }


def test_a_real_token_works_so_the_rejections_below_mean_something(secure: AuthPortal) -> None:
    token = secure.idp.client_credentials("ci-bot", "ci-bot-secret", secure.resource)
    r = call(secure, token)
    assert r.status_code == 200, r.text
    assert "x" in r.text


def test_no_token_gets_401_with_the_metadata_challenge(secure: AuthPortal) -> None:
    before = len(secure.upstream_requests())
    r = call(secure, None)
    assert r.status_code == 401
    www = r.headers["www-authenticate"]
    assert www.startswith("Bearer ") and "resource_metadata=" in www and 'scope="mcp"' in www, www
    assert len(secure.upstream_requests()) == before


@pytest.mark.parametrize(
    "case",
    [
        "expired",
        "not yet valid",
        "wrong issuer",
        "wrong audience",
        "for another resource",
        "bad signature",
        "alg none",
        "HS256 signed with the public key",
        "unknown kid",
        "known kid, other key",
    ],
)
def test_bad_tokens_get_401_invalid_token_and_never_reach_upstream(secure: AuthPortal, case: str) -> None:
    token = forged(secure)[case]
    before = len(secure.upstream_requests())
    r = call(secure, token)
    assert r.status_code == 401, f"{case}: {r.status_code} {r.text}"
    www = r.headers["www-authenticate"]
    assert 'error="invalid_token"' in www and "resource_metadata=" in www, www
    assert len(secure.upstream_requests()) == before, f"{case}: a request reached the upstream"


def test_a_token_without_the_scope_gets_403_insufficient_scope(secure: AuthPortal) -> None:
    token = secure.idp.sign(secure.claims("ci-bot", ["engineering"], scope="openid"))
    before = len(secure.upstream_requests())
    r = call(secure, token)
    assert r.status_code == 403
    assert 'error="insufficient_scope"' in r.headers["www-authenticate"]
    assert 'scope="mcp"' in r.headers["www-authenticate"]
    assert len(secure.upstream_requests()) == before


def _initialize(secure: AuthPortal, token: str) -> str:
    body: dict[str, Any] = {
        "jsonrpc": "2.0",
        "id": 1,
        "method": "initialize",
        "params": {"protocolVersion": "2025-06-18", "capabilities": {}, "clientInfo": {"name": "e2e", "version": "0"}},
    }
    r = httpx.post(secure.portal.url, json=body, headers=dict(HEADERS, authorization=f"Bearer {token}"), timeout=15)
    assert r.status_code == 200, r.text
    return r.headers["mcp-session-id"]


def test_a_session_id_used_by_another_subject_is_not_found(secure: AuthPortal) -> None:
    reader = secure.idp.client_credentials("reader-bot", "reader-bot-secret", secure.resource)
    ci = secure.idp.client_credentials("ci-bot", "ci-bot-secret", secure.resource)
    session = _initialize(secure, reader)
    headers = dict(HEADERS, **{"mcp-session-id": session, "mcp-protocol-version": "2025-06-18"})
    body = {"jsonrpc": "2.0", "id": 2, "method": "tools/call", "params": {"name": "pyboth_add", "arguments": {"a": 1, "b": 1}}}
    before = secure.upstream_calls()
    stolen = httpx.post(secure.portal.url, json=body, headers=dict(headers, authorization=f"Bearer {ci}"), timeout=15)
    assert stolen.status_code == 404, stolen.text
    assert secure.upstream_calls() == before
    own = httpx.post(secure.portal.url, json=body, headers=dict(headers, authorization=f"Bearer {reader}"), timeout=15)
    assert own.status_code == 200, own.text
    assert secure.upstream_calls() == before + 1


def test_admin_access_answers_what_a_subject_could_call_without_logging_in(secure: AuthPortal) -> None:
    r = httpx.get(f"{secure.portal.admin}/admin/access", params=[("subject", "dana"), ("group", "finance")], timeout=10)
    assert r.status_code == 200
    assert r.json()["allowed"] == ["pyboth_add", "pyboth_whoami"]
    r = httpx.get(f"{secure.portal.admin}/admin/access", params=[("subject", "erin"), ("group", "engineering")], timeout=10)
    assert r.json()["allowed"] == ["pyboth_add", "pyboth_echo", "pyboth_whoami"]
