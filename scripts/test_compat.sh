#!/usr/bin/env bash
# CI's compat run (scripts/test.sh runs it after the main suite): the test suite on the oldest supported torch and
# megatron-core, so both ends of setup.cfg's ranges are tested (requirements/lock.txt is the newest end). Sets up
# .venv-compat (Python 3.12) from requirements/lock-compat.txt (torch 2.11.0, megatron-core 0.19.0:
# requirements/compat.in; regenerate with scripts/lock.sh) - idempotent like scripts/setup_venv.sh - prints the
# versions, then runs `pytest tests`, or `pytest <arguments>` when given.
set -euo pipefail
cd "$(dirname "$0")/.."
venv=.venv-compat
lock=requirements/lock-compat.txt
if [ ! -x "$venv/bin/python" ]; then
  "$(bash scripts/find_python.sh)" -m venv "$venv"
fi
"$venv/bin/python" -m pip install -q --upgrade pip
"$venv/bin/python" -m pip install -q -c "$lock" -e '.[test,hf]'
"$venv/bin/python" scripts/check_lock.py "$lock"
if [ "$#" -eq 0 ]; then
  set -- tests
fi
exec "$venv/bin/python" -m pytest -q -p no:cacheprovider "$@"
