"""emo-prune-experts (run as tools/prune_experts.py): a saved selection JSON → pruned folder equal to the masked
full model; a bad selection is refused naming the file."""

import json
import subprocess
import sys
from pathlib import Path

import torch

ROOT = Path(__file__).resolve().parents[2]


def prune(*args):
    return subprocess.run(
        [sys.executable, str(ROOT / "tools/prune_experts.py"), *map(str, args)],
        capture_output=True,
        text=True,
        cwd=ROOT,
    )


def test_pruned_from_selection_json_matches_masked_model(hf_folder, model, tmp_path):
    from emo_plugin.hf import EmoForCausalLM

    layers = len(model.model.layers)
    routed = model.model.layers[0].mlp.n_routed
    kept = {layer: sorted({0, routed - 1, 1 + layer}) for layer in range(layers)}
    (tmp_path / "sel.json").write_text(json.dumps({"layers": {str(k): v for k, v in kept.items()}}))
    proc = prune("--model", hf_folder, "--selection", tmp_path / "sel.json", "--output", tmp_path / "pruned")
    assert proc.returncode == 0, proc.stderr[-2000:]
    summary = json.loads(proc.stdout)
    assert summary["after"]["parameters"] < summary["before"]["parameters"]

    pruned = EmoForCausalLM.from_pretrained(str(tmp_path / "pruned"), dtype=torch.float32).eval()
    model.set_expert_mask(
        {layer: torch.isin(torch.arange(routed), torch.tensor(ids)) for layer, ids in kept.items()}
    )
    tokens = torch.randint(3, 64, (2, 16), generator=torch.Generator().manual_seed(1))
    with torch.no_grad():
        torch.testing.assert_close(pruned(tokens).logits, model(tokens).logits, rtol=1e-5, atol=1e-5)
    model.set_expert_mask(None)


def test_bad_selection_is_refused_with_the_file_named(hf_folder, tmp_path):
    (tmp_path / "sel.json").write_text(json.dumps({"zero": [1, 2]}))
    proc = prune("--model", hf_folder, "--selection", tmp_path / "sel.json", "--output", tmp_path / "out")
    assert proc.returncode == 2 and "sel.json" in proc.stderr and "integers" in proc.stderr
