"""Reading and writing trajectories: users' files, femeso's HDF5 format, VTK export.

* :func:`read_data`: one call for users' files of any supported format (XDMF, ``.pvd``, lists of
  ``.vtu``, the paper's grid HDF5, ``.npz``, Firedrake ``CheckpointFile`` files, femeso's own
  files), into ONE :class:`Dataset` whose trajectories share one mesh.
* :func:`save_dataset` / :func:`load_dataset`: femeso's own format, one HDF5 file written by
  Firedrake's ``CheckpointFile`` (mesh and functions, in parallel, readable on any number of
  ranks) plus a ``/femeso`` group with the metadata as a JSON string attribute and the times.
  Writes are atomic: a temporary file in the same directory, renamed when complete.
* :func:`read_meshio_series`: users' XDMF/HDF5 time series, ``.pvd`` collections and lists of
  ``.vtu`` (or other single-time meshio) files: the mesh and the point data at each time.
* :func:`read_grid_hdf5` / :func:`grid_hdf5_info`: the paper's HDF5 layout, read lazily (one
  trajectory at a time) and described without reading the array.
* :func:`read_npz`: NumPy arrays with explicit coordinates (layout below).
* :func:`read_checkpoint_series`: a function saved at every time index of a user's
  ``CheckpointFile``.
* :func:`from_grid_arrays` / :func:`to_grid_arrays`: periodic 1-D/2-D data on a uniform grid,
  arrays of shape ``(trajectories, times, points)`` or ``(trajectories, times, nx, ny)``.
* :func:`export_vtk`: any trajectory, true or predicted, to a ``.pvd`` for ParaView.

The paper's grid HDF5 layout
    ``u_sol_all`` of shape ``(trajectories, frames, points, fields)`` (1-D) or
    ``(trajectories, frames, nx, ny, fields)`` (2-D), with ``fields = 1``; ``t_coord``
    ``(frames,)``, the frame times (uniform step); ``x_coord`` ``(points,)``, a uniform grid
    ``x_j = j h`` with the period ``L = points * h`` excluded (2-D: ``y_coord`` ``(ny,)``, or the
    spacing of ``x_coord``). The older bare layout (no fields axis, no coordinates; times and
    period given by the caller) is read too.

The ``.npz`` layout
    ``u``
        The values, shape ``(trajectories, frames, points)`` or ``(frames, points)``, one per
        point and frame. Another name is chosen with ``fields=``; several names make a mixed
        space (unstructured meshes only). Any key but the reserved ``t``, ``x``, ``cells``,
        ``cell_type`` and ``period`` is a field.
    ``t``
        The frame times, shape ``(frames,)``, strictly increasing (uniform for
        :func:`read_data`).
    ``x`` and ``cells``
        An unstructured mesh: ``x`` of shape ``(points, dim)`` (``dim`` 1 to 3), ``cells``
        of shape ``(ncells, dim + 1)`` (vertex indices of lines, triangles or tetrahedra; quads
        with ``cell_type="quad"``). The values are at the vertices: P1 exactly.
    or ``x`` (and ``period``)
        A uniform periodic 1-D grid: ``x`` of shape ``(points,)``, ``x_j = j h`` from 0, the
        period ``L = points * h`` excluded; ``period``, if present, must equal ``L``.

A user's Firedrake ``CheckpointFile``
    One mesh (``save_mesh``) and one or more functions saved at every time index with
    ``save_function(f, idx=k, timestepping_info={"time": t_k})``: the times are Firedrake's own
    timestepping history. A file saved without ``"time"`` needs ``dt=`` (frame ``k`` at
    ``t = idx_k * dt``). Each file is one trajectory.

Data given at mesh vertices goes into P1 exactly. Another target space is reached by
interpolation or projection, and the information lost (the relative L2 distance between the P1
data and its round trip through the target space) is logged and kept in the metadata. Files on
one mesh are matched by coordinates (never by point order), with a tolerance of ``1e-8`` times
the diameter of the points' bounding box; every mesh node must find exactly one point.

Every bad input raises ``FileNotFoundError`` or ``ValueError`` with a one-line message that
starts with the file and names the trajectory or time index where one is at fault; no input file
or array is modified, and no existing file is overwritten unless asked to.
"""

from __future__ import annotations

import atexit
import importlib.util
import json
import os
import re
from collections import OrderedDict
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, ClassVar

import firedrake as fd
import h5py
import meshio
import numpy as np
from firedrake.mesh import plex_from_cell_list
from firedrake.output import VTKFile
from mpi4py import MPI
from scipy.spatial import cKDTree

from femeso._files import check_room, first_line, on_rank_zero, temporary_path
from femeso._log import logger
from femeso.data.describe import (
    FORMATS,
    NPZ_RESERVED,
    STEP_RTOL,
    SUPPORTED_CELLS,
    GridInfo,
    detect_format,
    frame_step,
    grid_hdf5_info,
    grid_period,
    read_pvd,
    select_cells,
)
from femeso.data.mapping import DofMap
from femeso.data.trajectories import (
    Dataset,
    TrajectoryData,
    check_json,
    check_times,
    mesh_of,
    nonfinite_count,
    same_space,
)

__all__ = [
    "FORMAT_VERSION",
    "DataReader",
    "DatasetWriter",
    "StoredStates",
    "StoredTrajectories",
    "GridInfo",
    "export_vtk",
    "from_grid_arrays",
    "grid_hdf5_info",
    "load_dataset",
    "dataset_counts",
    "load_dataset_mesh",
    "open_dataset",
    "read_checkpoint_series",
    "read_data",
    "read_grid_hdf5",
    "read_meshio_series",
    "read_npz",
    "save_dataset",
    "to_grid_arrays",
]

#: Version 2 stores a trajectory of a scalar field as one Function with a component per state
#: (``"layout": "columns"``); version 1 (one ``save_function`` per state) is still read.
FORMAT_VERSION = 2
_READABLE_VERSIONS = (1, 2)
_GROUP = "/femeso"
_FUNCTION = "femeso_trajectory_{:06d}"
# Coordinates match when closer than this fraction of the bounding-box diameter.
_MATCH_RTOL = 1e-8


# --------------------------------------------------------------------------------------------
# femeso's own format
# --------------------------------------------------------------------------------------------


def save_dataset(path: str | Path, dataset: Dataset, *, overwrite: bool = False) -> Path:
    """Write a dataset to one HDF5 file (collective over the mesh's communicator).

    The mesh and every state go through ``firedrake.CheckpointFile`` (state ``k`` of trajectory
    ``i`` is function ``femeso_trajectory_{i:06d}`` at index ``k``); the group ``/femeso`` holds
    the format version, the metadata as a JSON string attribute and the times as datasets. The
    file is written under a temporary name in the same directory and renamed (``os.replace``)
    on rank 0 after all ranks have closed it: a crash never leaves a partial file under ``path``.
    :class:`DatasetWriter` writes the same file one trajectory at a time.

    Parameters
    ----------
    path
        The file to write (``.h5`` by convention). Its directory must exist.
    dataset
        A non-empty dataset.
    overwrite
        Replace an existing file at ``path`` (atomically). Without it, an existing file is an
        error.

    Returns
    -------
    Path
        ``path``.

    Raises
    ------
    FileExistsError
        If ``path`` exists and ``overwrite`` is false.
    FileNotFoundError
        If the directory of ``path`` does not exist.
    ValueError
        If the dataset is empty or a state holds NaN/Inf values (nothing is written).

    """
    path = Path(path)
    if len(dataset) == 0:
        raise ValueError(f"{path}: cannot save an empty dataset (no trajectory to define a space)")
    writer = DatasetWriter(path, dataset.space, overwrite=overwrite)
    # States may have been changed after their trajectory checked them: check all of them
    # before anything is written (collective).
    for i, traj in enumerate(dataset):
        writer.check(traj, i)
    # HDF5 does not recover from a write that fails for a full disk or a file-size limit (the
    # process crashed at exit), so a file that will not fit is refused before it is started.
    writer.reserve(sum(len(t) for t in dataset), len(dataset))
    with writer:
        for traj in dataset:
            writer.append(traj, checked=True)
        writer.metadata = dataset.metadata
    return path


class DatasetWriter:
    """Write a femeso dataset file one trajectory at a time: the memory of one trajectory.

    The same file as :func:`save_dataset` (which uses this class), written under a temporary
    name and renamed when the ``with`` block ends without an error; on an error the temporary is
    removed and nothing is left under ``path``. Collective over the mesh's communicator.

    Parameters
    ----------
    path
        The file to write; its directory must exist.
    space
        The space of every trajectory (its mesh is saved once).
    overwrite
        Replace an existing file at ``path`` (atomically) instead of refusing it.

    Attributes
    ----------
    metadata
        The dataset's metadata, written when the block ends (JSON-serialisable).

    Examples
    --------
    >>> with DatasetWriter("train.h5", V) as writer:  # doctest: +SKIP
    ...     for trajectory in trajectories:  # e.g. read one at a time from a large file
    ...         writer.append(trajectory)
    ...     writer.metadata = {"source": "runs/"}

    """

    def __init__(self, path: str | Path, space: Any, *, overwrite: bool = False) -> None:
        self.path = Path(path)
        self.space = space
        self.metadata: dict[str, Any] = {}
        self._comm = mesh_of(space).comm
        self._columns = _is_scalar(space)
        self._entries: list[dict[str, Any]] = []
        self._times: list[np.ndarray] = []
        self._out: Any = None
        state = (self.path.exists(), self.path.parent.is_dir()) if self._comm.rank == 0 else None
        exists, parent_ok = self._comm.bcast(state, root=0)
        if not parent_ok:
            raise FileNotFoundError(f"{self.path}: directory {self.path.parent} does not exist")
        if exists and not overwrite:
            raise FileExistsError(f"{self.path}: file exists (pass overwrite=True to replace it)")
        # One temporary name per file (``.train.h5.tmp``): a temporary left by a killed process
        # is hidden, never taken for a dataset, and replaced by the next write of the same file.
        self._tmp = str(temporary_path(self.path))

    def reserve(self, n_states: int, n_trajectories: int) -> None:
        """Refuse (``OSError``) a file of this many states that would not fit on the disk.

        The estimate (:func:`_checkpoint_bytes`) is collective; rank 0 checks it.
        """
        n_bytes = _checkpoint_bytes(self.space, n_states, n_trajectories)
        on_rank_zero(self._comm, lambda: check_room(self.path, n_bytes, "the dataset"))

    def check(self, trajectory: TrajectoryData, i: int) -> None:
        """Raise ``ValueError`` (nothing written) if a state of ``trajectory`` holds NaN/Inf."""
        if not same_space(trajectory.space, self.space):
            raise ValueError(
                f"{self.path}: trajectory {i} is on {trajectory.space.ufl_element()} of mesh "
                f"{trajectory.mesh.name!r}, not on the file's {self.space.ufl_element()} of mesh "
                f"{mesh_of(self.space).name!r}"
            )
        for k, state in enumerate(trajectory.states):
            bad = nonfinite_count(state)
            if bad:
                raise ValueError(
                    f"{self.path}: trajectory {i}, state {k} (t = {float(trajectory.times[k])!r})"
                    f" has {bad} NaN/Inf values; nothing written"
                )

    def __enter__(self) -> DatasetWriter:
        try:
            self._out = fd.CheckpointFile(self._tmp, "w", comm=self._comm)
            self._out.save_mesh(mesh_of(self.space))
        except BaseException as exc:
            self._abandon(exc)
        return self

    def append(self, trajectory: TrajectoryData, *, checked: bool = False) -> None:
        """Write one trajectory (checked for NaN/Inf first, unless ``checked``)."""
        i = len(self._entries)
        if not checked:
            self.check(trajectory, i)
        name = _FUNCTION.format(i)
        try:
            if self._columns:
                self._out.save_function(_as_columns(trajectory, name))
            else:
                for k, state in enumerate(trajectory.states):
                    self._out.save_function(state, idx=k, name=name)
        except BaseException as exc:
            self._abandon(exc)
        self._entries.append(
            {
                "function": name,
                "n_states": len(trajectory),
                "layout": "columns" if self._columns else "states",
                "metadata": trajectory.metadata,
            }
        )
        self._times.append(np.asarray(trajectory.times, dtype=float))

    def __len__(self) -> int:
        return len(self._entries)

    def __exit__(self, kind: Any, error: Any, traceback: Any) -> None:
        if error is not None:
            self._abandon(error, reraise=False)
            return
        try:
            if not self._entries:
                raise ValueError(f"{self.path}: no trajectory written (an empty dataset)")
            check_json(self.metadata, "dataset metadata")
            header = {
                "format_version": FORMAT_VERSION,
                "mesh_name": mesh_of(self.space).name,
                "metadata": self.metadata,
                "trajectories": self._entries,
            }
            out = self._out
            out.require_group(_GROUP)
            out.set_attr(_GROUP, "format_version", FORMAT_VERSION)
            out.set_attr(_GROUP, "metadata_json", json.dumps(header, allow_nan=False))
            for entry, times in zip(self._entries, self._times, strict=True):
                out.h5pyfile.create_dataset(f"{_GROUP}/times/{entry['function']}", data=times)
            out.close()
            self._out = None
            self._comm.barrier()
            if self._comm.rank == 0:
                os.replace(self._tmp, self.path)
            self._comm.barrier()
        except BaseException as exc:
            self._abandon(exc)
        logger.info(
            "saved %d trajectories (%d states) to %s",
            len(self._entries),
            sum(e["n_states"] for e in self._entries),
            self.path,
        )

    def _abandon(self, exc: BaseException, *, reraise: bool = True) -> None:
        """Close and remove the temporary file; re-raise ``exc`` (as an ``OSError`` naming it)."""
        if self._out is not None:
            try:
                self._out.close()
            except Exception:  # noqa: S110  (the first error is the one to report)
                pass
            self._out = None
        if self._comm.rank == 0 and os.path.exists(self._tmp):
            os.remove(self._tmp)
        if not reraise:
            return
        if isinstance(exc, Exception) and not isinstance(exc, OSError | ValueError):
            # PETSc and HDF5 report a full disk as their own errors: one line, naming the file.
            raise OSError(f"{self.path}: cannot write the dataset: {first_line(exc)}") from exc
        raise exc


def _checkpoint_bytes(space: Any, n_states: int, n_trajectories: int) -> int:
    """Return an upper estimate of the size of a dataset's CheckpointFile, in bytes (collective).

    Measured on femeso's files (2-D P1, 430 vertices: 300 kB of mesh and DoF layout, 3.4 kB per
    state, 4 kB per trajectory; a 1-D chain file of 10 710 states was within 15 % of its values):
    the mesh is counted as 256 bytes per vertex and topological dimension + 1, the values with
    20 % on top, and 8 kB per trajectory (442 kB for that 2-D file of 343 kB).
    """
    mesh = mesh_of(space)
    vertices = fd.FunctionSpace(mesh, "Lagrange", 1).dim()
    values = 8 * space.dim() * n_states
    return int(
        256 * (mesh.topological_dimension + 1) * vertices + 1.2 * values + 8192 * n_trajectories
    )


def _is_scalar(space: Any) -> bool:
    """Whether ``space`` is one scalar space (not vector-valued, not mixed)."""
    return len(space) == 1 and not space.value_shape


def _as_columns(traj: TrajectoryData, name: str) -> fd.Function:
    """Return a trajectory of a scalar field as one Function with a component per state.

    One ``save_function`` per trajectory instead of one per state: 24-52 times faster to write
    (``bench/save_cost.py``) and the same size on disk. The vector space has the scalar space's
    nodes, in the same order, with a block of ``len(traj)`` values; only owned values are
    copied (the halos are PyOP2's to update).
    """
    space = traj.space
    columns = fd.VectorFunctionSpace(mesh_of(space), space.ufl_element(), dim=len(traj))
    out = fd.Function(columns, name=name)
    values = out.dat.data_wo  # (nodes,) for one state, (nodes, n) for more
    values[...] = np.stack([state.dat.data_ro for state in traj.states], axis=1).reshape(
        values.shape
    )
    return out


def _from_columns(columns: fd.Function, space: Any, name: str) -> list[fd.Function]:
    """Return the states of a trajectory stored by :func:`_as_columns`, on ``space``."""
    values = columns.dat.data_ro  # owned values; the halos are PyOP2's to update
    values = values.reshape(len(values), -1)  # one state: (nodes,)
    states = []
    for k in range(values.shape[1]):
        state = fd.Function(space, name=name)
        state.dat.data_wo[...] = values[:, k]
        states.append(state)
    return states


def load_dataset(path: str | Path, *, comm: Any = fd.COMM_WORLD) -> Dataset:
    """Read a dataset written by :func:`save_dataset`, on any number of ranks.

    Parameters
    ----------
    path
        The file.
    comm
        The communicator to load the mesh on (need not be the one it was written with).

    Returns
    -------
    Dataset
        Its trajectories' states are on one function space of the loaded mesh.

    Raises
    ------
    FileNotFoundError
        If the file does not exist.
    ValueError
        If the file is not a readable HDF5 file, not a femeso dataset, of an unknown format
        version, or its content is inconsistent (e.g. NaN values, non-increasing times).

    """
    path = Path(path)
    header = _checked_header(path, comm)
    try:
        with fd.CheckpointFile(str(path), "r", comm=comm) as inp:
            h5 = inp.h5pyfile
            mesh = inp.load_mesh(header["mesh_name"])
            trajectories = []
            space = None
            for entry in header["trajectories"]:
                name = entry["function"]
                times = np.asarray(h5[f"{_GROUP}/times/{name}"][()], dtype=float)
                space, states = _load_states(inp, mesh, entry, space)
                trajectories.append(TrajectoryData(space, times, states, entry["metadata"]))
            return Dataset(space, trajectories, header["metadata"])
    except ValueError as exc:
        raise ValueError(f"{path}: {exc}") from exc
    except Exception as exc:
        raise ValueError(f"{path}: corrupt femeso dataset: {type(exc).__name__}: {exc}") from exc


def _load_states(
    inp: Any, mesh: Any, entry: dict[str, Any], space: Any
) -> tuple[Any, list[fd.Function]]:
    """Load one trajectory's states from an open file (``space``: of the ones before, or None)."""
    name = entry["function"]
    if entry.get("layout", "states") == "columns":
        columns = inp.load_function(mesh, name)
        if space is None:
            element = columns.function_space().ufl_element().sub_elements[0]
            space = fd.FunctionSpace(mesh, element)
        stored = columns.function_space().value_shape  # (n,) for n states
        if stored != (entry["n_states"],):
            raise ValueError(f"trajectory {name}: {stored} columns, not {entry['n_states']} states")
        return space, _from_columns(columns, space, name)
    states = [inp.load_function(mesh, name, idx=k) for k in range(entry["n_states"])]
    space = states[0].function_space() if space is None else space
    # One space object for all trajectories.
    return space, [fd.Function(space, val=s.dat, name=name) for s in states]


def dataset_counts(path: str | Path, *, comm: Any = fd.COMM_WORLD) -> list[int]:
    """Return the number of states of each trajectory of a dataset file (its header only)."""
    header = _checked_header(Path(path), comm)
    return [int(entry["n_states"]) for entry in header["trajectories"]]


def open_dataset(path: str | Path, space: Any, *, keep: int) -> Dataset:
    """Return a dataset file's trajectories on ``space``, their states read when first used.

    For data larger than the memory: the file stays open (:class:`StoredTrajectories`), at most
    ``keep`` trajectories are held in memory (the least recently used is dropped), and each one
    read is put onto ``space`` by DoF coordinates (:class:`femeso.data.mapping.DofMap`), like
    :func:`load_dataset` followed by :func:`femeso.data.mapping.map_dataset`. The states were
    checked when the file was written. Collective: every rank must use the same trajectories in
    the same order (training does).

    Parameters
    ----------
    path
        A file written by :func:`save_dataset` (any number of ranks).
    space
        The space the states are put on (the job's).
    keep
        How many trajectories to hold in memory at most (>= 1).

    Returns
    -------
    Dataset
        Trajectories whose ``states`` are a :class:`StoredStates` sequence (indexing and slicing
        give Functions on ``space``).

    """
    return StoredTrajectories(path, space, keep=keep).dataset()


class StoredTrajectories:
    """An open femeso dataset file whose trajectories are read on demand (see :func:`open_dataset`).

    The file is closed by :meth:`close`, or at exit (every store still open then is closed, in
    order, on every rank, before PETSc finalises).
    """

    _open: ClassVar[list[StoredTrajectories]] = []

    def __init__(self, path: str | Path, space: Any, *, keep: int) -> None:
        if keep < 1:
            raise ValueError(f"{path}: keep must be >= 1 trajectory, got {keep}")
        self.path = Path(path)
        self.space = space
        self.keep = keep
        comm = mesh_of(space).comm
        self.header = header = _checked_header(self.path, comm)
        self._file = fd.CheckpointFile(str(self.path), "r", comm=comm)
        if not StoredTrajectories._open:
            atexit.register(StoredTrajectories.close_all)
        StoredTrajectories._open.append(self)
        self._mesh = self._file.load_mesh(header["mesh_name"])
        self._file_space: Any = None
        self._map: DofMap | None = None
        self._cache: OrderedDict[int, list[fd.Function]] = OrderedDict()
        self.loads = 0
        h5 = self._file.h5pyfile
        self.times = [
            np.asarray(h5[f"{_GROUP}/times/{entry['function']}"][()], dtype=float)
            for entry in header["trajectories"]
        ]

    def __len__(self) -> int:
        return len(self.header["trajectories"])

    def states(self, i: int) -> list[fd.Function]:
        """Return trajectory ``i``'s states on the space (from the cache, or read now)."""
        if i in self._cache:
            self._cache.move_to_end(i)
            return self._cache[i]
        if self._file is None:
            raise ValueError(f"{self.path}: the file is closed")
        entry = self.header["trajectories"][i]
        try:
            self._file_space, states = _load_states(self._file, self._mesh, entry, self._file_space)
            if self._map is None:
                self._map = DofMap.between(self._file_space, self.space)
        except ValueError as exc:
            raise ValueError(f"{self.path}: {exc}") from exc
        states = [self._map.apply(state) for state in states]
        self.loads += 1
        self._cache[i] = states
        while len(self._cache) > self.keep:
            self._cache.popitem(last=False)
        return states

    def dataset(self) -> Dataset:
        """Return the trajectories as a :class:`Dataset` on the space (nothing read yet)."""
        trajectories = [
            TrajectoryData.stored(
                self.space,
                self.times[i],
                StoredStates(self, i, entry["n_states"]),
                entry["metadata"],
            )
            for i, entry in enumerate(self.header["trajectories"])
        ]
        return Dataset(self.space, trajectories, self.header["metadata"])

    def close(self) -> None:
        """Close the file (collective); the states already held stay valid."""
        if self._file is not None:
            self._file.close()
            self._file = None
        if self in StoredTrajectories._open:
            StoredTrajectories._open.remove(self)

    @classmethod
    def close_all(cls) -> None:
        """Close every store still open (at exit: before PETSc finalises)."""
        for store in list(cls._open):
            store.close()


class StoredStates(Sequence):
    """The states of one stored trajectory, read from its file when indexed.

    See :class:`StoredTrajectories`; a slice reads the trajectory once.
    """

    def __init__(self, store: StoredTrajectories, index: int, n: int) -> None:
        self.store, self.index, self.n = store, index, n

    def __len__(self) -> int:
        return self.n

    def __getitem__(self, k: Any) -> Any:
        if isinstance(k, slice):
            return self.store.states(self.index)[k]
        if not -self.n <= k < self.n:
            raise IndexError(f"state {k} of a trajectory of {self.n}")
        return self.store.states(self.index)[k]


def load_dataset_mesh(path: str | Path, *, comm: Any = fd.COMM_WORLD) -> Any:
    """Return the mesh of a dataset written by :func:`save_dataset`, without its states."""
    path = Path(path)
    header = _checked_header(path, comm)
    with fd.CheckpointFile(str(path), "r", comm=comm) as inp:
        return inp.load_mesh(header["mesh_name"])


def _checked_header(path: Path, comm: Any) -> dict[str, Any]:
    """Return a femeso dataset file's header, read on rank 0 (collective).

    The file is checked with plain h5py first: PETSc's viewer fails less cleanly.

    Raises
    ------
    FileNotFoundError
        If the file does not exist.
    ValueError
        If it is not a readable femeso dataset (one line naming the file).

    """
    if not comm.bcast(path.is_file() if comm.rank == 0 else None, root=0):
        raise FileNotFoundError(f"{path}: no such file")
    header, problem = comm.bcast(_read_header(path) if comm.rank == 0 else None, root=0)
    if problem is not None:
        raise ValueError(f"{path}: {problem}")
    return header


def _read_header(path: Path) -> tuple[dict[str, Any] | None, str | None]:
    """Return (header, None) for a femeso dataset file, else (None, what is wrong)."""
    if not h5py.is_hdf5(path):
        return None, "not a readable femeso dataset (corrupt or not an HDF5 file)"
    try:
        with h5py.File(path, "r", driver=None) as h5:
            if "dmplex_storage_version" not in h5.attrs:
                return None, "not a Firedrake CheckpointFile: not written by save_dataset"
            if _GROUP not in h5 or "metadata_json" not in h5[_GROUP].attrs:
                return None, "no /femeso group with metadata: not written by save_dataset"
            version = int(h5[_GROUP].attrs["format_version"])
            if version not in _READABLE_VERSIONS:
                return None, (
                    f"unknown format version {version} (this femeso reads {_READABLE_VERSIONS})"
                )
            raw = h5[_GROUP].attrs["metadata_json"]
            return json.loads(raw.decode() if isinstance(raw, bytes) else raw), None
    except Exception as exc:
        return None, f"corrupt femeso dataset: {type(exc).__name__}: {exc}"


# --------------------------------------------------------------------------------------------
# meshio: XDMF time series, .pvd collections, lists of .vtu
# --------------------------------------------------------------------------------------------


def read_meshio_series(
    source: str | Path | Sequence[str | Path],
    *,
    fields: Sequence[str] | None = None,
    times: Sequence[float] | None = None,
    mesh: Any = None,
    family: str = "CG",
    degree: int = 1,
    method: str = "interpolate",
    comm: Any = fd.COMM_WORLD,
    metadata: dict[str, Any] | None = None,
) -> TrajectoryData:
    """Read a time series of point data on one mesh into a trajectory.

    Parameters
    ----------
    source
        An XDMF time series (``.xdmf``/``.xmf``, read with ``meshio.xdmf.TimeSeriesReader``), a
        ``.pvd`` collection of ``.vtu`` files (times from the collection), one meshio file (one
        time), or a list of meshio files (e.g. ``.vtu``), one per time, all on the same mesh.
    fields
        The point-data arrays to read, in order (default: all, sorted by name). Each array of
        shape ``(points,)`` is a scalar field, ``(points, c)`` a ``c``-vector field; several
        fields make a mixed space.
    times
        The times of a list of files (default ``0, 1, ...``). Not allowed for XDMF or ``.pvd``,
        whose files carry their times.
    mesh
        An existing (non-periodic) Firedrake mesh whose vertices are the file's points (in any
        order) and whose cells are the file's cells: the point data is put on its P1 DoFs by
        coordinates, so that several files make trajectories on one mesh. Default: a new mesh
        from the file.
    family, degree, method
        The target space's element. Vertex data goes into P1 exactly; another element is
        reached by ``method`` (``"interpolate"`` or ``"project"``) and the information lost is
        logged and stored in ``metadata["transfer"]``.
    comm
        The communicator of a new mesh (every rank reads the files; rank 0 builds the mesh,
        which is then distributed). With ``mesh``, the mesh's communicator is used.
    metadata
        Extra metadata for the trajectory (``source``, ``format`` and ``fields`` are added).

    Returns
    -------
    TrajectoryData

    Raises
    ------
    FileNotFoundError
        If a file is missing.
    ValueError
        If a file cannot be parsed, the mesh has unsupported or mixed cell types, the files are
        on different meshes, the file's geometry does not match ``mesh``, a field is missing or
        its size does not match the mesh, values are NaN/Inf, or the times are not strictly
        increasing.

    """
    _check_method(method)
    src = _meshio_source(source, times, fields)
    shared = _Shared()
    if mesh is not None:
        shared.adopt(mesh, f"the mesh {mesh.name!r}")
        comm = mesh.comm
    p1, trajs = _vertex_states(src, shared, comm)
    ((_, time_array, states),) = trajs
    meta = dict(metadata or {})
    meta.update(
        {
            "source": str(src.file),
            "format": src.fmt,
            "fields": list(src.names),
            "cell": src.cell_type,
        }
    )
    space, states, report = _to_element(p1, states, family, degree, method)
    if report is not None:
        meta["transfer"] = report
    logger.info(
        "read %d times of %s on %d vertices (%s) from %s",
        len(states),
        ", ".join(src.names),
        len(src.points),
        src.cell_type,
        src.file,
    )
    return TrajectoryData(space, time_array, states, meta)


def _check_method(method: str) -> None:
    if method not in ("interpolate", "project"):
        raise ValueError(f"method must be 'interpolate' or 'project', got {method!r}")


@dataclass
class _VertexSource:
    """Point data on an unstructured mesh, as read from a file (compacted to used points)."""

    file: Path
    fmt: str
    points: np.ndarray
    cells: np.ndarray
    cell_type: str
    tdim: int
    names: list[str]
    # (index in the file or None, times, values[field][frame] of shape (points[, c]))
    trajectories: list[tuple[int | None, np.ndarray, list[list[np.ndarray]]]]


def _meshio_source(source: Any, times: Any, fields: Sequence[str] | None) -> _VertexSource:
    label, fmt, points, cells, steps = _read_series(source, times)
    cell_type, cell_array, tdim = select_cells(cells, label)
    npoints_file = len(points)
    points, cell_array, used = _compact_points(points, cell_array, label)
    names = _field_names(steps, fields, label)
    values = []
    for fname in names:
        per_time = []
        for k, (t, data, file) in enumerate(steps):
            if fname not in data:
                raise ValueError(
                    f"{file}: no point data {fname!r} at time index {k} (t = {t!r}); "
                    f"available: {sorted(data)}"
                )
            arr = np.asarray(data[fname], dtype=float)
            if arr.shape[0] != npoints_file:
                raise ValueError(
                    f"{file}: point data {fname!r} at time index {k} has {arr.shape[0]} values "
                    f"but the mesh has {npoints_file} points"
                )
            if arr.ndim > 2:
                raise ValueError(f"{file}: point data {fname!r} has shape {arr.shape} (tensor)")
            bad = arr.size - np.count_nonzero(np.isfinite(arr))
            if bad:
                raise ValueError(
                    f"{file}: point data {fname!r} at time index {k} (t = {t!r}) has {bad} "
                    "NaN/Inf values"
                )
            per_time.append(arr if used is None else arr[used])
        shapes = {a.shape[1:] for a in per_time}
        if len(shapes) != 1:
            raise ValueError(f"{label}: point data {fname!r} changes shape over time: {shapes}")
        values.append(per_time)
    time_array = check_times([s[0] for s in steps], str(label))
    return _VertexSource(
        label, fmt, points, cell_array, cell_type, tdim, names, [(None, time_array, values)]
    )


def _check_file(path: Path) -> None:
    if not path.is_file():
        raise FileNotFoundError(f"{path}: no such file")


def _read_series(source: Any, times: Any) -> tuple[Path, str, Any, Any, list]:
    """Return (label, format, points, cells, [(t, point_data, file), ...])."""
    if isinstance(source, str | os.PathLike):
        path = Path(source)
        _check_file(path)
        suffix = path.suffix.lower()
        if suffix in (".xdmf", ".xmf"):
            if times is not None:
                raise ValueError(f"{path}: an XDMF time series carries its times; drop times=")
            return (path, "xdmf", *_read_xdmf(path))
        if suffix == ".pvd":
            if times is not None:
                raise ValueError(f"{path}: a .pvd collection carries its times; drop times=")
            files, file_times = read_pvd(path)
            return (path, "pvd", *_read_files(files, file_times))
        files = [path]
    else:
        files = [Path(p) for p in source]
        if not files:
            raise ValueError("read_meshio_series: empty list of files")
    if times is None:
        times = np.arange(len(files), dtype=float)
    elif len(times) != len(files):
        raise ValueError(f"{files[0]}: {len(files)} files but {len(times)} times")
    fmt = files[0].suffix.lstrip(".").lower() or "meshio"
    return (files[0], fmt, *_read_files(files, list(times)))


def _read_xdmf(path: Path) -> tuple[Any, Any, list]:
    try:
        with meshio.xdmf.TimeSeriesReader(str(path)) as reader:
            points, cells = reader.read_points_cells()
            steps = []
            for k in range(reader.num_steps):
                t, point_data, _ = reader.read_data(k)
                steps.append((float(t), dict(point_data), path))
    except FileNotFoundError as exc:
        raise FileNotFoundError(f"{path}: a file it refers to is missing: {exc}") from exc
    except Exception as exc:
        raise ValueError(
            f"{path}: not a readable XDMF time series: {type(exc).__name__}: {exc}"
        ) from exc
    if not steps:
        raise ValueError(f"{path}: the XDMF time series has no time steps")
    return points, cells, steps


def _read_files(files: list[Path], times: list[float]) -> tuple[Any, Any, list]:
    points = cells = None
    steps = []
    for file, t in zip(files, times, strict=True):
        _check_file(file)
        try:
            m = meshio.read(str(file))
        except (Exception, SystemExit) as exc:  # meshio exits on some unreadable files
            raise ValueError(
                f"{file}: not a readable mesh file: {type(exc).__name__}: {exc}"
            ) from exc
        if points is None:
            points, cells = m.points, m.cells
        elif not _same_mesh(points, cells, m.points, m.cells):
            raise ValueError(
                f"{file}: mixed meshes: its mesh differs from the one in {files[0]} "
                "(all files of a series must share one mesh)"
            )
        steps.append((float(t), dict(m.point_data), file))
    return points, cells, steps


def _same_mesh(p0: Any, c0: Any, p1: Any, c1: Any) -> bool:
    if np.shape(p0) != np.shape(p1) or not np.array_equal(p0, p1):
        return False
    if [b.type for b in c0] != [b.type for b in c1]:
        return False
    return all(np.array_equal(a.data, b.data) for a, b in zip(c0, c1, strict=True))


def _compact_points(
    points: Any, cells: np.ndarray, file: Path
) -> tuple[np.ndarray, np.ndarray, np.ndarray | None]:
    """Drop points in no cell and coordinates that are all zero beyond the cells' dimension."""
    points = np.asarray(points, dtype=float)
    if points.ndim != 2 or len(points) == 0:
        raise ValueError(f"{file}: bad point array of shape {points.shape}")
    if cells.min() < 0 or cells.max() >= len(points):
        raise ValueError(
            f"{file}: cells refer to point {int(cells.max())} but there are {len(points)} points"
        )
    if not np.isfinite(points).all():
        raise ValueError(f"{file}: the point coordinates contain NaN/Inf values")
    used = np.unique(cells)
    if len(used) < len(points):
        logger.info("%s: ignoring %d points in no cell", file, len(points) - len(used))
        renumber = np.full(len(points), -1, dtype=np.int64)
        renumber[used] = np.arange(len(used))
        points, cells = points[used], renumber[cells]
    else:
        used = None
    return points, cells, used


def _field_names(steps: list, fields: Sequence[str] | None, file: Path) -> list[str]:
    if fields is None:
        names = sorted(steps[0][1])
        if not names:
            raise ValueError(f"{file}: no point data")
        return names
    names = list(fields)
    if not names:
        raise ValueError(f"{file}: empty list of fields")
    return names


def _mesh_from_cells(
    points: np.ndarray, cells: np.ndarray, tdim: int, comm: Any, label: Path
) -> tuple[Any, np.ndarray, np.ndarray]:
    """Build a Firedrake mesh; return it with each local vertex's P1 DoF and input point index."""
    gdim = points.shape[1]
    while gdim > tdim and not points[:, gdim - 1].any():
        gdim -= 1
    points = np.ascontiguousarray(points[:, :gdim])
    plex = plex_from_cell_list(tdim, cells, points, comm)
    v_start = comm.bcast(plex.getDepthStratum(0)[0] if comm.rank == 0 else None, root=0)
    mesh = fd.Mesh(plex, comm=comm, name="femeso_" + re.sub(r"\W", "_", label.stem))
    topology = mesh.topology
    dm = topology.topology_dm
    p_start, p_end = dm.getChart()
    if topology.sfBC is None:  # not distributed: the input numbering
        original = np.arange(p_start, p_end, dtype=np.int64)
    else:  # from the rank-0 plex to the local points
        nroots = topology.sfBC.getGraph()[0]
        root = np.arange(nroots, dtype=np.int64)
        original = np.full(p_end - p_start, -1, dtype=np.int64)
        topology.sfBC.bcastBegin(MPI.INT64_T, root, original, MPI.REPLACE)
        topology.sfBC.bcastEnd(MPI.INT64_T, root, original, MPI.REPLACE)
    nv = cells.shape[1]
    closure = topology.cell_closure[:, :nv]  # vertices of each local cell, in FIAT order
    ids = original[closure] - v_start
    dofs = fd.FunctionSpace(mesh, "CG", 1).cell_node_map().values_with_halo
    vertex_dofs, first = np.unique(dofs.ravel(), return_index=True)
    vertex_ids = ids.ravel()[first]
    # The mesh's own P1 coordinates must be the input points: a check of the numbering.
    coords = mesh.coordinates
    cdofs = coords.function_space().cell_node_map().values_with_halo.ravel()[first]
    ok = np.array_equal(
        coords.dat.data_ro_with_halos[cdofs].reshape(len(first), -1), points[vertex_ids]
    )
    if not comm.allreduce(ok, op=MPI.LAND):
        raise RuntimeError(f"{label}: internal error: vertex numbering does not match the input")
    return mesh, vertex_dofs, vertex_ids


def _transfer(
    p1: Any, states: list[fd.Function], family: str, degree: int, method: str
) -> tuple[Any, list[fd.Function], dict[str, Any]]:
    """Move states (P1 or another element) to another element; return space, states, report."""
    space = _space_like(p1, mesh_of(p1), family, degree)
    out, losses = [], []
    for f in states:
        g = fd.Function(space)
        for gs, fs in zip(g.subfunctions, f.subfunctions, strict=True):
            if method == "interpolate":
                gs.interpolate(fs)
            else:
                gs.project(fs)
        back = fd.Function(p1)
        for bs, gs in zip(back.subfunctions, g.subfunctions, strict=True):
            bs.interpolate(gs)
        norm = fd.norm(f)
        diff = fd.errornorm(f, back, norm_type="L2")
        losses.append(diff / norm if norm > 0 else diff)
        out.append(g)
    worst = float(max(losses))
    element = p1.ufl_element()
    report = {
        "from": "P1 (vertex data)" if _is_p1(p1) else str(element),
        "to": f"{family}{degree}",
        "method": method,
        "max_relative_l2_loss": worst,
    }
    log = logger.warning if worst > 1e-12 else logger.info
    log(
        "%s into %s%d by %s: relative L2 information loss up to %.3e",
        report["from"],
        family,
        degree,
        method,
        worst,
    )
    return space, out, report


def _to_element(
    space: Any, states: list[fd.Function], family: str, degree: int, method: str
) -> tuple[Any, list[fd.Function], dict[str, Any] | None]:
    """Return the states on ``family``/``degree`` (unchanged if already there) and the report."""
    mesh = mesh_of(space)
    target = _space_like(space, mesh, family, degree)
    if target.ufl_element() == space.ufl_element():
        return space, states, None
    return _transfer(space, states, family, degree, method)


def _is_p1(space: Any) -> bool:
    return space.ufl_element() == _space_like(space, mesh_of(space), "CG", 1).ufl_element()


def _space_like(space: Any, mesh: Any, family: str, degree: int) -> Any:
    """Return the space on ``mesh`` with the value shapes of ``space`` and another element."""
    subspaces = [
        fd.FunctionSpace(mesh, family, degree)
        if len(s.value_shape) == 0
        else fd.VectorFunctionSpace(mesh, family, degree, dim=s.value_shape[0])
        for s in space.subspaces
    ]
    return subspaces[0] if len(subspaces) == 1 else fd.MixedFunctionSpace(subspaces)


# --------------------------------------------------------------------------------------------
# One mesh for many files: matching by coordinates
# --------------------------------------------------------------------------------------------


@dataclass
class _Shared:
    """The one mesh of a dataset being read from several files, and where it came from."""

    mesh: Any = None
    reference: str = ""
    grid: tuple[tuple[int, ...], tuple[float, ...]] | None = None
    grid_space: Any = None
    grid_index: np.ndarray | None = None
    names: list[str] | None = None
    dt: float | None = None
    dt_source: str = ""

    def adopt(self, mesh: Any, reference: str, grid: Any = None) -> None:
        self.mesh, self.reference, self.grid = mesh, reference, grid

    def grid_p1(self) -> tuple[Any, np.ndarray]:
        """Return the scalar P1 space of a grid mesh and each DoF's flat grid index."""
        if self.grid_space is None:
            assert self.grid is not None
            V = fd.FunctionSpace(self.mesh, "CG", 1)
            self.grid_space = V
            self.grid_index = grid_index(V, self.grid[0], np.asarray(self.grid[1]))
        assert self.grid_index is not None
        return self.grid_space, self.grid_index


def _is_periodic(mesh: Any) -> bool:
    """Whether the mesh's coordinates are discontinuous (a periodic mesh)."""
    element = mesh.coordinates.function_space().ufl_element()
    scalar = element.sub_elements[0] if element.sub_elements else element
    return scalar.family() not in ("Lagrange", "Q")


def _node_coordinates(space: Any) -> np.ndarray:
    """Coordinates of the nodes of a scalar or vector Lagrange space, shape (nodes, gdim)."""
    mesh = mesh_of(space)
    element = space.ufl_element()
    scalar = element.sub_elements[0] if len(space.value_shape) else element
    X = fd.Function(fd.VectorFunctionSpace(mesh, scalar)).interpolate(fd.SpatialCoordinate(mesh))
    data = X.dat.data_ro_with_halos
    return np.asarray(data).reshape(len(data), -1)


def _fmt_point(x: np.ndarray) -> str:
    return "(" + ", ".join(f"{float(c):.6g}" for c in np.ravel(x)) + ")"


def _match(source: np.ndarray, target: np.ndarray, tol: float) -> tuple[np.ndarray, str | None]:
    """For each target point, the index of the one source point within ``tol``.

    Returns the indices and ``None``, or a description of the first target point that has no
    source point, or two, within ``tol``.
    """
    if len(target) == 0:
        return np.zeros(0, dtype=np.int64), None
    k = 2 if len(source) > 1 else 1
    dist, idx = cKDTree(source).query(target, k=k)
    dist, idx = dist.reshape(len(target), k), idx.reshape(len(target), k)
    missing = dist[:, 0] > tol
    if missing.any():
        j = int(np.flatnonzero(missing)[0])
        return idx[:, 0], f"no point within {tol:.2g} of the node at {_fmt_point(target[j])}"
    if k == 2:
        twice = dist[:, 1] <= tol
        if twice.any():
            j = int(np.flatnonzero(twice)[0])
            return idx[:, 0], f"two points within {tol:.2g} of the node at {_fmt_point(target[j])}"
    return idx[:, 0].astype(np.int64), None


def _tolerance(points: np.ndarray) -> float:
    extent = np.ptp(points, axis=0) if len(points) else np.zeros(1)
    return _MATCH_RTOL * max(float(np.linalg.norm(extent)), 1e-300)


def _geometry(points: np.ndarray, gdim: int, file: Path, reference: str) -> np.ndarray:
    """Return the file's points with ``gdim`` coordinates (extra coordinates must be zero)."""
    if points.shape[1] < gdim:
        raise ValueError(
            f"{file}: its points have {points.shape[1]} coordinates but {reference} has {gdim}"
        )
    if points.shape[1] > gdim and points[:, gdim:].any():
        raise ValueError(
            f"{file}: its points have non-zero coordinates beyond the {gdim} of {reference}"
        )
    return np.ascontiguousarray(points[:, :gdim])


def _vertex_map(
    mesh: Any, points: np.ndarray, cells: np.ndarray, file: Path, reference: str
) -> tuple[np.ndarray, np.ndarray]:
    """Return (every local P1 DoF with halo, its file point) from coordinates; check the cells.

    Collective. Raises ``ValueError`` naming ``file`` and ``reference`` when the file's points
    or cells are not the mesh's.
    """
    comm = mesh.comm
    differs = f"{file}: its mesh differs from {reference}"
    if _is_periodic(mesh):
        raise ValueError(f"{differs} (a periodic mesh, whose vertices cannot be matched)")
    V = fd.FunctionSpace(mesh, "CG", 1)
    X = _node_coordinates(V)
    pts = _geometry(points, X.shape[1], file, reference)
    n_global = comm.allreduce(V.dof_dset.size, op=MPI.SUM)
    cells_global = comm.allreduce(mesh.cell_set.size, op=MPI.SUM)
    if n_global != len(pts) or cells_global != len(cells):
        raise ValueError(
            f"{differs}: {len(pts)} points and {len(cells)} cells, not {n_global} and "
            f"{cells_global}"
        )
    idx, problem = _match(pts, X, _tolerance(pts))
    if problem is None:
        # Same vertices; the same cells too? Each local cell's vertex set must be a file cell.
        local = np.sort(idx[V.cell_node_map().values_with_halo], axis=1)
        if not _rows_in(local, np.sort(cells, axis=1)).all():
            problem = "the same points but other cells"
    problems = comm.allgather(problem)
    first = next((p for p in problems if p is not None), None)
    if first is not None:
        raise ValueError(f"{differs}: {first}")
    return np.arange(len(X), dtype=np.int64), idx


def _rows_in(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """Whether each row of the integer array ``a`` is a row of ``b``."""
    a = np.ascontiguousarray(a, dtype=np.int64)
    b = np.ascontiguousarray(b, dtype=np.int64)
    if a.shape[1] != b.shape[1]:
        return np.zeros(len(a), dtype=bool)
    void = np.dtype((np.void, 8 * a.shape[1]))
    return np.isin(a.view(void).ravel(), b.view(void).ravel())


def _vertex_states(
    src: _VertexSource, shared: _Shared, comm: Any
) -> tuple[Any, list[tuple[int | None, np.ndarray, list[fd.Function]]]]:
    """Put a vertex source into P1 on the shared mesh (built from it if there is none yet)."""
    if shared.mesh is None:
        mesh, vertex_dofs, vertex_ids = _mesh_from_cells(
            src.points, src.cells, src.tdim, comm, src.file
        )
        shared.adopt(mesh, f"the mesh of {src.file}")
    else:
        vertex_dofs, vertex_ids = _vertex_map(
            shared.mesh, src.points, src.cells, src.file, shared.reference
        )
    mesh = shared.mesh
    first = src.trajectories[0][2]
    p1_spaces = [
        fd.FunctionSpace(mesh, "CG", 1)
        if v[0].ndim == 1
        else fd.VectorFunctionSpace(mesh, "CG", 1, dim=v[0].shape[1])
        for v in first
    ]
    p1 = p1_spaces[0] if len(p1_spaces) == 1 else fd.MixedFunctionSpace(p1_spaces)
    out = []
    for index, times, values in src.trajectories:
        states = []
        for k in range(len(times)):
            f = fd.Function(p1)
            for sub, per_time in zip(f.subfunctions, values, strict=True):
                sub.dat.data_with_halos[vertex_dofs] = per_time[k][vertex_ids]
            states.append(f)
        out.append((index, times, states))
    return p1, out


# --------------------------------------------------------------------------------------------
# NumPy arrays on a periodic grid
# --------------------------------------------------------------------------------------------


@dataclass
class _GridSource:
    """Periodic grid data: its grid, periods, times and a reader of one trajectory at a time."""

    file: Path | str
    fmt: str
    name: str
    grid: tuple[int, ...]
    lengths: tuple[float, ...]
    times: np.ndarray
    indices: list[int]
    total: int
    # Yields (index, array of shape (frames, *grid)) one trajectory at a time, checked finite.
    blocks: Callable[[], Iterator[tuple[int, np.ndarray]]] = field(repr=False)


def _grid_states(
    src: _GridSource, shared: _Shared, comm: Any
) -> tuple[Any, Iterator[tuple[int | None, np.ndarray, list[fd.Function]]]]:
    """Put grid data into P1 on the shared periodic mesh (built from it if there is none yet).

    The trajectories are read one at a time, as the returned iterator is consumed.
    """
    if shared.mesh is None:
        dim = len(src.grid)
        if dim == 1:
            mesh = fd.PeriodicIntervalMesh(src.grid[0], src.lengths[0], comm=comm)
        else:
            mesh = fd.PeriodicRectangleMesh(*src.grid, *src.lengths, comm=comm)
        shared.adopt(mesh, f"the mesh of {src.file}", grid=(src.grid, src.lengths))
    elif shared.grid is None or not _same_grid(shared.grid, (src.grid, src.lengths)):
        theirs = "no periodic grid" if shared.grid is None else _grid_text(*shared.grid)
        raise ValueError(
            f"{src.file}: its mesh ({_grid_text(src.grid, src.lengths)}) differs from "
            f"{shared.reference} ({theirs})"
        )
    V, index = shared.grid_p1()

    def trajectories() -> Iterator[tuple[int | None, np.ndarray, list[fd.Function]]]:
        for i, block in src.blocks():
            flat = block.reshape(block.shape[0], -1)
            states = []
            for k in range(flat.shape[0]):
                f = fd.Function(V)
                f.dat.data_with_halos[:] = flat[k, index]
                states.append(f)
            yield i, src.times, states

    return V, trajectories()


def _grid_text(grid: Sequence[int], lengths: Sequence[float]) -> str:
    return f"periodic grid {list(grid)} with period {[float(x) for x in lengths]}"


def _same_grid(a: Any, b: Any) -> bool:
    return tuple(a[0]) == tuple(b[0]) and np.allclose(a[1], b[1], rtol=1e-9, atol=0.0)


def _grid_meta(grid: Sequence[int], lengths: Sequence[float]) -> dict[str, Any]:
    return {"shape": [int(n) for n in grid], "lengths": [float(x) for x in lengths]}


def _check_finite(block: np.ndarray, file: Any, i: int, times: np.ndarray, name: str) -> None:
    """Raise naming the trajectory and frame of the first NaN/Inf of one trajectory's array."""
    finite = np.isfinite(block)
    if not finite.all():
        where = np.argwhere(~finite)[0]
        k = int(where[0])
        raise ValueError(
            f"{file}: {name!r}: trajectory {i}, frame {k} (t = {float(times[k])!r}) has "
            f"{int(finite.size - np.count_nonzero(finite))} NaN/Inf values in that trajectory "
            f"(first at point {tuple(int(j) for j in where[1:])})"
        )


def _indices(trajectories: Sequence[int] | None, n: int, file: Any) -> list[int]:
    if trajectories is None:
        return list(range(n))
    out = []
    for i in trajectories:
        if isinstance(i, bool) or not isinstance(i, int | np.integer):
            raise ValueError(f"{file}: trajectory indices must be integers, got {i!r}")
        if not -n <= int(i) < n:
            raise ValueError(f"{file}: trajectory {int(i)} does not exist ({n} trajectories)")
        out.append(int(i) % n)
    if not out:
        raise ValueError(f"{file}: no trajectory selected (trajectories=[])")
    return out


def _grid_dataset(src: _GridSource, comm: Any, metadata: dict[str, Any]) -> Dataset:
    shared = _Shared()
    V, trajs = _grid_states(src, shared, comm)
    extra = {"source": str(src.file)} if isinstance(src.file, Path) else {}
    trajectories = [
        TrajectoryData(V, times, states, {"index": i, **extra}) for i, times, states in trajs
    ]
    meta = dict(metadata)
    meta["grid"] = _grid_meta(src.grid, src.lengths)
    check_json(meta, "dataset metadata")
    return Dataset(V, trajectories, meta)


def from_grid_arrays(
    array: Any,
    *,
    lengths: float | Sequence[float] = 1.0,
    times: Sequence[float] | None = None,
    comm: Any = fd.COMM_WORLD,
    metadata: dict[str, Any] | None = None,
) -> Dataset:
    """Put periodic grid data into P1 on a periodic mesh whose vertices are the grid points.

    Parameters
    ----------
    array
        Shape ``(trajectories, times, points)`` for 1-D data on ``x_j = j L / points``, or
        ``(trajectories, times, nx, ny)`` for 2-D data on ``(i Lx / nx, j Ly / ny)``. At least 3
        points per direction. It is read, never modified.
    lengths
        The period ``L`` (1-D) or ``(Lx, Ly)`` (2-D); a single number is used in both directions.
    times
        The times of the second axis (default ``0, 1, ...``).
    comm
        The communicator of the mesh.
    metadata
        Dataset metadata (``"grid"`` with the shape and lengths is added; :func:`to_grid_arrays`
        uses it).

    Returns
    -------
    Dataset
        One trajectory per first index, on P1 of a ``PeriodicIntervalMesh`` or a
        ``PeriodicRectangleMesh``; no information is lost.

    Raises
    ------
    ValueError
        On a bad shape, non-real or NaN/Inf values, bad lengths, or times that do not match the
        second axis or are not strictly increasing.

    """
    data = np.asarray(array)
    if data.ndim not in (3, 4):
        raise ValueError(
            "grid array: expected shape (trajectories, times, points) or "
            f"(trajectories, times, nx, ny), got shape {data.shape}"
        )
    _check_real(data.dtype, "grid array")
    n_traj, n_times, *grid = data.shape
    if n_traj < 1 or n_times < 1 or min(grid) < 3:
        raise ValueError(
            f"grid array: shape {data.shape} needs >= 1 trajectory, >= 1 time and >= 3 points "
            "per direction"
        )
    bad = data.size - np.count_nonzero(np.isfinite(data))
    if bad:
        where = tuple(int(i) for i in np.argwhere(~np.isfinite(data))[0])
        raise ValueError(f"grid array: {bad} NaN/Inf values (first at index {where})")
    L = _lengths(lengths, len(grid), "grid array")
    t = check_times(np.arange(n_times, dtype=float) if times is None else times, "grid array")
    if len(t) != n_times:
        raise ValueError(f"grid array: {len(t)} times for {n_times} time slices (axis 1)")
    meta = dict(metadata or {})
    check_json(meta, "dataset metadata")
    src = _GridSource(
        "grid array",
        "array",
        "array",
        tuple(grid),
        L,
        t,
        list(range(n_traj)),
        n_traj,
        lambda: ((i, data[i]) for i in range(n_traj)),
    )
    return _grid_dataset(src, comm, meta)


def _check_real(dtype: Any, what: Any) -> None:
    if not (np.issubdtype(dtype, np.floating) or np.issubdtype(dtype, np.integer)):
        raise ValueError(f"{what}: expected real numbers, got dtype {dtype}")


def _lengths(lengths: Any, dim: int, what: Any) -> tuple[float, ...]:
    L = np.broadcast_to(np.asarray(lengths, dtype=float), (dim,)).copy()
    if not (np.isfinite(L).all() and (L > 0).all()):
        raise ValueError(f"{what}: lengths must be finite and > 0, got {lengths!r}")
    return tuple(float(x) for x in L)


def read_grid_hdf5(
    path: str | Path,
    *,
    dataset: str | None = None,
    lengths: float | Sequence[float] | None = None,
    times: Sequence[float] | None = None,
    trajectories: Sequence[int] | None = None,
    comm: Any = fd.COMM_WORLD,
    metadata: dict[str, Any] | None = None,
) -> Dataset:
    """Read periodic grid data stored as one HDF5 array (the paper's layout) into P1, lazily.

    The array is read one trajectory at a time (``array[i]``), never as a whole, so a file
    larger than the memory can be read in parts. See :func:`grid_hdf5_info` for the layout.

    Parameters
    ----------
    path
        The HDF5 file (read only, never modified).
    dataset
        The name of the array (default ``"u_sol_all"``, the paper's): shape ``(trajectories,
        frames, points[, 1])`` or ``(trajectories, frames, nx, ny[, 1])``.
    lengths
        The period ``L`` (1-D) or ``(Lx, Ly)`` (2-D). Default: from ``x_coord`` (and
        ``y_coord``); ``2 pi`` for a file without coordinates. Given for a file with
        coordinates, it must agree with them.
    times
        The frame times, for a file without ``t_coord`` (default ``0, 1, ...``); a file with
        ``t_coord`` carries its times.
    trajectories
        The indices of the trajectories to read, in this order (default: all).
    comm
        The communicator of the mesh (every rank reads the trajectories it is given).
    metadata
        Dataset metadata (``source``, ``dataset`` and ``grid`` are added).

    Returns
    -------
    Dataset
        One trajectory per index (``metadata["index"]`` is its index in the file) on P1 of a
        periodic mesh whose vertices are the grid points.

    Raises
    ------
    FileNotFoundError
        If the file does not exist.
    ValueError
        If the file is not HDF5, has no such array (the message lists the arrays it has), has a
        non-uniform ``t_coord`` or ``x_coord``, more than one field, NaN/Inf values in a
        trajectory read (naming the trajectory and frame), or ``lengths``/``times`` that
        contradict the file.

    """
    src = _grid_hdf5_source(path, dataset, lengths, times, trajectories)
    meta = {"source": str(src.file), "dataset": src.name, **(metadata or {})}
    check_json(meta, "dataset metadata")
    dataset_out = _grid_dataset(src, comm, meta)
    logger.info(
        "read %d of %d trajectories (%d frames, grid %s, period %s) from %s",
        len(src.indices),
        src.total,
        len(src.times),
        list(src.grid),
        [float(x) for x in src.lengths],
        src.file,
    )
    return dataset_out


def _grid_hdf5_source(
    path: str | Path,
    dataset: str | None,
    lengths: Any,
    times: Any,
    trajectories: Sequence[int] | None,
) -> _GridSource:
    path = Path(path)
    if not path.exists():
        raise FileNotFoundError(f"{path}: file not found")
    info = grid_hdf5_info(path, dataset=dataset)
    _check_real(np.dtype(info.dtype), path)
    dim = len(info.grid)
    if lengths is not None:
        L = _lengths(lengths, dim, path)
        if info.lengths is not None and not np.allclose(L, info.lengths, rtol=1e-9, atol=0.0):
            raise ValueError(
                f"{path}: lengths={lengths!r} disagree with the period {list(info.lengths)} of "
                "its coordinates (drop lengths=)"
            )
    else:
        L = info.lengths if info.lengths is not None else (2 * np.pi,) * dim
    if times is not None:
        if info.times is not None:
            raise ValueError(f"{path}: the file carries its times (t_coord); drop times=")
        t = check_times(times, str(path))
        if len(t) != info.frames:
            raise ValueError(f"{path}: {len(t)} times for {info.frames} frames (axis 1)")
    elif info.times is not None:
        t = check_times(info.times, f"{path}: t_coord")
    else:
        t = np.arange(info.frames, dtype=float)
    indices = _indices(trajectories, info.trajectories, path)

    def blocks() -> Iterator[tuple[int, np.ndarray]]:
        with h5py.File(path, "r") as h5:
            dset = h5[info.dataset]
            for i in indices:
                block = np.asarray(dset[i])  # one trajectory: never the whole array
                if info.fields_axis:
                    block = block[..., 0]
                _check_finite(block, path, i, t, info.dataset)
                yield i, block

    return _GridSource(
        path, "grid_hdf5", info.dataset, info.grid, L, t, indices, info.trajectories, blocks
    )


def grid_index(V: Any, grid: Sequence[int], lengths: np.ndarray) -> np.ndarray:
    """Return, for each local P1 DoF (with halo), the flat index of its grid point."""
    mesh = mesh_of(V)
    coords = mesh.coordinates
    cell_coords = coords.dat.data_ro_with_halos[
        coords.function_space().cell_node_map().values_with_halo
    ]
    cell_coords = cell_coords.reshape(*cell_coords.shape[:2], -1)
    dofs = V.cell_node_map().values_with_halo
    h = lengths / np.asarray(grid)
    scaled = cell_coords / h
    ijk = np.rint(scaled)
    if np.abs(scaled - ijk).max(initial=0.0) > 1e-8:
        raise RuntimeError("internal error: periodic mesh vertices are not on the grid")
    ijk = np.mod(ijk.astype(np.int64), np.asarray(grid))
    flat = ijk[..., 0] if len(grid) == 1 else ijk[..., 0] * grid[1] + ijk[..., 1]
    index = np.full(V.dof_dset.total_size, -1, dtype=np.int64)
    index[dofs.ravel()] = flat.ravel()
    if (index < 0).any():
        raise RuntimeError("internal error: a P1 DoF is in no local cell")
    return index


def to_grid_arrays(dataset: Dataset) -> np.ndarray:
    """Return the grid array of a dataset made by :func:`from_grid_arrays` (collective).

    The inverse of :func:`from_grid_arrays`: shape ``(trajectories, times, points)`` or
    ``(trajectories, times, nx, ny)``, the same on every rank. Every trajectory must have the
    same number of times.

    Raises
    ------
    ValueError
        If the dataset has no ``"grid"`` metadata, is not on scalar P1, or its trajectories have
        different numbers of times.

    """
    grid_meta = dataset.metadata.get("grid")
    V = dataset.space
    if grid_meta is None:
        raise ValueError("to_grid_arrays: the dataset has no 'grid' metadata (not from a grid)")
    element = V.ufl_element()
    if element.family() not in ("Lagrange", "Q") or element.degree() != 1 or V.value_shape:
        raise ValueError(f"to_grid_arrays: the dataset is on {element}, not on scalar P1")
    lengths = {len(t) for t in dataset}
    if len(lengths) > 1:
        raise ValueError(f"to_grid_arrays: trajectories have different numbers of times {lengths}")
    grid = grid_meta["shape"]
    index = grid_index(V, grid, np.asarray(grid_meta["lengths"]))
    owned = V.dof_dset.size
    out = np.zeros((len(dataset), lengths.pop() if lengths else 0, int(np.prod(grid))))
    for i, traj in enumerate(dataset):
        for k, state in enumerate(traj.states):
            out[i, k, index[:owned]] = state.dat.data_ro[:owned]
    mesh_of(V).comm.Allreduce(MPI.IN_PLACE, out, op=MPI.SUM)
    return out.reshape(out.shape[0], out.shape[1], *grid)


# --------------------------------------------------------------------------------------------
# NumPy .npz arrays with coordinates
# --------------------------------------------------------------------------------------------


def read_npz(
    path: str | Path,
    *,
    fields: Sequence[str] | None = None,
    trajectories: Sequence[int] | None = None,
    mesh: Any = None,
    family: str = "CG",
    degree: int = 1,
    method: str = "interpolate",
    comm: Any = fd.COMM_WORLD,
    metadata: dict[str, Any] | None = None,
) -> Dataset:
    """Read values at points from an ``.npz`` file with explicit coordinates (see the layout).

    Parameters
    ----------
    path
        The file: ``u`` (or the arrays named by ``fields``) of shape ``(trajectories, frames,
        points)`` or ``(frames, points)``, ``t`` ``(frames,)``, and either ``x`` ``(points,
        dim)`` with ``cells`` ``(ncells, dim + 1)`` (an unstructured simplex mesh; values at the
        vertices go into P1 exactly) or ``x`` ``(points,)`` (a uniform periodic 1-D grid from 0,
        period ``points * spacing``, or ``period`` if given and equal).
    fields
        The arrays to read (default ``u``, or the only array besides the coordinates and times);
        several make a mixed space (unstructured meshes only).
    trajectories
        The trajectory indices to read (default: all).
    mesh
        An existing non-periodic mesh whose vertices are the file's points (matched by
        coordinates), for an unstructured layout.
    family, degree, method
        The target element, as for :func:`read_meshio_series`.
    comm
        The communicator of a new mesh.
    metadata
        Dataset metadata (``source`` and ``format`` are added, ``grid`` for a periodic grid).

    Returns
    -------
    Dataset

    Raises
    ------
    FileNotFoundError
        If the file does not exist.
    ValueError
        If the file is not a readable ``.npz``, lacks an array of the layout, the shapes do not
        agree, a value is NaN/Inf (naming the trajectory and frame), the times do not increase,
        the grid is not uniform, or the cells are not supported.

    """
    _check_method(method)
    path = Path(path)
    src = _npz_source(path, fields, trajectories)
    shared = _Shared()
    if mesh is not None:
        shared.adopt(mesh, f"the mesh {mesh.name!r}")
        comm = mesh.comm
    trajs = list(_source_trajectories(src, shared, comm, family, degree, method))
    meta = {"source": str(path), "format": "npz", **(metadata or {})}
    if shared.grid is not None:
        meta["grid"] = _grid_meta(*shared.grid)
    return Dataset(trajs[0].space, trajs, meta)


def _npz_source(
    path: Path, fields: Sequence[str] | None, trajectories: Sequence[int] | None
) -> _VertexSource | _GridSource:
    _check_file(path)
    try:
        with np.load(path, allow_pickle=False) as npz:
            arrays = {k: npz[k] for k in npz.files}
    except Exception as exc:
        raise ValueError(f"{path}: not a readable .npz file: {type(exc).__name__}: {exc}") from exc
    value_names = [k for k in arrays if k not in NPZ_RESERVED]
    if fields:
        names = list(fields)
    elif "u" in arrays:
        names = ["u"]
    elif len(value_names) == 1:
        names = value_names
    else:
        raise ValueError(
            f"{path}: no array 'u' and {len(value_names)} other value arrays {value_names}; "
            "name the field(s) with fields="
        )
    for name in names:
        if name not in arrays or name in NPZ_RESERVED:
            raise ValueError(f"{path}: no value array {name!r} (arrays: {sorted(arrays)})")
    for key in ("t", "x"):
        if key not in arrays:
            what = "the frame times" if key == "t" else "the point coordinates"
            raise ValueError(f"{path}: no array {key!r} ({what}; arrays: {sorted(arrays)})")
    t = check_times(arrays["t"], f"{path}: t")
    x = np.asarray(arrays["x"])
    _check_real(x.dtype, f"{path}: x")
    values = {}
    for name in names:
        a = np.asarray(arrays[name])
        _check_real(a.dtype, f"{path}: {name!r}")
        if a.ndim == 2:
            a = a[None]
        if a.ndim != 3:
            raise ValueError(
                f"{path}: {name!r} has shape {arrays[name].shape}; expected (trajectories, "
                "frames, points) or (frames, points)"
            )
        if a.shape[1] != len(t):
            raise ValueError(f"{path}: {name!r} has {a.shape[1]} frames but t has {len(t)} times")
        if a.shape[2] != len(x):
            raise ValueError(f"{path}: {name!r} has {a.shape[2]} points but x has {len(x)}")
        values[name] = a
    counts = {a.shape[0] for a in values.values()}
    if len(counts) > 1:
        raise ValueError(f"{path}: the fields {names} have different numbers of trajectories")
    n = counts.pop()
    indices = _indices(trajectories, n, path)
    for i in indices:
        for name in names:
            _check_finite(values[name][i], path, i, t, name)
    if x.ndim == 1 and "cells" not in arrays:
        if len(names) > 1:
            raise ValueError(f"{path}: a periodic grid (1-D x) holds one field, got {names}")
        if len(x) < 3:
            raise ValueError(f"{path}: a periodic grid needs >= 3 points, x has {len(x)}")
        period, problem = grid_period(x, len(x), "x")
        if problem is not None or period is None:
            raise ValueError(f"{path}: {problem}")
        if "period" in arrays:
            given = float(np.asarray(arrays["period"]))
            if abs(given - period) > 1e-9 * period:
                raise ValueError(
                    f"{path}: period {given!r} is not len(x) * spacing = {period!r} (x_j = j h "
                    "from 0, the period excluded)"
                )
        a = values[names[0]]
        return _GridSource(
            path,
            "npz",
            names[0],
            (len(x),),
            (period,),
            t,
            indices,
            n,
            lambda: ((i, a[i]) for i in indices),
        )
    if "cells" not in arrays:
        raise ValueError(f"{path}: x of shape {x.shape} needs 'cells' (ncells, dim + 1)")
    points = x.reshape(len(x), -1).astype(float)
    if not 1 <= points.shape[1] <= 3:
        raise ValueError(f"{path}: x has shape {x.shape}; expected (points, dim), dim 1 to 3")
    cells = np.asarray(arrays["cells"])
    if cells.ndim != 2 or not np.issubdtype(cells.dtype, np.integer):
        raise ValueError(f"{path}: cells must be integers of shape (ncells, dim + 1)")
    nodes = {"line": 2, "triangle": 3, "quad": 4, "tetra": 4}
    if "cell_type" in arrays:
        cell_type = str(np.asarray(arrays["cell_type"]))
    else:
        cell_type = {2: "line", 3: "triangle", 4: "tetra"}.get(cells.shape[1], "?")
    if cell_type not in SUPPORTED_CELLS or nodes[cell_type] != cells.shape[1]:
        raise ValueError(
            f"{path}: unsupported cells: {cells.shape[1]} vertices per cell with cell_type "
            f"{cell_type!r} (supported: {sorted(SUPPORTED_CELLS)})"
        )
    tdim = SUPPORTED_CELLS[cell_type]
    points, cells, used = _compact_points(points, cells.astype(np.int64), path)
    keep = slice(None) if used is None else used
    trajs = [
        (i, t, [[values[name][i, k][keep] for k in range(len(t))] for name in names])
        for i in indices
    ]
    return _VertexSource(path, "npz", points, cells, cell_type, tdim, names, trajs)


def _source_trajectories(
    src: _VertexSource | _GridSource,
    shared: _Shared,
    comm: Any,
    family: str,
    degree: int,
    method: str,
) -> Iterator[TrajectoryData]:
    """Read a vertex or grid source onto the shared mesh and the target element, one at a time."""
    if isinstance(src, _GridSource):
        p1, raw = _grid_states(src, shared, comm)
        names = [src.name]
    else:
        p1, listed = _vertex_states(src, shared, comm)
        raw = iter(listed)
        names = list(src.names)
    for i, times, states in raw:
        space, states, report = _to_element(p1, states, family, degree, method)
        meta: dict[str, Any] = {"source": str(src.file), "format": src.fmt, "fields": names}
        if i is not None:
            meta["index"] = i
        if report is not None:
            meta["transfer"] = report
        yield TrajectoryData(space, times, states, meta)


# --------------------------------------------------------------------------------------------
# Users' Firedrake CheckpointFiles
# --------------------------------------------------------------------------------------------


def read_checkpoint_series(
    path: str | Path,
    *,
    fields: Sequence[str] | None = None,
    dt: float | None = None,
    family: str = "CG",
    degree: int = 1,
    method: str = "interpolate",
    comm: Any = fd.COMM_WORLD,
    metadata: dict[str, Any] | None = None,
) -> TrajectoryData:
    """Read the functions a solver saved at every time index of a Firedrake ``CheckpointFile``.

    The file holds one mesh and functions saved with ``save_function(f, idx=k,
    timestepping_info={"time": t})``; state ``k`` is every chosen function at its ``k``-th saved
    index. The times are Firedrake's timestepping history ``"time"``; without it, ``dt`` gives
    ``t = idx * dt``.

    Parameters
    ----------
    path
        The file (read only).
    fields
        The names of the functions (default: the only one in the file); several make a mixed
        space.
    dt
        The time between indices, for a file saved without ``"time"``.
    family, degree, method
        The target element; a function on another element is interpolated or projected and the
        information lost is reported in ``metadata["transfer"]``.
    comm
        The communicator to load the mesh on.
    metadata
        Extra metadata for the trajectory.

    Returns
    -------
    TrajectoryData
        On the file's mesh.

    Raises
    ------
    FileNotFoundError
        If the file does not exist.
    ValueError
        If it is not a Firedrake ``CheckpointFile``, holds several meshes, lacks a function or
        its timestepping history, has no times and no ``dt``, the functions have different
        indices, or a state has NaN/Inf values (naming the function and index).

    """
    _check_method(method)
    path = Path(path)
    space, times, states, names = _read_checkpoint(path, fields, dt, comm)
    space, states, report = _to_element(space, states, family, degree, method)
    meta = {"source": str(path), "format": "checkpoint", "fields": names, **(metadata or {})}
    if report is not None:
        meta["transfer"] = report
    return TrajectoryData(space, times, states, meta)


def _checkpoint_contents(h5: Any) -> tuple[list[str], list[str]]:
    """Return the mesh names and the (user) function names of a CheckpointFile."""
    meshes: set[str] = set()
    functions: set[str] = set()
    parts_of_mixed: set[str] = set()

    def visit(name: str, obj: Any) -> None:
        parts = name.split("/")
        if not isinstance(obj, h5py.Group) or len(parts) < 2:
            return
        if parts[-2] == "firedrake_meshes":
            meshes.add(parts[-1])
        elif parts[-2] == "firedrake_functions":
            functions.add(parts[-1])
            if "firedrake_mixed_meshes" in parts:
                for sub in obj.values():
                    if isinstance(sub, h5py.Group) and "firedrake_function" in sub.attrs:
                        parts_of_mixed.add(str(sub.attrs["firedrake_function"]))

    h5.visititems(visit)
    names = sorted(f for f in functions - parts_of_mixed if not f.startswith("firedrake_"))
    return sorted(meshes), names


def _read_checkpoint(
    path: Path, fields: Sequence[str] | None, dt: float | None, comm: Any
) -> tuple[Any, np.ndarray, list[fd.Function], list[str]]:
    _check_file(path)
    if not h5py.is_hdf5(path):
        raise ValueError(f"{path}: not a readable HDF5 file")
    try:
        with h5py.File(path, "r") as h5:
            if "dmplex_storage_version" not in h5.attrs and "topologies" not in h5:
                raise ValueError(f"{path}: not a Firedrake CheckpointFile")
            meshes, functions = _checkpoint_contents(h5)
    except OSError as exc:
        raise ValueError(f"{path}: not a readable HDF5 file ({exc})") from exc
    if len(meshes) != 1:
        raise ValueError(f"{path}: {len(meshes)} meshes {meshes}; femeso reads a file with one")
    if fields:
        names = list(fields)
        for name in names:
            if name not in functions:
                raise ValueError(f"{path}: no function {name!r} (functions: {functions})")
    elif len(functions) == 1:
        names = functions
    else:
        raise ValueError(
            f"{path}: {len(functions)} functions {functions}; name the field(s) with fields="
        )
    try:
        with fd.CheckpointFile(str(path), "r", comm=comm) as inp:
            mesh = inp.load_mesh(meshes[0])
            histories = [inp.get_timestepping_history(mesh, name) for name in names]
            for name, history in zip(names, histories, strict=True):
                if not history or len(history.get("index", [])) == 0:
                    raise ValueError(
                        f"{path}: function {name!r} was not saved with save_function(..., idx=k)"
                    )
            index = np.asarray(histories[0]["index"])
            for name, history in zip(names[1:], histories[1:], strict=True):
                if not np.array_equal(np.asarray(history["index"]), index):
                    raise ValueError(
                        f"{path}: functions {names[0]!r} and {name!r} were saved at different "
                        "indices"
                    )
            if "time" in histories[0]:
                times = np.asarray(histories[0]["time"], dtype=float)
            elif dt is not None:
                times = index.astype(float) * float(dt)
            else:
                raise ValueError(
                    f"{path}: no times saved (save_function(..., idx=k, timestepping_info="
                    "{'time': t})); pass dt= (state k at t = idx_k * dt)"
                )
            per_field = [
                [inp.load_function(mesh, name, idx=int(k)) for k in index] for name in names
            ]
    except ValueError as exc:
        message = str(exc)
        raise ValueError(
            message if message.startswith(str(path)) else f"{path}: {message}"
        ) from exc
    except Exception as exc:
        raise ValueError(
            f"{path}: not a readable Firedrake CheckpointFile: {type(exc).__name__}: {exc}"
        ) from exc
    times = check_times(times, f"{path}: time")
    if len(per_field) == 1:
        states = per_field[0]
        space = states[0].function_space()
        states = [fd.Function(space, val=s.dat) for s in states]
    else:
        space = fd.MixedFunctionSpace([f[0].function_space() for f in per_field])
        states = []
        for k in range(len(index)):
            f = fd.Function(space)
            for sub, src in zip(f.subfunctions, (p[k] for p in per_field), strict=True):
                sub.dat.data_with_halos[:] = src.dat.data_ro_with_halos
            states.append(f)
    for k, state in enumerate(states):
        bad = nonfinite_count(state)
        if bad:
            raise ValueError(
                f"{path}: {', '.join(names)} at index {int(index[k])} (t = {float(times[k])!r}) "
                f"has {bad} NaN/Inf values"
            )
    return space, times, states, names


# --------------------------------------------------------------------------------------------
# read_data: many files, one format each, one mesh
# --------------------------------------------------------------------------------------------


def read_data(
    paths: str | Path | Sequence[str | Path],
    *,
    format: str = "auto",  # noqa: A002  (the word users know)
    fields: Sequence[str] | None = None,
    dt: float | None = None,
    family: str = "CG",
    degree: int = 1,
    method: str = "interpolate",
    comm: Any = fd.COMM_WORLD,
    metadata: dict[str, Any] | None = None,
) -> Dataset:
    """Read users' files of any supported format into one dataset on one mesh.

    Each file gives one trajectory (XDMF series, ``.pvd``, ``CheckpointFile``), several (the
    paper's grid HDF5, ``.npz``, femeso's own files), or one frame (``.vtu``: consecutive
    ``.vtu`` paths form one trajectory, frame ``k`` at ``t = k dt``). The first file's mesh is
    built once; every later file must be on the same mesh (same points and cells, in any order:
    its data is put on the mesh by coordinates) or on the same periodic grid.

    Parameters
    ----------
    paths
        The files, in order (globs expanded by the caller).
    format
        ``"auto"`` (from the extension and, for HDF5, the content: a ``/femeso`` group, a
        ``u_sol_all`` array, or a Firedrake ``CheckpointFile``) or one of ``"xdmf"``,
        ``"pvd"``, ``"vtu"``, ``"grid_hdf5"``, ``"femeso"``, ``"checkpoint"``, ``"npz"`` for
        every file.
    fields
        The fields to read: point-data names (meshio), array names (``.npz``; the array name of
        a grid HDF5 file), function names (``CheckpointFile``). Default: all point data of the
        first file (meshio), ``u`` (``.npz``), ``u_sol_all`` (grid), the only function
        (``CheckpointFile``); later files must have the first file's fields.
    dt
        The frame step of files without times (``.vtu`` lists, ``CheckpointFile`` files saved
        without ``"time"``).
    family, degree, method
        The element of the dataset's space: vertex data goes into P1 exactly, other elements
        are reached by ``method`` (``"interpolate"`` or ``"project"``) with the information
        lost reported in each trajectory's ``metadata["transfer"]``.
    comm
        The communicator of the mesh (every rank reads the files).
    metadata
        Extra dataset metadata (``sources``, ``formats``, ``fields``, ``dt`` and, for grids,
        ``grid`` are added).

    Returns
    -------
    Dataset
        Every trajectory on one space of one mesh; ``metadata["dt"]`` is the common frame step.

    Raises
    ------
    FileNotFoundError
        If a file does not exist.
    ValueError
        On any bad input, with one line starting with the file: unknown format, unreadable
        file, missing field, NaN/Inf values (naming the trajectory and frame or time index),
        non-uniform frame steps, frame steps that differ between files, or a mesh that differs
        from the first file's (naming both files).

    """
    reader = DataReader(
        paths,
        format=format,
        fields=fields,
        dt=dt,
        family=family,
        degree=degree,
        method=method,
        comm=comm,
    )
    trajectories = list(reader)
    if not trajectories:
        raise ValueError(f"{reader.files[0]}: no trajectory in the files")
    return Dataset(trajectories[0].space, trajectories, reader.metadata(metadata))


class DataReader:
    """Users' files of any supported format, read one trajectory at a time onto one mesh.

    :func:`read_data` reads everything into a :class:`Dataset`; iterating over a reader holds
    one trajectory at a time (a grid HDF5 file is read trajectory by trajectory), so that a file
    larger than the memory can be imported (:class:`DatasetWriter` writes as it goes).
    The parameters are those of :func:`read_data`; the files are checked (existence, format)
    on construction, the contents as they are read, with the same one-line errors.

    Examples
    --------
    >>> reader = DataReader(["paper_2d.h5"])  # doctest: +SKIP
    >>> len(reader)  # from the files' headers, nothing read yet
    1000
    >>> for trajectory in reader:  # one trajectory in memory at a time
    ...     ...

    """

    def __init__(
        self,
        paths: str | Path | Sequence[str | Path],
        *,
        format: str = "auto",  # noqa: A002  (the word users know)
        fields: Sequence[str] | None = None,
        dt: float | None = None,
        family: str = "CG",
        degree: int = 1,
        method: str = "interpolate",
        comm: Any = fd.COMM_WORLD,
    ) -> None:
        _check_method(method)
        if isinstance(paths, str | os.PathLike):
            paths = [paths]
        self.files = [Path(p) for p in paths]
        if not self.files:
            raise ValueError("read_data: no files given")
        if format != "auto" and format not in FORMATS:
            raise ValueError(
                f"read_data: unknown format {format!r} (known: auto, {', '.join(FORMATS)})"
            )
        for file in self.files:
            _check_file(file)
        self.kinds = [detect_format(f) if format == "auto" else format for f in self.files]
        self.groups: list[tuple[str, list[Path]]] = []
        for file, kind in zip(self.files, self.kinds, strict=True):
            if kind == "vtu" and self.groups and self.groups[-1][0] == "vtu":
                self.groups[-1][1].append(file)
            else:
                self.groups.append((kind, [file]))
        self._fields = list(fields) if fields else None
        self._options = (comm, dt, family, degree, method)
        self._shared = _Shared(names=self._fields)
        self._read = 0

    def counts(self) -> list[int]:
        """Return the number of trajectories of each file (group of ``.vtu``), from its header."""
        return [_group_count(kind, group, self._fields) for kind, group in self.groups]

    def __len__(self) -> int:
        return sum(self.counts())

    def __iter__(self) -> Iterator[TrajectoryData]:
        """Yield the trajectories in file order, each checked (element, frame step) on the way."""
        shared = self._shared = _Shared(names=self._fields)
        self._read = 0
        space = None
        for kind, group in self.groups:
            for traj in _read_group(kind, group, shared, *self._options):
                label = Path(traj.metadata.get("source", group[0]))
                if space is None:
                    space = traj.space
                elif traj.space.ufl_element() != space.ufl_element():
                    raise ValueError(
                        f"{label}: its data is on {traj.space.ufl_element()}, not on "
                        f"{space.ufl_element()} like "
                        f"{shared.reference.removeprefix('the mesh of ')}"
                    )
                _check_step(traj, label, shared)
                self._read += 1
                yield traj

    def metadata(self, extra: dict[str, Any] | None = None) -> dict[str, Any]:
        """Return the dataset metadata of what was read, with ``extra`` on top; log it.

        The keys: ``sources``, ``formats``, ``fields``, ``dt`` and ``grid`` (periodic grids).
        """
        shared = self._shared
        meta: dict[str, Any] = {
            "sources": [str(f) for f in self.files],
            "formats": sorted(set(self.kinds)),
            "fields": shared.names,
            "dt": shared.dt,
        }
        if shared.grid is not None:
            meta["grid"] = _grid_meta(*shared.grid)
        meta.update(extra or {})
        logger.info(
            "read %d trajectories from %d files (%s) on one mesh",
            self._read,
            len(self.files),
            ", ".join(meta["formats"]),
        )
        return meta


def _group_count(kind: str, group: list[Path], fields: list[str] | None) -> int:
    """Return the number of trajectories of one file (or run of ``.vtu``) without its states."""
    file = group[0]
    if kind == "grid_hdf5":
        return grid_hdf5_info(file, dataset=fields[0] if fields else None).trajectories
    if kind == "femeso":
        header, problem = _read_header(file)
        if header is None:
            raise ValueError(f"{file}: {problem}")
        return len(header["trajectories"])
    if kind == "npz":
        src = _npz_source(file, fields, None)
        return len(src.indices) if isinstance(src, _GridSource) else len(src.trajectories)
    return 1  # a series, a .vtu run, a CheckpointFile: one trajectory


def _check_step(traj: TrajectoryData, file: Path, shared: _Shared) -> None:
    if len(traj.times) < 2:
        return
    where = f"trajectory {traj.metadata['index']}: " if "index" in traj.metadata else ""
    step, uniform, problem = frame_step(traj.times)
    if problem is not None or step is None:
        raise ValueError(f"{file}: {where}{problem}")
    if shared.dt is None:
        shared.dt, shared.dt_source = step, str(file)
    elif abs(step - shared.dt) > STEP_RTOL * shared.dt:
        raise ValueError(
            f"{file}: {where}frame step {step!r} differs from the frame step {shared.dt!r} of "
            f"{shared.dt_source}"
        )


def _read_group(
    kind: str,
    group: list[Path],
    shared: _Shared,
    comm: Any,
    dt: float | None,
    family: str,
    degree: int,
    method: str,
) -> Iterator[TrajectoryData]:
    """Read one file (or a run of .vtu files) onto the shared mesh, one trajectory at a time."""
    file = group[0]
    names = shared.names
    if kind in ("xdmf", "pvd", "vtu"):
        if kind == "vtu":
            if dt is None:
                raise ValueError(
                    f"{file}: .vtu files carry no times; pass dt= (frame k at t = k dt)"
                )
            src = _meshio_source(group, list(np.arange(len(group)) * float(dt)), names)
            src.fmt = "vtu"
        else:
            src = _meshio_source(file, None, names)
        shared.names = shared.names or list(src.names)
        yield from _source_trajectories(src, shared, comm, family, degree, method)
        return
    if kind == "grid_hdf5":
        if names is not None and len(names) != 1:
            raise ValueError(f"{file}: a grid HDF5 file holds one field, got fields={names}")
        gsrc = _grid_hdf5_source(file, names[0] if names else None, None, None, None)
        shared.names = [gsrc.name]
        yield from _source_trajectories(gsrc, shared, comm, family, degree, method)
        return
    if kind == "npz":
        nsrc = _npz_source(file, names, None)
        shared.names = names or ([nsrc.name] if isinstance(nsrc, _GridSource) else nsrc.names)
        yield from _source_trajectories(nsrc, shared, comm, family, degree, method)
        return
    if kind == "femeso":
        loaded = load_dataset(file, comm=comm)
        grid_meta = loaded.metadata.get("grid")
        grid = None
        if grid_meta is not None:
            grid = (tuple(grid_meta["shape"]), tuple(float(x) for x in grid_meta["lengths"]))
        for i, traj in enumerate(loaded):
            space, states, report = _to_element(traj.space, traj.states, family, degree, method)
            space, states = _onto_shared(space, states, file, shared, grid)
            meta = {**traj.metadata, "source": str(file), "format": "femeso", "index": i}
            if report is not None:
                meta["transfer"] = report
            yield TrajectoryData(space, traj.times, states, meta)
        return
    if kind == "checkpoint":
        space, times, states, found = _read_checkpoint(file, names, dt, comm)
        shared.names = shared.names or found
        space, states, report = _to_element(space, states, family, degree, method)
        space, states = _onto_shared(space, states, file, shared, None)
        meta = {"source": str(file), "format": "checkpoint", "fields": found}
        if report is not None:
            meta["transfer"] = report
        yield TrajectoryData(space, times, states, meta)
        return
    raise ValueError(f"{file}: unknown format {kind!r} (known: {', '.join(FORMATS)})")


def _onto_shared(
    space: Any, states: list[fd.Function], file: Path, shared: _Shared, grid: Any
) -> tuple[Any, list[fd.Function]]:
    """Put states of a Firedrake file on the shared mesh (adopting their mesh if none yet)."""
    mesh = mesh_of(space)
    if shared.mesh is None:
        shared.adopt(mesh, f"the mesh of {file}", grid=grid)
        return space, states
    if mesh is shared.mesh:
        return space, states
    if (grid is None) != (shared.grid is None) or (
        grid is not None and not _same_grid(grid, shared.grid)
    ):
        theirs = _grid_text(*grid) if grid is not None else "not a periodic grid"
        ours = _grid_text(*shared.grid) if shared.grid is not None else "not a periodic grid"
        raise ValueError(f"{file}: its mesh ({theirs}) differs from {shared.reference} ({ours})")
    scalar_p1 = not space.value_shape and len(space.subspaces) == 1 and _is_p1(space)
    if grid is not None and scalar_p1:  # the same grid: by grid index, exact and cheap
        V, index = shared.grid_p1()
        values = to_grid_arrays(
            Dataset(
                space,
                [TrajectoryData(space, np.arange(len(states)), states)],
                {"grid": _grid_meta(*grid)},
            )
        )[0].reshape(len(states), -1)
        out = []
        for row in values:
            f = fd.Function(V)
            f.dat.data_with_halos[:] = row[index]
            out.append(f)
        return V, out
    target = fd.FunctionSpace(shared.mesh, space.ufl_element())
    try:
        dof_map = DofMap.between(space, target)
    except ValueError as exc:
        raise ValueError(f"{file}: its mesh differs from {shared.reference}: {exc}") from None
    return target, [dof_map.apply(state) for state in states]


# --------------------------------------------------------------------------------------------
# VTK export
# --------------------------------------------------------------------------------------------


def export_vtk(
    trajectory: TrajectoryData,
    path: str | Path,
    *,
    names: Sequence[str] | None = None,
    overwrite: bool = False,
) -> Path:
    """Write a trajectory (true or predicted) to a ``.pvd`` time series for ParaView.

    In serial the ``.vtu`` files are written through meshio (so that femeso's own
    :func:`read_meshio_series` reads them back; meshio 5.3 cannot parse ``VTKFile``'s appended
    binary output): each field is interpolated into the element of the mesh coordinates (P1 for
    an ordinary mesh, which is exact for vertex data; broken P1 for a periodic mesh) and written
    as point data. On several ranks it is ``firedrake.output.VTKFile`` (needs the ``vtk``
    package, which femeso's environment installs), with the same ``.pvd`` layout.

    Parameters
    ----------
    trajectory
        The trajectory.
    path
        The ``.pvd`` file; the ``.vtu`` files go into a directory of the same name without the
        suffix (``VTKFile``'s layout).
    names
        One name per field (default: ``metadata["fields"]`` or ``u``, ``u_1``, ...).
    overwrite
        Replace an existing ``.pvd``. Without it, an existing file is an error.

    Returns
    -------
    Path
        ``path``.

    Raises
    ------
    ValueError
        If ``path`` does not end in ``.pvd`` or the number of names is wrong.
    FileExistsError
        If ``path`` exists and ``overwrite`` is false.
    RuntimeError
        Without the ``vtk`` package, on more than one rank.

    """
    path = Path(path)
    comm = mesh_of(trajectory.space).comm
    if path.suffix != ".pvd":
        raise ValueError(f"{path}: VTK export writes a .pvd file")
    if comm.bcast(path.exists() if comm.rank == 0 else None, root=0) and not overwrite:
        raise FileExistsError(f"{path}: file exists (pass overwrite=True to replace it)")
    fields = list(trajectory.states[0].subfunctions)
    if names is None:
        names = trajectory.metadata.get("fields")
        if names is None or len(names) != len(fields):
            names = ["u"] + [f"u_{i}" for i in range(1, len(fields))]
    names = list(names)
    if len(names) != len(fields):
        raise ValueError(f"{path}: {len(names)} names for {len(fields)} fields")
    if comm.size > 1 and importlib.util.find_spec("vtkmodules") is not None:
        outputs = [
            fd.Function(_collapse(f.function_space()), name=n)
            for f, n in zip(fields, names, strict=True)
        ]
        vtk = VTKFile(str(path), comm=comm, mode="w")
        for t, state in zip(trajectory.times, trajectory.states, strict=True):
            for out, sub in zip(outputs, state.subfunctions, strict=True):
                out.dat.data_wo_with_halos[:] = sub.dat.data_ro_with_halos
            vtk.write(*outputs, time=float(t))
    elif comm.size > 1:
        raise RuntimeError(
            f"{path}: VTK export on {comm.size} ranks needs the vtk package (pip install vtk)"
        )
    else:
        _export_vtk_meshio(trajectory, path, names)
    logger.info("wrote %d times of %s to %s", len(trajectory), ", ".join(names), path)
    return path


def _collapse(space: Any) -> Any:
    return space.collapse() if hasattr(space, "collapse") else space


# meshio's (VTK's) vertex order from FIAT's: quadrilaterals are tensor-product ordered in FIAT.
_VTK_ORDER = {
    "interval": None,
    "triangle": None,
    "tetrahedron": None,
    "quadrilateral": [0, 2, 3, 1],
}
_VTK_TYPE = {"interval": "line", "triangle": "triangle", "tetrahedron": "tetra"}


def _export_vtk_meshio(trajectory: TrajectoryData, path: Path, names: list[str]) -> None:
    """Write the ``.vtu`` files and the ``.pvd`` with meshio (serial; points: coordinate nodes)."""
    mesh = mesh_of(trajectory.space)
    coords = mesh.coordinates
    cspace = coords.function_space()
    celem = cspace.ufl_element()
    scalar_elem = celem.sub_elements[0] if celem.sub_elements else celem
    if scalar_elem.degree() != 1:
        raise ValueError(f"{path}: VTK export without vtk needs affine (degree-1) coordinates")
    cell = mesh.ufl_cell().cellname
    if cell not in _VTK_ORDER:
        raise ValueError(f"{path}: VTK export without vtk does not support {cell} cells")
    ccnm = cspace.cell_node_map().values
    order = _VTK_ORDER[cell]
    cells = ccnm if order is None else ccnm[:, order]
    points = np.zeros((coords.dat.data_ro.shape[0], 3))
    gdim = coords.dat.data_ro.reshape(len(points), -1).shape[1]
    points[:, :gdim] = coords.dat.data_ro.reshape(len(points), -1)
    targets = []
    for f in trajectory.states[0].subfunctions:
        shape = f.function_space().value_shape
        V = (
            fd.FunctionSpace(mesh, scalar_elem)
            if len(shape) == 0
            else fd.VectorFunctionSpace(mesh, scalar_elem, dim=shape[0])
        )
        targets.append(fd.Function(V))
    directory = path.with_suffix("")
    directory.mkdir(parents=True, exist_ok=True)
    entries = []
    for k, (t, state) in enumerate(zip(trajectory.times, trajectory.states, strict=True)):
        point_data = {}
        for name, target, f in zip(names, targets, state.subfunctions, strict=True):
            target.interpolate(f)
            values = np.zeros((len(points), *target.dat.data_ro.shape[1:]))
            values[ccnm] = target.dat.data_ro[target.function_space().cell_node_map().values]
            point_data[name] = values
        vtu = directory / f"{directory.name}_{k}.vtu"
        cell_type = "quad" if cell == "quadrilateral" else _VTK_TYPE[cell]
        meshio.write(str(vtu), meshio.Mesh(points, [(cell_type, cells)], point_data=point_data))
        rel = vtu.relative_to(path.parent)
        entries.append(f'    <DataSet timestep="{float(t)!r}" part="0" file="{rel}" />')
    text = "\n".join(
        [
            '<?xml version="1.0"?>',
            '<VTKFile type="Collection" version="0.1">',
            "  <Collection>",
            *entries,
            "  </Collection>",
            "</VTKFile>",
            "",
        ]
    )
    path.write_text(text)
