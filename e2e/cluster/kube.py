"""A real Kubernetes control plane on loopback, and the helpers the cluster suite uses on it.

`ControlPlane.start()` makes a CA, the apiserver's serving certificate, client certificates
(admin: O=system:masters; kube-controller-manager: its bootstrap RBAC user) and a
service-account key pair, then starts

- etcd (`--unsafe-no-fsync`, client and peer URLs on 127.0.0.1, kernel-picked ports),
- kube-apiserver (`--authorization-mode=RBAC`, service-account issuer and keys,
  `--endpoint-reconciler-type=none`, an audit log in JSON lines from audit-policy.yaml),
- kube-controller-manager (garbage collector, deployment, replicaset, namespace,
  serviceaccount and token controllers; one ServiceAccount per controller),

all from e2e/cluster/.k8s/bin (build-k8s.sh). Nothing listens beyond 127.0.0.1. There is no
kubelet and no scheduler: pods never run. `FakeKubelet` stands in for the kubelet's status
reports (Pods Running and Ready) so Deployments become Available, which the operator's Ready
conditions wait for; that the pods' containers really run is the pod runner's job
(podrunner.py, test_pods.py).
"""

from __future__ import annotations

import datetime as dt
import ipaddress
import json
import os
import ssl
import subprocess
import threading
import time
from collections.abc import Callable, Iterable
from pathlib import Path
from typing import Any

import httpx
import yaml
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec, rsa
from cryptography.x509.oid import NameOID

from harness.ports import free_port
from harness.procs import Proc, ProcessManager

HERE = Path(__file__).resolve().parent
REPO = HERE.parents[1]
K8S_BIN = HERE / ".k8s" / "bin"
TOOLS_BIN = REPO / "e2e" / ".tools" / "bin"
K8S_VERSION = "v1.37.2"
AUDIT_POLICY = HERE / "audit-policy.yaml"
SERVICE_CIDR = "10.96.0.0/16"
SA_ISSUER = "https://kubernetes.default.svc.cluster.local"
KCM_CONTROLLERS = ",".join(
    [
        "garbage-collector-controller",
        "deployment-controller",
        "replicaset-controller",
        "namespace-controller",
        "serviceaccount-controller",
        "serviceaccount-token-controller",
    ]
)


class CommandError(AssertionError):
    """A kubectl or helm command failed; the message carries the command and its stderr."""


def wait_until(what: str, check: Callable[[], Any], timeout: float = 30.0, interval: float = 0.25) -> Any:
    """Polls `check` until it returns something truthy; fails naming `what` and the last value."""
    deadline = time.monotonic() + timeout
    last: Any = None
    while True:
        try:
            last = check()
        except CommandError as e:  # not there yet (NotFound, ...): keep polling
            last = e
        if last and not isinstance(last, Exception):
            return last
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out after {timeout}s waiting for {what}; last: {last!r}")
        time.sleep(interval)



def workspace_binary(name: str) -> Path:
    """A binary of the workspace's debug build (`make build`), which the pod runner's images hold."""
    p = Path(os.environ.get("CARGO_TARGET_DIR", REPO / "target")) / "debug" / name
    assert p.exists(), f"{p} missing: run `make build` (cargo build --workspace --bins --tests) first"
    return p


def get_object(cluster: Any, namespace: str, kind: str, name: str) -> dict[str, Any] | None:
    """The object as JSON, or None while it does not exist."""
    p = cluster.kubectl("-n", namespace, "get", kind, name, "-o", "json", check=False)
    return json.loads(p.stdout) if p.returncode == 0 else None


# --- PKI ----------------------------------------------------------------------------------------


def _now() -> dt.datetime:
    return dt.datetime.now(dt.timezone.utc)


def _write_key(path: Path, key: Any) -> None:
    path.write_bytes(
        key.private_bytes(
            serialization.Encoding.PEM,
            serialization.PrivateFormat.PKCS8,
            serialization.NoEncryption(),
        )
    )
    path.chmod(0o600)


class Pki:
    """A CA and the certificates signed by it, as PEM files in `dir`."""

    def __init__(self, dir: Path):
        self.dir = dir
        dir.mkdir(parents=True, exist_ok=True)
        self.ca_key = ec.generate_private_key(ec.SECP256R1())
        name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "portcullis-e2e-ca")])
        self.ca_cert = (
            x509.CertificateBuilder()
            .subject_name(name)
            .issuer_name(name)
            .public_key(self.ca_key.public_key())
            .serial_number(x509.random_serial_number())
            .not_valid_before(_now() - dt.timedelta(minutes=5))
            .not_valid_after(_now() + dt.timedelta(days=2))
            .add_extension(x509.BasicConstraints(ca=True, path_length=None), critical=True)
            .add_extension(
                x509.KeyUsage(True, False, False, False, False, True, True, False, False), critical=True
            )
            .sign(self.ca_key, hashes.SHA256())
        )
        self.ca_file = dir / "ca.crt"
        self.ca_file.write_bytes(self.ca_cert.public_bytes(serialization.Encoding.PEM))

    def issue(
        self,
        stem: str,
        common_name: str,
        orgs: Iterable[str] = (),
        server_names: Iterable[str] = (),
        server_ips: Iterable[str] = (),
    ) -> tuple[Path, Path]:
        """A client (and, given names/IPs, server) certificate: returns (cert, key) paths."""
        key = ec.generate_private_key(ec.SECP256R1())
        attrs = [x509.NameAttribute(NameOID.ORGANIZATION_NAME, o) for o in orgs]
        attrs.append(x509.NameAttribute(NameOID.COMMON_NAME, common_name))
        sans: list[x509.GeneralName] = [x509.DNSName(n) for n in server_names]
        sans += [x509.IPAddress(ipaddress.ip_address(i)) for i in server_ips]
        usages = [x509.ExtendedKeyUsageOID.CLIENT_AUTH]
        if sans:
            usages.append(x509.ExtendedKeyUsageOID.SERVER_AUTH)
        builder = (
            x509.CertificateBuilder()
            .subject_name(x509.Name(attrs))
            .issuer_name(self.ca_cert.subject)
            .public_key(key.public_key())
            .serial_number(x509.random_serial_number())
            .not_valid_before(_now() - dt.timedelta(minutes=5))
            .not_valid_after(_now() + dt.timedelta(days=1))
            .add_extension(x509.BasicConstraints(ca=False, path_length=None), critical=True)
            .add_extension(x509.ExtendedKeyUsage(usages), critical=False)
        )
        if sans:
            builder = builder.add_extension(x509.SubjectAlternativeName(sans), critical=False)
        cert = builder.sign(self.ca_key, hashes.SHA256())
        cert_path, key_path = self.dir / f"{stem}.crt", self.dir / f"{stem}.key"
        cert_path.write_bytes(cert.public_bytes(serialization.Encoding.PEM))
        _write_key(key_path, key)
        return cert_path, key_path


def kubeconfig(path: Path, server: str, ca_file: Path, user: dict[str, str], name: str = "e2e") -> Path:
    """Writes a one-context kubeconfig; `user` is its `users[].user` (client cert or token)."""
    cfg = {
        "apiVersion": "v1",
        "kind": "Config",
        "clusters": [{"name": "e2e", "cluster": {"server": server, "certificate-authority": str(ca_file)}}],
        "users": [{"name": name, "user": user}],
        "contexts": [{"name": name, "context": {"cluster": "e2e", "user": name}}],
        "current-context": name,
    }
    path.write_text(yaml.safe_dump(cfg))
    path.chmod(0o600)
    return path


# --- The control plane ----------------------------------------------------------------------


def require_binaries() -> dict[str, Path]:
    bins = {b: K8S_BIN / b for b in ("etcd", "kube-apiserver", "kube-controller-manager", "kubectl")}
    missing = [str(p) for p in bins.values() if not os.access(p, os.X_OK)]
    if missing:
        raise AssertionError(
            f"control plane binaries missing: {', '.join(missing)}; run e2e/cluster/build-k8s.sh "
            "(or `make cluster-e2e`, which runs it)"
        )
    helm = TOOLS_BIN / "helm"
    if not os.access(helm, os.X_OK):
        raise AssertionError(f"{helm} missing: run `make operator-setup` (e2e/operator/install-helm.sh)")
    bins["helm"] = helm
    return bins


class ControlPlane:
    """etcd + kube-apiserver + kube-controller-manager on loopback; see the module doc."""

    def __init__(self, workdir: Path):
        self.workdir = workdir
        self.bins = require_binaries()
        self.pm = ProcessManager(workdir / "logs")
        self.pki = Pki(workdir / "pki")
        self.audit_log = workdir / "audit.log"
        self.port = free_port()
        self.server = f"https://127.0.0.1:{self.port}"
        self.procs: dict[str, Proc] = {}
        self._http: httpx.Client | None = None

    # -- startup --

    def start(self) -> None:
        self._start_etcd()
        self._start_apiserver()
        self._start_controller_manager()

    def _start_etcd(self) -> None:
        client, peer = free_port(), free_port()
        self.etcd_url = f"http://127.0.0.1:{client}"
        peer_url = f"http://127.0.0.1:{peer}"
        self.procs["etcd"] = self.pm.start(
            "etcd",
            [
                self.bins["etcd"],
                "--name=e2e",
                f"--data-dir={self.workdir / 'etcd'}",
                f"--listen-client-urls={self.etcd_url}",
                f"--advertise-client-urls={self.etcd_url}",
                f"--listen-peer-urls={peer_url}",
                f"--initial-advertise-peer-urls={peer_url}",
                f"--initial-cluster=e2e={peer_url}",
                "--unsafe-no-fsync",
                "--log-level=warn",
            ],
        )
        wait_until("etcd to answer /health", lambda: self._get_ok(f"{self.etcd_url}/health"), timeout=30)

    @staticmethod
    def _get_ok(url: str) -> bool:
        try:
            return httpx.get(url, timeout=1).status_code == 200
        except httpx.HTTPError:
            return False

    def _start_apiserver(self) -> None:
        d = self.pki.dir
        serving = self.pki.issue(
            "apiserver",
            "kube-apiserver",
            server_names=["localhost", "kubernetes", "kubernetes.default", "kubernetes.default.svc"],
            server_ips=["127.0.0.1", "10.96.0.1"],
        )
        sa_key = rsa.generate_private_key(public_exponent=65537, key_size=2048)
        self.sa_key_file = d / "sa.key"
        _write_key(self.sa_key_file, sa_key)
        self.sa_pub_file = d / "sa.pub"
        self.sa_pub_file.write_bytes(
            sa_key.public_key().public_bytes(
                serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo
            )
        )
        admin_cert, admin_key = self.pki.issue("admin", "e2e-admin", orgs=["system:masters"])
        self.kubeconfig = kubeconfig(
            self.workdir / "admin.kubeconfig",
            self.server,
            self.pki.ca_file,
            {"client-certificate": str(admin_cert), "client-key": str(admin_key)},
            name="admin",
        )
        self.admin_cert = (str(admin_cert), str(admin_key))
        self.procs["kube-apiserver"] = self.pm.start(
            "kube-apiserver",
            [
                self.bins["kube-apiserver"],
                f"--etcd-servers={self.etcd_url}",
                "--bind-address=127.0.0.1",
                f"--secure-port={self.port}",
                "--advertise-address=127.0.0.1",
                "--endpoint-reconciler-type=none",
                f"--cert-dir={self.workdir / 'apiserver-certs'}",
                f"--tls-cert-file={serving[0]}",
                f"--tls-private-key-file={serving[1]}",
                f"--client-ca-file={self.pki.ca_file}",
                "--authorization-mode=RBAC",
                f"--service-account-issuer={SA_ISSUER}",
                f"--service-account-key-file={self.sa_pub_file}",
                f"--service-account-signing-key-file={self.sa_key_file}",
                f"--service-cluster-ip-range={SERVICE_CIDR}",
                f"--audit-policy-file={AUDIT_POLICY}",
                f"--audit-log-path={self.audit_log}",
                "--audit-log-format=json",
                "--audit-log-mode=blocking",
                "--profiling=false",
                "--v=1",
            ],
        )
        wait_until("kube-apiserver /readyz", self._ready, timeout=90, interval=0.5)

    def _ready(self) -> bool:
        proc = self.procs["kube-apiserver"]
        if not proc.alive:
            raise AssertionError(f"kube-apiserver exited\n{proc.tail()}")
        try:
            return self.http.get("/readyz").status_code == 200
        except httpx.HTTPError:
            return False

    def _start_controller_manager(self) -> None:
        cert, key = self.pki.issue("kcm", "system:kube-controller-manager")
        kcm_config = kubeconfig(
            self.workdir / "kcm.kubeconfig",
            self.server,
            self.pki.ca_file,
            {"client-certificate": str(cert), "client-key": str(key)},
            name="kcm",
        )
        self.procs["kube-controller-manager"] = self.pm.start(
            "kube-controller-manager",
            [
                self.bins["kube-controller-manager"],
                f"--kubeconfig={kcm_config}",
                f"--authentication-kubeconfig={kcm_config}",
                f"--authorization-kubeconfig={kcm_config}",
                f"--controllers={KCM_CONTROLLERS}",
                "--use-service-account-credentials=true",
                f"--service-account-private-key-file={self.sa_key_file}",
                f"--root-ca-file={self.pki.ca_file}",
                "--bind-address=127.0.0.1",
                f"--secure-port={free_port()}",
                f"--cert-dir={self.workdir / 'kcm-certs'}",
                "--leader-elect=false",
                "--v=1",
            ],
        )
        # The serviceaccount controller makes `default` in every namespace: a sign that it runs.
        wait_until(
            "kube-controller-manager to create ServiceAccount default/default",
            lambda: self.http.get("/api/v1/namespaces/default/serviceaccounts/default").status_code == 200,
            timeout=60,
            interval=0.5,
        )

    def stop(self) -> None:
        if self._http is not None:
            self._http.close()
        self.pm.stop_all()

    def tails(self) -> str:
        return self.pm.tails(60)

    # -- clients --

    @property
    def http(self) -> httpx.Client:
        """An httpx client authenticated as admin (client certificate)."""
        if self._http is None:
            self._http = self.admin_client()
        return self._http

    def admin_client(self) -> httpx.Client:
        """A new httpx client authenticated as admin (client certificate)."""
        ctx = ssl.create_default_context(cafile=str(self.pki.ca_file))
        ctx.load_cert_chain(*self.admin_cert)
        return httpx.Client(base_url=self.server, verify=ctx, timeout=30)

    def _run(self, cmd: list[str], input: str | None, check: bool, env: dict[str, str]) -> subprocess.CompletedProcess[str]:
        full_env = dict(os.environ)
        full_env.update(env)
        p = subprocess.run(cmd, input=input, capture_output=True, text=True, env=full_env, timeout=120)
        if check and p.returncode != 0:
            raise CommandError(
                f"`{' '.join(cmd[1:])}` exited {p.returncode}\nstderr: {p.stderr.strip()}\nstdout: {p.stdout.strip()[:2000]}"
            )
        return p

    def kubectl(
        self, *args: str, input: str | None = None, check: bool = True, kubeconfig: Path | None = None
    ) -> subprocess.CompletedProcess[str]:
        cfg = str(kubeconfig or self.kubeconfig)
        return self._run([str(self.bins["kubectl"]), f"--kubeconfig={cfg}", *args], input, check, {})

    def helm(self, *args: str, check: bool = True) -> subprocess.CompletedProcess[str]:
        env = {
            "KUBECONFIG": str(self.kubeconfig),
            "HELM_CACHE_HOME": str(self.workdir / "helm" / "cache"),
            "HELM_CONFIG_HOME": str(self.workdir / "helm" / "config"),
            "HELM_DATA_HOME": str(self.workdir / "helm" / "data"),
        }
        return self._run([str(self.bins["helm"]), *args], None, check, env)

    def get_json(self, *args: str) -> dict[str, Any]:
        """`kubectl get ARGS -o json`, parsed."""
        return json.loads(self.kubectl("get", *args, "-o", "json").stdout)

    def audit_events(self) -> list[dict[str, Any]]:
        """Every audit event logged so far (ResponseComplete and Panic stages)."""
        if not self.audit_log.exists():
            return []
        out = []
        with open(self.audit_log, encoding="utf-8") as f:
            for line in f:
                line = line.strip()
                if line:
                    try:
                        out.append(json.loads(line))
                    except json.JSONDecodeError:  # a line being written right now
                        pass
        return out

    def sa_token(self, namespace: str, name: str, duration: str = "2h") -> str:
        """A TokenRequest token of ServiceAccount namespace/name (`kubectl create token`)."""
        return self.kubectl("create", "token", name, "-n", namespace, f"--duration={duration}").stdout.strip()

    def sa_kubeconfig(self, namespace: str, name: str) -> Path:
        """A kubeconfig authenticating as ServiceAccount namespace/name with a fresh token."""
        token = self.sa_token(namespace, name)
        return kubeconfig(
            self.workdir / f"sa-{namespace}-{name}.kubeconfig",
            self.server,
            self.pki.ca_file,
            {"token": token},
            name=f"{namespace}-{name}",
        )


def sa_username(namespace: str, name: str) -> str:
    return f"system:serviceaccount:{namespace}:{name}"


def mutating(event: dict[str, Any]) -> bool:
    return event.get("verb") in {"create", "update", "patch", "delete", "deletecollection"}


def condition(obj: dict[str, Any], type_: str) -> dict[str, Any] | None:
    for c in (obj.get("status") or {}).get("conditions") or []:
        if c.get("type") == type_:
            return c
    return None


def condition_true(obj: dict[str, Any], type_: str, current: bool = True) -> bool:
    """Condition `type_` is True (and, with `current`, observed at the object's generation)."""
    c = condition(obj, type_)
    if not c or c.get("status") != "True":
        return False
    if current:
        gen = obj["metadata"].get("generation")
        observed = c.get("observedGeneration", (obj.get("status") or {}).get("observedGeneration"))
        return observed == gen
    return True


# --- A stand-in for the kubelet's status reports -------------------------------------------------


class FakeKubelet:
    """Reports every Pod of the watched namespaces Running and Ready, as a kubelet would once its
    containers pass their readiness probes. Pods are never bound to a node: there is none, and
    none is needed for ReplicaSets and Deployments to count them available. Runs in a thread;
    `namespaces` empty means every namespace."""

    def __init__(self, cp: ControlPlane):
        self.cp = cp
        self.namespaces: set[str] = set()
        self.all_namespaces = True
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._loop, name="fake-kubelet", daemon=True)
        self.reported: list[str] = []
        self.errors: list[str] = []

    def start(self) -> None:
        self._thread.start()

    def stop(self) -> None:
        self._stop.set()
        self._thread.join(timeout=10)

    def _loop(self) -> None:
        http = self.cp.admin_client()
        while not self._stop.is_set():
            try:
                pods = http.get("/api/v1/pods").json().get("items", [])
                for pod in pods:
                    if self._wants(pod):
                        self._report(http, pod)
            except Exception as e:  # noqa: BLE001 -- a background thread must keep going; logged
                self.errors.append(repr(e))
            self._stop.wait(0.5)
        http.close()

    def _wants(self, pod: dict[str, Any]) -> bool:
        meta = pod["metadata"]
        if meta.get("deletionTimestamp"):
            return False
        if not self.all_namespaces and meta["namespace"] not in self.namespaces:
            return False
        return not condition_true(pod, "Ready", current=False)

    def _report(self, http: httpx.Client, pod: dict[str, Any]) -> None:
        meta = pod["metadata"]
        now = _now().strftime("%Y-%m-%dT%H:%M:%SZ")
        conds = [
            {"type": t, "status": "True", "lastTransitionTime": now}
            for t in ("PodScheduled", "Initialized", "ContainersReady", "Ready")
        ]
        statuses = [
            {
                "name": c["name"],
                "image": c["image"],
                "imageID": "",
                "ready": True,
                "started": True,
                "restartCount": 0,
                "state": {"running": {"startedAt": now}},
            }
            for c in pod["spec"]["containers"]
        ]
        status = {
            "phase": "Running",
            "conditions": conds,
            "containerStatuses": statuses,
            "startTime": now,
            "hostIP": "127.0.0.1",
            "podIP": "10.244.0.2",
            "podIPs": [{"ip": "10.244.0.2"}],
        }
        r = http.patch(
            f"/api/v1/namespaces/{meta['namespace']}/pods/{meta['name']}/status",
            content=json.dumps({"status": status}),
            headers={"Content-Type": "application/merge-patch+json"},
        )
        if r.status_code == 200:
            self.reported.append(f"{meta['namespace']}/{meta['name']}")
        elif r.status_code != 404:
            self.errors.append(f"{meta['namespace']}/{meta['name']}: {r.status_code} {r.text[:300]}")




# --- A stand-in for cluster DNS and Services ------------------------------------------------------


class ServiceNetwork:
    """An HTTP forward proxy on 127.0.0.1 that stands in for cluster DNS and kube-proxy: a request
    for `http://<service>.<namespace>.svc.cluster.local[:port]/...` goes to the local process
    registered for that Service port with `route()` (a pod the test runs); anything else gets a
    502 naming the host. The operator runs with HTTP_PROXY pointing here, so its probes of
    in-cluster URLs reach what the tests run. One request per connection (`Connection: close`
    upstream); responses, SSE streams included, are relayed as they come."""

    def __init__(self) -> None:
        import socket

        self.routes: dict[str, tuple[str, int]] = {}
        self.requests: list[str] = []
        self._sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        self._sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        self._sock.bind(("127.0.0.1", 0))
        self._sock.listen(64)
        self.port = self._sock.getsockname()[1]
        self.url = f"http://127.0.0.1:{self.port}"
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._accept, name="service-network", daemon=True)
        self._thread.start()

    def route(self, host: str, port: int, backend_port: int) -> None:
        """Send `host:port` (e.g. wiki.ns.svc.cluster.local, 80) to 127.0.0.1:backend_port."""
        self.routes[f"{host.lower()}:{port}"] = ("127.0.0.1", backend_port)

    def unroute(self, host: str, port: int) -> None:
        self.routes.pop(f"{host.lower()}:{port}", None)

    def close(self) -> None:
        self._stop.set()
        try:
            self._sock.close()
        except OSError:
            pass

    def _accept(self) -> None:
        while not self._stop.is_set():
            try:
                conn, _ = self._sock.accept()
            except OSError:
                return
            threading.Thread(target=self._serve, args=(conn,), daemon=True).start()

    def _serve(self, conn: Any) -> None:
        import socket
        from urllib.parse import urlsplit

        try:
            conn.settimeout(30)
            head = b""
            while b"\r\n\r\n" not in head:
                chunk = conn.recv(65536)
                if not chunk:
                    return
                head += chunk
            head, _, rest = head.partition(b"\r\n\r\n")
            lines = head.decode("latin-1").split("\r\n")
            method, target, version = lines[0].split(" ", 2)
            url = urlsplit(target)
            host = (url.hostname or "").lower()
            port = url.port or 80
            self.requests.append(f"{method} {target}")
            backend = self.routes.get(f"{host}:{port}")
            if backend is None:
                body = f"no route to {host}:{port} in the test's service network\n".encode()
                conn.sendall(
                    b"HTTP/1.1 502 Bad Gateway\r\nContent-Type: text/plain\r\nConnection: close\r\n"
                    + f"Content-Length: {len(body)}\r\n\r\n".encode()
                    + body
                )
                return
            path = url.path or "/"
            if url.query:
                path += "?" + url.query
            # Host is rewritten to the backend's loopback address: portcullis-demo (rmcp's DNS
            # rebinding protection) answers 403 "Host header is not allowed" to a Service name.
            # In a real cluster the example's wiki server would refuse its Service name the same
            # way; see the report of issue 14 (a finding left to the proxy's owners).
            headers = [
                h
                for h in lines[1:]
                if h.split(":", 1)[0].strip().lower() not in ("connection", "proxy-connection", "keep-alive", "host")
            ]
            headers.append(f"Host: {backend[0]}:{backend[1]}")
            upstream = socket.create_connection(backend, timeout=30)
            upstream.sendall(
                (f"{method} {path} {version}\r\n" + "\r\n".join(headers) + "\r\nConnection: close\r\n\r\n").encode("latin-1")
                + rest
            )
            # Relay the rest of the request body (if any) and the response, both ways.
            def pump(src: Any, dst: Any) -> None:
                try:
                    while True:
                        data = src.recv(65536)
                        if not data:
                            break
                        dst.sendall(data)
                except OSError:
                    pass
                finally:
                    try:
                        dst.shutdown(socket.SHUT_WR)
                    except OSError:
                        pass

            upstream.settimeout(None)
            conn.settimeout(None)
            t = threading.Thread(target=pump, args=(conn, upstream), daemon=True)
            t.start()
            pump(upstream, conn)
            upstream.close()
        except (OSError, ValueError):
            pass
        finally:
            try:
                conn.close()
            except OSError:
                pass
