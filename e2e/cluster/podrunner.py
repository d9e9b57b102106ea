"""A test "kubelet + kube-proxy": runs the pods of a Deployment as local processes, each pod in
a network namespace of its own and each container in a mount namespace of its own, so the
container starts **exactly as the pod spec says**: the same command and args (`--listen
0.0.0.0:9180` included), the same env, its volumes at their real mount paths, as the pod's
user. Needs root (CI runs as root) and `ip`, `nsenter`, `unshare`, `mount`, `chroot`.

    from podrunner import Cluster, fetch_from_objects, proxy_image

    with Cluster(fetch, images=proxy_image(proxy_bin, demo_bin), namespace="demo") as c:
        c.expose(service)                 # a Service dict: its name resolves inside every pod
        pod = c.run(deployment)           # starts, waits for the readiness probe; returns a Pod
        pod.url(9180)                     # http://127.0.0.1:<relay>/mcp, reachable from the test

    with run_deployment(deployment, fetch, proxy_bin=...) as pod:   # one pod, no Services
        pod.url(9180)

`fetch(kind, name)` returns the ConfigMap or Secret dict (as `kubectl get -o json` prints it)
or None when it does not exist; `fetch_from_objects(docs)` and `fetch_with_kubectl(kubectl, ns)`
build one.

What is faithful, and the mapping where it is not:

- **Network.** Every pod gets a network namespace the runner creates (`ip netns add`), with
  `lo` up and a pod IP from 10.244.0.0/16 on `lo` (the namespace has no other interface; the
  address exists only inside it). The container listens where its args say (0.0.0.0:9180)
  inside its namespace; nothing is reachable from outside except through the runner's relays.
  Probes connect, as the kubelet does, to the **pod IP** (so a server that binds only
  127.0.0.1 fails its probe here as it would in a cluster).
- **The test reaches a pod** through a relay: `pod.port(p)` / `pod.url(p)` listen on
  127.0.0.1:<kernel-picked> in the test's own network namespace and connect, per connection,
  to `<pod IP>:p` inside the pod's namespace (the relay's outgoing socket is created in that
  namespace with setns(2) on a short-lived thread).
- **Services** (`Cluster.expose`): each gets a cluster IP from 10.96.0.0/16, added to `lo` of
  every pod's namespace, with a relay listening there on each Service port that connects to a
  ready pod whose labels match the selector, at its targetPort (named or numbered). There is
  no netfilter or veth here, so the relay is a real listener in the pod's namespace: a Service
  port equal to one of that pod's own containerPorts is not served in it (it would take the
  container's 0.0.0.0:<port>; e.g. the portal Service's admin port 9464 inside a sidecar). Cluster
  DNS is `/etc/hosts` in each container's root: `<svc>`, `<svc>.<ns>`, `<svc>.<ns>.svc` and
  `<svc>.<ns>.svc.<cluster domain>` map to the cluster IP (rewritten when Services are added).
- **Images.** No image can be pulled, so an `Image` names what the image holds: its entrypoint,
  cmd, env, user, and files (e.g. `/usr/local/bin/portcullis-proxy` -> the freshly built
  binary). A container's root is a temporary directory with the host's `/usr`, `/bin`,
  `/lib*`, `/sbin` bind-mounted read-only (the proxy image is Debian slim; the host is
  Debian), `/usr/local/bin` holding only the image's files, `/dev` and `/proc` bound from the
  host, and an `/etc` of the kubelet's `hosts`, `hostname`, `resolv.conf` plus the image's
  `passwd`, `group`, `nsswitch.conf`, `ld.so.cache` and `ssl/`. `readOnlyRootFilesystem: true`
  remounts that root read-only, so only volumes are writable.
- **Volumes.** configMap, secret, emptyDir and projected (configMap/secret/downwardAPI
  sources) are materialised on the host under the runner's work directory, with the kubelet's
  atomic-writer layout (`..data` -> timestamped directory, one symlink per key), `items`,
  `defaultMode`/`mode`, `optional`, and group ownership by `fsGroup`; each volumeMount
  (`subPath`, `readOnly`) is a bind mount at its real `mountPath` inside the container's root.
  A missing non-optional ConfigMap/Secret fails the pod with the kubelet's kind of message.
- **Containers.** `command`/`args` with the image's entrypoint/cmd as Kubernetes combines them,
  `$(VAR)` expansion, `env` (value, configMapKeyRef, secretKeyRef, fieldRef of
  metadata.name/namespace/labels/annotations, status.podIP), `envFrom`, `workingDir`, `HOSTNAME`
  and the image's env. The process runs with `chroot --userspec` as `runAsUser`/`runAsGroup`
  (container over pod over image) with `fsGroup` as supplementary group. Init containers run to
  completion, in order, first; a non-zero exit fails the pod.
- **Probes.** httpGet (path, named or numbered port, host, scheme http, httpHeaders) and
  tcpSocket; exec probes are refused with a clear error. `Pod.wait_ready()` polls the
  startup then readiness probe until it passes (or a container exits, or time runs out), then
  checks the liveness probe once.
- **Not modelled:** resources/limits, capabilities, seccomp, `allowPrivilegeEscalation` (the
  process simply is not root), restarts, the Kubernetes service-account token, hostAliases,
  ports other than TCP. `replicas` defaults to 1 pod (pass `replicas=None` for the spec's).
"""

from __future__ import annotations

import base64
import ctypes
import datetime
import ipaddress
import itertools
import json
import os
import re
import shlex
import shutil
import signal
import socket
import subprocess
import tempfile
import threading
import time
import uuid
from collections.abc import Callable, Iterator, Mapping
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

Fetch = Callable[[str, str], "dict[str, Any] | None"]

CLONE_NEWNET = 0x40000000
_libc = ctypes.CDLL(None, use_errno=True)
# Host directories that make up an image's root file system (read-only).
_HOST_SYSTEM_DIRS = ("bin", "sbin", "lib", "lib32", "lib64", "libx32")
_HOST_ETC_FILES = ("ld.so.cache", "ld.so.conf", "localtime")
_IMAGE_PATH = "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin"
_pod_counter = itertools.count(2)
_svc_counter = itertools.count(10)


class PodError(AssertionError):
    """A pod that could not be started, or did not become ready; the message names the field
    or carries the container's log."""


# --- Images ------------------------------------------------------------------------------------
@dataclass
class Image:
    """What an image holds: ENTRYPOINT, CMD, ENV, USER, and files (path in image -> host path)."""

    entrypoint: list[str] = field(default_factory=list)
    cmd: list[str] = field(default_factory=list)
    env: dict[str, str] = field(default_factory=lambda: {"PATH": _IMAGE_PATH})
    user: tuple[int, int] | None = None
    files: dict[str, Path] = field(default_factory=dict)


def proxy_image(proxy_bin: Path | str, demo_bin: Path | str | None = None) -> Callable[[str], Image | None]:
    """The images of docker/proxy.Dockerfile: any image whose repository's last path segment is
    `portcullis-proxy` (what the operator and the examples name) is `/usr/local/bin/
    portcullis-proxy` (+ `portcullis-demo`) on Debian slim, USER 65532, that ENTRYPOINT."""
    files = {"/usr/local/bin/portcullis-proxy": Path(proxy_bin)}
    if demo_bin is not None:
        files["/usr/local/bin/portcullis-demo"] = Path(demo_bin)
    image = Image(entrypoint=["/usr/local/bin/portcullis-proxy"], user=(65532, 65532), files=files)

    def lookup(ref: str) -> Image | None:
        repo = ref.split("@", 1)[0]
        last = repo.rsplit("/", 1)[-1]
        return image if last.split(":", 1)[0] == "portcullis-proxy" else None

    return lookup


# --- Fetchers ----------------------------------------------------------------------------------
def fetch_from_objects(docs: list[dict[str, Any]]) -> Fetch:
    """A fetch over objects already in hand (e.g. `portcullis-operator render` output plus the
    Secrets of the example files). Secrets with `stringData` are accepted as the apiserver
    would store them."""
    index: dict[tuple[str, str], dict[str, Any]] = {}
    for d in docs:
        if d and d.get("kind") in ("ConfigMap", "Secret"):
            index[(d["kind"], d["metadata"]["name"])] = d
    return lambda kind, name: index.get((kind, name))


def fetch_with_kubectl(kubectl: Callable[..., subprocess.CompletedProcess], namespace: str) -> Fetch:
    """A fetch reading from the apiserver: `kubectl(*args, check=...)` as the cluster fixture's."""

    def fetch(kind: str, name: str) -> dict[str, Any] | None:
        p = kubectl("-n", namespace, "get", kind.lower(), name, "-o", "json", check=False)
        if p.returncode != 0:
            if "NotFound" in (p.stderr or ""):
                return None
            raise PodError(f"kubectl get {kind} {name}: {p.stderr}")
        return json.loads(p.stdout)

    return fetch


# --- Network namespaces and relays ---------------------------------------------------------------
def _in_netns(netns: Path | None, fn: Callable[[], Any]) -> Any:
    """Run `fn` on a fresh thread that has joined `netns` (None: the caller's namespace)."""
    if netns is None:
        return fn()
    out: dict[str, Any] = {}

    def work() -> None:
        try:
            fd = os.open(netns, os.O_RDONLY)
            try:
                if _libc.setns(fd, CLONE_NEWNET) != 0:
                    err = ctypes.get_errno()
                    raise OSError(err, f"setns({netns}): {os.strerror(err)}")
            finally:
                os.close(fd)
            out["v"] = fn()
        except BaseException as e:  # noqa: BLE001 - re-raised on the caller's thread
            out["e"] = e

    t = threading.Thread(target=work, name="netns", daemon=True)
    t.start()
    t.join()
    if "e" in out:
        raise out["e"]
    return out["v"]


def _connect(netns: Path | None, addr: tuple[str, int], timeout: float) -> socket.socket:
    def make() -> socket.socket:
        return socket.socket(socket.AF_INET, socket.SOCK_STREAM)

    s = _in_netns(netns, make)
    s.settimeout(timeout)
    try:
        s.connect(addr)
    except OSError:
        s.close()
        raise
    s.settimeout(None)
    return s


def _pump(src: socket.socket, dst: socket.socket) -> None:
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


class Relay:
    """Listens on `listen` inside `listen_ns` (None: the test's own namespace) and forwards each
    connection to what `target()` returns: (namespace, address) of a backend."""

    def __init__(
        self,
        listen_ns: Path | None,
        listen: tuple[str, int],
        target: Callable[[], tuple[Path | None, tuple[str, int]]],
    ):
        def make() -> socket.socket:
            s = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
            s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
            s.bind(listen)
            s.listen(128)
            return s

        self._sock: socket.socket = _in_netns(listen_ns, make)
        self.address: tuple[str, int] = self._sock.getsockname()
        self._target = target
        self._closed = False
        self._conns: list[socket.socket] = []
        threading.Thread(target=self._accept, name=f"relay-{self.address}", daemon=True).start()

    def _accept(self) -> None:
        while not self._closed:
            try:
                conn, _ = self._sock.accept()
            except OSError:
                return
            threading.Thread(target=self._serve, args=(conn,), daemon=True).start()

    def _serve(self, conn: socket.socket) -> None:
        try:
            ns, addr = self._target()
            up = _connect(ns, addr, timeout=10)
        except (OSError, PodError):
            conn.close()
            return
        self._conns += [conn, up]
        t = threading.Thread(target=_pump, args=(up, conn), daemon=True)
        t.start()
        _pump(conn, up)
        t.join()
        conn.close()
        up.close()

    def close(self) -> None:
        self._closed = True
        for s in [self._sock, *self._conns]:
            try:
                s.close()
            except OSError:
                pass


def _run(*args: str) -> None:
    p = subprocess.run(args, capture_output=True, text=True)
    if p.returncode != 0:
        raise PodError(f"{' '.join(args)}: exit {p.returncode}: {p.stderr.strip()}")


# --- Volumes -------------------------------------------------------------------------------------
def _decode(obj: dict[str, Any], kind: str) -> dict[str, bytes]:
    out: dict[str, bytes] = {}
    if kind == "Secret":
        for k, v in (obj.get("data") or {}).items():
            out[k] = base64.b64decode(v)
        for k, v in (obj.get("stringData") or {}).items():
            out[k] = v.encode()
    else:
        for k, v in (obj.get("data") or {}).items():
            out[k] = v.encode()
        for k, v in (obj.get("binaryData") or {}).items():
            out[k] = base64.b64decode(v)
    return out


def _atomic_write(target: Path, files: dict[str, tuple[bytes, int]], gid: int | None) -> None:
    """The kubelet's atomic writer: `..<timestamp>/` with the files, `..data` -> it, and one
    top-level symlink per first path segment."""
    target.mkdir(parents=True, exist_ok=True)
    stamp = "..%s" % datetime.datetime.now(datetime.timezone.utc).strftime("%Y_%m_%d_%H_%M_%S.%f")
    data_dir = target / stamp
    data_dir.mkdir()
    for rel, (content, mode) in files.items():
        p = data_dir / rel
        p.parent.mkdir(parents=True, exist_ok=True)
        p.write_bytes(content)
        os.chmod(p, mode)
        if gid is not None:
            os.chown(p, 0, gid)
    os.chmod(data_dir, 0o755)
    (target / "..data").symlink_to(stamp)
    for first in sorted({rel.split("/", 1)[0] for rel in files}):
        (target / first).symlink_to(f"..data/{first}")
    if gid is not None:
        os.chown(target, 0, gid)
    os.chmod(target, 0o3777 if gid is not None else 0o777)


def _key_files(
    source: dict[str, Any], kind: str, fetch: Fetch, where: str, default_mode: int
) -> dict[str, tuple[bytes, int]]:
    name = source.get("name") or source.get("secretName")
    if not name:
        raise PodError(f"{where}: no name")
    obj = fetch(kind, name)
    optional = bool(source.get("optional"))
    if obj is None:
        if optional:
            return {}
        raise PodError(f'{where}: {kind.lower()} "{name}" not found (MountVolume.SetUp failed)')
    data = _decode(obj, kind)
    items = source.get("items")
    if not items:
        return {k: (v, default_mode) for k, v in data.items()}
    out = {}
    for i, item in enumerate(items):
        if item["key"] not in data:
            if optional:
                continue
            raise PodError(f'{where}.items[{i}]: key "{item["key"]}" not in {kind.lower()} "{name}"')
        out[item["path"]] = (data[item["key"]], int(item.get("mode", default_mode)))
    return out


# --- The kubelet's rules for commands and env --------------------------------------------------
_VAR = re.compile(r"\$\$|\$\(([A-Za-z_][A-Za-z0-9_.\-]*)\)")


def expand(s: str, env: Mapping[str, str]) -> str:
    """Kubernetes' `$(VAR)` expansion: defined names are replaced, `$$` is `$`, else verbatim."""

    def sub(m: re.Match[str]) -> str:
        if m.group(0) == "$$":
            return "$"
        return env.get(m.group(1), m.group(0))

    return _VAR.sub(sub, s)


def _argv(container: dict[str, Any], image: Image, env: Mapping[str, str]) -> list[str]:
    command, args = container.get("command"), container.get("args")
    if command:
        argv = list(command) + list(args or [])
    elif args is not None:
        argv = image.entrypoint + list(args)
    else:
        argv = image.entrypoint + image.cmd
    argv = [expand(a, env) for a in argv]
    if not argv:
        raise PodError(f"container {container['name']}: no command (none in the spec or the image)")
    return argv


# --- Pods ----------------------------------------------------------------------------------------
@dataclass
class Container:
    name: str
    spec: dict[str, Any]
    proc: subprocess.Popen | None
    log: Path


class Pod:
    """One running pod: `url(port)`, `port(port)`, `logs()`, `ip`, `name`."""

    def __init__(self, cluster: Cluster, deployment: dict[str, Any], index: int):
        self.cluster = cluster
        meta = deployment["metadata"]
        self.deployment = meta["name"]
        self.namespace = meta.get("namespace") or cluster.namespace
        template = deployment["spec"]["template"]
        self.labels: dict[str, str] = dict((template.get("metadata") or {}).get("labels") or {})
        self.annotations: dict[str, str] = dict((template.get("metadata") or {}).get("annotations") or {})
        self.spec: dict[str, Any] = template["spec"]
        self.name = f"{self.deployment}-{uuid.uuid4().hex[:10]}-{index}"[:63]
        n = next(_pod_counter)
        self.ip = str(ipaddress.ip_address("10.244.0.0") + n)
        self.netns_name = f"pcr-{os.getpid()}-{n}"
        self.netns = Path("/run/netns") / self.netns_name
        self.dir = cluster.workdir / self.name
        self.containers: list[Container] = []
        self.ready = False
        self._relays: dict[int, Relay] = {}
        self._svc_relays: list[Relay] = []

    # -- what the test uses
    def port(self, container_port: int) -> int:
        """A 127.0.0.1 port in the test's namespace that reaches `<pod IP>:container_port`."""
        if container_port not in self._relays:
            self._relays[container_port] = Relay(
                None, ("127.0.0.1", 0), lambda: (self.netns, (self.ip, container_port))
            )
        return self._relays[container_port].address[1]

    def url(self, container_port: int, path: str = "/mcp") -> str:
        return f"http://127.0.0.1:{self.port(container_port)}{path}"

    def logs(self, container: str | None = None) -> str:
        out = []
        for c in self.containers:
            if container in (None, c.name) and c.log.exists():
                out.append(f"--- {self.name}/{c.name} ---\n{c.log.read_text(errors='replace')}")
        return "\n".join(out)

    def argv(self, container: str) -> list[str]:
        """The running process's command line, read from /proc (what was really executed)."""
        for c in self.containers:
            if c.name == container and c.proc is not None:
                raw = Path(f"/proc/{c.proc.pid}/cmdline").read_bytes()
                return raw.rstrip(b"\0").decode().split("\0")
        raise PodError(f"pod {self.name}: no running container {container!r}")

    def container_port(self, port: int | str, container: dict[str, Any] | None = None) -> int:
        """A port number, or a named containerPort of this pod (of `container` first)."""
        if isinstance(port, int) or str(port).isdigit():
            return int(port)
        containers = ([container] if container else []) + list(self.spec.get("containers") or [])
        for c in containers:
            for p in c.get("ports") or []:
                if p.get("name") == port:
                    return int(p["containerPort"])
        raise PodError(f"pod {self.name}: no container port named {port!r}")

    # -- lifecycle
    def start(self) -> None:
        self.dir.mkdir(parents=True)
        _run("ip", "netns", "add", self.netns_name)
        _run("ip", "-n", self.netns_name, "link", "set", "lo", "up")
        _run("ip", "-n", self.netns_name, "addr", "add", f"{self.ip}/32", "dev", "lo")
        for svc in self.cluster.services.values():
            self.attach_service(svc)
        volumes = self._volumes()
        for i, c in enumerate(self.spec.get("initContainers") or []):
            cont = self._start_container(c, volumes, f"spec.template.spec.initContainers[{i}]")
            assert cont.proc is not None
            try:
                rc = cont.proc.wait(timeout=self.cluster.timeout)
            except subprocess.TimeoutExpired:
                raise PodError(f"init container {c['name']} did not finish\n{self.logs(c['name'])}") from None
            if rc != 0:
                raise PodError(f"init container {c['name']} exited {rc}\n{self.logs(c['name'])}")
        for i, c in enumerate(self.spec["containers"]):
            self._start_container(c, volumes, f"spec.template.spec.containers[{i}]")

    def attach_service(self, svc: _Service) -> None:
        _run("ip", "-n", self.netns_name, "addr", "add", f"{svc.ip}/32", "dev", "lo")
        # The relay listens in this pod's namespace: a Service port equal to one of the pod's
        # own containerPorts would stop the container binding 0.0.0.0:<port>; skipped.
        own = {int(p["containerPort"]) for c in self.spec.get("containers") or [] for p in c.get("ports") or []}
        for p in svc.ports:
            if int(p["port"]) in own:
                continue
            self._svc_relays.append(
                Relay(self.netns, (svc.ip, int(p["port"])), lambda p=p, svc=svc: self.cluster.backend(svc, p))
            )

    def stop(self) -> None:
        grace = int(self.spec.get("terminationGracePeriodSeconds", 30))
        live = [c.proc for c in self.containers if c.proc and c.proc.poll() is None]
        for p in live:
            try:
                os.killpg(p.pid, signal.SIGTERM)
            except ProcessLookupError:
                pass
        deadline = time.monotonic() + min(grace, 10)
        for p in live:
            try:
                p.wait(timeout=max(0.1, deadline - time.monotonic()))
            except subprocess.TimeoutExpired:
                pass
            try:
                os.killpg(p.pid, signal.SIGKILL)
            except ProcessLookupError:
                pass
            p.wait()
        for r in [*self._relays.values(), *self._svc_relays]:
            r.close()
        subprocess.run(["ip", "netns", "del", self.netns_name], capture_output=True)

    def _volumes(self) -> dict[str, Path]:
        """Materialise every volume; name -> host directory."""
        fs_group = (self.spec.get("securityContext") or {}).get("fsGroup")
        out: dict[str, Path] = {}
        for i, v in enumerate(self.spec.get("volumes") or []):
            where = f"spec.template.spec.volumes[{i}] ({v['name']})"
            d = self.dir / "volumes" / v["name"]
            if "emptyDir" in v:
                d.mkdir(parents=True)
                if fs_group is not None:
                    os.chown(d, 0, fs_group)
                    os.chmod(d, 0o2777)
                else:
                    os.chmod(d, 0o777)
            elif "configMap" in v or "secret" in v:
                kind = "ConfigMap" if "configMap" in v else "Secret"
                src = v.get("configMap") or v.get("secret")
                mode = int(src.get("defaultMode", 0o644))
                _atomic_write(d, _key_files(src, kind, self.cluster.fetch, where, mode), fs_group)
            elif "projected" in v:
                proj = v["projected"]
                mode = int(proj.get("defaultMode", 0o644))
                files: dict[str, tuple[bytes, int]] = {}
                for j, s in enumerate(proj.get("sources") or []):
                    w = f"{where}.projected.sources[{j}]"
                    if "configMap" in s:
                        files.update(_key_files(s["configMap"], "ConfigMap", self.cluster.fetch, w, mode))
                    elif "secret" in s:
                        files.update(_key_files(s["secret"], "Secret", self.cluster.fetch, w, mode))
                    elif "downwardAPI" in s:
                        for item in s["downwardAPI"].get("items") or []:
                            val = self._field(item.get("fieldRef") or {}, w)
                            files[item["path"]] = (val.encode(), int(item.get("mode", mode)))
                    else:
                        raise PodError(f"{w}: only configMap, secret and downwardAPI sources are supported")
                _atomic_write(d, files, fs_group)
            else:
                kinds = sorted(set(v) - {"name"})
                raise PodError(f"{where}: volume type {kinds} is not supported by the pod runner")
            out[v["name"]] = d
        return out

    def _field(self, ref: dict[str, Any], where: str) -> str:
        path = ref.get("fieldPath", "")
        simple = {
            "metadata.name": self.name,
            "metadata.namespace": self.namespace,
            "status.podIP": self.ip,
            "status.podIPs": self.ip,
            "spec.nodeName": "podrunner",
            "status.hostIP": "127.0.0.1",
            "spec.serviceAccountName": self.spec.get("serviceAccountName", "default"),
        }
        if path in simple:
            return simple[path]
        m = re.fullmatch(r"metadata\.(labels|annotations)\['(.+)'\]", path)
        if m:
            return (self.labels if m.group(1) == "labels" else self.annotations).get(m.group(2), "")
        if path in ("metadata.labels", "metadata.annotations"):
            src = self.labels if path == "metadata.labels" else self.annotations
            return "\n".join(f'{k}="{v}"' for k, v in sorted(src.items()))
        raise PodError(f"{where}: fieldRef {path!r} is not supported by the pod runner")

    def _env(self, c: dict[str, Any], image: Image, where: str) -> dict[str, str]:
        env: dict[str, str] = dict(image.env)
        env["HOSTNAME"] = self.name
        fetch = self.cluster.fetch
        for i, src in enumerate(c.get("envFrom") or []):
            kind = "ConfigMap" if "configMapRef" in src else "Secret"
            ref = src.get("configMapRef") or src.get("secretRef") or {}
            obj = fetch(kind, ref["name"])
            if obj is None:
                if ref.get("optional"):
                    continue
                raise PodError(f'{where}.envFrom[{i}]: {kind.lower()} "{ref["name"]}" not found')
            for k, v in _decode(obj, kind).items():
                env[src.get("prefix", "") + k] = v.decode()
        for i, e in enumerate(c.get("env") or []):
            w = f"{where}.env[{i}] ({e['name']})"
            if "valueFrom" not in e:
                env[e["name"]] = expand(e.get("value", ""), env)
                continue
            vf = e["valueFrom"]
            if "fieldRef" in vf:
                env[e["name"]] = self._field(vf["fieldRef"], w)
                continue
            kind = "ConfigMap" if "configMapKeyRef" in vf else "Secret" if "secretKeyRef" in vf else None
            if kind is None:
                raise PodError(f"{w}: valueFrom {sorted(vf)} is not supported by the pod runner")
            ref = vf.get("configMapKeyRef") or vf.get("secretKeyRef")
            obj = fetch(kind, ref["name"])
            data = _decode(obj, kind) if obj is not None else {}
            if ref["key"] not in data:
                if ref.get("optional"):
                    continue
                what = f'{kind.lower()} "{ref["name"]}"'
                raise PodError(
                    f"{w}: {what} not found" if obj is None else f'{w}: key "{ref["key"]}" not in {what}'
                )
            env[e["name"]] = data[ref["key"]].decode()
        return env

    def _write_etc(self, root: Path, image: Image) -> None:
        etc = root / "etc"
        etc.mkdir(parents=True, exist_ok=True)
        (etc / "hostname").write_text(self.name + "\n")
        ns, domain = self.namespace, self.cluster.domain
        (etc / "resolv.conf").write_text(
            f"search {ns}.svc.{domain} svc.{domain} {domain}\nnameserver 10.96.0.10\noptions ndots:5\n"
        )
        (etc / "nsswitch.conf").write_text("passwd: files\ngroup: files\nhosts: files dns\n")
        (etc / "passwd").write_text(
            "root:x:0:0:root:/root:/bin/sh\nnonroot:x:65532:65532:nonroot:/home/nonroot:/sbin/nologin\n"
        )
        (etc / "group").write_text("root:x:0:\nnonroot:x:65532:\n")
        self.cluster.write_hosts(self, etc / "hosts")

    def _start_container(self, c: dict[str, Any], volumes: dict[str, Path], where: str) -> Container:
        image = self.cluster.image(c, where)
        root = self.dir / "roots" / c["name"]
        root.mkdir(parents=True)
        for d in ("dev", "proc", "tmp", "usr/local/bin", "etc/ssl"):
            (root / d).mkdir(parents=True, exist_ok=True)
        os.chmod(root / "tmp", 0o1777)
        self._write_etc(root, image)
        script = ["set -e", f"R={shlex.quote(str(root))}", 'mount --bind "$R" "$R"']

        def bind(src: Path | str, dst: str, ro: bool, recursive: bool = False) -> None:
            target = root / dst.lstrip("/")
            if Path(src).is_dir():
                target.mkdir(parents=True, exist_ok=True)
            else:
                target.parent.mkdir(parents=True, exist_ok=True)
                target.touch(exist_ok=True)
            q = shlex.quote(str(target))
            script.append(f"mount {'--rbind' if recursive else '--bind'} {shlex.quote(str(src))} {q}")
            if ro:
                script.append(f"mount -o remount,bind,ro {q}")

        # The image's root file system: the host's system directories, read-only.
        for d in _HOST_SYSTEM_DIRS:
            host = Path("/") / d
            if host.is_symlink():
                (root / d).symlink_to(os.readlink(host))
            elif host.is_dir():
                bind(host, d, ro=True)
        for sub in sorted(Path("/usr").iterdir()):
            if sub.name != "local" and sub.is_dir() and not sub.is_symlink():
                bind(sub, f"usr/{sub.name}", ro=True)
        for name in _HOST_ETC_FILES:
            if (Path("/etc") / name).is_file():
                shutil.copy(Path("/etc") / name, root / "etc" / name)
        if Path("/etc/ssl").is_dir():
            bind("/etc/ssl", "etc/ssl", ro=True)
        for path, host in image.files.items():
            if not Path(host).exists():
                raise PodError(f"{where}: the image's {path} is {host}, which does not exist")
            bind(host, path, ro=True)
        script.append('mount --rbind /dev "$R/dev"')
        script.append('mount --rbind /proc "$R/proc"')
        # The pod's volumes at their mount paths.
        for i, m in enumerate(c.get("volumeMounts") or []):
            if m["name"] not in volumes:
                raise PodError(f"{where}.volumeMounts[{i}]: no volume named {m['name']!r}")
            src = volumes[m["name"]]
            if m.get("subPath"):
                src = src / m["subPath"]
                if not src.exists() and not src.is_symlink():
                    src.mkdir(parents=True)
                src = src.resolve()
            bind(src, m["mountPath"], ro=bool(m.get("readOnly")))
        sc = {**(self.spec.get("securityContext") or {}), **(c.get("securityContext") or {})}
        if sc.get("readOnlyRootFilesystem"):
            script.append('mount -o remount,bind,ro "$R"')
        uid = sc.get("runAsUser", image.user[0] if image.user else 0)
        gid = sc.get("runAsGroup", image.user[1] if image.user else 0)
        if sc.get("runAsNonRoot") and uid == 0:
            raise PodError(f"{where}: runAsNonRoot is set but the container would run as root (uid 0)")
        groups = [str(g) for g in [self.spec.get("securityContext", {}).get("fsGroup")] if g is not None]
        groups += [str(g) for g in (self.spec.get("securityContext") or {}).get("supplementalGroups") or []]
        env = self._env(c, image, where)
        argv = _argv(c, image, env)
        workdir = c.get("workingDir") or "/"
        chroot = ["chroot", f"--userspec={uid}:{gid}"]
        if groups:
            chroot.append(f"--groups={','.join(groups)}")
        cmd = [*chroot, str(root), "/usr/bin/env", "-i", "-C", workdir, *[f"{k}={v}" for k, v in env.items()], *argv]
        script.append("exec " + " ".join(shlex.quote(a) for a in cmd))
        script_path = self.dir / f"{c['name']}.sh"
        script_path.write_text("\n".join(script) + "\n")
        log = self.dir / f"{c['name']}.log"
        proc = subprocess.Popen(
            ["nsenter", f"--net={self.netns}", "--", "unshare", "--mount", "--uts", "--propagation", "private",
             "--", "/bin/sh", "-c", f'hostname {shlex.quote(self.name)} && exec /bin/sh {shlex.quote(str(script_path))}'],
            stdin=subprocess.DEVNULL,
            stdout=log.open("wb"),
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )
        cont = Container(c["name"], c, proc, log)
        self.containers.append(cont)
        return cont

    # -- probes
    def probe(self, container: dict[str, Any], probe: dict[str, Any]) -> tuple[bool, str]:
        """One attempt of `probe`: (passed, what happened)."""
        timeout = float(probe.get("timeoutSeconds", 1))
        if "httpGet" in probe:
            g = probe["httpGet"]
            if g.get("scheme", "HTTP").upper() != "HTTP":
                raise PodError(f"container {container['name']}: probe scheme {g['scheme']} is not supported")
            port = self.container_port(g["port"], container)
            host = g.get("host") or self.ip
            path = g.get("path", "/")
            headers = {"Host": f"{host}:{port}", "User-Agent": "kube-probe/1.37", "Accept": "*/*",
                       "Connection": "close"}
            for h in g.get("httpHeaders") or []:
                headers[h["name"]] = h["value"]
            try:
                s = _connect(self.netns, (host, port), timeout)
            except OSError as e:
                return False, f"GET {path} on {host}:{port}: {e}"
            try:
                s.settimeout(timeout)
                req = f"GET {path} HTTP/1.1\r\n" + "".join(f"{k}: {v}\r\n" for k, v in headers.items()) + "\r\n"
                s.sendall(req.encode())
                data = b""
                while b"\r\n" not in data:
                    chunk = s.recv(4096)
                    if not chunk:
                        break
                    data += chunk
                status_line = data.split(b"\r\n", 1)[0].decode("latin-1")
            except OSError as e:
                return False, f"GET {path} on {host}:{port}: {e}"
            finally:
                s.close()
            parts = status_line.split(" ")
            code = int(parts[1]) if len(parts) > 1 and parts[1].isdigit() else 0
            return 200 <= code < 400, f"GET {path} on {host}:{port}: {status_line or 'no response'}"
        if "tcpSocket" in probe:
            port = self.container_port(probe["tcpSocket"]["port"], container)
            host = probe["tcpSocket"].get("host") or self.ip
            try:
                _connect(self.netns, (host, port), timeout).close()
                return True, f"tcp {host}:{port} open"
            except OSError as e:
                return False, f"tcp {host}:{port}: {e}"
        raise PodError(f"container {container['name']}: only httpGet and tcpSocket probes are supported, not {sorted(probe)}")

    def wait_ready(self, timeout: float | None = None) -> None:
        """Poll each container's startup, then readiness probe until it passes; a container that
        exits, or a probe that keeps failing past `timeout`, fails the pod with its log. Then
        each liveness probe must pass once."""
        deadline = time.monotonic() + (timeout or self.cluster.timeout)
        main = [c for c in self.containers if c.spec in (self.spec.get("containers") or [])]
        for c in main:
            for kind in ("startupProbe", "readinessProbe"):
                probe = c.spec.get(kind)
                if not probe:
                    continue
                last = ""
                while True:
                    if c.proc is not None and c.proc.poll() is not None:
                        raise PodError(
                            f"pod {self.name}: container {c.name} exited {c.proc.returncode} before its "
                            f"{kind} passed\n{self.logs()}"
                        )
                    ok, last = self.probe(c.spec, probe)
                    if ok:
                        break
                    if time.monotonic() > deadline:
                        raise PodError(f"pod {self.name}: {c.name} {kind} still failing ({last})\n{self.logs()}")
                    time.sleep(0.1)
            if c.spec.get("livenessProbe"):
                ok, last = self.probe(c.spec, c.spec["livenessProbe"])
                if not ok:
                    raise PodError(f"pod {self.name}: {c.name} livenessProbe failed ({last})\n{self.logs()}")
        for c in main:  # with or without probes, a container that exited is not a ready pod
            if c.proc is not None and c.proc.poll() is not None:
                raise PodError(f"pod {self.name}: container {c.name} exited {c.proc.returncode}\n{self.logs()}")
        self.ready = True


@dataclass
class _Service:
    name: str
    namespace: str
    ip: str
    selector: dict[str, str]
    ports: list[dict[str, Any]]


class Cluster:
    """Pods and Services of one test (see the module doc). A context manager: on exit every
    process is stopped and every network namespace deleted."""

    def __init__(
        self,
        fetch: Fetch,
        images: Callable[[str], Image | None] | Mapping[str, Image],
        namespace: str = "default",
        workdir: Path | None = None,
        cluster_domain: str = "cluster.local",
        timeout: float = 60.0,
    ):
        self.fetch = fetch
        self._images = images
        self.namespace = namespace
        self.domain = cluster_domain
        self.timeout = timeout
        self._tmp = None if workdir else tempfile.TemporaryDirectory(prefix="podrunner-")
        self.workdir = Path(workdir) if workdir else Path(self._tmp.name)  # type: ignore[union-attr]
        self.workdir.mkdir(parents=True, exist_ok=True)
        self.pods: list[Pod] = []
        self.services: dict[str, _Service] = {}
        self._rr = itertools.count()

    def image(self, container: dict[str, Any], where: str) -> Image:
        ref = container.get("image") or ""
        img = self._images(ref) if callable(self._images) else self._images.get(ref)
        if img is None:
            raise PodError(f"{where} ({container.get('name')}): no local stand-in for image {ref!r}")
        return img

    def run(self, deployment: dict[str, Any], replicas: int | None = 1, wait: bool = True) -> Pod:
        """Start `replicas` pods of `deployment` (None: `spec.replicas`); returns the first."""
        if deployment.get("kind", "Deployment") != "Deployment":
            raise PodError(f"{deployment.get('kind')}/{deployment['metadata']['name']}: not a Deployment")
        n = deployment["spec"].get("replicas", 1) if replicas is None else replicas
        started = []
        for i in range(max(n, 1)):
            pod = Pod(self, deployment, i)
            self.pods.append(pod)
            pod.start()
            started.append(pod)
        if wait:
            for pod in started:
                pod.wait_ready()
        return started[0]

    def expose(self, service: dict[str, Any]) -> str:
        """Make a Service's names resolve (and connect) inside every pod; returns its cluster IP."""
        meta = service["metadata"]
        ns = meta.get("namespace") or self.namespace
        key = f"{meta['name']}.{ns}"
        if key in self.services:
            return self.services[key].ip
        spec = service.get("spec") or {}
        svc = _Service(
            meta["name"], ns, str(ipaddress.ip_address("10.96.0.0") + next(_svc_counter)),
            dict(spec.get("selector") or {}), list(spec.get("ports") or []),
        )
        self.services[key] = svc
        for pod in self.pods:
            pod.attach_service(svc)
            self.write_hosts(pod)
        return svc.ip

    def write_hosts(self, pod: Pod, path: Path | None = None) -> None:
        lines = ["127.0.0.1\tlocalhost", "::1\tlocalhost ip6-localhost ip6-loopback",
                 f"{pod.ip}\t{pod.name}"]
        for s in self.services.values():
            names = [f"{s.name}.{s.namespace}.svc.{self.domain}", f"{s.name}.{s.namespace}.svc",
                     f"{s.name}.{s.namespace}"]
            if s.namespace == pod.namespace:
                names.append(s.name)
            lines.append(f"{s.ip}\t" + " ".join(names))
        text = "\n".join(lines) + "\n"
        if path is not None:
            path.write_text(text)
            return
        for c in pod.containers:
            hosts = pod.dir / "roots" / c.name / "etc" / "hosts"
            if hosts.exists():
                hosts.write_text(text)

    def backend(self, svc: _Service, port: dict[str, Any]) -> tuple[Path, tuple[str, int]]:
        """A ready pod behind `svc` (round robin) and the target port on it."""
        pods = [
            p for p in self.pods
            if p.ready and p.namespace == svc.namespace and svc.selector
            and all(p.labels.get(k) == v for k, v in svc.selector.items())
        ]
        if not pods:
            raise PodError(f"service {svc.name}: no ready endpoints")
        pod = pods[next(self._rr) % len(pods)]
        return pod.netns, (pod.ip, pod.container_port(port.get("targetPort", port["port"])))

    def close(self) -> None:
        for pod in reversed(self.pods):
            pod.stop()
        if self._tmp is not None:
            self._tmp.cleanup()

    def __enter__(self) -> Cluster:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


@contextmanager
def run_deployment(
    deployment: dict[str, Any],
    fetch: Fetch,
    proxy_bin: Path | str,
    demo_bin: Path | str | None = None,
    namespace: str | None = None,
    workdir: Path | None = None,
    timeout: float = 60.0,
) -> Iterator[Pod]:
    """One pod of `deployment` with the proxy image, ready; stopped on exit."""
    ns = namespace or deployment["metadata"].get("namespace") or "default"
    with Cluster(fetch, proxy_image(proxy_bin, demo_bin), ns, workdir, timeout=timeout) as c:
        yield c.run(deployment)
