"""Cost of reading users' files: the paper's grid HDF5 layout (lazily) and an XDMF series.

Writes, into a temporary directory that is removed at the end,

* a >= 1 GB file in the paper's exact layout, written by plain h5py one trajectory at a time:
  ``u_sol_all`` float32 of shape (N, 101, 128, 128, 1) with ``t_coord`` and ``x_coord``;
* two XDMF time series (meshio's TimeSeriesWriter) of one 128 x 128 triangle mesh, the second
  with its points in another order,

then measures, in this process: the layout query (:func:`grid_hdf5_info`), reading a few
trajectories lazily (:func:`read_grid_hdf5` with ``trajectories=``) in frames per second and
the growth of the peak resident memory (``ru_maxrss``) against the file size, and reading the
XDMF files (one alone, then both into one dataset on one mesh by coordinates).

    python bench/read_cost.py                   # 160 trajectories: 1.06 GB
    python bench/read_cost.py --trajectories 40 # a smaller file
"""

from __future__ import annotations

import os

os.environ.setdefault("PETSC_OPTIONS", "-options_left no")  # argparse's flags are not PETSc's

from femeso._runtime import configure_environment

configure_environment()  # before Firedrake: threads, kernel caches

import argparse
import contextlib
import resource
import shutil
import tempfile
import time
from pathlib import Path

import h5py
import meshio
import numpy as np

from femeso.data.io import grid_hdf5_info, read_data, read_grid_hdf5, read_meshio_series

FRAMES = 101
N_GRID = 128


def maxrss_mb() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024.0  # kB on Linux


def write_paper_file(path: Path, n: int) -> float:
    """Write the paper's 2-D layout with h5py, one trajectory at a time; return seconds."""
    x = np.arange(N_GRID) * (2 * np.pi / N_GRID)
    X, Y = np.meshgrid(x, x, indexing="ij")
    t0 = time.perf_counter()
    with h5py.File(path, "w") as h5:
        dset = h5.create_dataset("u_sol_all", shape=(n, FRAMES, N_GRID, N_GRID, 1), dtype="f4")
        h5.create_dataset("t_coord", data=np.linspace(0.0, 1.0, FRAMES, dtype=np.float32))
        h5.create_dataset("x_coord", data=x.astype(np.float32))
        for i in range(n):
            t = np.linspace(0.0, 1.0, FRAMES)[:, None, None]
            u = np.sin(X + (i + 1) * t) * np.cos(Y - t) * (1 + 0.01 * i)
            dset[i] = u[..., None].astype(np.float32)
    return time.perf_counter() - t0


def square_mesh(n: int) -> tuple[np.ndarray, np.ndarray]:
    x, y = np.meshgrid(np.linspace(0, 1, n + 1), np.linspace(0, 1, n + 1), indexing="ij")
    points = np.c_[x.ravel(), y.ravel(), np.zeros(x.size)]
    idx = np.arange((n + 1) ** 2).reshape(n + 1, n + 1)
    a, b = idx[:-1, :-1].ravel(), idx[1:, :-1].ravel()
    c, d = idx[1:, 1:].ravel(), idx[:-1, 1:].ravel()
    return points, np.r_[np.c_[a, b, c], np.c_[a, c, d]]


def write_xdmf(path: Path, points: np.ndarray, cells: np.ndarray, frames: int) -> None:
    # meshio 5.3.5 writes the .h5 beside the working directory: write from the file's directory.
    with (
        contextlib.chdir(path.parent),
        meshio.xdmf.TimeSeriesWriter(path.name) as writer,
    ):
        writer.write_points_cells(points, [("triangle", cells)])
        for k in range(frames):
            t = 0.01 * k
            writer.write_data(t, point_data={"c": np.sin(points[:, 0] + t) * points[:, 1]})


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--trajectories", type=int, default=160, help="N of the grid file")
    parser.add_argument("--read", type=int, default=3, help="trajectories read lazily")
    args = parser.parse_args()

    root = Path(tempfile.mkdtemp(prefix="femeso-read-cost-"))
    try:
        paper = root / "paper_2d.h5"
        write_s = write_paper_file(paper, args.trajectories)
        size_mb = paper.stat().st_size / 2**20
        one_mb = FRAMES * N_GRID * N_GRID * 4 / 2**20
        print(f"grid file: {paper.name}, {size_mb:.0f} MiB (one trajectory {one_mb:.2f} MiB),")
        print(
            f"  shape ({args.trajectories}, {FRAMES}, {N_GRID}, {N_GRID}, 1) float32, "
            f"written by h5py in {write_s:.1f} s"
        )

        t0 = time.perf_counter()
        info = grid_hdf5_info(paper)
        info_s = time.perf_counter() - t0
        print(
            f"grid_hdf5_info: {info_s * 1e3:.1f} ms -> {info.trajectories} trajectories, "
            f"{info.frames} frames, grid {info.grid}, dt {info.dt}, period {info.period}"
        )

        read_grid_hdf5(paper, trajectories=[0])  # warm-up: mesh, kernels (not timed)
        before = maxrss_mb()
        picks = list(np.linspace(1, args.trajectories - 1, args.read).round().astype(int))
        t0 = time.perf_counter()
        data = read_grid_hdf5(paper, trajectories=picks)
        read_s = time.perf_counter() - t0
        after = maxrss_mb()
        frames = sum(len(t) for t in data)
        growth = after - before
        states_mb = frames * data.space.dof_dset.size * 8 / 2**20
        print(
            f"read_grid_hdf5(trajectories={[int(i) for i in picks]}): {frames} frames in "
            f"{read_s:.2f} s = {frames / read_s:.0f} frames/s "
            f"({len(picks) * one_mb / read_s:.0f} MiB/s of the file)"
        )
        print(
            f"  peak RSS {before:.0f} -> {after:.0f} MiB: growth {growth:.0f} MiB = "
            f"{growth / size_mb:.3f} x the file size; the float64 states themselves are "
            f"{states_mb:.0f} MiB"
        )

        points, cells = square_mesh(N_GRID)
        a, b = root / "run_a.xdmf", root / "run_b.xdmf"
        write_xdmf(a, points, cells, FRAMES)
        perm = np.random.default_rng(0).permutation(len(points))
        shuffled = np.empty_like(points)
        shuffled[perm] = points
        write_xdmf(b, shuffled, perm[cells], FRAMES)
        xdmf_mb = sum(p.stat().st_size for p in root.glob("run_*")) / 2**20 / 2
        read_meshio_series(a)  # warm-up
        t0 = time.perf_counter()
        one = read_meshio_series(a)
        one_s = time.perf_counter() - t0
        t0 = time.perf_counter()
        both = read_data([a, b])
        both_s = time.perf_counter() - t0
        assert both[0].mesh is both[1].mesh
        print(
            f"XDMF series: {len(points)} points, {len(cells)} triangles, {FRAMES} frames, "
            f"{xdmf_mb:.1f} MiB each"
        )
        print(
            f"  read_meshio_series: {len(one)} frames in {one_s:.2f} s = "
            f"{len(one) / one_s:.0f} frames/s"
        )
        print(
            f"  read_data([a, b]) (b matched onto a's mesh by coordinates): "
            f"{sum(len(t) for t in both)} frames in {both_s:.2f} s = "
            f"{sum(len(t) for t in both) / both_s:.0f} frames/s"
        )
    finally:
        shutil.rmtree(root, ignore_errors=True)


if __name__ == "__main__":
    main()
