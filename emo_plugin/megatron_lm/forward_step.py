"""Megatron-LM's ``forward_step`` for EMO: the micro-batch's routing ids go to the model as ``padding_mask``.

Each rank reads its own micro-batch (``data.py``), on the host. With ``--emo-intra-document-attention`` it is
packed there into one THD row cut at its documents (``training/packed_sequences.py``: the data-dependent
shapes and ``max_seqlen`` cost no device synchronisation on the host); then it moves to the GPU, and under
context parallelism each rank keeps its zigzag share, routing ids included. ``GPTModel.forward`` carries
``padding_mask`` to every MoE layer, where ``EmoMoELayer`` hands the ids to its router (docs/design.md).

The loss is ``pretrain_gpt.py``'s contract: (summed token loss, token count, report), which Megatron's
schedules turn into the per-micro-batch token mean (``calculate_per_token_loss`` is refused with EMO, whose
load-balancing gradient is scaled for that mean) and Megatron-LM's log into ``lm loss``.
"""

from __future__ import annotations

import functools

import torch
from megatron.core.rerun_state_machine import get_rerun_state_machine
from megatron.core.utils import get_model_config
from megatron.training import get_args, get_timers

from emo_plugin.training.data import device_micro_batch
from emo_plugin.training.host_backend import forward
from emo_plugin.training.megatron_backend import context_parallel_share
from emo_plugin.training.packed_sequences import ThdPacking, thd_packing

MODEL_INPUTS = ("tokens", "labels", "loss_mask", "attention_mask", "position_ids", "doc_ids", "routing_ids")
"""What a sample carries into the model; the blended dataset's ``dataset_id`` and the like stay behind."""


def this_rank_packing(model) -> ThdPacking | None:
    """This rank's THD packing with ``--emo-intra-document-attention``, else ``None``."""
    args = get_args()
    if not args.emo_intra_document_attention:
        return None
    return thd_packing(get_model_config(model), args.micro_batch_size, args.seq_length)


def micro_batch_on_device(host_batch: dict, packing: ThdPacking | None) -> dict:
    """This rank's share of a collated host micro-batch, on the current CUDA device."""
    batch = {key: host_batch[key] for key in MODEL_INPUTS if host_batch.get(key) is not None}
    device = torch.device("cuda", torch.cuda.current_device())
    return context_parallel_share(device_micro_batch(batch, device, packing))


def loss_func(loss_mask: torch.Tensor, output_tensor: torch.Tensor):
    """(summed loss, token count, report) of one micro-batch, refusing NaN/Inf as ``pretrain_gpt.py`` does."""
    losses = output_tensor.view(-1).float()
    mask = loss_mask.view(-1).float()
    loss = torch.sum(losses * mask)
    num_tokens = mask.sum().detach().to(torch.int)
    if get_args().check_for_nan_in_loss_and_grad:
        checker = get_rerun_state_machine()
        for reject, what in ((torch.isnan, "NaN"), (torch.isinf, "Inf")):
            checker.validate_result(result=loss, rejection_func=reject, message=f"found {what} in the local "
                                    "forward loss (EMO forward step)", tolerance=0.0, fatal=True)
    return loss, num_tokens, {"lm loss": torch.cat([loss.detach().view(1), num_tokens.view(1)])}


def forward_step(data_iterator, model, return_schedule_plan: bool = False):
    """One micro-batch forward: (per-token loss, the loss function of its mask)."""
    if return_schedule_plan:  # EmoTransformerConfig refuses overlap_moe_expert_parallel_comm before this
        raise RuntimeError("EMO routing needs the document ids the EP-overlap schedule plan does not carry")
    timers = get_timers()
    timers("batch-generator", log_level=2).start()
    batch = micro_batch_on_device(next(data_iterator), this_rank_packing(model))
    timers("batch-generator").stop()
    return forward(model, batch), functools.partial(loss_func, batch["loss_mask"])
