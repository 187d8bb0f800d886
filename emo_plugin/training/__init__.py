"""Pretraining for EMO models: typed config (``config``), CLI (``cli``), trainer (``trainer``) with a CPU
backend (``host_backend``) and a Megatron GPU backend (``megatron_backend``), atomic dist checkpoints."""
