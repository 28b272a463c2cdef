"""Trajectories of states on a Firedrake function space, and datasets of them with seeded splits.

A :class:`TrajectoryData` is a sequence of states :math:`u(t_k)` (one ``Function`` per time, of one
field or several on a mixed space) with its strictly increasing times and JSON-serialisable
metadata (what generated it, parameters, seed, ...). A :class:`Dataset` is a set of trajectories
on one function space; :meth:`Dataset.split` cuts it into train/validation/test parts that depend
on the seed alone. Reading and writing live in :mod:`femeso.data.io`.
"""

from __future__ import annotations

import json
from collections.abc import Iterable, Iterator, Sequence
from dataclasses import dataclass, field
from typing import Any, NamedTuple

import firedrake as fd
import numpy as np
from mpi4py import MPI

__all__ = [
    "AllStates",
    "Dataset",
    "DatasetSplit",
    "TrajectoryData",
    "mesh_of",
    "same_space",
    "split_indices",
    "split_metadata",
]


def mesh_of(space: Any) -> Any:
    """Return the mesh of a function space (the single mesh of a mixed space)."""
    mesh = space.mesh()
    return mesh.unique() if hasattr(mesh, "unique") else mesh


def same_space(a: Any, b: Any) -> bool:
    """Return whether two function spaces are on the same mesh object with the same element."""
    return mesh_of(a) is mesh_of(b) and a.ufl_element() == b.ufl_element()


def check_json(metadata: Any, what: str) -> None:
    """Raise ``ValueError`` unless ``metadata`` is a dict that JSON can write (no NaN/Inf)."""
    if not isinstance(metadata, dict):
        raise ValueError(f"{what} must be a dict, got {type(metadata).__name__}")
    try:
        json.dumps(metadata, allow_nan=False)
    except (TypeError, ValueError) as exc:
        raise ValueError(f"{what} is not JSON-serialisable: {exc}") from exc


def check_times(times: Any, what: str) -> np.ndarray:
    """Return ``times`` as a 1-D float array; raise ``ValueError`` unless finite and increasing."""
    t = np.array(times, dtype=float)
    if t.ndim != 1:
        raise ValueError(f"{what}: times must be one-dimensional, got shape {t.shape}")
    if not np.isfinite(t).all():
        raise ValueError(f"{what}: times contain NaN or Inf values: {t[~np.isfinite(t)][:5]}")
    steps = np.diff(t)
    if (steps <= 0).any():
        k = int(np.flatnonzero(steps <= 0)[0]) + 1
        raise ValueError(
            f"{what}: times are not strictly increasing (t[{k}] = {float(t[k])!r} <= "
            f"t[{k - 1}] = {float(t[k - 1])!r})"
        )
    return t


def nonfinite_count(function: fd.Function) -> int:
    """Return the number of NaN/Inf entries of ``function`` on all ranks (collective)."""
    local = sum(
        int(np.size(sub.dat.data_ro) - np.count_nonzero(np.isfinite(sub.dat.data_ro)))
        for sub in function.subfunctions
    )
    return mesh_of(function.function_space()).comm.allreduce(local, op=MPI.SUM)


@dataclass
class TrajectoryData:
    """A trajectory: states ``u(t_k)`` on one function space, their times and metadata.

    Attributes
    ----------
    space
        The function space of every state (scalar, vector or mixed: one field or several).
    times
        Strictly increasing, finite times, one per state.
    states
        One ``Function`` on ``space`` per time. They are referenced, not copied.
    metadata
        JSON-serialisable description: generator, parameters, seed, source file, ...

    Raises
    ------
    ValueError
        On construction, if the times are not finite and strictly increasing, their number
        differs from the number of states, a state is not on ``space``, a state holds NaN/Inf
        values, or the metadata is not JSON-serialisable. The NaN check is collective over the
        mesh's communicator.

    """

    space: Any
    times: np.ndarray
    states: list[fd.Function]
    metadata: dict[str, Any] = field(default_factory=dict)

    def __post_init__(self) -> None:
        self.times = check_times(self.times, "trajectory")
        self.states = list(self.states)
        if len(self.states) == 0:
            raise ValueError("trajectory: no states")
        if len(self.states) != len(self.times):
            raise ValueError(f"trajectory: {len(self.times)} times but {len(self.states)} states")
        for k, state in enumerate(self.states):
            if not isinstance(state, fd.Function) or not same_space(
                state.function_space(), self.space
            ):
                raise ValueError(f"trajectory: state {k} is not a Function on the given space")
        for k, state in enumerate(self.states):
            bad = nonfinite_count(state)
            if bad:
                raise ValueError(
                    f"trajectory: state {k} (t = {float(self.times[k])!r}) has {bad} NaN/Inf values"
                )
        check_json(self.metadata, "trajectory metadata")

    @classmethod
    def stored(
        cls, space: Any, times: np.ndarray, states: Any, metadata: dict[str, Any]
    ) -> TrajectoryData:
        """Return a trajectory whose ``states`` are read when used (a sequence of Functions).

        Nothing is checked or read here: the states were checked when their file was written
        (:func:`femeso.data.io.open_dataset`).
        """
        trajectory = cls.__new__(cls)
        trajectory.space, trajectory.times = space, np.asarray(times, dtype=float)
        trajectory.states, trajectory.metadata = states, metadata
        return trajectory

    @classmethod
    def from_trajectory(
        cls, trajectory: Any, *, metadata: dict[str, Any] | None = None
    ) -> TrajectoryData:
        """Wrap a :class:`femeso.stepping.energy_stable.Trajectory` (a rollout) with metadata."""
        states = list(trajectory.states)
        return cls(states[0].function_space(), trajectory.times, states, dict(metadata or {}))

    def __len__(self) -> int:
        return len(self.states)

    @property
    def mesh(self) -> Any:
        """The mesh of the states."""
        return mesh_of(self.space)


def split_indices(
    n: int, seed: int, fractions: Sequence[float] = (0.7, 0.2, 0.1)
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Return the indices of the train, validation and test parts of ``n`` trajectories.

    The trajectories are permuted by ``numpy.random.default_rng(seed)``; the part sizes are the
    floors of ``fraction * n`` with the remainder given to the largest fractional parts (ties to
    the earlier part). Each index list is sorted. The result depends only on ``n``, ``seed`` and
    ``fractions``: a file importer can split trajectories it has not read yet.

    Raises
    ------
    ValueError
        If there are not three fractions, one is negative, or they do not sum to 1.

    """
    f = np.asarray(fractions, dtype=float)
    if f.shape != (3,) or not np.isfinite(f).all() or (f < 0).any():
        raise ValueError(f"split: fractions must be three numbers >= 0, got {fractions!r}")
    if abs(f.sum() - 1.0) > 1e-12:
        raise ValueError(f"split: fractions must sum to 1, got {fractions!r} (sum {f.sum()})")
    exact = f * n
    sizes = np.floor(exact).astype(int)
    remainder = n - int(sizes.sum())
    order = np.argsort(-(exact - sizes), kind="stable")
    sizes[order[:remainder]] += 1
    perm = np.random.default_rng(seed).permutation(n)
    bounds = np.cumsum(sizes)[:-1]
    train, validation, test = (np.sort(p) for p in np.split(perm, bounds))
    return train, validation, test


def split_metadata(
    part: str, seed: int, fractions: Sequence[float], indices: Sequence[int]
) -> dict[str, Any]:
    """Return the ``"split"`` metadata of one part of a split (what :meth:`Dataset.split` adds)."""
    return {
        "part": part,
        "seed": int(seed),
        "fractions": [float(x) for x in fractions],
        "indices": [int(i) for i in indices],
    }


class AllStates(Sequence):
    """Every state of some trajectories, one after the other, read only when indexed.

    A view, not a list: for trajectories read from disk when used
    (:func:`femeso.data.io.open_dataset`), ``AllStates(data)[::100]`` reads the trajectories of
    the chosen states only.
    """

    def __init__(self, trajectories: Iterable[TrajectoryData]) -> None:
        self._trajectories = list(trajectories)
        self._ends = np.cumsum([len(t) for t in self._trajectories])

    def __len__(self) -> int:
        return int(self._ends[-1]) if len(self._ends) else 0

    def __getitem__(self, k: Any) -> Any:
        if isinstance(k, slice):
            return [self[j] for j in range(*k.indices(len(self)))]
        n = len(self)
        if not -n <= k < n:
            raise IndexError(f"state {k} of {n}")
        k %= n
        i = int(np.searchsorted(self._ends, k, side="right"))
        first = int(self._ends[i - 1]) if i else 0
        return self._trajectories[i].states[k - first]


class DatasetSplit(NamedTuple):
    """The three parts of a :meth:`Dataset.split`."""

    train: Dataset
    validation: Dataset
    test: Dataset


@dataclass
class Dataset:
    """Trajectories on one function space, with metadata and seeded train/validation/test splits.

    Attributes
    ----------
    space
        The function space shared by every trajectory.
    trajectories
        The trajectories (may be empty, e.g. a small part of a split).
    metadata
        JSON-serialisable description of the whole set.

    Raises
    ------
    ValueError
        On construction, if a trajectory is on another mesh ("mixed meshes") or another space on
        the same mesh, or the metadata is not JSON-serialisable.

    """

    space: Any
    trajectories: list[TrajectoryData] = field(default_factory=list)
    metadata: dict[str, Any] = field(default_factory=dict)

    def __post_init__(self) -> None:
        self.trajectories = list(self.trajectories)
        for i, traj in enumerate(self.trajectories):
            if not isinstance(traj, TrajectoryData):
                raise ValueError(f"dataset: trajectory {i} is a {type(traj).__name__}")
            if mesh_of(traj.space) is not mesh_of(self.space):
                raise ValueError(
                    f"dataset: mixed meshes: trajectory {i} is on mesh "
                    f"{mesh_of(traj.space).name!r}, not on the dataset's mesh "
                    f"{mesh_of(self.space).name!r} (one dataset holds one mesh)"
                )
            if not same_space(traj.space, self.space):
                raise ValueError(
                    f"dataset: trajectory {i} is on the space {traj.space.ufl_element()}, not on "
                    f"the dataset's space {self.space.ufl_element()}"
                )
        check_json(self.metadata, "dataset metadata")

    def __len__(self) -> int:
        return len(self.trajectories)

    def __getitem__(self, i: int) -> TrajectoryData:
        return self.trajectories[i]

    def __iter__(self) -> Iterator[TrajectoryData]:
        return iter(self.trajectories)

    @property
    def mesh(self) -> Any:
        """The mesh of the dataset."""
        return mesh_of(self.space)

    def split_indices(
        self, seed: int, fractions: Sequence[float] = (0.7, 0.2, 0.1)
    ) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """Return the trajectory indices of the train, validation and test parts.

        See :func:`split_indices` (of ``len(self)`` trajectories).
        """
        return split_indices(len(self), seed, fractions)

    def split(self, seed: int, fractions: Sequence[float] = (0.7, 0.2, 0.1)) -> DatasetSplit:
        """Split into train/validation/test datasets, reproducibly from ``seed``.

        See :meth:`split_indices`. Each part shares this dataset's space and trajectory objects;
        its metadata is this dataset's plus ``"split"`` (name, seed, fractions, indices).
        """
        parts = []
        for name, idx in zip(
            ("train", "validation", "test"), self.split_indices(seed, fractions), strict=True
        ):
            meta = dict(self.metadata)
            meta["split"] = split_metadata(name, seed, fractions, idx)
            parts.append(Dataset(self.space, [self.trajectories[i] for i in idx], meta))
        return DatasetSplit(*parts)
