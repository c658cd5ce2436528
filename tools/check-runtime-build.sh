#!/usr/bin/env bash
# The inference-host build: `--no-default-features` must build the runtime without libtorch.
# Builds into its own target folder (so the full build is not replaced) and checks with ldd.
set -euo pipefail
cd "$(dirname "$0")/.."
target="${CARGO_TARGET_DIR:-target}/runtime-only"
env -u LIBTORCH cargo build --release --no-default-features --bin vqad --target-dir "$target" --quiet
bin="$target/release/vqad"
# Match the library names only (first ldd column): a load address such as 0x…7f10339c1000
# contains "c10" by chance, which made this check fail at random.
if ldd "$bin" | awk '{print $1}' | grep -E '^lib(torch|c10)'; then
  echo "runtime-only build: FAILED — $bin links libtorch" >&2
  exit 1
fi
"$bin" --version >/dev/null
"$bin" verify --help >/dev/null
"$bin" serve --help >/dev/null   # the inference server is part of the runtime-only build
if "$bin" train --help >/dev/null 2>&1; then
  echo "runtime-only build: FAILED — it still has the train command" >&2
  exit 1
fi
echo "runtime-only build: ok ($bin links no libtorch: $(ldd "$bin" | wc -l) libraries)"
