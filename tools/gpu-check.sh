#!/usr/bin/env bash
# On a machine with an NVIDIA GPU: set up the GPU libraries, train a few steps on CUDA, and
# benchmark the runtime with the CUDA and TensorRT providers, FP32 beside the FP16 and INT8
# variants (speed, roofline, where each node runs). Figures go to one file.
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
log "## precision variants on the GPU providers: FP16 and INT8 beside FP32 (speed, roofline; parity signed at packaging)"
out=bench-paper-gpu
$vqad package "$out/run" --name synth_texture --version 0.0.2 --key "$out/keys/bench.key" --out "$out/packages" \
  --precisions fp32,fp16,int8 --parity-override "2-step model: parity figures only" 2>&1 | grep -E "^(fp16|int8): d" | tee -a "$result"
for ep in cuda tensorrt; do
  log "### $ep"
  $vqad bench "$out/packages/synth_texture-0.0.2.vqad" --pubkey "$out/keys/bench.pub" --images "$out/data/synth_texture/test/good" \
    --ep "$ep" --strict-ep --trt-cache "$out/trt" --precision fp32,fp16,int8 --batches 1,8 --count 32 --naive false 2>&1 | tee -a "$result"
  $vqad compat "$out/packages/synth_texture-0.0.2.vqad" --pubkey "$out/keys/bench.pub" --ep "$ep" --precision int8 2>&1 | tee -a "$result"
done
log "done; figures in $result"
