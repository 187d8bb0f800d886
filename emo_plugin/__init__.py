"""emo_plugin: EMO document-pool mixture-of-experts routing for NVIDIA Megatron-Core.

Importing the package is cheap and never requires Transformer Engine or apex; the Megatron-facing pieces are
imported from their modules (``emo_plugin.router``, ``emo_plugin.spec``, ``emo_plugin.model``).
"""

__version__ = "0.1.0"
