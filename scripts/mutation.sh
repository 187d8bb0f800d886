#!/usr/bin/env bash
# Mutation testing of the modules that decide numbers (mutmut 3; pip install -e '.[mutation]').
#
#   scripts/mutation.sh [GROUP ...]       GROUP: routing router moe_layer convert resume (default: all)
#
# Each group mutates a few modules and runs a fast test subset against every mutant. The work happens in a
# copy of the working tree (tracked and untracked, not ignored files) under $MUTATION_WORKDIR
# (default /tmp/emo_mutation/<group>), so the checkout is never modified. Per group it prints mutmut's
# summary, then the surviving mutants; `cd $MUTATION_WORKDIR/<group> && mutmut show <name>` shows a diff.
# MUTATION_JOBS (default 2) mutants run at once; MUTATION_TESTS replaces the groups' test subsets.
# See docs/testing.md for the last measured score.
set -euo pipefail

REPO=$(cd "$(dirname "$0")/.." && pwd)
PYTHON=${PYTHON:-$REPO/.venv/bin/python}
MUTMUT=$(dirname "$PYTHON")/mutmut
WORKDIR=${MUTATION_WORKDIR:-/tmp/emo_mutation}
JOBS=${MUTATION_JOBS:-2}

declare -A MODULES TESTS
MODULES[routing]="emo_plugin/moe/routing.py emo_plugin/moe/routing_ids.py"
TESTS[routing]="tests/moe/test_routing.py tests/moe/test_routing_ids.py tests/moe/test_router.py"
MODULES[router]="emo_plugin/moe/router.py emo_plugin/moe/load_balancing.py"
TESTS[router]="tests/moe/test_load_balancing.py tests/moe/test_router.py tests/parallel/test_load_balancing_counts.py"
TESTS[router]+=" tests/model/test_build.py::test_eval_mode_routes_with_the_fixed_eval_pool_and_is_deterministic"
TESTS[router]+=" tests/parallel/test_router_reductions.py"
MODULES[moe_layer]="emo_plugin/moe/layer.py"
TESTS[moe_layer]="tests/moe/test_layer.py tests/model/test_build.py tests/parallel/test_sequence_parallel_ids.py tests/parallel/test_recompute.py"
MODULES[convert]="emo_plugin/convert/weight_map.py emo_plugin/convert/layouts.py emo_plugin/convert/megatron_keys.py"
MODULES[convert]+=" emo_plugin/convert/export.py"
TESTS[convert]="tests/convert/test_export_matches_megatron.py tests/convert/test_export_two_shared_experts.py"
TESTS[convert]+=" tests/convert/test_roundtrip_and_inert.py tests/convert/test_export_defaults.py"
TESTS[convert]+=" tests/convert/test_weight_map.py tests/convert/test_trainer_checkpoint.py"
TESTS[convert]+=" tests/convert/test_conversion_errors.py tests/convert/test_export_summary.py"
MODULES[resume]="emo_plugin/training/host_backend.py"
TESTS[resume]="tests/training/test_resume_rng.py tests/convert/test_trainer_checkpoint.py"
# The host training step (train_step, gradient reduction, grad norm) is checked by the CLI training tests, too
# slow for a per-mutant run: its mutants end as "no tests"; the checkpoint state functions are what counts.

if [[ ! -x $MUTMUT ]]; then
    echo "mutmut is not installed in $(dirname "$PYTHON"): pip install -e '.[mutation]'" >&2
    exit 2
fi
groups=("$@")
[[ ${#groups[@]} -gt 0 ]] || groups=(routing router moe_layer convert resume)
for group in "${groups[@]}"; do
    if [[ -z ${MODULES[$group]:-} ]]; then
        echo "unknown group '$group'; expected one of: ${!MODULES[*]}" >&2
        exit 2
    fi
done

lines() { tr ' ' '\n' <<<"$1" | sed 's/^/    /'; }

for group in "${groups[@]}"; do
    dir=$WORKDIR/$group
    rm -rf "$dir"
    mkdir -p "$dir"
    (cd "$REPO" && git ls-files -z --cached --others --exclude-standard \
        | xargs -0 -I{} sh -c '[ -e "$1" ] && cp --parents "$1" "$2" || true' _ {} "$dir")
    {
        echo
        echo "[mutmut]"
        echo "source_paths = emo_plugin"
        echo "only_mutate ="; lines "${MODULES[$group]}"
        echo "pytest_add_cli_args_test_selection ="; lines "${MUTATION_TESTS:-${TESTS[$group]}}"
        echo "process_isolation = forkserver"
        echo "also_copy ="; lines "examples tools docs"
    } >>"$dir/setup.cfg"
    echo "=== $group: ${MODULES[$group]}"
    start=$(date +%s)
    (cd "$dir" && OMP_NUM_THREADS=1 "$MUTMUT" run --max-children "$JOBS" 2>&1 | tr '\r' '\n' | tail -n 4)
    (cd "$dir" && "$MUTMUT" export-cicd-stats >/dev/null && cat mutants/mutmut-cicd-stats.json)
    echo "--- $group: not killed ($(( $(date +%s) - start )) s)"
    (cd "$dir" && "$MUTMUT" results)
done
