#!/usr/bin/env bash
# Create .venv (Python 3.12) and install emo_plugin with its test/HF extras. Idempotent; reuses pip's cache.
set -euo pipefail
cd "$(dirname "$0")/.."
py="$(bash scripts/find_python.sh)"
if [ ! -x .venv/bin/python ]; then
  "$py" -m venv .venv
fi
.venv/bin/python -m pip install -q --upgrade pip
.venv/bin/python -m pip install -q -e '.[test,hf]'
