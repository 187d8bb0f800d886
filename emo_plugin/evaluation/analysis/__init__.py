"""Analysis of trained EMO checkpoints (Hugging Face format): how modular is the routing, and how much loss
does a domain lose when it runs on a subset of the experts?

Used by `tools/analyze_modularity.py` and `tools/evaluate_subsets.py`; see docs/modularity.md.
"""
