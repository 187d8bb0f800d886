#!/usr/bin/env bash
# The expert-parallel benchmark (docs/expert_parallel.md), CPU size: train the standard MoE, EMO and EMO with
# rank-limited pools on the modularity experiment's data and budget, place EMO's experts for EP 2 and EP 4 by
# held-out co-usage, measure the dispatch traffic of each at EP 2 and EP 4 on gloo ranks, and print the table
# with the validation and held-out 25%-subset losses. Then, from EMO's weights, 40 more steps (+5%) without a
# limit and with M = 2 of 4 groups, before and after placement. About 1 h on 2 cores; trained runs are reused.
#   bash examples/expert_parallel/run.sh
set -euo pipefail
cd "$(dirname "$0")/../.."
PY=${PY:-python}
export OUT=${OUT:-runs/expert_parallel}
VARIANTS=${VARIANTS:-stdmoe emo emo_m1_g4 emo_m2_g4 emo_m1_g2}
evaluate() {  # export, then the held-out subsets as in examples/modularity/run.sh (greedy selection, plain top-k)
  local name=$1
  $PY tools/export_hf.py --checkpoint "$OUT/$name/checkpoints" --output "$OUT/$name/hf" --dtype fp32 --force
  $PY tools/evaluate_subsets.py --checkpoint "$OUT/$name/hf" --corpus "$OUT/heldout.jsonl" \
      --out "$OUT/$name/subsets" --fractions 1 0.25 --method greedy --calib-docs 8 \
      --domains c_headers changelogs man_de man_en man_fr python \
      --inference-pool-size 0 --max-eval-tokens-per-domain 20000 --max-doc-tokens 256
}
for name in $VARIANTS; do
  [ -f "$OUT/$name/checkpoints/latest_checkpointed_iteration.txt" ] || PY=$PY bash examples/expert_parallel/train_variant.sh "$name"
  evaluate "$name"
done
# Expert usage per held-out document, then one placement per EP size (same function, experts reordered).
$PY tools/analyze_modularity.py --checkpoint "$OUT/emo/hf" --corpus "$OUT/heldout.jsonl" \
    --out "$OUT/emo/analysis" --max-doc-tokens 256 --pool-size 8 --no-plots
for ep in 2 4; do
  $PY tools/place_experts.py --usage "$OUT/emo/analysis/document_usage.npz" --ranks "$ep" \
      --checkpoint "$OUT/emo/checkpoints" --output "$OUT/emo_placed_ep$ep/checkpoints" --force
done
continue_emo() {  # NAME LOAD [emo overrides]: 40 steps from EMO's (possibly placed) weights, lr 3e-4 → 0
  local name=$1 load=$2
  shift 2
  [ -f "$OUT/$name/checkpoints/latest_checkpointed_iteration.txt" ] || \
    $PY -m emo_plugin.cli.pretrain --config examples/modularity/emo_cpu.yaml "$@" --checkpoint.load="$load" \
      --data.corpus="$OUT/train.jsonl" --data.cache_dir="$OUT/emo/data" --checkpoint.save="$OUT/$name/checkpoints" \
      --logging.tensorboard_dir="$OUT/$name/tensorboard" --schedule.train_iters=40 --schedule.lr_warmup_iters=0 \
      --optimizer.lr=3e-4 --optimizer.min_lr=0 --eval.interval=20 --checkpoint.save_interval=40
  evaluate "$name"
}
limit=(--emo.pool_max_ranks=2 --emo.pool_rank_groups=4)
continue_emo emo_plus40 "$OUT/emo/checkpoints" --checkpoint.finetune=true
continue_emo emo_plus40_m2_g4 "$OUT/emo/checkpoints" --checkpoint.finetune=true "${limit[@]}"
continue_emo emo_placed_plus40_m2_g4 "$OUT/emo_placed_ep4/checkpoints" "${limit[@]}"
continue_emo emo_placed_plus40_m1_g4 "$OUT/emo_placed_ep4/checkpoints" --emo.pool_max_ranks=1 --emo.pool_rank_groups=4
$PY -m tests.benchmarks.expert_parallel_traffic --corpus "$OUT/heldout.jsonl" \
    --tokenizer examples/data/tokenizer.model --ep 2 4 --json "$OUT/traffic.json" \
    --variant "StdMoE (top-k)=$OUT/stdmoe" --variant "EMO=$OUT/emo" \
    --variant "EMO + placement=$OUT/emo_placed_ep{ep}|$OUT/emo" \
    --variant "EMO, M=1 of 4 groups=$OUT/emo_m1_g4" --variant "EMO, M=2 of 4 groups=$OUT/emo_m2_g4" \
    --variant "EMO, M=1 of 2 groups=$OUT/emo_m1_g2" \
    --variant "EMO +40 steps=$OUT/emo_plus40" --variant "EMO +40 steps, M=2 of 4=$OUT/emo_plus40_m2_g4" \
    --variant "EMO placed for EP4 +40 steps, M=2 of 4=$OUT/emo_placed_plus40_m2_g4" \
    --variant "EMO placed for EP4 +40 steps, M=1 of 4=$OUT/emo_placed_plus40_m1_g4" | tee "$OUT/traffic.md"
