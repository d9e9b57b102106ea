"""Fixtures of the cluster suite (see kube.py for the control plane).

- `cluster` (session): etcd + kube-apiserver + kube-controller-manager on loopback, with
  `.kubeconfig` (admin client certificate, O=system:masters), `.server`, `.kubectl()`,
  `.helm()`, `.audit_events()`, `.sa_kubeconfig(ns, name)`, `.workdir`, and `.network`: a
  stand-in for cluster DNS and Services (kube.ServiceNetwork) that the operator's probes of
  `*.svc.cluster.local` URLs go through (HTTP_PROXY); tests `route()` Service ports to the
  local processes they run.
- `kubelet` (session): reports the Pods that ReplicaSets create Running and Ready (no kubelet
  runs here), so Deployments become Available.
- `operator` (session): the chart installed by `helm install` into portcullis-system (CRDs
  Established) and the operator binary running locally **as the chart's ServiceAccount** (a
  TokenRequest token), with `--discover-shadow`; `.namespace`, `.restart()`, `.logs()`.
- `namespace` (function): a fresh namespace labelled pod-security enforce=restricted, deleted
  (and the deletion awaited) at the end.

Logs and the audit log stay in the session's workdir when a test failed (its path is printed).
"""

from __future__ import annotations

import base64
import json
import os
import shutil
import tempfile
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from harness.ports import free_port
from harness.procs import Proc, ProcessManager
from kube import REPO, ControlPlane, FakeKubelet, ServiceNetwork, sa_username, wait_until

OPERATOR_NAMESPACE = "portcullis-system"
RELEASE = "portcullis"
CHART = REPO / "charts" / "portcullis"
LEASE = "portcullis-operator"


def operator_binary() -> Path:
    target = Path(os.environ.get("CARGO_TARGET_DIR", REPO / "target"))
    p = target / "debug" / "portcullis-operator"
    assert p.exists(), f"{p} missing: run `cargo build -p portcullis-operator --bins` first"
    return p


# --- A skipped test is a failed test. ----------------------------------------------------------
@pytest.hookimpl(hookwrapper=True)
def pytest_runtest_makereport(item, call):  # type: ignore[no-untyped-def]
    outcome = yield
    rep = outcome.get_result()
    if rep.skipped and not hasattr(rep, "wasxfail"):
        reason = rep.longrepr[2] if isinstance(rep.longrepr, tuple) else str(rep.longrepr)
        rep.outcome = "failed"
        rep.longrepr = f"skipped tests count as failures in this suite: {reason}"
    if rep.failed:
        item.session.config._cluster_failed = True  # type: ignore[attr-defined]


class Cluster:
    """The fixture contract the cluster tests share (see the module doc)."""

    def __init__(self, cp: ControlPlane, network: ServiceNetwork):
        self.cp = cp
        self.network = network
        self.kubeconfig: Path = cp.kubeconfig
        self.server: str = cp.server
        self.workdir: Path = cp.workdir
        self.kubectl = cp.kubectl
        self.helm = cp.helm
        self.audit_events = cp.audit_events
        self.sa_kubeconfig = cp.sa_kubeconfig
        self.sa_token = cp.sa_token
        self.get_json = cp.get_json
        self.http = cp.http

    def apply(self, doc: dict[str, Any] | list[dict[str, Any]] | str, namespace: str | None = None, **kw: Any):
        """`kubectl apply -f -` of a document (dict), several (list) or YAML text."""
        import yaml

        if isinstance(doc, dict):
            text = json.dumps(doc)
        elif isinstance(doc, list):
            text = yaml.safe_dump_all(doc)
        else:
            text = doc
        ns = ["-n", namespace] if namespace else []
        return self.kubectl("apply", *ns, "-f", "-", input=text, **kw)


@pytest.fixture(scope="session")
def cluster(request: pytest.FixtureRequest) -> Iterator[Cluster]:
    workdir = Path(tempfile.mkdtemp(prefix="portcullis-cluster-"))
    cp = ControlPlane(workdir)
    try:
        cp.start()
    except BaseException:
        print(f"\n===== control plane failed to start; logs in {workdir / 'logs'} =====\n{cp.tails()}")
        cp.stop()
        raise
    network = ServiceNetwork()
    yield Cluster(cp, network)
    network.close()
    failed = getattr(request.config, "_cluster_failed", False)
    if failed:
        print(f"\n===== control plane logs kept in {workdir} =====\n{cp.tails()}")
    cp.stop()
    if not failed:
        shutil.rmtree(workdir, ignore_errors=True)


@pytest.fixture(scope="session")
def kubelet(cluster: Cluster) -> Iterator[FakeKubelet]:
    k = FakeKubelet(cluster.cp)
    k.start()
    yield k
    k.stop()


def token_jti(token: str) -> str:
    """The `jti` claim of a ServiceAccount token: the audit log names it in
    user.extra["authentication.kubernetes.io/credential-id"] as "JTI=<jti>"."""
    payload = token.split(".")[1]
    payload += "=" * (-len(payload) % 4)
    return json.loads(base64.urlsafe_b64decode(payload))["jti"]


def credential_id(event: dict[str, Any]) -> str | None:
    ids = ((event.get("user") or {}).get("extra") or {}).get("authentication.kubernetes.io/credential-id")
    return ids[0] if ids else None


class OperatorProcess:
    """One `portcullis-operator run` process authenticated by its own TokenRequest token of the
    chart's ServiceAccount (so the audit log tells processes apart by the token's JTI)."""

    def __init__(self, cluster: Cluster, pm: ProcessManager, identity: str, extra_env: dict[str, str] | None = None):
        self.cluster = cluster
        self.pm = pm
        self.identity = identity
        self.extra_env = extra_env or {}
        self.proc: Proc | None = None
        self.jti: str = ""
        self.metrics_port = 0

    def start(self) -> "OperatorProcess":
        token = self.cluster.sa_token(OPERATOR_NAMESPACE, RELEASE)
        self.jti = token_jti(token)
        from kube import kubeconfig

        cfg = kubeconfig(
            self.cluster.workdir / f"operator-{self.identity}.kubeconfig",
            self.cluster.server,
            self.cluster.cp.pki.ca_file,
            {"token": token},
            name=self.identity,
        )
        self.metrics_port = free_port()
        env = {
            "KUBECONFIG": str(cfg),
            "POD_NAME": self.identity,
            "POD_NAMESPACE": OPERATOR_NAMESPACE,
            "PORTCULLIS_METRICS_LISTEN": f"127.0.0.1:{self.metrics_port}",
            "PORTCULLIS_LOG_FORMAT": "text",
            "PORTCULLIS_LOG": "info",
            "PORTCULLIS_LEADER_ELECTION": "true",
            "RUST_BACKTRACE": "1",
            # In-cluster URLs (probes) go through the test's service network; the apiserver
            # (127.0.0.1) never does.
            "HTTP_PROXY": self.cluster.network.url,
            "http_proxy": self.cluster.network.url,
            "NO_PROXY": "127.0.0.1,localhost",
            "no_proxy": "127.0.0.1,localhost",
            **self.extra_env,
        }
        self.proc = self.pm.start(
            f"operator-{self.identity}", [operator_binary(), "run", "--discover-shadow"], env=env
        )
        return self

    @property
    def alive(self) -> bool:
        return self.proc is not None and self.proc.alive

    def wait_leading(self, timeout: float = 40.0) -> None:
        assert self.proc is not None
        self.proc.wait_for("starting controllers", timeout=timeout)

    def stop(self) -> None:
        if self.proc is not None:
            self.proc.kill()

    def hard_kill(self) -> None:
        if self.proc is not None:
            self.proc.hard_kill()

    def logs(self) -> str:
        return self.proc.output() if self.proc is not None else ""

    def events(self) -> list[dict[str, Any]]:
        """Audit events of requests this process made (by its token's JTI)."""
        want = f"JTI={self.jti}"
        return [e for e in self.cluster.audit_events() if credential_id(e) == want]


class Operator:
    """The session's operator: the helm release and the process running as its ServiceAccount."""

    namespace = OPERATOR_NAMESPACE
    release = RELEASE
    service_account = RELEASE
    username = sa_username(OPERATOR_NAMESPACE, RELEASE)

    def __init__(self, cluster: Cluster, pm: ProcessManager):
        self.cluster = cluster
        self.pm = pm
        self.process = OperatorProcess(cluster, pm, "portcullis-operator-local")

    def start(self) -> None:
        self.process.start()
        self.process.wait_leading()

    def stop(self) -> None:
        self.process.stop()

    def restart(self) -> None:
        self.stop()
        self.process = OperatorProcess(self.cluster, self.pm, self.process.identity, self.process.extra_env)
        self.start()

    def logs(self) -> str:
        return self.process.logs()

    def denied(self) -> list[str]:
        """Requests of the chart's ServiceAccount that RBAC refused, as lines. (A 403 from
        admission, e.g. a write into a namespace being deleted, is not an RBAC refusal: the
        audit log's authorization decision tells them apart.)"""
        out = []
        for e in self.cluster.audit_events():
            decision = (e.get("annotations") or {}).get("authorization.k8s.io/decision")
            if (e.get("user") or {}).get("username") == self.username and decision == "forbid":
                out.append(f"{e.get('verb')} {e.get('requestURI')}")
        return sorted(set(out))


def helm_install_operator(cluster: Cluster) -> None:
    cluster.kubectl("create", "namespace", OPERATOR_NAMESPACE)
    cluster.kubectl(
        "label", "namespace", OPERATOR_NAMESPACE, "pod-security.kubernetes.io/enforce=restricted"
    )
    cluster.helm(
        "install", RELEASE, str(CHART),
        "--namespace", OPERATOR_NAMESPACE,
        "--set", "discovery.enabled=true",
    )  # fmt: skip
    for crd in ("mcpservers", "mcpportals", "mcppolicies"):
        cluster.kubectl(
            "wait", "--for=condition=Established", "--timeout=60s", f"crd/{crd}.portcullis.dev"
        )


@pytest.fixture(scope="session")
def operator(cluster: Cluster, kubelet: FakeKubelet) -> Iterator[Operator]:
    helm_install_operator(cluster)
    pm = ProcessManager(cluster.workdir / "logs")
    op = Operator(cluster, pm)
    try:
        op.start()
    except BaseException:
        print(f"\n===== operator failed to start =====\n{pm.tails()}")
        pm.stop_all()
        raise
    yield op
    pm.stop_all()
    # Whatever the tests did, the chart's RBAC must have granted every request of the operator.
    denied = op.denied()
    assert not denied, f"requests of the operator the chart's RBAC refused: {denied}"


@pytest.fixture
def namespace(cluster: Cluster) -> Iterator[str]:
    name = f"t-{uuid.uuid4().hex[:8]}"
    cluster.kubectl("create", "namespace", name)
    cluster.kubectl("label", "namespace", name, "pod-security.kubernetes.io/enforce=restricted")
    # The serviceaccount controller creates `default`, which the pods ReplicaSets make need.
    wait_until(
        f"ServiceAccount default in {name}",
        lambda: cluster.kubectl("get", "serviceaccount", "default", "-n", name, check=False).returncode == 0,
        timeout=30,
    )
    yield name
    cluster.kubectl("delete", "namespace", name, "--wait=true", "--timeout=90s", "--ignore-not-found")


def target_binary(name: str) -> Path:
    target = Path(os.environ.get("CARGO_TARGET_DIR", REPO / "target"))
    p = target / "debug" / name
    assert p.exists(), f"{p} missing: run `cargo build -p portcullis-proxy --bins` first"
    return p


def start_demo_server(pm: ProcessManager, kind: str = "docs") -> int:
    """`portcullis-demo KIND --listen 127.0.0.1:0` (the demo servers of the proxy image); its
    port."""
    proc = pm.start(f"demo-{kind}", [target_binary("portcullis-demo"), kind, "--listen", "127.0.0.1:0"])
    m = proc.wait_for(r"serving http://127\.0\.0\.1:(\d+)/mcp", timeout=30)
    return int(m.group(1))


DEMO_NAMESPACE = "portcullis-demo"
EXAMPLES = REPO / "examples" / "operator"


class Demo:
    """examples/operator/ applied with `kubectl apply -f` into portcullis-demo (the namespace
    its wiki URL names), pod-security enforce=restricted; the wiki Deployment's container runs
    as a local process behind the Service's DNS name (cluster.network)."""

    namespace = DEMO_NAMESPACE
    portal = "engineering"
    policy = "engineers-read"
    servers = ("wiki", "tickets", "docs")


@pytest.fixture(scope="session")
def demo(cluster: Cluster, operator: Operator) -> Iterator[Demo]:
    import yaml

    pm = ProcessManager(cluster.workdir / "logs")
    cluster.kubectl("create", "namespace", DEMO_NAMESPACE)
    cluster.kubectl("label", "namespace", DEMO_NAMESPACE, "pod-security.kubernetes.io/enforce=restricted")
    wait_until(
        "ServiceAccount default in portcullis-demo",
        lambda: cluster.kubectl("get", "sa", "default", "-n", DEMO_NAMESPACE, check=False).returncode == 0,
    )
    # The wiki "pod": the example Deployment's command, listening on loopback instead.
    docs = [d for f in sorted(EXAMPLES.glob("*.yaml")) for d in yaml.safe_load_all(f.read_text()) if d]
    (wiki,) = [d for d in docs if d["kind"] == "Deployment" and d["metadata"]["name"] == "wiki"]
    (container,) = wiki["spec"]["template"]["spec"]["containers"]
    assert container["command"][:2] == ["portcullis-demo", "docs"], container["command"]
    port = start_demo_server(pm, "docs")
    cluster.network.route(f"wiki.{DEMO_NAMESPACE}.svc.cluster.local", 80, port)
    cluster.kubectl("apply", "-n", DEMO_NAMESPACE, "-f", str(EXAMPLES))
    yield Demo()
    cluster.network.unroute(f"wiki.{DEMO_NAMESPACE}.svc.cluster.local", 80)
    pm.stop_all()
