"""The official MCP conformance suite (server scenarios), directly against our fixture server and
then through a portal that fronts only that fixture (prefix "": names unchanged)."""

from __future__ import annotations

from pathlib import Path

from harness import conformance, manifests, upstreams
from harness.procs import ProcessManager
from harness.proxy import start_proxy


def _report(outcome: conformance.Outcome) -> str:
    lines = [f"{name}: {'; '.join(msgs)}" for name, msgs in sorted(outcome.failed.items())]
    return "\n".join(lines) or "(none)"


def test_the_fixture_server_passes_every_conformance_scenario_directly(pm: ProcessManager, tmp_path: Path) -> None:
    """Without this, failures through the portal could be the fixture's fault."""
    fixture = upstreams.conformance_fixture(pm)
    outcome = conformance.run_suite(fixture.url, tmp_path / "results")
    assert outcome.passed, f"no scenario passed; suite output:\n{outcome.output[-3000:]}"
    assert not outcome.failed, f"scenarios failing directly against the fixture:\n{_report(outcome)}"


def test_the_portal_passes_the_conformance_suite_except_the_baseline(pm: ProcessManager, tmp_path: Path) -> None:
    fixture = upstreams.conformance_fixture(pm)
    docs = manifests.portal_bundle("conf", [manifests.remote_server("conformance", fixture.url, prefix="")])
    portal = start_proxy(pm, manifests.write(tmp_path / "manifests", docs), "conf")
    portal.wait_upstreams(["conformance"])
    outcome = conformance.run_suite(portal.url, tmp_path / "results")
    expected = conformance.baseline()
    print(f"conformance through the portal: {len(outcome.passed)} scenarios passed, {len(outcome.failed)} failed")
    print(_report(outcome))
    unexpected = {k: v for k, v in outcome.failed.items() if k not in expected}
    stale = sorted(k for k in expected if k in outcome.passed)
    assert not unexpected, f"scenarios failing through the portal (not in {conformance.BASELINE.name}):\n" + "\n".join(
        f"{k}: {'; '.join(v)}" for k, v in sorted(unexpected.items())
    )
    assert not stale, f"baseline scenarios that now pass; remove them from {conformance.BASELINE}: {stale}"
