"""Where an anneal stage starts: the checkpoint it continues from and that checkpoint's learning rate.

An anneal (``schedule.anneal_iters``: the 50B-token linear decay that follows EMO's 1T-token run, or the
"EMO-anneal" of a standard-MoE checkpoint with pools on) continues from ``checkpoint.load`` at the lr that
checkpoint trained with and decays linearly to ``schedule.anneal_min_lr`` (schedule.py builds the scheduler).

* Full-state start: the anneal begins after the checkpoint's iteration, with its optimizer state.
* Weights-only start (``checkpoint.finetune``, or a checkpoint without training state): iteration 0 and a fresh
  optimizer, but still the checkpoint's lr: the point of an anneal is to continue that run's schedule.
* The lr is the one the trainer records in every checkpoint (``learning_rate``); a checkpoint from before that
  record has its lr recomputed from its stored config; one without either (tools/import_hf.py output) needs
  ``schedule.anneal_start_lr``, which, when set, always wins.
* Every checkpoint of an anneal run records its start, so a resumed anneal (preemption) keeps its schedule.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass

from emo_plugin.errors import ConfigError
from emo_plugin.run.config import TrainingConfig, apply_mapping
from emo_plugin.training.schedule import lr_at

LEARNING_RATE_KEY = "learning_rate"  # checkpoint common state: the lr of the step that produced it
ANNEAL_START_KEY = "anneal_start"  # checkpoint common state of an anneal run: its AnnealStart


@dataclass(frozen=True)
class AnnealStart:
    """The iteration the anneal continues from (its first step produces ``iteration + 1``) and the lr there."""

    iteration: int
    lr: float

    def to_common(self) -> dict:
        return {ANNEAL_START_KEY: asdict(self)}


def checkpoint_lr(common: dict, source) -> float:
    """The learning rate of the step that produced a checkpoint, from its common state."""
    if LEARNING_RATE_KEY in common:
        return float(common[LEARNING_RATE_KEY])
    if isinstance(common.get("config"), dict) and "iteration" in common:
        stored = TrainingConfig()
        sections = {k: v for k, v in common["config"].items() if k in ("optimizer", "schedule")}
        try:
            apply_mapping(stored, sections, f"{source}: the stored config")
        except ConfigError:
            pass  # written by another version: fall through to the error below
        else:
            if stored.schedule.anneal_iters is None:
                return lr_at(stored.optimizer, stored.schedule, int(common["iteration"]))
    raise ConfigError(f"{source}: the checkpoint records no learning rate (e.g. tools/import_hf.py output); set "
                      "schedule.anneal_start_lr to the lr to anneal from")


def anneal_start(cfg: TrainingConfig, start) -> AnnealStart | None:
    """The anneal of this run (None without ``schedule.anneal_iters``); ``start`` is start_point.choose's answer."""
    sch = cfg.schedule
    if sch.anneal_iters is None:
        return None
    if start.root is None:
        raise ConfigError(f"schedule.anneal_iters={sch.anneal_iters}: expected a checkpoint to anneal from, but "
                          f"{start.reason}; set checkpoint.load")
    common = start.common
    if not start.weights_only and ANNEAL_START_KEY in common:
        anneal = AnnealStart(**common[ANNEAL_START_KEY])
        where = f"the anneal this run started (recorded in {start.folder})"
    else:
        iteration = 0 if start.weights_only else int(common["iteration"])
        lr = sch.anneal_start_lr if sch.anneal_start_lr is not None else checkpoint_lr(common, start.folder)
        anneal = AnnealStart(iteration, lr)
        where = f"{start.folder}, " + ("weights only: iteration 0" if start.weights_only else "full state")
    end = anneal.iteration + sch.anneal_iters
    if sch.train_iters != end:
        raise ConfigError(f"schedule.train_iters={sch.train_iters}: expected {end}, the anneal's last step: it "
                          f"continues from iteration {anneal.iteration} ({where}) for schedule.anneal_iters="
                          f"{sch.anneal_iters} steps")
    if anneal.lr < sch.anneal_min_lr:
        raise ConfigError(f"schedule.anneal_min_lr={sch.anneal_min_lr}: expected at most the lr the anneal starts "
                          f"from, {anneal.lr:g} ({where})")
    return anneal
