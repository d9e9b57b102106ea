"""Shadow MCP discovery with real peers and real schemas.

- The probe (`portcullis-operator shadow probe`) says MCP for real MCP servers of each kind
  (PyPI `mcp` 2.x answering `server/discover`; server-everything's legacy Streamable HTTP and
  HTTP+SSE) and not MCP for a real non-MCP HTTP server (`python -m http.server`) and a JSON-RPC
  service without MCP methods; it never sends `initialize` or `tools/call` (the recording server
  shows every request it received).
- A whole pass (`shadow list --from`) over an inventory whose Pods point at those real servers on
  loopback reports the MCP ones and drops the others.
- `shadow netpol` output and `helm template` with discovery on are valid against the official
  Kubernetes schemas (kubernetes-validate, strict); the chart grants pods list, and networkpolicies
  list only with confine on.
"""

import http.server
import json
import pathlib
import socket
import subprocess
import threading
import time

import pytest
import yaml

from test_render_schemas import assert_valid, helm_template

ROOT = pathlib.Path(__file__).resolve().parents[2]
PYTHON = ROOT / "e2e" / ".venv" / "bin" / "python"
EVERYTHING = ROOT / "e2e" / "node_modules" / ".bin" / "mcp-server-everything"


@pytest.fixture(autouse=True, scope="module")
def peers_installed():
    for p in (PYTHON, EVERYTHING):
        assert p.exists(), f"{p} missing: run `make e2e-setup` (the Python venv and npm peers)"


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def wait_listening(port: int, proc: subprocess.Popen, timeout: float = 30) -> None:
    deadline = time.time() + timeout
    while time.time() < deadline:
        assert proc.poll() is None, f"server on {port} exited with {proc.returncode}"
        with socket.socket() as s:
            if s.connect_ex(("127.0.0.1", port)) == 0:
                return
        time.sleep(0.1)
    raise AssertionError(f"nothing listens on {port}")


def start(cmd, port, **kw):
    p = subprocess.Popen(cmd, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, **kw)
    wait_listening(port, p)
    return p


@pytest.fixture
def py_mcp(tmp_path):
    """The real Python MCP server (both eras), recording every request."""
    port, record = free_port(), tmp_path / "requests.jsonl"
    p = start([str(PYTHON), str(ROOT / "e2e/servers/py_both_eras.py"), "--port", str(port), "--record", str(record)], port)
    yield port, record
    p.terminate()
    p.wait(timeout=10)


@pytest.fixture(params=["streamableHttp", "sse"])
def everything(request):
    """server-everything over legacy Streamable HTTP or the legacy HTTP+SSE transport."""
    port = free_port()
    p = start([str(EVERYTHING), request.param], port, env={"PORT": str(port), "PATH": "/usr/local/bin:/usr/bin:/bin"})
    yield port
    p.terminate()
    p.wait(timeout=10)


@pytest.fixture
def plain_http(tmp_path):
    """A real non-MCP HTTP server: Python's http.server (GET only)."""
    port = free_port()
    p = start(["python3", "-m", "http.server", str(port), "--bind", "127.0.0.1", "--directory", str(tmp_path)], port)
    yield port
    p.terminate()
    p.wait(timeout=10)


class JsonRpcHandler(http.server.BaseHTTPRequestHandler):
    """A JSON-RPC 2.0 service with one method, `add`: any other method is -32601."""

    def do_POST(self):  # noqa: N802 (http.server naming)
        req = json.loads(self.rfile.read(int(self.headers.get("Content-Length", 0))))
        if req.get("method") == "add":
            body = {"jsonrpc": "2.0", "id": req.get("id"), "result": sum(req["params"])}
        else:
            body = {"jsonrpc": "2.0", "id": req.get("id"), "error": {"code": -32601, "message": "Method not found"}}
        data = json.dumps(body).encode()
        self.send_response(200)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(data)))
        self.end_headers()
        self.wfile.write(data)

    def do_GET(self):  # noqa: N802
        self.send_response(405)
        self.send_header("Content-Length", "0")
        self.end_headers()

    def log_message(self, *args):
        pass


@pytest.fixture
def json_rpc():
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), JsonRpcHandler)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    yield server.server_address[1]
    server.shutdown()


def probe(operator_bin, port):
    out = subprocess.run([str(operator_bin), "shadow", "probe", "--url", f"http://127.0.0.1:{port}"],
                         check=True, capture_output=True, text=True, timeout=60).stdout
    return json.loads(out)


def test_probe_says_mcp_for_the_python_server_with_server_discover_and_sends_nothing_else(operator_bin, py_mcp):
    port, record = py_mcp
    r = probe(operator_bin, port)
    assert r["result"] == "mcp", r
    assert "server/discover" in r["detail"], r
    methods = []
    for line in record.read_text().splitlines():
        body = json.loads(line).get("body")
        if body:
            methods.append(json.loads(body).get("method"))
    assert methods == ["server/discover"], methods


def test_probe_says_mcp_for_server_everything_legacy_transports(operator_bin, everything):
    r = probe(operator_bin, everything)
    assert r["result"] == "mcp", r


def test_probe_says_not_mcp_for_a_plain_http_server(operator_bin, plain_http):
    r = probe(operator_bin, plain_http)
    assert r["result"] == "notMcp", r


def test_probe_says_not_mcp_for_a_json_rpc_service_without_mcp_methods(operator_bin, json_rpc):
    r = probe(operator_bin, json_rpc)
    assert r["result"] == "notMcp", r
    assert "-32601" in r["detail"], r


def test_probe_of_nothing_listening_is_inconclusive(operator_bin):
    r = probe(operator_bin, free_port())
    assert r["result"] == "inconclusive", r


def lone_pod(name, port, port_name="http", labels=None):
    return {"apiVersion": "v1", "kind": "Pod",
            "metadata": {"name": name, "namespace": "team", "uid": f"uid-{name}", "labels": labels or {"app": name}},
            "spec": {"containers": [{"name": "c", "image": "example/app", "ports": [{"name": port_name, "containerPort": port}]}]},
            "status": {"phase": "Running", "podIP": "127.0.0.1"}}


def inventory(path, py_port, http_port, rpc_port):
    docs = {"apiVersion": "v1", "kind": "List", "items": [
        lone_pod("py-tools", py_port),          # probe only -> MCP
        lone_pod("static-site", http_port),     # plain HTTP -> dropped
        lone_pod("calculator", rpc_port),       # JSON-RPC, not MCP -> dropped
        {"apiVersion": "v1", "kind": "Service",
         "metadata": {"name": "named-mcp", "namespace": "team", "uid": "uid-named-mcp"},
         "spec": {"selector": {"app": "named-mcp"}, "ports": [
             {"name": "mcp", "port": 80, "targetPort": 8000}, {"name": "metrics", "port": 9090}]}},
        {"apiVersion": "v1", "kind": "Service",
         "metadata": {"name": "wiki", "namespace": "team", "uid": "uid-wiki-svc"},
         "spec": {"selector": {"app": "wiki"}, "ports": [{"name": "mcp", "port": 80}]}},
    ]}
    extra = [
        {"apiVersion": "portcullis.dev/v1alpha1", "kind": "McpServer", "metadata": {"name": "wiki", "namespace": "portals"},
         "spec": {"remote": {"url": "http://wiki.team.svc.cluster.local/mcp"}}},
        {"apiVersion": "portcullis.dev/v1alpha1", "kind": "McpPortal", "metadata": {"name": "eng", "namespace": "portals"},
         "spec": {"public": True, "servers": {"names": ["wiki"]}}},
    ]
    path.write_text(yaml.safe_dump_all([docs, *extra]))
    return path


def test_a_pass_over_real_servers_reports_the_mcp_ones_only(operator_bin, tmp_path, py_mcp, plain_http, json_rpc):
    inv = inventory(tmp_path / "inv.yaml", py_mcp[0], plain_http, json_rpc)
    out = subprocess.run([str(operator_bin), "shadow", "list", "--from", str(inv), "-o", "json"],
                         check=True, capture_output=True, text=True, timeout=120).stdout
    found = {e["name"]: e for e in json.loads(out)}
    assert set(found) == {"py-tools", "named-mcp"}, found
    assert found["py-tools"]["probe"]["result"] == "mcp"
    assert found["py-tools"]["endpoint"] == f"127.0.0.1:{py_mcp[0]}"
    assert found["named-mcp"]["evidence"] == ["port name `mcp`"]
    assert found["named-mcp"]["probe"]["result"] == "inconclusive", "cluster DNS does not resolve here"
    table = subprocess.run([str(operator_bin), "shadow", "list", "--from", str(inv), "--no-probe"],
                           check=True, capture_output=True, text=True, timeout=60).stdout
    assert table.splitlines()[0].split() == ["NAMESPACE", "WORKLOAD", "ENDPOINT", "EVIDENCE", "PROBE"]
    assert "named-mcp.team.svc:80" in table and "py-tools" not in table, table


def test_shadow_netpol_output_is_schema_valid_and_confines_only_the_mcp_port(operator_bin, tmp_path):
    inv = inventory(tmp_path / "inv.yaml", 1, 2, 3)
    out = subprocess.run([str(operator_bin), "shadow", "netpol", "--from", str(inv), "--no-probe",
                          "--namespace", "team"], check=True, capture_output=True, text=True, timeout=60).stdout
    docs = [d for d in yaml.safe_load_all(out) if d]
    assert_valid(docs)
    assert [d["metadata"]["name"] for d in docs] == ["shadow-mcp-svc-named-mcp"]
    spec = docs[0]["spec"]
    assert spec["podSelector"] == {"matchLabels": {"app": "named-mcp"}}
    assert spec["ingress"][0]["ports"] == [{"port": 8000, "protocol": "TCP"}]
    assert spec["ingress"][0]["from"][0]["namespaceSelector"]["matchExpressions"][0]["values"] == ["portals"]
    assert spec["ingress"][1] == {"ports": [{"port": 9090, "protocol": "TCP"}]}


def test_shadow_from_a_malformed_file_names_the_file_and_document(operator_bin, tmp_path):
    bad = tmp_path / "bad.yaml"
    bad.write_text("apiVersion: v1\nkind: Service\nmetadata: {name: x}\nspec: {ports: oops}\n")
    r = subprocess.run([str(operator_bin), "shadow", "list", "--from", str(bad)], capture_output=True, text=True, timeout=60)
    assert r.returncode != 0
    assert "bad.yaml: document 1 (Service/x)" in r.stderr, r.stderr


def rbac_rules(docs, kind, name_suffix="-discovery"):
    return [d for d in docs if d["kind"] == kind and d["metadata"]["name"].endswith(name_suffix)]


@pytest.mark.parametrize("flags,scope", [
    (["--set", "discovery.enabled=true"], "cluster"),
    (["--set", "discovery.enabled=true", "--set", "discovery.confine=true"], "cluster"),
    (["--set", "discovery.enabled=true", "--set", "discovery.namespaces={team-a,team-b}", "--set", "discovery.confine=true"], "namespaces"),
])
def test_helm_template_with_discovery_is_valid_and_grants_only_what_it_needs(helm, root, flags, scope):
    docs = helm_template(helm, root, *flags)
    assert_valid(docs)
    confine = "discovery.confine=true" in flags
    roles = rbac_rules(docs, "ClusterRole" if scope == "cluster" else "Role")
    assert len(roles) == (1 if scope == "cluster" else 2), roles
    for role in roles:
        resources = {r for rule in role["rules"] for r in rule["resources"]}
        verbs = {v for rule in role["rules"] for v in rule["verbs"]}
        assert resources == ({"pods", "networkpolicies"} if confine else {"pods"}), role
        assert verbs == {"list"}, role
    env = {e["name"]: e.get("value") for d in docs if d["kind"] == "Deployment"
           for e in d["spec"]["template"]["spec"]["containers"][0]["env"]}
    assert env["PORTCULLIS_DISCOVER_SHADOW"] == "true"
    assert env["PORTCULLIS_CONFINE_SHADOW"] == ("true" if confine else "false")
    if scope == "namespaces":
        assert env["PORTCULLIS_DISCOVER_NAMESPACES"] == "team-a,team-b"


def test_helm_template_without_discovery_has_no_discovery_rbac_or_flags(helm, root):
    docs = helm_template(helm, root)
    assert not [d for d in docs if d["metadata"]["name"].endswith("-discovery")]
    env = {e["name"] for d in docs if d["kind"] == "Deployment" for e in d["spec"]["template"]["spec"]["containers"][0]["env"]}
    assert "PORTCULLIS_DISCOVER_SHADOW" not in env


def test_helm_rejects_a_bad_discovery_namespace(helm, root):
    r = subprocess.run([str(helm), "template", "x", str(root / "charts/portcullis"),
                        "--set", "discovery.namespaces={Bad_NS}"], capture_output=True, text=True)
    assert r.returncode != 0 and "namespaces" in r.stderr, r.stderr
