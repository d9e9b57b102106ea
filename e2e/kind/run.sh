#!/usr/bin/env bash
# The kind suite: a real cluster. Needs docker, kind, helm and kubectl (helm/kubectl from
# e2e/operator/install-helm.sh when absent) and the e2e venv (PyPI `mcp`, for a real client).
#   1. build both images, create a kind cluster, load the images
#   2. helm install the chart (CRDs + operator)
#   3. apply examples/operator/portal.yaml, wait until every McpServer and the McpPortal are Ready
#   4. call the portal through a port-forward with the official Python MCP client: tools of all
#      three servers are listed, and one is called
#   5. delete the resources and check that everything the operator created is gone
# KEEP_CLUSTER=1 keeps the cluster afterwards.
set -euo pipefail
ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/../.." && pwd)"
cd "$ROOT"
CLUSTER="${KIND_CLUSTER:-portcullis-e2e}"
NS=portcullis-demo
export PATH="$ROOT/e2e/.tools/bin:$PATH"
command -v helm >/dev/null && command -v kubectl >/dev/null || e2e/operator/install-helm.sh
for tool in docker kind helm kubectl; do
  command -v "$tool" >/dev/null || { echo "kind suite: $tool is required" >&2; exit 1; }
done
PY="${PYTHON:-$ROOT/e2e/.venv/bin/python}"
step() { printf '\n=== kind suite: %s\n' "$*"; }

cleanup() {
  local rc=$?
  if [[ $rc -ne 0 ]]; then
    step "FAILED: state of the cluster"
    kubectl get mcpservers,mcpportals,mcppolicies,deploy,pods,svc -A -o wide || true
    kubectl -n "$NS" describe mcpportals,mcpservers || true
    kubectl -n portcullis-system logs deploy/portcullis --tail=200 || true
  fi
  [[ -n "${PF_PID:-}" ]] && kill "$PF_PID" 2>/dev/null || true
  [[ "${KEEP_CLUSTER:-}" == 1 ]] || kind delete cluster --name "$CLUSTER" || true
  exit $rc
}
trap cleanup EXIT

step "images"
docker build -f docker/proxy.Dockerfile -t portcullis-proxy:dev .
docker build -f docker/operator.Dockerfile -t portcullis-operator:dev .

step "cluster $CLUSTER"
kind get clusters | grep -qx "$CLUSTER" || kind create cluster --name "$CLUSTER" --wait 180s
kind load docker-image --name "$CLUSTER" portcullis-proxy:dev portcullis-operator:dev

step "helm install"
helm upgrade --install portcullis charts/portcullis -n portcullis-system --create-namespace --wait --timeout 180s \
  --set operator.image.repository=portcullis-operator --set operator.image.tag=dev \
  --set operator.image.pullPolicy=Never --set operator.logFormat=text \
  --set proxy.image.repository=portcullis-proxy --set proxy.image.tag=dev --set proxy.image.pullPolicy=Never
kubectl get crd mcpservers.portcullis.dev mcpportals.portcullis.dev mcppolicies.portcullis.dev

step "apply the example"
kubectl create namespace "$NS" --dry-run=client -o yaml | kubectl apply -f -
kubectl label namespace "$NS" pod-security.kubernetes.io/enforce=restricted --overwrite
kubectl -n "$NS" apply -f examples/operator/portal.yaml
kubectl -n "$NS" wait --for=condition=Ready mcpserver/wiki mcpserver/tickets mcpserver/docs --timeout=300s
kubectl -n "$NS" wait --for=condition=Ready mcpportal/engineering --timeout=300s
kubectl -n "$NS" wait --for=condition=Accepted mcppolicy/engineers-read --timeout=60s
kubectl -n "$NS" get mcpservers,mcpportals,mcppolicies -o wide

step "call the portal with a real MCP client"
kubectl -n "$NS" port-forward svc/engineering-portal 18080:80 >/dev/null 2>&1 &
PF_PID=$!
for _ in $(seq 1 50); do curl -fsS http://127.0.0.1:18080/healthz >/dev/null 2>&1 && break; sleep 0.2; done
"$PY" e2e/kind/call_portal.py http://127.0.0.1:18080/mcp
kill "$PF_PID"; PF_PID=

step "delete and check cleanup"
kubectl -n "$NS" delete -f examples/operator/portal.yaml --wait=true
for _ in $(seq 1 60); do
  left="$(kubectl -n "$NS" get deploy,svc,cm,networkpolicy,pdb -l app.kubernetes.io/managed-by=portcullis-operator -o name)"
  [[ -z "$left" ]] && break
  sleep 2
done
[[ -z "$left" ]] || { echo "left behind: $left" >&2; exit 1; }
helm uninstall portcullis -n portcullis-system --wait
step "passed"
