"""Point 6: server-side apply settles. Once a portal is Ready, 60 s without changes bring zero
writes from the operator (the apiserver's audit log; the leader's Lease renewals excepted); a
change to a selected McpServer, a bound McpPolicy or a referenced Secret reaches the ConfigMap
and the Deployment's config hash within 5 s; objects edited or deleted by hand are restored."""

from __future__ import annotations

import datetime as dt
import json
import time

import objects
from conftest import ProcessManager, start_demo_server
from kube import condition_true, mutating, wait_until

HASH = "portcullis.dev/config-hash"
QUIET_SECONDS = 60
REACT_SECONDS = 5


def _ts(s: str) -> dt.datetime:
    return dt.datetime.fromisoformat(s.replace("Z", "+00:00"))


def operator_writes(cluster, operator, since: dt.datetime) -> list[str]:
    out = []
    for e in cluster.audit_events():
        if (e.get("user") or {}).get("username") != operator.username or not mutating(e):
            continue
        if (e.get("objectRef") or {}).get("resource") == "leases":
            continue
        if _ts(e["requestReceivedTimestamp"]) >= since:
            ref = e.get("objectRef") or {}
            out.append(
                f"{e['requestReceivedTimestamp']} {e['verb']} {ref.get('resource')}/{ref.get('subresource') or ''}"
                f" {ref.get('namespace')}/{ref.get('name')} -> {(e.get('responseStatus') or {}).get('code')}"
                # What the write said (the audit policy logs writes at level Request).
                f"\n    {json.dumps(e.get('requestObject'), sort_keys=True)[:2000]}"
            )
    return out


class Scene:
    def __init__(self, cluster, ns: str):
        self.cluster, self.ns = cluster, ns

    def get(self, kind: str, name: str) -> dict:
        return self.cluster.get_json(kind, name, "-n", self.ns)

    def config(self) -> str:
        return self.get("configmap", "settle-portal")["data"]["manifests.yaml"]

    def hash(self) -> str:
        return self.get("deployment", "settle-portal")["spec"]["template"]["metadata"]["annotations"][HASH]

    def patch(self, kind: str, name: str, patch: dict) -> None:
        self.cluster.kubectl("patch", kind, name, "-n", self.ns, "--type=merge", "-p", json.dumps(patch))


def _scene(cluster, pm, ns: str) -> Scene:
    port = start_demo_server(pm, "docs")
    cluster.network.route(f"wiki.{ns}.svc.cluster.local", 80, port)
    cluster.apply(
        [
            objects.secret("wiki-credentials", "api-key", "one"),
            objects.remote_server("wiki", f"http://wiki.{ns}.svc.cluster.local/mcp", secret=("wiki-credentials", "api-key")),
            objects.portal("settle"),
            objects.policy("settle-read", "settle"),
        ],
        ns,
    )
    s = Scene(cluster, ns)
    wait_until(
        "portal settle Ready with its servers ready",
        lambda: (p := s.get("mcpportal", "settle")) and condition_true(p, "Ready") and condition_true(p, "ServersReady"),
        timeout=60,
    )
    # The rollout finished: the Deployment controller has nothing left to report (its status
    # updates are changes the operator may answer; the quiet minute starts after them).
    wait_until(
        "the portal's Deployment rolled out",
        lambda: _rolled_out(s.get("deployment", "settle-portal")),
        timeout=60,
    )
    # ... and the operator has answered its last status update: the portal's Ready message
    # counts the replicas the rolled-out Deployment has (during the rollout it said "2/1" while
    # a surge pod was leaving; the answer to that change is not a write at rest).
    wait_until(
        "the portal's status counting the rolled-out replicas",
        lambda: _ready_message(s.get("mcpportal", "settle")) == _replicas_message(s.get("deployment", "settle-portal")),
        timeout=30,
    )
    return s


def _ready_message(portal: dict) -> str | None:
    for c in (portal.get("status") or {}).get("conditions") or []:
        if c.get("type") == "Ready":
            return c.get("message")
    return None


def _replicas_message(d: dict) -> str:
    want = (d.get("spec") or {}).get("replicas", 1)
    available = (d.get("status") or {}).get("availableReplicas", 0)
    return f"{available}/{want} proxy replicas available"


def _rolled_out(d: dict) -> bool:
    st = d.get("status") or {}
    want = (d.get("spec") or {}).get("replicas", 1)
    return (
        st.get("observedGeneration") == d["metadata"]["generation"]
        and st.get("updatedReplicas") == want
        and st.get("availableReplicas") == want
        and any(c.get("reason") == "NewReplicaSetAvailable" for c in st.get("conditions") or [])
    )


def test_a_ready_portal_brings_no_writes_for_a_minute_and_changes_arrive_within_five_seconds(
    cluster, operator, kubelet, namespace, tmp_path
):
    pm = ProcessManager(tmp_path / "logs")
    try:
        s = _scene(cluster, pm, namespace)
        start = dt.datetime.now(dt.timezone.utc)
        time.sleep(QUIET_SECONDS)
        writes = operator_writes(cluster, operator, start)
        if writes:
            print("portal status at the start:", json.dumps(s.get("mcpportal", "settle").get("status"), indent=1))
        assert not writes, f"{len(writes)} write(s) by the operator in {QUIET_SECONDS}s without changes:\n" + "\n".join(writes)

        def reacts(what: str, change, config_changes: bool = True) -> None:
            config, hash_ = s.config(), s.hash()
            t0 = time.monotonic()
            change()
            wait_until(
                f"the config hash to change after {what}",
                lambda: s.hash() != hash_ and (not config_changes or s.config() != config),
                timeout=REACT_SECONDS,
                interval=0.1,
            )
            print(f"{what}: reflected in {time.monotonic() - t0:.2f}s")

        reacts("a change to the selected McpServer", lambda: s.patch("mcpserver", "wiki", {"spec": {"timeoutSeconds": 25}}))
        assert "25" in s.config()
        reacts("a change to the bound McpPolicy", lambda: s.patch("mcppolicy", "settle-read", {"spec": {"limits": {"callsPerMinute": 61}}}))
        assert "61" in s.config()
        # Secret values never enter the ConfigMap; their resourceVersions enter the hash.
        reacts(
            "a change to the referenced Secret",
            lambda: s.patch("secret", "wiki-credentials", {"stringData": {"api-key": "two"}}),
            config_changes=False,
        )
    finally:
        cluster.network.unroute(f"wiki.{namespace}.svc.cluster.local", 80)
        pm.stop_all()


def test_objects_edited_or_deleted_by_hand_are_restored(cluster, operator, kubelet, namespace, tmp_path):
    pm = ProcessManager(tmp_path / "logs")
    try:
        s = _scene(cluster, pm, namespace)
        config = s.config()
        s.patch("configmap", "settle-portal", {"data": {"manifests.yaml": "edited by hand"}})
        wait_until("the ConfigMap restored", lambda: s.config() == config, timeout=10)

        dep = s.get("deployment", "settle-portal")
        s.patch("deployment", "settle-portal", {"spec": {"replicas": 3}})
        wait_until(
            "the Deployment's replicas restored",
            lambda: s.get("deployment", "settle-portal")["spec"]["replicas"] == dep["spec"]["replicas"],
            timeout=10,
        )

        for kind in ("configmap", "service", "poddisruptionbudget", "deployment"):
            uid = s.get(kind, "settle-portal")["metadata"]["uid"]
            cluster.kubectl("delete", kind, "settle-portal", "-n", namespace, "--wait=true")
            wait_until(
                f"{kind}/settle-portal recreated",
                lambda: s.get(kind, "settle-portal")["metadata"]["uid"] != uid,
                timeout=10,
            )
        assert s.config() == config
    finally:
        cluster.network.unroute(f"wiki.{namespace}.svc.cluster.local", 80)
        pm.stop_all()
