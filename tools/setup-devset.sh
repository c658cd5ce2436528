#!/usr/bin/env bash
# Installs what tools/make-devset.py needs (scikit-image and PyWavelets, which ship the
# photographs) into a venv of its own in the set-up cache, once, and prints its python.
#
#   tools/setup-devset.sh            -> prints e.g. ~/.cache/vqad/venv-devset/bin/python
set -euo pipefail
CACHE="${VQAD_CACHE:-${XDG_CACHE_HOME:-$HOME/.cache}/vqad}"
VENV="$CACHE/venv-devset"
if [ ! -f "$VENV/.vqad-devset-v1" ]; then
  echo "setup-devset: installing scikit-image and PyWavelets into $VENV (once)" >&2
  rm -rf "$VENV"
  "${PYTHON:-python3}" -m venv "$VENV"
  "$VENV/bin/python" -m pip --disable-pip-version-check -q install 'scikit-image==0.26.0' 'PyWavelets==1.9.0' >&2
  touch "$VENV/.vqad-devset-v1"
fi
echo "$VENV/bin/python"
