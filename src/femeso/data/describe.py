"""What femeso sees in users' data files, told without Firedrake or PyTorch.

:func:`describe` opens each file with NumPy, h5py, meshio and the standard library only (so
``femeso inspect`` answers in a fraction of a second) and reports its format, mesh, fields,
trajectories, frames, frame step, value ranges and the problems :func:`femeso.data.io.read_data`
would refuse it for. :func:`describe_lines` formats that report for a terminal.

This module also holds the layout rules that :mod:`femeso.data.io` applies when it reads the
same files (format detection, the paper's grid HDF5 layout, uniform frame steps), so that the
description and the reader cannot disagree.

Formats (the names :func:`detect_format` returns and ``read_data(format=...)`` accepts):

``"xdmf"``
    An XDMF time series (``.xdmf``/``.xmf``, as ``meshio.xdmf.TimeSeriesWriter`` writes it).
``"pvd"``
    A ``.pvd`` collection of ``.vtu`` files with their times.
``"vtu"``
    A single-time meshio file (``.vtu``, ``.vtk``, ``.msh``, ...): one frame, no time.
``"grid_hdf5"``
    The paper's layout: an HDF5 array ``u_sol_all`` of shape ``(trajectories, frames, points,
    fields)`` (1-D) or ``(trajectories, frames, nx, ny, fields)`` (2-D) with ``t_coord``
    ``(frames,)`` and ``x_coord`` ``(points,)`` (and optionally ``y_coord``) beside it; also the
    older bare layout without the fields axis and without coordinates.
``"femeso"``
    A dataset file written by :func:`femeso.data.io.save_dataset` (a Firedrake
    ``CheckpointFile`` with a ``/femeso`` group).
``"checkpoint"``
    A Firedrake ``CheckpointFile`` written by a user's solver (``save_mesh`` and
    ``save_function(f, idx=k, timestepping_info={"time": t})``).
``"npz"``
    NumPy arrays with explicit coordinates; the layout is documented in :mod:`femeso.data.io`.
"""

from __future__ import annotations

import json
import math
import xml.etree.ElementTree as ET
import zipfile
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

__all__ = [
    "FORMATS",
    "GridInfo",
    "describe",
    "describe_lines",
    "detect_format",
    "frame_step",
    "grid_hdf5_info",
]

FORMATS = ("xdmf", "pvd", "vtu", "grid_hdf5", "femeso", "checkpoint", "npz")
PAPER_ARRAY = "u_sol_all"
FEMESO_GROUP = "femeso"
NPZ_RESERVED = ("t", "x", "cells", "period", "cell_type")

# meshio cell types femeso can mesh (vertex order as in VTK/meshio = DMPlex's for these).
SUPPORTED_CELLS = {"line": 1, "triangle": 2, "quad": 2, "tetra": 3}
# Topological dimension of the other meshio cell types (to ignore lower-dimensional blocks).
OTHER_CELLS = {
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
_HDF5_SUFFIXES = (".h5", ".hdf5", ".he5", ".hdf")
# At most this many values of a paper-layout array are read to estimate value ranges.
_SAMPLE_VALUES = 4_000_000
# Relative tolerance of "uniform" steps beyond the rounding of the stored numbers.
STEP_RTOL = 1e-6


# --------------------------------------------------------------------------------------------
# shared rules: steps, formats, the grid HDF5 layout
# --------------------------------------------------------------------------------------------


def _eps(dtype: Any) -> float:
    dt = np.dtype(dtype)
    return float(np.finfo(dt).eps) if np.issubdtype(dt, np.floating) else 0.0


def _snap(value: float, dtype: Any) -> float:
    """Return ``value`` as the shortest decimal that ``dtype`` stores the same (float32 data)."""
    dt = np.dtype(dtype)
    if not np.issubdtype(dt, np.floating) or dt.itemsize >= 8:
        return float(value)
    return float(np.format_float_scientific(dt.type(value), unique=True))


def frame_step(times: Any) -> tuple[float | None, bool, str | None]:
    """Return ``(step, uniform, problem)`` of a sequence of times.

    The step is ``(t[-1] - t[0]) / (n - 1)``; it is uniform when every step differs from it by
    at most ``1e-6`` of it plus the rounding of the stored numbers (float32 times of the paper's
    files are uniform). Times stored in single precision give the shortest decimal step that
    single precision stores the same (``0.01``, not ``0.009999999776``).

    Parameters
    ----------
    times
        One-dimensional, as stored (its dtype sets the rounding allowance).

    Returns
    -------
    tuple
        ``step`` (``None`` for fewer than two times or times that do not increase), whether
        the steps are uniform, and what is wrong (one line, without the file name) or ``None``.

    """
    return _spacing(times, "frames", "t")


def _spacing(values: Any, noun: str, symbol: str) -> tuple[float | None, bool, str | None]:
    raw = np.asarray(values)
    t = raw.astype(float)
    if t.ndim != 1:
        return None, False, f"{noun}: expected one dimension, got shape {t.shape}"
    if not np.isfinite(t).all():
        k = int(np.flatnonzero(~np.isfinite(t))[0])
        return None, False, f"{symbol}[{k}] is {t[k]!r} (NaN/Inf)"
    if len(t) < 2:
        return None, True, None
    steps = np.diff(t)
    if (steps <= 0).any():
        k = int(np.flatnonzero(steps <= 0)[0]) + 1
        return (
            None,
            False,
            f"{symbol} is not strictly increasing ({symbol}[{k}] = {float(t[k])!r} <= "
            f"{symbol}[{k - 1}] = {float(t[k - 1])!r})",
        )
    h = float((t[-1] - t[0]) / (len(t) - 1))
    tol = STEP_RTOL * h + 4 * _eps(raw.dtype) * float(np.abs(t).max())
    if np.abs(steps - h).max() > tol:
        off = np.abs(steps - steps[0]) > tol
        k = int(np.argmax(off)) if off.any() else int(np.argmax(np.abs(steps - h)))
        return (
            h,
            False,
            f"{noun} are not equally spaced: {symbol}[{k + 1}] - {symbol}[{k}] = {steps[k]:.6g} "
            f"but {symbol}[1] - {symbol}[0] = {steps[0]:.6g} (steps from {steps.min():.6g} to "
            f"{steps.max():.6g})",
        )
    return _snap(h, raw.dtype), True, None


def uniform_times(times: Any) -> np.ndarray:
    """Return ``t0 + k * step`` for times that :func:`frame_step` finds uniform (else a copy)."""
    raw = np.asarray(times)
    step, uniform, problem = frame_step(raw)
    if problem is not None or step is None or not uniform:
        return raw.astype(float)
    return _snap(float(raw[0]), raw.dtype) + step * np.arange(len(raw), dtype=float)


def _h5py() -> Any:
    import h5py  # deferred: `femeso inspect` of an .npz file need not load HDF5

    return h5py


def _meshio() -> Any:
    import meshio  # deferred: meshio imports many format modules

    return meshio


def detect_format(path: str | Path) -> str:
    """Return the format of a data file from its extension and, for HDF5, its content.

    Parameters
    ----------
    path
        The file.

    Returns
    -------
    str
        One of :data:`FORMATS`.

    Raises
    ------
    FileNotFoundError
        If the file does not exist.
    ValueError
        If the file is an HDF5 file of no known layout (e.g. the heavy data of an XDMF file)
        or not readable.

    """
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"{path}: no such file")
    suffix = path.suffix.lower()
    if suffix in (".xdmf", ".xmf"):
        return "xdmf"
    if suffix == ".pvd":
        return "pvd"
    if suffix == ".npz" or (suffix not in _HDF5_SUFFIXES and zipfile.is_zipfile(path)):
        return "npz"
    h5py = _h5py()
    if suffix in _HDF5_SUFFIXES or h5py.is_hdf5(path):
        if not h5py.is_hdf5(path):
            raise ValueError(f"{path}: not a readable HDF5 file")
        try:
            with h5py.File(path, "r") as h5:
                if FEMESO_GROUP in h5 and isinstance(h5[FEMESO_GROUP], h5py.Group):
                    return "femeso"
                if PAPER_ARRAY in h5:
                    return "grid_hdf5"
                if "dmplex_storage_version" in h5.attrs or "topologies" in h5:
                    return "checkpoint"
                names = _array_names(h5)
        except OSError as exc:
            raise ValueError(f"{path}: not a readable HDF5 file ({exc})") from exc
        raise ValueError(
            f"{path}: HDF5 file of no known layout (arrays: {names[:6]}); expected a femeso "
            f"dataset (/femeso group), the paper's grid layout ('{PAPER_ARRAY}' with t_coord, "
            "x_coord) or a Firedrake CheckpointFile; the heavy data of an XDMF file is read "
            "through its .xdmf"
        )
    return "vtu"


def _array_names(h5: Any) -> list[str]:
    h5py = _h5py()
    names: list[str] = []
    h5.visititems(lambda name, obj: names.append(name) if isinstance(obj, h5py.Dataset) else None)
    return names


@dataclass(frozen=True)
class GridInfo:
    """The layout of a grid HDF5 file (see :func:`grid_hdf5_info`); no array values are read.

    Attributes
    ----------
    path
        The file.
    dataset
        The name of the array.
    trajectories, frames
        The sizes of the first two axes.
    grid
        ``(points,)`` in 1-D, ``(nx, ny)`` in 2-D.
    fields
        The size of the trailing fields axis (1 without it).
    fields_axis
        Whether the array has a trailing fields axis.
    dtype
        The array's dtype.
    times
        The frame times from ``t_coord`` (``t0 + k dt`` when uniform), ``None`` without it.
    dt
        The frame step from ``t_coord`` (``None`` without it or with one frame).
    uniform
        Whether the frame step is uniform (``None`` without ``t_coord``).
    lengths
        The periods from ``x_coord`` (and ``y_coord``), one per direction; ``None`` without them.
    problems
        What femeso refuses in this file, one line each (without the file name).

    """

    path: Path
    dataset: str
    trajectories: int
    frames: int
    grid: tuple[int, ...]
    fields: int
    fields_axis: bool
    dtype: str
    times: np.ndarray | None
    dt: float | None
    uniform: bool | None
    lengths: tuple[float, ...] | None
    problems: tuple[str, ...]

    @property
    def points(self) -> int:
        """The number of grid points of one frame."""
        return math.prod(self.grid)

    @property
    def period(self) -> float | tuple[float, ...] | None:
        """The period (1-D) or the periods (2-D), from the coordinates."""
        if self.lengths is None:
            return None
        return self.lengths[0] if len(self.lengths) == 1 else self.lengths


def grid_period(coord: Any, n: int, name: str) -> tuple[float | None, str | None]:
    """Return (period, problem) of a uniform periodic grid x_j = j h, j < n (2 pi excluded)."""
    raw = np.asarray(coord)
    if raw.ndim != 1:
        return None, f"{name} has shape {raw.shape}, expected ({n},) (one coordinate per point)"
    if len(raw) != n:
        return None, f"{name} has {len(raw)} values but the array has {n} points on that axis"
    x = raw.astype(float)
    if not np.isfinite(x).all():
        return None, f"{name} contains NaN/Inf values"
    h, uniform, problem = _spacing(raw, "points", name)
    if problem is not None or h is None:
        return None, f"{name}: {problem or 'fewer than two points'} (a uniform grid is required)"
    h = (x[-1] - x[0]) / (n - 1)
    if abs(x[0]) > 1e-6 * h:
        return None, (
            f"{name} starts at {float(x[0])!r}, not at 0 (the grid is x_j = j h with the "
            "period excluded)"
        )
    return _snap_period(n * h, raw.dtype), None


def _snap_period(period: float, dtype: Any) -> float:
    """Return 2 pi for a period that is 2 pi up to the rounding of ``dtype``, else as stored."""
    tol = 16 * _eps(dtype) * period + 1e-12 * period
    if abs(period - 2 * np.pi) <= tol:
        return 2 * np.pi
    return _snap(period, dtype)


def _grid_layout(h5: Any, path: Path, dataset: str | None) -> GridInfo:
    h5py = _h5py()
    name = dataset if dataset is not None else PAPER_ARRAY
    if name not in h5 or not isinstance(h5[name], h5py.Dataset):
        raise ValueError(f"{path}: no array {name!r} (arrays: {_array_names(h5)})")
    dset = h5[name]
    shape = tuple(int(s) for s in dset.shape)
    problems: list[str] = []
    x = h5["x_coord"] if "x_coord" in h5 else None
    y = h5["y_coord"] if "y_coord" in h5 else None
    ndim = len(shape)
    if ndim == 5:
        fields_axis, grid = True, shape[2:4]
    elif ndim == 4 and x is None and shape[3] == 1:  # 1-D with its fields axis, no coordinates
        fields_axis, grid = True, shape[2:3]
    elif ndim == 4 and x is not None:
        two_d = y is not None and x.shape == (shape[2],) and y.shape == (shape[3],)
        fields_axis, grid = (False, shape[2:4]) if two_d else (True, shape[2:3])
    elif ndim in (3, 4):
        fields_axis, grid = False, shape[2:]
    else:
        raise ValueError(
            f"{path}: array {name!r} has shape {shape}; expected (trajectories, frames, points"
            "[, fields]) or (trajectories, frames, nx, ny[, fields])"
        )
    if not (np.issubdtype(dset.dtype, np.floating) or np.issubdtype(dset.dtype, np.integer)):
        problems.append(f"array {name!r} holds {dset.dtype}, not real numbers")
    fields = shape[-1] if fields_axis else 1
    if fields != 1:
        problems.append(
            f"array {name!r} has {fields} fields (last axis); femeso reads one field from this "
            "layout"
        )
    if shape[0] < 1 or shape[1] < 1 or min(grid) < 3:
        problems.append(
            f"array {name!r} of shape {shape} needs >= 1 trajectory, >= 1 frame and >= 3 "
            "points per direction"
        )
    lengths: tuple[float, ...] | None = None
    if x is not None:
        Lx, problem = grid_period(x[()], grid[0], "x_coord")
        if problem:
            problems.append(problem)
        if len(grid) == 2 and y is not None:
            Ly, problem = grid_period(y[()], grid[1], "y_coord")
            if problem:
                problems.append(problem)
        elif len(grid) == 2:
            Ly = None if Lx is None else _snap_period(Lx / grid[0] * grid[1], x.dtype)
        if Lx is not None and (len(grid) == 1 or Ly is not None):
            lengths = (Lx,) if len(grid) == 1 else (Lx, Ly)
    elif y is not None:
        problems.append("y_coord without x_coord")
    times = dt = uniform = None
    if "t_coord" in h5:
        traw = np.asarray(h5["t_coord"][()])
        if traw.shape != (shape[1],):
            problems.append(
                f"t_coord has shape {traw.shape} but the array has {shape[1]} frames (axis 1)"
            )
        else:
            dt, uniform, problem = frame_step(traw)
            if problem is not None:
                problems.append(f"t_coord: {problem}")
            times = uniform_times(traw) if uniform and problem is None else traw.astype(float)
    return GridInfo(
        path=path,
        dataset=name,
        trajectories=shape[0],
        frames=shape[1],
        grid=tuple(grid),
        fields=fields,
        fields_axis=fields_axis,
        dtype=str(dset.dtype),
        times=times,
        dt=dt,
        uniform=uniform,
        lengths=lengths,
        problems=tuple(problems),
    )


def grid_hdf5_info(
    path: str | Path, *, dataset: str | None = None, strict: bool = True
) -> GridInfo:
    """Return the layout of a grid HDF5 file without reading its array.

    Reads the shape of the array, ``t_coord``, ``x_coord`` and ``y_coord``: the number of
    trajectories, frames and points, the frame step and the period (see :class:`GridInfo`).

    Parameters
    ----------
    path
        The HDF5 file.
    dataset
        The name of the array (default ``"u_sol_all"``, the paper's).
    strict
        Raise on the first problem of :attr:`GridInfo.problems` (default); otherwise return them.

    Returns
    -------
    GridInfo

    Raises
    ------
    FileNotFoundError
        If the file does not exist.
    ValueError
        If it is not a readable HDF5 file, has no such array or an array of another rank; with
        ``strict``, also for a non-uniform ``t_coord`` or ``x_coord``, more than one field, or
        coordinates that do not match the array. The message starts with the file name.

    """
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"{path}: no such file")
    h5py = _h5py()
    if not h5py.is_hdf5(path):
        raise ValueError(f"{path}: not a readable HDF5 file")
    try:
        with h5py.File(path, "r") as h5:
            info = _grid_layout(h5, path, dataset)
    except OSError as exc:
        raise ValueError(f"{path}: not a readable HDF5 file ({exc})") from exc
    if strict and info.problems:
        raise ValueError(f"{path}: {info.problems[0]}")
    return info


def read_pvd(path: Path) -> tuple[list[Path], list[float]]:
    """Return the files and times of a ``.pvd`` collection; ``ValueError`` if it is malformed."""
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


def select_cells(cells: Any, file: Path) -> tuple[str, np.ndarray, int]:
    """Return the cell type, cells and dimension of the highest-dimensional cell blocks.

    Raises ``ValueError`` (naming ``file``) for unknown, mixed or unsupported cell types.
    """
    dims = {}
    for block in cells:
        if block.type in SUPPORTED_CELLS:
            dims[block.type] = SUPPORTED_CELLS[block.type]
        elif block.type in OTHER_CELLS:
            dims[block.type] = OTHER_CELLS[block.type]
        else:
            raise ValueError(f"{file}: unsupported cell type {block.type!r}")
    if not dims:
        raise ValueError(f"{file}: the mesh has no cells")
    tdim = max(dims.values())
    top = sorted({t for t, d in dims.items() if d == tdim})
    if len(top) > 1:
        raise ValueError(f"{file}: mixed cell types {top} (one cell type per mesh is supported)")
    cell_type = top[0]
    if cell_type not in SUPPORTED_CELLS:
        raise ValueError(
            f"{file}: unsupported cell type {cell_type!r} (supported: {sorted(SUPPORTED_CELLS)})"
        )
    array = np.concatenate([np.asarray(b.data) for b in cells if b.type == cell_type])
    return cell_type, array.astype(np.int64), tdim


# --------------------------------------------------------------------------------------------
# describe
# --------------------------------------------------------------------------------------------


def describe(
    paths: str | Path | Sequence[str | Path],
    *,
    format: str = "auto",  # noqa: A002  (the name users know from read_data)
    fields: Sequence[str] | None = None,
) -> list[dict[str, Any]]:
    """Tell what is in data files, without Firedrake or PyTorch.

    Parameters
    ----------
    paths
        One file or a list of files (globs expanded by the caller).
    format
        ``"auto"`` (from the extension and content, see :func:`detect_format`) or one of
        :data:`FORMATS` for every file.
    fields
        The fields femeso would read (default: what the reader picks); a missing one is listed
        as a problem.

    Returns
    -------
    list of dict
        One dict per file, JSON-serialisable, with the keys ``path``, ``format``, ``cell_type``,
        ``cells``, ``points``, ``dimension``, ``boundary_tags``, ``fields`` (name to number of
        components), ``trajectories``, ``frames``, ``frame_step``, ``uniform_step``,
        ``time_range``, ``value_ranges`` (field to ``[min, max]``), ``value_ranges_from``
        (``"all values"`` or which sample), ``period`` (grid files) and ``problems`` (what
        femeso refuses, one line each; empty when the file is readable). A file that cannot be
        read at all has its reason in ``problems``.

    """
    if isinstance(paths, str | Path):
        paths = [paths]
    infos = []
    for p in paths:
        path = Path(p)
        info = _blank(path)
        try:
            fmt = detect_format(path) if format == "auto" else format
            if fmt not in FORMATS:
                raise ValueError(f"{path}: unknown format {fmt!r} (known: {list(FORMATS)})")
            info["format"] = fmt
            _DESCRIBERS[fmt](path, info, fields)
        except (OSError, ValueError, KeyError) as exc:
            message = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
            prefix = f"{path}: "
            info["problems"].append(
                message[len(prefix) :] if message.startswith(prefix) else message
            )
        infos.append(info)
    return infos


def _blank(path: Path) -> dict[str, Any]:
    return {
        "path": str(path),
        "format": None,
        "cell_type": None,
        "cells": None,
        "points": None,
        "dimension": None,
        "boundary_tags": {},
        "fields": {},
        "trajectories": None,
        "frames": None,
        "frame_step": None,
        "uniform_step": None,
        "time_range": None,
        "value_ranges": {},
        "value_ranges_from": None,
        "problems": [],
        "notes": [],
    }


def _set_times(info: dict[str, Any], times: Any, where: str = "") -> None:
    t = np.asarray(times, dtype=float)
    if t.size:
        info["time_range"] = [float(t.min()), float(t.max())]
    step, uniform, problem = frame_step(times)
    info["frame_step"] = step
    info["uniform_step"] = bool(uniform) if step is not None else None
    if problem is not None:
        info["problems"].append(f"{where}{problem}")


class _Ranges:
    """Running min/max and NaN/Inf counts per field."""

    def __init__(self) -> None:
        self.lo: dict[str, float] = {}
        self.hi: dict[str, float] = {}
        self.bad: dict[str, tuple[int, str]] = {}

    def add(self, name: str, values: Any, where: str) -> None:
        a = np.asarray(values)
        if not (np.issubdtype(a.dtype, np.floating) or np.issubdtype(a.dtype, np.integer)):
            return
        finite = np.isfinite(a)
        nbad = int(a.size - np.count_nonzero(finite))
        if nbad and name not in self.bad:
            self.bad[name] = (nbad, where)
        if nbad < a.size:
            good = a[finite] if nbad else a
            self.lo[name] = min(self.lo.get(name, math.inf), float(good.min()))
            self.hi[name] = max(self.hi.get(name, -math.inf), float(good.max()))

    def store(self, info: dict[str, Any], source: str) -> None:
        info["value_ranges"] = {n: [self.lo[n], self.hi[n]] for n in sorted(self.lo)}
        info["value_ranges_from"] = source
        for name, (_, where) in sorted(self.bad.items()):
            info["problems"].append(f"field {name!r} has NaN/Inf values (first at {where})")


def _components(shape: tuple[int, ...], npoints: int) -> int:
    return 1 if len(shape) == 1 else int(math.prod(shape[1:])) if shape[0] == npoints else 0


def _check_fields(info: dict[str, Any], available: Iterable[str], fields: Any, where: str) -> None:
    names = set(available)
    for name in fields or ():
        if name not in names:
            info["problems"].append(f"no field {name!r}{where}; available: {sorted(names)}")


def _mesh_info(info: dict[str, Any], points: Any, cells: Any, cell_data: Any, path: Path) -> None:
    points = np.asarray(points)
    info["points"] = int(len(points))
    if points.ndim == 2:
        gdim = points.shape[1]
        while gdim > 1 and not points[:, gdim - 1].any():
            gdim -= 1
        info["dimension"] = int(gdim)
    blocks = {}
    for block in cells:
        blocks[block.type] = blocks.get(block.type, 0) + len(block.data)
    info["cell_blocks"] = blocks
    try:
        cell_type, array, _ = select_cells(cells, path)
        info["cell_type"], info["cells"] = cell_type, int(len(array))
    except ValueError as exc:
        top = max(blocks, key=lambda t: SUPPORTED_CELLS.get(t, OTHER_CELLS.get(t, 9)), default=None)
        info["cell_type"] = top
        info["cells"] = blocks.get(top) if top else 0
        info["problems"].append(str(exc).removeprefix(f"{path}: "))
    tags: dict[str, dict[str, list[int]]] = {}
    for key, arrays in (cell_data or {}).items():
        for block, values in zip(cells, arrays, strict=False):
            v = np.asarray(values)
            if v.ndim == 1 and np.issubdtype(v.dtype, np.integer) and v.size:
                tags.setdefault(key, {})[block.type] = [int(t) for t in np.unique(v)[:50]]
    info["boundary_tags"] = tags


def _describe_xdmf(path: Path, info: dict[str, Any], fields: Any) -> None:
    meshio = _meshio()
    try:
        with meshio.xdmf.TimeSeriesReader(str(path)) as reader:
            points, cells = reader.read_points_cells()
            steps = [reader.read_data(k) for k in range(reader.num_steps)]
    except Exception as exc:  # noqa: BLE001  (meshio raises many types on bad files)
        raise ValueError(
            f"{path}: not a readable XDMF time series: {type(exc).__name__}: {exc}"
        ) from exc
    cell_data = steps[0][2] if steps else {}
    _mesh_info(info, points, cells, cell_data, path)
    _series(
        info, [(t, pd, f"time index {k} (t = {t!r})") for k, (t, pd, _) in enumerate(steps)], fields
    )


def _series(info: dict[str, Any], steps: list, fields: Any) -> None:
    info["trajectories"] = 1
    info["frames"] = len(steps)
    if not steps:
        info["problems"].append("no time steps")
        return
    npoints = info["points"] or 0
    info["fields"] = {n: _components(np.shape(a), npoints) for n, a in sorted(steps[0][1].items())}
    if not info["fields"]:
        info["problems"].append("no point data")
    ranges = _Ranges()
    for _, point_data, where in steps:
        for name, values in point_data.items():
            ranges.add(name, values, where)
        missing = [n for n in (fields or info["fields"]) if n not in point_data]
        for name in missing:
            info["problems"].append(
                f"no point data {name!r} at {where}; available: {sorted(point_data)}"
            )
    ranges.store(info, "all values")
    if steps[0][0] is not None:
        _set_times(info, [s[0] for s in steps])


def _describe_pvd(path: Path, info: dict[str, Any], fields: Any) -> None:
    meshio = _meshio()
    files, times = read_pvd(path)
    steps = []
    mesh = None
    for k, (file, t) in enumerate(zip(files, times, strict=True)):
        if not file.is_file():
            raise FileNotFoundError(f"{path}: the file {file} of time index {k} does not exist")
        try:
            m = meshio.read(str(file))
        except (Exception, SystemExit) as exc:  # noqa: BLE001
            raise ValueError(f"{path}: {file} is not a readable mesh file: {exc}") from exc
        if mesh is None:
            mesh = m
            _mesh_info(info, m.points, m.cells, m.cell_data, file)
        elif m.points.shape != mesh.points.shape or not np.array_equal(m.points, mesh.points):
            info["problems"].append(f"{file} (time index {k}) is on another mesh than {files[0]}")
        steps.append((t, m.point_data, f"time index {k} (t = {t!r}, {file.name})"))
    _series(info, steps, fields)


def _describe_vtu(path: Path, info: dict[str, Any], fields: Any) -> None:
    meshio = _meshio()
    try:
        m = meshio.read(str(path))
    except (Exception, SystemExit) as exc:  # noqa: BLE001
        raise ValueError(f"{path}: not a readable mesh file: {type(exc).__name__}: {exc}") from exc
    _mesh_info(info, m.points, m.cells, m.cell_data, path)
    if m.field_data:
        info["tag_names"] = {
            str(k): [int(x) for x in np.ravel(v)] for k, v in sorted(m.field_data.items())
        }
    _series(info, [(None, m.point_data, "the single frame")], fields)
    info["notes"].append("a single-time file carries no time: read a list of them with dt=")


def _describe_grid(path: Path, info: dict[str, Any], fields: Any) -> None:
    h5py = _h5py()
    name = fields[0] if fields else None
    if fields and len(fields) > 1:
        info["problems"].append(f"grid files hold one field; got fields={list(fields)}")
    with h5py.File(path, "r") as h5:
        g = _grid_layout(h5, path, name)
        dset = h5[g.dataset]
        info["points"] = g.points
        info["grid"] = list(g.grid)
        info["dimension"] = len(g.grid)
        info["cell_type"] = "periodic interval" if len(g.grid) == 1 else "periodic quadrilateral"
        info["cells"] = g.points
        info["fields"] = {g.dataset: g.fields}
        info["dtype"] = g.dtype
        info["trajectories"] = g.trajectories
        info["frames"] = g.frames
        info["period"] = None if g.lengths is None else list(g.lengths)
        info["problems"].extend(g.problems)
        if g.times is not None:
            info["time_range"] = [float(g.times[0]), float(g.times[-1])]
            info["frame_step"], info["uniform_step"] = g.dt, g.uniform
        else:
            info["problems"].append("no t_coord: pass the times (read_grid_hdf5(times=...))")
        if g.lengths is None and "x_coord" not in h5:
            info["problems"].append("no x_coord: the period is assumed 2 pi unless given")
        # A bounded sample: whole trajectories, evenly spread, at most _SAMPLE_VALUES values.
        per = max(1, math.prod(dset.shape[1:]))
        n = int(min(g.trajectories, max(1, _SAMPLE_VALUES // per)))
        picks = sorted({int(i) for i in np.linspace(0, g.trajectories - 1, n).round()})
        ranges = _Ranges()
        for i in picks:
            block = np.asarray(dset[i])
            bad = ~np.isfinite(block)
            where = f"trajectory {i}"
            if bad.any():
                where += f", frame {int(np.argwhere(bad)[0][0])}"
            ranges.add(g.dataset, block, where)
        whole = len(picks) == g.trajectories
        ranges.store(
            info,
            "all values"
            if whole
            else f"a sample of {len(picks)} of {g.trajectories} trajectories ({picks[:5]}...)",
        )
        if not whole:
            info["notes"].append(
                f"NaN/Inf checked in {len(picks)} sampled trajectories only; the reader checks "
                "every trajectory it reads"
            )


def _describe_femeso(path: Path, info: dict[str, Any], fields: Any) -> None:
    h5py = _h5py()
    with h5py.File(path, "r") as h5:
        group = h5[FEMESO_GROUP]
        if "metadata_json" not in group.attrs:
            raise ValueError(f"{path}: /femeso group without metadata: not written by save_dataset")
        raw = group.attrs["metadata_json"]
        header = json.loads(raw.decode() if isinstance(raw, bytes) else raw)
        entries = header.get("trajectories", [])
        info["trajectories"] = len(entries)
        frames = [int(e.get("n_states", 0)) for e in entries]
        info["frames"] = frames[0] if len(set(frames)) == 1 else frames
        meta_fields = {tuple(e.get("metadata", {}).get("fields", ())) for e in entries}
        names = [n for f in meta_fields for n in f] or ["u"]
        info["fields"] = {n: None for n in dict.fromkeys(names)}
        info["dataset_metadata"] = header.get("metadata", {})
        if "grid" in info["dataset_metadata"]:
            info["grid"] = info["dataset_metadata"]["grid"].get("shape")
            info["period"] = info["dataset_metadata"]["grid"].get("lengths")
        _checkpoint_mesh(h5, info, header.get("mesh_name"))
        steps = set()
        for i, e in enumerate(entries):
            key = f"{FEMESO_GROUP}/times/{e['function']}"
            if key in group.file:
                times = group.file[key][()]
                step, uniform, problem = frame_step(times)
                if problem is not None:
                    info["problems"].append(f"trajectory {i}: {problem}")
                if step is not None:
                    steps.add(step)
                if i == 0:
                    _set_times(info, times)
        if len(steps) > 1:
            info["problems"].append(
                f"the trajectories have different frame steps {sorted(steps)[:4]}"
            )
        functions = _checkpoint_functions(h5)
        field = names[0] if len(names) == 1 else None
        ranges = _Ranges()
        budget = _SAMPLE_VALUES
        read = 0
        for i, e in enumerate(entries):
            data = functions.get(e["function"], {}).get("data")
            if data is not None and e.get("layout") == "columns":
                # one Function per trajectory, a component per state: (DoFs * states,)
                data = np.asarray(data).reshape(-1, int(e.get("n_states", 1))).T
            if field is None or data is None or data.ndim != 2 or budget < data.size:
                break
            for k in range(data.shape[0]):
                ranges.add(field, data[k], f"trajectory {i}, state {k}")
            budget -= data.size
            read += 1
        if read:
            whole = read == len(entries)
            sample = "all" if whole else f"the first {read} of {len(entries)}"
            ranges.store(info, f"{sample} trajectories (degrees of freedom)")
        else:
            info["value_ranges_from"] = "not read"


_PLEX_CELLS = {
    (1, 2): "interval",
    (2, 3): "triangle",
    (2, 4): "quadrilateral",
    (3, 4): "tetrahedron",
}


def _checkpoint_mesh(h5: Any, info: dict[str, Any], mesh_name: str | None) -> list[str]:
    """Fill the mesh entries of ``info`` from a CheckpointFile's DMPlex; return the mesh names."""
    names: list[str] = []
    tops = h5.get("topologies")
    if tops is None:
        return names
    for top in tops.values():
        meshes = top.get("firedrake_meshes")
        here = list(meshes.keys()) if meshes is not None else []
        names.extend(here)
        topo = top.get("topology")
        if topo is None or (mesh_name is not None and mesh_name not in here):
            continue
        tdim = int(topo.attrs.get("cell_dim", -1))
        strata = topo.get("strata")
        if strata is None or "0" not in strata or str(tdim) not in strata:
            continue
        info["dimension"] = tdim
        info["points"] = int(strata["0/cone_sizes"].shape[0])
        cells = strata[f"{tdim}/cone_sizes"]
        info["cells"] = int(cells.shape[0])
        if cells.shape[0]:
            info["cell_type"] = _PLEX_CELLS.get((tdim, int(np.asarray(cells[0]).ravel()[0])))
        labels = top.get("labels", {})
        tags = {
            name: {kind: [int(k) for k in sorted(labels[name].keys(), key=_int_or_text)]}
            for name, kind in (("Face Sets", "facets"), ("Cell Sets", "cells"))
            if name in labels
        }
        info["boundary_tags"] = tags
    return names


def _int_or_text(key: str) -> tuple[int, Any]:
    return (0, int(key)) if key.lstrip("-").isdigit() else (1, key)


def _checkpoint_functions(h5: Any) -> dict[str, dict[str, Any]]:
    """Per (user) function of a CheckpointFile: element, vector path, timestepping history."""
    h5py = _h5py()
    found: dict[str, dict[str, Any]] = {}
    vecs: dict[str, Any] = {}

    def visit(name: str, obj: Any) -> None:
        parts = name.split("/")
        if not isinstance(obj, h5py.Group) or len(parts) < 2:
            return
        if parts[-2] == "firedrake_functions" and "firedrake_mixed_meshes" not in parts:
            space = h5["/".join(parts[:-2])]
            entry = {
                "element": str(space.attrs.get("firedrake_ufl_element_repr", "")),
                "vec": str(obj.attrs.get("firedrake_vec", parts[-1])),
                "history": {},
            }
            ts = obj.get("firedrake_timestepping")
            if ts is not None:
                entry["history"] = {
                    k.removeprefix("firedrake_timestepping_history_"): np.asarray(v)
                    for k, v in ts.attrs.items()
                }
            found[parts[-1]] = entry
        elif parts[-2] == "vecs":
            vecs[parts[-1]] = obj

    h5.visititems(visit)
    for entry in found.values():
        vec = vecs.get(entry["vec"])
        if vec is not None:
            entry["data"] = vec.get(entry["vec"])
            ts = vec.get("firedrake_timestepping")
            if ts is not None and "firedrake_timestepping_history_index" in ts.attrs:
                entry["history"]["index"] = np.asarray(
                    ts.attrs["firedrake_timestepping_history_index"]
                )
    return {k: v for k, v in found.items() if not k.startswith("firedrake_")}


def _describe_checkpoint(path: Path, info: dict[str, Any], fields: Any) -> None:
    with _h5py().File(path, "r") as h5:
        meshes = _checkpoint_mesh(h5, info, None)
        info["meshes"] = meshes
        if len(meshes) != 1:
            info["problems"].append(f"{len(meshes)} meshes {meshes}; femeso reads a file with one")
        functions = _checkpoint_functions(h5)
        names = sorted(functions)
        info["fields"] = {n: None for n in names}
        info["elements"] = {n: functions[n]["element"] for n in names}
        _check_fields(info, names, fields, "")
        if not names:
            info["problems"].append("no saved functions")
            return
        chosen = [n for n in (fields or names) if n in functions]
        if not fields and len(names) > 1:
            info["problems"].append(f"several functions {names}: choose with fields=")
            chosen = names[:1]
        info["trajectories"] = 1
        ranges = _Ranges()
        for name in chosen:
            history = functions[name]["history"]
            if "index" not in history:
                info["problems"].append(
                    f"function {name!r} was not saved with save_function(..., idx=k)"
                )
                continue
            info["frames"] = len(history["index"])
            if "time" in history:
                _set_times(info, history["time"])
            else:
                info["problems"].append(
                    "no times saved (save_function(..., timestepping_info={'time': t})): pass dt="
                )
            data = functions[name].get("data")
            if data is not None and data.ndim == 2:
                n = max(1, min(data.shape[0], _SAMPLE_VALUES // max(1, data.shape[1])))
                for k in range(n):
                    ranges.add(name, data[k], f"index {int(history['index'][k])}")
                sample = "all values" if n == data.shape[0] else f"the first {n} indices"
                info["value_ranges_from"] = f"{sample} (degrees of freedom)"
        ranges.store(info, info["value_ranges_from"] or "not read")


def _describe_npz(path: Path, info: dict[str, Any], fields: Any) -> None:
    try:
        npz = np.load(path, allow_pickle=False)
    except Exception as exc:  # noqa: BLE001
        raise ValueError(f"{path}: not a readable .npz file: {type(exc).__name__}: {exc}") from exc
    with npz:
        keys = list(npz.files)
        arrays = {k: npz[k] for k in keys}
    info["arrays"] = {k: list(a.shape) for k, a in arrays.items()}
    value_names = [k for k in keys if k not in NPZ_RESERVED]
    chosen = list(fields) if fields else (["u"] if "u" in value_names else value_names[:1])
    if not fields and "u" not in value_names and len(value_names) > 1:
        info["problems"].append(f"several value arrays {value_names}: choose with fields=")
    _check_fields(info, value_names, fields, "")
    x = arrays.get("x")
    if x is None:
        info["problems"].append("no 'x' (point coordinates)")
    elif x.ndim == 1:
        info["points"], info["dimension"] = int(len(x)), 1
        info["cell_type"], info["cells"] = "periodic interval", int(len(x))
        period, problem = grid_period(x, len(x), "x")
        if problem:
            info["problems"].append(problem)
        if "period" in arrays and period is not None:
            given = float(arrays["period"])
            if abs(given - period) > 1e-9 * period:
                info["problems"].append(
                    f"period {given!r} is not len(x) * spacing = {period!r} (x_j = j h, the "
                    "period excluded)"
                )
        info["period"] = period
    else:
        info["points"], info["dimension"] = int(len(x)), int(x.shape[1]) if x.ndim == 2 else None
        cells = arrays.get("cells")
        if cells is None:
            info["problems"].append("'x' of shape (points, dim) needs 'cells'")
        else:
            info["cells"] = int(len(cells))
            cell_type = str(arrays["cell_type"]) if "cell_type" in arrays else None
            by_columns = {2: "line", 3: "triangle", 4: "tetra"}
            info["cell_type"] = cell_type or by_columns.get(cells.shape[-1] if cells.ndim else 0)
            if info["cell_type"] not in SUPPORTED_CELLS:
                info["problems"].append(f"unsupported cells of shape {cells.shape}")
    ranges = _Ranges()
    for name in chosen:
        if name not in arrays:
            continue
        a = arrays[name]
        info["fields"][name] = 1
        if a.ndim == 2:
            a = a[None]
        if a.ndim != 3:
            info["problems"].append(
                f"{name!r} has shape {arrays[name].shape}; expected (trajectories, frames, "
                "points) or (frames, points)"
            )
            continue
        info["trajectories"], info["frames"] = int(a.shape[0]), int(a.shape[1])
        if info["points"] is not None and a.shape[2] != info["points"]:
            info["problems"].append(f"{name!r} has {a.shape[2]} points, x has {info['points']}")
        bad = np.argwhere(~np.isfinite(a))
        ranges.add(name, a, f"trajectory {bad[0][0]}, frame {bad[0][1]}" if len(bad) else "")
    ranges.store(info, "all values")
    if "t" in arrays:
        _set_times(info, arrays["t"], "t: ")
        if info["frames"] is not None and len(arrays["t"]) != info["frames"]:
            info["problems"].append(f"t has {len(arrays['t'])} times for {info['frames']} frames")
    else:
        info["problems"].append("no 't' (frame times)")


_DESCRIBERS = {
    "xdmf": _describe_xdmf,
    "pvd": _describe_pvd,
    "vtu": _describe_vtu,
    "grid_hdf5": _describe_grid,
    "femeso": _describe_femeso,
    "checkpoint": _describe_checkpoint,
    "npz": _describe_npz,
}


def _fmt(x: Any) -> str:
    return f"{x:.6g}" if isinstance(x, float) else str(x)


def describe_lines(infos: Sequence[dict[str, Any]]) -> list[str]:
    """Format the result of :func:`describe` as lines for a terminal, one block per file.

    Parameters
    ----------
    infos
        What :func:`describe` returned.

    Returns
    -------
    list of str
        Lines without trailing newlines; problems are prefixed with ``refused:``.

    """
    lines = []
    for info in infos:
        lines.append(f"{info['path']}: {info['format'] or 'unreadable'}")
        if info.get("cells") is not None or info.get("points") is not None:
            mesh = f"  mesh: {info.get('points')} points, {info.get('cells')} cells"
            if info.get("cell_type"):
                mesh += f" ({info['cell_type']}"
                mesh += f", dimension {info['dimension']})" if info.get("dimension") else ")"
            if info.get("grid"):
                mesh += f", grid {info['grid']}"
            if info.get("period") is not None:
                period = info["period"]
                text = (
                    ", ".join(_fmt(p) for p in period) if isinstance(period, list) else _fmt(period)
                )
                mesh += f", period {text}"
            lines.append(mesh)
        if info.get("boundary_tags"):
            tags = "; ".join(
                f"{key}: " + ", ".join(f"{block} {vals}" for block, vals in per.items())
                for key, per in info["boundary_tags"].items()
            )
            lines.append(f"  tags: {tags}")
        if info.get("fields"):
            elements = info.get("elements", {})
            parts = [
                (n if c in (None, 1) else f"{n} ({c} components)")
                + (f" on {elements[n]}" if elements.get(n) else "")
                for n, c in info["fields"].items()
            ]
            lines.append(f"  fields: {', '.join(parts)}")
        if info.get("trajectories") is not None:
            line = f"  trajectories: {info['trajectories']}, frames: {info['frames']}"
            if info.get("frame_step") is not None:
                kind = "uniform" if info.get("uniform_step") else "NOT uniform"
                line += f", frame step {_fmt(info['frame_step'])} ({kind})"
            if info.get("time_range"):
                line += f", t in [{_fmt(info['time_range'][0])}, {_fmt(info['time_range'][1])}]"
            lines.append(line)
        for name, (lo, hi) in info.get("value_ranges", {}).items():
            lines.append(f"  {name} in [{_fmt(lo)}, {_fmt(hi)}] ({info.get('value_ranges_from')})")
        for note in info.get("notes", []):
            lines.append(f"  note: {note}")
        for problem in info["problems"]:
            lines.append(f"  refused: {problem}")
        if not info["problems"]:
            lines.append("  readable by femeso")
    return lines
