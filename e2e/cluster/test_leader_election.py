"""Point 10: two operator processes compete for the Lease; only the leader writes (the audit
log tells them apart by their tokens); when it is killed the other takes over within the
lease's duration (plus one retry period) and reconciles a change made in between."""

from __future__ import annotations

import datetime as dt
import time

import objects
from conftest import LEASE, OPERATOR_NAMESPACE, OperatorProcess, ProcessManager
from kube import mutating, wait_until

LEASE_SECONDS = 15  # main.rs: LeaseConfig.duration
RETRY_SECONDS = 5  # main.rs: LeaseConfig.renew (a follower retries this often)


def _holder(cluster) -> str:
    return cluster.get_json("lease", LEASE, "-n", OPERATOR_NAMESPACE)["spec"]["holderIdentity"]


def _writes(p: OperatorProcess, since: dt.datetime) -> list[dict]:
    return [
        e
        for e in p.events()
        if mutating(e)
        and (e.get("objectRef") or {}).get("resource") != "leases"
        and dt.datetime.fromisoformat(e["requestReceivedTimestamp"].replace("Z", "+00:00")) >= since
    ]


def test_one_of_two_operators_leads_and_the_other_takes_over_when_it_dies(
    cluster, operator, kubelet, namespace, tmp_path
):
    pm = ProcessManager(tmp_path / "logs")
    operator.stop()
    # The stopped process does not release its Lease: clear it so the two start level.
    cluster.kubectl("delete", "lease", LEASE, "-n", OPERATOR_NAMESPACE, "--ignore-not-found")
    a = OperatorProcess(cluster, pm, "operator-a")
    b = OperatorProcess(cluster, pm, "operator-b")
    try:
        since = dt.datetime.now(dt.timezone.utc)
        a.start()
        b.start()
        leader, follower = wait_until(
            "one of the two to lead",
            lambda: {"operator-a": (a, b), "operator-b": (b, a)}.get(_holder(cluster)),
            timeout=30,
        )
        leader.wait_leading()
        cluster.apply([objects.deployed_server("docs"), objects.portal("le")], namespace)
        wait_until("the leader to render the portal", lambda: cluster.get_json("configmap", "le-portal", "-n", namespace), timeout=30)
        time.sleep(2)
        assert _writes(leader, since), "the leader made no writes"
        follower_writes = _writes(follower, since)
        assert not follower_writes, [f"{e['verb']} {e['requestURI']}" for e in follower_writes]
        assert "starting controllers" not in follower.logs()

        leader.hard_kill()
        killed = time.monotonic()
        # A change while nobody leads: the next leader must pick it up.
        cluster.apply(objects.policy("le-read", "le", calls_per_minute=77), namespace)
        follower.wait_leading(timeout=LEASE_SECONDS + RETRY_SECONDS + 10)
        took = time.monotonic() - killed
        assert _holder(cluster) == follower.identity
        assert took <= LEASE_SECONDS + RETRY_SECONDS + 2, f"takeover took {took:.1f}s"
        print(f"takeover after {took:.1f}s")
        wait_until(
            "the new leader to render the policy made while nobody led",
            lambda: "77" in cluster.get_json("configmap", "le-portal", "-n", namespace)["data"]["manifests.yaml"],
            timeout=20,
        )
        lease = cluster.get_json("lease", LEASE, "-n", OPERATOR_NAMESPACE)
        assert lease["spec"]["leaseTransitions"] >= 1, lease["spec"]
    finally:
        pm.stop_all()
        cluster.kubectl("delete", "lease", LEASE, "-n", OPERATOR_NAMESPACE, "--ignore-not-found")
        operator.restart()
