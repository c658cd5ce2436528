# Sourced by the installers (pyvenv.sh, setup-native.sh): one exclusive lock per thing installed
# into the set-up cache, so that installers started at once (parallel tests, `make demo` beside
# `make test`) never build into the same folder; the second waits, then reuses the first one's
# install.
#
#   cache_lock CACHE NAME    take $CACHE/.lock-NAME (waits up to $VQAD_LOCK_WAIT s, default 1800)
#   cache_unlock             release it (exiting releases it too)
#
# The lock is flock(2) on an open file: the kernel drops it when its holder dies, so a crashed
# or killed installer never leaves a lock that blocks the next one. The file itself stays; it
# holds nothing.
cache_lock() {
  local cache="$1" name="$2"
  mkdir -p "$cache"
  CACHE_LOCK_FILE="$cache/.lock-$name"
  exec {CACHE_LOCK_FD}>>"$CACHE_LOCK_FILE"
  if ! flock -n "$CACHE_LOCK_FD"; then
    echo "setup-$name: another installer holds $CACHE_LOCK_FILE; waiting for it" >&2
    if ! flock -w "${VQAD_LOCK_WAIT:-1800}" "$CACHE_LOCK_FD"; then
      echo "setup-$name: still locked after ${VQAD_LOCK_WAIT:-1800}s by a live installer ($CACHE_LOCK_FILE); is one stuck? (fuser $CACHE_LOCK_FILE)" >&2
      return 1
    fi
  fi
}

cache_unlock() {
  if [ -n "${CACHE_LOCK_FD:-}" ]; then
    flock -u "$CACHE_LOCK_FD"
    exec {CACHE_LOCK_FD}>&-
    unset CACHE_LOCK_FD
  fi
}
