# Source this to build by hand: sets LIBTORCH, VQAD_ORT_LIB and VQAD_PYTHON from the set-up
# cache (running the set-up first if needed). `make` does the same for you.
eval "$(bash "$(dirname "${BASH_SOURCE[0]}")/setup-native.sh" --print-env ${VQAD_SETUP_FLAGS:-})"
export LIBTORCH VQAD_ORT_LIB VQAD_PYTHON
