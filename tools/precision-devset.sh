#!/usr/bin/env bash
# Issue 24's acceptance on the real-photo development set: for each category's trained `small`
# run (from tools/devset-eval.sh), packages FP32 + FP16 + INT8 (parity measured and signed; a
# variant outside its bound is packaged under a recorded override so its figures can be shown),
# benchmarks the precisions side by side in one `vqad bench` run, evaluates each precision on the
# category's test images, and prints the table (tools/precision-table.py): images/s and speed-up,
# roofline share, test-set decision agreement and mask IoU against FP32, AUROC/AUPRO differences.
#
#   bash tools/precision-devset.sh DEVSET_DIR [OUT_DIR] [CATEGORIES]
#     DEVSET_DIR  the OUT_DIR of tools/devset-eval.sh (runs/, evaldata/, keys/)
#     OUT_DIR     default DEVSET_DIR/precision;  CATEGORIES default ihc,moon,aero,coins
#     EVAL_PRECISIONS=fp32,int8   evaluate only these (the table reads eval-<p>/ of all three)
#
# About 4 minutes per category on 2 cores. Needs `make build` first (or VQAD=/path/to/vqad).
set -euo pipefail
dev="${1:?usage: precision-devset.sh DEVSET_DIR [OUT_DIR] [CATEGORIES]}"
out="${2:-$dev/precision}"
cats="${3:-ihc,moon,aero,coins}"
here="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
vqad="${VQAD:-$here/../target/release/vqad}"
[ -x "$vqad" ] || { echo "precision-devset: build first (make build) or set VQAD=/path/to/vqad" >&2; exit 1; }
eval "$(bash "$here/setup-native.sh" --print-env)"   # VQAD_PYTHON: numpy and OpenCV for the table
py="$VQAD_PYTHON"
mkdir -p "$out/packages" "$out/bench"
for c in ${cats//,/ }; do
  pkg="$out/packages/$c-1.1.0.vqad"
  if [ ! -f "$pkg" ]; then
    echo "== $c: packaging fp32, fp16, int8" >&2
    "$vqad" package "$dev/runs/$c" --name "$c" --version 1.1.0 --key "$dev/keys/dev.key" --out "$out/packages" \
      --precisions fp32,fp16,int8 --parity-override "measured by tools/precision-devset.sh" 2>&1 | grep -E "^(fp16|int8):" | grep -v "comparing\|detecting" >&2
  fi
  [ -s "$out/bench/$c.json" ] && continue   # delete it to measure again
  echo "== $c: bench fp32, int8, fp16 side by side" >&2
  "$vqad" bench "$pkg" --pubkey "$dev/keys/dev.pub" --ep cpu --precision fp32,int8,fp16 --batches 1 --count "${BENCH_COUNT:-16}" \
    --naive false --images "$dev/evaldata/$c/test" --json > "$out/bench/$c.json"
done
# Only these categories' test sets (the dev set's folder may hold more).
rm -rf "$out/evaldata" && mkdir -p "$out/evaldata"
for c in ${cats//,/ }; do ln -s "$(cd "$dev/evaldata/$c" && pwd)" "$out/evaldata/$c"; done
evals="${EVAL_PRECISIONS:-fp32,int8,fp16}"   # e.g. fp32,int8 to reuse an earlier eval-fp16/
for p in ${evals//,/ }; do
  echo "== evaluating the $p graphs on the test images" >&2
  rm -rf "$out/eval-$p"
  "$vqad" eval "$out/packages" --pubkey "$dev/keys/dev.pub" "$out/evaldata" --out "$out/eval-$p" --ep cpu --precision "$p" >/dev/null
done
"$py" "$here/precision-table.py" "$out" "$cats"
