#!/usr/bin/env bash
# Installs PyPI's OpenVINO execution-provider plugin for ONNX Runtime (>= 1.23 plugin EP API)
# into a venv of its own in the set-up cache, once, and prints the plugin library's path, for
# `vqad … --ep-library openvino=PATH`. tests/pipeline.rs uses it: on a host without an Intel
# device the plugin registers and offers no device, and vqad must say so.
#
#   tools/setup-ep-openvino.sh      -> prints …/venv-ep-openvino/…/libonnxruntime_providers_openvino_plugin.so
set -euo pipefail
. "$(dirname "${BASH_SOURCE[0]}")/pyvenv.sh"
py=$(pyvenv_install ep-openvino "onnxruntime-ep-openvino (OpenVINO plugin EP, ~50 MB)" \
  --check 'ls "$VENV"/lib/python3*/site-packages/onnxruntime_ep_openvino/libonnxruntime_providers_openvino_plugin.so >/dev/null' \
  --no-deps 'onnxruntime-ep-openvino==1.8.1')
readlink -f "$(ls "$(dirname "$py")"/../lib/python3*/site-packages/onnxruntime_ep_openvino/libonnxruntime_providers_openvino_plugin.so | head -n1)"
