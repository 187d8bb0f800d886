"""emo_plugin: EMO document-pool mixture-of-experts routing for NVIDIA Megatron-Core.

Importing the package is cheap and never requires Transformer Engine or apex; the Megatron-facing pieces are
imported from their modules (``emo_plugin.moe.router``, ``emo_plugin.moe.spec``, ``emo_plugin.model.build``).
"""

__version__ = "0.1.0"
