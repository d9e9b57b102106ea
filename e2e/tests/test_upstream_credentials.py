"""The portal's own credentials for an upstream: OAuth client credentials from a Secret.

A real IdP (oidc-provider) issues the portal a token for the upstream's resource; the upstream
(the Python `mcp` server, recording every request) gets that token on every request and never
the user's. Tokens are cached, fetched again before they expire (the IdP issues 35 s tokens; the
portal renews when under 30 s are left), and a wrong client secret leaves the upstream down with
the token endpoint's reason, the secret in no log and no status.
"""

from __future__ import annotations

import json
import time
from pathlib import Path
from typing import Any

import jwt
import pytest

from harness.procs import ProcessManager

from .auth_support import AuthPortal, Idp, start_auth_portal, start_idp
from .test_auth_rejections import call

RESOURCE = "https://pyboth.internal.example/mcp"
WRONG_SECRET = "not-the-secret-5f1c9a"


@pytest.fixture(scope="module")
def idp(module_pm: ProcessManager, tmp_path_factory: pytest.TempPathFactory) -> Idp:
    return start_idp(module_pm, tmp_path_factory.mktemp("upstream-idp"), token_ttl=35)


@pytest.fixture(scope="module")
def secure(module_pm: ProcessManager, tmp_path_factory: pytest.TempPathFactory, idp: Idp) -> AuthPortal:
    try:
        return start_auth_portal(
            module_pm,
            tmp_path_factory.mktemp("upstream-creds"),
            idp=idp,
            upstream_oauth={"client_id": "reader-bot", "client_secret": "reader-bot-secret", "resource": RESOURCE},
        )
    except BaseException:
        print(f"\n===== process output =====\n{module_pm.tails()}")
        raise


def bearer_tokens(secure: AuthPortal) -> list[str]:
    out = []
    for r in secure.upstream_requests():
        headers = {k.lower(): v for k, v in (r["headers"].items() if isinstance(r["headers"], dict) else r["headers"])}
        auth = headers.get("authorization", "")
        assert auth.startswith("Bearer "), f"an upstream request without the portal's token: {r}"
        out.append(auth.removeprefix("Bearer "))
    return out


def verified(idp: Idp, token: str) -> dict[str, Any]:
    return jwt.decode(token, idp.public_pem(), algorithms=["RS256"], audience=RESOURCE, issuer=idp.issuer)


def test_every_upstream_request_carries_the_portals_own_token_never_the_users(secure: AuthPortal, idp: Idp) -> None:
    user = idp.client_credentials("ci-bot", "ci-bot-secret", secure.resource)
    r = call(secure, user)
    assert r.status_code == 200, r.text
    assert "pyboth echo: x" in r.text
    tokens = bearer_tokens(secure)
    assert tokens, "the upstream saw no request"
    for t in tokens:
        claims = verified(idp, t)  # signed by the IdP, for the upstream's resource
        assert claims["client_id"] == "reader-bot", claims
    assert user not in json.dumps(secure.upstream_requests()), "the user's token reached the upstream"


def test_the_token_is_cached_and_renewed_before_it_expires(secure: AuthPortal, idp: Idp) -> None:
    user = idp.client_credentials("ci-bot", "ci-bot-secret", secure.resource)
    for _ in range(3):
        assert call(secure, user).status_code == 200
    before = bearer_tokens(secure)
    assert len(set(before)) < len(before), "a token per request: the cache does not work"
    first = verified(idp, before[-1])
    # Renewal starts when under 30 s of the 35 s lifetime are left.
    time.sleep(max(0.0, first["iat"] + 6 - time.time()))
    assert call(secure, user).status_code == 200
    latest = verified(idp, bearer_tokens(secure)[-1])
    assert latest["jti"] != first["jti"] and latest["iat"] > first["iat"], (first, latest)


def test_a_wrong_client_secret_leaves_the_upstream_down_with_the_reason_and_no_secret(
    module_pm: ProcessManager, tmp_path: Path, idp: Idp
) -> None:
    bad = start_auth_portal(
        module_pm,
        tmp_path,
        idp=idp,
        proxy_name="proxy-bad-secret",
        upstream_oauth={"client_id": "reader-bot", "client_secret": WRONG_SECRET, "resource": RESOURCE},
        wait=False,
    )
    [status] = [u for u in bad.portal.wait_upstreams(["pyboth"], state="down") if u["name"] == "pyboth"]
    assert "token endpoint" in status["error"] and "invalid_client" in status["error"], status
    user = idp.client_credentials("ci-bot", "ci-bot-secret", bad.resource)
    r = call(bad, user)
    assert r.status_code == 200 and "error" in r.json(), r.text  # JSON-RPC error: no such tool now
    assert bad.upstream_calls() == 0
    assert WRONG_SECRET not in bad.portal.proc.output()
    assert WRONG_SECRET not in json.dumps(bad.portal.upstreams())
