"""Model building: the named sizes and the Megatron ``GPTModel`` with EMO MoE layers."""
