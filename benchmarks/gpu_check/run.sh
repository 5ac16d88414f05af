#!/usr/bin/env bash
# The one command a lent GPU machine runs (offline, on its own torch / transformers / accelerate /
# peft), after benchmarks/gpu_check/prepare.sh filled .whl and .gpu_check here:
#   bash benchmarks/gpu_check/run.sh          # < 5 minutes; exit 0 only when it measured
set -uo pipefail
cd "$(dirname "$0")/../.."
PY="${PYTHON:-python3}"
if ! "$PY" -c "import trl" 2>/dev/null && compgen -G ".whl/*.whl" > /dev/null; then
  "$PY" -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --upgrade --target /tmp/resd-site .whl/*.whl \
    || { echo "gpu_check: installing the carried wheels failed"; exit 3; }
  export PYTHONPATH="/tmp/resd-site:${PYTHONPATH:-}"
fi
export PYTHONPATH="$PWD/src:$PWD/tests:${PYTHONPATH:-}"  # tests/: the toy environment the steps score with
export PYTHONUNBUFFERED=1
timeout 280 "$PY" benchmarks/gpu_check/check.py "$@"
