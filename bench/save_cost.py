"""Cost of writing a dataset: format 2 (a component per state) against format 1 (one per state).

``femeso generate`` and the files route (``data.source = "files"``) write every state through
``firedrake.CheckpointFile``. Format 1 called ``save_function(state, idx=k)`` once per state;
format 2 (``save_dataset`` today) stores a trajectory of a scalar field as one Function of a
vector space with one component per state. Both are timed here in the same run, on the paper's
1-D grid (256 DoFs, 101 frames) and on the plate with holes (P1), and the ratio is printed.

Usage::

    python bench/save_cost.py [--trajectories 10]
"""

from __future__ import annotations

import argparse
import tempfile
import time
from pathlib import Path

from femeso._runtime import configure_environment

configure_environment()  # before Firedrake: threads, kernel caches

import firedrake as fd  # noqa: E402
import numpy as np  # noqa: E402

from femeso.data.io import save_dataset  # noqa: E402
from femeso.data.trajectories import Dataset, TrajectoryData  # noqa: E402
from femeso.meshes import load_mesh  # noqa: E402


def dataset(mesh: fd.MeshGeometry, n_traj: int, n_frames: int) -> Dataset:
    """Smooth states, one trajectory per phase."""
    space = fd.FunctionSpace(mesh, "CG", 1)
    x = fd.Function(space).interpolate(fd.SpatialCoordinate(mesh)[0]).dat.data_ro
    trajectories = []
    for i in range(n_traj):
        states = []
        for k in range(n_frames):
            state = fd.Function(space)
            state.dat.data[:] = np.sin(x + 0.01 * k + i)
            states.append(state)
        trajectories.append(TrajectoryData(space, np.arange(n_frames) * 0.01, states))
    return Dataset(space, trajectories)


def per_state(path: Path, data: Dataset) -> None:
    """Format 1's writes: one ``save_function`` per state."""
    with fd.CheckpointFile(str(path), "w") as out:
        out.save_mesh(data.space.mesh())
        for i, traj in enumerate(data):
            for k, state in enumerate(traj.states):
                out.save_function(state, idx=k, name=f"trajectory_{i}")


def main() -> None:
    """Print seconds per state of both layouts and their ratio."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--trajectories", type=int, default=10)
    args = parser.parse_args()
    cases = {
        "periodic grid, 256 DoFs, 101 frames": (fd.PeriodicIntervalMesh(256, 2 * np.pi), 101),
        "plate with holes, P1, 41 frames": (load_mesh("plate_with_holes"), 41),
    }
    with tempfile.TemporaryDirectory() as folder:
        for label, (mesh, frames) in cases.items():
            data = dataset(mesh, args.trajectories, frames)
            states = args.trajectories * frames
            t0 = time.perf_counter()
            per_state(Path(folder) / "old.h5", data)
            old = time.perf_counter() - t0
            t0 = time.perf_counter()
            save_dataset(Path(folder) / "new.h5", data)
            new = time.perf_counter() - t0
            sizes = [(Path(folder) / f).stat().st_size / 2**20 for f in ("old.h5", "new.h5")]
            print(
                f"{label}: one save per state {1e3 * old / states:.1f} ms/state, "
                f"a component per state {1e3 * new / states:.1f} ms/state: "
                f"{old / new:.1f}x faster; files {sizes[0]:.2f} / {sizes[1]:.2f} MiB"
            )
            for f in ("old.h5", "new.h5"):
                (Path(folder) / f).unlink()


if __name__ == "__main__":
    main()
