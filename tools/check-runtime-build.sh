#!/usr/bin/env bash
# The inference-host build: `vqad` must run without libtorch. It links only the `vqad` library
# (the training stack is the `vqad-train` crate and executable), so the default build's `vqad`
# already is the runtime-only one; this checks it with ldd, and checks with `cargo tree` that
# `--no-default-features` leaves libtorch out of the build altogether (what deploy/docker builds).
set -euo pipefail
cd "$(dirname "$0")/.."
bin="${CARGO_TARGET_DIR:-target}/release/vqad"
[ -x "$bin" ] || { echo "check-runtime-build: build first ($bin missing)" >&2; exit 1; }
# Match the library names only (first ldd column): a load address such as 0x…7f10339c1000
# contains "c10" by chance, which made this check fail at random.
if ldd "$bin" | awk '{print $1}' | grep -E '^lib(torch|c10)'; then
  echo "runtime build: FAILED — $bin links libtorch" >&2
  exit 1
fi
if cargo tree --quiet --offline -p vqad-cli --no-default-features -e normal,build --prefix none | grep -E '^(tch|torch-sys) '; then
  echo "runtime build: FAILED — \`--no-default-features\` still builds libtorch's bindings" >&2
  exit 1
fi
"$bin" --version >/dev/null
"$bin" verify --help >/dev/null
"$bin" serve --help >/dev/null   # the inference server is part of the runtime build
echo "runtime build: ok ($bin links no libtorch: $(ldd "$bin" | wc -l) libraries; --no-default-features builds no tch)"
