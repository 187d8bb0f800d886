"""Checkpoint conversion between Megatron dist checkpoints and EMO Hugging Face folders.

* ``export_to_hf`` — dist checkpoint (any TP/EP/PP layout) → HF folder, streamed tensor by tensor.
* ``import_from_hf`` — HF folder → layout-independent dist checkpoint, inert experts padding the routed
  count to a multiple of the target expert-parallel size.
"""

from emo_plugin.convert.export import export_to_hf
from emo_plugin.convert.import_hf import import_from_hf
from emo_plugin.errors import ConversionError

__all__ = ["ConversionError", "export_to_hf", "import_from_hf"]
