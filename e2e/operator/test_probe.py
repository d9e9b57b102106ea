"""The operator's prober (the official Rust SDK client, `server/discover` with fallback to
`initialize`) lists a real MCP server's tools: the same code path the McpServer controller uses
to fill status.tools."""

import json
import re
import subprocess

import pytest


@pytest.fixture
def demo_docs_url(proxy_bin):
    demo = proxy_bin.parent / "portcullis-demo"
    p = subprocess.Popen([str(demo), "docs", "--listen", "127.0.0.1:0"], stdout=subprocess.PIPE,
                         stderr=subprocess.DEVNULL, text=True)
    try:
        line = p.stdout.readline()
        m = re.search(r"(http://\S+/mcp)", line)
        assert m, line
        yield m.group(1)
    finally:
        p.terminate()
        p.wait(timeout=10)


def test_probe_lists_a_real_servers_tools_with_a_stable_hash(operator_bin, demo_docs_url):
    runs = [
        json.loads(subprocess.run([str(operator_bin), "probe", "--url", demo_docs_url],
                                  check=True, capture_output=True, text=True, timeout=60).stdout)
        for _ in range(2)
    ]
    assert runs[0]["count"] == len(runs[0]["names"]) > 0
    assert runs[0]["names"] == sorted(runs[0]["names"])
    assert "search_documents" in runs[0]["names"]
    assert runs[0]["hash"] == runs[1]["hash"] and len(runs[0]["hash"]) == 64


def test_probe_of_an_unreachable_server_fails_with_the_url(operator_bin):
    r = subprocess.run([str(operator_bin), "probe", "--url", "http://127.0.0.1:9/mcp"],
                       capture_output=True, text=True, timeout=60)
    assert r.returncode != 0
    assert "127.0.0.1:9" in r.stderr, r.stderr
