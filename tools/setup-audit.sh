#!/usr/bin/env bash
# Installs the CycloneDX reference validator (PyPI's cyclonedx-python-lib with its JSON
# validation extra) into a venv of its own in the set-up cache, once, and prints its python.
# tests/audit.rs runs it to check `vqad bom` output against the official CycloneDX 1.6 schema.
#
#   tools/setup-audit.sh            -> prints e.g. ~/.cache/vqad/venv-audit/bin/python
set -euo pipefail
CACHE="${VQAD_CACHE:-${XDG_CACHE_HOME:-$HOME/.cache}/vqad}"
VENV="$CACHE/venv-audit"
STAMP=".vqad-audit-v1"
if [ ! -f "$VENV/$STAMP" ]; then
  echo "setup-audit: installing cyclonedx-python-lib into $VENV (once)" >&2
  mkdir -p "$CACHE"
  # Build beside the final folder, then rename: an interrupted install never looks complete.
  rm -rf "$VENV.partial"
  "${PYTHON:-python3}" -m venv "$VENV.partial"
  "$VENV.partial/bin/python" -m pip --disable-pip-version-check -q install \
    'cyclonedx-python-lib[json-validation]==11.12.0' >&2
  touch "$VENV.partial/$STAMP"
  rm -rf "$VENV"
  mv "$VENV.partial" "$VENV"
fi
echo "$VENV/bin/python"
