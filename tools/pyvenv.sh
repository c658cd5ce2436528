# Sourced by the tools/setup-*.sh scripts: one way to install pinned PyPI packages into a venv
# of their own in the set-up cache, once, and print its python.
#
#   pyvenv_install NAME "what, for the message" [--check 'shell command'] PACKAGE==VERSION ...
#
# The venv is ${VQAD_CACHE:-~/.cache/vqad}/venv-NAME. It is built beside its final folder and
# renamed when complete, and a stamp is written only after the optional check passed, so an
# interrupted or broken install never looks done. `$VENV` is set for the check command.
# Installers of the same venv started at once take turns (cache-lock.sh): the second waits for
# the first, sees its stamp, and prints the same python.
. "$(dirname "${BASH_SOURCE[0]}")/cache-lock.sh"

pyvenv_install() {
  local name="$1" what="$2"
  shift 2
  local check=""
  if [ "${1:-}" = "--check" ]; then
    check="$2"
    shift 2
  fi
  local cache="${VQAD_CACHE:-${XDG_CACHE_HOME:-$HOME/.cache}/vqad}"
  VENV="$cache/venv-$name"
  local stamp="$VENV/.vqad-$name-v1"
  if [ ! -f "$stamp" ]; then
    cache_lock "$cache" "$name" || return 1
  fi
  # Checked again under the lock: whoever held it may have finished the install meanwhile.
  if [ ! -f "$stamp" ]; then
    echo "setup-$name: installing $what into $VENV (once)" >&2
    rm -rf "$VENV.partial"
    "${PYTHON:-python3}" -m venv "$VENV.partial"
    "$VENV.partial/bin/python" -m pip --disable-pip-version-check -q install "$@" >&2
    rm -rf "$VENV"
    mv "$VENV.partial" "$VENV"
    # A venv hard-codes its path in its text scripts (pip, activate, console entry points);
    # binaries shipped in wheels name no path (grep -I skips them).
    grep -rlI -- "$VENV.partial" "$VENV/bin" "$VENV/pyvenv.cfg" 2>/dev/null \
      | xargs -r sed -i "s#$VENV.partial#$VENV#g"
    if [ -n "$check" ] && ! (eval "$check") >&2; then
      echo "setup-$name: the check failed ($check); delete $VENV and rerun" >&2
      cache_unlock
      return 1
    fi
    touch "$stamp"
  fi
  cache_unlock
  echo "$VENV/bin/python"
}
