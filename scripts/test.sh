#!/usr/bin/env bash
# README command 2: set up and run the whole test suite.
# WebRTC and browser tests must not reach any other host: as root, the suite runs inside a
# network namespace that has only loopback (unshare --net), so nothing can leave by construction.
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/setup.sh --test
PY=${PYTHON:-python3}
mkdir -p tests/artifacts
if [ "$(id -u)" = 0 ] && unshare --net true 2>/dev/null; then
  # the arguments go through as "$@" of the inner shell: quoted ones (-k "a or b") stay whole
  exec unshare --net -- sh -c 'ip link set lo up && exec "$0" -m pytest -q -p no:cacheprovider "$@"' "$PY" "$@"
else
  echo "test: not root or no unshare: running in the host network namespace (servers bind 127.0.0.1)" >&2
  exec $PY -m pytest -q -p no:cacheprovider "$@"
fi
