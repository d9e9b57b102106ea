"""Shared pytest fixtures for the local end-to-end suite (see e2e/harness/)."""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest

from harness import manifests, upstreams
from harness.procs import ProcessManager
from harness.proxy import Portal, start_proxy


# --- A skipped test is a failed test: tests that need something missing FAIL. -----------------
@pytest.hookimpl(hookwrapper=True)
def pytest_runtest_makereport(item, call):  # type: ignore[no-untyped-def]
    outcome = yield
    rep = outcome.get_result()
    if rep.skipped and not hasattr(rep, "wasxfail"):
        reason = rep.longrepr[2] if isinstance(rep.longrepr, tuple) else str(rep.longrepr)
        rep.outcome = "failed"
        rep.longrepr = f"skipped tests count as failures in this suite: {reason}"
    setattr(item, f"rep_{rep.when}", rep)


def _failed(request: pytest.FixtureRequest) -> bool:
    node = request.node
    return any(getattr(getattr(node, f"rep_{w}", None), "failed", False) for w in ("setup", "call"))


@pytest.fixture
def pm(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[ProcessManager]:
    """Processes of one test; all killed (process groups) at teardown."""
    manager = ProcessManager(tmp_path / "logs")
    yield manager
    if _failed(request):
        print(f"\n===== process output ({tmp_path / 'logs'}) =====\n{manager.tails()}")
    manager.stop_all()


@pytest.fixture(scope="module")
def module_pm(tmp_path_factory: pytest.TempPathFactory) -> Iterator[ProcessManager]:
    """Processes shared by one test module; all killed at its end."""
    manager = ProcessManager(tmp_path_factory.mktemp("module") / "logs")
    yield manager
    manager.stop_all()


@dataclass
class MultiPortal:
    """One portal over four real upstreams: server-everything over streamableHttp, sse and stdio,
    and the Python `mcp` 2.x server."""

    portal: Portal
    http: upstreams.Upstream
    sse: upstreams.Upstream
    py: upstreams.Upstream
    names: tuple[str, ...] = ("every-http", "every-sse", "every-stdio", "pyboth")


def start_multi_portal(pm: ProcessManager, workdir: Path, portal_name: str = "multi") -> MultiPortal:
    http = upstreams.everything_streamable(pm, "every-http")
    sse = upstreams.everything_sse(pm, "every-sse")
    py = upstreams.py_both_eras(pm, "pyboth")
    cmd, args = upstreams.everything_stdio_command()
    docs = manifests.portal_bundle(
        portal_name,
        [
            manifests.remote_server("every-http", http.url, "streamableHttp"),
            manifests.remote_server("every-sse", sse.url, "sse"),
            manifests.stdio_server("every-stdio", cmd, args, env={"E2E_UPSTREAM": "every-stdio"}),
            manifests.remote_server("pyboth", py.url, "streamableHttp"),
        ],
    )
    path = manifests.write(workdir, docs)
    portal = start_proxy(pm, path, portal_name)
    portal.wait_upstreams(list(MultiPortal.names))
    return MultiPortal(portal, http, sse, py)


@pytest.fixture(scope="module")
def multi(module_pm: ProcessManager, tmp_path_factory: pytest.TempPathFactory) -> MultiPortal:
    try:
        return start_multi_portal(module_pm, tmp_path_factory.mktemp("multi"))
    except BaseException:
        print(f"\n===== process output =====\n{module_pm.tails()}")
        raise
