#!/usr/bin/env bash
# Installs what medstream needs on a fresh Debian machine: system packages (as root, when
# missing) and the Python package with its dependencies. Safe to run again.
#   scripts/setup.sh          runtime only (server + demo)
#   scripts/setup.sh --test   runtime + test tools (Chromium, ffmpeg, pytest, playwright)
set -euo pipefail
cd "$(dirname "$0")/.."

want_test=0
[ "${1:-}" = "--test" ] && want_test=1

need=()
command -v ip >/dev/null 2>&1 || need+=(iproute2)
command -v unshare >/dev/null 2>&1 || need+=(util-linux)
# Chinese names on the pages and in ECG report PDFs
[ -d /usr/share/fonts/opentype/noto ] && ls /usr/share/fonts/opentype/noto/NotoSansCJK* >/dev/null 2>&1 || need+=(fonts-noto-cjk)
if [ "$want_test" = 1 ]; then
  command -v chromium >/dev/null 2>&1 || need+=(chromium)
  command -v ffprobe >/dev/null 2>&1 || need+=(ffmpeg)
  command -v turnserver >/dev/null 2>&1 || need+=(coturn)  # tests/medstream/test_turn.py: media through TURN only
  command -v redis-server >/dev/null 2>&1 || need+=(redis-server)  # tests/cluster/: a real Redis per test
fi
if [ "${#need[@]}" -gt 0 ]; then
  if [ "$(id -u)" = 0 ] && command -v apt-get >/dev/null 2>&1; then
    echo "setup: installing Debian packages: ${need[*]}"
    apt-get update -qq
    DEBIAN_FRONTEND=noninteractive apt-get install -y -qq "${need[@]}" >/dev/null
  else
    echo "setup: please install these Debian packages: ${need[*]}" >&2
  fi
fi

PY=${PYTHON:-python3}
extra=""
[ "$want_test" = 1 ] && extra="[test]"
if ! $PY -c "import medstream, aiortc, aiohttp, av, websockets, numpy, scipy, neurokit2, wfdb, msgpack, jwt, pydicom, matplotlib, prometheus_client, pyedflib, cryptography, redis" 2>/dev/null \
   || { [ "$want_test" = 1 ] && ! $PY -c "import pytest, pytest_asyncio, pytest_timeout, playwright, ruff, mypy, importlinter, cryptography, openapi_spec_validator" 2>/dev/null; }; then
  echo "setup: installing Python dependencies"
  $PY -m pip install -q --disable-pip-version-check --root-user-action=ignore -e ".${extra}"
else
  $PY -m pip install -q --disable-pip-version-check --root-user-action=ignore --no-deps -e . >/dev/null
fi
