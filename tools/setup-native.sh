#!/usr/bin/env bash
# Installs the native libraries vqad links against (libtorch for training, ONNX Runtime for
# inference) and the Python reference tools the tests compare against, from PyPI alone,
# into a cache outside the clone. Idempotent: a second run only checks and prints.
#
#   tools/setup-native.sh [--gpu] [--print-env]
#
# Cache: $VQAD_CACHE, else ${XDG_CACHE_HOME:-$HOME/.cache}/vqad.
# --gpu        full CUDA torch and onnxruntime-gpu (CUDA + TensorRT providers) instead of CPU.
# --print-env  only print the environment lines (LIBTORCH=..., VQAD_ORT_LIB=...) for eval.
set -euo pipefail

TORCH_VERSION=2.13.0
ORT_VERSION=1.31.1
GPU=0
PRINT_ENV=0
for a in "$@"; do
  case "$a" in
    --gpu) GPU=1 ;;
    --print-env) PRINT_ENV=1 ;;
    -h|--help) sed -n 2,10p "$0"; exit 0 ;;
    *) echo "setup-native: unknown argument '$a' (try --help)" >&2; exit 2 ;;
  esac
done

CACHE="${VQAD_CACHE:-${XDG_CACHE_HOME:-$HOME/.cache}/vqad}"
if [ "$GPU" = 1 ]; then FLAVOUR=gpu; else FLAVOUR=cpu; fi
VENV="$CACHE/venv-$FLAVOUR"
STAMP="$VENV/.vqad-setup-v1"
PY="${PYTHON:-python3}"

say() { [ "$PRINT_ENV" = 1 ] || echo "setup-native: $*" >&2; }

# Installers started at once (`make demo` beside `make test`, two clones sharing the cache)
# take turns; the second re-checks the stamp under the lock and reuses the first one's install.
. "$(dirname "${BASH_SOURCE[0]}")/cache-lock.sh"
[ -f "$STAMP" ] || cache_lock "$CACHE" "native-$FLAVOUR"

if [ ! -f "$STAMP" ]; then
  say "installing into $VENV (torch $TORCH_VERSION, onnxruntime $ORT_VERSION, $FLAVOUR); this happens once"
  start=$(date +%s)
  rm -rf "$VENV.partial"
  "$PY" -m venv "$VENV.partial"
  VPIP=("$VENV.partial/bin/python" -m pip --disable-pip-version-check -q)
  "${VPIP[@]}" install --upgrade pip >&2
  if [ "$GPU" = 1 ]; then
    "${VPIP[@]}" install "torch==$TORCH_VERSION" "onnxruntime-gpu==$ORT_VERSION" >&2
  else
    # libtorch_cpu.so needs libcudart and libcupti even on CPU; it finds them by its RPATH.
    "${VPIP[@]}" install --no-deps "torch==$TORCH_VERSION" \
      'nvidia-cuda-runtime==13.0.96.*' 'nvidia-cuda-cupti==13.0.85.*' >&2
    "${VPIP[@]}" install "onnxruntime==$ORT_VERSION" >&2
  fi
  # Independent references used by the test suite (never by vqad itself).
  "${VPIP[@]}" install 'numpy<3' 'onnx==1.19.1' 'opencv-python-headless==4.12.0.88' \
    'model-signing==1.1.1' 'pyopenssl==25.3.0' 'jsonschema==4.25.1' >&2
  # venvs hard-code their path; the rename keeps a half-finished install from looking done.
  rm -rf "$VENV"
  mv "$VENV.partial" "$VENV"
  # Re-point the venv at its final location.
  sed -i "s#$VENV.partial#$VENV#g" "$VENV"/bin/* "$VENV/pyvenv.cfg" 2>/dev/null || true
  touch "$STAMP"
  say "done in $(( $(date +%s) - start ))s"
else
  say "already installed in $VENV (delete it to reinstall)"
fi
cache_unlock

SITE=$("$VENV/bin/python" -c 'import sysconfig; print(sysconfig.get_paths()["purelib"])')
LIBTORCH="$SITE/torch"
ORT_LIB=$(ls "$SITE"/onnxruntime/capi/libonnxruntime.so.* 2>/dev/null | head -n1)
[ -f "$LIBTORCH/lib/libtorch_cpu.so" ] || { echo "setup-native: libtorch missing under $LIBTORCH; delete $VENV and rerun" >&2; exit 1; }
[ -n "$ORT_LIB" ] || { echo "setup-native: libonnxruntime missing under $SITE/onnxruntime/capi; delete $VENV and rerun" >&2; exit 1; }

if [ "$PRINT_ENV" = 1 ]; then
  echo "LIBTORCH=$LIBTORCH"
  echo "VQAD_ORT_LIB=$ORT_LIB"
  echo "VQAD_PYTHON=$VENV/bin/python"
else
  say "libtorch:     $LIBTORCH"
  say "onnxruntime:  $ORT_LIB"
  say "python refs:  $VENV/bin/python"
fi
