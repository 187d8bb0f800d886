#!/usr/bin/env bash
# Print a Python ≥ 3.12 interpreter (megatron-core 0.19 needs it): $PYTHON, then python3.12 on PATH (a pyenv shim
# may exist without a 3.12 selected, so it must actually run), then any pyenv-installed 3.12.
set -euo pipefail
for candidate in "${PYTHON:-}" python3.12 "$HOME"/.pyenv/versions/3.12*/bin/python3.12; do
  [ -n "$candidate" ] || continue
  if "$candidate" -c 'import sys; sys.exit(sys.version_info < (3, 12))' >/dev/null 2>&1; then
    command -v "$candidate" || echo "$candidate"
    exit 0
  fi
done
echo "no Python >= 3.12 found: set PYTHON=/path/to/python3.12 (megatron-core 0.19 requires it)" >&2
exit 1
