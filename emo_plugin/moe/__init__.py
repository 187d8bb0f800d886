"""The EMO MoE core: config, document-pool routing, routing ids, the router, the MoE layer, load balancing,
metrics and the layer spec that plugs them into Megatron-Core."""
