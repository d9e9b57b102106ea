"""The full OAuth flow, driven by real clients against a real IdP (npm `oidc-provider`):

- PyPI `mcp` `OAuthClientProvider`: 401 -> protected-resource metadata -> IdP discovery ->
  dynamic registration -> authorization code + PKCE + resource indicator (the test signs in
  on the IdP's login form) -> token -> the portal, in both protocol eras;
- PyPI `mcp` `ClientCredentialsOAuthProvider` (a machine client);
- npm `mcp-remote` (stdio bridge with its own OAuth client and callback server).

Each identity sees exactly what McpPolicy grants its groups, and the upstream never sees the
client's token.
"""

from __future__ import annotations

import json
import re
import time
from pathlib import Path
from typing import Any
from urllib.parse import parse_qs, urlparse

import httpx
import pytest

from harness import paths
from harness.clients import list_all_tools, run, text_of
from harness.procs import ProcessManager

from .auth_support import REDIRECT_URI, AuthPortal, Browser, MemoryStorage, start_auth_portal

FINANCE = ["pyboth_add", "pyboth_whoami"]
ENGINEERING = ["pyboth_add", "pyboth_echo", "pyboth_whoami"]


@pytest.fixture(scope="module")
def secure(module_pm: ProcessManager, tmp_path_factory: pytest.TempPathFactory) -> AuthPortal:
    try:
        return start_auth_portal(module_pm, tmp_path_factory.mktemp("auth"))
    except BaseException:
        print(f"\n===== process output =====\n{module_pm.tails()}")
        raise


def _client(url: str, auth: Any, mode: str) -> Any:
    import httpx2
    from mcp import Client
    from mcp.client.streamable_http import streamable_http_client

    http_client = httpx2.AsyncClient(auth=auth, timeout=30, follow_redirects=False)
    return Client(streamable_http_client(url, http_client=http_client), mode=mode, read_timeout_seconds=30)


def _code_flow_provider(url: str, browser: Browser) -> Any:
    from mcp.client.auth import OAuthClientProvider
    from mcp.shared.auth import OAuthClientMetadata

    metadata = OAuthClientMetadata(
        client_name="portcullis-e2e",
        redirect_uris=[REDIRECT_URI],
        grant_types=["authorization_code", "refresh_token"],
        response_types=["code"],
    )
    return OAuthClientProvider(
        server_url=url,
        client_metadata=metadata,
        storage=MemoryStorage(),
        redirect_handler=browser.redirect_handler,
        callback_handler=browser.callback_handler,
    )


async def _tools_and_calls(c: Any) -> tuple[list[str], dict[str, str]]:
    async with c:
        names = sorted(t.name for t in await list_all_tools(c))
        outcomes: dict[str, str] = {}
        for name, args in [("pyboth_add", {"a": 1, "b": 2}), ("pyboth_echo", {"message": "hi"})]:
            try:
                r = await c.call_tool(name, args)
                outcomes[name] = "error: " + text_of(r) if r.is_error else text_of(r)
            except Exception as e:  # a JSON-RPC error
                outcomes[name] = f"error: {e}"
        return names, outcomes


@pytest.mark.parametrize("mode", ["legacy", "2026-07-28"])
def test_python_sdk_code_flow_with_pkce_gives_finance_only_read_tools(secure: AuthPortal, mode: str) -> None:
    browser = Browser("alice", "alice")
    calls_before = secure.upstream_calls()
    names, outcomes = run(_tools_and_calls(_client(secure.portal.url, _code_flow_provider(secure.portal.url, browser), mode)))
    assert any("/interaction/" in u for u in browser.visited), "the user signed in on the IdP's form"
    assert names == FINANCE
    assert outcomes["pyboth_add"].strip() == "3" or "3" in outcomes["pyboth_add"], outcomes
    # A hidden tool answers exactly like a tool that does not exist, and never reaches upstream.
    assert "Unknown tool: pyboth_echo" in outcomes["pyboth_echo"], outcomes
    assert secure.upstream_calls() == calls_before + 1


@pytest.mark.parametrize("mode", ["legacy", "2026-07-28"])
def test_python_sdk_code_flow_gives_engineering_read_and_write_tools(secure: AuthPortal, mode: str) -> None:
    browser = Browser("bob", "bob")
    names, outcomes = run(_tools_and_calls(_client(secure.portal.url, _code_flow_provider(secure.portal.url, browser), mode)))
    assert names == ENGINEERING
    assert "pyboth: hi" in outcomes["pyboth_echo"] or "hi" in outcomes["pyboth_echo"], outcomes


def test_a_user_without_a_granting_group_sees_nothing(secure: AuthPortal) -> None:
    names, outcomes = run(_tools_and_calls(_client(secure.portal.url, _code_flow_provider(secure.portal.url, Browser("carol", "carol")), "auto")))
    assert names == []
    assert all("Unknown tool" in o for o in outcomes.values()), outcomes


def test_python_sdk_client_credentials_gives_the_bots_group_tools(secure: AuthPortal) -> None:
    from mcp.client.auth.extensions.client_credentials import ClientCredentialsOAuthProvider

    for client_id, expected in [("ci-bot", ENGINEERING), ("reader-bot", FINANCE)]:
        provider = ClientCredentialsOAuthProvider(
            server_url=secure.portal.url,
            storage=MemoryStorage(),
            client_id=client_id,
            client_secret=f"{client_id}-secret",
            scope="mcp",
            issuer=secure.idp.issuer,
        )
        names, _ = run(_tools_and_calls(_client(secure.portal.url, provider, "auto")))
        assert names == expected, client_id


def test_the_upstream_never_sees_the_clients_authorization_header(secure: AuthPortal) -> None:
    # Make sure at least one authenticated call went through, whatever ran before.
    token = secure.idp.client_credentials("ci-bot", "ci-bot-secret", secure.resource)
    names, _ = run(_tools_and_calls(_client(secure.portal.url, _Bearer(token), "legacy")))
    assert names == ENGINEERING
    requests = secure.upstream_requests()
    assert any('"tools/call"' in r["body"] for r in requests)
    for r in requests:
        headers = {k.lower(): v for k, v in r["headers"].items()} if isinstance(r["headers"], dict) else {k.lower(): v for k, v in r["headers"]}
        assert "authorization" not in headers, r
        assert token not in json.dumps(r), "the client's token reached the upstream"


class _Bearer:
    """httpx2 auth that sends a fixed bearer token."""

    def __init__(self, token: str) -> None:
        self.token = token

    def __call__(self, request: Any) -> Any:
        request.headers["Authorization"] = f"Bearer {self.token}"
        return request


def test_protected_resource_metadata_names_the_portal_and_its_issuer(secure: AuthPortal) -> None:
    r = httpx.post(secure.portal.url, json={"jsonrpc": "2.0", "id": 1, "method": "tools/list"}, timeout=10)
    assert r.status_code == 401
    www = r.headers["www-authenticate"]
    m = re.search(r'resource_metadata="([^"]+)"', www)
    assert m and 'scope="mcp"' in www, www
    assert m.group(1) == secure.portal.base + "/.well-known/oauth-protected-resource/mcp"
    meta = httpx.get(m.group(1), timeout=10).json()
    assert meta["resource"] == secure.portal.url
    assert meta["authorization_servers"] == [secure.idp.issuer]
    assert meta["scopes_supported"] == ["mcp"]
    assert httpx.get(secure.portal.base + "/.well-known/oauth-protected-resource", timeout=10).json() == meta


def test_mcp_remote_signs_in_and_lists_the_users_tools(secure: AuthPortal, pm: ProcessManager, tmp_path: Path) -> None:
    """npm `mcp-remote` (its `mcp-remote-client`): its own OAuth client (metadata discovery,
    dynamic registration, PKCE, resource indicator, local callback server). The test plays the
    browser: it opens the authorization URL mcp-remote prints, signs in as bob, and delivers the
    redirect to mcp-remote's callback server."""
    client_js = paths.require(paths.NODE_MODULES / "mcp-remote" / "dist" / "client.js", "npm mcp-remote")
    from harness.ports import free_port

    callback_port = free_port()
    env = {"MCP_REMOTE_CONFIG_DIR": str(tmp_path / "mcp-auth"), "BROWSER": "true", "DISPLAY": ""}
    # mcp-remote exits when its stdin closes; keep a pipe open for the run.
    argv = [str(paths.NODE), str(client_js), secure.portal.url, str(callback_port), "--host", "127.0.0.1", "--allow-http"]
    proc = pm.start("mcp-remote", ["sh", "-c", 'sleep 600 | exec "$@"', "sh", *argv], env=env)
    m = proc.wait_for(r"(http://127\.0\.0\.1:\d+/auth\?\S+)", timeout=90)
    auth_url = m.group(1)
    assert "code_challenge=" in auth_url and "resource=" in auth_url, auth_url
    browser = _FollowToCallback("bob", "bob", f"http://127.0.0.1:{callback_port}/")
    run(browser.redirect_handler(auth_url))
    proc.wait_for(r"Exiting OK", timeout=90)
    out = proc.output()
    listed = out[out.index("Tools:") :]
    names = sorted(set(re.findall(r'"name":\s*"(pyboth_[a-z]+)"', listed)))
    assert names == ENGINEERING, out[-3000:]


class _FollowToCallback(Browser):
    """Signs in, then delivers the authorization response to a real callback server."""

    def __init__(self, login: str, password: str, callback_prefix: str) -> None:
        super().__init__(login, password)
        self.callback_prefix = callback_prefix

    async def redirect_handler(self, url: str) -> None:
        async with httpx.AsyncClient(follow_redirects=False, timeout=20) as h:
            r = await h.get(url)
            for _ in range(20):
                self.visited.append(str(r.url))
                if r.status_code in (302, 303, 307):
                    location = httpx.URL(str(r.url)).join(r.headers["location"])
                    if str(location).startswith(self.callback_prefix) or "callback" in location.path:
                        q = parse_qs(urlparse(str(location)).query)
                        assert "code" in q, q
                        done = await h.get(location)
                        assert done.status_code < 400, done.text
                        return
                    r = await h.get(location)
                    continue
                if r.status_code == 200 and "<form" in r.text:
                    action = re.search(r'action="([^"]+)"', r.text)
                    assert action
                    r = await h.post(httpx.URL(str(r.url)).join(action.group(1)), data={"login": self.login, "password": self.password})
                    continue
                raise AssertionError(f"unexpected IdP response {r.status_code} at {r.url}: {r.text[:300]}")
            time.sleep(0)
        raise AssertionError(f"too many redirects: {self.visited}")
