"""The model file: architecture JSON and parameters (NumPy), read without pickle.

A model file is a NumPy ``.npz`` archive with the architecture as JSON and one array per
parameter. Everything read from it is bounded (:data:`MAX_CONFIG_BYTES`,
:data:`ARCHITECTURE_LIMITS`, :data:`MAX_PARAMETERS`) and checked against the model it is loaded
into; a bad file gives one line (:class:`ModelFileError`). :func:`femeso.model.onsager.load_model`
rebuilds an :class:`~femeso.model.onsager.OnsagerModel` from one;
:class:`~femeso.peers.blackbox.BlackBoxModel` uses the same format.
"""

from __future__ import annotations

import json
import math
import zipfile
import zlib
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import nn

from femeso._files import atomic_write, first_line, on_rank_zero

__all__ = [
    "FORMAT_VERSION",
    "ModelFileError",
    "check_architecture_size",
    "load_parameters_into",
    "read_model_file",
    "write_model_file",
]

#: The version of the model file format (written into every file, checked on reading).
FORMAT_VERSION = 1

# ---------------------------------------------------------------------- the model file format
#: The largest architecture JSON a model file may hold (real ones are a few kilobytes).
MAX_CONFIG_BYTES = 1 << 20
#: Bounds on the integer sizes of an architecture read from a file, checked before anything is
#: built: a tampered ``width`` of 10**9 would otherwise allocate petabytes.
ARCHITECTURE_LIMITS = {
    "width": 1 << 16,
    "depth": 256,
    "n_states": 64,
    "n_outputs": 1 << 12,
    "n_moments": 1 << 12,
    "dim": 3,
    "polynomial_degree": 256,
    "quadrature_degree": 64,
}
#: The most parameters a model rebuilt from a file may have (1 GiB of float64).
MAX_PARAMETERS = 1 << 27
_PARAM = "param:"


class ModelFileError(ValueError):
    """A model file that cannot be read or does not match: one line naming the file."""

    def __init__(self, path: str | Path, problem: str) -> None:
        super().__init__(f"{path}: {problem}")


def _refuse_constant(name: str) -> Any:
    raise ValueError(f"{name} is not allowed in a model's architecture")


def _model_file_path(path: str | Path) -> Path:
    path = Path(path)
    return path if path.suffix == ".npz" else path.with_suffix(".npz")


def write_model_file(path: str | Path, config: dict, module: nn.Module, comm: Any = None) -> Path:
    """Write a model file: ``module``'s state (NumPy) and its ``config`` (JSON), on rank 0.

    The file is a ``.npz`` (the suffix is added when missing), written to a temporary file beside
    it and renamed (:func:`femeso._files.atomic_write`); no pickle.

    Parameters
    ----------
    path
        The file.
    config
        The architecture (JSON-serialisable, finite numbers only).
    module
        The model whose ``state_dict`` is saved.
    comm
        The communicator whose rank 0 writes (every rank of it returns or raises alike); default:
        that of ``module.mesh``.

    Returns
    -------
    Path
        The file written.

    Raises
    ------
    ValueError
        If a parameter or the architecture holds NaN or infinity; nothing is written.
    OSError
        If the file cannot be written (disk full, file-size limit ...): one line naming it, the
        temporary removed and an existing file of that name unchanged.

    """
    path = _model_file_path(path)

    def write() -> None:
        arrays = {}
        for name, value in module.state_dict().items():
            array = value.detach().cpu().numpy()
            bad = int(array.size - np.count_nonzero(np.isfinite(array)))
            if bad:
                raise ValueError(
                    f"{path}: refusing to save a model whose parameter {name!r} has {bad} NaN or "
                    "infinite value(s)"
                )
            arrays[_PARAM + name] = array
        try:
            text = json.dumps(config, allow_nan=False)
        except ValueError as exc:
            raise ValueError(f"{path}: refusing to save a non-finite architecture value") from exc
        arrays["config"] = np.array(text)
        with atomic_write(path, "the model file") as f:
            np.savez(f, **arrays)

    on_rank_zero(module.mesh.comm if comm is None else comm, write)
    return path


class _ModelFile:
    """A model file opened and checked without loading its weights.

    Checked: a readable ``.npz`` archive of NumPy arrays only (no pickle), an architecture that
    is a JSON object of finite values, and for every weight a header consistent with its stored
    size. ``arrays`` maps each weight's name to its ``(shape, dtype)``.
    """

    def __init__(self, path: str | Path) -> None:
        self.path = path = Path(path)
        if not path.exists():
            raise FileNotFoundError(f"{path}: model file not found")
        if not path.is_file():
            raise ModelFileError(path, "not a femeso model file (not a regular file)")
        self.arrays: dict[str, tuple[tuple[int, ...], np.dtype]] = {}
        with self._archive() as archive:
            infos = archive.infolist()
            names = [info.filename for info in infos]
            if len(set(names)) != len(names):
                raise ModelFileError(path, "corrupt model file (an array is stored twice)")
            if "config.npy" not in names:
                raise ModelFileError(path, "not a femeso model file (no architecture)")
            for info in infos:
                name = info.filename
                if name != "config.npy" and not (name.startswith(_PARAM) and name.endswith(".npy")):
                    raise ModelFileError(
                        path, f"not a femeso model file (unexpected entry {name!r})"
                    )
            self.config = self._read_config(archive, archive.getinfo("config.npy"))
            for info in infos:
                if info.filename != "config.npy":
                    with self._member(archive, info) as f:
                        key = info.filename[len(_PARAM) : -len(".npy")]
                        self.arrays[key] = self._header(f, info, key)

    # -- reading, with every failure of the archive or NumPy turned into one line
    def _archive(self) -> Any:
        return _guarded(self.path, lambda: zipfile.ZipFile(self.path))

    def _member(self, archive: zipfile.ZipFile, info: zipfile.ZipInfo) -> Any:
        return _guarded(self.path, lambda: archive.open(info))

    def _header(self, f: Any, info: zipfile.ZipInfo, key: str) -> tuple[tuple[int, ...], np.dtype]:
        def read() -> tuple[tuple[int, ...], np.dtype, int]:
            version = np.lib.format.read_magic(f)
            if version == (1, 0):
                shape, _, dtype = np.lib.format.read_array_header_1_0(f)
            elif version == (2, 0):
                shape, _, dtype = np.lib.format.read_array_header_2_0(f)
            else:
                raise ModelFileError(self.path, f"array {key!r} has unsupported format {version}")
            return shape, dtype, f.tell()

        shape, dtype, start = _guarded(self.path, read)
        if dtype.hasobject or dtype.kind not in "biuf":
            raise ModelFileError(self.path, f"array {key!r} holds {dtype}, not numbers")
        if math.prod(shape) * dtype.itemsize != info.file_size - start:
            raise ModelFileError(
                self.path, f"corrupt model file (array {key!r}: its size does not match its shape)"
            )
        return tuple(shape), dtype

    def _read_config(self, archive: zipfile.ZipFile, info: zipfile.ZipInfo) -> dict:
        if info.file_size > MAX_CONFIG_BYTES:
            raise ModelFileError(
                self.path,
                f"the architecture takes {info.file_size} bytes (at most {MAX_CONFIG_BYTES})",
            )
        with self._member(archive, info) as f:
            value = _guarded(self.path, lambda: np.lib.format.read_array(f, allow_pickle=False))
        if value.shape != () or value.dtype.kind != "U":
            raise ModelFileError(self.path, "corrupt model file (the architecture is not text)")
        try:
            config = json.loads(str(value[()]), parse_constant=_refuse_constant)
        except (ValueError, RecursionError) as exc:
            raise ModelFileError(
                self.path, f"the architecture is not valid JSON ({first_line(exc)})"
            ) from None
        if not isinstance(config, dict):
            raise ModelFileError(self.path, "the architecture is not a JSON object")
        return config

    # -- the weights
    @property
    def n_values(self) -> int:
        """The number of stored weight values."""
        return sum(math.prod(shape) for shape, _ in self.arrays.values())

    def check_against(self, expected: Mapping[str, torch.Tensor]) -> None:
        """Refuse weights whose names, shapes or dtypes differ from ``expected`` (a state dict)."""
        missing = [k for k in expected if k not in self.arrays]
        if missing:
            raise ModelFileError(self.path, f"weights missing from the file: {_names(missing)}")
        extra = [k for k in self.arrays if k not in expected]
        if extra:
            raise ModelFileError(self.path, f"weights this model does not have: {_names(extra)}")
        for key, tensor in expected.items():
            shape, dtype = self.arrays[key]
            want = tensor.detach().cpu().numpy().dtype
            if shape != tuple(tensor.shape):
                raise ModelFileError(
                    self.path,
                    f"weight {key!r} has shape {shape} in the file, {tuple(tensor.shape)} in "
                    "this model",
                )
            if dtype != want:
                raise ModelFileError(
                    self.path, f"weight {key!r} is {dtype} in the file, {want} in this model"
                )

    def read_weights(self) -> dict[str, torch.Tensor]:
        """Read every weight (call :meth:`check_against` first); refuse NaN and infinity."""
        state = {}
        with self._archive() as archive:
            for key in self.arrays:
                with self._member(archive, archive.getinfo(f"{_PARAM}{key}.npy")) as f:
                    array = _guarded(
                        self.path, lambda f=f: np.lib.format.read_array(f, allow_pickle=False)
                    )
                bad = int(array.size - np.count_nonzero(np.isfinite(array)))
                if bad:
                    raise ModelFileError(
                        self.path, f"weight {key!r} has {bad} NaN or infinite value(s)"
                    )
                state[key] = torch.from_numpy(np.array(array, copy=True))
        return state


def _guarded(path: Path, read: Callable[[], Any]) -> Any:
    """Call ``read``; turn what a damaged archive raises into a one-line :class:`ModelFileError`."""
    try:
        return read()
    except ModelFileError:
        raise
    except (
        zipfile.BadZipFile,
        zlib.error,
        EOFError,
        OSError,
        ValueError,
        NotImplementedError,
        RuntimeError,
    ) as exc:
        if isinstance(exc, FileNotFoundError | PermissionError | IsADirectoryError):
            raise
        raise ModelFileError(
            path, f"not a readable model file (truncated or corrupt: {first_line(exc)})"
        ) from None


def _names(keys: list[str]) -> str:
    shown = ", ".join(repr(k) for k in keys[:3])
    return shown + (f" and {len(keys) - 3} more" if len(keys) > 3 else "")


def _difference(saved: Any, mine: Any, where: str = "") -> str | None:
    """Describe the first difference between two architectures (``None`` when equal)."""
    if isinstance(saved, dict) and isinstance(mine, dict):
        for key in sorted(set(saved) | set(mine)):
            at = f"{where}.{key}" if where else key
            if key not in saved:
                return f"{at} is missing from the file"
            if key not in mine:
                return f"{at} is in the file but not in this model"
            found = _difference(saved[key], mine[key], at)
            if found:
                return found
        return None
    if isinstance(saved, list) and isinstance(mine, list) and len(saved) == len(mine):
        for i, (a, b) in enumerate(zip(saved, mine, strict=True)):
            found = _difference(a, b, f"{where}[{i}]")
            if found:
                return found
        return None
    if saved == mine and isinstance(saved, bool) == isinstance(mine, bool):
        return None
    where = where or "the architecture"
    return f"{where} is {_short(saved)} in the file, {_short(mine)} in this model"


def _short(value: Any) -> str:
    text = json.dumps(value)
    return text if len(text) <= 60 else text[:57] + "..."


def check_architecture_size(path: str | Path, config: dict, n_values: int) -> None:
    """Refuse an architecture whose sizes are out of bounds or exceed the stored weights.

    Called on an architecture read from a file before anything is built from it: every integer
    size in :data:`ARCHITECTURE_LIMITS` must lie in its bounds, and the parameters that the
    networks need at the least must not outnumber the ``n_values`` weights the file holds.

    Raises
    ------
    ValueError
        One line naming the file and the offending entry.

    """
    needed = 0

    def walk(node: Any, where: str) -> None:
        nonlocal needed
        if isinstance(node, list):
            for i, item in enumerate(node):
                walk(item, f"{where}[{i}]")
            return
        if not isinstance(node, dict):
            return
        for key, value in node.items():
            at = f"{where}.{key}" if where else str(key)
            if key in ARCHITECTURE_LIMITS and value is not None:
                top = ARCHITECTURE_LIMITS[key]
                if isinstance(value, bool) or not isinstance(value, int) or not 0 <= value <= top:
                    raise ModelFileError(
                        path,
                        f"implausible architecture: {at} = {_short(value)} (an integer from 0 to "
                        f"{top} expected)",
                    )
            walk(value, at)
        width, depth = node.get("width"), node.get("depth")
        if isinstance(width, int) and isinstance(depth, int) and width > 0 and depth > 0:
            # a network of >= 1 input and output: 3 w + 1 + (depth - 1) (w^2 + w) parameters
            needed += 3 * width + 1 + (depth - 1) * (width * width + width)
        degree = node.get("polynomial_degree")
        if isinstance(degree, int) and degree > 0:
            needed += degree
        if needed > MAX_PARAMETERS:
            raise ModelFileError(
                path, f"implausible architecture: more than {MAX_PARAMETERS} parameters ({where})"
            )

    walk(config, "")
    if needed > n_values:
        raise ModelFileError(
            path,
            f"the architecture needs at least {needed} weight values but the file holds "
            f"{n_values} (weights missing, or a tampered architecture)",
        )


def read_model_file(
    path: str | Path, expected: Mapping[str, torch.Tensor] | None = None
) -> tuple[dict, dict[str, torch.Tensor]]:
    """Return the architecture and the state saved by :func:`write_model_file`.

    Parameters
    ----------
    path
        The model file.
    expected
        A ``state_dict`` the weights must match (names, shapes, dtypes), checked before any
        weight is read.

    Raises
    ------
    FileNotFoundError
        If there is no such file.
    ValueError
        One line naming the file and what is wrong: not a readable ``.npz`` model file (truncated,
        corrupt, pickled data), an architecture that is not a JSON object, weights that do not
        match ``expected`` or that hold NaN or infinity.

    """
    file = _ModelFile(path)
    if expected is not None:
        file.check_against(expected)
    return file.config, file.read_weights()


def load_parameters_into(module: nn.Module, path: str | Path, config: dict) -> None:
    """Load a model file into ``module``, whose architecture is ``config``; all checks first.

    The saved architecture must equal ``config`` (both through :func:`_strip_values`), the
    weights must match ``module.state_dict()`` and be finite; only then is ``module`` changed.

    Raises
    ------
    FileNotFoundError, ValueError
        As :func:`read_model_file`; ``ValueError`` also names the first architecture entry
        that differs.

    """
    file = _ModelFile(path)
    difference = _difference(_strip_values(file.config), config)
    if difference:
        raise ModelFileError(
            file.path, f"saved model architecture differs from this model's: {difference}"
        )
    file.check_against(module.state_dict())
    module.load_state_dict(file.read_weights())


def _strip_values(config: Any) -> Any:
    """Drop entries that are parameter values rather than architecture (constant kappa values)."""
    if isinstance(config, dict):
        return {
            k: _strip_values(v)
            for k, v in config.items()
            if not (
                config.get("type") == "ConstantKappa" and k == "value" and config.get("learnable")
            )
        }
    if isinstance(config, list):
        return [_strip_values(v) for v in config]
    return config
