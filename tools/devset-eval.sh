#!/usr/bin/env bash
# The real-photo benchmark (issue 11): builds the development set from photographs shipped in
# PyPI packages (tools/make-devset.py), trains the `small` preset on each category on the CPU,
# tunes, packages, and runs `vqad eval --ablation` over all of them. Prints the per-category
# table (default vs both baselines) and the time each training took. About 8–9 minutes of
# training per category on 2 otherwise idle CPU cores, and about 4 minutes of
# evaluation with the ablations: about 75 minutes for the six default categories (run
# nothing else meanwhile: two libtorch processes on 2 cores slow each other down many times);
# finished steps are skipped on a rerun.
#
#   bash tools/devset-eval.sh [OUT_DIR] [CATEGORIES]      (default: devset-eval ihc,moon,aero,coins,hubble,fur)
#
# Environment:
#   PRESET=small             training preset
#   VQAD_TRAIN_FLAGS="..."   extra `vqad train` flags, e.g. "--config my.toml"
#   VARIANT=name             package and evaluate the trained runs once more under this name
#   TUNE_FLAGS="..."         `vqad tune` flags of that variant, e.g.
#                            "--score restored_input --restore nearest_likely"
#   EVAL_VARIANTS=a,b        only these ablation variants (`vqad eval --variants`)
#   ALLOW_HELD_OUT=1         let brick,gravel,grass through: for the acceptance check only
#
# Extra textures, not chosen on: `bash tools/devset-eval.sh OUT hubble,retina`.
set -euo pipefail
here="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
out="${1:-devset-eval}"
cats="${2:-ihc,moon,aero,coins,hubble,fur}"
preset="${PRESET:-small}"
suffix="${VARIANT:+-$VARIANT}"
vqad="${VQAD:-$here/../target/release/vqad}"
[ -x "$vqad" ] || { echo "devset-eval: build first (make build) or set VQAD=/path/to/vqad" >&2; exit 1; }
py="$(bash "$here/setup-devset.sh")"
export VQAD_DEVSET_FACE="$(bash "$here/setup-devset.sh" --face)"
mkdir -p "$out/keys" "$out/times"
"$py" "$here/make-devset.py" "$out/data" --categories "$cats" ${ALLOW_HELD_OUT:+--allow-held-out}
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
  pkg="$out/packages$suffix/$c-1.0.0.vqad"
  if [ ! -f "$pkg" ]; then
    start=$(date +%s)
    # shellcheck disable=SC2086
    "$vqad" tune "$run" ${TUNE_FLAGS:-}
    echo $(( $(date +%s) - start )) > "$out/times/$c.tune$suffix"
    "$vqad" package "$run" --name "$c" --version 1.0.0 --key "$out/keys/dev.key" --out "$out/packages$suffix"
  fi
done
mkdir -p "$out/evaldata"
for c in ${cats//,/ }; do ln -sfn "$(cd "$out/data/$c" && pwd)" "$out/evaldata/$c"; done
rm -rf "$out/eval$suffix"
"$vqad" eval "$out/packages$suffix" --pubkey "$out/keys/dev.pub" "$out/evaldata" --out "$out/eval$suffix" --ablation --ep cpu ${EVAL_VARIANTS:+--variants "$EVAL_VARIANTS"}
"$py" "$here/devset-table.py" "$out" "eval$suffix"
