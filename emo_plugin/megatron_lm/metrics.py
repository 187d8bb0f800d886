"""EMO's routing statistics (``moe/metrics.py``) in Megatron-LM's TensorBoard log.

Megatron-LM's ``training_log`` reports only the MoE metrics its own load-balancing types name
(``load_balancing_loss``, ``z_loss``) and then clears every entry of the MoE tracker, EMO's included. The one
per-step point every rank passes after all micro-batches and before ``training_log`` is the transformer
config's ``finalize_model_grads_func``, which Megatron-LM keeps when the model config sets it. So EMO's is
Megatron's ``finalize_model_grads`` followed by a report of the EMO entries alone: a tracker holding just them
(the same entries, so its report syncs, logs and zeroes exactly those) writes ``emo_*`` scalars, averaged over
micro-batches and layers like Megatron's own, at every ``--tensorboard-log-interval``; per layer under
``moe/emo_*_layer_<i>`` with ``--moe-per-layer-logging``.
"""

from __future__ import annotations

from megatron.core.distributed import finalize_model_grads
from megatron.core.num_microbatches_calculator import get_num_microbatches
from megatron.core.transformer.moe.moe_logging import MoEMetricsTracker, get_moe_metrics_tracker

from emo_plugin.moe.metrics import EMO_METRIC_NAMES
from emo_plugin.moe.traffic import EP_METRIC_NAMES


def logged_names(expert_parallel_size: int) -> tuple[str, ...]:
    """The EMO statistics, and the dispatch traffic where there is expert parallelism to measure."""
    return EMO_METRIC_NAMES + (EP_METRIC_NAMES if expert_parallel_size > 1 else ())


def emo_entries_tracker() -> MoEMetricsTracker:
    """A tracker over the EMO entries of Megatron's MoE tracker (shared entries, not copies)."""
    tracker = MoEMetricsTracker()
    entries = get_moe_metrics_tracker().metrics
    tracker.metrics.update({name: entries[name] for name in EMO_METRIC_NAMES + EP_METRIC_NAMES if name in entries})
    return tracker


def finalize_model_grads_and_log_emo(*args, **kwargs) -> None:
    """Megatron's ``finalize_model_grads``, then this step's EMO statistics to TensorBoard (all ranks take part:
    the report all-reduces over pipeline and data-parallel ranks; the last rank writes)."""
    finalize_model_grads(*args, **kwargs)
    from megatron.training import get_args, get_tensorboard_writer

    args = get_args()
    iteration = args.curr_iteration + 1  # the number training_log gives the step being finished
    tracker = emo_entries_tracker()
    if iteration % args.tensorboard_log_interval:
        tracker.clear()
        return
    tracker.report(
        loss_scale=1.0 / get_num_microbatches(),
        iteration=iteration,
        writer=get_tensorboard_writer(),
        per_layer_logging=args.moe_per_layer_logging,
        force_initialize=True,  # pipeline stages without a layer's entry still take part in the all-reduce
        track_names=list(logged_names(args.expert_model_parallel_size)),
        num_layers=args.num_layers,
        mtp_num_layers=args.mtp_num_layers,
    )
