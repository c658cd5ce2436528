#!/usr/bin/env bash
# Installs NVIDIA's Open Inference Protocol client (tritonclient, HTTP and gRPC) into a venv of
# its own in the set-up cache, once, and prints its python. The serve tests drive `vqad serve`
# with it, so the server is checked against the client real deployments use.
#
#   tools/setup-serve-client.sh      -> prints e.g. ~/.cache/vqad/venv-serve/bin/python
#
# Installs into VENV.partial and renames it when complete, so an interrupted run never leaves a
# venv that looks installed.
set -euo pipefail
CACHE="${VQAD_CACHE:-${XDG_CACHE_HOME:-$HOME/.cache}/vqad}"
VENV="$CACHE/venv-serve"
STAMP="$VENV/.vqad-serve-v1"
if [ ! -f "$STAMP" ]; then
  echo "setup-serve-client: installing tritonclient[http,grpc] into $VENV (once)" >&2
  mkdir -p "$CACHE"
  rm -rf "$VENV.partial"
  "${PYTHON:-python3}" -m venv "$VENV.partial"
  "$VENV.partial/bin/python" -m pip --disable-pip-version-check -q install \
    'tritonclient[http,grpc]==2.73.0' 'numpy==2.3.5' >&2
  # Only `bin/python -m ...` is used, which does not depend on the folder's name.
  rm -rf "$VENV"
  mv "$VENV.partial" "$VENV"
  "$VENV/bin/python" -c 'import tritonclient.http, tritonclient.grpc, numpy' >&2
  touch "$STAMP"
fi
echo "$VENV/bin/python"
