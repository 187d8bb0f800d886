"""The model: its record (one description of an EMO model), the named sizes, the GPT layer spec with EMO MoE
layers (``spec``) and the Megatron ``GPTModel`` built from them."""
