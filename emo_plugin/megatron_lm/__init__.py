"""EMO on Megatron-LM's own training loop (``megatron.training.pretrain``, shipped in the megatron-core wheel).

``emo-pretrain-megatron`` (``pretrain.py``) is ``pretrain_gpt.py`` with EMO routing: Megatron-LM's flags, loop,
checkpoints, logging and fault handling, plus emo_plugin's ``--emo-*`` flags (``arguments.py``), the EMO layer
spec (``model.py``), datasets whose samples carry routing ids (``data.py``), a forward step that hands them to the
model (``forward_step.py``) and EMO's routing statistics in TensorBoard (``metrics.py``). docs/megatron_lm.md
has the command lines.
"""
