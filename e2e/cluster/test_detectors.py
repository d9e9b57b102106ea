"""Every detector works in a cluster (issue 14, point 5).

An McpPolicy that lists every built-in DLP detector (the enum the installed CRD carries, so a
detector added without a sample here fails) is accepted by the apiserver and by the operator
(`Accepted=True`, and the portal's `PoliciesAccepted=True`), lands in the portal's ConfigMap as
the operator renders it, and the portal's Deployment, run by the pod runner (podrunner.py) from
the objects in the apiserver, blocks a `tools/call` that carries each detector's sample, naming
the detector; a clean call passes. The upstream is a deployed stdio McpServer (`portcullis-demo
synthetic`, its `echo` tool) whose sidecar Deployment the pod runner runs too.

This is the path the bug of issue 14 broke: the operator kept its own detector list, so a policy
using `phone`, `ipv4`, `openaiKey`, `genericSecret`, ... was left out of the configuration.

`test_a_policy_stored_with_an_old_detector_name_is_reported_not_dropped` is the upgrade case: an
McpPolicy written under an older schema (no detector enum) with the old name `phoneNumber` stays
in etcd when the new CRD is installed. The operator must keep running and reconciling (one
undecodable object would break its whole watch of McpPolicies) and report the policy as invalid,
naming the field, in the policy's status and events and in the portal's.
"""

from __future__ import annotations

import copy
import json
import os
import time
import urllib.request
from pathlib import Path
from typing import Any

import yaml


API = "portcullis.dev/v1alpha1"
JWT = (
    "eyJhbGciOiJIUzI1NiIsInR5cCI6IkpXVCJ9.eyJzdWIiOiIxMjM0NTY3ODkwIiwibmFtZSI6IkpvaG4gRG9lIiwi"
    "aWF0IjoxNTE2MjM5MDIyfQ.SflKxwRJSMeKKF2QT4fwpMeJf36POk6yJV_adQssw5c"
)
# One text per detector that this detector (at least) finds: the positives of the proxy's
# detector tests (proxy/src/dlp/tests.rs).
SAMPLES = {
    "creditCard": "card 4111 1111 1111 1111 exp 12/29",
    "usSsn": "SSN 123-45-6789.",
    "iban": "pay to GB82 WEST 1234 5698 7654 32 today",
    "email": "write to alice@example.com please",
    "phone": "call +1 415 555 2671 now",
    "ipv4": "from 192.168.1.10 port 22",
    "ipv6": "addr 2001:db8::1 up",
    "jwt": f"Authorization: Bearer {JWT}",
    "privateKey": "key:\n-----BEGIN RSA PRIVATE KEY-----\nMIIEowIBAAKCAQEA7\nabc+/=\n-----END RSA PRIVATE KEY-----\n",
    "awsAccessKey": "value: AKIAIOSFODNN7EXAMPLE end",
    "githubToken": "value: ghp_aB3dE5gH7jK9mN1pQ3sT5vW7yZ9bC1dE3fG5 end",
    "gitlabToken": "value: glpat-xK9mQ2vL7nR4tW8yZ1aB end",
    "slackToken": "value: xoxb-123456789012-1234567890123-AbCdEfGhIjKlMnOpQrStUvWx end",
    "googleApiKey": "value: AIza" + "Sy3Xk9Lm2Np4Qr6St8Uv0Wx1Yz5Ab7Cd9Ef"[:35] + " end",
    "stripeKey": "value: sk_live_4eC39HqLyjWDarjtT1zdp7dc end",
    "openaiKey": "value: sk-proj-Ab3De5Gh7Jk9Mn1Pq3St5Vw7Yz9Bc1De3Fg5 end",
    "anthropicKey": "value: sk-ant-api03-Zx8Yw7Vu6Ts5Rq4Po3Nm2Lk1Jh0Gf9Ed8Cb7Aa end",
    "genericSecret": "password=S3cr3tP4ssw0rd! next",
}


def target_binary(name: str) -> Path:
    repo = Path(__file__).resolve().parents[2]
    p = Path(os.environ.get("CARGO_TARGET_DIR", repo / "target")) / "debug" / name
    assert p.exists(), f"{p} missing: run `cargo build --workspace --bins` first"
    return p


def crd_detectors(cluster: Any) -> list[str]:
    crd = json.loads(cluster.kubectl("get", "crd", "mcppolicies.portcullis.dev", "-o", "json").stdout)
    spec = crd["spec"]["versions"][0]["schema"]["openAPIV3Schema"]["properties"]["spec"]
    return spec["properties"]["dlp"]["items"]["properties"]["detectors"]["items"]["enum"]


def wait_for(what: str, check, timeout: float = 60.0) -> Any:  # type: ignore[no-untyped-def]
    deadline = time.monotonic() + timeout
    last: Any = None
    while time.monotonic() < deadline:
        try:
            last = check()
        except Exception as e:  # noqa: BLE001 - reported below if it never succeeds
            last = e
        if last and not isinstance(last, Exception):
            return last
        time.sleep(0.25)
    raise AssertionError(f"timed out waiting for {what}; last: {last!r}")


def condition(obj: dict[str, Any], type_: str) -> dict[str, Any] | None:
    for c in (obj.get("status") or {}).get("conditions", []):
        if c["type"] == type_:
            return c
    return None


def get(cluster: Any, kind: str, name: str, namespace: str) -> dict[str, Any]:
    return json.loads(cluster.kubectl("get", kind, name, "-n", namespace, "-o", "json").stdout)


class Mcp:
    """A plain Streamable HTTP client (one session) for the proxy under test."""

    def __init__(self, url: str):
        self.url = url
        self.session: str | None = None
        self.next_id = 1

    def post(self, body: dict[str, Any]) -> dict[str, Any] | None:
        headers = {"Content-Type": "application/json", "Accept": "application/json, text/event-stream"}
        if self.session:
            headers["Mcp-Session-Id"] = self.session
            headers["MCP-Protocol-Version"] = "2025-11-25"
        req = urllib.request.Request(self.url, data=json.dumps(body).encode(), headers=headers, method="POST")
        with urllib.request.urlopen(req, timeout=30) as r:
            self.session = r.headers.get("Mcp-Session-Id") or self.session
            text = r.read().decode()
            if r.headers.get("Content-Type", "").startswith("text/event-stream"):
                datas = [ln[5:].strip() for ln in text.splitlines() if ln.startswith("data:")]
                text = next((d for d in reversed(datas) if d.startswith("{")), "")
            return json.loads(text) if text.strip() else None

    def request(self, method: str, params: dict[str, Any]) -> dict[str, Any]:
        self.next_id += 1
        out = self.post({"jsonrpc": "2.0", "id": self.next_id, "method": method, "params": params})
        assert out is not None, f"{method}: empty answer"
        return out

    def initialize(self) -> None:
        init = self.request("initialize", {
            "protocolVersion": "2025-11-25", "capabilities": {},
            "clientInfo": {"name": "test-detectors", "version": "0"},
        })
        assert "result" in init, init
        self.post({"jsonrpc": "2.0", "method": "notifications/initialized"})


def run_and_route(cluster: Any, pods: Any, namespace: str, name: str) -> Any:
    """Run Deployment `name` as the apiserver has it; route its Service in cluster.network."""
    deployment = wait_for(f"Deployment {name}", lambda: get(cluster, "deployment", name, namespace))
    pod = pods.run(deployment)
    svc = get(cluster, "service", name, namespace)
    pods.expose(svc)
    for p in svc["spec"]["ports"]:
        cluster.network.route(
            f"{name}.{namespace}.svc.cluster.local", int(p["port"]), pod.port(pod.container_port(p["targetPort"]))
        )
    return pod


def is_true(obj: dict[str, Any], type_: str) -> bool:
    c = condition(obj, type_)
    return bool(c and c["status"] == "True" and c.get("observedGeneration") == obj["metadata"]["generation"])


def test_a_policy_with_every_detector_is_rendered_and_the_proxy_blocks_each_sample(
    cluster: Any, operator: Any, namespace: str, tmp_path: Path
) -> None:
    from podrunner import Cluster, fetch_with_kubectl, proxy_image

    detectors = crd_detectors(cluster)
    assert sorted(detectors) == sorted(SAMPLES), (
        f"the CRD's detector enum and this test's samples differ: {sorted(set(detectors) ^ set(SAMPLES))}"
    )
    docs = [
        {"apiVersion": API, "kind": "McpServer", "metadata": {"name": "echo"},
         "spec": {"deployment": {"image": "portcullis-proxy:dev", "command": ["portcullis-demo"],
                                 "args": ["synthetic", "--tools", "0", "--stdio"], "transport": "stdio"}}},
        {"apiVersion": API, "kind": "McpPortal", "metadata": {"name": "dlp"},
         "spec": {"public": True, "replicas": 1, "servers": {"names": ["echo"]}}},
        {"apiVersion": API, "kind": "McpPolicy", "metadata": {"name": "every-detector"},
         "spec": {"rules": [{"tools": ["*"], "access": "write"}],
                  "dlp": [{"name": "every-detector", "detectors": detectors,
                           "direction": "arguments", "action": "block"}]}},
    ]
    cluster.kubectl("apply", "-n", namespace, "-f", "-", input=yaml.safe_dump_all(docs))

    # The operator accepts the policy (the bug: it called phone, ipv4, ... unknown).
    pol = wait_for("McpPolicy every-detector Accepted at its generation", lambda: (
        (p := get(cluster, "mcppolicy", "every-detector", namespace))
        and (c := condition(p, "Accepted")) and c["observedGeneration"] == p["metadata"]["generation"]
        and p))
    accepted = condition(pol, "Accepted")
    assert accepted and accepted["status"] == "True", accepted

    # ... and renders it into the portal's ConfigMap.
    def rendered() -> str | None:
        cm = get(cluster, "configmap", "dlp-portal", namespace)
        text = cm["data"]["manifests.yaml"]
        policies = [d for d in yaml.safe_load_all(text) if d and d.get("kind") == "McpPolicy"]
        return text if any(p["metadata"]["name"] == "every-detector" for p in policies) else None

    text = wait_for("the policy in ConfigMap dlp-portal", rendered)
    (pol_doc,) = [d for d in yaml.safe_load_all(text) if d and d.get("kind") == "McpPolicy"]
    assert sorted(pol_doc["spec"]["dlp"][0]["detectors"]) == sorted(detectors)

    routed: list[tuple[str, int]] = []
    with Cluster(
        fetch_with_kubectl(cluster.kubectl, namespace),
        proxy_image(target_binary("portcullis-proxy"), target_binary("portcullis-demo")),
        namespace,
        workdir=tmp_path / "pods",
    ) as pods:
        try:
            # The upstream: the deployed server's pod (the proxy in front of the stdio command).
            run_and_route(cluster, pods, namespace, "echo-mcp")
            routed.append((f"echo-mcp.{namespace}.svc.cluster.local", 80))
            # Once the operator has probed it, the portal is Ready; run the portal's pod.
            portal = wait_for("McpPortal dlp Ready", lambda: (
                (p := get(cluster, "mcpportal", "dlp", namespace)) and is_true(p, "Ready") and p), 90)
            assert is_true(portal, "PoliciesAccepted"), portal["status"]
            pod = run_and_route(cluster, pods, namespace, "dlp-portal")
            routed.append((f"dlp-portal.{namespace}.svc.cluster.local", 80))
            mounted = pod.dir / "volumes" / "config" / "manifests.yaml"
            assert "every-detector" in mounted.read_text()

            mcp = Mcp(pod.url(9180))
            mcp.initialize()
            tools = [t["name"] for t in mcp.request("tools/list", {})["result"]["tools"]]
            assert "echo_echo" in tools, tools

            clean = mcp.request("tools/call", {"name": "echo_echo", "arguments": {"message": "hello there"}})
            assert "result" in clean and "hello there" in json.dumps(clean["result"]), clean

            not_blocked = {}
            for det, sample in SAMPLES.items():
                out = mcp.request("tools/call", {"name": "echo_echo", "arguments": {"message": sample}})
                msg = (out.get("error") or {}).get("message", "")
                if not ("blocked by DLP rule" in msg and det in msg):
                    not_blocked[det] = out
            assert not not_blocked, f"calls that were not blocked naming their detector: {not_blocked}"
        except BaseException:
            print("\n".join(p.logs() for p in pods.pods))
            raise
        finally:
            for host, port in routed:
                cluster.network.unroute(host, port)


def events_of(cluster: Any, namespace: str, kind: str, name: str) -> list[dict[str, Any]]:
    out = json.loads(cluster.kubectl("get", "events.events.k8s.io", "-n", namespace, "-o", "json").stdout)
    return [e for e in out["items"] if e.get("regarding", {}).get("kind") == kind
            and e["regarding"].get("name") == name]


def test_a_policy_stored_with_an_old_detector_name_is_reported_not_dropped(
    cluster: Any, operator: Any, namespace: str
) -> None:
    crd_name = "mcppolicies.portcullis.dev"
    original = json.loads(cluster.kubectl("get", "crd", crd_name, "-o", "json").stdout)

    def detectors_schema(crd: dict[str, Any]) -> dict[str, Any]:
        spec = crd["spec"]["versions"][0]["schema"]["openAPIV3Schema"]["properties"]["spec"]
        return spec["properties"]["dlp"]["items"]["properties"]["detectors"]["items"]

    def put_crd(crd: dict[str, Any]) -> None:
        crd = copy.deepcopy(crd)
        crd["metadata"] = {k: v for k, v in crd["metadata"].items()
                           if k in ("name", "labels", "annotations")}
        crd.pop("status", None)
        cluster.kubectl("apply", "--server-side", "--force-conflicts", "--field-manager=test-upgrade",
                        "-f", "-", input=json.dumps(crd))

    assert "phoneNumber" not in detectors_schema(original)["enum"]
    old = copy.deepcopy(original)
    del detectors_schema(old)["enum"]  # the schema before detector names were an enum
    bad = {"apiVersion": API, "kind": "McpPolicy", "metadata": {"name": "old-names"},
           "spec": {"rules": [{"tools": ["*"]}],
                    "dlp": [{"name": "pii", "detectors": ["email", "phoneNumber"], "action": "block"}]}}
    try:
        put_crd(old)
        wait_for("the old schema served", lambda: cluster.kubectl(
            "apply", "--dry-run=server", "-n", namespace, "-f", "-", input=json.dumps(bad), check=False
        ).returncode == 0)
        cluster.kubectl("apply", "-n", namespace, "-f", "-", input=json.dumps(bad))
    finally:
        put_crd(original)
    # The new schema is back: the same manifest is refused at the door now ...
    wait_for("the new schema served", lambda: cluster.kubectl(
        "apply", "--dry-run=server", "-n", namespace, "-f", "-",
        input=json.dumps({**bad, "metadata": {"name": "new-names"}}), check=False
    ).returncode != 0)
    # ... while the stored one stays in etcd as it was written.
    stored = get(cluster, "mcppolicy", "old-names", namespace)
    assert stored["spec"]["dlp"][0]["detectors"] == ["email", "phoneNumber"]

    # The operator reads it (and keeps reconciling the others), reports it as invalid naming the
    # field, and leaves it out of the portal, which says so too.
    docs = [
        {"apiVersion": API, "kind": "McpServer", "metadata": {"name": "s"},
         "spec": {"remote": {"url": "http://127.0.0.1:9/mcp"}}},
        {"apiVersion": API, "kind": "McpPortal", "metadata": {"name": "p"},
         "spec": {"public": True, "servers": {"names": ["s"]}}},
        {"apiVersion": API, "kind": "McpPolicy", "metadata": {"name": "good"},
         "spec": {"rules": [{"tools": ["*"]}], "dlp": [{"name": "pii", "detectors": ["phone"]}]}},
    ]
    cluster.kubectl("apply", "-n", namespace, "-f", "-", input=yaml.safe_dump_all(docs))
    field = "spec.dlp[0].detectors[1]"
    pol = wait_for("McpPolicy old-names Accepted=False", lambda: (
        (p := get(cluster, "mcppolicy", "old-names", namespace))
        and (c := condition(p, "Accepted")) and c["status"] == "False" and p))
    msg = condition(pol, "Accepted")["message"]
    assert field in msg and "phoneNumber" in msg, msg
    good = wait_for("McpPolicy good Accepted", lambda: (
        (p := get(cluster, "mcppolicy", "good", namespace)) and is_true(p, "Accepted") and p))
    assert good
    rejected = wait_for("a Rejected event for old-names", lambda: [
        e for e in events_of(cluster, namespace, "McpPolicy", "old-names") if e["reason"] == "Rejected"])
    assert field in rejected[0]["note"], rejected
    portal = wait_for("McpPortal p PoliciesAccepted=False", lambda: (
        (p := get(cluster, "mcpportal", "p", namespace))
        and (c := condition(p, "PoliciesAccepted")) and c["status"] == "False" and p))
    assert "McpPolicy old-names" in condition(portal, "PoliciesAccepted")["message"]
    left_out = wait_for("a PolicyLeftOut event for portal p", lambda: [
        e for e in events_of(cluster, namespace, "McpPortal", "p") if e["reason"] == "PolicyLeftOut"])
    assert field in left_out[0]["note"], left_out
    cm = wait_for("ConfigMap p-portal", lambda: get(cluster, "configmap", "p-portal", namespace))
    policies = [d["metadata"]["name"] for d in yaml.safe_load_all(cm["data"]["manifests.yaml"])
                if d and d.get("kind") == "McpPolicy"]
    assert policies == ["good"], policies
