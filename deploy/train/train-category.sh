#!/usr/bin/env bash
# One pod of the training Job (deploy/train/train-job.yaml): trains and tunes the category on
# line JOB_COMPLETION_INDEX of CATEGORIES_FILE into RUNS_DIR/<category>. A pod restarted after
# a failure or an eviction finds the run folder and continues from its last complete epoch
# (--resume); a finished run is left as it is.
#
#   JOB_COMPLETION_INDEX  set by Kubernetes for an Indexed Job
#   CATEGORIES_FILE       the category list (the vqad-train ConfigMap)
#   DATA_DIR, RUNS_DIR    category folders (read-only) and run folders (the vqad-runs PVC)
#   PRESET, DEVICE, SEED  training settings (default paper, cuda, 0); CONFIG an optional file
set -euo pipefail
: "${JOB_COMPLETION_INDEX:?not set: run this as a pod of an Indexed Job (or set it by hand)}"
: "${CATEGORIES_FILE:?}" "${DATA_DIR:?}" "${RUNS_DIR:?}"
category=$(grep -v '^[[:space:]]*#' "$CATEGORIES_FILE" | sed '/^[[:space:]]*$/d' | sed -n "$((JOB_COMPLETION_INDEX + 1))p" | tr -d '[:space:]')
if [ -z "$category" ]; then
  echo "train-category: index $JOB_COMPLETION_INDEX has no line in $CATEGORIES_FILE (completions larger than the list?)" >&2
  exit 1
fi
run="$RUNS_DIR/$category"
args=(train "$DATA_DIR/$category" --out "$run" --preset "${PRESET:-paper}" --device "${DEVICE:-cuda}" --seed "${SEED:-0}")
[ -n "${CONFIG:-}" ] && args+=(--config "$CONFIG")
if [ -f "$run/config.json" ]; then
  echo "train-category: $category: continuing the run in $run"
  args+=(--resume)
fi
echo "train-category: index $JOB_COMPLETION_INDEX -> $category"
vqad "${args[@]}"
[ -f "$run/tune.json" ] || vqad tune "$run"
