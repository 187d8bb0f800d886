#!/usr/bin/env bash
# CI's compat run (scripts/test.sh runs it after the main suite): the test suite on the oldest supported torch and
# megatron-core, so both ends of setup.cfg's ranges are tested (requirements/lock.txt is the newest end). Sets up
# .venv-compat (Python 3.12) from requirements/lock-compat.txt (torch 2.11.0, megatron-core 0.19.0:
# requirements/compat.in; regenerate with scripts/lock.sh) with scripts/setup_venv.sh, which prints the versions,
# then runs `pytest tests`, or `pytest <arguments>` when given.
set -euo pipefail
cd "$(dirname "$0")/.."
venv=.venv-compat
bash scripts/setup_venv.sh "$venv" requirements/lock-compat.txt
if [ "$#" -eq 0 ]; then
  set -- tests
fi
exec "$venv/bin/python" -m pytest -q -p no:cacheprovider "$@"
