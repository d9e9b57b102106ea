"""The LLM gateway's model grants under access conditions (issue 19): an McpPolicy's `models`
apply only to callers meeting its `include`/`require`/`exclude`, with the official `openai` and
`anthropic` SDKs, real tokens from the real IdP (signed in with or without a one-time code, so
with or without `amr: ["mfa"]`), clients bound to 127.0.0.1 or 127.0.0.2, and the provider
emulator (the one stand-in) recording what reaches a provider.

Policies: `models-with-mfa` grants `gpt` and `claude` to engineering with MFA;
`claude-from-the-lab` grants `claude` to engineering from 127.0.0.2 (the lab network).
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import anthropic
import httpx
import httpx2
import openai
import pytest

from harness import manifests
from harness.procs import ProcessManager
from harness.proxy import Portal, start_proxy

from .auth_support import start_idp, user_token
from .test_llm_gateway import ANTHROPIC_KEY, OPENAI_KEY, Emulator, start_emulator

OFFICE, LAB = "127.0.0.1", "127.0.0.2"


@dataclass
class Gated:
    portal: Portal
    oa: Emulator
    an: Emulator
    audit: Path
    plain: str  # bob's token, password only
    mfa: str  # bob's token, with the one-time code

    def http(self, source: str) -> httpx.Client:
        return httpx.Client(transport=httpx.HTTPTransport(local_address=source), timeout=20)

    def openai(self, token: str, source: str = OFFICE) -> openai.OpenAI:
        return openai.OpenAI(base_url=f"{self.portal.base}/llm/openai/v1", api_key=token, max_retries=0,
                             http_client=self.http(source))

    def http2(self, source: str) -> httpx2.Client:
        """The `anthropic` SDK's HTTP client (it is built on `httpx2`)."""
        return httpx2.Client(transport=httpx2.HTTPTransport(local_address=source), timeout=20)

    def anthropic(self, token: str, source: str = OFFICE) -> anthropic.Anthropic:
        return anthropic.Anthropic(base_url=f"{self.portal.base}/llm/anthropic", auth_token=token, max_retries=0,
                                   http_client=self.http2(source))

    def seen(self) -> tuple[int, int]:
        return len(self.oa.requests()), len(self.an.requests())


@pytest.fixture(scope="module")
def gated(module_pm: ProcessManager, tmp_path_factory: pytest.TempPathFactory) -> Gated:
    workdir = tmp_path_factory.mktemp("llm-access")
    try:
        idp = start_idp(module_pm, workdir, name="idp-llm")
        oa = start_emulator(module_pm, "openai-emu-gated", OPENAI_KEY)
        an = start_emulator(module_pm, "anthropic-emu-gated", ANTHROPIC_KEY)
        portal = manifests.portal("llm", names=[], extra_spec={
            "auth": {"issuer": idp.issuer, "scopes": ["mcp"]},
            "llm": {"routes": [
                {"alias": "gpt", "targets": [{"provider": "openAICompatible", "baseUrl": f"{oa.url}/v1", "model": "gpt-4o-mini",
                                              "apiKeyFrom": {"name": "llm-keys", "key": "openai"}}]},
                {"alias": "claude", "targets": [{"provider": "anthropic", "baseUrl": an.url, "model": "claude-haiku-4-5",
                                                 "apiKeyFrom": {"name": "llm-keys", "key": "anthropic"}}]},
            ]},
        })
        del portal["spec"]["public"]
        policy = lambda name, spec: {"apiVersion": manifests.API, "kind": "McpPolicy",  # noqa: E731
                                     "metadata": {"name": name}, "spec": {"portals": ["llm"], **spec}}
        docs = [
            manifests.secret("portal-session", {"key": manifests.session_key()}),
            manifests.secret("llm-keys", {"openai": OPENAI_KEY, "anthropic": ANTHROPIC_KEY}),
            portal,
            policy("models-with-mfa", {"include": [{"group": "engineering"}], "require": [{"authMethod": {"amr": ["mfa"]}}],
                                       "models": ["gpt", "claude"]}),
            policy("claude-from-the-lab", {"include": [{"group": "engineering"}], "require": [{"sourceCidrs": [f"{LAB}/32"]}],
                                           "models": ["claude"]}),
        ]
        path = manifests.write(workdir, docs)
        audit = workdir / "audit.jsonl"
        p = start_proxy(module_pm, path, "llm", extra=["--audit-file", str(audit)])
        return Gated(p, oa, an, audit, user_token(idp, "bob", "bob", p.url), user_token(idp, "bob", "bob", p.url, otp="000000"))
    except BaseException:
        print(f"\n===== process output =====\n{module_pm.tails()}")
        raise


def ask_openai(client: openai.OpenAI, model: str) -> str:
    r = client.chat.completions.create(model=model, messages=[{"role": "user", "content": "hello"}])
    return r.choices[0].message.content or ""


def ask_anthropic(client: anthropic.Anthropic, model: str) -> str:
    r = client.messages.create(model=model, max_tokens=16, messages=[{"role": "user", "content": "hello"}])
    return r.content[0].text  # type: ignore[union-attr]


def test_without_mfa_a_model_granted_only_with_mfa_is_403_in_each_dialect_and_no_provider_sees_it(gated: Gated) -> None:
    before = gated.seen()
    with pytest.raises(openai.PermissionDeniedError) as e:
        ask_openai(gated.openai(gated.plain), "gpt")
    assert e.value.body["type"] == "permission_error", e.value.body
    assert "models-with-mfa" in e.value.body["message"] and "require[0].authMethod" in e.value.body["message"], e.value.body
    with pytest.raises(anthropic.PermissionDeniedError) as a:
        ask_anthropic(gated.anthropic(gated.plain), "claude")
    assert a.value.body["error"]["type"] == "permission_error", a.value.body
    assert gated.seen() == before
    assert [m.id for m in gated.openai(gated.plain).models.list()] == []
    denials = [e for e in _audit(gated) if e.get("decision") == "deny" and "require[0].authMethod" in str(e.get("reason"))]
    assert denials, _audit(gated)[-3:]
    assert gated.plain not in gated.audit.read_text()


def test_with_mfa_both_models_answer_through_both_sdks(gated: Gated) -> None:
    before = gated.seen()
    assert ask_openai(gated.openai(gated.mfa), "gpt").startswith("openai-emu-gated says: hello")
    assert ask_anthropic(gated.anthropic(gated.mfa), "claude").startswith("anthropic-emu-gated says: hello")
    assert gated.seen() == (before[0] + 1, before[1] + 1)
    assert sorted(m.id for m in gated.openai(gated.mfa).models.list()) == ["claude", "gpt"]


def test_from_the_lab_network_claude_needs_no_mfa_but_gpt_still_does(gated: Gated) -> None:
    assert ask_anthropic(gated.anthropic(gated.plain, LAB), "claude").startswith("anthropic-emu-gated says")
    assert [m.id for m in gated.openai(gated.plain, LAB).models.list()] == ["claude"]
    before = gated.seen()
    with pytest.raises(openai.PermissionDeniedError):
        ask_openai(gated.openai(gated.plain, LAB), "gpt")
    assert gated.seen() == before


def test_a_forged_x_forwarded_for_does_not_put_a_client_in_the_lab(gated: Gated) -> None:
    before = gated.seen()
    client = anthropic.Anthropic(base_url=f"{gated.portal.base}/llm/anthropic", auth_token=gated.plain, max_retries=0,
                                 http_client=gated.http2(OFFICE), default_headers={"x-forwarded-for": LAB})
    with pytest.raises(anthropic.PermissionDeniedError):
        ask_anthropic(client, "claude")
    assert gated.seen() == before


def _audit(gated: Gated) -> list[dict]:
    import json

    if not gated.audit.exists():
        return []
    return [json.loads(line) for line in gated.audit.read_text().splitlines() if line.strip()]
