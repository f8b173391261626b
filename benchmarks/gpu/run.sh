#!/usr/bin/env bash
# The GPU benchmark of jaxssl: every accelerator measurement in one call (README.md beside this).
#
#   bash benchmarks/gpu/run.sh [--dry-run] [OUT_DIR] [--stages a,b] [--train-seconds S] [--total-seconds S]
#
# OUT_DIR defaults to $OUT (the device tool's output folder). Writes results.json, summary.txt
# and log.txt there. --dry-run: every stage at tiny sizes on the CPU, same JSON fields.
# `bash benchmarks/gpu/run.sh --prepare-carry` (here, before a device call) makes benchmarks/gpu/carry.
# Python: $PYTHON, else the repo's .venv, else python3 (the GPU machine's, which has no .venv).
set -uo pipefail
HERE="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
ROOT="$(cd "$HERE/../.." && pwd)"
PY="${PYTHON:-}"
if [ -z "$PY" ]; then
  if [ -x "$ROOT/.venv/bin/python" ]; then PY="$ROOT/.venv/bin/python"; else PY=python3; fi
fi
cd "$ROOT" || exit 2
PYTHONUNBUFFERED=1 exec "$PY" "$HERE/run.py" "$@"
