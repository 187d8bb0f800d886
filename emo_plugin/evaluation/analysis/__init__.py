"""Analysis of trained EMO checkpoints (Hugging Face format): how modular is the routing, and how much loss
does a domain lose when it runs on a subset of the experts?

The analysis behind `emo-analyze-modularity` is `modularity_analysis.py`; the experiments behind
`emo-evaluate-subsets` and `emo-exclude-experts` are `subset_experiment.py` and `exclusion_experiment.py` (both
split each domain with `domain_splits.py`); the commands in emo_plugin/cli parse the options and print the
report. Used by `tools/analyze_modularity.py`, `tools/evaluate_subsets.py` and
`tools/exclude_experts.py`; see docs/modularity.md.
"""
