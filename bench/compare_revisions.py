"""Time the step, the adjoint and a training iteration of two revisions of femeso, alternately.

The machines are shared and noisy, so a "no slower" claim needs both codes measured in the same
run: this script exports ``BEFORE`` (any git revision) into a temporary folder, then runs each
benchmark of that revision and of the working tree in turn, ``--repeats`` times each, and prints
the medians and their ratio (after / before)::

    python bench/compare_revisions.py f22e969
    python bench/compare_revisions.py HEAD~3 --after HEAD --repeats 3 --quick

Each side runs its own copy of the benchmark scripts (an import path may have moved between the
revisions) with its own ``src`` first on ``PYTHONPATH``.
"""

from __future__ import annotations

import argparse
import os
import re
import statistics
import subprocess
import sys
import tarfile
import tempfile
from io import BytesIO
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]

#: name -> (script, arguments, quick arguments, {figure: regex whose group 1 is seconds})
BENCHMARKS = {
    "step": (
        "step_cost.py",
        ["--dofs", "20000", "--steps", "5"],
        ["--dofs", "5000", "--steps", "3"],
        {
            "analytic s/step": r"^\s*\d+\s+([\d.]+)\s+[\d.]+\s+[\d.]+",
            "neural s/step": r"^\s*\d+\s+[\d.]+\s+([\d.]+)\s+[\d.]+",
        },
    ),
    "adjoint": (
        "adjoint_cost.py",
        ["--dofs", "20000", "--steps", "3"],
        ["--dofs", "5000", "--steps", "2"],
        {"backward s/step": r"backward ([\d.]+) s/step"},
    ),
    "train": (
        "train_cost.py",
        ["--iterations", "40", "--warmup", "5"],
        ["--iterations", "12", "--warmup", "2"],
        {"s/iteration": r"^mean per iteration\s+([\d.]+) s"},
    ),
}


def export(revision: str, folder: Path) -> Path:
    """Write ``src``, ``bench`` and ``meshes`` of ``revision`` into ``folder``; return it."""
    folder.mkdir(parents=True)
    archive = subprocess.run(
        ["git", "-C", str(ROOT), "archive", revision, "src", "bench", "meshes"],
        check=True,
        capture_output=True,
    ).stdout
    with tarfile.open(fileobj=BytesIO(archive)) as tar:
        tar.extractall(folder, filter="data")
    return folder


def measure(tree: Path, script: str, arguments: list[str], figures: dict[str, str]) -> dict:
    """Run one benchmark of ``tree`` and return its figures (seconds)."""
    env = dict(os.environ, PYTHONPATH=str(tree / "src"))
    done = subprocess.run(
        [sys.executable, str(tree / "bench" / script), *arguments],
        cwd=tree,
        env=env,
        capture_output=True,
        text=True,
    )
    if done.returncode != 0:
        tail = done.stderr.strip().splitlines()[-1:] or ["(no output)"]
        raise SystemExit(f"{tree / 'bench' / script} failed: {tail[0]}")
    values = {}
    for name, pattern in figures.items():
        found = re.search(pattern, done.stdout, re.MULTILINE)
        if found is None:
            raise SystemExit(f"{script}: no {name!r} in its output:\n{done.stdout}")
        values[name] = float(found.group(1))
    return values


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("before", help="the git revision to compare with")
    parser.add_argument("--after", default=None, help="a git revision (default: the working tree)")
    parser.add_argument("--repeats", type=int, default=2, help="runs of each side (alternated)")
    parser.add_argument("--quick", action="store_true", help="small sizes (a smoke run)")
    parser.add_argument("--only", choices=sorted(BENCHMARKS), action="append", default=None)
    args = parser.parse_args()
    with tempfile.TemporaryDirectory(prefix="femeso-revisions-") as tmp:
        before = export(args.before, Path(tmp) / "before")
        after = ROOT if args.after is None else export(args.after, Path(tmp) / "after")
        print(f"before: {args.before}; after: {args.after or 'the working tree'} ({after})")
        print(f"{'figure':<28} {'before (median)':>16} {'after (median)':>15} {'after/before':>13}")
        for name in args.only or list(BENCHMARKS):
            script, full, quick, figures = BENCHMARKS[name]
            arguments = quick if args.quick else full
            runs: dict[str, dict[str, list[float]]] = {"before": {}, "after": {}}
            for _ in range(args.repeats):
                for side, tree in (("before", before), ("after", after)):
                    for figure, value in measure(tree, script, arguments, figures).items():
                        runs[side].setdefault(figure, []).append(value)
            for figure in figures:
                b, a = runs["before"][figure], runs["after"][figure]
                mb, ma = statistics.median(b), statistics.median(a)
                print(
                    f"{name + ': ' + figure:<28} {mb:>16.4f} {ma:>15.4f} {ma / mb:>12.3f}x"
                    f"   (runs: {', '.join(f'{x:.3f}' for x in b)} | "
                    f"{', '.join(f'{x:.3f}' for x in a)})"
                )


if __name__ == "__main__":
    main()
