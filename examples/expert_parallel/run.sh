#!/usr/bin/env bash
# The expert-parallel benchmark (docs/expert_parallel.md), CPU size: train the standard MoE, EMO and EMO with
# rank-limited pools on the modularity experiment's data and budget, place EMO's experts for EP 2 and EP 4 by
# held-out co-usage, measure the dispatch traffic of each at EP 2 and EP 4 on gloo ranks, and print the table
# with the validation and held-out 25%-subset losses. About 1 h on 2 cores; trained variants are reused.
#   bash examples/expert_parallel/run.sh
set -euo pipefail
cd "$(dirname "$0")/../.."
PY=${PY:-python}
export OUT=${OUT:-runs/expert_parallel}
VARIANTS=${VARIANTS:-stdmoe emo emo_m1_g4 emo_m2_g4 emo_m1_g2}
for name in $VARIANTS; do
  [ -f "$OUT/$name/checkpoints/latest_checkpointed_iteration.txt" ] || PY=$PY bash examples/expert_parallel/train_variant.sh "$name"
  $PY tools/export_hf.py --checkpoint "$OUT/$name/checkpoints" --output "$OUT/$name/hf" --dtype fp32 --force
  # The modularity experiment's subset evaluation (examples/modularity/run.sh): greedy selection, plain top-k.
  $PY tools/evaluate_subsets.py --checkpoint "$OUT/$name/hf" --corpus "$OUT/heldout.jsonl" \
      --out "$OUT/$name/subsets" --fractions 1 0.25 --method greedy --calib-docs 8 \
      --domains c_headers changelogs man_de man_en man_fr python \
      --inference-pool-size 0 --max-eval-tokens-per-domain 20000 --max-doc-tokens 256
done
# Expert usage per held-out document, then one placement per EP size (same function, experts reordered).
$PY tools/analyze_modularity.py --checkpoint "$OUT/emo/hf" --corpus "$OUT/heldout.jsonl" \
    --out "$OUT/emo/analysis" --max-doc-tokens 256 --pool-size 8 --no-plots
for ep in 2 4; do
  $PY tools/place_experts.py --usage "$OUT/emo/analysis/document_usage.npz" --ranks "$ep" \
      --checkpoint "$OUT/emo/checkpoints" --output "$OUT/emo_placed_ep$ep/checkpoints" --force
done
$PY -m tests.benchmarks.expert_parallel_traffic --corpus "$OUT/heldout.jsonl" \
    --tokenizer examples/data/tokenizer.model --ep 2 4 --json "$OUT/traffic.json" \
    --variant "StdMoE (top-k)=$OUT/stdmoe" --variant "EMO=$OUT/emo" \
    --variant "EMO + placement=$OUT/emo_placed_ep{ep}|$OUT/emo" \
    --variant "EMO, M=1 of 4 groups=$OUT/emo_m1_g4" --variant "EMO, M=2 of 4 groups=$OUT/emo_m2_g4" \
    --variant "EMO, M=1 of 2 groups=$OUT/emo_m1_g2" | tee "$OUT/traffic.md"
