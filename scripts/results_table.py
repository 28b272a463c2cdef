"""Print the results table of every finished experiment (``runs/*/report/results.json``).

One row per experiment and model: the mean error at steps 1, 5 and 100 in the paper's metric
(relative RMSE of nodal values, divergence counted as 1; ``tables.paper`` of results.json) -- or,
for results written before that metric existed, the relative L2 error, labelled -- with the
failed rollouts counted, next to the published SpecOnsNet numbers (REFERENCE.md) where the paper
has the dataset (``<name>_paper`` experiments compare with ``<name>``), and the job's wall time;
then the geometry transfers (``runs/*/transfer/*/results.json``).

Usage::

    python scripts/results_table.py [RUNS_DIR]
"""

from __future__ import annotations

import json
import sys
from pathlib import Path

#: Published SpecOnsNet relative RMSE, step 1 and step 5 (REFERENCE.md).
PUBLISHED = {
    "allen_cahn_1d": (2.436e-3, 5.467e-3),
    "allen_cahn_2d": (1.085e-3, 3.720e-3),
    "kdv": (2.801e-3, 9.989e-3),
    "fput": (2.127e-3, 8.156e-3),
    "fene": (4.652e-4, 1.218e-3),
}


def at(row: dict, step: int) -> float | None:
    """Return the mean error at ``step`` (None when the table does not reach it)."""
    steps = row.get("steps", [])
    return row["mean"][steps.index(step)] if step in steps else None


def fmt(x: float | None) -> str:
    """Format an error (a dash when missing)."""
    return "—" if x is None else f"{x:.2e}"


def table(results: dict) -> tuple[str, dict]:
    """Return the metric's name and the rows: the paper's metric where results.json has it."""
    paper = results.get("tables", {}).get("paper")
    if paper:
        return "paper RMSE", paper["rows"]
    return "L2 (old results)", results["table"]


def rows(results: dict, name: str) -> list[str]:
    """Return the table rows of one experiment's results."""
    lines = []
    published = PUBLISHED.get(name.removesuffix("_paper"))
    metric, models = table(results)
    for model, row in models.items():
        step1, step5 = at(row, 1), at(row, 5)
        status = ""
        if published and model == "onsager" and step1 is not None and step5 is not None:
            met = step1 <= published[0] and step5 <= published[1]
            status = "met" if met else "not met"
        failed = row.get("n_failed")
        lines.append(
            f"| {name} | {model} | {metric} | {fmt(step1)} | {fmt(step5)} | {fmt(at(row, 100))} "
            f"| {'—' if failed is None else failed} | "
            + (f"{published[0]:.2e} / {published[1]:.2e}" if published else "—")
            + f" | {status} |"
        )
    return lines


def main() -> None:
    """Print the tables."""
    runs = Path(sys.argv[1] if len(sys.argv) > 1 else "runs")
    print(
        "| experiment | model | metric | step 1 | step 5 | step 100 | failed | SpecOnsNet 1 / 5 "
        "| target |"
    )
    print("|---|---|---|---|---|---|---|---|---|")
    walls = []
    for path in sorted(runs.glob("*/report/results.json")):
        results = json.loads(path.read_text())
        name = path.parts[-3]
        print("\n".join(rows(results, name)))
        if results.get("seconds_total") is not None:
            walls.append(f"{name} {results['seconds_total'] / 60:.1f} min")
    transfers = sorted(runs.glob("*/transfer/*/results.json"))
    if transfers:
        print("\n| transfer | model | step 1 | step 5 | step 100 |")
        print("|---|---|---|---|---|")
        for path in transfers:
            results = json.loads(path.read_text())
            label = f"{path.parts[-4]} → {path.parts[-2]}"
            for model, row in results["table"].items():
                print(
                    f"| {label} | {model} | {fmt(at(row, 1))} | {fmt(at(row, 5))} | "
                    f"{fmt(at(row, 100))} |"
                )
    if walls:
        print("\nwall time per experiment (femeso run): " + ", ".join(walls))


if __name__ == "__main__":
    main()
