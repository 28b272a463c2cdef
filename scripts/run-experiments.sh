#!/usr/bin/env bash
# Regenerate every experiment of docs/results.md and print the results table.
#
#   scripts/run-experiments.sh              # all experiments, one after the other
#   scripts/run-experiments.sh kdv fput     # only these (experiments/<name>.toml)
#
# Each job writes runs/<name>/ and runs/<name>.log; the irregular-domain jobs are followed by
# their geometry transfers. Expect several hours on 2 cores (docs/results.md has the wall times).
set -euo pipefail
cd "$(dirname "$0")/.."
VENV=$(scripts/setup-env.sh --print-venv)
names=("$@")
if [ ${#names[@]} -eq 0 ]; then
    names=(allen_cahn_1d allen_cahn_2d kdv fput fene allen_cahn_l_shape
           cahn_hilliard_curved_channel cahn_hilliard_fh_plate_with_holes cahn_hilliard_fh_l_shape
           allen_cahn_l_shape_graded_mobility)
fi
declare -A transfers=(
    [allen_cahn_l_shape]="plate_with_holes;l_shape --refinement 1"
    [cahn_hilliard_curved_channel]="l_shape"
    [cahn_hilliard_fh_plate_with_holes]="curved_channel"
    [cahn_hilliard_fh_l_shape]="plate_with_holes;l_shape --refinement 1"
)
mkdir -p runs
for name in "${names[@]}"; do
    echo "== $name"
    "$VENV/bin/femeso" run "experiments/$name.toml" > "runs/$name.log" 2>&1
    IFS=';' read -ra targets <<< "${transfers[$name]:-}"
    for target in "${targets[@]}"; do
        echo "   transfer -> $target"
        # shellcheck disable=SC2086
        "$VENV/bin/femeso" transfer "experiments/$name.toml" --mesh $target >> "runs/$name.log" 2>&1
    done
done
if [[ " ${names[*]} " == *" allen_cahn_l_shape_graded_mobility "* ]]; then
    # the control: the same data and baseline, a mobility of u only
    control=runs/allen_cahn_l_shape_graded_mobility_u_only
    mkdir -p "$control"
    cp -r runs/allen_cahn_l_shape_graded_mobility/{data,baseline} "$control/"
    echo "== allen_cahn_l_shape_graded_mobility_u_only (control)"
    { "$VENV/bin/femeso" train experiments/allen_cahn_l_shape_graded_mobility_u_only.toml --model onsager &&
      "$VENV/bin/femeso" report experiments/allen_cahn_l_shape_graded_mobility_u_only.toml; } > "$control.log" 2>&1
fi
"$VENV/bin/python" scripts/results_table.py runs
