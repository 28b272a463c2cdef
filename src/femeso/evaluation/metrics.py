r"""Norms, errors and their scoring: what a state is measured by, and how errors are averaged.

:func:`l2_norm` and :func:`relative_l2_error` (assembled on the mesh), :func:`nodal_relative_rmse`
(the paper's metric), :func:`score_errors` (the rule by which failed and diverged rollouts count),
and the per-state and per-sequence quantities that rollouts record (masses, value ranges, energy
increases) and that fits are judged by (:math:`R^2`).

The two error metrics
---------------------
``"paper"`` (:data:`METRICS`): the relative RMSE of the nodal values,
:math:`\sqrt{\mathrm{mean}\,(u - u_{data})^2 / \mathrm{mean}\,u_{data}^2}` over the degrees of
freedom of every rank (:func:`nodal_relative_rmse`) -- the published tables' metric, which on a
uniform periodic P1 mesh is the RMSE over the grid points. ``"l2"``: the relative
:math:`L^2` error :math:`\|u - u_{data}\|_{L^2}/\|u_{data}\|_{L^2}` of the finite-element
functions (:func:`l2_norm`), the natural analogue on other meshes. Reports carry both, labelled.

Nothing is dropped from a mean over trajectories (:func:`score_errors`): a rollout that failed
counts as error 1 (diverged) from the failing step on, and so does a non-finite error; with the
paper's metric, once any trajectory's error reaches 1 at step ``k`` every trajectory's error from
step ``k`` on counts as 1 (the published protocol). Only steps beyond a trajectory's last data
frame have no error (there is nothing to compare with).
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from typing import Any

import firedrake as fd
import numpy as np
from mpi4py import MPI

from femeso.data.trajectories import mesh_of

__all__ = [
    "DIVERGED",
    "METRICS",
    "l2_norm",
    "nodal_relative_rmse",
    "relative_l2_error",
    "score_errors",
]

#: The error metrics by key, with the names under which reports show them.
METRICS = {"paper": "relative RMSE of nodal values (paper)", "l2": "relative L2 error"}

#: An error that counts as diverged: the value it is scored as, and (paper) the threshold.
DIVERGED = 1.0


def l2_norm(u: Any) -> float:
    r"""Return :math:`\|u\|_{L^2(\Omega)}` of a ``Function`` or UFL expression (assembled)."""
    return math.sqrt(max(float(fd.assemble(fd.inner(u, u) * fd.dx)), 0.0))


def relative_l2_error(u: fd.Function, ref: fd.Function) -> float:
    r"""Return :math:`\|u - ref\|_{L^2} / \|ref\|_{L^2}` (0 or inf when ``ref`` is zero)."""
    err = l2_norm(u - ref)
    norm = l2_norm(ref)
    if norm == 0.0:
        return 0.0 if err == 0.0 else math.inf
    return err / norm


def _value_range(u: fd.Function) -> tuple[float, float]:
    """Return the smallest and largest nodal value of ``u`` over all ranks (collective)."""
    values = np.asarray(u.dat.data_ro, dtype=float)
    comm = mesh_of(u.function_space()).comm
    low = float(values.min()) if values.size else math.inf
    high = float(values.max()) if values.size else -math.inf
    return comm.allreduce(low, op=MPI.MIN), comm.allreduce(high, op=MPI.MAX)


def _range_end(state_range: np.ndarray | None, end: int) -> float:
    """Return the overall minimum (``end=0``) or maximum (``end=1``) of per-rollout ranges."""
    if state_range is None:
        return math.nan
    reached = state_range[np.isfinite(state_range[:, end]), end]
    if not reached.size:
        return math.nan
    return float(reached.min() if end == 0 else reached.max())


def _owned_values(f: fd.Function) -> list[np.ndarray]:
    """Return the owned DoF values of every component of ``f`` (``data_ro`` holds no halo)."""
    return [np.asarray(s.dat.data_ro, dtype=float).reshape(-1) for s in f.subfunctions]


def nodal_relative_rmse(u: fd.Function, ref: fd.Function) -> float:
    r"""Return the relative RMSE of the nodal values of ``u`` against ``ref`` (the paper's metric).

    :math:`\sqrt{\mathrm{mean}_j (u_j - r_j)^2 / \mathrm{mean}_j r_j^2}` over the degrees of
    freedom ``j`` of all ranks and all components (each owned DoF once: halo copies are left
    out). On a uniform periodic P1 mesh the DoFs are the grid points, and this is the published
    tables' relative RMSE on the grid. ``inf`` when ``ref`` is zero and ``u`` is not. Collective.

    Raises
    ------
    ValueError
        If ``u`` and ``ref`` do not have the same DoF layout (the same function space).

    """
    a, b = _owned_values(u), _owned_values(ref)
    same = len(a) == len(b) and all(x.shape == y.shape for x, y in zip(a, b, strict=False))
    # The means of the numerator and the denominator run over the same DoFs: their counts cancel.
    local = np.array(
        [
            sum(float(np.sum((x - y) ** 2)) for x, y in zip(a, b, strict=False)) if same else 0.0,
            sum(float(np.sum(y**2)) for y in b),
            0.0 if same else 1.0,
        ]
    )
    total = np.empty_like(local)
    mesh_of(ref.function_space()).comm.Allreduce(local, total, op=MPI.SUM)
    if total[2] > 0:
        raise ValueError(
            "nodal_relative_rmse: the two functions have different degrees of freedom "
            "(put them on the same function space)"
        )
    err, norm = total[0], total[1]
    if norm == 0.0:
        return 0.0 if err == 0.0 else math.inf
    return math.sqrt(err / norm)


def _masses(u: fd.Function) -> list[float]:
    """``int u_i dx`` for every scalar component of ``u`` (collective)."""
    shape = u.ufl_shape
    comps = [u] if shape == () else [u[i] for i in range(shape[0])]
    return [float(fd.assemble(c * fd.dx)) for c in comps]


def _count_increases(values: np.ndarray, rtol: float) -> int | None:
    """Count the steps ``k`` with ``v[k+1] > v[k] + rtol * max(|v[k]|, |v[k+1]|)``.

    ``None`` when no pair of consecutive values is finite (a stepper without an energy).
    """
    v = np.asarray(values, dtype=float)
    a, b = v[:-1], v[1:]
    ok = np.isfinite(a) & np.isfinite(b)
    if not ok.any():
        return None
    scale = np.maximum(np.abs(a[ok]), np.abs(b[ok]))
    return int(np.count_nonzero(b[ok] - a[ok] > rtol * scale))


def score_errors(
    errors: np.ndarray,
    comparable: np.ndarray,
    failed_at: Sequence[int | None] | None = None,
    *,
    metric: str = "l2",
) -> tuple[np.ndarray, int | None]:
    """Return the errors as the tables count them, and the first step that counts as diverged.

    Nothing is dropped: at every comparable entry (the trajectory has a data frame at that step)
    the result is finite. A failed rollout (``failed_at[i]``: its first step without a state)
    counts as :data:`DIVERGED` (1) from that step on, and so does a non-finite error. With
    ``metric="paper"`` the published rule applies on top: once any trajectory's error reaches 1
    at step ``k``, every trajectory's error from step ``k`` on counts as 1. With ``"l2"`` finite
    errors are kept as measured, also above 1.

    Parameters
    ----------
    errors
        ``(n_traj, n_steps + 1)`` measured errors (``nan`` where not measured).
    comparable
        ``(n_traj, n_steps + 1)`` booleans: the data has a frame to compare with there.
    failed_at
        Per trajectory ``None`` or the first step of a failed rollout without a state.
    metric
        ``"paper"`` or ``"l2"``.

    Returns
    -------
    scored : numpy.ndarray
        ``nan`` exactly where not comparable.
    diverged_from : int or None
        The first step with an entry that counts as diverged, ``None`` if there is none.

    """
    if metric not in METRICS:
        raise ValueError(f"metric must be one of {sorted(METRICS)}, got {metric!r}")
    e = np.asarray(errors, dtype=float)
    ok = np.asarray(comparable, dtype=bool)
    finite = np.isfinite(e)
    bad = ok & ~finite
    for i, k in enumerate(failed_at or []):
        if k is not None:
            bad[i, k:] |= ok[i, k:]
    if metric == "paper":
        bad |= ok & finite & (np.where(finite, e, 0.0) >= DIVERGED)
    scored = np.where(ok, e, np.nan)
    scored[bad] = DIVERGED
    columns = np.flatnonzero(bad.any(axis=0))
    first = int(columns[0]) if columns.size else None
    if metric == "paper" and first is not None:
        scored[:, first:] = np.where(ok[:, first:], DIVERGED, np.nan)
    return scored, first


def _statistics(scored: np.ndarray, comparable: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Mean and (population) standard deviation over the comparable trajectories, per step.

    ``nan`` only at steps where no trajectory is comparable; every comparable entry counts.
    """
    ok = np.asarray(comparable, dtype=bool)
    n = ok.sum(axis=0)
    values = np.where(ok, scored, 0.0)
    have = n > 0
    mean = np.full(ok.shape[1], np.nan)
    std = np.full(ok.shape[1], np.nan)
    mean[have] = values[:, have].sum(axis=0) / n[have]
    deviation = np.where(ok, scored - mean, 0.0)
    std[have] = np.sqrt((deviation[:, have] ** 2).sum(axis=0) / n[have])
    return mean, std


def _r2(y: np.ndarray, residual: np.ndarray) -> float:
    """Coefficient of determination; uncentred when ``y`` is constant (then ``1 - |r|^2/|y|^2``)."""
    ss_res = float(np.sum(residual**2))
    ss_tot = float(np.sum((y - y.mean()) ** 2))
    if ss_tot <= 1e-24 * max(float(np.sum(y**2)), 1e-300):
        ss_tot = float(np.sum(y**2))
        if ss_tot == 0.0:
            return 1.0 if ss_res == 0.0 else -math.inf
    return 1.0 - ss_res / ss_tot
