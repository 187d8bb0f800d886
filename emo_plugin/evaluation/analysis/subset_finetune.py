"""A short fine-tune of a subset model on the domain's calibration documents (as AI2 report after pruning).

Trainable: the kept experts, the router and everything outside the MoE experts. Dropped experts are frozen
and the router rows of dropped experts get zero gradient (`EmoForCausalLM.training_only_kept_experts`), so the
result equals fine-tuning the physically pruned model. The fine-tune happens in place on the masked model;
`restoring_weights` puts the original weights back afterwards from a CPU copy, so no second model has to fit
on the accelerator.

The loss covers every token by default; with ``answer_starts`` (task prompts, ``selection/task_prompts.py``)
only the answer tokens are targets, as the paper fine-tunes (1 epoch, batch 32, lr 5e-5, answer tokens only:
``steps_for_epochs`` turns epochs into steps).
`ModelWeights` lets the pruning writer save the fine-tuned subset (for re-insertion into the full model,
`emo_plugin/evaluation/selection/reinsert.py`).
"""

from __future__ import annotations

import contextlib
import itertools
import math

import torch

from emo_plugin.evaluation.analysis.batching import document_batches


@contextlib.contextmanager
def restoring_weights(model):
    """Restore every parameter (value and requires_grad) to its state at entry."""
    saved = {name: p.detach().to("cpu", copy=True) for name, p in model.named_parameters()}
    flags = {name: p.requires_grad for name, p in model.named_parameters()}
    try:
        yield model
    finally:
        with torch.no_grad():
            for name, p in model.named_parameters():
                p.copy_(saved[name].to(p.device))
                p.requires_grad_(flags[name])
        model.eval()


class ModelWeights:
    """The model's current tensors behind `HfWeights`' reading interface (`names`, `get`), on the CPU."""

    def __init__(self, model):
        self.state = model.state_dict()

    def names(self) -> list[str]:
        return list(self.state)

    def get(self, name: str) -> torch.Tensor:
        return self.state[name].detach().cpu()


def finetune_subset(
    model,
    documents: list[list[int]],
    steps: int,
    lr: float,
    batch_size: int,
    pad_id: int,
    device,
    seed: int = 0,
    answer_starts: list[int] | None = None,
) -> list[float]:
    """`steps` AdamW steps (no weight decay) of the masked model on `documents`, cycling; returns the losses.

    With `answer_starts` (one index per document) the tokens before it are not targets. The caller sets the
    expert mask and wraps this in `restoring_weights`.
    """
    torch.manual_seed(seed)
    losses = []
    with model.training_only_kept_experts():
        params = [p for p in model.parameters() if p.requires_grad]
        optimizer = torch.optim.AdamW(params, lr=lr, betas=(0.9, 0.95), weight_decay=0.0)
        model.train()
        batches = itertools.cycle(list(document_batches(documents, batch_size, pad_id, device)))
        for _ in range(steps):
            batch = next(batches)
            labels = batch.input_ids_BS.masked_fill(batch.attention_mask_BS == 0, -100)
            if answer_starts is not None:
                for row, index in enumerate(batch.document_indices):
                    labels[row, : answer_starts[index]] = -100
            loss = model(
                input_ids=batch.input_ids_BS, attention_mask=batch.attention_mask_BS, labels=labels, use_cache=False
            ).loss
            optimizer.zero_grad(set_to_none=True)
            loss.backward()
            torch.nn.utils.clip_grad_norm_(params, 1.0)
            optimizer.step()
            losses.append(float(loss.detach()))
    model.eval()
    return losses


def steps_for_epochs(num_documents: int, batch_size: int, epochs: int) -> int:
    """Optimizer steps that show every document ``epochs`` times (the last batch of an epoch may be short)."""
    return epochs * math.ceil(num_documents / batch_size)
