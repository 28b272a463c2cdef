"""Moving states between function spaces by the coordinates of their degrees of freedom.

Two meshes of one geometry (the same ``.msh`` read twice, a mesh loaded from a file, the same mesh
distributed over another number of ranks) number their vertices and DoFs differently. A copy of
``dat.data`` between them puts values at the wrong points, silently. Every copy femeso makes
between two spaces therefore goes through :func:`map_dataset`: each target DoF takes the value of
the source DoF *at the same point* (found with a k-d tree over all ranks' source DoFs), and a
source and target that do not match -- another element, another number of DoFs, a target point
with no source DoF there, two target DoFs on one source DoF -- raise ``ValueError`` naming both.

Periodic meshes carry discontinuous coordinates: a DoF on the seam is seen at ``x`` from one
cell and at ``x + L`` from the other. The periodic directions are found from that spread, and
DoF positions are reduced modulo the period before matching.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import firedrake as fd
import numpy as np
from mpi4py import MPI
from scipy.spatial import cKDTree

from femeso.data.trajectories import Dataset, TrajectoryData, mesh_of

__all__ = ["DofMap", "dof_coordinates", "map_dataset", "map_function"]

#: Matching tolerance, relative to the diameter of the mesh's bounding box.
RELATIVE_TOLERANCE = 1e-8


def _describe(space: Any) -> str:
    mesh = mesh_of(space)
    return (
        f"{space.ufl_element()} on mesh {mesh.name!r} ({space.dim()} DoFs, "
        f"{mesh.comm.size} rank(s))"
    )


def dof_coordinates(space: Any) -> tuple[np.ndarray, np.ndarray]:
    """Return the positions of a scalar (or vector/tensor) Lagrange space's local DoFs, with halos.

    Parameters
    ----------
    space
        A non-mixed function space whose element has point-evaluation DoFs (Lagrange).

    Returns
    -------
    positions
        ``(n_local_with_halos, gdim)`` DoF (node) positions, reduced modulo the period in the
        periodic directions of a periodic mesh (then in ``[lo, lo + L)`` per direction).
    periods
        ``(gdim,)`` the period of each direction, 0 where the mesh is not periodic.

    """
    mesh = mesh_of(space)
    element = space.ufl_element()
    scalar = element.sub_elements[0] if space.value_shape else element
    broken = fd.VectorFunctionSpace(mesh, fd.BrokenElement(scalar))
    cellwise = fd.Function(broken).interpolate(fd.SpatialCoordinate(mesh))
    cell_dofs = space.cell_node_map().values_with_halo
    gdim = mesh.geometric_dimension
    points = cellwise.dat.data_ro_with_halos.reshape(-1, gdim)
    cell_x = points[broken.cell_node_map().values_with_halo]
    n = space.dof_dset.total_size
    lo = np.full((n, gdim), np.inf)
    hi = np.full((n, gdim), -np.inf)
    flat_dofs = cell_dofs.ravel()
    flat_x = cell_x.reshape(-1, gdim)
    np.minimum.at(lo, flat_dofs, flat_x)
    np.maximum.at(hi, flat_dofs, flat_x)
    comm = mesh.comm
    coords = mesh.coordinates.dat.data_ro.reshape(-1, gdim)
    box_lo = _reduce(coords.min(axis=0) if len(coords) else np.full(gdim, np.inf), MPI.MIN, comm)
    box_hi = _reduce(coords.max(axis=0) if len(coords) else np.full(gdim, -np.inf), MPI.MAX, comm)
    extent = box_hi - box_lo
    # a seam DoF is seen a whole period apart
    spread = _reduce((hi - lo).max(axis=0) if n else np.zeros(gdim), MPI.MAX, comm)
    periodic = spread > 0.5 * extent
    periods = np.where(periodic, extent, 0.0)
    positions = lo.copy()
    if periodic.any():
        tol = RELATIVE_TOLERANCE * float(np.linalg.norm(extent))
        for d in np.flatnonzero(periodic):
            x = np.mod(positions[:, d] - box_lo[d], periods[d])
            x[x > periods[d] - tol] -= periods[d]
            positions[:, d] = box_lo[d] + x
    return positions, periods


def _reduce(values: np.ndarray, op: Any, comm: Any) -> np.ndarray:
    """Return the element-wise reduction of a float array over the ranks."""
    out = np.array(values, dtype=float)
    comm.Allreduce(MPI.IN_PLACE, out, op=op)
    return out


@dataclass
class DofMap:
    """Where each local DoF (with halos) of a target space finds its value among a source's DoFs.

    Built once per pair of spaces by :meth:`between`; :meth:`apply` then copies any number of
    states. For a mixed space there is one index per sub-space.
    """

    source: Any
    target: Any
    #: per sub-space: the positions in the gathered (all ranks, owned) source values
    indices: list[np.ndarray]
    #: per sub-space: the owned-DoF counts of every source rank (for the gather)
    counts: list[np.ndarray]

    @classmethod
    def between(cls, source: Any, target: Any) -> DofMap:
        """Match the DoFs of ``target`` to those of ``source`` by position (collective).

        Raises
        ------
        ValueError
            If the spaces have other elements or numbers of DoFs, or a target DoF has no source
            DoF at its position, or two target DoFs share one source DoF.

        """
        src_mesh, tgt_mesh = mesh_of(source), mesh_of(target)
        what = f"source {_describe(source)}, target {_describe(target)}"
        if source.ufl_element() != target.ufl_element():
            raise ValueError(f"data on another element: {what}")
        if source.dim() != target.dim():
            raise ValueError(f"data on a space of another size: {what}")
        if src_mesh.geometric_dimension != tgt_mesh.geometric_dimension:
            raise ValueError(f"data in another dimension: {what}")
        comm = tgt_mesh.comm
        indices, counts = [], []
        src_subs = source.subspaces if len(source) > 1 else [source]
        tgt_subs = target.subspaces if len(target) > 1 else [target]
        for s_space, t_space in zip(src_subs, tgt_subs, strict=True):
            src_x, src_periods = dof_coordinates(s_space)
            tgt_x, tgt_periods = dof_coordinates(t_space)
            if not np.allclose(src_periods, tgt_periods, rtol=1e-10, atol=0.0):
                raise ValueError(
                    f"data on a mesh with other periods {src_periods.tolist()} "
                    f"(the job's: {tgt_periods.tolist()}): {what}"
                )
            owned = s_space.dof_dset.size
            all_src, count = _allgather_rows(src_x[:owned], comm)
            extent = np.ptp(all_src, axis=0) if len(all_src) else np.zeros(src_x.shape[1])
            tol = RELATIVE_TOLERANCE * max(float(np.linalg.norm(extent)), 1e-300)
            distance, index = cKDTree(all_src).query(tgt_x, k=1)
            far = distance > tol
            bad = comm.allreduce(int(far.sum()), MPI.SUM)
            if bad:
                worst = comm.allreduce(float(distance.max(initial=0.0)), MPI.MAX)
                example = tgt_x[np.flatnonzero(far)[0]].tolist() if far.any() else None
                raise ValueError(
                    f"data on another geometry: {bad} DoF position(s) of the job's mesh have no "
                    f"data DoF there (largest distance {worst:.3e}, e.g. at {example}): {what}"
                )
            t_owned = t_space.dof_dset.size
            used = np.zeros(len(all_src), dtype=np.int64)
            np.add.at(used, index[:t_owned], 1)
            comm.Allreduce(MPI.IN_PLACE, used, op=MPI.SUM)
            if (used != 1).any():
                raise ValueError(
                    f"data DoFs do not match one to one ({int((used == 0).sum())} unmatched, "
                    f"{int((used > 1).sum())} matched twice): {what}"
                )
            indices.append(index.astype(np.int64))
            counts.append(count)
        return cls(source, target, indices, counts)

    def apply(self, function: fd.Function) -> fd.Function:
        """Return ``function`` (on the source space) as a Function on the target (collective)."""
        comm = mesh_of(self.target).comm
        out = fd.Function(self.target, name=function.name())
        for src, tgt, index, count in zip(
            function.subfunctions, out.subfunctions, self.indices, self.counts, strict=True
        ):
            values = src.dat.data_ro
            block = values.reshape(len(values), -1)
            gathered, _ = _allgather_rows(block, comm, count)
            tgt.dat.data_wo_with_halos[...] = gathered[index].reshape(
                (len(index), *tgt.dat.data_ro_with_halos.shape[1:])
            )
        return out


def _allgather_rows(
    rows: np.ndarray, comm: Any, counts: np.ndarray | None = None
) -> tuple[np.ndarray, np.ndarray]:
    """Return the rows of every rank, concatenated in rank order, and each rank's row count."""
    rows = np.ascontiguousarray(rows, dtype=float)
    if comm.size == 1:
        return rows, np.array([len(rows)])
    width = rows.shape[1] if rows.ndim > 1 else 1
    if counts is None:
        counts = np.array(comm.allgather(len(rows)))
    out = np.empty((int(counts.sum()), width))
    comm.Allgatherv(rows.reshape(-1, width), [out, counts * width])
    return out.reshape((int(counts.sum()), *rows.shape[1:])), counts


def map_function(function: fd.Function, space: Any) -> fd.Function:
    """Return ``function`` on ``space`` (same geometry and element), matched by DoF positions."""
    if function.function_space() == space:
        return function
    return DofMap.between(function.function_space(), space).apply(function)


def map_dataset(data: Dataset, space: Any, *, label: str = "dataset") -> Dataset:
    """Return ``data`` on ``space``: every state matched to ``space``'s DoFs by position.

    Parameters
    ----------
    data
        Trajectories on any mesh of the same geometry (and element) as ``space``: read from a
        file, built on another mesh object, distributed over another number of ranks.
    space
        The target space.
    label
        What the data is (a file name), for the error messages.

    Raises
    ------
    ValueError
        ``label: ...`` when the spaces do not match (see :meth:`DofMap.between`).

    """
    if data.space == space:
        return data
    try:
        dof_map = DofMap.between(data.space, space)
    except ValueError as exc:
        raise ValueError(f"{label}: {exc}") from None
    trajectories = [
        TrajectoryData(
            space, traj.times, [dof_map.apply(s) for s in traj.states], dict(traj.metadata)
        )
        for traj in data.trajectories
    ]
    return Dataset(space, trajectories, dict(data.metadata))
