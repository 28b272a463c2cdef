"""Trajectory-parallel training: seconds per epoch on 1 rank, on 2 ranks as 2 x 1 and as 1 x 2.

One job's data are generated once (``femeso generate``, 1 rank); then ``femeso train`` runs the
same Adam iterations three times, each in its own process as a user runs it:

* 1 rank;
* ``mpiexec -n 2`` with ``[parallel] ensemble = 2`` (2 members x 1 spatial rank: each member
  rolls out and differentiates half of every minibatch's windows);
* ``mpiexec -n 2`` with ``ensemble = 1`` (1 member x 2 spatial ranks: the mesh is distributed).

The time per iteration is the median of the trainer's own per-iteration seconds
(``onsager/history.json``; the first ``--warmup`` iterations, which build solvers and compile
kernels, are left out); an epoch is ``training windows / batch_size`` iterations. The ratios are
of the same run's 1-rank figure. Nothing else should run on the machine meanwhile.

    python bench/ensemble_cost.py                                    # Allen-Cahn 1-D, 256 DoFs
    python bench/ensemble_cost.py --config experiments/cahn_hilliard_fh_l_shape.toml
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import tempfile
import tomllib
from pathlib import Path

from femeso._runtime import mpiexec_environment

ROOT = Path(__file__).resolve().parents[1]


def toml_value(value) -> str:
    """A TOML literal for the plain values of a job file."""
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, str):
        return json.dumps(value)
    if isinstance(value, list):
        return "[" + ", ".join(toml_value(v) for v in value) + "]"
    return repr(value)


def write_job(path: Path, tables: dict) -> None:
    lines = []
    for name, table in tables.items():
        lines.append(f"[{name}]")
        lines += [f"{key} = {toml_value(value)}" for key, value in table.items()]
    path.write_text("\n".join(lines) + "\n")


def femeso(*args: str, ranks: int = 1) -> None:
    exe = str(Path(sys.executable).with_name("femeso"))
    command = [exe, *args] if ranks == 1 else ["mpiexec", "-n", str(ranks), exe, *args]
    done = subprocess.run(command, capture_output=True, text=True, env=mpiexec_environment())
    if done.returncode:
        sys.exit(f"{' '.join(command)} failed:\n{done.stderr[-3000:]}")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--config", default=str(ROOT / "experiments" / "allen_cahn_1d.toml"))
    parser.add_argument("--train", type=int, default=8, help="training trajectories")
    parser.add_argument("--frames", type=int, default=20, help="frames per trajectory")
    parser.add_argument("--iterations", type=int, default=30)
    parser.add_argument("--warmup", type=int, default=3)
    parser.add_argument("--batch", type=int, default=8, help="windows per minibatch")
    parser.add_argument("--unroll", type=int, default=1)
    parser.add_argument("--json", help="also write the figures to this file")
    args = parser.parse_args()

    tables = tomllib.loads(Path(args.config).read_text())
    work = Path(tempfile.mkdtemp(prefix="femeso-ensemble-"))
    tables["data"].update(train=args.train, validation=1, test=1, frames=args.frames)
    tables["data"].pop("burn_in", None)
    tables["training"] = {
        **{k: v for k, v in tables["training"].items() if k in ("learning_rate", "norm")},
        "warm_start": False,
        "iterations": args.iterations,
        "batch_size": args.batch,
        "unroll": args.unroll,
        "refine_iterations": 0,
        "validate_every": 0,
        "checkpoint_every": 0,
    }
    tables["baseline"] = {"enabled": False}
    tables.pop("parallel", None)
    if "mesh" in tables and str(tables["mesh"].get("name", "")).endswith((".msh", ".geo")):
        tables["mesh"]["name"] = str(Path(args.config).parent / tables["mesh"]["name"])

    def job(name: str, ensemble: int) -> Path:
        path = work / f"{name}.toml"
        write_job(
            path,
            {
                **tables,
                "job": {"name": name, "output": str(work / name), "seed": 0},
                "parallel": {"ensemble": ensemble},
            },
        )
        return path

    femeso("generate", str(job("data", 1)), "-q")
    runs = {"1 rank": (1, 1), "2 ranks, ensemble 2 x 1": (2, 2), "2 ranks, spatial 1 x 2": (2, 1)}
    seconds = {}
    for label, (ranks, members) in runs.items():
        name = f"r{ranks}e{members}"
        (work / name).mkdir()
        os.symlink(work / "data" / "data", work / name / "data")
        femeso("train", str(job(name, members)), "-q", ranks=ranks)
        history = json.loads((work / name / "onsager" / "history.json").read_text())
        per_iteration = [r["seconds"] for r in history["records"]][args.warmup :]
        seconds[label] = statistics.median(per_iteration)
    windows = args.train * (args.frames - args.unroll + 1)
    iterations_per_epoch = windows / args.batch
    reference = seconds["1 rank"]
    print(
        f"{Path(args.config).name}: {args.train} training trajectories of {args.frames} frames "
        f"({windows} windows of {args.unroll} step(s)), batch {args.batch}, "
        f"{iterations_per_epoch:.1f} iterations per epoch, median of iterations "
        f"{args.warmup + 1}..{args.iterations}"
    )
    print(f"{'run':<28} {'s / iteration':>14} {'s / epoch':>10} {'speed-up':>9}")
    for label, value in seconds.items():
        print(
            f"{label:<28} {value:>14.4f} {value * iterations_per_epoch:>10.2f} "
            f"{reference / value:>9.2f}"
        )
    if args.json:
        Path(args.json).write_text(
            json.dumps(
                {"seconds_per_iteration": seconds, "iterations_per_epoch": iterations_per_epoch},
                indent=1,
            )
        )


if __name__ == "__main__":
    main()
