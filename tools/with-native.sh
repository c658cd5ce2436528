#!/usr/bin/env bash
# Runs a command with the native-library environment (LIBTORCH, VQAD_ORT_LIB, VQAD_PYTHON)
# of the set-up cache, installing it first if needed.  Pass --gpu via VQAD_SETUP_FLAGS=--gpu.
set -euo pipefail
here="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
bash "$here/setup-native.sh" ${VQAD_SETUP_FLAGS:-}
eval "$(bash "$here/setup-native.sh" --print-env ${VQAD_SETUP_FLAGS:-})"
export LIBTORCH VQAD_ORT_LIB VQAD_PYTHON
if ! command -v cargo >/dev/null 2>&1; then
  echo "with-native: cargo not found; install Rust (https://rustup.rs) first" >&2
  exit 1
fi
exec "$@"
