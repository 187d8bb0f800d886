"""One guard per Megatron internal in ``emo_plugin/megatron_compat.py``: each fails, naming the dependency, when the
installed megatron-core changes the private name, attribute or behaviour the plugin relies on.

The checks exercise Megatron itself (a plain ``MoELayer``, ``GPTModel``, ``GPTDataset``, ...) so that they stay
independent of the plugin code that depends on them. Where a behaviour is only reachable on CUDA or with
Transformer Engine, the guard reads Megatron's source for the exact statement relied on.
"""

import dataclasses
import functools
import importlib
import importlib.metadata
import inspect
import os
from pathlib import Path

import numpy
import pytest
import torch
from megatron.core import tensor_parallel
from megatron.core.datasets.gpt_dataset import GPTDataset
from megatron.core.dist_checkpointing.mapping import ShardedObject, ShardedTensor
from megatron.core.distributed import DistributedDataParallel
from megatron.core.models.common.embeddings.rotary_pos_embedding import RotaryEmbedding
from megatron.core.models.gpt.gpt_layer_specs import get_gpt_decoder_block_spec
from megatron.core.models.gpt.gpt_model import GPTModel
from megatron.core.optimizer.optimizer import ChainedOptimizer, MegatronOptimizer
from megatron.core.pipeline_parallel import schedules
from megatron.core.transformer.moe.moe_layer import MoELayer
from megatron.core.transformer.moe.moe_utils import get_default_pg_collection
from megatron.core.transformer.transformer_config import TransformerConfig
from packaging.requirements import Requirement
from packaging.specifiers import SpecifierSet
from packaging.utils import canonicalize_name

from emo_plugin import megatron_compat
from emo_plugin.model.spec import emo_decoder_block_spec
from tests.helpers import tiny_config

ROOT = Path(__file__).resolve().parents[1]
VOCAB, SEQ, BATCH = 64, 12, 2
finalize_module = importlib.import_module("megatron.core.distributed.finalize_model_grads")


class _ReachedUncheckpointedForward(Exception):
    pass


def _megatron_moe_layer(**config_overrides) -> MoELayer:
    """Megatron's own MoE layer (local spec, Megatron's router) built from an EMO-valid config."""
    config = tiny_config(**config_overrides)
    block = get_gpt_decoder_block_spec(config, use_transformer_engine=False, pp_rank=0)
    layer = block.layer_specs[0].submodules.mlp(config=config, pg_collection=get_default_pg_collection())
    assert isinstance(layer, MoELayer) and type(layer) is MoELayer, "the local spec no longer builds a plain MoELayer"
    return layer


def _record_checkpoint_calls(monkeypatch) -> list:
    calls = []

    def recorder(function, distribute_saved_activations, *args):
        calls.append((function, distribute_saved_activations, args))
        return "checkpointed"

    monkeypatch.setattr(tensor_parallel, "checkpoint", recorder)
    return calls


def test_installed_megatron_is_in_the_tested_range_and_others_are_refused(monkeypatch):
    installed = importlib.metadata.version("megatron-core")
    assert installed in megatron_compat.TESTED_MEGATRON_CORE, f"megatron-core {installed} is outside the tested range"
    monkeypatch.delenv(megatron_compat.ALLOW_UNTESTED_ENV, raising=False)
    with pytest.raises(megatron_compat.MegatronVersionError, match=r"megatron-core 0\.20\.0 is installed"):
        megatron_compat.check_megatron_version("0.20.0")
    monkeypatch.setenv(megatron_compat.ALLOW_UNTESTED_ENV, "1")
    with pytest.warns(UserWarning, match=r"megatron-core 0\.18\.1 is installed"):
        megatron_compat.check_megatron_version("0.18.1")


def _declared_megatron_requirement(requirements) -> Requirement:
    return next(r for r in map(Requirement, requirements) if canonicalize_name(r.name) == "megatron-core")


def test_tested_range_is_the_range_setup_cfg_declares():
    """One range: setup.cfg's install_requires is ``file: emo_plugin/install_requires.txt`` (read here by setuptools
    itself) and megatron_compat reads the same file, which wheels carry as package data."""
    from setuptools.config.setupcfg import read_configuration

    options = read_configuration(ROOT / "setup.cfg")["options"]
    declared = _declared_megatron_requirement(options["install_requires"])
    assert declared.specifier == megatron_compat.TESTED_MEGATRON_CORE == SpecifierSet(">=0.19.0,<0.20")
    assert megatron_compat.TESTED_RANGE == ">=0.19.0,<0.20"  # as written in the file: the refusal quotes it
    assert megatron_compat.INSTALL_REQUIRES == ROOT / "emo_plugin" / "install_requires.txt"
    assert "install_requires.txt" in options["package_data"]["emo_plugin"]


def test_installed_metadata_declares_the_tested_range():
    """What pip recorded when emo_plugin was installed (``pip install -e .``): stale after an edit of the range until
    the package is installed again."""
    try:
        requires = importlib.metadata.requires("emo_plugin")
    except importlib.metadata.PackageNotFoundError:
        pytest.skip("emo_plugin is not installed (run from a checkout)")
    declared = _declared_megatron_requirement(r for r in requires or [] if "extra ==" not in r)
    assert declared.specifier == megatron_compat.TESTED_MEGATRON_CORE, "reinstall: pip install -e ."


@pytest.mark.parametrize("text, message", [
    ("torch>=2\n", "no megatron-core requirement"),
    ("megatron-core\n", "is not a plain megatron-core version range"),
    ("megatron-core>=0.19; python_version > '3'\n", "is not a plain megatron-core version range"),
    ("megatron-core[dev]>=0.19\n", "is not a plain megatron-core version range"),
])
def test_declared_range_must_be_a_plain_megatron_core_range(tmp_path, text, message):
    requirements = tmp_path / "install_requires.txt"
    requirements.write_text("# comment\n\n" + text)
    with pytest.raises(megatron_compat.MegatronVersionError, match=message):
        megatron_compat.declared_megatron_range(requirements)
    requirements.write_text("# comment\ntorch\n  megatron_core >=0.1, <0.3 \n")
    assert megatron_compat.declared_megatron_range(requirements) == ">=0.1, <0.3"
    with pytest.raises(megatron_compat.MegatronVersionError, match="cannot read emo_plugin's requirements"):
        megatron_compat.declared_megatron_range(tmp_path / "missing.txt")


@pytest.mark.usefixtures("megatron_single_rank")
def test_take_over_moe_recompute_relies_on_moe_layer_recompute_attribute(monkeypatch):
    layer = _megatron_moe_layer(recompute_granularity="selective", recompute_modules=["moe"]).train()
    assert getattr(layer, "moe_layer_recompute", None) is True, (
        "MoELayer no longer stores selective MoE recompute in `moe_layer_recompute`: "
        "megatron_compat.take_over_moe_recompute must change"
    )
    calls = _record_checkpoint_calls(monkeypatch)
    hidden = torch.randn(SEQ, BATCH, layer.config.hidden_size)
    assert layer(hidden) == "checkpointed" and len(calls) == 1, "MoELayer.forward does not checkpoint when recomputing"

    assert megatron_compat.take_over_moe_recompute(layer) is True
    layer.shared_experts_compute = lambda *args: (_ for _ in ()).throw(_ReachedUncheckpointedForward())
    with pytest.raises(_ReachedUncheckpointedForward):
        layer(hidden)
    assert len(calls) == 1, "MoELayer.forward still checkpoints after `moe_layer_recompute` was cleared"
    assert megatron_compat.take_over_moe_recompute(_megatron_moe_layer()) is False


@pytest.mark.usefixtures("megatron_single_rank")
def test_checkpoint_moe_forward_matches_moe_layer_own_checkpoint(monkeypatch):
    layer = _megatron_moe_layer(recompute_granularity="selective", recompute_modules=["moe"]).train()
    calls = _record_checkpoint_calls(monkeypatch)
    hidden = torch.randn(SEQ, BATCH, layer.config.hidden_size)
    padding = torch.zeros(BATCH, SEQ, dtype=torch.bool)
    layer(hidden, padding_mask=padding)
    _, megatron_distribute, megatron_args = calls[0]
    assert megatron_distribute is False and megatron_args[0] is hidden and len(megatron_args) == 3, (
        "MoELayer.forward changed its tensor_parallel.checkpoint call "
        "(expected: custom_forward, False, hidden_states, intermediate_tensors, padding_mask)"
    )
    assert megatron_compat.checkpoint_moe_forward(layer, torch.add, hidden, padding) == "checkpointed"
    assert calls[1] == (torch.add, False, (hidden, padding))

    source = inspect.getsource(MoELayer.forward)
    for statement in ("if self.moe_layer_recompute and self.training:", "if self.config.fp8 or self.config.fp4:"):
        assert statement in source, f"MoELayer.forward no longer contains {statement!r}"
    te_call = source[source.index("te_checkpoint(") :].split(")")[0]
    for argument in ("custom_forward", "False", "tensor_parallel.random.get_cuda_rng_tracker", "self.tp_group"):
        assert argument in te_call, f"MoELayer.forward's te_checkpoint call no longer passes {argument}"


@pytest.mark.usefixtures("megatron_single_rank")
def test_step_reset_load_balancing_type_makes_finalize_model_grads_call_the_reset_hook():
    reset_type = megatron_compat.step_reset_load_balancing_type()
    config = TransformerConfig(  # Megatron must accept the type with a zero coefficient
        num_layers=1,
        hidden_size=8,
        num_attention_heads=1,
        num_moe_experts=4,
        moe_router_load_balancing_type=reset_type,
        moe_aux_loss_coeff=0.0,
    )

    class Router(torch.nn.Module):
        resets = 0

        def reset_global_aux_loss_tracker(self):
            self.resets += 1

    router = Router()
    chunk = torch.nn.Sequential(torch.nn.Linear(2, 2), router)
    finalize_module.reset_model_temporary_tensors(config, [chunk])
    assert router.resets == 1, f"reset_model_temporary_tensors no longer resets routers for {reset_type!r}"
    assert "reset_model_temporary_tensors(config, model)" in inspect.getsource(finalize_module.finalize_model_grads), (
        "finalize_model_grads no longer calls reset_model_temporary_tensors once per step"
    )


def test_aux_loss_gradient_averaging_ranks_relies_on_schedules_scaling_by_cp():
    source = inspect.getsource(schedules)
    assert "MoEAuxLossAutoScaler.set_loss_scale(loss_scale * cp_size_for_scaling / num_microbatches)" in source, (
        "Megatron's schedules no longer multiply the aux-loss gradient scale by the context-parallel size: "
        "megatron_compat.aux_loss_gradient_averaging_ranks must change"
    )
    assert megatron_compat.aux_loss_gradient_averaging_ranks(tp_dp_cp_size=16, tp_cp_size=4) == 4


def test_document_sample_relies_on_query_document_sample_shuffle_indices():
    class Tokens:
        documents = (numpy.arange(10, 15), numpy.arange(20, 23), numpy.arange(30, 40))

        def get(self, doc, offset=0, length=None):
            data = self.documents[doc][offset:]
            return data if length is None else data[:length]

    class Dataset(GPTDataset):  # only the attributes _query_document_sample_shuffle_indices reads
        shuffle_index = numpy.array([0])
        sample_index = numpy.array([[0, 2], [2, 4]])  # starts in doc 0 at token 2, ends in doc 2 at token 4
        document_index = numpy.array([0, 1, 2])
        dataset = Tokens()
        config = type("Config", (), {"add_extra_token_to_sequence": True, "sequence_length": 12})()
        _pad_token_id = -1

    assert hasattr(GPTDataset, "_query_document_sample_shuffle_indices"), (
        "GPTDataset._query_document_sample_shuffle_indices is gone: megatron_compat.document_sample must change"
    )
    text, lengths = megatron_compat.document_sample(object.__new__(Dataset), 0)
    assert list(lengths) == [3, 3, 5], f"document lengths {lengths}"
    assert text.tolist() == [12, 13, 14, 20, 21, 22, 30, 31, 32, 33, 34, -1, -1]


def test_sharded_entries_by_key_groups_megatron_sharded_entries_by_checkpoint_key():
    main = ShardedTensor.from_rank_offsets("layer.weight", torch.ones(2, 2), replica_id=0)
    replica = ShardedTensor.from_rank_offsets("layer.weight", torch.ones(2, 2), replica_id=1)
    extra = ShardedObject("rng", torch.zeros(1), (1,), (0,), replica_id=0)
    state = {"model": {"a": main, "b": replica}, "rng": extra}

    by_key = megatron_compat.sharded_entries_by_key(state, keep_only_main_replica=False)
    assert by_key == {"layer.weight": [main, replica], extra.unique_key: [extra]}, f"got {by_key}"
    assert megatron_compat.sharded_entries_by_key(state, keep_only_main_replica=True)["layer.weight"] == [main]


@pytest.mark.usefixtures("megatron_single_rank")
def test_replace_rotary_embedding_relies_on_gpt_model_rotary_pos_emb_attribute():
    config = tiny_config()
    model = GPTModel(
        config=config,
        transformer_layer_spec=emo_decoder_block_spec(config, use_transformer_engine=False, host_attention=True),
        vocab_size=VOCAB,
        max_sequence_length=SEQ,
        position_embedding_type="rope",
    )
    assert isinstance(getattr(model, "rotary_pos_emb", None), RotaryEmbedding), (
        "GPTModel no longer keeps its RoPE module in `rotary_pos_emb`: megatron_compat.replace_rotary_embedding"
    )

    class RecordingRope(RotaryEmbedding):
        calls = 0

        def get_emb(self, max_seq_len, offset=0):
            RecordingRope.calls += 1
            return megatron_compat.rotary_embedding_table(self, max_seq_len, offset)

    rope = RecordingRope(kv_channels=config.kv_channels, rotary_percent=1.0, use_cpu_initialization=True)
    megatron_compat.replace_rotary_embedding(model, rope)
    tokens = torch.randint(0, VOCAB, (BATCH, SEQ))
    model.eval()(tokens, torch.arange(SEQ).expand(BATCH, SEQ), None)
    assert RecordingRope.calls == 1, "GPTModel.forward no longer reads RoPE from `rotary_pos_emb`"


@pytest.mark.parametrize("interleaved", [False, True])
def test_rotary_embedding_table_equals_megatron_get_emb(monkeypatch, interleaved):
    rope = RotaryEmbedding(
        kv_channels=8, rotary_percent=1.0, rotary_interleaved=interleaved, use_cpu_initialization=True
    )
    ours = megatron_compat.rotary_embedding_table(rope, 7, offset=3)
    monkeypatch.setattr(torch.cuda, "current_device", lambda: "cpu")  # Megatron's get_emb moves inv_freq there
    torch.testing.assert_close(
        ours, rope.get_emb(7, offset=3), msg="RotaryEmbedding.get_emb changed: update rotary_embedding_table"
    )


def test_mark_sequence_parallel_relies_on_the_param_attribute_finalize_model_grads_reads():
    source = inspect.getsource(finalize_module)
    assert 'config.sequence_parallel and getattr(param, "sequence_parallel", False)' in source, (
        "finalize_model_grads no longer finds sequence-parallel parameters by `param.sequence_parallel`: "
        "megatron_compat.mark_sequence_parallel must change"
    )
    norm = torch.nn.RMSNorm(4)
    megatron_compat.mark_sequence_parallel(norm, True)
    assert all(param.sequence_parallel is True for param in norm.parameters())


def test_torch_optimizers_relies_on_chained_optimizers_and_optimizer_attributes():
    chained_init = inspect.getsource(ChainedOptimizer.__init__)
    assert "self.chained_optimizers = chained_optimizers" in chained_init, (
        "ChainedOptimizer no longer keeps its parts in `chained_optimizers`: megatron_compat.torch_optimizers"
    )
    assert "self.optimizer = optimizer" in inspect.getsource(MegatronOptimizer.__init__), (
        "MegatronOptimizer no longer wraps its torch optimizer as `optimizer`: megatron_compat.torch_optimizers"
    )
    adam = torch.optim.Adam(torch.nn.Linear(2, 2).parameters())
    single = type("Wrapped", (), {"optimizer": adam})()
    chained = type("Chained", (), {"chained_optimizers": [single, single]})()
    assert megatron_compat.torch_optimizers(single) == [adam]
    assert megatron_compat.torch_optimizers(chained) == [adam, adam]


def test_sync_overlapped_params_relies_on_ddp_forward_pre_hook_api():
    assert "self.use_forward_hook = self.ddp_config.overlap_param_gather" in inspect.getsource(
        DistributedDataParallel.__init__
    ), "DistributedDataParallel no longer flags overlapped param gather as `use_forward_hook`"
    disable = inspect.signature(DistributedDataParallel.disable_forward_pre_hook)
    assert "param_sync" in disable.parameters, "disable_forward_pre_hook lost its `param_sync` argument"
    assert "param_sync" in inspect.getsource(DistributedDataParallel.disable_forward_pre_hook)
    assert list(inspect.signature(DistributedDataParallel.enable_forward_pre_hook).parameters) == ["self"]

    class Chunk:
        use_forward_hook = True

        def __init__(self):
            self.calls = []

        def disable_forward_pre_hook(self, param_sync):
            self.calls.append(("disable", param_sync))

        def enable_forward_pre_hook(self):
            self.calls.append(("enable",))

    megatron_compat.sync_overlapped_params(chunk := Chunk())
    assert chunk.calls == [("disable", True), ("enable",)]


def test_megatron_moe_spec_is_a_partial_of_moe_layer_with_a_router_slot():
    """Public seam ``model/spec.py`` relies on; if it changed, EMO routing would silently not be installed."""
    block = get_gpt_decoder_block_spec(tiny_config(), use_transformer_engine=False, pp_rank=0)
    mlp = block.layer_specs[0].submodules.mlp
    assert isinstance(mlp, functools.partial) and mlp.func is MoELayer, f"MoE spec is {mlp!r}, not partial(MoELayer)"
    submodules = mlp.keywords["submodules"]
    assert dataclasses.is_dataclass(submodules) and "router" in {f.name for f in dataclasses.fields(submodules)}


def test_is_expert_parameter_relies_on_megatron_allreduce_attribute():
    layers_source = inspect.getsource(importlib.import_module("megatron.core.tensor_parallel.layers"))
    assert layers_source.count('setattr(self.weight, "allreduce", not use_expert_pgs)') == 2, (
        "Megatron's parallel linears no longer mark expert-parallel weights `allreduce=False`: "
        "megatron_compat.is_expert_parameter must change"
    )
    buffer_source = inspect.getsource(importlib.import_module("megatron.core.distributed.param_and_grad_buffer"))
    assert "not getattr(param, 'allreduce', True)" in buffer_source, (
        "Megatron's grad buffers no longer tell expert parameters by `allreduce`"
    )
    expert, dense = torch.nn.Parameter(torch.ones(1)), torch.nn.Parameter(torch.ones(1))
    expert.allreduce = False
    assert megatron_compat.is_expert_parameter(expert) and not megatron_compat.is_expert_parameter(dense)


def test_use_prebuilt_dataset_helpers_relies_on_initialize_megatron_running_make(tmp_path):
    """Megatron-LM's initialize_megatron runs ``make -C megatron/core/datasets``; the megatron-core wheel has no
    Makefile there, so without emo_plugin's MAKEFILES entry that make fails and pretrain exits."""
    import subprocess

    from megatron.core import datasets
    from megatron.training import initialize

    assert "compile_helpers()" in inspect.getsource(initialize._compile_dependencies), (
        "initialize_megatron no longer compiles the dataset helpers: megatron_compat.use_prebuilt_dataset_helpers "
        "may go")
    helpers = Path(datasets.__file__).parent
    environ: dict = {}
    megatron_compat.use_prebuilt_dataset_helpers(environ)
    if any((helpers / name).exists() for name in ("GNUmakefile", "makefile", "Makefile")):
        assert environ == {}  # a source checkout builds with its own Makefile
    else:
        assert subprocess.run(["make", "-C", str(helpers)], capture_output=True).returncode != 0
        assert subprocess.run(["make", "-C", str(helpers)], env={**os.environ, **environ}).returncode == 0
    # where the compiled helpers are missing, the check says so
    empty = subprocess.run(["make", "-C", str(tmp_path)], capture_output=True, text=True,
                           env={**os.environ, "MAKEFILES": str(megatron_compat.PREBUILT_HELPERS_MAKEFILE)})
    assert empty.returncode != 0 and "compiled dataset helpers (helpers_cpp*.so) are missing" in empty.stderr
