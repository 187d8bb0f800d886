"""Where a run starts, and why: the resume rules of Megatron-LM's ``--load``/``--save`` pair as used in practice.

1. The newest checkpoint in ``checkpoint.save`` wins: the run was preempted or requeued and resumes there with
   its full state (weights, optimizer, iteration, data position, RNG), whatever ``checkpoint.load`` says.
2. Otherwise ``checkpoint.load`` is the initial state: its latest checkpoint (or the ``iter_XXXXXXX`` folder it
   names). Weights only with ``checkpoint.finetune`` or when it holds nothing else (tools/import_hf.py output);
   iteration, optimizer, consumed samples and RNG then start fresh, as Megatron-LM's ``--finetune`` does.
3. A ``checkpoint.load`` that does not exist or holds no checkpoint is an error (a typo must not silently
   train from scratch), unless ``checkpoint.allow_missing_load`` or it is the ``checkpoint.save`` folder itself
   (the usual ``--load D --save D`` of a first attempt).
4. Otherwise the run starts from scratch.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from pathlib import Path

from emo_plugin import checkpoint
from emo_plugin.errors import ConfigError
from emo_plugin.run.config import TrainingConfig


@dataclass(frozen=True)
class StartPoint:
    root: Path | None
    iteration: int | None
    weights_only: bool
    reason: str
    common: dict = field(default_factory=dict)

    @property
    def folder(self) -> Path | None:
        return None if self.root is None else checkpoint.iteration_dir(self.root, self.iteration)


def _same_folder(a: str | None, b: str | None) -> bool:
    return bool(a and b) and Path(a).resolve() == Path(b).resolve()


def _find(load: str) -> tuple[Path, int] | None:
    """(root, iteration) for a checkpoint root or an ``iter_XXXXXXX`` folder; None if it holds no checkpoint."""
    path = Path(load)
    match = re.fullmatch(r"iter_(\d{7})", path.name)
    if match and checkpoint.is_complete(path):
        return path.parent, int(match.group(1))
    iteration = checkpoint.latest_iteration(path)
    return None if iteration is None else (path, iteration)


def _missing_load(load: str) -> ConfigError:
    path = Path(load)
    if not path.exists():
        what = "does not exist"
    elif not path.is_dir():
        what = "is not a folder"
    else:
        folders = checkpoint.complete_iterations(path)
        what = f"holds no {checkpoint.LATEST}" + (
            f" (it has complete folders {', '.join(checkpoint.iteration_dir(path, i).name for i in folders[-3:])}: "
            "pass one of them as checkpoint.load)" if folders else " and no complete iter_XXXXXXX folder")
    return ConfigError(
        f"checkpoint.load={load}: {what}; expected a checkpoint folder written by emo-pretrain or tools/import_hf.py, "
        "or an iter_XXXXXXX folder in one. Set checkpoint.allow_missing_load=true to train from scratch instead"
    )


def choose(cfg: TrainingConfig) -> StartPoint:
    """Apply the rules above (all ranks call this: it removes stale ``.tmp`` saves with a barrier)."""
    save, load = cfg.checkpoint.save, cfg.checkpoint.load
    if save:
        checkpoint.remove_incomplete(save)
        iteration = checkpoint.latest_iteration(save)
        if iteration is not None:
            common = checkpoint.load_common(save, iteration)
            if "consumed_samples" not in common:  # e.g. tools/import_hf.py wrote into the save folder
                reason = ("the newest checkpoint in checkpoint.save, model weights only (it holds no optimizer or "
                          "iteration state)")
                return StartPoint(Path(save), iteration, True, reason, common)
            reason = "the newest checkpoint in checkpoint.save: resuming this run with its full state"
            if load and not _same_folder(load, save):
                reason += f" (checkpoint.load={load} only seeds a run whose checkpoint.save is empty)"
            return StartPoint(Path(save), iteration, False, reason, common)
    where = f"checkpoint.save={save} holds no checkpoint yet" if save else "checkpoint.save is not set"
    if load:
        found = _find(load)
        if found is None:
            if _same_folder(load, save):
                return StartPoint(None, None, False, f"{where} (it is also checkpoint.load): training from scratch")
            if cfg.checkpoint.allow_missing_load:
                return StartPoint(None, None, False, f"checkpoint.load={load} holds no checkpoint and "
                                  "checkpoint.allow_missing_load=true: training from scratch")
            raise _missing_load(load)
        root, iteration = found
        common = checkpoint.load_common(root, iteration)
        if cfg.checkpoint.finetune:
            weights_only, how = True, "model weights only (checkpoint.finetune=true)"
        elif "consumed_samples" not in common:
            weights_only, how = True, "model weights only (the checkpoint holds no optimizer or iteration state)"
        else:
            weights_only, how = False, "full training state"
        reason = f"checkpoint.load, {how}, because {where}"
        return StartPoint(root, iteration, weights_only, reason, common)
    return StartPoint(None, None, False, f"{where} and checkpoint.load is not set: training from scratch")
