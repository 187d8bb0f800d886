"""Task-specific expert subsets of an EMO Hugging Face model (docs/method.md §10).

* ``calibration`` — a few example documents of the task, tokenised.
* ``task_prompts`` — or k-shot formatted task prompts (solved examples, then the query), with the answer marked.
* ``scoring`` — per-layer expert scores by method name (``METHODS``): ``greedy`` (mean router probability),
  ``easy_ep`` (output-aware), ``easy_ep_one_pass`` (AI2's Easy-EP: one unpruned pass, clamped at 0),
  ``random`` (seeded baseline).
* ``keep``, ``layer_budget`` — how many slots a layer keeps: one value for all layers, or one per layer.
* ``select`` — layer-by-layer choice, each layer scored with the earlier layers already pruned.
* ``prune`` — a physically smaller HF checkpoint holding only the kept experts; ``read_selection`` reads a saved
  selection (kept expert ids per layer).
* ``reinsert`` — a fine-tuned subset put back into the full checkpoint at the experts' original slots.
"""

from emo_plugin.evaluation.selection.prune import write_pruned_checkpoint
from emo_plugin.evaluation.selection.reinsert import write_reinserted_checkpoint
from emo_plugin.evaluation.selection.scoring import METHODS
from emo_plugin.evaluation.selection.select import kept_expert_masks, select_experts

__all__ = ["METHODS", "kept_expert_masks", "select_experts", "write_pruned_checkpoint", "write_reinserted_checkpoint"]
