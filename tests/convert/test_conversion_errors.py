"""Refusals: wrong shapes name the tensor and both shapes; outputs are never half-written or overwritten."""

import json
import shutil

import pytest
import torch
from safetensors.torch import load_file, save_file

from emo_plugin.convert import export_to_hf, import_from_hf
from emo_plugin.errors import ConversionError
from tests.convert.checkpoint_workers import TINY
from tests.convert.conftest import TOKENIZER


def test_export_with_a_wrong_architecture_names_tensor_and_shapes(dist_checkpoint, tmp_path):
    wrong = dict(TINY.to_dict(), moe_ffn_hidden_size=24)
    (tmp_path / "arch.json").write_text(json.dumps(wrong))
    with pytest.raises(ConversionError) as error:
        export_to_hf(dist_checkpoint, tmp_path / "out", model_config=tmp_path / "arch.json", progress=False)
    message = str(error.value)
    assert "decoder.layers.mlp.experts.experts.linear_fc1.weight" in message
    assert "(2, 8, 32, 32)" in message and "(2, 8, 48, 32)" in message
    assert not (tmp_path / "out").exists()


def test_import_of_a_corrupted_tensor_names_it(hf_folder, tmp_path):
    broken = tmp_path / "broken"
    broken.mkdir()
    for f in hf_folder.iterdir():
        (broken / f.name).write_bytes(f.read_bytes())
    index = json.loads((broken / "model.safetensors.index.json").read_text())
    name = "model.layers.1.mlp.experts.3.up_proj.weight"
    shard = broken / index["weight_map"][name]
    tensors = load_file(shard)
    tensors[name] = torch.zeros(16, 31)
    save_file(tensors, shard, metadata={"format": "pt"})
    expected = r"model\.layers\.1\.mlp\.experts\.3\.up_proj\.weight.*\(16, 31\).*\(16, 32\)"
    with pytest.raises(ConversionError, match=expected):
        import_from_hf(broken, tmp_path / "out", progress=False)
    assert not (tmp_path / "out").exists() and not list(tmp_path.glob(".out.tmp-*"))


def test_non_empty_output_is_refused_unless_forced(dist_checkpoint, tmp_path):
    out = tmp_path / "out"
    out.mkdir()
    (out / "keep.txt").write_text("precious")
    with pytest.raises(ConversionError, match="not empty.*--force"):
        export_to_hf(dist_checkpoint, out, progress=False)
    assert (out / "keep.txt").read_text() == "precious"
    export_to_hf(dist_checkpoint, out, dtype="fp32", force=True, progress=False)
    assert not (out / "keep.txt").exists() and (out / "config.json").is_file()


def test_checkpoint_without_model_description_asks_for_a_config(megatron_model, tmp_path):
    from emo_plugin import checkpoint
    from emo_plugin.host_save_strategy import HostTorchDistSaveStrategy

    state = {"model": megatron_model.sharded_state_dict(prefix="")}
    checkpoint.save(tmp_path / "bare", 1, state, HostTorchDistSaveStrategy())
    with pytest.raises(ConversionError, match="--model-config"):
        export_to_hf(tmp_path / "bare", tmp_path / "out", progress=False)
    (tmp_path / "arch.json").write_text(json.dumps(TINY.to_dict()))
    export_to_hf(tmp_path / "bare", tmp_path / "out", model_config=tmp_path / "arch.json", progress=False)


def test_export_tool_reports_errors_without_traceback(dist_checkpoint, tmp_path, capsys):
    from emo_plugin.cli import export_hf as tool

    (tmp_path / "out").mkdir()
    (tmp_path / "out" / "x").write_text("x")
    assert tool.main(["--checkpoint", str(dist_checkpoint), "--output", str(tmp_path / "out")]) == 2
    assert "not empty" in capsys.readouterr().err


def _copy_folder(source, target):
    target.mkdir()
    for f in source.iterdir():
        (target / f.name).write_bytes(f.read_bytes())
    return target


def _shards(folder):
    return sorted(folder.glob("model-*.safetensors"))


def test_exported_shards_have_the_mode_of_ordinary_files(hf_folder):
    """safetensors writes 0600 files; the export's shards get 0666 minus the umask like config.json."""
    import os
    import stat

    umask = os.umask(0)
    os.umask(umask)
    assert stat.S_IMODE((hf_folder / "config.json").stat().st_mode) == 0o666 & ~umask
    for shard in _shards(hf_folder):
        assert stat.S_IMODE(shard.stat().st_mode) == 0o666 & ~umask, shard.name


def test_import_of_a_missing_shard_names_the_file(hf_folder, tmp_path):
    broken = _copy_folder(hf_folder, tmp_path / "broken")
    gone = _shards(broken)[1]
    gone.unlink()
    with pytest.raises(ConversionError, match=rf"{gone.name}: shard file is missing"):
        import_from_hf(broken, tmp_path / "out", progress=False)
    assert not (tmp_path / "out").exists() and not list(tmp_path.glob(".out.tmp-*"))


def test_import_of_a_truncated_shard_names_the_file(hf_folder, tmp_path):
    broken = _copy_folder(hf_folder, tmp_path / "broken")
    shard = _shards(broken)[-1]
    shard.write_bytes(shard.read_bytes()[:-100])  # an interrupted copy
    with pytest.raises(ConversionError, match=rf"{shard.name}: unreadable safetensors shard.*truncated"):
        import_from_hf(broken, tmp_path / "out", progress=False)
    assert not (tmp_path / "out").exists()


def test_import_of_a_config_with_fewer_layers_than_the_weights_is_refused(hf_folder, tmp_path):
    broken = _copy_folder(hf_folder, tmp_path / "broken")
    config = json.loads((broken / "config.json").read_text())
    assert config["num_hidden_layers"] == TINY.num_layers == 2
    config["num_hidden_layers"] = 1
    (broken / "config.json").write_text(json.dumps(config))
    with pytest.raises(ConversionError, match=r"config\.json: num_hidden_layers=1, but the weights hold 2 layers"):
        import_from_hf(broken, tmp_path / "out", progress=False)
    assert not (tmp_path / "out").exists()


def test_an_output_over_the_checkpoint_or_the_tokenizer_is_refused_even_with_force(dist_checkpoint, tmp_path):
    inside = dist_checkpoint / "hf"
    with pytest.raises(ConversionError, match=f"--output {inside} is inside the input {dist_checkpoint}; .* even with"):
        export_to_hf(dist_checkpoint, inside, force=True, progress=False)
    assert not inside.exists()
    tokenizer = tmp_path / "tok" / "tokenizer.model"
    tokenizer.parent.mkdir()
    shutil.copy(TOKENIZER, tokenizer)
    with pytest.raises(ConversionError, match=f"--output {tokenizer.parent} contains the input {tokenizer}"):
        export_to_hf(dist_checkpoint, tokenizer.parent, tokenizer=tokenizer, force=True, progress=False)
    assert tokenizer.is_file()
