#!/usr/bin/env bash
# Create .venv (Python 3.12) and install emo_plugin with its test/HF extras at exactly the versions CI tested:
# requirements/lock.txt (regenerate with scripts/lock.sh). Idempotent: an up-to-date .venv is left as it is, a
# stale one is moved to the lock's versions. Without the lock (`pip install -e '.[test,hf]'`) pip picks any
# versions inside setup.cfg's bounds. Prints the installed versions and fails if they are not the lock's.
# `setup_venv.sh VENV LOCK` does the same for another venv and lock (scripts/test_compat.sh: .venv-compat).
set -euo pipefail
cd "$(dirname "$0")/.."
venv=${1:-.venv}
lock=${2:-requirements/lock.txt}
py="$(bash scripts/find_python.sh)"
if [ ! -x "$venv/bin/python" ]; then
  "$py" -m venv "$venv"
fi
"$venv/bin/python" -m pip install -q --upgrade pip
"$venv/bin/python" -m pip install -q -c "$lock" -e '.[test,hf]'
"$venv/bin/python" scripts/check_lock.py "$lock"
