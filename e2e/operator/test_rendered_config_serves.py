"""The proxy, started from the ConfigMaps `portcullis-operator render` produced, serves the
example portal. Each deployed server's sidecar runs from its rendered ConfigMap (here the
stdio demo servers, spawned by the sidecar proxy as in the pod); the portal runs from its
rendered ConfigMap with each sidecar Service name resolved to the sidecar's loopback address,
as cluster DNS would. A plain HTTP JSON-RPC exchange then lists the tools of both servers."""

import json
import pathlib
import re
import subprocess
import threading
import urllib.request

import yaml

SERVING = re.compile(r"serving (http://\S+/mcp)")


def start_proxy(proxy_bin, config_dir, portal, secrets_dir, procs):
    log = pathlib.Path(config_dir) / "stderr.log"
    p = subprocess.Popen(
        [str(proxy_bin), "--manifests", str(config_dir), "--portal", portal,
         "--listen", "127.0.0.1:0", "--admin-listen", "127.0.0.1:0", "--secrets-dir", str(secrets_dir)],
        stdout=subprocess.PIPE, stderr=log.open("w"), text=True,
    )
    procs.append(p)
    found = {}

    def read():
        for line in p.stdout:
            m = SERVING.search(line)
            if m and "url" not in found:
                found["url"] = m.group(1)

    t = threading.Thread(target=read, daemon=True)
    t.start()
    for _ in range(300):
        if "url" in found or p.poll() is not None:
            break
        threading.Event().wait(0.1)
    if "url" not in found:
        p.kill()
        raise AssertionError(f"proxy for {portal} did not start: {log.read_text()[:2000]}")
    return found["url"]


def post(url, body, session=None):
    headers = {"Content-Type": "application/json", "Accept": "application/json, text/event-stream"}
    if session:
        headers["Mcp-Session-Id"] = session
        headers["MCP-Protocol-Version"] = "2025-11-25"
    req = urllib.request.Request(url, data=json.dumps(body).encode(), headers=headers, method="POST")
    with urllib.request.urlopen(req, timeout=30) as r:
        text = r.read().decode()
        if r.headers.get("Content-Type", "").startswith("text/event-stream"):
            # SSE: the JSON-RPC message is the `data:` line that holds JSON.
            datas = [ln[5:].strip() for ln in text.splitlines() if ln.startswith("data:")]
            text = next((d for d in reversed(datas) if d.startswith("{")), "")
        return r.headers.get("Mcp-Session-Id"), (json.loads(text) if text.strip() else None)


def test_proxy_from_rendered_configmaps_serves_the_demo_portal(operator_bin, proxy_bin, root, tmp_path):
    out = subprocess.run(
        [str(operator_bin), "render", "--manifests", str(root / "examples/demo/portal.yaml")],
        check=True, capture_output=True, text=True,
    ).stdout
    config_maps = {d["metadata"]["name"]: d for d in yaml.safe_load_all(out) if d and d["kind"] == "ConfigMap"}
    assert set(config_maps) == {"tickets-mcp", "docs-mcp", "demo-portal"}, config_maps.keys()
    secrets = tmp_path / "secrets"
    secrets.mkdir()
    procs = []
    try:
        portal_yaml = config_maps["demo-portal"]["data"]["manifests.yaml"]
        for server in ("tickets", "docs"):
            d = tmp_path / server
            d.mkdir()
            (d / "manifests.yaml").write_text(config_maps[f"{server}-mcp"]["data"]["manifests.yaml"])
            sidecar = start_proxy(proxy_bin, d, server, secrets, procs)
            service_url = f"http://{server}-mcp.default.svc.cluster.local:80/mcp"
            assert service_url in portal_yaml
            portal_yaml = portal_yaml.replace(service_url, sidecar)
        d = tmp_path / "portal"
        d.mkdir()
        (d / "manifests.yaml").write_text(portal_yaml)
        url = start_proxy(proxy_bin, d, "demo", secrets, procs)

        session, init = post(url, {
            "jsonrpc": "2.0", "id": 1, "method": "initialize",
            "params": {"protocolVersion": "2025-11-25", "capabilities": {},
                       "clientInfo": {"name": "plain-http", "version": "0"}},
        })
        assert init["result"]["protocolVersion"], init
        post(url, {"jsonrpc": "2.0", "method": "notifications/initialized"}, session)
        _, listed = post(url, {"jsonrpc": "2.0", "id": 2, "method": "tools/list", "params": {}}, session)
        names = [t["name"] for t in listed["result"]["tools"]]
        assert any(n.startswith("tickets_") for n in names), names
        assert any(n.startswith("docs_") for n in names), names
    finally:
        for p in procs:
            p.terminate()
        for p in procs:
            try:
                p.wait(timeout=10)
            except subprocess.TimeoutExpired:
                p.kill()
