#!/usr/bin/env bash
# Train one variant of the expert-parallel benchmark (docs/expert_parallel.md) on the modularity experiment's CPU
# data and budget: NAME is stdmoe, emo, or emo_m<M>_g<G> (EMO with rank-limited pools, M of G groups).
#   bash examples/expert_parallel/train_variant.sh emo_m1_g4
set -euo pipefail
cd "$(dirname "$0")/../.."
PY=${PY:-python}
OUT=${OUT:-runs/expert_parallel}
EXTRA=${EXTRA:-}
name=$1
case "$name" in
  stdmoe) config=stdmoe_cpu; limit=() ;;
  emo) config=emo_cpu; limit=() ;;
  emo_m*_g*) config=emo_cpu; m=${name#emo_m}; m=${m%_g*}; limit=(--emo.pool_max_ranks="$m" --emo.pool_rank_groups="${name#*_g}") ;;
  *) echo "unknown variant $name: expected stdmoe, emo or emo_m<M>_g<G>" >&2; exit 2 ;;
esac
[ -f "$OUT/train.jsonl" ] || $PY tools/split_corpus.py --input examples/data/corpus.jsonl --every 8 \
    --train "$OUT/train.jsonl" --heldout "$OUT/heldout.jsonl"
$PY -m emo_plugin.cli.pretrain --config "examples/modularity/$config.yaml" "${limit[@]}" \
    --data.corpus="$OUT/train.jsonl" --data.cache_dir="$OUT/$name/data" \
    --logging.tensorboard_dir="$OUT/$name/tensorboard" --checkpoint.save="$OUT/$name/checkpoints" $EXTRA
