"""Support for the auth e2e tests: a real IdP (npm `oidc-provider`, e2e/idp/provider.mjs), a
portal that requires its tokens over a recording upstream, and a "browser" that signs in on the
IdP's login form the way a user would."""

from __future__ import annotations

import base64
import datetime
import hashlib
import hmac
import ipaddress
import json
import re
import ssl
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any
from urllib.parse import parse_qs, urljoin, urlparse

import httpx
import jwt
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec, rsa
from cryptography.x509.oid import NameOID

from harness import manifests, paths, upstreams
from harness.procs import Proc, ProcessManager
from harness.proxy import Portal, start_proxy

IDP_JS = paths.E2E / "idp" / "provider.mjs"
REDIRECT_URI = "http://127.0.0.1:33418/callback"  # nothing listens: the test reads the code


@dataclass
class Tls:
    """A private CA (as a company has) and a server certificate it issued for 127.0.0.1."""

    ca: Path
    cert: Path
    key: Path


def private_ca(workdir: Path) -> Tls:
    now = datetime.datetime.now(datetime.timezone.utc)
    ca_key = ec.generate_private_key(ec.SECP256R1())
    ca_name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "Portcullis e2e private CA")])
    ca = (
        x509.CertificateBuilder()
        .subject_name(ca_name)
        .issuer_name(ca_name)
        .public_key(ca_key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - datetime.timedelta(minutes=5))
        .not_valid_after(now + datetime.timedelta(days=1))
        .add_extension(x509.BasicConstraints(ca=True, path_length=0), critical=True)
        .add_extension(x509.KeyUsage(False, False, False, False, False, True, True, False, False), critical=True)
        .sign(ca_key, hashes.SHA256())
    )
    key = ec.generate_private_key(ec.SECP256R1())
    cert = (
        x509.CertificateBuilder()
        .subject_name(x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "127.0.0.1")]))
        .issuer_name(ca_name)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - datetime.timedelta(minutes=5))
        .not_valid_after(now + datetime.timedelta(days=1))
        .add_extension(x509.SubjectAlternativeName([x509.IPAddress(ipaddress.ip_address("127.0.0.1"))]), critical=False)
        .add_extension(x509.ExtendedKeyUsage([x509.oid.ExtendedKeyUsageOID.SERVER_AUTH]), critical=False)
        .sign(ca_key, hashes.SHA256())
    )
    tls = Tls(workdir / "ca.pem", workdir / "idp-cert.pem", workdir / "idp-key.pem")
    tls.ca.write_bytes(ca.public_bytes(serialization.Encoding.PEM))
    tls.cert.write_bytes(cert.public_bytes(serialization.Encoding.PEM))
    tls.key.write_bytes(
        key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption())
    )
    return tls


@dataclass
class Idp:
    issuer: str
    key_file: Path
    proc: Proc
    tls: Tls | None = None

    def private_jwk(self) -> dict[str, Any]:
        return json.loads(self.key_file.read_text())

    def sign(self, claims: dict[str, Any], kid: str | None = None, key: Any = None) -> str:
        """An RS256 token signed with the IdP's own key (or `key`)."""
        jwk = self.private_jwk()
        signing = key or jwt.algorithms.RSAAlgorithm.from_jwk(json.dumps(jwk))
        return jwt.encode(claims, signing, algorithm="RS256", headers={"kid": kid or jwk["kid"], "typ": "at+jwt"})

    def public_pem(self) -> bytes:
        key = jwt.algorithms.RSAAlgorithm.from_jwk(json.dumps(self.private_jwk()))
        return key.public_key().public_bytes(serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo)

    def client_credentials(self, client_id: str, secret: str, resource: str, scope: str = "mcp") -> str:
        r = httpx.post(
            f"{self.issuer}/token",
            auth=(client_id, secret),
            data={"grant_type": "client_credentials", "scope": scope, "resource": resource},
            timeout=10,
            verify=ssl.create_default_context(cafile=str(self.tls.ca)) if self.tls else True,
        )
        assert r.status_code == 200, r.text
        return r.json()["access_token"]


def start_idp(
    pm: ProcessManager, workdir: Path, name: str = "idp", tls: Tls | None = None, token_ttl: int | None = None
) -> Idp:
    paths.require(paths.NODE_MODULES / "oidc-provider", "npm oidc-provider")
    key_file = workdir / f"{name}-key.json"
    cmd: list[Any] = [paths.NODE, IDP_JS, "--port", "0", "--key-file", key_file]
    if token_ttl is not None:
        cmd += ["--access-token-ttl", str(token_ttl)]
    if tls:
        cmd += ["--tls-cert", tls.cert, "--tls-key", tls.key]
    proc = pm.start(name, cmd)
    m = proc.wait_for(r"idp: issuer (https?://\S+)", timeout=60, stream="stdout")
    return Idp(m.group(1), key_file, proc, tls)


@dataclass
class AuthPortal:
    portal: Portal
    idp: Idp
    record: Path
    resource: str = field(init=False)

    def __post_init__(self) -> None:
        self.resource = self.portal.url

    def upstream_requests(self) -> list[dict[str, Any]]:
        if not self.record.exists():
            return []
        return [json.loads(line) for line in self.record.read_text().splitlines() if line.strip()]

    def upstream_calls(self) -> int:
        return sum(1 for r in self.upstream_requests() if '"tools/call"' in r["body"])

    def claims(self, sub: str, groups: list[str], **overrides: Any) -> dict[str, Any]:
        now = int(time.time())
        c: dict[str, Any] = {
            "iss": self.idp.issuer,
            "aud": self.resource,
            "sub": sub,
            "groups": groups,
            "scope": "mcp",
            "iat": now,
            "exp": now + 300,
        }
        c.update(overrides)
        return c


def start_auth_portal(
    pm: ProcessManager,
    workdir: Path,
    idp: Idp | None = None,
    proxy_env: dict[str, str] | None = None,
    proxy_name: str = "proxy",
    upstream_tls: Tls | None = None,
    upstream_oauth: dict[str, str] | None = None,
    wait: bool = True,
) -> AuthPortal:
    """IdP + the Python `mcp` server (recording every request it gets) + a portal over it that
    requires the IdP's tokens. Policies: group finance reads, group engineering writes.

    `upstream_oauth` ({client_id, client_secret, resource}) makes the portal fetch its own token
    for the upstream from the IdP (client credentials; the id and secret in a Secret)."""
    idp = idp or start_idp(pm, workdir)
    record = workdir / "upstream-requests.jsonl"
    tls = (upstream_tls.cert, upstream_tls.key) if upstream_tls else None
    py = upstreams.py_both_eras(pm, "pyboth", record=record, tls=tls)
    server = manifests.remote_server("pyboth", py.url)
    # `add` and `whoami` only read; `echo` counts as a write (no readOnlyHint).
    server["spec"]["tools"] = [{"name": "add", "readOnly": True}, {"name": "whoami", "readOnly": True}]
    extra_docs = []
    if upstream_oauth:
        server["spec"]["remote"]["oauth"] = {
            "tokenUrl": f"{idp.issuer}/token",
            "clientIdFrom": {"name": "pyboth-client", "key": "id"},
            "clientSecretFrom": {"name": "pyboth-client", "key": "secret"},
            "scopes": ["mcp"],
            "resource": upstream_oauth["resource"],
        }
        extra_docs.append(
            manifests.secret("pyboth-client", {"id": upstream_oauth["client_id"], "secret": upstream_oauth["client_secret"]})
        )
    portal = manifests.portal(
        "secure",
        names=["pyboth"],
        extra_spec={"auth": {"issuer": idp.issuer, "scopes": ["mcp"], "groupsClaim": "groups"}},
    )
    del portal["spec"]["public"]
    policy = lambda name, group, access: {  # noqa: E731
        "apiVersion": manifests.API,
        "kind": "McpPolicy",
        "metadata": {"name": name},
        "spec": {"portals": ["secure"], "subjects": [{"group": group}], "rules": [{"access": access}]},
    }
    docs = [
        server,
        manifests.secret("portal-session", {"key": manifests.session_key()}),
        portal,
        policy("finance-read", "finance", "read"),
        policy("engineering-write", "engineering", "write"),
        *extra_docs,
    ]
    path = manifests.write(workdir, docs)
    p = start_proxy(pm, path, "secure", name=proxy_name, env=proxy_env)
    if wait:
        p.wait_upstreams(["pyboth"])
    return AuthPortal(p, idp, record)


# --- the user's side of the authorization-code flow -------------------------------------------


class Browser:
    """Signs in on the IdP's login form and captures the authorization response, as a user's
    browser would (cookies kept, redirects followed, form posted)."""

    def __init__(self, login: str, password: str) -> None:
        self.login, self.password = login, password
        self.result: dict[str, str] | None = None
        self.visited: list[str] = []

    async def redirect_handler(self, url: str) -> None:
        async with httpx.AsyncClient(follow_redirects=False, timeout=20) as h:
            r = await h.get(url)
            for _ in range(20):
                self.visited.append(str(r.url))
                if r.status_code in (302, 303, 307):
                    location = urljoin(str(r.url), r.headers["location"])
                    if location.startswith(REDIRECT_URI):
                        q = {k: v[0] for k, v in parse_qs(urlparse(location).query).items()}
                        assert "code" in q, f"authorization failed: {q}"
                        self.result = q
                        return
                    r = await h.get(location)
                    continue
                if r.status_code == 200 and "<form" in r.text:
                    action = re.search(r'action="([^"]+)"', r.text)
                    assert action, r.text
                    r = await h.post(
                        urljoin(str(r.url), action.group(1)),
                        data={"login": self.login, "password": self.password},
                    )
                    continue
                raise AssertionError(f"unexpected IdP response {r.status_code} at {r.url}: {r.text[:500]}")
        raise AssertionError(f"too many redirects: {self.visited}")

    async def callback_handler(self) -> Any:
        from mcp.shared.auth import AuthorizationCodeResult

        assert self.result, "the redirect handler did not capture an authorization response"
        return AuthorizationCodeResult(code=self.result["code"], state=self.result.get("state"), iss=self.result.get("iss"))


class MemoryStorage:
    def __init__(self) -> None:
        self.tokens: Any = None
        self.client_info: Any = None

    async def get_tokens(self) -> Any:
        return self.tokens

    async def set_tokens(self, tokens: Any) -> None:
        self.tokens = tokens

    async def get_client_info(self) -> Any:
        return self.client_info

    async def set_client_info(self, client_info: Any) -> None:
        self.client_info = client_info


def b64url(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode()


def forge_hs256(claims: dict[str, Any], secret: bytes, kid: str) -> str:
    """HS256 'signed' with the IdP's public key: the classic algorithm-confusion forgery."""
    head = b64url(json.dumps({"alg": "HS256", "typ": "JWT", "kid": kid}).encode())
    body = b64url(json.dumps(claims).encode())
    sig = hmac.new(secret, f"{head}.{body}".encode(), hashlib.sha256).digest()
    return f"{head}.{body}.{b64url(sig)}"


def unsigned(claims: dict[str, Any]) -> str:
    head = b64url(json.dumps({"alg": "none", "typ": "JWT"}).encode())
    return f"{head}.{b64url(json.dumps(claims).encode())}."


def tamper(token: str, **changes: Any) -> str:
    """The token with its payload changed and its signature kept."""
    head, body, sig = token.split(".")
    claims = json.loads(base64.urlsafe_b64decode(body + "=" * (-len(body) % 4)))
    claims.update(changes)
    return f"{head}.{b64url(json.dumps(claims).encode())}.{sig}"


def fresh_rsa_key() -> Any:
    return rsa.generate_private_key(public_exponent=65537, key_size=2048)


def user_token(idp: Idp, login: str, password: str, resource: str, otp: str | None = None) -> str:
    """An access token for `resource` from the IdP's authorization-code flow (a dynamically
    registered public client, PKCE), signing in on the login form as `login` — with the one-time
    code `otp` (multi-factor: the token's `amr` holds `mfa`) or without it (`amr: ["pwd"]`)."""
    verify: Any = ssl.create_default_context(cafile=str(idp.tls.ca)) if idp.tls else True
    with httpx.Client(timeout=20, follow_redirects=False, verify=verify) as h:
        reg = h.post(
            f"{idp.issuer}/reg",
            json={
                "redirect_uris": [REDIRECT_URI],
                "token_endpoint_auth_method": "none",
                "grant_types": ["authorization_code"],
                "response_types": ["code"],
            },
        )
        assert reg.status_code == 201, reg.text
        client_id = reg.json()["client_id"]
        verifier = b64url(hashlib.sha256(str(time.time_ns()).encode() + login.encode()).digest() * 2)
        challenge = b64url(hashlib.sha256(verifier.encode()).digest())
        r = h.get(
            f"{idp.issuer}/auth",
            params={
                "client_id": client_id,
                "response_type": "code",
                "redirect_uri": REDIRECT_URI,
                "scope": "openid mcp",
                "resource": resource,
                "code_challenge": challenge,
                "code_challenge_method": "S256",
                "state": "s",
            },
        )
        code = None
        for _ in range(20):
            if r.status_code in (302, 303, 307):
                location = urljoin(str(r.url), r.headers["location"])
                if location.startswith(REDIRECT_URI):
                    q = {k: v[0] for k, v in parse_qs(urlparse(location).query).items()}
                    assert "code" in q, f"authorization failed: {q}"
                    code = q["code"]
                    break
                r = h.get(location)
            elif r.status_code == 200 and "<form" in r.text:
                action = re.search(r'action="([^"]+)"', r.text)
                assert action, r.text
                form = {"login": login, "password": password}
                if otp is not None:
                    form["otp"] = otp
                r = h.post(urljoin(str(r.url), action.group(1)), data=form)
            else:
                raise AssertionError(f"unexpected IdP response {r.status_code} at {r.url}: {r.text[:500]}")
        assert code, "no authorization code"
        tok = h.post(
            f"{idp.issuer}/token",
            data={
                "grant_type": "authorization_code",
                "code": code,
                "redirect_uri": REDIRECT_URI,
                "code_verifier": verifier,
                "client_id": client_id,
                "resource": resource,
            },
        )
        assert tok.status_code == 200, tok.text
        return tok.json()["access_token"]
