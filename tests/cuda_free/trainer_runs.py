"""``emo-pretrain`` in-process on the gloo ranks of tests/parallel/harness.py, with the GPU path made CUDA-free.

``cli_run`` parses the same command line as ``emo-pretrain`` / ``torchrun -m emo_plugin.cli.pretrain`` and runs
``Trainer`` (checkpoint save/resume, NaN policy, validation) on ranks that are already forked from a process with
torch and Megatron imported, which saves the ~7 s import per rank that a ``torchrun`` launch costs.
"""

from __future__ import annotations

from pathlib import Path

from tests.training.conftest import REPO, base_args

GPU_PATH = ["--parallel.device=cuda", "--model.transformer_impl=local", "--data.intra_document_attention=false"]


def gpu_args(corpus_prefix: str, out: Path, **overrides) -> list[str]:
    """tests/training's tiny CPU config, on the GPU path (``parallel.device=cuda``, Megatron's local spec)."""
    return base_args(corpus_prefix, out, **overrides) + GPU_PATH


def cli_run(layout, args: list[str]) -> dict:
    """Run emo-pretrain's parse → resolve → fit check → Trainer on this rank; the outcome, not a traceback."""
    import os

    import torch.distributed as dist

    from emo_plugin.cli.pretrain import parse_config
    from emo_plugin.training.trainer import NonFiniteLossError, run
    from tests.cuda_free.cuda_shims import cuda_free

    # what torchrun would have set: the trainer reads the world size from the launch environment
    os.environ.update(RANK=str(dist.get_rank()), WORLD_SIZE=str(dist.get_world_size()), LOCAL_RANK="0")
    with cuda_free():
        cfg = parse_config(args)
        try:
            return {"returncode": run(cfg), "error": None}
        except NonFiniteLossError as error:
            return {"returncode": 3, "error": str(error)}


def cli_script() -> Path:
    return REPO / "tests/cuda_free/cuda_free_cli.py"
