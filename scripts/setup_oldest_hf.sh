#!/usr/bin/env bash
# The oldest supported transformers as an overlay on .venv: the few packages of requirements/lock-oldest-hf.txt
# (transformers 4.57 and the huggingface_hub/tokenizers/requests it needs) installed with `pip --target` into
# .venv/oldest-hf, which scripts/test.sh puts first on PYTHONPATH; torch, megatron-core and the rest are shared.
# Rebuilt only when the overlay lock changes. Prints the overlay's versions and fails if they are not the lock's.
set -euo pipefail
cd "$(dirname "$0")/.."
overlay=.venv/oldest-hf
lock=requirements/lock-oldest-hf.txt
want="$(sha256sum "$lock" | cut -d' ' -f1)"
if [ "$(cat "$overlay/.lock-sha256" 2>/dev/null)" != "$want" ]; then
  rm -rf "$overlay"
  .venv/bin/python -m pip install -q --no-deps --target "$overlay" -r "$lock"
  echo "$want" > "$overlay/.lock-sha256"
fi
PYTHONPATH="$overlay" .venv/bin/python scripts/check_lock.py "$lock" --overlay "$overlay"
