r"""Trajectory-parallel training: the windows of a minibatch shared by the members of an Ensemble.

Firedrake's :class:`firedrake.Ensemble` splits ``COMM_WORLD`` (``P`` ranks) into ``E`` members of
``P / E`` ranks each: every member holds the whole model and data on its own spatial
communicator (``ensemble.comm``), and the members talk over ``ensemble.ensemble_comm``.
:class:`TrainingEnsemble` says which windows of a minibatch a member rolls out and
differentiates (window ``i`` goes to member ``i mod E``) and sums what the members computed --
losses, counts, parameter gradients, Gauss--Newton matrices -- over ``ensemble_comm``. Since the
minibatches are a function of the seed and the iteration only, every member draws the same one
and, after the sums, takes the same optimiser step: the parameters stay equal on every rank
without ever being broadcast, and equal those of a run on one member up to the order of the
sums (rounding).

Writes (checkpoints, model files) are done by rank 0 of ``COMM_WORLD`` only
(:attr:`TrainingEnsemble.writer`); every member reads them.

Example, 4 ranks as 2 members of 2 spatial ranks::

    ensemble = TrainingEnsemble.split(2)            # fd.Ensemble(COMM_WORLD, 2)
    mesh = fd.UnitSquareMesh(32, 32, comm=ensemble.comm)
    ...                                             # model, data on that mesh
    Trainer(model, train, validation, settings, ensemble=ensemble).run()
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from typing import Any, TypeVar

import firedrake as fd
import numpy as np
import torch
from mpi4py import MPI

__all__ = ["TrainingEnsemble"]

T = TypeVar("T")


class TrainingEnsemble:
    """The members that share a minibatch's windows, and the sums over them.

    Parameters
    ----------
    ensemble
        A Firedrake :class:`~firedrake.Ensemble`; ``None``: one member, whose spatial
        communicator is ``comm``.
    comm
        The spatial communicator of a one-member ensemble (default ``COMM_WORLD``); ignored when
        ``ensemble`` is given.

    """

    def __init__(self, ensemble: fd.Ensemble | None = None, *, comm: Any = None) -> None:
        self.ensemble = ensemble
        if ensemble is not None:
            self.comm = ensemble.comm
            self.ensemble_comm = ensemble.ensemble_comm
            self.global_comm = ensemble.global_comm
        else:
            self.comm = comm if comm is not None else fd.COMM_WORLD
            self.ensemble_comm = MPI.COMM_SELF
            self.global_comm = self.comm

    @classmethod
    def split(cls, members: int, comm: Any = None) -> TrainingEnsemble:
        """Split ``comm`` (default ``COMM_WORLD``) into ``members`` members of equal size.

        Raises
        ------
        ValueError
            If ``members`` is not a positive divisor of the number of ranks (one line).

        """
        comm = comm if comm is not None else fd.COMM_WORLD
        if isinstance(members, bool) or not isinstance(members, int) or members < 1:
            raise ValueError(f"parallel.ensemble must be a positive integer, got {members!r}")
        if comm.size % members:
            raise ValueError(
                f"parallel.ensemble = {members} does not divide the {comm.size} MPI rank(s): run "
                f"on a multiple of {members} ranks (mpiexec -n {members}, {2 * members}, ...)"
            )
        if members == 1:
            return cls(comm=comm)
        return cls(fd.Ensemble(comm, comm.size // members))

    # ------------------------------------------------------------------ who does what
    @property
    def members(self) -> int:
        """The number of members ``E``."""
        return self.ensemble_comm.size

    @property
    def member(self) -> int:
        """The index of the member this rank belongs to, ``0 .. E - 1``."""
        return self.ensemble_comm.rank

    @property
    def writer(self) -> Any:
        """The communicator whose rank 0 alone writes files (``COMM_WORLD`` of the ensemble)."""
        return self.global_comm

    def share(self, items: Sequence[T]) -> list[T]:
        """Return this member's share of ``items``: every ``E``-th, from its own index."""
        return list(items[self.member :: self.members])

    def describe(self) -> str:
        """One line for the log, e.g. ``"2 ensemble members x 1 spatial rank"``."""
        spatial = self.comm.size
        return (
            f"{self.members} ensemble member{'s' if self.members != 1 else ''} x {spatial} "
            f"spatial rank{'s' if spatial != 1 else ''}"
        )

    # ------------------------------------------------------------------ sums over members
    def sum(self, values: Iterable[float] | np.ndarray) -> np.ndarray:
        """Return the element-wise sum of a float64 array over the members (a new array)."""
        local = np.ascontiguousarray(np.asarray(values, dtype=np.float64))
        if self.members == 1:
            return local.copy()
        total = np.empty_like(local)
        self.ensemble_comm.Allreduce(local, total, op=MPI.SUM)
        return total

    def sum_gradients(self, parameters: Iterable[torch.Tensor]) -> None:
        """Sum the parameters' ``.grad`` over the members, in place.

        A parameter without a gradient on a member counts as 0 there; it keeps ``grad = None``
        only when no member gave it one (as a one-member run would leave it).
        """
        if self.members == 1:
            return
        parameters = list(parameters)
        flat = np.concatenate(
            [[float(p.grad is not None) for p in parameters]]
            + [
                (p.grad if p.grad is not None else torch.zeros_like(p)).detach().reshape(-1).numpy()
                for p in parameters
            ]
        )
        total = self.sum(flat)
        offset = len(parameters)
        for p, present in zip(parameters, total[: len(parameters)], strict=True):
            n = p.numel()
            if present:
                values = total[offset : offset + n].reshape(p.shape)
                p.grad = torch.as_tensor(values, dtype=p.dtype).clone()
            offset += n
