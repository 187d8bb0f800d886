# Read by GNU make through MAKEFILES (emo_plugin/megatron_compat.py, use_prebuilt_dataset_helpers) when Megatron-LM's
# initialize_megatron runs `make -C megatron/core/datasets` in a pip-installed megatron-core, which ships the
# compiled dataset helpers but no Makefile. Nothing to build: check that the compiled helpers are there.
.DEFAULT_GOAL := emo-check-prebuilt-dataset-helpers

emo-check-prebuilt-dataset-helpers:
	@ls helpers_cpp*.so >/dev/null 2>&1 || { echo "$(CURDIR): megatron-core's compiled dataset helpers (helpers_cpp*.so) are missing; reinstall megatron-core" >&2; exit 1; }
