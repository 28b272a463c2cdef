"""``femeso <command>``: the command-line entry points.

``femeso run job.toml`` runs a whole job (generate the data, train the Onsager model, the
black-box baseline and the peers of ``[baseline] models``, roll out, report); ``generate``,
``train``, ``rollout`` and ``report`` run one stage each; ``femeso transfer job.toml --mesh
NAME`` evaluates a trained job on another mesh (:mod:`femeso.evaluation.transfer`); ``femeso demo``
runs the built-in default job; ``femeso config`` prints every configuration key with its default and
meaning. User errors (a bad configuration,
a missing file) are one line on stderr and exit status 2.
"""

from __future__ import annotations

# ruff: noqa: E402  -- the run-time environment is applied before MPI starts
import argparse
import sys
import time
from pathlib import Path

from femeso._runtime import configure_environment, start_firedrake

# The command's run-time settings (threads, kernel caches, Open MPI's root permission) are
# applied here, before mpi4py starts MPI: importing the femeso package itself changes nothing.
configure_environment()

from mpi4py import MPI

from femeso._log import logger, timestamp_log_lines

__all__ = ["main"]

# Commands that answer without Firedrake or PyTorch (well under a second); the others start
# Firedrake first, on every rank (femeso._runtime.start_firedrake).
_WITHOUT_FIREDRAKE = ("config", "inspect")


def _config(args: argparse.Namespace):
    from femeso.config import load_config

    config = load_config(getattr(args, "config", None))
    if getattr(args, "output", None):
        config.job.output = str(args.output)
    return config


def _emit(lines: list[str]) -> None:
    """Write result lines to stdout on rank 0."""
    if MPI.COMM_WORLD.rank == 0:
        sys.stdout.write("\n".join(lines) + "\n")
        sys.stdout.flush()


def _progress(args: argparse.Namespace) -> bool:
    """Progress bars only on a terminal: a log file gets the plain, timestamped lines instead."""
    return not args.quiet and sys.stderr.isatty()


def _targets_met(results: dict) -> bool:
    return all(t["met"] for t in results.get("targets", {}).values())


def _cmd_run(args: argparse.Namespace) -> int:
    from femeso.jobs import run, summary_lines

    results = run(
        _config(args), resume=args.resume, progress=_progress(args), overwrite=args.overwrite
    )
    _emit(summary_lines(results))
    _emit([f"results: {_config(args).output / 'report' / 'results.json'}"])
    return 0


def _cmd_demo(args: argparse.Namespace) -> int:
    from femeso.config import demo_config
    from femeso.jobs import run, summary_lines

    config = demo_config(args.output)
    t0 = time.perf_counter()
    results = run(config, resume=args.resume, progress=_progress(args), overwrite=args.overwrite)
    _emit(summary_lines(results))
    _emit(
        [
            f"demo finished in {time.perf_counter() - t0:.0f} s; results "
            f"{config.output / 'report' / 'results.json'}, plots in {config.output / 'report'}, "
            f"VTK in {config.output / 'rollouts'}"
        ]
    )
    return 0 if _targets_met(results) else 1


def _cmd_generate(args: argparse.Namespace) -> int:
    from femeso.jobs import generate

    paths = generate(_config(args), progress=_progress(args), overwrite=args.overwrite)
    _emit([f"{split}: {path}" for split, path in paths.items()])
    return 0


def _cmd_train(args: argparse.Namespace) -> int:
    from femeso.jobs import train

    models = {
        "all": ("onsager", "baseline", "peers"),
        "both": ("onsager", "baseline"),
    }.get(args.model, (args.model,))
    out = train(
        _config(args),
        resume=args.resume,
        models=models,
        progress=_progress(args),
        overwrite=args.overwrite,
    )
    _emit(
        [
            f"{name}: {r['iterations']} iterations, loss {r['loss_first']:.3e} -> "
            f"{r['loss_last']:.3e}, {r['model']}, {r['seconds']:.0f} s"
            for name, r in out.items()
        ]
    )
    return 0


def _cmd_rollout(args: argparse.Namespace) -> int:
    from femeso.jobs import rollout

    out = rollout(_config(args), progress=_progress(args))
    _emit(
        [
            f"{name}: error first {r['error_first']:.3e}, last {r['error_last']:.3e}, "
            f"energy increases {r['energy_increases']}"
            for name, r in out.items()
        ]
    )
    return 0


def _cmd_report(args: argparse.Namespace) -> int:
    from femeso.jobs import report, summary_lines

    results = report(_config(args), progress=_progress(args))
    _emit(summary_lines(results))
    return 0


def _cmd_transfer(args: argparse.Namespace) -> int:
    from femeso.evaluation.transfer import summary_lines, transfer

    results = transfer(
        _config(args),
        args.mesh,
        refinement=args.refinement,
        n_test=args.test,
        progress=_progress(args),
    )
    _emit(summary_lines(results))
    return 0


def _cmd_config(args: argparse.Namespace) -> int:
    from femeso.config import default_toml, demo_toml, load_config

    if args.check:
        load_config(args.check)
        _emit([f"{args.check}: valid"])
        return 0
    _emit([demo_toml() if args.demo else default_toml()])
    return 0


def _cmd_inspect(args: argparse.Namespace) -> int:
    from femeso.data.describe import describe, describe_lines

    infos = describe(args.paths, format=args.format, fields=args.field or None)
    _emit(describe_lines(infos))
    return 2 if any(info.get("problems") for info in infos) else 0


def _cmd_mesh(args: argparse.Namespace) -> int:
    from femeso.meshes import generate_mesh

    geo = Path(args.geo)
    out = Path(args.output) if args.output else geo.with_suffix(".msh")
    t0 = time.perf_counter()
    generate_mesh(geo, out, size=args.size, refinement=args.refinement)
    logger.info("wrote %s in %.1f s", out, time.perf_counter() - t0)
    return 0


def build_parser() -> argparse.ArgumentParser:
    """Return the argument parser of the ``femeso`` command."""
    parser = argparse.ArgumentParser(
        prog="femeso",
        description="Learn Onsager-structured mesoscopic dynamics on finite-element meshes.",
    )
    sub = parser.add_subparsers(dest="command", required=True)

    def job_command(name: str, func, help: str, *, resume: bool = False, overwrite: bool = False):
        p = sub.add_parser(name, help=help)
        p.add_argument("config", help="the job's TOML file (see `femeso config`)")
        p.add_argument("-o", "--output", help="override job.output")
        p.add_argument("-q", "--quiet", action="store_true", help="no progress bars")
        if resume:
            p.add_argument(
                "--resume", action="store_true", help="continue from the last checkpoints"
            )
        if overwrite:
            p.add_argument(
                "--overwrite",
                action="store_true",
                help="replace results of an earlier run in the output folder",
            )
        p.set_defaults(func=func)
        return p

    job_command(
        "run",
        _cmd_run,
        "the whole job: generate (or import files), train, roll out, report",
        resume=True,
        overwrite=True,
    )
    job_command(
        "generate",
        _cmd_generate,
        "generate the train/validation/test data (data.source = 'files': import the files)",
        overwrite=True,
    )
    train = job_command(
        "train",
        _cmd_train,
        "train the Onsager model, the baseline and the peers",
        resume=True,
        overwrite=True,
    )
    train.add_argument(
        "--model",
        choices=("onsager", "baseline", "peers", "both", "all"),
        default="all",
        help="what to train: the Onsager model, the black-box baseline, the peers of "
        "baseline.models, both (onsager and baseline) or all (default)",
    )
    job_command("rollout", _cmd_rollout, "roll out the test data; VTK files for ParaView")
    job_command("report", _cmd_report, "evaluate, write results.json and plots")
    transfer = job_command(
        "transfer",
        _cmd_transfer,
        "evaluate a trained job on another mesh (new test data there)",
    )
    transfer.add_argument(
        "--mesh",
        required=True,
        metavar="NAME_OR_FILE",
        help="reference geometry (l_shape, plate_with_holes, curved_channel), a .msh/.geo file, "
        "or periodic_interval / periodic_square",
    )
    transfer.add_argument(
        "--refinement",
        type=int,
        default=0,
        metavar="N",
        help="halve the target's mesh size N times (periodic meshes: 2**N times the cells)",
    )
    transfer.add_argument(
        "--test",
        type=int,
        metavar="K",
        help="number of new test trajectories (default: the job's data.test)",
    )

    demo = sub.add_parser(
        "demo", help="run the built-in demo (Flory-Huggins Cahn-Hilliard on a plate, to 10x T)"
    )
    demo.add_argument("-o", "--output", default="femeso-demo", help="output directory")
    demo.add_argument("-q", "--quiet", action="store_true", help="no progress bars")
    demo.add_argument("--resume", action="store_true", help="continue from the last checkpoints")
    demo.add_argument(
        "--overwrite", action="store_true", help="replace an earlier demo in the output folder"
    )
    demo.set_defaults(func=_cmd_demo)

    config = sub.add_parser("config", help="print every configuration key with its default")
    config.add_argument("--check", metavar="TOML", help="only validate this file")
    config.add_argument(
        "--demo", action="store_true", help="print the built-in demo's job file instead"
    )
    config.set_defaults(func=_cmd_config)

    inspect = sub.add_parser(
        "inspect", help="what femeso sees in data files (before any training), and what it refuses"
    )
    inspect.add_argument("paths", nargs="+", metavar="PATH", help="data files")
    inspect.add_argument(
        "--format", default="auto", help="the files' format (default: by extension and content)"
    )
    inspect.add_argument(
        "--field", action="append", metavar="NAME", help="a field to read (repeatable)"
    )
    inspect.set_defaults(func=_cmd_inspect)

    mesh = sub.add_parser("mesh", help="mesh a gmsh .geo geometry into a .msh file")
    mesh.add_argument("geo", help="the .geo file")
    mesh.add_argument("-o", "--output", help="output .msh (default: beside the .geo)")
    mesh.add_argument("--size", type=float, help="mesh size (default: the geometry's own)")
    mesh.add_argument("--refinement", type=int, default=0, help="halve the size this often")
    mesh.set_defaults(func=_cmd_mesh)
    return parser


def main(argv: list[str] | None = None) -> int:
    """Run the ``femeso`` command; user errors become one line on stderr and exit code 2."""
    args = build_parser().parse_args(argv)
    if not sys.stderr.isatty():
        timestamp_log_lines()
    if args.command not in _WITHOUT_FIREDRAKE:
        start_firedrake()
    try:
        return args.func(args)
    except (
        OSError,  # missing files, results in the way, a full disk or a file-size limit
        ValueError,
        TypeError,
        KeyError,
    ) as exc:
        message = str(exc).splitlines()[0] if str(exc) else type(exc).__name__
        if MPI.COMM_WORLD.rank == 0:
            print(f"femeso {args.command}: error: {message}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    sys.exit(main())
