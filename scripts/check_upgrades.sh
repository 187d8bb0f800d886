#!/usr/bin/env bash
# Maintainer check: would the newest releases of our dependencies break anything? Installs emo_plugin in a
# scratch venv with every dependency at its newest release - setup.cfg's upper bounds on torch/transformers
# lifted, megatron-core kept in its series - runs the test suite there (or `pytest <arguments>`), and prints
# what changed against requirements/lock.txt. .venv and the locks are not touched. If it is green, widen the
# bounds in setup.cfg as needed and bump the lock on purpose with `bash scripts/lock.sh`.
#   bash scripts/check_upgrades.sh                 # whole suite
#   bash scripts/check_upgrades.sh tests/hf -x     # a part of it
#   KEEP_SCRATCH=1 bash scripts/check_upgrades.sh  # keep the scratch venv for a closer look
set -euo pipefail
cd "$(dirname "$0")/.."
py="$(bash scripts/find_python.sh)"
scratch="$(mktemp -d "${TMPDIR:-/tmp}/emo-upgrades.XXXXXX")"
[ -n "${KEEP_SCRATCH:-}" ] || trap 'rm -rf "$scratch"' EXIT
"$py" -m venv "$scratch/venv"
pip() { "$scratch/venv/bin/python" -m pip "$@"; }
pip install -q --upgrade pip
pip install -q --upgrade --upgrade-strategy eager -e '.[test,hf]'
# Then past the bounds CI has tested (pip warns that emo_plugin's bounds are not met: that is the point).
pip install -q --upgrade torch transformers
frozen() { pip freeze --exclude-editable | grep -v -i -E '^(-e |#|pip==|emo[-_]plugin[= @])' | LC_ALL=C sort; }
echo "== changes against requirements/lock.txt (- locked, + newest):"
diff <(grep -v '^#' requirements/lock.txt) <(frozen) | grep '^[<>]' | sed 's/^</-/; s/^>/+/' || echo "   none"
status=0
if [ "$#" -gt 0 ]; then
  "$scratch/venv/bin/python" -m pytest -q -p no:cacheprovider "$@" || status=$?
else
  "$scratch/venv/bin/python" -m pytest -q -p no:cacheprovider tests || status=$?
fi
echo "== newest releases: tests $([ "$status" = 0 ] && echo passed || echo "FAILED (exit $status)")"
[ -z "${KEEP_SCRATCH:-}" ] || echo "scratch venv kept at $scratch/venv"
exit "$status"
