"""The model: its record (one description of an EMO model), the named sizes, and the Megatron ``GPTModel``
with EMO MoE layers built from it."""
