#!/usr/bin/env bash
# The operator tests' Python venv (e2e/operator/.venv) from the pinned requirements.txt.
# Idempotent: does nothing when the requirements did not change.
set -euo pipefail
here="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
cd "$here"
sum="$(sha256sum requirements.txt | cut -d' ' -f1)"
stamp=".venv/.requirements-sha256"
if [[ -x .venv/bin/python && -f "$stamp" && "$(cat "$stamp")" == "$sum" ]]; then
  echo "operator venv up to date"
  exit 0
fi
[[ -x .venv/bin/python ]] || "${PYTHON:-python3}" -m venv .venv
.venv/bin/python -m pip install --quiet --disable-pip-version-check -r requirements.txt
echo "$sum" > "$stamp"
echo "operator venv ready: $(.venv/bin/python -c 'import kubernetes_validate, importlib.metadata as m; print("kubernetes-validate", m.version("kubernetes-validate"))')"
