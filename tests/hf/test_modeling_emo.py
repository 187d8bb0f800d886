"""Tests of the HF EMO model: checkpoint format, routing against plain-PyTorch references, pruning, generate()."""

import ast
import json
import pathlib
import sys

import pytest
import torch
import torch.nn.functional as F
from safetensors import safe_open
from transformers import AutoConfig, AutoModelForCausalLM

from emo_plugin.hf import EmoConfig, EmoForCausalLM
from emo_plugin.hf.modeling_emo import document_ids_from_eos
from tests.helpers import tiny_hf_fields

EOS, PAD = 1, 0
HF_DIR = pathlib.Path(__file__).resolve().parents[2] / "emo_plugin" / "hf"


def tiny_config(**overrides):
    """The tiny shape (``tests/helpers.py``): 2 layers, 9 Hugging Face experts (the last one shared), 3 per token
    including the shared one."""
    return EmoConfig(**tiny_hf_fields(**{"rope_theta": 10000.0, "eos_token_id": EOS, "pad_token_id": PAD, **overrides}))


def tiny_model(config=None, seed=0):
    """Random model whose routers are sharp enough that routing actually depends on the token."""
    torch.manual_seed(seed)
    model = EmoForCausalLM(config or tiny_config()).eval()
    with torch.no_grad():
        for layer in model.model.layers:
            layer.mlp.gate.weight.normal_(std=1.0)
    return model


def random_tokens(batch_size, seq_len, seed=1):
    """Token ids that are neither eos nor padding."""
    return torch.randint(2, 64, (batch_size, seq_len), generator=torch.Generator().manual_seed(seed))


def reference_expert(expert, x_H):
    """SwiGLU written out from the expert's weights."""
    hidden = F.silu(x_H @ expert.gate_proj.weight.T) * (x_H @ expert.up_proj.weight.T)
    return hidden @ expert.down_proj.weight.T


def reference_token_output(block, x_H, allowed_experts=None):
    """One token through one MoE block, as the routing is specified (routed: softmax over the allowed routed
    experts, top-(k - S), no renormalisation; shared: weight 1)."""
    n_routed = block.n_routed
    logits_R = (x_H.float() @ block.gate.weight.float().T)[:n_routed]
    if allowed_experts is not None:
        logits_R = torch.where(allowed_experts, logits_R, torch.tensor(float("-inf")))
    probs_R = torch.softmax(logits_R, dim=-1)
    chosen = torch.argsort(probs_R, descending=True)[: block.routed_per_token]
    out_H = sum(probs_R[e] * reference_expert(block.experts[int(e)], x_H) for e in chosen)
    return out_H + sum(reference_expert(shared, x_H) for shared in block.experts[n_routed:])


def reference_pools(block, x_TH, document_ids_T, token_valid_T, pool_size):
    """Per-document pools by an explicit loop over documents: {document id: bool mask over routed experts}."""
    pools = {}
    for doc in document_ids_T.unique().tolist():
        tokens = (document_ids_T == doc) & token_valid_T
        logits_TR = (x_TH[tokens].float() @ block.gate.weight.float().T)[:, : block.n_routed]
        scores_R = torch.softmax(logits_TR, dim=-1).sum(dim=0)
        ranked = sorted(range(block.n_routed), key=lambda e: (-scores_R[e].item(), e))
        pools[doc] = torch.zeros(block.n_routed, dtype=torch.bool)
        pools[doc][ranked[:pool_size]] = True
    return pools


def capture_mlp_io(model, layer_idx):
    """Records (input, output) of one layer's MoE block during the next forward pass."""
    captured = {}

    def hook(module, args, output):
        captured["x_BTH"], captured["out_BTH"] = args[0].detach(), output.detach()

    return captured, model.model.layers[layer_idx].mlp.register_forward_hook(hook)


def save_with_code(model, directory):
    """save_pretrained; importing emo_plugin.hf makes it write auto_map and copy both code files."""
    model.save_pretrained(directory)
    return directory


# --------------------------------------------------------------------------------------------- format


def test_config_round_trip(tmp_path):
    config = tiny_config(
        num_experts_per_layer=[9, 6], num_shared_experts_per_layer=[1, 2], emo_inference_pool_size=4
    )
    config.save_pretrained(tmp_path)
    loaded = EmoConfig.from_pretrained(tmp_path)
    for field in ("num_experts_per_layer", "num_shared_experts_per_layer", "emo_inference_pool_size",
                  "num_experts", "num_experts_per_tok", "num_shared_experts", "norm_topk_prob", "rope_theta",
                  "rms_norm_eps", "num_key_value_heads", "eos_token_id", "pad_token_id", "tie_word_embeddings"):
        assert getattr(loaded, field) == getattr(config, field), field
    assert [loaded.expert_slots(i) for i in range(2)] == [(9, 1), (6, 2)]
    assert tiny_config(num_experts_per_layer=[5, 4]).expert_slots(1) == (4, 1)


@pytest.mark.parametrize(
    "bad_fields",
    [
        dict(tie_word_embeddings=True),
        dict(num_experts_per_layer=[9]),
        dict(num_experts_per_layer=[9, 2]),  # 1 routed expert left, 2 needed per token
        dict(emo_inference_pool_size=1),
    ],
)
def test_config_rejects_inconsistent_fields(bad_fields):
    with pytest.raises(ValueError):
        tiny_config(**bad_fields)


def test_checkpoint_layout_and_remote_code_reload(tmp_path):
    model = tiny_model()
    save_with_code(model, tmp_path)

    config_json = json.loads((tmp_path / "config.json").read_text())
    assert config_json["model_type"] == "emo"
    assert config_json["architectures"] == ["EmoForCausalLM"]
    assert config_json["auto_map"] == {
        "AutoConfig": "configuration_emo.EmoConfig",
        "AutoModelForCausalLM": "modeling_emo.EmoForCausalLM",
    }
    assert config_json["norm_topk_prob"] is False and config_json["tie_word_embeddings"] is False
    with safe_open(tmp_path / "model.safetensors", "pt") as weights:
        names = set(weights.keys())
        assert weights.get_tensor("model.layers.0.mlp.gate.weight").shape == (9, 32)
    per_layer = ["self_attn.q_proj", "self_attn.k_proj", "self_attn.v_proj", "self_attn.o_proj", "mlp.gate",
                 "pre_attention_layernorm", "pre_feedforward_layernorm"]
    per_layer += [f"mlp.experts.{e}.{p}" for e in range(9) for p in ("gate_proj", "up_proj", "down_proj")]
    expected = {"model.embed_tokens.weight", "model.norm.weight", "lm_head.weight"}
    expected |= {f"model.layers.{layer}.{name}.weight" for layer in range(2) for name in per_layer}
    assert names == expected

    reloaded = AutoModelForCausalLM.from_pretrained(tmp_path, trust_remote_code=True).eval()
    assert type(reloaded).__name__ == "EmoForCausalLM" and type(reloaded) is not EmoForCausalLM
    assert type(AutoConfig.from_pretrained(tmp_path, trust_remote_code=True)).__name__ == "EmoConfig"
    input_ids = random_tokens(2, 12)
    with torch.no_grad():
        assert torch.equal(reloaded(input_ids).logits, model(input_ids).logits)


def test_modeling_files_are_self_contained():
    """They are copied next to config.json, so they may import only torch, transformers, stdlib and the config."""
    for filename in ("configuration_emo.py", "modeling_emo.py"):
        tree = ast.parse((HF_DIR / filename).read_text())
        for node in ast.walk(tree):
            if isinstance(node, ast.Import):
                roots = {alias.name.split(".")[0] for alias in node.names}
            elif isinstance(node, ast.ImportFrom):
                roots = {"." + node.module} if node.level else {node.module.split(".")[0]}
            else:
                continue
            allowed = {"torch", "transformers", ".configuration_emo"} | sys.stdlib_module_names
            assert roots <= allowed, (filename, roots)


# --------------------------------------------------------------------------------------------- routing


@pytest.mark.parametrize("layer_idx", [0, 1])
def test_moe_block_matches_per_token_reference(layer_idx):
    """Layer 1 has 7 slots of which 2 shared (k - S = 1 routed expert per token)."""
    model = tiny_model(tiny_config(num_experts_per_layer=[9, 7], num_shared_experts_per_layer=[1, 2]))
    block = model.model.layers[layer_idx].mlp
    x_BTH = torch.randn(2, 5, 32, generator=torch.Generator().manual_seed(3))
    with torch.no_grad():
        out_BTH = block(x_BTH)
        expected_NH = torch.stack([reference_token_output(block, x_H) for x_H in x_BTH.reshape(-1, 32)])
    torch.testing.assert_close(out_BTH.reshape(-1, 32), expected_NH, rtol=1e-5, atol=1e-6)


def test_document_ids_give_eos_to_the_document_it_ends():
    input_ids = torch.tensor([[5, EOS, 7, 8, EOS, 9], [EOS, 3, 4, 5, 6, 7]])
    expected = torch.tensor([[0, 0, 1, 1, 1, 2], [6, 7, 7, 7, 7, 7]])
    assert torch.equal(document_ids_from_eos(input_ids, EOS), expected)
    several_eos_ids = torch.tensor([[0, 0, 1, 2, 2, 3], [6, 7, 7, 7, 7, 7]])
    assert torch.equal(document_ids_from_eos(input_ids, [EOS, 7]), several_eos_ids)


def test_starts_grouping_gives_eos_to_the_next_document():
    input_ids = torch.tensor([[5, EOS, 7, 8, EOS, 9], [EOS, 3, 4, 5, 6, EOS], [EOS] * 6])
    expected = torch.tensor([[0, 1, 1, 1, 2, 2], [6, 6, 6, 6, 6, 7], [12, 13, 14, 15, 16, 17]])
    assert torch.equal(document_ids_from_eos(input_ids, EOS, "starts"), expected)


@pytest.mark.parametrize("eos_grouping", ["ends", "starts"])
def test_hf_documents_are_megatrons_routing_segments(eos_grouping):
    """The same partition of every row into documents as the training router's segments (routing_ids.py)."""
    from emo_plugin.moe.routing_ids import build_routing_ids, split_routing_ids

    input_ids = random_tokens(5, 24)
    input_ids[input_ids % 4 == 0] = EOS
    input_ids[0, 0] = input_ids[1, -1] = input_ids[2, 3:6] = EOS
    hf_BT = document_ids_from_eos(input_ids, EOS, eos_grouping)
    ids = build_routing_ids(tokens_BS=input_ids, eod_token_id=EOS, max_documents_per_sequence=24,
                            eos_grouping=eos_grouping)
    segments_BT = split_routing_ids(ids)[0]
    for hf_T, segments_T in zip(hf_BT, segments_BT):
        assert torch.equal(hf_T - hf_T[0], segments_T - 1)  # both number the row's documents consecutively


def test_eos_grouping_is_validated():
    with pytest.raises(ValueError, match="emo_eos_grouping='middle'"):
        tiny_config(emo_eos_grouping="middle")


@pytest.mark.parametrize("eos_grouping", ["ends", "starts"])
def test_document_pools_match_per_document_reference(eos_grouping):
    """Row 0: two documents; row 1: left padding (excluded from the pool scores) and one document.
    Checked end to end: the model finds the documents itself (with its configured eos grouping) and each MoE
    block routes within the pools."""
    pool_size = 3
    model = tiny_model(tiny_config(emo_inference_pool_size=pool_size, emo_eos_grouping=eos_grouping))
    input_ids = random_tokens(2, 12)
    input_ids[0, 5] = EOS
    input_ids[1, :3] = PAD
    attention_mask = torch.ones_like(input_ids)
    attention_mask[1, :3] = 0
    document_ids_BT = document_ids_from_eos(input_ids, EOS, eos_grouping)
    assert document_ids_BT[0].unique().numel() == 2

    for layer_idx in range(2):
        captured, handle = capture_mlp_io(model, layer_idx)
        with torch.no_grad():
            model(input_ids, attention_mask=attention_mask)
        handle.remove()
        block = model.model.layers[layer_idx].mlp
        x_NH = captured["x_BTH"].reshape(-1, 32)
        doc_N, valid_N = document_ids_BT.reshape(-1), attention_mask.bool().reshape(-1)
        pools = reference_pools(block, x_NH, doc_N, valid_N, pool_size)
        assert not torch.equal(pools[0], pools[1])  # the two documents of row 0 really use different pools
        with torch.no_grad():
            expected_NH = torch.stack(
                [reference_token_output(block, x_H, pools[int(doc)]) for x_H, doc in zip(x_NH, doc_N)]
            )
            unrestricted_NH = torch.stack([reference_token_output(block, x_H) for x_H in x_NH])
        out_NH = captured["out_BTH"].reshape(-1, 32)
        torch.testing.assert_close(out_NH[valid_N], expected_NH[valid_N], rtol=1e-5, atol=1e-6)
        assert not torch.allclose(out_NH[valid_N], unrestricted_NH[valid_N])


def test_padding_only_document_routes_to_kept_experts():
    """Right padding after an eos is a document without valid tokens: all its pool scores are zero. Its pool must
    still hold kept experts (dropped ones rank last), else its tokens have no expert and NaN reaches the batch."""
    model = tiny_model(tiny_config(emo_inference_pool_size=3))
    kept_R = torch.zeros(8, dtype=torch.bool)
    kept_R[[5, 6, 7]] = True  # the lowest-index experts, which win ties of zero scores, are dropped
    model.set_expert_mask({0: kept_R, 1: kept_R})
    input_ids = random_tokens(2, 12)
    input_ids[1, 8] = EOS
    input_ids[1, 9:] = PAD
    attention_mask = torch.ones_like(input_ids)
    attention_mask[1, 9:] = 0
    with torch.no_grad():
        padded = model(input_ids, attention_mask=attention_mask).logits
        alone = model(input_ids[1:, :9]).logits
    assert torch.isfinite(padded).all()
    torch.testing.assert_close(padded[1, :9], alone[0], rtol=1e-5, atol=1e-5)


def test_router_gets_gradients_through_pool_routing():
    model = tiny_model(tiny_config(emo_inference_pool_size=3)).train()
    input_ids = random_tokens(2, 10)
    input_ids[:, 4] = EOS
    model(input_ids, labels=input_ids).loss.backward()
    assert model.model.layers[0].mlp.gate.weight.grad.abs().sum() > 0


def test_pool_covering_all_routed_experts_changes_nothing():
    """Pool size 8 = all routed experts, which the block does not even compute; checked without that shortcut:
    the pool mask itself admits every routed expert of every document, and each MoE block's output equals the
    per-token reference routed over all experts (fp32 sums of 3 expert outputs: 1e-5 relative)."""
    from emo_plugin.hf.modeling_emo import document_pool_mask

    model = tiny_model(tiny_config(emo_inference_pool_size=8))
    input_ids = random_tokens(2, 10)
    input_ids[:, 4] = EOS
    doc_N = document_ids_from_eos(input_ids, EOS).reshape(-1)
    for layer_idx in range(2):
        captured, handle = capture_mlp_io(model, layer_idx)
        with torch.no_grad():
            model(input_ids)
            handle.remove()
            block = model.model.layers[layer_idx].mlp
            x_NH = captured["x_BTH"].reshape(-1, 32)
            logits_NR = (x_NH @ block.gate.weight.T)[:, : block.n_routed]
            assert document_pool_mask(logits_NR, doc_N, None, 8).all()
            expected_NH = torch.stack([reference_token_output(block, x_H) for x_H in x_NH])
        torch.testing.assert_close(captured["out_BTH"].reshape(-1, 32), expected_NH, rtol=1e-5, atol=1e-6)


def test_pruned_checkpoint_matches_masked_full_model(tmp_path):
    """Physically slicing gate rows and experts equals masking the same experts' logits before the softmax."""
    full = tiny_model()
    kept_routed = {0: [0, 2, 3, 7], 1: [1, 4, 5]}
    shared_slot = 8
    pruned = EmoForCausalLM(tiny_config(num_experts_per_layer=[5, 4], num_shared_experts_per_layer=[1, 1]))
    pruned_state = {}
    for name, tensor in full.state_dict().items():
        if ".mlp." not in name:
            pruned_state[name] = tensor
            continue
        layer_idx = int(name.split(".")[2])
        old_slots = kept_routed[layer_idx] + [shared_slot]
        if name.endswith("mlp.gate.weight"):
            pruned_state[name] = tensor[old_slots]
        else:
            old_slot = int(name.split(".")[5])
            if old_slot in old_slots:
                pruned_state[name.replace(f"experts.{old_slot}.", f"experts.{old_slots.index(old_slot)}.")] = tensor
    pruned.load_state_dict(pruned_state, strict=True)
    save_with_code(pruned, tmp_path)
    pruned = AutoModelForCausalLM.from_pretrained(tmp_path, trust_remote_code=True).eval()

    keep_masks = {}
    for layer_idx, kept in kept_routed.items():
        keep_masks[layer_idx] = torch.zeros(8, dtype=torch.bool)
        keep_masks[layer_idx][kept] = True
    full.set_expert_mask(keep_masks)
    input_ids = random_tokens(2, 12)
    with torch.no_grad():
        masked_logits = full(input_ids).logits
        torch.testing.assert_close(pruned(input_ids).logits, masked_logits, rtol=1e-6, atol=1e-6)
        full.set_expert_mask(None)
        assert not torch.allclose(full(input_ids).logits, masked_logits)


def test_expert_mask_must_leave_enough_experts():
    model = tiny_model()
    with pytest.raises(ValueError):
        model.set_expert_mask({0: torch.tensor([True] + [False] * 7)})


# --------------------------------------------------------------------------------------------- public routing API


def test_routed_expert_counts_per_layer():
    """Layer 1: 7 slots of which 2 shared, so 5 routed and 3 - 2 = 1 routed expert per token."""
    model = tiny_model(tiny_config(num_experts_per_layer=[9, 7], num_shared_experts_per_layer=[1, 2]))
    assert [model.num_routed_experts(i) for i in range(2)] == [8, 5]
    assert [model.num_routed_experts_per_token(i) for i in range(2)] == [2, 1]
    with pytest.raises(IndexError, match="2 layers"):
        model.num_routed_experts(2)


def test_observer_reports_router_softmax_and_chosen_experts_without_changing_outputs():
    """Probabilities recomputed here from the captured MoE inputs and the gate weights; layer 0 is masked, so
    its dropped experts have probability 0 and are never chosen."""
    model = tiny_model()
    kept_R = torch.tensor([True, False, True, True, False, True, False, True])
    model.set_expert_mask({0: kept_R})
    input_ids = random_tokens(2, 7)
    with torch.no_grad():
        plain_logits = model(input_ids).logits
    events, inputs = [], {}
    hooks = [
        model.model.layers[i].mlp.register_forward_hook(lambda m, args, out, i=i: inputs.update({i: args[0]}))
        for i in range(2)
    ]
    with torch.no_grad(), model.observe_routing(events.append):
        observed_logits = model(input_ids).logits
    for hook in hooks:
        hook.remove()
    assert torch.equal(observed_logits, plain_logits)
    assert [event.layer_idx for event in events] == [0, 1]
    for event in events:
        x_NH = inputs[event.layer_idx].reshape(-1, 32)
        logits_NR = x_NH.float() @ model.model.layers[event.layer_idx].mlp.gate.weight.float()[:8].T
        if event.layer_idx == 0:
            logits_NR[:, ~kept_R] = float("-inf")
        torch.testing.assert_close(event.probabilities_TR, torch.softmax(logits_NR, dim=-1), rtol=1e-6, atol=1e-7)
        assert torch.equal(event.hidden_TH, x_NH) and event.expert_idx_TK.shape == (14, 2)
        expected_top = torch.softmax(logits_NR, dim=-1).topk(2, dim=-1)
        assert torch.equal(event.expert_idx_TK.sort(dim=-1).values, expected_top.indices.sort(dim=-1).values)
    assert kept_R[events[0].expert_idx_TK].all() and (events[0].probabilities_TR[:, ~kept_R] == 0).all()
    assert torch.equal(model.expert_mask(0), kept_R)
    assert model.expert_mask(1) is None

    calls = []
    with torch.no_grad(), model.observe_routing(calls.append, layers=[1]):
        model(input_ids)
    assert [event.layer_idx for event in calls] == [1]
    with torch.no_grad():
        model(input_ids)
    assert len(calls) == 1  # the observer is gone after the block


def test_expert_mask_keeps_dropped_experts_out_of_the_forward_pass():
    """Forward hooks on the experts themselves: a dropped expert never receives a token."""
    model = tiny_model()
    dropped = [1, 4, 6]
    kept_R = torch.ones(8, dtype=torch.bool)
    kept_R[dropped] = False
    model.set_expert_mask({0: kept_R, 1: kept_R})
    tokens_seen = {}
    hooks = []
    for layer_idx in range(2):
        for expert_idx in range(8):
            key = (layer_idx, expert_idx)
            expert = model.model.layers[layer_idx].mlp.experts[expert_idx]
            hooks.append(expert.register_forward_hook(
                lambda m, args, out, key=key: tokens_seen.update({key: tokens_seen.get(key, 0) + args[0].shape[0]})
            ))
    with torch.no_grad():
        model(random_tokens(3, 11))
    for hook in hooks:
        hook.remove()
    assert all(tokens_seen[(layer, e)] == 0 for layer in range(2) for e in dropped)
    assert sum(tokens_seen[(0, e)] for e in range(8)) == 3 * 11 * 2  # 2 routed experts per token


def test_routed_expert_output_is_the_experts_swiglu():
    model = tiny_model()
    x_NH = torch.randn(5, 32, generator=torch.Generator().manual_seed(4))
    with torch.no_grad():
        expected = reference_expert(model.model.layers[1].mlp.experts[3], x_NH)
        torch.testing.assert_close(model.routed_expert_output(1, 3, x_NH), expected, rtol=1e-5, atol=1e-6)
    with pytest.raises(IndexError, match="routed experts 0..7"):
        model.routed_expert_output(1, 8, x_NH)  # slot 8 is the shared expert


def test_set_inference_pool_size_equals_the_config_setting_and_refuses_too_small_pools():
    input_ids = random_tokens(2, 12)
    input_ids[0, 5] = EOS
    model = tiny_model()
    with torch.no_grad():
        unpooled = model(input_ids).logits
        model.set_inference_pool_size(3)
        pooled = model(input_ids).logits
        configured = tiny_model(tiny_config(emo_inference_pool_size=3))(input_ids).logits
        assert model.config.emo_inference_pool_size == 3 and torch.equal(pooled, configured)
        assert not torch.allclose(pooled, unpooled)
        model.set_inference_pool_size(None)
        assert torch.equal(model(input_ids).logits, unpooled) and model.config.emo_inference_pool_size is None
    with pytest.raises(ValueError, match=r"inference pool size 1 < 2 routed experts per token of layer 0"):
        model.set_inference_pool_size(1)
    with pytest.raises(ValueError, match="integer or None"):
        model.set_inference_pool_size(2.5)
    assert model.config.emo_inference_pool_size is None  # a refused size changes nothing


def test_training_only_kept_experts_freezes_dropped_experts_and_their_router_rows():
    model = tiny_model()
    kept_R = torch.tensor([True, True, False, True, False, True, True, True])
    model.set_expert_mask({1: kept_R})
    gate = model.model.layers[1].mlp.gate.weight
    with model.training_only_kept_experts():
        frozen = {name for name, p in model.named_parameters() if not p.requires_grad}
        gate.sum().backward()  # a gradient of ones on every router row, unless a row is held back
    projections = ("gate", "up", "down")
    assert frozen == {f"model.layers.1.mlp.experts.{e}.{proj}_proj.weight" for e in (2, 4) for proj in projections}
    trained_rows = torch.cat([kept_R, torch.tensor([True])])  # the shared expert's row stays trainable
    assert torch.equal(gate.grad, trained_rows[:, None].float().expand_as(gate))
    assert all(p.requires_grad for p in model.parameters())
    gate.grad = None
    gate.sum().backward()
    assert torch.equal(gate.grad, torch.ones_like(gate))  # the gradient hook is gone too


# --------------------------------------------------------------------------------------------- LM and generate


def test_loss_is_shifted_cross_entropy():
    model = tiny_model()
    input_ids = random_tokens(2, 10)
    labels = input_ids.clone()
    labels[0, 4] = -100
    output = model(input_ids, labels=labels)
    expected = F.cross_entropy(output.logits[:, :-1].reshape(-1, 64), labels[:, 1:].reshape(-1), ignore_index=-100)
    torch.testing.assert_close(output.loss, expected)


def test_gradient_checkpointing_gives_the_same_gradients():
    input_ids = random_tokens(2, 8)
    grads = []
    for checkpointing in (False, True):
        model = tiny_model().train()
        if checkpointing:  # renamed in transformers 5.x, the old name still works there but warns
            enable = getattr(model, "activation_checkpointing_enable", None) or model.gradient_checkpointing_enable
            enable()
            assert model.model.gradient_checkpointing
        model(input_ids, labels=input_ids).loss.backward()
        grads.append(model.model.layers[0].self_attn.q_proj.weight.grad)
    torch.testing.assert_close(grads[0], grads[1])


def test_greedy_generate_with_and_without_cache():
    model = tiny_model()
    prompt = random_tokens(2, 7)
    kwargs = dict(max_new_tokens=6, min_new_tokens=6, do_sample=False, pad_token_id=PAD)
    with torch.no_grad():
        cached = model.generate(prompt, use_cache=True, **kwargs)
        uncached = model.generate(prompt, use_cache=False, **kwargs)
    assert cached.shape == (2, 13)
    assert torch.equal(cached[:, :7], prompt)
    assert torch.equal(cached, uncached)
    with torch.no_grad():  # greedy decoding = step-by-step argmax of the full forward over the generated text
        full_logits = model(cached[:, :-1]).logits
    assert torch.equal(full_logits[:, 6:].argmax(-1), cached[:, 7:])


def test_cache_is_returned_under_the_installed_transformers_name():
    """generate() reads the cache back from the output field of its own version (4.57: past_key_values)."""
    import dataclasses

    from transformers.modeling_outputs import CausalLMOutputWithPast

    from emo_plugin.hf.modeling_emo import CACHE_FIELD

    assert CACHE_FIELD in {field.name for field in dataclasses.fields(CausalLMOutputWithPast)}
    model = tiny_model()
    prompt = random_tokens(1, 5)
    with torch.no_grad():
        first = model(prompt[:, :4], use_cache=True)
        cache = getattr(first, CACHE_FIELD)
        assert cache.get_seq_length() == 4
        step = model(prompt[:, 4:], use_cache=True, **{CACHE_FIELD: cache})
        full = model(prompt)
    torch.testing.assert_close(step.logits[:, -1], full.logits[:, -1])


def test_left_padded_generate_matches_unpadded():
    model = tiny_model()
    prompt = random_tokens(1, 7)
    padded = torch.cat([torch.full((1, 3), PAD), prompt], dim=1)
    attention_mask = torch.cat([torch.zeros(1, 3, dtype=torch.long), torch.ones(1, 7, dtype=torch.long)], dim=1)
    kwargs = dict(max_new_tokens=5, min_new_tokens=5, do_sample=False, pad_token_id=PAD)
    with torch.no_grad():
        alone = model.generate(prompt, **kwargs)
        with_padding = model.generate(padded, attention_mask=attention_mask, **kwargs)
    assert torch.equal(with_padding[:, 3:], alone)
