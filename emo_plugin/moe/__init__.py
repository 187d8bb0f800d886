"""The EMO MoE core: config, document-pool routing, routing ids, the router, the MoE layer, load balancing and
metrics. It imports nothing of ``emo_plugin.model``: the layer spec that plugs it into Megatron-Core's GPT model
is ``emo_plugin.model.spec``."""
