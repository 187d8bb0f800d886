"""Every Megatron-Core internal the plugin relies on, each behind one named function.

The plugin extends Megatron through public seams (layer specs, ``MoESubmodules.router``, subclass hooks, forward
arguments). Where no seam exists it depends on a private name, an attribute or a behaviour instead; those
dependencies live here, and only here, so that an upgrade has one place to review. ``tests/test_megatron_compat.py``
holds one test per function that fails, naming the dependency, when Megatron changes it; ``docs/architecture.md``
(section "Megatron boundary") is the inventory.

Importing this module checks the installed megatron-core against the tested range and refuses any other version:
the internals below break *silently* (a stale routing id, a load-balancing count that is never reset, a skipped
recompute), so an untested Megatron could train a wrong model without an error. To try a new release, set
``EMO_ALLOW_UNTESTED_MEGATRON=1`` (the refusal becomes a warning) and run ``tests/test_megatron_compat.py`` first.
The tested range is the megatron-core requirement of ``emo_plugin/install_requires.txt``, the file setup.cfg's
``install_requires`` reads, so pip installs the same range this module accepts.
"""

from __future__ import annotations

import importlib.metadata
import os
import warnings
from pathlib import Path
from typing import TYPE_CHECKING

import torch
from megatron.core import tensor_parallel
from packaging.requirements import Requirement
from packaging.specifiers import SpecifierSet
from packaging.utils import canonicalize_name
from packaging.version import Version

try:
    from megatron.core.extensions.transformer_engine import te_checkpoint
except ImportError:  # Transformer Engine is optional
    te_checkpoint = None

if TYPE_CHECKING:
    from megatron.core.datasets.gpt_dataset import GPTDataset

INSTALL_REQUIRES = Path(__file__).with_name("install_requires.txt")
ALLOW_UNTESTED_ENV = "EMO_ALLOW_UNTESTED_MEGATRON"


class MegatronVersionError(ImportError):
    """The installed megatron-core is outside the range the plugin's Megatron internals were tested with."""


def declared_megatron_range(path: Path = INSTALL_REQUIRES) -> str:
    """The version range of the megatron-core requirement in ``path`` as written there, e.g. ``>=0.19.0,<0.20``.

    ``path`` is read as setuptools reads ``install_requires = file: ...``: one requirement per line, whole-line
    ``#`` comments and blank lines skipped. The requirement must be a plain range (no extras, marker or URL).
    """
    try:
        lines = path.read_text().splitlines()
    except OSError as error:
        raise MegatronVersionError(f"{path}: cannot read emo_plugin's requirements ({error})") from None
    for line in (line.strip() for line in lines):
        if not line or line.startswith("#"):
            continue
        requirement = Requirement(line)
        if canonicalize_name(requirement.name) != "megatron-core":
            continue
        if requirement.extras or requirement.marker or requirement.url or not requirement.specifier:
            raise MegatronVersionError(f"{path}: {line!r} is not a plain megatron-core version range")
        return line[len(requirement.name) :].strip()
    raise MegatronVersionError(f"{path}: no megatron-core requirement")


TESTED_RANGE = declared_megatron_range()
TESTED_MEGATRON_CORE = SpecifierSet(TESTED_RANGE)


def check_megatron_version(version: str) -> None:
    """Refuse (or, with ``EMO_ALLOW_UNTESTED_MEGATRON=1``, warn about) a megatron-core outside the tested range."""
    if Version(version).public in TESTED_MEGATRON_CORE:
        return
    message = (
        f"megatron-core {version} is installed, but emo_plugin is tested with megatron-core{TESTED_RANGE}: "
        "it relies on Megatron internals listed in emo_plugin/megatron_compat.py that may have changed. Install a "
        f"tested version, or set {ALLOW_UNTESTED_ENV}=1 and run tests/test_megatron_compat.py to check this one"
    )
    if os.environ.get(ALLOW_UNTESTED_ENV) == "1":
        warnings.warn(message, stacklevel=2)
        return
    raise MegatronVersionError(message)


check_megatron_version(importlib.metadata.version("megatron-core"))


def take_over_moe_recompute(moe_layer) -> bool:
    """Switch off ``MoELayer``'s own selective recompute and say whether it was on.

    Relies on ``MoELayer.__init__`` storing the decision (``recompute_granularity="selective"`` with ``"moe"`` in
    ``recompute_modules``) in the attribute ``moe_layer_recompute``, which ``MoELayer.forward`` reads on every
    call. Megatron checkpoints its MoE forward with the bool padding mask as input; EMO must checkpoint the routing
    ids instead (see ``checkpoint_moe_forward``), and there is no constructor argument or hook to say so.
    """
    enabled = bool(moe_layer.moe_layer_recompute)
    moe_layer.moe_layer_recompute = False
    return enabled


def checkpoint_moe_forward(moe_layer, forward, *inputs):
    """``forward(*inputs)`` under activation checkpointing, exactly as ``MoELayer.forward`` checkpoints its own.

    Mirrors the recompute branch of ``MoELayer.forward``: Transformer Engine's ``te_checkpoint`` (with the CUDA
    RNG tracker and the layer's ``tp_group``) under FP8/FP4, else ``tensor_parallel.checkpoint`` without
    distributed saved activations. Together with ``take_over_moe_recompute`` it lets the routing ids be a
    checkpoint *input*, so a recompute after later micro-batches still routes with this micro-batch's ids.
    """
    config = moe_layer.config
    if config.fp8 or config.fp4:
        return te_checkpoint(forward, False, tensor_parallel.random.get_cuda_rng_tracker, moe_layer.tp_group, *inputs)
    return tensor_parallel.checkpoint(forward, False, *inputs)


def step_reset_load_balancing_type() -> str:
    """The ``moe_router_load_balancing_type`` that makes Megatron reset EMO's per-step load-balancing counts.

    Megatron has no public per-step reset for router state: ``finalize_model_grads`` (through
    ``reset_model_temporary_tensors``) calls ``reset_global_aux_loss_tracker()`` on every module once per
    optimizer step, but only when the load-balancing type names ``"global_aux_loss"``. EMO computes its own loss,
    so it sets this type with ``moe_aux_loss_coeff=0`` (Megatron's loss is then never added) to get the call.
    """
    return "global_aux_loss"


def aux_loss_gradient_averaging_ranks(tp_dp_cp_size: int, tp_cp_size: int) -> int:
    """Ranks over which the load-balancing gradient is averaged and not already compensated by Megatron.

    DDP averages gradients over data × context ranks. Megatron's pipeline schedules set
    ``MoEAuxLossAutoScaler``'s loss scale to ``loss_scale * cp_size / num_microbatches``, which undoes the context
    part, so only the data-parallel size (``tp_dp_cp / tp_cp``) remains for the router to compensate.
    """
    return tp_dp_cp_size // tp_cp_size


def document_sample(dataset: GPTDataset, idx: int):
    """``(text, document_lengths)`` of sample ``idx``: its tokens and the token count of each document part.

    Relies on the private ``GPTDataset._query_document_sample_shuffle_indices(idx)``, which returns
    ``(text, document_ids, document_lengths)`` and is the only place Megatron exposes where a sample's documents
    start and end (``__getitem__`` keeps only the tokens).
    """
    text, _, document_lengths = dataset._query_document_sample_shuffle_indices(idx)
    return text, document_lengths


def sharded_entries_by_key(sharded_state_dict, keep_only_main_replica: bool):
    """Megatron's sharded state dict flattened to ``{checkpoint key: [ShardedTensor/ShardedObject, ...]}``.

    Relies on the private ``_replace_state_dict_keys_with_sharded_keys`` of
    ``dist_checkpointing.strategies.torch``: the first step of ``TorchDistSaveShardedStrategy.async_save``, whose
    result ``mcore_to_pyt_state_dict`` turns into PyTorch sharded tensors. The host save strategy needs it to
    write the same torch_dist checkpoint synchronously, without Megatron's CUDA-only async writer.
    """
    # Imported here, not at the top, so that its removal cannot pre-empt the version check's message.
    from megatron.core.dist_checkpointing.strategies.torch import _replace_state_dict_keys_with_sharded_keys

    by_key, _, _ = _replace_state_dict_keys_with_sharded_keys(sharded_state_dict, keep_only_main_replica)
    return by_key


def replace_rotary_embedding(gpt_model, rotary_embedding: torch.nn.Module) -> None:
    """Make ``gpt_model`` use ``rotary_embedding`` for RoPE.

    ``GPTModel`` builds its ``RotaryEmbedding`` in ``__init__`` with no spec slot or constructor argument to choose
    the class, and reads it from the attribute ``rotary_pos_emb`` on every forward. The host (CPU) model needs a
    RoPE module that does not move its frequencies to CUDA, so it replaces that attribute after construction.
    """
    if not hasattr(gpt_model, "rotary_pos_emb"):
        raise TypeError(
            f"{type(gpt_model).__name__} has no rotary_pos_emb: build it with position_embedding_type='rope'"
        )
    gpt_model.rotary_pos_emb = rotary_embedding


def rotary_embedding_table(rope, max_seq_len: int, offset: int = 0) -> torch.Tensor:
    """``RotaryEmbedding.get_emb`` without its move of ``inv_freq`` to CUDA: [s, 1, 1, dim] on ``inv_freq``'s device.

    Megatron's ``get_emb`` moves CPU frequencies to ``torch.cuda.current_device()`` on first use and has no option
    to stay on the host, so this repeats its layout (``get_freqs_non_repeated``, then the two halves concatenated,
    or interleaved with ``rotary_interleaved``) for the host model.
    """
    freqs = rope.get_freqs_non_repeated(max_seq_len, offset)
    if rope.rotary_interleaved:
        emb = torch.stack((freqs.view(-1, 1), freqs.view(-1, 1)), dim=-1).view(freqs.shape[0], -1)
    else:
        emb = torch.cat((freqs, freqs), dim=-1)
    return emb[:, None, None, :]


def mark_sequence_parallel(module: torch.nn.Module, sequence_parallel: bool) -> None:
    """Tag ``module``'s parameters so ``finalize_model_grads`` sums their gradients over the TP group under SP.

    Megatron finds the replicated parameters of sequence-parallel layers (norms) by the attribute
    ``param.sequence_parallel`` (as set by its own and Transformer Engine's norms), not by a registry.
    """
    for param in module.parameters():
        param.sequence_parallel = sequence_parallel


def torch_optimizers(megatron_optimizer) -> list[torch.optim.Optimizer]:
    """The torch optimizers inside a ``get_megatron_optimizer`` result, one per chained optimizer.

    Megatron exposes no accessor: a ``ChainedOptimizer`` keeps its parts in ``chained_optimizers`` and every
    ``MegatronOptimizer`` wraps its torch optimizer as ``optimizer``. The backend needs them to create Adam state
    before a checkpoint load and to put back per-parameter step counts after it.
    """
    return [part.optimizer for part in getattr(megatron_optimizer, "chained_optimizers", [megatron_optimizer])]


def sync_overlapped_params(ddp_chunk) -> None:
    """Finish a ``DistributedDataParallel`` chunk's overlapped parameter all-gather now, not at the next forward.

    With ``overlap_param_gather`` (``ddp_chunk.use_forward_hook``) the weights are gathered by forward pre-hooks;
    Megatron-LM's training loop disables the hooks with ``param_sync=True`` and re-enables them around evaluation
    and saving. Megatron-Core has no single call for it.
    """
    if ddp_chunk.use_forward_hook:
        ddp_chunk.disable_forward_pre_hook(param_sync=True)
        ddp_chunk.enable_forward_pre_hook()


def is_expert_parameter(param: torch.nn.Parameter) -> bool:
    """Whether ``param`` belongs to an expert (reduced over the expert-data-parallel group, not data-parallel).

    Megatron marks expert parameters with the attribute ``allreduce=False`` and its DDP, optimizer and grad buffers
    test ``getattr(param, "allreduce", True)``; there is no public predicate. The host backend reduces gradients the
    same way.
    """
    return not getattr(param, "allreduce", True)


PREBUILT_HELPERS_MAKEFILE = Path(__file__).parent / "megatron_lm" / "prebuilt_dataset_helpers.mk"


def use_prebuilt_dataset_helpers(environ=os.environ) -> None:
    """Megatron-LM's ``initialize_megatron`` runs ``make -C megatron/core/datasets`` on rank 0 and exits if it fails.
    The megatron-core wheel ships the compiled helpers (``helpers_cpp*.so``) but not the Makefile, so from a pip
    install ``pretrain`` stops with "No targets specified and no makefile found". GNU make reads the files named
    in ``MAKEFILES`` first; emo_plugin's one only checks that the compiled helpers are there. A source checkout
    keeps its own Makefile and is left alone."""
    from megatron.core import datasets

    if not any((Path(datasets.__file__).parent / name).exists() for name in ("GNUmakefile", "makefile", "Makefile")):
        environ["MAKEFILES"] = " ".join(filter(None, [environ.get("MAKEFILES"), str(PREBUILT_HELPERS_MAKEFILE)]))
