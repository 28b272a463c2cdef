"""Cost of reference data: seconds per trajectory, one at a time against batched generation.

Times :func:`femeso.data.generators.generate_dataset` (through the paper's protocol,
:func:`paper_allen_cahn`, for 1-D Allen--Cahn) with ``batch=1`` (one trajectory at a time) and
with ``batch=B`` for each ``B`` asked (``B`` trajectories in one batch), in this process, after
a warm-up that compiles every kernel. The one-at-a-time figure is measured before and after the
batched ones (the machine is shared: the two show the drift); the ratios divide by their mean.
The batched frames are compared with the one-at-a-time frames of the same seeds (the largest
relative difference is printed).

    python bench/generation_cost.py                        # 1-D Allen-Cahn, the paper's protocol
    python bench/generation_cost.py --batches 8 32 --single 2
    python bench/generation_cost.py --case ch2d --frames 20 --batches 8 32
    python bench/generation_cost.py --case ac2d --cells 32 --frames 10 --batches 4 16
"""

from __future__ import annotations

import os

os.environ.setdefault("PETSC_OPTIONS", "-options_left no")  # argparse's flags are not PETSc's

from femeso._runtime import configure_environment

configure_environment()  # before Firedrake: threads, kernel caches

import argparse
import time
from collections.abc import Callable

import firedrake as fd
import numpy as np

import femeso
from femeso.data.generators import (
    allen_cahn_model,
    cahn_hilliard_model,
    generate_dataset,
    paper_allen_cahn,
    paper_sine_initial_condition,
)
from femeso.data.trajectories import Dataset


def ac1d(n: int, frames: int, batch: int, seed: int) -> Dataset:
    """The paper's 1-D Allen-Cahn protocol: 256 cells, dt 1e-3, 4 reference steps per frame."""
    return paper_allen_cahn(
        1, n_trajectories=n, seed=seed, n_frames=frames, substeps=4, progress=False, batch=batch
    )


def ch2d(n: int, frames: int, batch: int, seed: int) -> Dataset:
    """Cahn-Hilliard (double well, constant mobility) on the L-shape, P1."""
    space = fd.FunctionSpace(femeso.load_mesh("l_shape"), "CG", 1)
    return generate_dataset(
        space,
        cahn_hilliard_model,
        n_trajectories=n,
        n_frames=frames,
        frame_dt=2e-3,
        seed=seed,
        substeps=2,
        progress=False,
        batch=batch,
    )


SETTINGS = {"cells": 32}  # ac2d: cells per side (--cells)


def ac2d(n: int, frames: int, batch: int, seed: int) -> Dataset:
    """Allen-Cahn on a periodic square (``--cells`` per side), the paper's sine initial fields."""
    cells = SETTINGS["cells"]
    mesh = fd.PeriodicSquareMesh(cells, cells, 2 * np.pi)
    return generate_dataset(
        fd.FunctionSpace(mesh, "CG", 1),
        allen_cahn_model,
        n_trajectories=n,
        n_frames=frames,
        frame_dt=1e-3,
        seed=seed,
        substeps=4,
        initial_condition=paper_sine_initial_condition,
        progress=False,
        batch=batch,
    )


CASES: dict[str, Callable[[int, int, int, int], Dataset]] = {
    "ac1d": ac1d,
    "ac2d": ac2d,
    "ch2d": ch2d,
}


def values(data: Dataset) -> np.ndarray:
    return np.array([[s.dat.data_ro.copy() for s in t.states] for t in data.trajectories])


def timed(case, n: int, frames: int, batch: int, seed: int) -> tuple[float, np.ndarray]:
    t0 = time.perf_counter()
    data = case(n, frames, batch, seed)
    return (time.perf_counter() - t0) / n, values(data)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--case", choices=sorted(CASES), default="ac1d")
    parser.add_argument("--frames", type=int, default=100, help="saved frames per trajectory")
    parser.add_argument("--batches", type=int, nargs="+", default=[8, 32, 100])
    parser.add_argument("--single", type=int, default=3, help="trajectories timed one at a time")
    parser.add_argument("--cells", type=int, default=32, help="ac2d: cells per side")
    args = parser.parse_args()
    SETTINGS["cells"] = args.cells
    case = CASES[args.case]
    for batch in (1, 2):  # compile the kernels of both paths
        case(2, 1, batch, 0)
    what = f", {args.cells} x {args.cells} cells" if args.case == "ac2d" else ""
    print(f"case {args.case}{what}, {args.frames} frames per trajectory")
    before, single = timed(case, args.single, args.frames, 1, 0)
    rows = []
    for B in args.batches:
        per, batched = timed(case, B, args.frames, B, 0)
        m = min(B, args.single)
        scale = np.abs(single[:m]).max()
        difference = np.abs(batched[:m] - single[:m]).max() / scale
        rows.append((B, per, difference))
    after, _ = timed(case, args.single, args.frames, 1, 0)
    one = 0.5 * (before + after)
    print(f"one at a time: {before:.3f} s/trajectory before, {after:.3f} after")
    print(" batch  s/trajectory  one-at-a-time/batched  max rel. difference")
    for B, per, difference in rows:
        print(f"{B:6d}  {per:12.3f}  {one / per:21.2f}  {difference:19.1e}")


if __name__ == "__main__":
    main()
