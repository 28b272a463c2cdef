r"""Resampling data onto another mesh by Firedrake's cross-mesh interpolation, the loss measured.

A user's simulation output lives on the user's mesh. A job may learn on another one (a coarser
mesh of the same domain, to train faster; the mesh a later study will run on): ``[mesh]`` given
beside ``data.source = "files"``. :func:`resample_dataset` moves every state onto the job's space
by interpolation across meshes (``firedrake.interpolate(u, V)`` with ``u`` on the data's mesh and
``V`` on the job's: every DoF of ``V`` evaluates ``u`` where it sits, located on the data's mesh)
and measures what the move lost, by interpolating the result back onto the data's space:

.. math::

    \text{loss}_i = \max_k \frac{\| u_{ik} - I_{\text{data}} I_{\text{job}} u_{ik} \|_{L^2}}
                             {\| u_{ik} \|_{L^2}}

for trajectory ``i`` over its states ``k``, on the data's mesh. A state the job's mesh cannot
carry (features finer than its cells) shows up there; so does a job mesh smaller than the data's
domain (its interpolant back is defined only inside). A job mesh *larger* than the data's domain
has DoFs where the data say nothing: that is a ``ValueError`` naming both meshes, never a value
made up.

Unlike :mod:`femeso.data.mapping` (the same DoFs in another numbering: an exact copy), this is an
approximation, and it is reported as one: the losses go into each trajectory's
``metadata["resampled"]`` and into the returned report, and the log says how large they are.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import firedrake as fd
import numpy as np
from firedrake.interpolation import DofNotDefinedError

from femeso._log import logger
from femeso.data.trajectories import Dataset, TrajectoryData, mesh_of

__all__ = [
    "WARN_LOSS",
    "ResampleReport",
    "describe_space",
    "resample_dataset",
    "resample_trajectory",
]

#: A resampling that loses more than this relative L2 norm of a state is logged as a warning.
WARN_LOSS = 1e-2


def describe_space(space: Any) -> str:
    """Return ``"<element> on <mesh name> (<n> DoFs, <d>-D)"``: how errors name a space."""
    mesh = mesh_of(space)
    return (
        f"{space.ufl_element()} on mesh {mesh.name!r} ({space.dim()} DoFs, "
        f"{mesh.geometric_dimension}-D)"
    )


@dataclass
class ResampleReport:
    """What a resampling did: from where to where, and the relative L2 loss per trajectory.

    Attributes
    ----------
    source, target
        The two spaces, described (:func:`describe_space`).
    losses
        Per trajectory, the largest relative L2 round-trip loss over its states.

    """

    source: str
    target: str
    losses: list[float]

    @property
    def worst(self) -> float:
        """The largest loss over all trajectories (0 for no trajectory)."""
        return float(max(self.losses, default=0.0))

    def as_dict(self) -> dict[str, Any]:
        """Return the report as JSON-ready values (``source.json``, ``results.json``)."""
        return {
            "from": self.source,
            "to": self.target,
            "method": "interpolation across meshes",
            "measure": "max over states of the relative L2 round-trip loss, on the data's mesh",
            "trajectories": len(self.losses),
            "max_relative_l2_loss": self.worst,
            "mean_relative_l2_loss": float(np.mean(self.losses)) if self.losses else 0.0,
            "per_trajectory": [float(x) for x in self.losses],
        }

    def log(self, label: str) -> None:
        """Log :meth:`line`, as a warning when a state lost more than :data:`WARN_LOSS`."""
        (logger.warning if self.worst > WARN_LOSS else logger.info)("%s: %s", label, self.line())

    def line(self) -> str:
        """One sentence for logs and reports."""
        return (
            f"data resampled from {self.source} onto {self.target} by interpolation: relative "
            f"L2 loss per state up to {self.worst:.3e} (mean over trajectories "
            f"{self.as_dict()['mean_relative_l2_loss']:.3e})"
        )


def _columns_space(space: Any, n: int) -> Any:
    """Return the vector space of ``n`` components of scalar ``space``'s element (one per state)."""
    return fd.VectorFunctionSpace(mesh_of(space), space.ufl_element(), dim=n)


def _pack(states: list[fd.Function], space: Any) -> fd.Function:
    packed = fd.Function(_columns_space(space, len(states)))
    values = packed.dat.data_wo  # (nodes,) for one state, (nodes, n) for more
    values[...] = np.stack([s.dat.data_ro for s in states], axis=1).reshape(values.shape)
    return packed


def _unpack(packed: fd.Function, space: Any) -> list[fd.Function]:
    values = packed.dat.data_ro.reshape(len(packed.dat.data_ro), -1)
    states = []
    for k in range(values.shape[1]):
        state = fd.Function(space)
        state.dat.data_wo[...] = values[:, k]
        states.append(state)
    return states


def _interpolate(function: fd.Function, space: Any, what: str, names: tuple[str, str]) -> Any:
    """Cross-mesh interpolation; a DoF of ``space`` outside ``function``'s mesh is an error.

    ``names``: how the error names the two scalar spaces (from, to).
    """
    try:
        return fd.assemble(fd.interpolate(function, space))
    except DofNotDefinedError:
        raise ValueError(
            f"{what}: {names[1]} has DoFs outside the domain of {names[0]}: the data say nothing "
            "there (a job mesh must lie inside the data's domain)"
        ) from None


def resample_trajectory(
    trajectory: TrajectoryData, space: Any, *, what: str = "trajectory"
) -> tuple[TrajectoryData, float]:
    """Return ``trajectory`` interpolated onto ``space`` (another mesh) and its relative L2 loss.

    Parameters
    ----------
    trajectory
        States of one scalar field on the data's space.
    space
        A scalar space on another mesh of the same geometric dimension, inside the data's domain.
    what
        How errors name the trajectory (its file and index).

    Returns
    -------
    TrajectoryData
        The states on ``space``; the metadata gains ``resampled`` (the loss and both spaces).
    float
        The largest relative L2 round-trip loss over the states (see the module docstring).

    Raises
    ------
    ValueError
        If either space is not scalar, the dimensions differ, or ``space`` has DoFs outside the
        data's domain.

    """
    source = trajectory.space
    for s in (source, space):
        if len(s) != 1 or s.value_shape:
            raise ValueError(
                f"{what}: resampling onto another mesh takes one scalar field, got "
                f"{describe_space(s)}"
            )
    if mesh_of(source).geometric_dimension != mesh_of(space).geometric_dimension:
        raise ValueError(
            f"{what}: cannot resample {describe_space(source)} onto {describe_space(space)}: the "
            "dimensions differ"
        )
    # One interpolation per trajectory, not per state: the states are the components of one
    # vector function (the point location on the other mesh is done once).
    names = (describe_space(source), describe_space(space))
    packed = _pack(trajectory.states, source)
    moved = _interpolate(packed, _columns_space(space, len(trajectory)), what, names)
    back = _interpolate(moved, packed.function_space(), f"{what} (back)", names[::-1])
    states = _unpack(moved, space)
    losses = []
    for k in range(len(trajectory)):
        norm = np.sqrt(fd.assemble(packed[k] ** 2 * fd.dx))
        diff = np.sqrt(fd.assemble((packed[k] - back[k]) ** 2 * fd.dx))
        losses.append(diff / norm if norm > 0 else diff)
    loss = float(max(losses))
    metadata = {
        **trajectory.metadata,
        "resampled": {"from": describe_space(source), "max_relative_l2_loss": loss},
    }
    return TrajectoryData(space, trajectory.times, states, metadata), loss


def resample_dataset(
    dataset: Dataset, space: Any, *, label: str = "dataset"
) -> tuple[Dataset, ResampleReport]:
    """Return ``dataset`` interpolated onto ``space`` and the report of what it lost.

    See :func:`resample_trajectory`; the report (:class:`ResampleReport`) is logged, as a warning
    when a state lost more than :data:`WARN_LOSS` (1 %) of its L2 norm.
    """
    out, losses = [], []
    for i, trajectory in enumerate(dataset):
        where = f"{label}: trajectory {i} ({trajectory.metadata.get('source', 'data')})"
        moved, loss = resample_trajectory(trajectory, space, what=where)
        out.append(moved)
        losses.append(loss)
    report = ResampleReport(describe_space(dataset.space), describe_space(space), losses)
    report.log(label)
    metadata = {**dataset.metadata, "resampled": report.as_dict()}
    return Dataset(space, out, metadata), report
