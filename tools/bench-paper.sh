#!/usr/bin/env bash
# Runtime benchmark at the paper's shape (256², 32×32 grid, K = 512) on this machine.
# A paper-shaped model is trained for two optimiser steps only: speed and memory do not
# depend on how well it is trained, but the number of resampled positions does, so the
# prior-pass figures of a real trained model are those of `vqad bench` on its own package.
#
#   bash tools/bench-paper.sh [OUT_DIR] [extra vqad bench flags, e.g. --ep cuda --strict-ep]
set -euo pipefail
here="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
out="${1:-bench-paper}"; shift || true
vqad="${VQAD:-$here/../target/release/vqad}"
[ -x "$vqad" ] || { echo "bench-paper: build first (make build) or set VQAD=/path/to/vqad" >&2; exit 1; }
mkdir -p "$out"
cat > "$out/paper-2steps.toml" <<'T'
[train]
vqvae_epochs = 1
prior_epochs = 1
max_steps_per_epoch = 2
vqvae_batch = 4
prior_batch = 4
augment = false
T
[ -d "$out/data/synth_texture" ] || "$vqad" synth --out "$out/data" --category synth_texture --kind texture --size 256 --train 12 --test-good 4 --test-bad 1
[ -f "$out/run/prior.json" ] || "$vqad" train "$out/data/synth_texture" --out "$out/run" --preset paper --config "$out/paper-2steps.toml" --device "${DEVICE:-auto}"
[ -f "$out/run/tune.json" ] || "$vqad" tune "$out/run" --etas 0.0005
[ -f "$out/keys/bench.key" ] || { mkdir -p "$out/keys"; "$vqad" keygen --out "$out/keys/bench"; }
pkg="$out/packages/synth_texture-0.0.1.vqad"
[ -f "$pkg" ] || "$vqad" package "$out/run" --name synth_texture --version 0.0.1 --key "$out/keys/bench.key" --out "$out/packages"
# Extra flags replace these defaults (pass --count/--batches/--naive-count yourself then).
[ $# -gt 0 ] || set -- --count 8 --batches 1,8 --naive-count 1
"$vqad" bench "$pkg" --pubkey "$out/keys/bench.pub" --images "$out/data/synth_texture/test/good" "$@"
