"""Reading and writing trajectories: femeso's HDF5 format, meshio series, grid arrays, VTK export.

* :func:`save_dataset` / :func:`load_dataset`: femeso's own format, one HDF5 file written by
  Firedrake's ``CheckpointFile`` (mesh and functions, in parallel, readable on any number of
  ranks) plus a ``/femeso`` group with the metadata as a JSON string attribute and the times.
  Writes are atomic: a temporary file in the same directory, renamed when complete.
* :func:`read_meshio_series`: users' XDMF/HDF5 time series, ``.pvd`` collections and lists of
  ``.vtu`` (or other single-time meshio) files: the mesh and the point data at each time.
* :func:`from_grid_arrays` / :func:`to_grid_arrays`: periodic 1-D/2-D data on a uniform grid,
  arrays of shape ``(trajectories, times, points)`` or ``(trajectories, times, nx, ny)``.
* :func:`export_vtk`: any trajectory, true or predicted, to a ``.pvd`` for ParaView.

Data given at mesh vertices goes into P1 exactly. Another target space is reached by
interpolation or projection, and the information lost (the relative L2 distance between the P1
data and its round trip through the target space) is logged and kept in the metadata.

Every bad input raises ``FileNotFoundError`` or ``ValueError`` naming the file and the problem;
no input file or array is modified, and no existing file is overwritten unless asked to.
"""

from __future__ import annotations

import importlib.util
import json
import os
import re
import uuid
import xml.etree.ElementTree as ET
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import firedrake as fd
import h5py
import meshio
import numpy as np
from firedrake.mesh import plex_from_cell_list
from firedrake.output import VTKFile
from mpi4py import MPI

from femeso._log import logger
from femeso.data.trajectories import (
    Dataset,
    TrajectoryData,
    check_json,
    check_times,
    mesh_of,
)

__all__ = [
    "FORMAT_VERSION",
    "export_vtk",
    "from_grid_arrays",
    "load_dataset",
    "read_meshio_series",
    "save_dataset",
    "to_grid_arrays",
]

FORMAT_VERSION = 1
_GROUP = "/femeso"
_FUNCTION = "femeso_trajectory_{:06d}"

# meshio cell types femeso can mesh (vertex order as in VTK/meshio = DMPlex's for these).
_SUPPORTED_CELLS = {"line": 1, "triangle": 2, "quad": 2, "tetra": 3}
# Topological dimension of the other meshio cell types (to ignore lower-dimensional blocks).
_OTHER_CELLS = {
    "vertex": 0,
    "line3": 1,
    "triangle6": 2,
    "triangle7": 2,
    "quad8": 2,
    "quad9": 2,
    "polygon": 2,
    "tetra10": 3,
    "hexahedron": 3,
    "hexahedron20": 3,
    "hexahedron27": 3,
    "wedge": 3,
    "wedge15": 3,
    "pyramid": 3,
    "pyramid13": 3,
}


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
        If the dataset is empty.

    """
    path = Path(path)
    comm = mesh_of(dataset.space).comm
    if len(dataset) == 0:
        raise ValueError(f"{path}: cannot save an empty dataset (no trajectory to define a space)")
    state = (path.exists(), path.parent.is_dir()) if comm.rank == 0 else None
    exists, parent_ok = comm.bcast(state, root=0)
    if not parent_ok:
        raise FileNotFoundError(f"{path}: directory {path.parent} does not exist")
    if exists and not overwrite:
        raise FileExistsError(f"{path}: file exists (pass overwrite=True to replace it)")
    tmp = comm.bcast(
        str(path.parent / f".{path.name}.{uuid.uuid4().hex}.tmp") if comm.rank == 0 else None,
        root=0,
    )
    try:
        with fd.CheckpointFile(tmp, "w", comm=comm) as out:
            _write_dataset(out, dataset)
        comm.barrier()
        if comm.rank == 0:
            os.replace(tmp, path)
        comm.barrier()
    except BaseException:
        if comm.rank == 0 and os.path.exists(tmp):
            os.remove(tmp)
        raise
    logger.info(
        "saved %d trajectories (%d states) to %s",
        len(dataset),
        sum(len(t) for t in dataset),
        path,
    )
    return path


def _write_dataset(out: Any, dataset: Dataset) -> None:
    mesh = mesh_of(dataset.space)
    out.save_mesh(mesh)
    entries = []
    for i, traj in enumerate(dataset):
        name = _FUNCTION.format(i)
        for k, state in enumerate(traj.states):
            out.save_function(state, idx=k, name=name)
        entries.append({"function": name, "n_states": len(traj), "metadata": traj.metadata})
    header = {
        "format_version": FORMAT_VERSION,
        "mesh_name": mesh.name,
        "metadata": dataset.metadata,
        "trajectories": entries,
    }
    out.require_group(_GROUP)
    out.set_attr(_GROUP, "format_version", FORMAT_VERSION)
    out.set_attr(_GROUP, "metadata_json", json.dumps(header, allow_nan=False))
    h5 = out.h5pyfile
    for i, traj in enumerate(dataset):
        h5.create_dataset(f"{_GROUP}/times/{_FUNCTION.format(i)}", data=traj.times)


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
    if not comm.bcast(path.is_file() if comm.rank == 0 else None, root=0):
        raise FileNotFoundError(f"{path}: no such file")
    # Check the file on rank 0 with plain h5py first: PETSc's viewer fails less cleanly.
    header, problem = comm.bcast(_read_header(path) if comm.rank == 0 else None, root=0)
    if problem is not None:
        raise ValueError(f"{path}: {problem}")
    try:
        with fd.CheckpointFile(str(path), "r", comm=comm) as inp:
            h5 = inp.h5pyfile
            mesh = inp.load_mesh(header["mesh_name"])
            trajectories = []
            space = None
            for entry in header["trajectories"]:
                name = entry["function"]
                times = np.asarray(h5[f"{_GROUP}/times/{name}"][()], dtype=float)
                states = [inp.load_function(mesh, name, idx=k) for k in range(entry["n_states"])]
                space = states[0].function_space() if space is None else space
                # One space object for all trajectories.
                states = [fd.Function(space, val=s.dat, name=name) for s in states]
                trajectories.append(TrajectoryData(space, times, states, entry["metadata"]))
            return Dataset(space, trajectories, header["metadata"])
    except ValueError as exc:
        raise ValueError(f"{path}: {exc}") from exc
    except Exception as exc:
        raise ValueError(f"{path}: corrupt femeso dataset: {type(exc).__name__}: {exc}") from exc


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
            if version != FORMAT_VERSION:
                return None, f"unknown format version {version} (expected {FORMAT_VERSION})"
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
    family, degree, method
        The target space's element. Vertex data goes into P1 exactly; another element is
        reached by ``method`` (``"interpolate"`` or ``"project"``) and the information lost is
        logged and stored in ``metadata["transfer"]``.
    comm
        The communicator of the mesh (every rank reads the files; rank 0 builds the mesh, which
        is then distributed).
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
        on different meshes, a field is missing or its size does not match the mesh, values are
        NaN/Inf, or the times are not strictly increasing.

    """
    if method not in ("interpolate", "project"):
        raise ValueError(f"method must be 'interpolate' or 'project', got {method!r}")
    label, fmt, points, cells, steps = _read_series(source, times)
    first_file = label
    cell_type, cell_array, tdim = _select_cells(cells, first_file)
    npoints_file = len(points)
    points, cell_array, used = _compact_points(points, cell_array, first_file)
    names = _field_names(steps, fields, first_file)
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

    mesh, vertex_dofs, vertex_ids = _mesh_from_cells(points, cell_array, tdim, comm, label)
    p1_spaces = [
        fd.FunctionSpace(mesh, "CG", 1)
        if v[0].ndim == 1
        else fd.VectorFunctionSpace(mesh, "CG", 1, dim=v[0].shape[1])
        for v in values
    ]
    p1 = p1_spaces[0] if len(p1_spaces) == 1 else fd.MixedFunctionSpace(p1_spaces)
    states = []
    for k in range(len(steps)):
        f = fd.Function(p1)
        for sub, per_time in zip(f.subfunctions, values, strict=True):
            sub.dat.data_with_halos[vertex_dofs] = per_time[k][vertex_ids]
        states.append(f)
    meta = dict(metadata or {})
    meta.update({"source": str(label), "format": fmt, "fields": list(names), "cell": cell_type})
    space = p1
    if (family, degree) not in (("CG", 1), ("Lagrange", 1), ("P", 1)):
        space, states, meta["transfer"] = _transfer(p1, states, family, degree, method)
    logger.info(
        "read %d times of %s on %d vertices (%s) from %s",
        len(states),
        ", ".join(names),
        len(points),
        cell_type,
        label,
    )
    return TrajectoryData(space, time_array, states, meta)


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
            files, file_times = _read_pvd(path)
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


def _read_pvd(path: Path) -> tuple[list[Path], list[float]]:
    try:
        root = ET.parse(path).getroot()
    except ET.ParseError as exc:
        raise ValueError(f"{path}: not a readable .pvd (XML) file: {exc}") from exc
    entries = root.findall("./Collection/DataSet")
    if root.tag != "VTKFile" or not entries:
        raise ValueError(f"{path}: not a .pvd collection (no VTKFile/Collection/DataSet)")
    files, times = [], []
    for e in entries:
        if "file" not in e.attrib or "timestep" not in e.attrib:
            raise ValueError(f"{path}: a DataSet lacks its 'file' or 'timestep' attribute")
        file = path.parent / e.attrib["file"]
        if file.suffix.lower() == ".pvtu":
            raise ValueError(f"{path}: parallel pieces (.pvtu) are not supported: {file}")
        files.append(file)
        try:
            times.append(float(e.attrib["timestep"]))
        except ValueError as exc:
            raise ValueError(f"{path}: bad timestep {e.attrib['timestep']!r}") from exc
    return files, times


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


def _select_cells(cells: Any, file: Path) -> tuple[str, np.ndarray, int]:
    """Return the cell type, cells and dimension of the highest-dimensional cell blocks."""
    dims = {}
    for block in cells:
        if block.type in _SUPPORTED_CELLS:
            dims[block.type] = _SUPPORTED_CELLS[block.type]
        elif block.type in _OTHER_CELLS:
            dims[block.type] = _OTHER_CELLS[block.type]
        else:
            raise ValueError(f"{file}: unsupported cell type {block.type!r}")
    if not dims:
        raise ValueError(f"{file}: the mesh has no cells")
    tdim = max(dims.values())
    top = sorted({t for t, d in dims.items() if d == tdim})
    if len(top) > 1:
        raise ValueError(f"{file}: mixed cell types {top} (one cell type per mesh is supported)")
    cell_type = top[0]
    if cell_type not in _SUPPORTED_CELLS:
        raise ValueError(
            f"{file}: unsupported cell type {cell_type!r} (supported: {sorted(_SUPPORTED_CELLS)})"
        )
    ignored = sorted({t for t, d in dims.items() if d < tdim})
    if ignored:
        logger.info("%s: ignoring lower-dimensional cells %s", file, ignored)
    array = np.concatenate([np.asarray(b.data) for b in cells if b.type == cell_type])
    return cell_type, array.astype(np.int64), tdim


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
    """Move P1 states to another element; return the space, the states and the loss report."""
    mesh = mesh_of(p1)
    subspaces = [
        fd.FunctionSpace(mesh, family, degree)
        if len(s.value_shape) == 0
        else fd.VectorFunctionSpace(mesh, family, degree, dim=s.value_shape[0])
        for s in p1.subspaces
    ]
    space = subspaces[0] if len(subspaces) == 1 else fd.MixedFunctionSpace(subspaces)
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
    report = {
        "from": "P1 (vertex data)",
        "to": f"{family}{degree}",
        "method": method,
        "max_relative_l2_loss": worst,
    }
    log = logger.warning if worst > 1e-12 else logger.info
    log(
        "vertex data into %s%d by %s: relative L2 information loss up to %.3e",
        family,
        degree,
        method,
        worst,
    )
    return space, out, report


# --------------------------------------------------------------------------------------------
# NumPy arrays on a periodic grid
# --------------------------------------------------------------------------------------------


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
    if not (np.issubdtype(data.dtype, np.floating) or np.issubdtype(data.dtype, np.integer)):
        raise ValueError(f"grid array: expected real numbers, got dtype {data.dtype}")
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
    dim = len(grid)
    L = np.broadcast_to(np.asarray(lengths, dtype=float), (dim,)).copy()
    if not (np.isfinite(L).all() and (L > 0).all()):
        raise ValueError(f"grid array: lengths must be finite and > 0, got {lengths!r}")
    t = check_times(np.arange(n_times, dtype=float) if times is None else times, "grid array")
    if len(t) != n_times:
        raise ValueError(f"grid array: {len(t)} times for {n_times} time slices (axis 1)")
    meta = dict(metadata or {})
    meta["grid"] = {"shape": [int(n) for n in grid], "lengths": [float(x) for x in L]}
    check_json(meta, "dataset metadata")
    if dim == 1:
        mesh = fd.PeriodicIntervalMesh(grid[0], L[0], comm=comm)
    else:
        mesh = fd.PeriodicRectangleMesh(grid[0], grid[1], L[0], L[1], comm=comm)
    V = fd.FunctionSpace(mesh, "CG", 1)
    index = grid_index(V, grid, L)
    flat = data.reshape(n_traj, n_times, -1)
    trajectories = []
    for i in range(n_traj):
        states = []
        for k in range(n_times):
            f = fd.Function(V)
            f.dat.data_with_halos[:] = flat[i, k, index]
            states.append(f)
        trajectories.append(TrajectoryData(V, t, states, {"index": i}))
    return Dataset(V, trajectories, meta)


def read_grid_hdf5(
    path: str | Path,
    *,
    dataset: str,
    lengths: float | Sequence[float] = 2 * np.pi,
    times: Sequence[float] | None = None,
    comm: Any = fd.COMM_WORLD,
    metadata: dict[str, Any] | None = None,
) -> Dataset:
    """Read periodic grid data stored as one HDF5 array (the paper's layout) into P1.

    Parameters
    ----------
    path
        The HDF5 file (read only, never modified).
    dataset
        The name of the array in the file, of shape ``(trajectories, times, points)`` or
        ``(trajectories, times, nx, ny)``.
    lengths, times, comm, metadata
        As for :func:`from_grid_arrays` (the paper's domain is ``[0, 2 pi]``).

    Raises
    ------
    FileNotFoundError
        If the file does not exist.
    ValueError
        If the file is not HDF5 or has no such array (the message lists the arrays it has).

    """
    path = Path(path)
    if not path.exists():
        raise FileNotFoundError(f"{path}: file not found")
    try:
        with h5py.File(path, "r") as h5:
            names: list[str] = []
            h5.visititems(
                lambda name, obj: names.append(name) if isinstance(obj, h5py.Dataset) else None
            )
            if dataset not in h5 or not isinstance(h5[dataset], h5py.Dataset):
                raise ValueError(f"{path}: no array {dataset!r} (arrays: {names})")
            array = h5[dataset][...]
    except OSError as exc:
        raise ValueError(f"{path}: not a readable HDF5 file ({exc})") from exc
    meta = {"source": str(path), "dataset": dataset, **(metadata or {})}
    return from_grid_arrays(array, lengths=lengths, times=times, comm=comm, metadata=meta)


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
