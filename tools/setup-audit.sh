#!/usr/bin/env bash
# Installs the CycloneDX reference validator (PyPI's cyclonedx-python-lib with its JSON
# validation extra) into a venv of its own in the set-up cache, once, and prints its python.
# tests/audit.rs runs it to check `vqad bom` output against the official CycloneDX 1.6 schema.
#
#   tools/setup-audit.sh            -> prints e.g. ~/.cache/vqad/venv-audit/bin/python
set -euo pipefail
. "$(dirname "${BASH_SOURCE[0]}")/pyvenv.sh"
pyvenv_install audit "cyclonedx-python-lib" 'cyclonedx-python-lib[json-validation]==11.12.0'
