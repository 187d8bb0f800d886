"""The summary export_to_hf returns (what emo-export-hf prints) describes the folder it wrote, counted again here
from the safetensors files themselves."""

from safetensors import safe_open

from tests.convert.checkpoint_workers import TINY


def test_export_summary_describes_the_written_folder(dist_checkpoint, tmp_path):
    from emo_plugin.convert import export_to_hf

    output = tmp_path / "hf"
    summary = export_to_hf(dist_checkpoint, output, dtype="fp32", max_shard_size="40KB", progress=False)

    shards = sorted(output.glob("*.safetensors"))
    parameters = num_bytes = 0
    for shard in shards:
        with safe_open(str(shard), framework="pt") as f:
            for name in f.keys():
                tensor = f.get_tensor(name)
                parameters += tensor.numel()
                num_bytes += tensor.numel() * tensor.element_size()
    (iteration,) = {metadata.parent for metadata in dist_checkpoint.rglob(".metadata")}
    assert len(shards) > 1
    assert summary == {
        "source": str(iteration),
        "output": str(output),
        "model": TINY.to_dict(),
        "bytes": num_bytes,
        "parameters": parameters,
        "shards": len(shards),
        "tokenizer": None,  # none given, stored or next to the checkpoint
    }
