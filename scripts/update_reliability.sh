#!/usr/bin/env bash
# Regenerate docs/reliability.md from the tests that record its rows (tests/reliability.py), from scratch.
set -euo pipefail
cd "$(dirname "$0")/.."
files=$(grep -rl --include='test_*.py' "from tests.reliability import" tests)
rm -f docs/reliability.md
EMO_RELIABILITY_UPDATE=1 .venv/bin/python -m pytest -q -p no:cacheprovider $files "$@"
