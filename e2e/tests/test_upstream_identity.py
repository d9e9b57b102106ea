"""The caller's identity, signed by the portal, for upstreams that opt in (`spec.identity`).

A real IdP (oidc-provider) keys the users' tokens; two recording Python `mcp` upstreams sit
behind one portal: `pyboth` asks for identity, `pyplain` does not. The test verifies what
`pyboth` received the way an upstream would: with the JWKS fetched from the portal (PyJWT's
PyJWKClient). The user's own token never reaches either upstream, `pyplain` never gets an
identity, a client cannot forge one, and anonymous callers of a public portal get none.
"""

from __future__ import annotations

import json
import subprocess
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx
import jwt
import pytest
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ed25519

from harness import manifests, paths, upstreams
from harness.procs import ProcessManager
from harness.proxy import Portal, start_proxy

from .auth_support import Idp, start_idp
from .test_auth_rejections import HEADERS, MODERN_META

HEADER = "x-portcullis-identity"
FORGED = "forged-identity-7c1e"


@dataclass
class Setup:
    idp: Idp
    portal: Portal  # requires the IdP's tokens
    public: Portal  # the same servers, anonymous
    records: dict[str, Path]
    manifest: Path

    def requests(self, server: str) -> list[dict[str, Any]]:
        p = self.records[server]
        return [json.loads(line) for line in p.read_text().splitlines() if line.strip()] if p.exists() else []

    def calls(self, server: str) -> list[dict[str, Any]]:
        return [r for r in self.requests(server) if '"tools/call"' in r["body"]]

    def user_token(self, sub: str, groups: list[str], **extra: Any) -> str:
        now = int(time.time())
        claims = {"iss": self.idp.issuer, "aud": self.portal.url, "sub": sub, "groups": groups, "scope": "mcp", "iat": now, "exp": now + 300}
        return self.idp.sign({**claims, **extra})


def signing_key_pem() -> str:
    key = ed25519.Ed25519PrivateKey.generate()
    return key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()).decode()


def documents(idp: Idp, urls: dict[str, str], key_secret: bool = True) -> list[dict[str, Any]]:
    wanting = manifests.remote_server("pyboth", urls["pyboth"])
    wanting["spec"]["identity"] = {"claims": ["email"], "ttlSeconds": 30}
    plain = manifests.remote_server("pyplain", urls["pyplain"])
    secure = manifests.portal("ident", names=["pyboth", "pyplain"], extra_spec={"auth": {"issuer": idp.issuer, "scopes": ["mcp"]}})
    del secure["spec"]["public"]
    public = manifests.portal("open", names=["pyboth", "pyplain"])
    docs = [wanting, plain, secure, public, manifests.secret("portal-session", {"key": manifests.session_key()})]
    docs.append(
        {
            "apiVersion": manifests.API,
            "kind": "McpPolicy",
            "metadata": {"name": "engineering-write"},
            "spec": {"portals": ["ident"], "subjects": [{"group": "engineering"}], "rules": [{"access": "write"}]},
        }
    )
    if key_secret:
        for p in (secure, public):
            p["spec"]["identitySigningKeyFrom"] = {"name": "identity-signing", "key": "key.pem"}
        docs.append(manifests.secret("identity-signing", {"key.pem": signing_key_pem()}))
    return docs


@pytest.fixture(scope="module")
def setup(module_pm: ProcessManager, tmp_path_factory: pytest.TempPathFactory) -> Setup:
    work = tmp_path_factory.mktemp("identity")
    try:
        idp = start_idp(module_pm, work)
        records = {n: work / f"{n}-requests.jsonl" for n in ("pyboth", "pyplain")}
        urls = {n: upstreams.py_both_eras(module_pm, n, record=records[n]).url for n in records}
        path = manifests.write(work, documents(idp, urls))
        portal = start_proxy(module_pm, path, "ident", name="proxy-ident")
        public = start_proxy(module_pm, path, "open", name="proxy-open")
        for p in (portal, public):
            p.wait_upstreams(["pyboth", "pyplain"])
        return Setup(idp, portal, public, records, path)
    except BaseException:
        print(f"\n===== process output =====\n{module_pm.tails()}")
        raise


def call(portal: Portal, token: str | None, name: str, message: str, meta: dict[str, Any] | None = None, headers: dict[str, str] | None = None) -> httpx.Response:
    h = dict(HEADERS, **{"mcp-protocol-version": "2026-07-28", "mcp-method": "tools/call", "mcp-name": name}, **(headers or {}))
    if token is not None:
        h["authorization"] = f"Bearer {token}"
    params = {"name": name, "arguments": {"message": message}, "_meta": {**MODERN_META, **(meta or {})}}
    r = httpx.post(portal.url, json={"jsonrpc": "2.0", "id": 1, "method": "tools/call", "params": params}, headers=h, timeout=15)
    assert r.status_code == 200 and "result" in r.json(), r.text
    return r


def identity_of(setup: Setup, message: str) -> str:
    """The identity header of pyboth's tools/call carrying `message`."""
    [req] = [r for r in setup.calls("pyboth") if message in r["body"]]
    assert HEADER in req["headers"], f"no identity header on the call: {req['headers']}"
    return req["headers"][HEADER]


def verify(setup: Setup, token: str) -> dict[str, Any]:
    """What an upstream does: the key from the portal's JWKS (by kid), then signature, aud,
    iss and expiry."""
    key = jwt.PyJWKClient(f"{setup.portal.base}/.well-known/jwks.json").get_signing_key_from_jwt(token)
    return jwt.decode(token, key, algorithms=["EdDSA", "ES256"], audience="pyboth", issuer="ident", options={"require": ["exp", "iat", "sub", "jti"]})


def test_the_upstream_that_opted_in_gets_the_callers_identity_signed_by_the_portal(setup: Setup) -> None:
    user = setup.user_token("alice", ["engineering"], email="alice@example.com")
    call(setup.portal, user, "pyboth_echo", "identity-1")
    token = identity_of(setup, "identity-1")
    claims = verify(setup, token)
    assert claims["sub"] == "alice" and claims["groups"] == ["engineering"], claims
    assert claims["email"] == "alice@example.com" and claims["aud"] == "pyboth", claims
    assert claims["exp"] - claims["iat"] == 30, claims
    assert jwt.get_unverified_header(token)["typ"] == "portcullis-identity+jwt"
    # A second call gets a fresh token (its own jti), not a replay of the first.
    call(setup.portal, user, "pyboth_echo", "identity-2")
    assert verify(setup, identity_of(setup, "identity-2"))["jti"] != claims["jti"]


def test_a_code_mode_call_carries_the_same_signed_identity(setup: Setup) -> None:
    user = setup.user_token("dave", ["engineering"])
    h = dict(HEADERS, **{"mcp-protocol-version": "2026-07-28", "mcp-method": "tools/call", "mcp-name": "portal_codemode_execute"})
    h["authorization"] = f"Bearer {user}"
    code = "async () => await codemode.pyboth_echo({message: 'codemode-1'})"
    params = {"name": "portal_codemode_execute", "arguments": {"code": code}, "_meta": MODERN_META}
    r = httpx.post(
        setup.portal.url + "?codemode=search_and_execute",
        json={"jsonrpc": "2.0", "id": 1, "method": "tools/call", "params": params},
        headers=h,
        timeout=15,
    )
    assert r.status_code == 200 and "codemode-1" in r.text, r.text
    claims = verify(setup, identity_of(setup, "codemode-1"))
    assert claims["sub"] == "dave" and claims["groups"] == ["engineering"], claims


def test_a_server_that_did_not_opt_in_gets_no_identity_and_no_one_gets_the_users_token(setup: Setup) -> None:
    user = setup.user_token("bob", ["engineering"])
    call(setup.portal, user, "pyplain_echo", "plain-1")
    call(setup.portal, user, "pyboth_echo", "plain-2")
    assert any("plain-1" in r["body"] for r in setup.calls("pyplain"))
    for r in setup.requests("pyplain"):
        assert HEADER not in r["headers"] and "dev.portcullis" not in r["body"], r
        assert not any(v.count(".") == 2 and v.startswith("eyJ") for v in r["headers"].values()), r
    for server in ("pyboth", "pyplain"):
        assert user not in json.dumps(setup.requests(server)), f"the user's token reached {server}"
    # The portal's own list and ping requests are nobody's: they carry no identity either.
    for r in setup.requests("pyboth"):
        if '"tools/call"' not in r["body"]:
            assert HEADER not in r["headers"], r


def test_a_client_cannot_forge_the_identity_in_meta_or_headers(setup: Setup) -> None:
    user = setup.user_token("carol", ["engineering"])
    call(
        setup.portal,
        user,
        "pyboth_echo",
        "forge-1",
        meta={"dev.portcullis/identity": FORGED, "sub": "root"},
        headers={"X-Portcullis-Identity": FORGED},
    )
    assert verify(setup, identity_of(setup, "forge-1"))["sub"] == "carol"
    for server in ("pyboth", "pyplain"):
        assert FORGED not in json.dumps(setup.requests(server)), f"a client-supplied identity reached {server}"


def test_anonymous_callers_of_a_public_portal_get_no_identity(setup: Setup) -> None:
    call(setup.public, None, "pyboth_echo", "anon-1")
    [req] = [r for r in setup.calls("pyboth") if "anon-1" in r["body"]]
    assert HEADER not in req["headers"], req["headers"]


def test_the_jwks_publishes_the_public_key_only(setup: Setup) -> None:
    r = httpx.get(f"{setup.portal.base}/.well-known/jwks.json", timeout=5)
    assert r.status_code == 200 and "max-age" in r.headers["cache-control"]
    [key] = r.json()["keys"]
    assert key["kty"] == "OKP" and key["crv"] == "Ed25519" and key["alg"] == "EdDSA" and key["use"] == "sig", key
    assert "d" not in key and key["kid"]
    # Replicas share the key through the Secret, so every portal over it publishes the same kid.
    assert httpx.get(f"{setup.public.base}/.well-known/jwks.json", timeout=5).json()["keys"][0]["kid"] == key["kid"]


def test_a_portal_whose_server_asks_for_identity_refuses_to_start_without_a_signing_key(setup: Setup, tmp_path: Path) -> None:
    urls = {"pyboth": "http://127.0.0.1:1/mcp", "pyplain": "http://127.0.0.1:2/mcp"}
    path = manifests.write(tmp_path, documents(setup.idp, urls, key_secret=False))
    binary = paths.require(paths.PROXY_BIN, "the portcullis-proxy binary")
    p = subprocess.run(
        [binary, "--manifests", path, "--portal", "ident", "--listen", "127.0.0.1:0", "--admin-listen", "127.0.0.1:0"],
        capture_output=True,
        text=True,
        timeout=30,
    )
    assert p.returncode != 0
    out = p.stdout + p.stderr
    assert "McpPortal ident" in out and "spec.identitySigningKeyFrom is not set" in out, out
