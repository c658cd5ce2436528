#!/usr/bin/env bash
# Installs what tools/make-devset.py needs (scikit-image and PyWavelets, which ship the
# photographs) into a venv of its own in the set-up cache, once, and prints its python.
#
#   tools/setup-devset.sh            -> prints e.g. ~/.cache/vqad/venv-devset/bin/python
set -euo pipefail
. "$(dirname "${BASH_SOURCE[0]}")/pyvenv.sh"
pyvenv_install devset "scikit-image and PyWavelets" 'scikit-image==0.26.0' 'PyWavelets==1.9.0'
