"""A company's issuer and its MCP servers speak https, with certificates from the company's
private CA.

The real `oidc-provider` serves TLS with a certificate the test's own CA issued. A portal told to
trust that CA (`SSL_CERT_FILE`, as for most Linux programs) fetches the issuer's discovery
document and JWKS over https and accepts its tokens; a portal that does not trust the CA cannot
reach the issuer (the certificate check is real, not skipped): it answers 503 with a reason, the
way it does for any unreachable issuer, lets nothing through, logs why, and keeps serving.
"""

from __future__ import annotations

from pathlib import Path

import httpx
import pytest

from harness.procs import ProcessManager

from .auth_support import AuthPortal, Idp, private_ca, start_auth_portal, start_idp
from .test_auth_rejections import HEADERS, MODERN_META


@pytest.fixture(scope="module")
def https_idp(module_pm: ProcessManager, tmp_path_factory: pytest.TempPathFactory) -> Idp:
    workdir = tmp_path_factory.mktemp("https-idp")
    idp = start_idp(module_pm, workdir, tls=private_ca(workdir))
    assert idp.issuer.startswith("https://"), idp.issuer
    return idp


def portal_over(pm: ProcessManager, workdir: Path, idp: Idp, trust_ca: bool, name: str) -> AuthPortal:
    """The trusting portal's upstream is https too (same private CA)."""
    assert idp.tls
    env = {"SSL_CERT_FILE": str(idp.tls.ca)} if trust_ca else {"SSL_CERT_FILE": str(workdir / "no-such-bundle.pem")}
    try:
        return start_auth_portal(
            pm, workdir, idp=idp, proxy_env=env, proxy_name=name, upstream_tls=idp.tls if trust_ca else None
        )
    except BaseException:
        print(f"\n===== process output =====\n{pm.tails()}")
        raise


def list_tools(secure: AuthPortal, token: str) -> httpx.Response:
    headers = dict(HEADERS, **{"mcp-protocol-version": "2026-07-28", "mcp-method": "tools/list", "authorization": f"Bearer {token}"})
    body = {"jsonrpc": "2.0", "id": 1, "method": "tools/list", "params": {"_meta": MODERN_META}}
    return httpx.post(secure.portal.url, json=body, headers=headers, timeout=15)


def test_a_portal_trusting_the_private_ca_accepts_tokens_from_the_https_issuer(
    module_pm: ProcessManager, tmp_path: Path, https_idp: Idp
) -> None:
    secure = portal_over(module_pm, tmp_path, https_idp, trust_ca=True, name="proxy-trusting")
    token = https_idp.client_credentials("ci-bot", "ci-bot-secret", secure.resource)
    r = list_tools(secure, token)
    assert r.status_code == 200, r.text
    names = sorted(t["name"] for t in r.json()["result"]["tools"])
    assert "pyboth_echo" in names and "pyboth_add" in names, names
    # A call reaches the https upstream and comes back.
    headers = dict(HEADERS, **{"mcp-protocol-version": "2026-07-28", "mcp-method": "tools/call", "mcp-name": "pyboth_add"})
    headers["authorization"] = f"Bearer {token}"
    body = {"jsonrpc": "2.0", "id": 2, "method": "tools/call", "params": {"name": "pyboth_add", "arguments": {"a": 2, "b": 3}, "_meta": MODERN_META}}
    r = httpx.post(secure.portal.url, json=body, headers=headers, timeout=15)
    assert r.status_code == 200, r.text
    assert "5" in str(r.json()["result"]["content"]), r.text
    assert secure.upstream_calls() == 1
    # The 401 for an anonymous client names the https issuer in the RFC 9728 metadata.
    meta = httpx.get(secure.portal.url.replace("/mcp", "/.well-known/oauth-protected-resource/mcp"), timeout=10)
    assert meta.json()["authorization_servers"] == [https_idp.issuer]


def test_a_portal_not_trusting_the_ca_refuses_the_same_token_and_keeps_serving(
    module_pm: ProcessManager, tmp_path: Path, https_idp: Idp
) -> None:
    secure = portal_over(module_pm, tmp_path, https_idp, trust_ca=False, name="proxy-untrusting")
    token = https_idp.client_credentials("ci-bot", "ci-bot-secret", secure.resource)
    for _ in range(2):
        r = list_tools(secure, token)
        assert r.status_code == 503, r.text
        assert "identity provider unavailable" in r.text
    assert secure.upstream_calls() == 0
    health = httpx.get(f"{secure.portal.admin}/healthz", timeout=5)
    assert health.status_code == 200
    assert "certificate" in secure.portal.proc.output().lower(), "the log should say why the issuer was unreachable"
