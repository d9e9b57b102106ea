"""The manifests are watched: an edit takes effect without a restart, a bad edit changes nothing.

A running proxy over one real upstream (the Python `mcp` server) gets a second one (server-
everything, Streamable HTTP) added by editing its manifests file; a client session opened before
the edit keeps working, and the new server's tools appear. Then an edit with a typo'd field is
refused: the log names the file and field, the failure is counted in the metrics, and the
portal keeps serving the last good configuration.
"""

from __future__ import annotations

import asyncio
import re
import time
from pathlib import Path

import httpx
import pytest

from harness import manifests, upstreams
from harness.clients import client, list_all_tools, run, text_of
from harness.procs import ProcessManager
from harness.proxy import Portal, start_proxy


async def tool_names_async(portal: Portal) -> list[str]:
    async with client(portal.url, mode="2026-07-28") as c:
        return sorted(t.name for t in await list_all_tools(c))


def tool_names(portal: Portal) -> list[str]:
    return run(tool_names_async(portal))


def reloads(portal: Portal, result: str) -> float:
    text = httpx.get(f"{portal.admin}/metrics", timeout=5).text
    m = re.search(rf'^portcullis_config_reloads_total\{{result="{result}"\}} (\S+)$', text, re.M)
    return float(m.group(1)) if m else 0.0


def wait_until(predicate, timeout: float = 20.0, what: str = "condition"):  # type: ignore[no-untyped-def]
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        value = predicate()
        if value:
            return value
        time.sleep(0.2)
    raise AssertionError(f"timed out waiting for {what}")


@pytest.fixture(scope="module")
def setup(module_pm: ProcessManager, tmp_path_factory: pytest.TempPathFactory) -> tuple[Portal, Path, list[dict]]:
    py = upstreams.py_both_eras(module_pm, "pyboth")
    every = upstreams.everything_streamable(module_pm, "every")
    key = manifests.session_key()
    one = manifests.portal_bundle("live", [manifests.remote_server("pyboth", py.url)], key=key)
    two = manifests.portal_bundle(
        "live", [manifests.remote_server("pyboth", py.url), manifests.remote_server("every", every.url)], key=key
    )
    path = manifests.write(tmp_path_factory.mktemp("reload"), one)
    portal = start_proxy(module_pm, path, "live")
    portal.wait_upstreams(["pyboth"])
    return portal, path, two


def test_an_added_server_appears_without_a_restart_and_open_sessions_keep_working(
    setup: tuple[Portal, Path, list[dict]],
) -> None:
    portal, path, two = setup
    before = tool_names(portal)
    assert before and all(n.startswith("pyboth_") for n in before), before
    ok_before = reloads(portal, "success")

    async def session_across_the_reload() -> str:
        async with client(portal.url, mode="legacy") as c:
            assert not (await c.call_tool("pyboth_echo", {"message": "before"})).is_error
            manifests.write(path.parent, two)
            deadline = time.monotonic() + 20
            while not any(n.startswith("every_") for n in await tool_names_async(portal)):
                assert time.monotonic() < deadline, "the added server's tools did not appear"
                await asyncio.sleep(0.2)
            return text_of(await c.call_tool("pyboth_echo", {"message": "after"}))

    assert "after" in run(session_across_the_reload())
    after = tool_names(portal)
    assert set(before) < set(after) and "every_echo" in after, after
    assert reloads(portal, "success") > ok_before
    assert portal.proc.alive


def test_a_bad_edit_is_refused_and_the_last_good_configuration_keeps_serving(
    setup: tuple[Portal, Path, list[dict]],
) -> None:
    portal, path, two = setup
    good = tool_names(portal)
    failures = reloads(portal, "failure")
    broken = path.read_text().replace("transport: streamableHttp", "trasnport: streamableHttp", 1)
    assert broken != path.read_text(), "the fixture's manifests should name a transport"
    path.write_text(broken)
    wait_until(lambda: reloads(portal, "failure") > failures, what="a counted reload failure")
    assert "trasnport" in portal.proc.output() and str(path.name) in portal.proc.output()
    assert tool_names(portal) == good
    manifests.write(path.parent, two)  # fixed again: the next edit is taken
    wait_until(lambda: reloads(portal, "success") > 0 and tool_names(portal) == good, what="recovery")


def test_manifests_that_read_but_cannot_be_put_in_force_are_counted_as_failures_and_change_nothing(
    setup: tuple[Portal, Path, list[dict]],
) -> None:
    """The manifests resolve (the Secret exists and holds bytes) but the portal cannot use them
    (the identity signing key is not a PEM key): a failure, not a success, and the last good
    configuration keeps serving."""
    portal, path, two = setup
    manifests.write(path.parent, two)
    wait_until(lambda: "every_echo" in tool_names(portal), what="the good configuration")
    good = tool_names(portal)
    failures, successes = reloads(portal, "failure"), reloads(portal, "success")
    docs = [dict(d) for d in two]
    for d in docs:
        if d["kind"] == "McpPortal":
            d["spec"] = {**d["spec"], "identitySigningKeyFrom": {"name": "identity-key", "key": "pem"}}
    docs.append(manifests.secret("identity-key", {"pem": "not a PEM private key"}))
    manifests.write(path.parent, docs)
    wait_until(lambda: reloads(portal, "failure") > failures, what="a counted reload failure")
    assert reloads(portal, "success") == successes
    assert "signing key is unusable" in portal.proc.output()
    assert tool_names(portal) == good
    manifests.write(path.parent, two)
    wait_until(lambda: reloads(portal, "success") > successes, what="recovery")
