#!/usr/bin/env bash
# On a machine with an NVIDIA GPU: set up the GPU libraries, train a few steps on CUDA, and
# benchmark the runtime with the CUDA and TensorRT providers. Figures go to one file.
# Sized to finish in about 10 minutes (most of it the one-time set-up and build).
#
#   bash tools/gpu-check.sh [RESULT_FILE]
set -uo pipefail
here="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
cd "$here"
result="${1:-gpu-check.txt}"
: > "$result"
log() { echo "$*" | tee -a "$result"; }
log "# vqad GPU check, $(date -u +%FT%TZ)"
nvidia-smi --query-gpu=name,driver_version,memory.total --format=csv,noheader 2>&1 | tee -a "$result"
export VQAD_SETUP_FLAGS=--gpu
bash tools/setup-native.sh --gpu || { log "set-up failed"; exit 1; }
eval "$(bash tools/setup-native.sh --gpu --print-env)"
export LIBTORCH VQAD_ORT_LIB VQAD_PYTHON
t=$(date +%s)
cargo build --release 2>&1 | tail -2
log "build: $(( $(date +%s) - t ))s"
vqad=target/release/vqad

log "## training throughput (libtorch CUDA)"
$vqad bench-train --presets tiny,paper --devices cuda,cpu --steps 5 --max-batch 32 2>&1 | tee -a "$result"

log "## runtime, paper shape (256², 32×32, K=512), CUDA provider"
export DEVICE=cuda
bash tools/bench-paper.sh bench-paper-gpu --ep cuda --strict-ep --batches 1,8,32 --count 64 --naive-count 1 2>&1 | tee -a "$result"
log "## runtime, paper shape, TensorRT provider (engine cache in bench-paper-gpu/trt)"
bash tools/bench-paper.sh bench-paper-gpu --ep tensorrt --strict-ep --trt-cache bench-paper-gpu/trt --batches 1,8,32 --count 64 --naive false 2>&1 | tee -a "$result"
log "done; figures in $result"
