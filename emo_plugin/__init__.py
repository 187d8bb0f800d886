"""emo_plugin: EMO document-pool mixture-of-experts routing for NVIDIA Megatron-Core.

Importing the package is cheap and never requires Transformer Engine or apex; the Megatron-facing pieces are
imported from their modules (``emo_plugin.moe.router``, ``emo_plugin.model.spec``, ``emo_plugin.model.build``).
The one check on import: AI2's vLLM plugin, which installs a module of the same name, is not in this environment
(``emo_plugin/name_clash.py``).
"""

from emo_plugin.name_clash import check_no_name_clash

check_no_name_clash()

__version__ = "0.1.0"
