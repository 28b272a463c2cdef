"""The paper's step-size diagnostics of a trained femeso job (:mod:`femeso.evaluation.diagnostics`).

Inference of the learned model at the paper's step sizes (1e-5 ... 3e-3 after training at 1e-3,
the same factors of the data step for the chains) to a common end time, and the one-step
energy change |dV| against dt (the model's own step, and the learned V on data frames k steps
apart). Writes ``<job.output>/report/diagnostics.json`` and ``diagnostics.png`` and prints a
table. The job must be trained (``femeso train``); nothing is retrained or regenerated.

Usage::

    python scripts/paper_diagnostics.py experiments/allen_cahn_1d.toml [-o OUTPUT] [--test K]
        [--factors 0.01 0.03 0.1 0.3 1 3] [--spacings 1 2 4 8 16] [--starts 8] [-q]

User errors (a missing file, a bad option) are one line on stderr and exit status 2.
"""

from __future__ import annotations

import argparse
import sys


def build_parser() -> argparse.ArgumentParser:
    """Return the argument parser."""
    parser = argparse.ArgumentParser(
        prog="paper_diagnostics.py",
        description="Inference at other step sizes and one-step |dV| vs dt of a trained job.",
    )
    parser.add_argument("config", help="the job's TOML file")
    parser.add_argument("-o", "--output", help="override job.output (where the trained job is)")
    parser.add_argument("--test", type=int, default=0, metavar="K", help="test trajectory (0)")
    parser.add_argument(
        "--factors",
        type=float,
        nargs="+",
        metavar="F",
        help="inference steps as multiples of the data step (default: the paper's 1e-5 ... "
        "3e-3 at a data step of 1e-3: 0.01 0.03 0.1 0.3 1 3)",
    )
    parser.add_argument(
        "--spacings",
        type=int,
        nargs="+",
        metavar="K",
        help="frame spacings of the |dV| reading on data frames (default: 1 2 4 8 16)",
    )
    parser.add_argument(
        "--starts", type=int, default=8, metavar="N", help="start frames of the |dV| readings (8)"
    )
    parser.add_argument("-q", "--quiet", action="store_true", help="no progress bars")
    return parser


def main(argv: list[str] | None = None) -> int:
    """Run the diagnostics; user errors become one line on stderr and exit status 2."""
    args = build_parser().parse_args(argv)
    # This script's options are not PETSc options: PETSc must not read the command line.
    import petsc4py

    petsc4py.init(sys.argv[:1])
    from mpi4py import MPI

    from femeso._runtime import configure_environment

    configure_environment()  # first: run-time environment before Firedrake
    from femeso.config import load_config
    from femeso.evaluation.diagnostics import run, summary_lines

    # None: femeso.evaluation.diagnostics' defaults (PAPER_STEP_FACTORS, DATA_SPACINGS)
    steps = {"factors": args.factors, "spacings": args.spacings}
    try:
        config = load_config(args.config)
        if args.output:
            config.job.output = str(args.output)
        results = run(
            config,
            test=args.test,
            n_starts=args.starts,
            progress=not args.quiet,
            **{k: v for k, v in steps.items() if v is not None},
        )
    except (FileNotFoundError, ValueError, TypeError, KeyError) as exc:
        message = str(exc).splitlines()[0] if str(exc) else type(exc).__name__
        if MPI.COMM_WORLD.rank == 0:
            print(f"paper_diagnostics.py: error: {message}", file=sys.stderr)
        return 2
    if MPI.COMM_WORLD.rank == 0:
        sys.stdout.write("\n".join(summary_lines(results)) + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
