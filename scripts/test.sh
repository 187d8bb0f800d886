#!/usr/bin/env bash
# The test command: set up .venv, then run the whole suite on the CPU.
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/setup_venv.sh
exec .venv/bin/python -m pytest -q -p no:cacheprovider tests "$@"
