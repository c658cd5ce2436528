#!/usr/bin/env bash
# The evaluation issue's experiment: two synthetic categories (a texture and an object), the
# tiny preset on the CPU, one package each in a registry, one `vqad eval --ablation` over both
# (per-category rows, mean row, Fig. 8 ablations). Takes a few minutes on 2 cores.
#
#   bash tools/eval-synth.sh [OUT_DIR]
set -euo pipefail
here="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
out="${1:-eval-synth}"
vqad="${VQAD:-$here/../target/release/vqad}"
[ -x "$vqad" ] || { echo "eval-synth: build first (make build) or set VQAD=/path/to/vqad" >&2; exit 1; }
mkdir -p "$out/keys"
[ -f "$out/keys/k.key" ] || "$vqad" keygen --out "$out/keys/k"
for spec in "synth_texture texture 1" "synth_object object 2"; do
  set -- $spec
  [ -d "$out/data/$1" ] || "$vqad" synth --out "$out/data" --category "$1" --kind "$2" --size 64 --seed "$3" --train 256 --test-good 10 --test-bad 4
  [ -f "$out/runs/$1/prior.json" ] || "$vqad" train "$out/data/$1" --out "$out/runs/$1" --device cpu
  [ -f "$out/packages/$1-1.0.0.vqad" ] || "$vqad" package "$out/runs/$1" --name "$1" --version 1.0.0 --key "$out/keys/k.key" --out "$out/packages"
  [ -f "$out/registry/$1/1.0.0/$1-1.0.0.vqad" ] || "$vqad" publish "$out/packages/$1-1.0.0.vqad" --registry "$out/registry" --pubkey "$out/keys/k.pub"
done
"$vqad" eval "$out/registry" --pubkey "$out/keys/k.pub" "$out/data" --out "$out/eval" --ablation --ep cpu
