"""Plan a training layout before using any device: parameters, memory and communication per rank, FLOPs.

``emo-pretrain --dry-run`` prints the plan (``dry_run``); GPU training refuses a layout the plan says does not
fit (``fit_check``). Everything here is arithmetic on the config: no model, tensor or process group is built.
"""
