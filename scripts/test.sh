#!/usr/bin/env bash
# The test command: set up .venv from the lock, lint with ruff (pyproject.toml's [tool.ruff]; a lint error fails the
# command but the tests still run), run the whole suite on the CPU, then run the Hugging Face tests (tests/hf,
# tests/convert) again with the oldest supported transformers (scripts/setup_oldest_hf.sh), so both ends of setup.cfg's
# transformers range are tested, then the whole suite on the oldest supported torch and megatron-core
# (scripts/test_compat.sh: .venv-compat from requirements/lock-compat.txt), so both ends of those ranges are tested.
# With arguments, only `pytest <arguments>` runs (in .venv).
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/setup_venv.sh
if [ "$#" -gt 0 ]; then
  exec .venv/bin/python -m pytest -q -p no:cacheprovider "$@"
fi
status=0
echo "== ruff check ."
.venv/bin/ruff check . || status=$?
.venv/bin/python -m pytest -q -p no:cacheprovider tests || status=$?
bash scripts/setup_oldest_hf.sh
echo "== tests/hf and tests/convert with the oldest supported transformers (requirements/lock-oldest-hf.txt)"
PYTHONPATH=.venv/oldest-hf .venv/bin/python -m pytest -q -p no:cacheprovider tests/hf tests/convert || status=$?
echo "== tests with the oldest supported torch and megatron-core (requirements/lock-compat.txt, .venv-compat)"
bash scripts/test_compat.sh || status=$?
exit "$status"
