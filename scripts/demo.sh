#!/usr/bin/env bash
# README command 1: run medstream with a demo (server, simulated bedside monitors, printed links).
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/setup.sh
exec "${PYTHON:-python3}" -m medstream.cli demo "$@"
