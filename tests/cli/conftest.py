"""Fixtures of the tests of the commands that run an EMO Hugging Face checkpoint, registered from the modules that
define them once for the library tests as well:

- tests/evaluation/analysis/tiny_checkpoint.py (emo-analyze-modularity, emo-evaluate-subsets, emo-exclude-experts):
  the tiny checkpoint with its labelled corpus, and single-threaded torch (not autouse: the other command tests
  here do not need it);
- tests/evaluation/selection/tiny_hf_folder.py (emo-select-experts, emo-prune-experts, emo-reinsert-experts): the
  exported tiny HF folder, the model loaded from it and calibration documents;
- tests/evaluation/selection/pruned_subset.py (emo-reinsert-experts): a pruned subset of that folder.
"""

from tests.evaluation.analysis.tiny_checkpoint import single_threaded_torch, tiny_checkpoint  # noqa: F401
from tests.evaluation.selection.pruned_subset import pruned  # noqa: F401
from tests.evaluation.selection.tiny_hf_folder import documents_file, hf_folder, model  # noqa: F401
