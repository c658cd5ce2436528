#!/usr/bin/env bash
# Installs what tools/make-devset.py needs (scikit-image and PyWavelets, which ship the
# photographs) into a venv of its own in the set-up cache, once, and prints its python.
# With --face it prints instead the path of SciPy's raccoon photograph (face.dat, the `fur`
# category), taken once out of the scipy 1.11.4 wheel on PyPI (the last release that ships it)
# and checked against its sha256.
#
#   tools/setup-devset.sh            -> prints e.g. ~/.cache/vqad/venv-devset/bin/python
#   tools/setup-devset.sh --face     -> prints e.g. ~/.cache/vqad/devset-face/face.dat
set -euo pipefail
. "$(dirname "${BASH_SOURCE[0]}")/pyvenv.sh"
py="$(pyvenv_install devset "scikit-image and PyWavelets" 'scikit-image==0.26.0' 'PyWavelets==1.9.0')"
[ "${1:-}" = "--face" ] || { echo "$py"; exit 0; }

FACE_SHA256=9d8b0b4d081313e2b485748c770472e5a95ed1738146883d84c7030493e82886
cache="${VQAD_CACHE:-${XDG_CACHE_HOME:-$HOME/.cache}/vqad}"
face="$cache/devset-face/face.dat"
if [ ! -f "$face" ]; then
  cache_lock "$cache" devset-face
  if [ ! -f "$face" ]; then
    echo "setup-devset: taking face.dat out of the scipy 1.11.4 wheel (once)" >&2
    tmp="$(mktemp -d)"
    trap 'rm -rf "$tmp"' EXIT
    "$py" -m pip --disable-pip-version-check -q download --no-deps --only-binary :all: 'scipy==1.11.4' -d "$tmp" >&2
    "$py" - "$tmp" "$face.partial" "$FACE_SHA256" <<'P'
import glob, hashlib, sys, zipfile
tmp, out, want = sys.argv[1:]
wheel = glob.glob(tmp + "/scipy-1.11.4-*.whl")[0]
data = zipfile.ZipFile(wheel).read("scipy/misc/face.dat")
got = hashlib.sha256(data).hexdigest()
if got != want:
    sys.exit(f"setup-devset: face.dat from {wheel} has sha256 {got}, expected {want}")
import os
os.makedirs(os.path.dirname(out), exist_ok=True)
open(out, "wb").write(data)
P
    mv "$face.partial" "$face"
  fi
  cache_unlock
fi
echo "$face"
