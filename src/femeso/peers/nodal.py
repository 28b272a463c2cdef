"""The nodal values of a scalar Lagrange space as one global array, in an order fixed by geometry.

Peer models (neural operators, graph networks, spectral models) see a state as an array of nodal
values, not as a finite-element function. :class:`NodalLayout` fixes that array's order -- the DoFs
sorted by position, the last coordinate slowest (on a tensor grid: row-major, ``x`` fastest) --
whatever the mesh's own numbering and however many ranks hold it, and moves states between
:class:`firedrake.Function` and that array: :meth:`NodalLayout.gather` collects the owned values
of every rank on rank 0, :meth:`NodalLayout.scatter` writes rank 0's array back into a Function.
It also knows the grid (when the DoFs form a uniform tensor grid) and the graph of the mesh
(pairs of DoFs that share a cell) for the graph networks.
"""

from __future__ import annotations

from functools import cached_property
from typing import Any

import firedrake as fd
import numpy as np

from femeso.data.mapping import dof_coordinates
from femeso.data.trajectories import Dataset, mesh_of

__all__ = ["NodalLayout", "trajectory_arrays"]


class NodalLayout:
    """The global order of a scalar Lagrange space's DoFs, and the moves to and from it.

    Parameters
    ----------
    space
        A scalar Lagrange (CG) ``FunctionSpace`` on any mesh, serial or distributed.

    Attributes
    ----------
    n
        Number of DoFs (global).
    positions
        ``(n, gdim)`` DoF positions in the global order (on every rank), reduced modulo the
        period on periodic meshes.
    periods
        ``(gdim,)`` the period of each direction, 0 where the mesh is not periodic.

    """

    def __init__(self, space: Any) -> None:
        if space.value_shape != ():
            raise ValueError(
                f"peer models take a scalar space, got value shape {space.value_shape}"
            )
        self.space = space
        self.comm = mesh_of(space).comm
        positions, self.periods = dof_coordinates(space)
        n_owned = space.dof_dset.size
        self._global_ids = space.dof_dset.lgmap.indices  # local (with halos) -> PETSc number
        owned_ids = self._global_ids[:n_owned]
        ids = np.concatenate(self.comm.allgather(owned_ids))
        points = np.concatenate(self.comm.allgather(positions[:n_owned]))
        self.n = int(ids.size)
        extent = np.ptp(points, axis=0) if self.n else np.zeros(points.shape[1])
        # Positions snapped to a tolerance, so that a grid's rows sort together.
        tol = 1e-9 * max(float(np.linalg.norm(extent)), 1.0)
        keys = np.round(points / tol).astype(np.int64)
        order = np.lexsort(keys.T)  # the last coordinate slowest
        self.positions = points[order]
        #: PETSc number -> position in the global order
        self._rank_of = np.empty(self.n, dtype=np.int64)
        self._rank_of[ids[order]] = np.arange(self.n)
        self._owned = self._rank_of[owned_ids]

    # ---------------------------------------------------------------- moving states
    def gather(self, u: fd.Function) -> np.ndarray | None:
        """Return the state's nodal values in the global order on rank 0 (``None`` elsewhere)."""
        owned = u.dat.data_ro[: len(self._owned)]
        parts = self.comm.gather((self._owned, np.array(owned)), root=0)
        if self.comm.rank != 0:
            return None
        values = np.empty(self.n)
        for where, part in parts:
            values[where] = part
        return values

    def scatter(self, values: np.ndarray | None, out: fd.Function) -> fd.Function:
        """Write rank 0's global array ``values`` into ``out`` (every rank's owned part)."""
        values = self.comm.bcast(values if self.comm.rank == 0 else None, root=0)
        with out.dat.vec_wo as vec:
            vec.array[:] = values[self._owned]
        return out

    def function(self, values: np.ndarray | None) -> fd.Function:
        """Return a new Function on the space with rank 0's global ``values``."""
        return self.scatter(values, fd.Function(self.space))

    # ---------------------------------------------------------------- geometry
    @cached_property
    def grid_shape(self) -> tuple[int, ...] | None:
        """The shape ``(n_y, n_x)`` (2-D) or ``(n_x,)`` (1-D) of a uniform tensor grid, else None.

        The global order is row-major on such a grid (``x`` fastest), so
        ``values.reshape(grid_shape)`` is the grid.
        """
        gdim = self.positions.shape[1]
        extent = np.ptp(self.positions, axis=0)
        tol = 1e-7 * max(float(np.linalg.norm(extent)), 1.0)
        axes = []
        for d in range(gdim):
            values = np.unique(np.round(self.positions[:, d] / tol)) * tol
            steps = np.diff(values)
            if len(values) > 1 and np.ptp(steps) > 10 * tol:
                return None
            axes.append(values)
        shape = tuple(len(a) for a in reversed(axes))
        if int(np.prod(shape)) != self.n:
            return None
        grid = np.stack(np.meshgrid(*axes, indexing="xy"), axis=-1).reshape(-1, gdim)
        if not np.allclose(grid, self.positions, atol=10 * tol, rtol=0.0):
            return None
        return shape

    @cached_property
    def edges(self) -> np.ndarray:
        """``(2, n_edges)`` directed pairs ``(i, j)`` of DoFs that share a cell (no self-pairs).

        Both directions of every pair are present, each once; indices are in the global order.
        """
        cells = self.space.cell_node_map().values  # owned cells (local DoF numbers, with halos)
        global_cells = self._rank_of[self._global_ids[cells]]
        k = global_cells.shape[1]
        i, j = np.meshgrid(np.arange(k), np.arange(k), indexing="ij")
        off = i != j
        pairs = np.stack([global_cells[:, i[off]].ravel(), global_cells[:, j[off]].ravel()], axis=0)
        pairs = np.concatenate(self.comm.allgather(pairs), axis=1)
        return np.unique(pairs, axis=1)

    def relative_positions(self, edges: np.ndarray) -> np.ndarray:
        """``(n_edges, gdim)`` position of the receiver minus the sender, periodic-aware.

        In a periodic direction the shortest difference (minimum image) is taken.
        """
        delta = self.positions[edges[1]] - self.positions[edges[0]]
        for d, period in enumerate(self.periods):
            if period > 0:
                delta[:, d] -= period * np.round(delta[:, d] / period)
        return delta


def trajectory_arrays(data: Dataset, layout: NodalLayout) -> np.ndarray | None:
    """Return the dataset's states as one ``(trajectories, frames, n)`` array on rank 0.

    Every trajectory must have the same number of frames (``ValueError`` otherwise); other
    ranks get ``None``.
    """
    frames = {len(traj.states) for traj in data.trajectories}
    if len(frames) > 1:
        raise ValueError(
            f"peer models need trajectories of one length, got {sorted(frames)} frames"
        )
    arrays = [[layout.gather(u) for u in traj.states] for traj in data.trajectories]
    if layout.comm.rank != 0:
        return None
    return np.asarray(arrays, dtype=np.float64).reshape(len(arrays), -1, layout.n)
