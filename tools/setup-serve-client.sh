#!/usr/bin/env bash
# Installs NVIDIA's Open Inference Protocol client (tritonclient, HTTP and gRPC) into a venv of
# its own in the set-up cache, once, and prints its python. The serve tests drive `vqad serve`
# with it, so the server is checked against the client real deployments use.
#
#   tools/setup-serve-client.sh      -> prints e.g. ~/.cache/vqad/venv-serve/bin/python
set -euo pipefail
. "$(dirname "${BASH_SOURCE[0]}")/pyvenv.sh"
pyvenv_install serve "tritonclient[http,grpc]" \
  --check '"$VENV/bin/python" -c "import tritonclient.http, tritonclient.grpc, numpy"' \
  'tritonclient[http,grpc]==2.73.0' 'numpy==2.3.5'
