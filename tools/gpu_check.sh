#!/usr/bin/env bash
# GPU verification of the training path on one H100/H200: TE spec vs local spec, 50 bf16 steps (TE, distributed
# optimizer, intra-document attention) checked against the CPU host path, FP8 (delayed, tensorwise) loss gaps,
# and the router benchmark at the EMO shape. About 5 minutes, at most 8; writes gpu_check_results/gpu_check.json
# and gpu_check.txt (see tools/gpu_check.py and docs/benchmarks.md).
#
#   bash tools/gpu_check.sh [--out DIR]      # on the GPU machine
#   bash tools/gpu_check.sh --dry-run        # the same orchestration on CPU with a tiny model (CI runs this)
#
# Needs PyTorch with CUDA, Transformer Engine, megatron-core 0.19.2 and this package importable (pip install -e .).
# EMO_GPU_ENV=<file> is sourced first when set (an environment script that puts that stack on PATH).
set -euo pipefail
cd "$(dirname "$0")/.."
if [[ -n "${EMO_GPU_ENV:-}" ]]; then
    # shellcheck disable=SC1090
    source "$EMO_GPU_ENV"
fi
PYTHON=${PYTHON:-$(command -v python || command -v python3)}
if ! "$PYTHON" -c "import emo_plugin, megatron.core" 2>/dev/null; then
    echo "gpu_check: emo_plugin or megatron.core is not importable with $PYTHON; run 'pip install -e .' first" >&2
    exit 2
fi
# The driver keeps its own budget (470 s) and rewrites the results after every step; this is the hard stop.
exec timeout --kill-after=10 480 "$PYTHON" tools/gpu_check.py "$@"
