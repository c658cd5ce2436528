#!/usr/bin/env bash
# Rebuild-and-compare on the full tiny preset: generate a synthetic category, train and package
# it, then run `vqad audit --rebuild` twice and print each run's verdict and time. The figures in
# the README ("Audit") come from this script.
#
#   tools/rebuild-check.sh [OUT_DIR]         # default: a temporary folder
#   OMP_NUM_THREADS=2 tools/rebuild-check.sh # the settings it trains with are recorded and reused
set -euo pipefail
root="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
vqad="${VQAD:-${CARGO_TARGET_DIR:-$root/target}/release/vqad}"
out="${1:-$(mktemp -d)}"
mkdir -p "$out"
cd "$out"
echo "rebuild-check in $out with $vqad (OMP_NUM_THREADS=${OMP_NUM_THREADS:-unset})"
"$vqad" synth --category synth_texture --size 64 --train 100 --test-good 4 --test-bad 4 --out data >/dev/null
"$vqad" keygen --out key >/dev/null
start=$(date +%s.%N)
"$vqad" train data/synth_texture --out run --preset tiny --device cpu --seed 7 2>/dev/null | tail -2
"$vqad" package run --name synth_texture --version 1.0.0 --key key.key --out pkg 2>/dev/null
echo "trained and packaged in $(echo "$(date +%s.%N) - $start" | bc) s"
for i in 1 2; do
  start=$(date +%s.%N)
  set +e
  "$vqad" audit pkg/synth_texture-1.0.0.vqad --pubkey key.pub --data data/synth_texture --rebuild --rebuild-dir "rebuild$i" \
    | grep -E 'rebuild|result:'
  rc=$?
  set -e
  echo "audit --rebuild run $i: exit ${PIPESTATUS[0]}, $(echo "$(date +%s.%N) - $start" | bc) s"
done
sha256sum rebuild1/export/*.onnx rebuild1/export/codebook.npy rebuild2/export/*.onnx rebuild2/export/codebook.npy
