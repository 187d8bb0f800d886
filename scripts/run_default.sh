#!/usr/bin/env bash
# The main job: set up .venv, then train the embedded default (tiny EMO model, bundled corpus, CPU).
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/setup_venv.sh
exec .venv/bin/emo-pretrain --config tiny_cpu "$@"
