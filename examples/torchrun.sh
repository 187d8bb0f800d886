#!/bin/bash
# EMO pretraining with torchrun (one node, or several with NNODES/NODE_RANK/MASTER_ADDR).
#   examples/torchrun.sh                                   # 2 CPU ranks, embedded tiny config
#   NPROC=8 EMO_DEVICE=cuda examples/torchrun.sh --config small_gpu
# torchrun reports any non-zero worker exit as its own failure (exit 1), so the trainer's 75 ("stopped early,
# checkpoint saved, resume me") does not reach the caller; under Slurm use examples/slurm/pretrain.sbatch (srun
# starts the ranks itself and the script acts on 75). See docs/slurm.md.
set -euo pipefail
cd "$(dirname "$0")/.."
NPROC=${NPROC:-2}
NNODES=${NNODES:-1}
NODE_RANK=${NODE_RANK:-0}
MASTER_ADDR=${MASTER_ADDR:-127.0.0.1}
MASTER_PORT=${MASTER_PORT:-29500}
export EMO_DEVICE=${EMO_DEVICE:-cpu}
export PYTHONPATH="$PWD${PYTHONPATH:+:$PYTHONPATH}"
[ "$EMO_DEVICE" = cuda ] && export CUDA_DEVICE_MAX_CONNECTIONS=1
[ $# -eq 0 ] && set -- --config tiny_cpu
exec "${PYTHON:-python}" -m torch.distributed.run --nproc-per-node "$NPROC" --nnodes "$NNODES" --node-rank "$NODE_RANK" \
  --master-addr "$MASTER_ADDR" --master-port "$MASTER_PORT" -m emo_plugin.cli.pretrain "$@"
