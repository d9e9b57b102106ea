"""Two proxy replicas (same manifests, shared session key) behind real nginx, round robin, no
affinity: one legacy session is served by both replicas."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import pytest

from harness import manifests, upstreams
from harness.clients import client, list_all_tools, run, text_of
from harness.nginx import Nginx, start_nginx
from harness.procs import ProcessManager
from harness.proxy import Portal, start_proxy


@dataclass
class Replicas:
    a: Portal
    b: Portal
    lb: Nginx

    @property
    def url(self) -> str:
        return f"{self.lb.url}/mcp"

    def addr(self, portal: Portal) -> str:
        return portal.url.split("//", 1)[1].split("/", 1)[0]


@pytest.fixture
def replicas(pm: ProcessManager, tmp_path: Path) -> Replicas:
    py = upstreams.py_both_eras(pm, "pyboth")
    http = upstreams.everything_streamable(pm, "every-http")
    docs = manifests.portal_bundle(
        "ha", [manifests.remote_server("pyboth", py.url), manifests.remote_server("every-http", http.url)]
    )
    path = manifests.write(tmp_path / "manifests", docs)
    a = start_proxy(pm, path, "ha", name="proxy-a")
    b = start_proxy(pm, path, "ha", name="proxy-b")
    for p in (a, b):
        p.wait_upstreams(["pyboth", "every-http"])
    lb = start_nginx(pm, tmp_path / "nginx", [a.url.split("//")[1].split("/")[0], b.url.split("//")[1].split("/")[0]])
    return Replicas(a, b, lb)


def test_one_legacy_session_alternates_between_both_replicas_and_every_request_succeeds(replicas: Replicas) -> None:
    async def go() -> str:
        async with client(replicas.url, mode="legacy") as c:
            names = [t.name for t in await list_all_tools(c)]
            assert "pyboth_add" in names, names
            for i in range(4):
                result = await c.call_tool("pyboth_add", {"a": i, "b": 1})
                assert result.structured_content == {"sum": i + 1, "operands": [i, 1]}, text_of(result)
            echo = await c.call_tool("every-http_echo", {"message": "via nginx"})
            assert "via nginx" in text_of(echo)
            assert "pyboth_echo" in [t.name for t in await list_all_tools(c)]
            return c.protocol_version

    version = run(go())
    assert version in ("2025-06-18", "2025-11-25"), version

    entries = replicas.lb.entries()
    in_session = [e for e in entries if e["session"] not in ("", "-")]
    posts = [e for e in in_session if e["method"] == "POST"]
    log = "\n".join(str(e) for e in entries)
    assert len(posts) >= 6, f"expected >= 6 requests in the session, nginx saw:\n{log}"
    failed = [e for e in entries if not e["status"].startswith("2")]
    assert not failed, f"requests that did not succeed:\n{log}"
    assert len({e["session"] for e in in_session}) == 1, f"more than one session id:\n{log}"
    served = {e["upstream"] for e in posts}
    assert served == {replicas.addr(replicas.a), replicas.addr(replicas.b)}, f"not served by both replicas:\n{log}"
    switches = sum(1 for x, y in zip(posts, posts[1:]) if x["upstream"] != y["upstream"])
    assert switches >= len(posts) // 2, f"requests did not alternate between replicas:\n{log}"


def test_a_modern_client_is_served_by_both_replicas_through_nginx(replicas: Replicas) -> None:
    async def go() -> None:
        async with client(replicas.url, mode="2026-07-28") as c:
            for i in range(4):
                result = await c.call_tool("pyboth_add", {"a": i, "b": i})
                assert result.structured_content == {"sum": 2 * i, "operands": [i, i]}, text_of(result)

    run(go())
    posts = [e for e in replicas.lb.entries() if e["method"] == "POST"]
    assert {e["upstream"] for e in posts} == {replicas.addr(replicas.a), replicas.addr(replicas.b)}
    assert all(e["status"].startswith("2") for e in posts), posts
