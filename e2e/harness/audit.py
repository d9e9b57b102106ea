"""The proxy's audit log: chained JSON lines (stdout and `--audit-file`).

`verify_chain` reimplements proxy/src/audit/chain.rs independently, so the test does not trust
the proxy to check its own log: a line is the event's JSON with `,"hash":"<64 hex>"` (or, with a
chain key, `,"mac":"<64 hex>"`) as its last member; `hash` is the lowercase hex SHA-256 of the
line's bytes *without* that member (the same text closed by `}` right after `prev`), `mac` the
HMAC-SHA256 of the same bytes under the key; `prev` is the previous line's seal (64 zeros for the
first line, `seq` 0); `seq` goes up by one. A later line with `seq` 0 and the genesis `prev` is
a restart (a new chain), as in the proxy's verifier.
"""

from __future__ import annotations

import hashlib
import hmac
import json
import re
import subprocess
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

from . import paths
from .procs import Proc

GENESIS = "0" * 64
_SEALED = re.compile(r'^(?P<body>\{.*),"(?P<kind>hash|mac)":"(?P<hash>[0-9a-f]{64})"\}$')


class ChainError(AssertionError):
    """The log does not verify; the message names the 1-based line, never its content."""


def verify_lines(lines: list[str], key: bytes | None = None) -> int:
    """Verifies sealed audit lines (every one a `mac` under `key` when given, else a plain
    `hash`); returns how many. Raises ChainError at the first bad line."""
    last_hash: str | None = None
    last_seq: int | None = None
    count = 0
    for n, line in enumerate(lines, start=1):
        if not line:
            if any(lines[n:]):
                raise ChainError(f"line {n}: empty line inside the log")
            continue
        m = _SEALED.match(line)
        if not m:
            raise ChainError(f"line {n}: not a sealed audit line (no trailing hash member)")
        unsealed = m.group("body") + "}"
        if (m.group("kind") == "mac") != (key is not None):
            raise ChainError(f"line {n}: sealed with a {m.group('kind')}, expected a {'mac' if key else 'hash'}")
        if key is None:
            expected = hashlib.sha256(unsealed.encode("utf-8")).hexdigest()
        else:
            expected = hmac.new(key, unsealed.encode("utf-8"), hashlib.sha256).hexdigest()
        if not hmac.compare_digest(expected, m.group("hash")):
            raise ChainError(f"line {n}: content does not match its {m.group('kind')}")
        try:
            event = json.loads(unsealed)
        except ValueError:
            raise ChainError(f"line {n}: not a JSON object") from None
        seq, prev = event.get("seq"), event.get("prev")
        if not isinstance(seq, int) or not isinstance(prev, str):
            raise ChainError(f"line {n}: missing seq or prev")
        if last_hash is not None:
            restart = seq == 0 and prev == GENESIS
            if not restart:
                if prev != last_hash:
                    raise ChainError(f"line {n}: prev is not the hash of line {n - 1}")
                if seq != (last_seq or 0) + 1:
                    raise ChainError(f"line {n}: seq {seq} where {(last_seq or 0) + 1} was expected")
        last_hash, last_seq = m.group("hash"), seq
        count += 1
    return count


def verify_chain(path: Path, key: bytes | None = None) -> int:
    """`verify_lines` over a file."""
    return verify_lines(path.read_text(encoding="utf-8").split("\n"), key)


def run_verify(path: Path, *args: str) -> tuple[int, str]:
    """`portcullis-proxy audit verify FILE ARGS...`: its exit code and output."""
    binary = paths.require(paths.PROXY_BIN, "the portcullis-proxy binary (cargo build --workspace --bins)")
    p = subprocess.run([str(binary), "audit", "verify", str(path), *args], capture_output=True, text=True, timeout=30)
    return p.returncode, (p.stdout + p.stderr).strip()


def verify_with_proxy(path: Path, *args: str) -> str:
    """`portcullis-proxy audit verify FILE ARGS...`; returns its output, fails the test on non-zero exit."""
    code, out = run_verify(path, *args)
    if code != 0:
        raise ChainError(f"portcullis-proxy audit verify exited {code}: {out}")
    return out


def events_in(lines: list[str]) -> list[dict[str, Any]]:
    """Audit events among lines (anything else, like the proxy's startup lines, is skipped)."""
    out = []
    for line in lines:
        if line.startswith("{") and ('"hash":"' in line or '"mac":"' in line):
            try:
                out.append(json.loads(line))
            except ValueError:
                continue
    return out


def file_events(path: Path) -> list[dict[str, Any]]:
    if not path.exists():
        return []
    return events_in(path.read_text(encoding="utf-8").splitlines())


def stdout_events(proc: Proc) -> list[dict[str, Any]]:
    """Audit events the proxy printed on stdout."""
    return events_in(proc.output("stdout").splitlines())


def wait_events(
    read: Callable[[], list[dict[str, Any]]],
    want: Callable[[list[dict[str, Any]]], bool],
    timeout: float = 10.0,
) -> list[dict[str, Any]]:
    """Polls `read()` until `want(events)` holds (the writer is asynchronous); returns the events."""
    deadline = time.monotonic() + timeout
    while True:
        events = read()
        if want(events):
            return events
        if time.monotonic() > deadline:
            raise AssertionError(f"audit events never satisfied the condition within {timeout}s; got {len(events)}: {events[-10:]}")
        time.sleep(0.05)
