"""McpPolicy `status.spend` on a real control plane: a public McpPortal with an LLM route and an
McpPolicy with three budgets (per user, the whole portal in tokens, the whole portal in money)
are applied with kubectl; the portal's Deployment, as the operator wrote it to the apiserver,
runs as a pod (podrunner.py), and so does the provider emulator (e2e/servers/llm_emulator.py,
the one stand-in: providers cannot be reached from here) behind a Service the portal's target
names. LLM calls go through the portal pod; the operator (running as the chart's
ServiceAccount) reads the portal's `GET /admin/spend/summary` through the portal Service's
admin port (routed in `cluster.network`) and writes `status.spend`, whose figures must equal
the tokens the emulator says it billed.

Also: before the portal runs, the operator says it cannot read it (`SpendReported` False,
naming the portal); the first figures arrive by the periodic read alone (no change to the
policy); when the portal goes away again the last figures stay, with the error."""

from __future__ import annotations

import json
import urllib.request
from pathlib import Path
from typing import Any

import pytest
import yaml

from kube import get_object, wait_until, workspace_binary
from podrunner import Cluster, Image, Pod, fetch_with_kubectl, proxy_image

REPO = Path(__file__).resolve().parents[2]
EMULATOR = REPO / "e2e" / "servers" / "llm_emulator.py"
EMULATOR_IMAGE = "llm-emulator:e2e"
KEY = "sk-dummy-openai"


def images(ref: str) -> Image | None:
    """The proxy image, and an image that is Debian's python3 running the emulator."""
    if ref == EMULATOR_IMAGE:
        return Image(
            entrypoint=["/usr/bin/python3", "/usr/local/bin/llm_emulator.py"],
            user=(65532, 65532),
            files={"/usr/local/bin/llm_emulator.py": EMULATOR},
        )
    return proxy_image(workspace_binary("portcullis-proxy"))(ref)


def emulator_objects(namespace: str) -> tuple[dict[str, Any], dict[str, Any]]:
    labels = {"app": "llm-emulator"}
    deployment = {
        "apiVersion": "apps/v1", "kind": "Deployment",
        "metadata": {"name": "llm", "namespace": namespace},
        "spec": {"replicas": 1, "selector": {"matchLabels": labels}, "template": {
            "metadata": {"labels": labels},
            "spec": {"containers": [{
                "name": "emulator", "image": EMULATOR_IMAGE,
                "args": ["--host", "0.0.0.0", "--port", "8000", "--name", "openai-emu", "--key", KEY],
                "ports": [{"name": "http", "containerPort": 8000}],
                "readinessProbe": {"tcpSocket": {"port": "http"}},
            }]},
        }},
    }  # fmt: skip
    service = {
        "apiVersion": "v1", "kind": "Service", "metadata": {"name": "llm", "namespace": namespace},
        "spec": {"selector": labels, "ports": [{"name": "http", "port": 80, "targetPort": "http"}]},
    }  # fmt: skip
    return deployment, service


def manifests(namespace: str) -> str:
    docs = [
        {"apiVersion": "v1", "kind": "Secret", "metadata": {"name": "llm-keys"}, "stringData": {"openai": KEY}},
        {"apiVersion": "portcullis.dev/v1alpha1", "kind": "McpPortal", "metadata": {"name": "gw"},
         "spec": {"public": True, "llm": {"routes": [{"alias": "fast", "targets": [{
             "provider": "openAICompatible", "baseUrl": f"http://llm.{namespace}.svc.cluster.local/v1",
             "model": "gpt-4o-mini", "apiKeyFrom": {"name": "llm-keys", "key": "openai"},
             "price": {"input": "0.15", "output": "0.60"}}]}]}}},
        {"apiVersion": "portcullis.dev/v1alpha1", "kind": "McpPolicy", "metadata": {"name": "spenders"},
         "spec": {"portals": ["gw"], "models": ["fast"], "budgets": [
             {"name": "per-user", "tokens": 100000, "window": {"calendar": "day"}},
             {"name": "everyone", "scope": "portal", "tokens": 1000000, "window": {"calendar": "month"}},
             {"name": "money", "scope": "portal", "cost": "5", "window": {"rollingSeconds": 3600},
              "enforcement": "soft"}]}},
    ]  # fmt: skip
    return yaml.safe_dump_all(docs)


def chat(portal: Pod, text: str) -> dict[str, Any]:
    body = json.dumps({"model": "fast", "messages": [{"role": "user", "content": text}], "max_tokens": 50}).encode()
    req = urllib.request.Request(
        portal.url(9180, "/llm/openai/v1/chat/completions"), data=body,
        headers={"content-type": "application/json"}, method="POST",
    )  # fmt: skip
    with urllib.request.urlopen(req, timeout=30) as r:
        return json.loads(r.read())


def spend(cluster, namespace: str) -> dict[str, Any]:
    obj = get_object(cluster, namespace, "mcppolicy", "spenders") or {}
    return obj.get("status") or {}


def reported(status: dict[str, Any]) -> dict[str, Any] | None:
    return next((c for c in status.get("conditions") or [] if c["type"] == "SpendReported"), None)


def budget(status: dict[str, Any], name: str) -> dict[str, Any]:
    (entry,) = status["spend"]
    return next(b for b in entry["budgets"] if b["name"] == name)


def nudge(cluster, namespace: str, n: int) -> None:
    """A change to the policy's metadata: a reconcile now rather than at the next interval."""
    cluster.kubectl("-n", namespace, "annotate", "mcppolicy", "spenders", f"e2e/nudge={n}", "--overwrite")


@pytest.mark.timeout(420)
def test_policy_status_shows_the_spend_the_provider_billed_and_keeps_it_when_the_portal_goes(
    cluster, operator, namespace
):
    cluster.kubectl("apply", "-n", namespace, "-f", "-", input=manifests(namespace))
    # The portal is not running yet: the operator says so, naming it.
    cond = wait_until("SpendReported False", lambda: (c := reported(spend(cluster, namespace))) and c["status"] == "False" and c, 60)
    assert cond["reason"] == "PortalUnreachable", cond
    assert cond["message"].startswith(f"could not read spend from gw: GET http://gw-portal.{namespace}.svc.cluster.local:9464/admin/spend/summary?policy=spenders"), cond
    (entry,) = spend(cluster, namespace)["spend"]
    assert entry["portal"] == "gw" and entry["error"] and not entry.get("budgets"), entry

    emu_deployment, emu_service = emulator_objects(namespace)
    host = f"gw-portal.{namespace}.svc.cluster.local"
    with Cluster(fetch_with_kubectl(cluster.kubectl, namespace), images, namespace, workdir=cluster.workdir / f"pods-{namespace}") as pods:
        try:
            emulator = pods.run(emu_deployment)
            pods.expose(emu_service)
            deployment = wait_until("Deployment gw-portal", lambda: get_object(cluster, namespace, "deployment", "gw-portal"), 60)
            portal = pods.run(deployment)
            svc = get_object(cluster, namespace, "service", "gw-portal")
            assert svc is not None
            pods.expose(svc)
            cluster.network.route(host, 9464, portal.port(9464))

            for text in ("how much did we spend", "a second question with more words in it", "three"):
                answer = chat(portal, text)
                assert answer["choices"][0]["message"]["content"], answer
            usage = json.loads(urllib.request.urlopen(emulator.url(8000, "/_emulator/usage"), timeout=10).read())
            billed = usage["total"]["input"] + usage["total"]["output"]
            assert usage["total"]["calls"] == 3 and billed > 0, usage

            # No change to the policy: the periodic read (60 s by default) brings the figures.
            def figures() -> dict[str, Any] | None:
                st = spend(cluster, namespace)
                c = reported(st)
                if not c or c["status"] != "True":
                    return None
                return st if budget(st, "everyone")["spent"]["tokens"] == billed else None

            st = wait_until("status.spend with the billed tokens", figures, timeout=100)
            print(f"\nstatus of McpPolicy spenders (the emulator billed {billed} tokens):\n{yaml.safe_dump(st)}")
            (entry,) = st["spend"]
            assert entry["store"] == "memory" and entry["replica"] == portal.name, entry
            assert "error" not in entry and entry["observedAt"].endswith("Z"), entry
            everyone = budget(st, "everyone")
            assert everyone["scope"] == "portal" and everyone["limit"] == {"tokens": 1000000}, everyone
            assert everyone["remaining"] == {"tokens": 1000000 - billed}, everyone
            assert everyone["reserved"]["tokens"] == 0, everyone
            per_user = budget(st, "per-user")
            assert per_user["scope"] == "user" and "spent" not in per_user, per_user
            subjects = per_user["subjects"]
            assert subjects["count"] == 1 and subjects["atLimit"] == 0, subjects  # the anonymous caller
            assert subjects["total"]["tokens"] == billed == subjects["highest"]["tokens"], subjects
            # Money at the target's price: 0.15 per million prompt tokens, 0.60 per million
            # completion tokens (rounded up to the nano-unit per call).
            money = budget(st, "money")
            assert money["enforcement"] == "soft" and money["window"] == {"rollingSeconds": 3600}, money
            cost = float(money["spent"]["cost"])
            exact = (usage["total"]["input"] * 0.15 + usage["total"]["output"] * 0.60) / 1e6
            assert exact <= cost <= exact + 3e-9, (cost, exact)
            assert money["resetsAt"].endswith("Z"), money

            # One more call and a nudge: the figures follow.
            chat(portal, "once more")
            usage = json.loads(urllib.request.urlopen(emulator.url(8000, "/_emulator/usage"), timeout=10).read())
            billed = usage["total"]["input"] + usage["total"]["output"]
            nudge(cluster, namespace, 1)
            st = wait_until("status.spend after another call", figures, timeout=60)
            last_seen = st["spend"][0]["observedAt"]

            # The portal goes away: the figures stay, with the error and a False condition.
            portal.stop()
            cluster.network.unroute(host, 9464)
            nudge(cluster, namespace, 2)

            def kept() -> dict[str, Any] | None:
                s = spend(cluster, namespace)
                c = reported(s)
                return s if c and c["status"] == "False" else None

            st = wait_until("SpendReported False after the portal stopped", kept, timeout=60)
            (entry,) = st["spend"]
            assert entry["error"].startswith(f"GET http://{host}:9464/"), entry
            assert entry["observedAt"] == last_seen, entry
            assert budget(st, "everyone")["spent"]["tokens"] == billed, st
            assert reported(st)["message"].startswith("could not read spend from gw: "), reported(st)
        except BaseException:
            print("\n".join(p.logs() for p in pods.pods))
            print(operator.logs()[-5000:])
            raise
        finally:
            cluster.network.unroute(host, 9464)


def test_kubectl_explain_documents_every_field_of_the_spend_status(cluster, operator):
    import re

    for path in ("mcppolicy.status.spend", "mcppolicy.status.spend.budgets", "mcppolicy.status.spend.budgets.subjects"):
        out = cluster.kubectl("explain", path).stdout
        fields = out.split("FIELDS:", 1)[1]
        entries = re.findall(r"^  (\w+)\t<([^>]+)>.*\n(?:  enum: .*\n)?((?:    .*\n?)*)", fields, flags=re.M)
        assert len(entries) >= 5, (path, out)
        undocumented = [name for name, _, text in entries if not text.strip()]
        assert not undocumented, f"{path}: fields without a description: {undocumented}\n{out}"
    # kubectl wraps descriptions: compare words.
    subjects = " ".join(cluster.kubectl("explain", "mcppolicy.status.spend.budgets.subjects").stdout.split())
    assert "Subjects are never named here" in subjects and "allowed to `get mcppolicies`" in subjects, subjects
    store = " ".join(cluster.kubectl("explain", "mcppolicy.status.spend.store").stdout.split())
    assert "each replica counts, and enforces, alone" in store, store
