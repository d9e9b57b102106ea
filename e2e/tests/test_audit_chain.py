"""The keyed audit chain, its checkpoints, and tool calls while the audit log cannot be written.

A portal with `spec.audit.keyFrom` (a local Secret) writes `--audit-file`: every line carries an
HMAC `mac`, checked here by the harness's own verifier and by `portcullis-proxy audit verify
--key`. The attack a plain hash chain cannot see (edit a line, re-chain the file) is refused; a
checkpoint the proxy logs catches a cut tail. Then the file's path is pointed at /dev/full (every
write fails with ENOSPC, as on a full disk): under `failClosed` tool calls are refused before the
upstream sees them, under `failOpen` they go through; when the path is writable again the kept
events are written in order and calls flow.
"""

from __future__ import annotations

import hashlib
import hmac
import json
import os
import re
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx
import pytest
from mcp.shared.exceptions import MCPError

from harness import audit, manifests, upstreams
from harness.clients import client, run, text_of
from harness.demo import start_proxy_with_args
from harness.procs import ProcessManager
from harness.proxy import Portal

KEY = b"e2e audit chain key: 32 bytes or more, used as is"
REFUSAL = "audit log cannot be written"


@dataclass
class Audited:
    portal: Portal
    audit_file: Path
    key_file: Path
    record: Path

    def recorded(self) -> str:
        return self.record.read_text(encoding="utf-8") if self.record.exists() else ""


def start(pm: ProcessManager, workdir: Path, name: str, audit_spec: dict[str, Any]) -> Audited:
    record = workdir / "upstream-requests.jsonl"
    audit_file = workdir / "audit.jsonl"
    key_file = workdir / "chain.key"
    key_file.write_bytes(KEY)
    up = upstreams.py_both_eras(pm, f"{name}-up", record=record)
    docs = manifests.portal_bundle(name, [manifests.remote_server("rec", up.url)])
    docs.append(manifests.secret("audit-key", {"key": KEY.decode()}))
    for d in docs:
        if d["kind"] == "McpPortal":
            d["spec"]["audit"] = {"keyFrom": {"name": "audit-key", "key": "key"}, **audit_spec}
    portal = start_proxy_with_args(
        pm, manifests.write(workdir, docs), name, ["--audit-file", str(audit_file)], name=f"proxy-{name}"
    )
    portal.wait_upstreams(["rec"])
    return Audited(portal, audit_file, key_file, record)


@pytest.fixture(scope="module")
def keyed(module_pm: ProcessManager, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Audited]:
    try:
        a = start(module_pm, tmp_path_factory.mktemp("keyed"), "keyed", {"checkpointSeconds": 1})
    except BaseException:
        print(f"\n===== process output =====\n{module_pm.tails()}")
        raise
    yield a


def call(url: str, message: str, mode: str = "2026-07-28") -> Any:
    async def go() -> Any:
        async with client(url, mode=mode) as c:
            return await c.call_tool("rec_echo", {"message": message})

    return run(go())


def call_error(url: str, message: str) -> MCPError:
    """The JSON-RPC error a call gets (caught inside the session, as the client raises it)."""

    async def go() -> MCPError:
        async with client(url, mode="2026-07-28") as c:
            try:
                result = await c.call_tool("rec_echo", {"message": message})
            except MCPError as e:
                return e
        raise AssertionError(f"the call was not refused: {text_of(result)}")

    return run(go())


def lines_of(path: Path) -> list[str]:
    return path.read_text(encoding="utf-8").splitlines()


def wait_calls_audited(a: Audited, markers: int) -> list[dict[str, Any]]:
    return audit.wait_events(
        lambda: audit.file_events(a.audit_file),
        lambda evs: sum(e.get("method") == "tools/call" for e in evs) >= markers,
    )


def rechain(lines: list[str], seal: Any) -> list[str]:
    """Re-seals every line with `seal(unsealed_bytes) -> (member, hex)`, relinking `prev`."""
    out, prev = [], "0" * 64
    for line in lines:
        event = json.loads(line)
        event.pop("mac", None)
        event.pop("hash", None)
        event["prev"] = prev
        unsealed = json.dumps(event, separators=(",", ":"), ensure_ascii=False)
        member, digest = seal(unsealed.encode("utf-8"))
        out.append(unsealed[:-1] + f',"{member}":"{digest}"' + "}")
        prev = digest
    return out


def test_every_line_is_sealed_by_an_hmac_under_the_chain_key(keyed: Audited) -> None:
    for i in range(3):
        result = call(keyed.portal.url, f"keyed-{i}", mode="legacy" if i % 2 else "2026-07-28")
        assert not result.is_error, text_of(result)
    wait_calls_audited(keyed, 3)
    lines = lines_of(keyed.audit_file)
    assert lines and all('"mac":"' in line and '"hash":"' not in line for line in lines)
    assert audit.verify_chain(keyed.audit_file, key=KEY) == len(lines), "the harness's own HMAC check"
    out = audit.verify_with_proxy(keyed.audit_file, "--key", str(keyed.key_file))
    assert "keyed (mac)" in out, out
    # Without the key, or with another, the proxy's verifier refuses and says why.
    code, out = audit.run_verify(keyed.audit_file)
    assert code != 0 and "--key" in out, out
    other = keyed.key_file.with_name("other.key")
    other.write_bytes(b"another key of 32 bytes or more.......")
    code, out = audit.run_verify(keyed.audit_file, "--key", str(other))
    assert code != 0 and "line 1" in out and "mac" in out, out
    # The key never reaches the audit log or the proxy's output.
    assert KEY.decode() not in keyed.audit_file.read_text(encoding="utf-8")
    assert KEY.decode() not in keyed.portal.proc.output()


def test_a_rewritten_and_rechained_log_fails_without_the_key(keyed: Audited, tmp_path: Path) -> None:
    call(keyed.portal.url, "rewrite-me")
    wait_calls_audited(keyed, 1)
    lines = lines_of(keyed.audit_file)
    victim = next(i for i, line in enumerate(lines) if '"tools/call"' in line)
    edited = list(lines)
    edited[victim] = edited[victim].replace('"decision":"allow"', '"decision":"deny"')
    assert edited[victim] != lines[victim]

    # Re-chained with plain hashes: a consistent chain on its own (the harness checks it) ...
    plain = rechain(edited, lambda b: ("hash", hashlib.sha256(b).hexdigest()))
    forged = tmp_path / "plain.jsonl"
    forged.write_text("\n".join(plain) + "\n", encoding="utf-8")
    assert audit.verify_chain(forged) == len(plain)
    audit.verify_with_proxy(forged)
    # ... that the key refuses.
    code, out = audit.run_verify(forged, "--key", str(keyed.key_file))
    assert code != 0 and "line 1" in out and "plain hash" in out, out

    # Re-chained with an HMAC under a key of the attacker's own.
    attacker = b"the attacker's own key, 32 bytes long"
    forged.write_text(
        "\n".join(rechain(edited, lambda b: ("mac", hmac.new(attacker, b, hashlib.sha256).hexdigest()))) + "\n",
        encoding="utf-8",
    )
    code, out = audit.run_verify(forged, "--key", str(keyed.key_file))
    assert code != 0 and "line 1" in out, out

    # Control: the same re-chain under the real key verifies, so the forgery above is sound
    # and only the key tells them apart.
    forged.write_text(
        "\n".join(rechain(edited, lambda b: ("mac", hmac.new(KEY, b, hashlib.sha256).hexdigest()))) + "\n",
        encoding="utf-8",
    )
    audit.verify_with_proxy(forged, "--key", str(keyed.key_file))


def test_a_logged_checkpoint_catches_a_cut_tail(keyed: Audited, tmp_path: Path) -> None:
    for i in range(3):
        call(keyed.portal.url, f"checkpointed-{i}")
    # Checkpoints come every second while lines are written: wait for the one at the file's
    # head (the log's last line and the last checkpoint agree once the writes have settled).
    deadline = time.monotonic() + 20
    while True:
        last_seq = json.loads(lines_of(keyed.audit_file)[-1])["seq"]
        logged = dict(re.findall(r"checkpoint\S*?=\S*?(\d+):([0-9a-f]{64})", keyed.portal.proc.output("stderr")))
        if str(last_seq) in logged:
            break
        assert time.monotonic() < deadline, f"no checkpoint at seq {last_seq} was logged: {sorted(logged)[-5:]}"
        time.sleep(0.1)
    checkpoint = f"{last_seq}:{logged[str(last_seq)]}"
    metrics = httpx.get(f"{keyed.portal.admin}/metrics", timeout=10).text
    assert re.search(rf"^portcullis_audit_checkpoint_sequence {last_seq}$", metrics, re.M), metrics
    assert re.search(r"^portcullis_audit_sink_up 1$", metrics, re.M), metrics

    audit.verify_with_proxy(keyed.audit_file, "--key", str(keyed.key_file), "--checkpoint", checkpoint)
    # Cut the last two lines: what is left still chains, but not up to the checkpoint.
    lines = lines_of(keyed.audit_file)
    cut = tmp_path / "cut.jsonl"
    cut.write_text("\n".join(lines[:-2]) + "\n", encoding="utf-8")
    audit.verify_with_proxy(cut, "--key", str(keyed.key_file))
    code, out = audit.run_verify(cut, "--key", str(keyed.key_file), "--checkpoint", checkpoint)
    assert code != 0 and "cut off" in out, out
    code, out = audit.run_verify(cut, "--checkpoint", "12:not-hex")
    assert code != 0 and "HEAD" in out, out


def break_disk(path: Path) -> None:
    """The file's path now names /dev/full: every write fails with ENOSPC."""
    path.unlink()
    os.symlink("/dev/full", path)


def sink_up(portal: Portal) -> str:
    metrics = httpx.get(f"{portal.admin}/metrics", timeout=10).text
    m = re.search(r"^portcullis_audit_sink_up (\d+)$", metrics, re.M)
    assert m, metrics
    return m.group(1)


def wait_sink(portal: Portal, want: str) -> None:
    deadline = time.monotonic() + 15
    while sink_up(portal) != want:
        assert time.monotonic() < deadline, f"portcullis_audit_sink_up never became {want}"
        time.sleep(0.05)


@pytest.mark.parametrize("mode", ["failClosed", "failOpen"])
def test_calls_while_the_audit_log_cannot_be_written(
    mode: str, pm: ProcessManager, tmp_path: Path
) -> None:
    a = start(pm, tmp_path, f"disk-{mode.lower()}", {"onFailure": mode})
    assert not call(a.portal.url, "before").is_error
    wait_calls_audited(a, 1)
    before = len(lines_of(a.audit_file))

    break_disk(a.audit_file)
    # This call was admitted while the log recorded; its event is the first write that fails.
    call(a.portal.url, "as-the-disk-fills")
    wait_sink(a.portal, "0")

    if mode == "failClosed":
        refused = call_error(a.portal.url, "while-full")
        assert REFUSAL in refused.message and "failClosed" in refused.message, refused.message
        assert "while-full" not in a.recorded(), "a call that could not be audited reached the upstream"
    else:
        result = call(a.portal.url, "while-full")
        assert not result.is_error, text_of(result)
        assert "while-full" in a.recorded()

    # Space again: the kept events are written, in order, to the recreated file.
    a.audit_file.unlink()
    wait_sink(a.portal, "1")
    assert not call(a.portal.url, "after").is_error
    events = audit.wait_events(
        lambda: audit.file_events(a.audit_file),
        lambda evs: sum(e.get("method") == "tools/call" for e in evs) >= 3,
    )
    calls = [e for e in events if e.get("method") == "tools/call"]
    decisions = [(e["decision"], e.get("reason")) for e in calls]
    if mode == "failClosed":
        assert ("error", "audit log not recording") in decisions, decisions
    else:
        assert all(d == "allow" for d, _ in decisions), decisions
    assert len(calls) == 3, f"as-the-disk-fills, while-full and after: {decisions}"
    out = audit.verify_with_proxy(a.audit_file, "--key", str(a.key_file))
    assert f"seq Some({before})" in out, f"the new file continues the chain at seq {before}: {out}"
