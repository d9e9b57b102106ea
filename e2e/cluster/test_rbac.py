"""Point 2: the operator runs as a local process authenticated as the chart's ServiceAccount (a
TokenRequest token), never as admin; the apiserver's audit log shows every request it made and
none refused. It runs with --discover-shadow, so discovery's RBAC is exercised too."""

from __future__ import annotations

from conftest import OPERATOR_NAMESPACE, RELEASE
from kube import condition_true, sa_username, wait_until


def test_the_operator_authenticates_as_the_charts_service_account(cluster, operator):
    kubeconfig = cluster.workdir / f"operator-{operator.process.identity}.kubeconfig"
    text = kubeconfig.read_text()
    assert "token:" in text and "client-certificate" not in text
    who = cluster.kubectl("auth", "whoami", "-o", "jsonpath={.status.userInfo.username}", kubeconfig=kubeconfig)
    assert who.stdout == sa_username(OPERATOR_NAMESPACE, RELEASE)
    mine = operator.process.events()
    assert mine, "no audit event carries the operator's token"
    assert {e["user"]["username"] for e in mine} == {operator.username}
    groups = set(mine[0]["user"].get("groups", []))
    assert "system:masters" not in groups and "system:serviceaccounts" in groups, groups


def test_the_chart_grants_every_request_the_operator_makes(cluster, operator, demo):
    """After the examples are reconciled (portal, servers, policy, status, events, Lease,
    discovery), no request of the ServiceAccount was refused."""
    wait_until(
        "the example portal Ready",
        lambda: condition_true(cluster.get_json("mcpportal", demo.portal, "-n", demo.namespace), "Ready"),
        timeout=60,
    )
    events = [e for e in cluster.audit_events() if (e.get("user") or {}).get("username") == operator.username]
    done = {((e.get("objectRef") or {}).get("resource"), e["verb"]) for e in events if e["responseStatus"]["code"] < 400}
    for needed in [
        ("mcpportals", "watch"),
        ("mcpportals", "patch"),  # status (server-side apply)
        ("configmaps", "patch"),
        ("deployments", "patch"),
        ("poddisruptionbudgets", "patch"),
        ("networkpolicies", "patch"),
        ("events", "create"),
        ("leases", "update"),
        ("pods", "list"),  # shadow discovery
    ]:
        assert needed in done, f"the operator never did {needed}: {sorted(x for x in done if x[0])}"
    assert operator.denied() == [], f"requests the chart's RBAC refused: {operator.denied()}"


def test_a_refused_request_shows_in_the_audit_log_as_this_suite_reads_it(cluster, namespace):
    """The control of the test above: a ServiceAccount without rights is refused, and the audit
    log reading finds the 403."""
    cluster.kubectl("create", "serviceaccount", "nobody", "-n", namespace)
    cfg = cluster.sa_kubeconfig(namespace, "nobody")
    r = cluster.kubectl("get", "configmaps", "-n", namespace, kubeconfig=cfg, check=False)
    assert r.returncode != 0 and "forbidden" in r.stderr.lower(), r.stderr
    user = sa_username(namespace, "nobody")
    refused = wait_until(
        "the 403 in the audit log",
        lambda: [
            e
            for e in cluster.audit_events()
            if e["user"]["username"] == user
            and e["responseStatus"]["code"] == 403
            and e["annotations"]["authorization.k8s.io/decision"] == "forbid"
        ],
    )
    assert refused[0]["objectRef"]["resource"] == "configmaps"
