"""``femeso <command>``: the command-line entry points."""

from __future__ import annotations

import argparse
import sys
import time

from femeso._log import logger

__all__ = ["main"]


def _cmd_demo(args: argparse.Namespace) -> int:
    from femeso.demo import run_demo

    run_demo(mesh=args.mesh, steps=args.steps, dt=args.dt)
    return 0


def _cmd_mesh(args: argparse.Namespace) -> int:
    from pathlib import Path

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

    demo = sub.add_parser("demo", help="run the built-in default job and print what it did")
    demo.add_argument("--mesh", default="plate_with_holes", help="reference geometry or .msh file")
    demo.add_argument("--steps", type=int, default=20, help="number of time steps")
    demo.add_argument("--dt", type=float, default=2e-3, help="time step")
    demo.set_defaults(func=_cmd_demo)

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
    try:
        return args.func(args)
    except (FileNotFoundError, ValueError, TypeError, KeyError) as exc:
        print(f"femeso {args.command}: error: {exc}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    sys.exit(main())
