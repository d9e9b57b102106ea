"""Access conditions end to end (issue 19): the two portals of examples/access/portals.yaml,
run as written, with real peers only.

- Tokens come from the real IdP (npm `oidc-provider`, e2e/idp/provider.mjs) through the
  authorization-code flow, signed in with a one-time code (`amr` holds `mfa`) or without.
- The engineering portal sits behind real nginx doing mTLS: a test server CA, a corporate
  device CA and a personal CA (both trusted by nginx, only the device CA by the policy), client
  certificates made here. nginx connects to the portal from 127.0.0.3 (the example's
  `trustedProxies`) and forwards `X-Forwarded-For` and `$ssl_client_escaped_cert`.
- Clients are the Python `mcp` SDK over httpx, bound to 127.0.0.1 (the office network) or
  127.0.0.2 (elsewhere); they list and call tools of the bundled tickets server.

What the example promises: finance members read (never write) on the finance portal and nobody
else gets in; on the engineering portal engineers (contractors excluded) read, and write only
with MFA, a device certificate from the device CA and from the office network. Forged
`X-Forwarded-For` and certificate headers change nothing.
"""

from __future__ import annotations

import datetime
import ipaddress
import ssl
import subprocess
import urllib.parse
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx
import httpx2
import pytest
import yaml
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID
from mcp import Client
from mcp.client.streamable_http import streamable_http_client

from harness import paths
from harness.clients import list_all_tools, run
from harness.demo import DEMO_BIN
from harness.nginx import MtlsIngress, start_mtls_nginx
from harness.ports import free_port
from harness.procs import ProcessManager
from harness.proxy import Portal, start_proxy

from .auth_support import Idp, start_idp, user_token

EXAMPLE = paths.REPO / "examples" / "access" / "portals.yaml"
READ_TOOLS = {"tickets_list_tickets", "tickets_get_ticket"}
WRITE_TOOLS = {"tickets_update_ticket_status", "tickets_attach_document"}
OFFICE, ELSEWHERE, INGRESS = "127.0.0.1", "127.0.0.2", "127.0.0.3"


# --- certificates -----------------------------------------------------------------------------


def _name(cn: str, ou: str | None = None) -> x509.Name:
    attrs = [x509.NameAttribute(NameOID.ORGANIZATION_NAME, "Example Corp")]
    if ou:
        attrs.append(x509.NameAttribute(NameOID.ORGANIZATIONAL_UNIT_NAME, ou))
    attrs.append(x509.NameAttribute(NameOID.COMMON_NAME, cn))
    return x509.Name(attrs)  # RFC 4514: CN=...,OU=...,O=Example Corp


@dataclass
class Issued:
    cert: Path
    key: Path

    def escaped_pem(self) -> str:
        """As nginx's `$ssl_client_escaped_cert` forwards it."""
        return urllib.parse.quote(self.cert.read_text(), safe="")


class Ca:
    def __init__(self, workdir: Path, cn: str) -> None:
        self.workdir, self.name = workdir, _name(cn)
        self.key = ec.generate_private_key(ec.SECP256R1())
        now = datetime.datetime.now(datetime.timezone.utc)
        self.cert = (
            x509.CertificateBuilder()
            .subject_name(self.name)
            .issuer_name(self.name)
            .public_key(self.key.public_key())
            .serial_number(x509.random_serial_number())
            .not_valid_before(now - datetime.timedelta(minutes=5))
            .not_valid_after(now + datetime.timedelta(days=1))
            .add_extension(x509.BasicConstraints(ca=True, path_length=0), critical=True)
            .add_extension(x509.KeyUsage(False, False, False, False, False, True, True, False, False), critical=True)
            .sign(self.key, hashes.SHA256())
        )
        self.pem = self.cert.public_bytes(serialization.Encoding.PEM)

    def issue(self, file: str, subject: x509.Name, san: x509.GeneralName, server: bool = False) -> Issued:
        key = ec.generate_private_key(ec.SECP256R1())
        now = datetime.datetime.now(datetime.timezone.utc)
        eku = ExtendedKeyUsageOID.SERVER_AUTH if server else ExtendedKeyUsageOID.CLIENT_AUTH
        cert = (
            x509.CertificateBuilder()
            .subject_name(subject)
            .issuer_name(self.name)
            .public_key(key.public_key())
            .serial_number(x509.random_serial_number())
            .not_valid_before(now - datetime.timedelta(minutes=5))
            .not_valid_after(now + datetime.timedelta(days=1))
            .add_extension(x509.SubjectAlternativeName([san]), critical=False)
            .add_extension(x509.ExtendedKeyUsage([eku]), critical=False)
            .sign(self.key, hashes.SHA256())
        )
        out = Issued(self.workdir / f"{file}.pem", self.workdir / f"{file}-key.pem")
        out.cert.write_bytes(cert.public_bytes(serialization.Encoding.PEM))
        out.key.write_bytes(
            key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption())
        )
        return out


# --- the world --------------------------------------------------------------------------------


@dataclass
class World:
    idp: Idp
    finance: Portal
    engineering: Portal
    ingress: MtlsIngress
    server_ca: Path
    laptop: Issued  # issued by the corporate device CA
    personal: Issued  # issued by a CA nginx trusts, but not the policy
    tokens: dict[str, str]
    manifests: Path

    @property
    def eng_url(self) -> str:
        return f"{self.ingress.url}/mcp"


def _manifests(idp: Idp, ingress_url: str) -> list[dict[str, Any]]:
    """The example as written; only what is local to this run changes: the IdP's URL, the demo
    binary's path, and the engineering portal's public URL (the ingress)."""
    docs = [d for d in yaml.safe_load_all(EXAMPLE.read_text()) if d]
    for d in docs:
        spec = d["spec"]
        if d["kind"] == "McpPortal":
            assert spec["auth"]["issuer"] == "http://127.0.0.1:9600"
            spec["auth"]["issuer"] = idp.issuer
            if d["metadata"]["name"] == "engineering":
                spec["publicUrl"] = ingress_url
        if d["kind"] == "McpServer":
            assert spec["deployment"]["command"] == ["portcullis-demo"]
            spec["deployment"]["command"] = [str(paths.require(DEMO_BIN, "the portcullis-demo binary"))]
    return docs


@pytest.fixture(scope="module")
def world(module_pm: ProcessManager, tmp_path_factory: pytest.TempPathFactory) -> World:
    pm, workdir = module_pm, tmp_path_factory.mktemp("access")
    try:
        idp = start_idp(pm, workdir)
        server_ca = Ca(workdir, "Portcullis e2e server CA")
        server = server_ca.issue("ingress", _name("127.0.0.1"), x509.IPAddress(ipaddress.ip_address("127.0.0.1")), server=True)
        (workdir / "server-ca.pem").write_bytes(server_ca.pem)
        device_ca, personal_ca = Ca(workdir, "Example Device CA"), Ca(workdir, "Example Personal CA")
        laptop = device_ca.issue("laptop", _name("laptop-42", "Laptops"), x509.DNSName("laptop-42.devices.example.com"))
        personal = personal_ca.issue("personal", _name("bobs-phone", "Personal"), x509.DNSName("bobs-phone.example.net"))
        (workdir / "client-cas.pem").write_bytes(device_ca.pem + personal_ca.pem)

        ingress_port = free_port()
        ingress_url = f"https://127.0.0.1:{ingress_port}"
        path = workdir / "portals.yaml"
        path.write_text(yaml.safe_dump_all(_manifests(idp, ingress_url), sort_keys=False))
        finance = start_proxy(pm, path, "finance", name="proxy-finance")
        engineering = start_proxy(pm, path, "engineering", name="proxy-engineering")
        for p in (finance, engineering):
            p.wait_upstreams(["tickets"])
        backend = engineering.url.split("//", 1)[1].split("/", 1)[0]
        ingress = start_mtls_nginx(
            pm, workdir / "nginx", backend, server.cert, server.key, workdir / "client-cas.pem", bind=INGRESS, port=ingress_port
        )
        eng_resource = f"{ingress_url}/mcp"
        tokens = {
            "alice@finance": user_token(idp, "alice", "alice", finance.url),
            "bob@finance": user_token(idp, "bob", "bob", finance.url, otp="000000"),
            "carol@finance": user_token(idp, "carol", "carol", finance.url),
            "bob": user_token(idp, "bob", "bob", eng_resource),
            "bob+mfa": user_token(idp, "bob", "bob", eng_resource, otp="000000"),
            "dave+mfa": user_token(idp, "dave", "dave", eng_resource, otp="000000"),
            "alice+mfa": user_token(idp, "alice", "alice", eng_resource, otp="000000"),
        }
        return World(idp, finance, engineering, ingress, workdir / "server-ca.pem", laptop, personal, tokens, path)
    except BaseException:
        print(f"\n===== process output =====\n{pm.tails()}")
        raise


# --- a real MCP client from a chosen address, with or without a certificate -------------------


@dataclass
class Seen:
    tools: set[str]
    read: str  # the status of PORT-101 read through get_ticket
    write: str  # "ok" or the error the write call got


def _http(world: World, token: str, source: str, cert: Issued | None, headers: dict[str, str] | None) -> Any:
    ctx = ssl.create_default_context(cafile=str(world.server_ca))
    if cert:
        ctx.load_cert_chain(str(cert.cert), str(cert.key))
    transport = httpx2.AsyncHTTPTransport(local_address=source, verify=ctx)
    return httpx2.AsyncClient(
        transport=transport, headers={"authorization": f"Bearer {token}", **(headers or {})}, timeout=30
    )


def use(
    world: World,
    url: str,
    token: str,
    source: str = OFFICE,
    cert: Issued | None = None,
    headers: dict[str, str] | None = None,
    mode: str = "2026-07-28",
) -> Seen:
    """Lists the tools, reads a ticket and tries to move it to in_progress (a write)."""

    async def go() -> Seen:
        async with Client(
            streamable_http_client(url, http_client=_http(world, token, source, cert, headers)),
            mode=mode,
            read_timeout_seconds=30,
        ) as c:
            tools = {t.name for t in await list_all_tools(c)}
            got = await c.call_tool("tickets_get_ticket", {"key": "PORT-101"})
            read = (got.structured_content or {}).get("status", f"error: {got.content}")
            try:
                w = await c.call_tool("tickets_update_ticket_status", {"key": "PORT-101", "status": "in_progress"})
                write = f"error: {w.content}" if w.is_error else "ok"
            except Exception as e:  # the SDK raises JSON-RPC errors
                write = f"error: {e}"
            return Seen(tools, read, write)

    return run(go())


def refused(url: str, token: str, source: str = OFFICE, verify: Any = True) -> httpx.Response:
    """A raw tools/list POST (for answers an SDK turns into exceptions)."""
    body = {"jsonrpc": "2.0", "id": 1, "method": "initialize", "params": {
        "protocolVersion": "2025-11-25", "capabilities": {}, "clientInfo": {"name": "e2e", "version": "0"}}}
    with httpx.Client(transport=httpx.HTTPTransport(local_address=source, verify=verify), timeout=15) as h:
        return h.post(url, json=body, headers={"authorization": f"Bearer {token}", "accept": "application/json, text/event-stream"})


def assert_read_only(seen: Seen) -> None:
    assert seen.tools == READ_TOOLS, seen.tools
    assert seen.read in ("open", "in_progress", "done"), seen.read
    assert seen.write.startswith("error") and "Unknown tool" in seen.write, seen.write


def assert_read_write(seen: Seen) -> None:
    assert seen.tools == READ_TOOLS | WRITE_TOOLS, seen.tools
    assert seen.read in ("open", "in_progress", "done"), seen.read
    assert seen.write == "ok", seen.write


# --- finance: only the finance group, read-only -----------------------------------------------


@pytest.mark.parametrize("mode", ["legacy", "2026-07-28"])
def test_finance_members_read_but_never_write_on_the_finance_portal(world: World, mode: str) -> None:
    assert_read_only(use(world, world.finance.url, world.tokens["alice@finance"], mode=mode))


@pytest.mark.parametrize("who", ["bob@finance", "carol@finance"])
def test_nobody_outside_finance_gets_into_the_finance_portal_even_with_mfa(world: World, who: str) -> None:
    r = refused(world.finance.url, world.tokens[who])
    assert r.status_code == 403, r.text
    assert r.json()["selector"] == "include (no selector matched)", r.text


# --- engineering: read for engineers; write from a corporate device, with MFA, in the office --


@pytest.mark.parametrize("mode", ["legacy", "2026-07-28"])
def test_an_engineer_with_mfa_on_a_corporate_device_in_the_office_reads_and_writes(world: World, mode: str) -> None:
    assert_read_write(use(world, world.eng_url, world.tokens["bob+mfa"], OFFICE, world.laptop, mode=mode))


def test_without_mfa_the_same_engineer_and_device_only_read(world: World) -> None:
    assert_read_only(use(world, world.eng_url, world.tokens["bob"], OFFICE, world.laptop))


def test_without_a_device_certificate_an_engineer_with_mfa_only_reads(world: World) -> None:
    assert_read_only(use(world, world.eng_url, world.tokens["bob+mfa"], OFFICE, None))


def test_a_certificate_from_another_ca_the_ingress_trusts_is_not_a_corporate_device(world: World) -> None:
    assert_read_only(use(world, world.eng_url, world.tokens["bob+mfa"], OFFICE, world.personal))


def test_from_outside_the_office_network_an_engineer_only_reads(world: World) -> None:
    assert_read_only(use(world, world.eng_url, world.tokens["bob+mfa"], ELSEWHERE, world.laptop))


def test_contractors_and_non_engineers_do_not_get_into_the_engineering_portal(world: World) -> None:
    ctx = ssl.create_default_context(cafile=str(world.server_ca))
    r = refused(world.eng_url, world.tokens["dave+mfa"], verify=ctx)
    assert r.status_code == 403 and r.json()["selector"] == "exclude[0].group", r.text
    r = refused(world.eng_url, world.tokens["alice+mfa"], verify=ctx)
    assert r.status_code == 403 and r.json()["selector"] == "include (no selector matched)", r.text


# --- forged headers change nothing ------------------------------------------------------------


def test_a_forged_x_forwarded_for_through_the_ingress_does_not_move_the_client_into_the_office(world: World) -> None:
    # nginx appends the real peer (127.0.0.2): the rightmost untrusted hop is the real address.
    seen = use(world, world.eng_url, world.tokens["bob+mfa"], ELSEWHERE, world.laptop, headers={"x-forwarded-for": OFFICE})
    assert_read_only(seen)


def test_a_forged_certificate_header_through_the_ingress_is_replaced_by_what_nginx_verified(world: World) -> None:
    # No client certificate on the TLS connection; the header names the real laptop certificate.
    seen = use(
        world, world.eng_url, world.tokens["bob+mfa"], OFFICE, None, headers={"ssl-client-cert": world.laptop.escaped_pem()}
    )
    assert_read_only(seen)


@pytest.mark.parametrize("source", [OFFICE, ELSEWHERE])
def test_forged_headers_sent_straight_to_the_portal_by_an_untrusted_peer_change_nothing(world: World, source: str) -> None:
    # Past the ingress, from an address that is not a trusted proxy: the headers claim the office
    # and the corporate laptop. Only the TCP peer counts; without a certificate, read only.
    forged = {"x-forwarded-for": f"{OFFICE}, {INGRESS}", "ssl-client-cert": world.laptop.escaped_pem()}
    seen = use(world, world.engineering.url, world.tokens["bob+mfa"], source, None, headers=forged)
    assert_read_only(seen)


def test_the_access_cli_names_the_policy_and_the_selector_for_the_examples_engineer(world: World) -> None:
    """`portcullis-proxy access` over the same example: bob with MFA and the laptop certificate
    from the office gets the write tools; from elsewhere the decision names `sourceCidrs`."""
    base = [str(paths.PROXY_BIN), "access", "--manifests", str(world.manifests), "--portal", "engineering",
            "--subject", "bob", "--group", "engineering", "--amr", "mfa", "--client-cert", str(world.laptop.cert)]
    office = subprocess.run([*base, "--source-ip", OFFICE], capture_output=True, text=True, timeout=60)
    assert office.returncode == 0, office.stderr
    assert "tickets_update_ticket_status" in office.stdout.split("hidden tools")[0], office.stdout
    away = subprocess.run([*base, "--source-ip", ELSEWHERE], capture_output=True, text=True, timeout=60)
    assert away.returncode == 0, away.stderr
    hidden = away.stdout.split("hidden tools", 1)[1]
    assert "tickets_update_ticket_status" in hidden, away.stdout
    assert "engineering-write-from-corporate-devices" in hidden and "require[2].sourceCidrs" in hidden, away.stdout


# --- the portal's own HTTPS listener (spec.tls): a device certificate presented directly ------


@dataclass
class Direct:
    portal: Portal
    https_url: str
    server_ca: Path
    laptop: Issued
    personal: Issued
    token: str
    mfa_token: str


@pytest.fixture(scope="module")
def direct(module_pm: ProcessManager, tmp_path_factory: pytest.TempPathFactory) -> Direct:
    """One portal with `spec.tls` (server certificate, key and the device CA as `clientCaFrom`,
    all from a Secret) and one policy whose write rule requires the corporate device and MFA
    (rule-level conditions)."""
    pm, workdir = module_pm, tmp_path_factory.mktemp("access-tls")
    try:
        idp = start_idp(pm, workdir, name="idp-tls")
        server_ca = Ca(workdir, "Portcullis e2e server CA")
        server = server_ca.issue("portal", _name("127.0.0.1"), x509.IPAddress(ipaddress.ip_address("127.0.0.1")), server=True)
        (workdir / "server-ca.pem").write_bytes(server_ca.pem)
        device_ca, personal_ca = Ca(workdir, "Example Device CA"), Ca(workdir, "Example Personal CA")
        laptop = device_ca.issue("laptop", _name("laptop-7", "Laptops"), x509.DNSName("laptop-7.devices.example.com"))
        personal = personal_ca.issue("personal", _name("bobs-phone", "Personal"), x509.DNSName("bobs-phone.example.net"))
        tls_port = free_port()
        https = f"https://127.0.0.1:{tls_port}"
        tickets = next(d for d in _manifests(idp, https) if d["kind"] == "McpServer")
        docs = [
            tickets,
            {"apiVersion": "v1", "kind": "Secret", "metadata": {"name": "portal-tls"}, "stringData": {
                "tls.crt": server.cert.read_text(), "tls.key": server.key.read_text(), "ca.crt": device_ca.pem.decode()}},
            {"apiVersion": "portcullis.dev/v1alpha1", "kind": "McpPortal", "metadata": {"name": "devices"}, "spec": {
                "servers": {"names": ["tickets"]},
                "auth": {"issuer": idp.issuer, "scopes": ["mcp"]},
                "publicUrl": https,
                "tls": {
                    "certificateFrom": {"name": "portal-tls", "key": "tls.crt"},
                    "privateKeyFrom": {"name": "portal-tls", "key": "tls.key"},
                    "clientCaFrom": {"name": "portal-tls", "key": "ca.crt"},
                },
            }},
            {"apiVersion": "portcullis.dev/v1alpha1", "kind": "McpPolicy", "metadata": {"name": "engineering"}, "spec": {
                "portals": ["devices"],
                "include": [{"group": "engineering"}],
                "rules": [
                    {"access": "read"},
                    {"access": "write", "require": [
                        {"clientCertificate": {"issuer": "CN=Example Device CA,*", "subject": "CN=laptop-*"}},
                        {"authMethod": {"amr": ["mfa"]}},
                    ]},
                ],
            }},
        ]
        path = workdir / "devices.yaml"
        path.write_text(yaml.safe_dump_all(docs, sort_keys=False))
        portal = start_proxy(pm, path, "devices", name="proxy-devices", extra=["--tls-listen", f"127.0.0.1:{tls_port}"])
        portal.proc.wait_for(rf"serving {https}/mcp \(client certificates requested\)", timeout=10, stream="stdout")
        portal.wait_upstreams(["tickets"])
        resource = f"{https}/mcp"
        return Direct(
            portal, https, workdir / "server-ca.pem", laptop, personal,
            user_token(idp, "bob", "bob", resource), user_token(idp, "bob", "bob", resource, otp="000000"),
        )
    except BaseException:
        print(f"\n===== process output =====\n{pm.tails()}")
        raise


def _direct_world(d: Direct) -> World:
    """The client helper needs the server CA only."""
    return World(None, None, None, None, d.server_ca, d.laptop, d.personal, {}, Path())  # type: ignore[arg-type]


@pytest.mark.parametrize("mode", ["legacy", "2026-07-28"])
def test_a_device_certificate_presented_to_the_portals_tls_listener_grants_the_write_rule(direct: Direct, mode: str) -> None:
    assert_read_write(use(_direct_world(direct), f"{direct.https_url}/mcp", direct.mfa_token, cert=direct.laptop, mode=mode))


def test_on_the_tls_listener_without_a_certificate_or_without_mfa_an_engineer_only_reads(direct: Direct) -> None:
    w = _direct_world(direct)
    assert_read_only(use(w, f"{direct.https_url}/mcp", direct.mfa_token))
    assert_read_only(use(w, f"{direct.https_url}/mcp", direct.token, cert=direct.laptop))


def test_a_certificate_from_a_ca_outside_client_ca_from_fails_the_handshake(direct: Direct) -> None:
    ctx = ssl.create_default_context(cafile=str(direct.server_ca))
    ctx.load_cert_chain(str(direct.personal.cert), str(direct.personal.key))
    with pytest.raises(httpx.HTTPError):
        # TLS 1.3: the server's verdict on the certificate arrives with the first read.
        with httpx.Client(verify=ctx, timeout=10) as h:
            h.post(f"{direct.https_url}/mcp", json={}, headers={"authorization": f"Bearer {direct.mfa_token}"})


def test_a_certificate_header_on_the_plain_listener_is_not_a_presented_certificate(direct: Direct) -> None:
    # No trustedProxies: the header is nobody's word; the plain listener has no certificate.
    forged = {"ssl-client-cert": direct.laptop.escaped_pem(), "x-forwarded-client-cert": f'Cert="{direct.laptop.escaped_pem()}"'}
    assert_read_only(use(_direct_world(direct), direct.portal.url, direct.mfa_token, headers=forged))
