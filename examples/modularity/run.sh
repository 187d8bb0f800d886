#!/usr/bin/env bash
# The modularity experiment (docs/modularity.md): train EMO and the matched standard MoE on the same data with
# the same budget and seed (only the router's pools differ), export both to Hugging Face, then measure held-out
# loss per domain with 100% / 25% / 12.5% of the experts and analyse expert specialisation.
#
#   bash examples/modularity/run.sh                 # CPU size (examples/modularity/*_cpu.yaml), ~30 min on 2 cores
#   EXTRA="--schedule.train_iters=100" bash examples/modularity/run.sh   # any emo-pretrain override for both runs
#   MODELS="emo stdmoe emo_anneal" bash examples/modularity/run.sh   # also EMO-anneal of the standard MoE
#                                                                   # (emo_anneal_cpu.yaml, docs/recipe.md)
set -euo pipefail
cd "$(dirname "$0")/../.."
PY=${PY:-python}
OUT=${OUT:-runs/modularity}
EXTRA=${EXTRA:-}
MODELS=${MODELS:-emo stdmoe}  # emo_anneal continues stdmoe's checkpoint, so it comes after it

$PY tools/split_corpus.py --input examples/data/corpus.jsonl --every 8 \
    --train "$OUT/train.jsonl" --heldout "$OUT/heldout.jsonl"
for model in $MODELS; do
  $PY -m emo_plugin.cli.pretrain --config "examples/modularity/${model}_cpu.yaml" $EXTRA
  $PY tools/export_hf.py --checkpoint "$OUT/$model/checkpoints" --output "$OUT/$model/hf" --dtype fp32 --force
  # Plain top-k inference over the kept experts (as AI2 evaluates subsets); selection by greedy mean router prob.
  # 'licenses' is left out: its 5 held-out documents cannot give 8 calibration documents plus held-out text.
  $PY tools/evaluate_subsets.py --checkpoint "$OUT/$model/hf" --corpus "$OUT/heldout.jsonl" \
      --out "$OUT/$model/subsets" --fractions 1 0.25 0.125 --method greedy --calib-docs 8 \
      --domains c_headers changelogs man_de man_en man_fr python \
      --inference-pool-size 0 --max-eval-tokens-per-domain 20000 --max-doc-tokens 256
  $PY tools/analyze_modularity.py --checkpoint "$OUT/$model/hf" --corpus "$OUT/heldout.jsonl" \
      --out "$OUT/$model/analysis" --max-doc-tokens 256 --pool-size 8
done
declare -A NAME=([emo]=EMO [stdmoe]=StdMoE [emo_anneal]=EMO-anneal)
results=() names=()
for model in $MODELS; do results+=("$OUT/$model/subsets/results.json"); names+=("${NAME[$model]}"); done
$PY tools/compare_subsets.py "${results[@]}" --names "${names[@]}" --out "$OUT/comparison.md"
