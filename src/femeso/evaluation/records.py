"""Results as plain data: JSON-ready values, JSON files and numbers for a report's text.

The evaluation functions return plain Python numbers and lists, with ``nan`` where a number does
not exist. :func:`to_jsonable` turns arrays, tensors and NumPy scalars into such values (and
``nan``/``inf`` into ``None``, JSON ``null``), :func:`write_json` writes them on rank 0, and
:func:`format_value` prints a number for a report's text without ever printing ``nan``.
"""

from __future__ import annotations

import json
import math
from pathlib import Path
from typing import Any

import numpy as np
import torch
from mpi4py import MPI

__all__ = ["format_value", "to_jsonable", "write_json"]


def to_jsonable(obj: Any, *, nan_as_none: bool = True) -> Any:
    """Return ``obj`` with arrays as lists and NumPy scalars as Python numbers.

    With ``nan_as_none`` (default) NaN/Inf become ``None``, so that the result can be written
    with ``json.dumps(..., allow_nan=False)``; without it they stay floats (the form in which the
    functions of this module return their numbers).
    """
    if isinstance(obj, dict):
        return {str(k): to_jsonable(v, nan_as_none=nan_as_none) for k, v in obj.items()}
    if isinstance(obj, list | tuple):
        return [to_jsonable(v, nan_as_none=nan_as_none) for v in obj]
    if isinstance(obj, np.ndarray):
        return to_jsonable(obj.tolist(), nan_as_none=nan_as_none)
    if isinstance(obj, torch.Tensor):
        return to_jsonable(obj.detach().cpu().numpy(), nan_as_none=nan_as_none)
    if isinstance(obj, np.bool_ | bool):
        return bool(obj)
    if isinstance(obj, np.integer | int):
        return int(obj)
    if isinstance(obj, np.floating | float):
        return float(obj) if (math.isfinite(obj) or not nan_as_none) else None
    if isinstance(obj, Path):
        return str(obj)
    return obj


def _plain(obj: Any) -> Any:
    """Python lists and numbers, NaN kept (see :func:`to_jsonable`)."""
    return to_jsonable(obj, nan_as_none=False)


def write_json(path: str | Path, obj: Any, *, comm: Any = MPI.COMM_WORLD) -> Path:
    """Write ``to_jsonable(obj)`` as indented JSON on rank 0 of ``comm``; return the path.

    The file's folder is created if it does not exist.
    """
    path = Path(path)
    if comm.rank == 0:
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(json.dumps(to_jsonable(obj), indent=2, allow_nan=False) + "\n")
    comm.barrier()
    return path


def _fmt(x: float | None) -> str:
    return format_value(x, ".3e")


def format_value(x: Any, spec: str = ".2e", missing: str = "-") -> str:
    """Format a number for a report's text: ``missing`` for ``None``, ``nan`` or ``inf``.

    Integers and booleans print as they are, other objects with ``str``; no result is ever
    printed as ``nan``.
    """
    if x is None:
        return missing
    if isinstance(x, bool | np.bool_ | int | np.integer):
        return str(x)
    if isinstance(x, float | np.floating):
        return format(float(x), spec) if math.isfinite(x) else missing
    return str(x)
