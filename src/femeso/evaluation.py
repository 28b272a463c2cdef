r"""Evaluation of learned dynamics: rollout errors, step-size studies and interpretability.

Three kinds of diagnostics, for any *stepper factory* ``make_stepper(u0, dt) -> stepper`` whose
stepper has the :class:`~femeso.steppers.EnergyStableStepper` interface (``reset(u, t=...)``,
``advance()``, ``rollout(n_steps, progress=...)`` returning a
:class:`~femeso.steppers.Trajectory`), e.g. ``lambda u0, dt: EnergyStableStepper(model, u0, dt)``.
A black-box stepper without an energy (its records hold ``energy = nan``) works too: the numbers
that need the model's own energy become ``nan``/``None``, and a ``reference_energy`` (e.g. the
true model's :meth:`~femeso.model.OnsagerModel.energy_value`) judges it instead.

* :func:`rollout_errors` -- autoregressive rollouts from the first state of each data trajectory,
  errors at the data frames in two metrics (below), energies, dissipation and mass along the way
  (:class:`RolloutReport`, JSON through :meth:`RolloutReport.to_dict`); :func:`error_table` the
  rows of the paper's tables, :func:`persistence_errors` the trivial forecast
  :math:`u(t + \Delta t) = u(t)` that every learned model must beat;
* :func:`step_size_study` -- the same model re-run at other step sizes than the data's, with the
  errors' empirical order;
* interpretability: :func:`density_comparison` and :func:`mobility_comparison` (learned against
  true :math:`F` and :math:`m(u, x)`, modulo the identifiability gauge),
  :func:`energy_scaling_exponent` (the paper's :math:`V_0(a u) \sim a^p`) and
  :func:`energy_parts_along`.

The gauge, for reading the fits
-------------------------------
:math:`(V, M, W)` and :math:`(cV + d, M/c, W/c)` give the same dynamics, and so does adding any
:math:`g(x)` to :math:`F`; with a *conserved* mobility (:math:`\nabla\cdot m\nabla\mu`) also any
linear term :math:`e\cdot u` (it shifts :math:`\mu` by a constant, whose gradient is zero; and
:math:`\int e\,u` is constant in time because the mass is). femeso's models fix :math:`d` by
:math:`F_\theta(0, x) = 0` and :math:`c` by normalising a learnable :math:`\kappa` to mean
``kappa_ref``. A model that reproduces the true dynamics therefore satisfies
:math:`F_{\rm learned} \approx s F_{\rm true} + o\ (+ e u)` with
:math:`s = \kappa_{\rm ref}/\kappa_{\rm true}` (for a constant true :math:`\kappa`) and
:math:`m_{\rm learned} \approx m_{\rm true}/s`, which is what the comparison functions fit.

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

Every function is collective over the mesh's communicator where it assembles or integrates;
numbers are the same on every rank. Results are plain Python numbers and lists, with ``nan`` where
a number does not exist; :func:`to_jsonable` / :func:`write_json` turn ``nan`` into JSON ``null``.
"""

from __future__ import annotations

import json
import math
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import firedrake as fd
import numpy as np
import torch
from mpi4py import MPI

from femeso._log import logger, progress_bar
from femeso.data.trajectories import Dataset, TrajectoryData, mesh_of
from femeso.fields import DTYPE
from femeso.model import OnsagerModel
from femeso.steppers import StepRecord, Trajectory

__all__ = [
    "METRICS",
    "RolloutReport",
    "density_comparison",
    "density_curves",
    "energy_parts_along",
    "energy_scaling_exponent",
    "error_table",
    "format_value",
    "l2_norm",
    "mobility_comparison",
    "mobility_samples",
    "nodal_relative_rmse",
    "relative_l2_error",
    "persistence_errors",
    "relative_energy_drift",
    "rollout_errors",
    "score_errors",
    "step_size_study",
    "to_jsonable",
    "write_json",
]

#: A stepper factory: ``make_stepper(u0, dt)`` returns a stepper with the EnergyStableStepper API.
StepperFactory = Callable[[fd.Function, float], Any]

_RTOL_TIME = 1e-6  # relative tolerance when matching times and step ratios

#: The rollout steps of the paper's tables (step 1 to 5) and a long horizon.
TABLE_STEPS = (1, 2, 3, 4, 5, 100)

#: The error metrics by key, with the names under which reports show them.
METRICS = {"paper": "relative RMSE of nodal values (paper)", "l2": "relative L2 error"}

#: An error that counts as diverged: the value it is scored as, and (paper) the threshold.
DIVERGED = 1.0


# ---------------------------------------------------------------------------------------- helpers
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


def _uniform_step(times: np.ndarray, what: str) -> float:
    """Return the constant frame step of ``times``; raise ``ValueError`` if there is none."""
    if len(times) < 2:
        raise ValueError(f"{what}: one frame only, so there is no frame step (pass dt)")
    steps = np.diff(times)
    h = float(steps[0])
    if not np.allclose(steps, h, rtol=_RTOL_TIME, atol=0.0):
        raise ValueError(
            f"{what}: frames are not equally spaced (steps from {steps.min():.6g} to "
            f"{steps.max():.6g}); evaluation compares at a fixed frame step"
        )
    return h


def _step_ratio(dt: float, h: float) -> tuple[int, int]:
    """Return ``(p, q)`` with ``dt = h * p / q`` and ``p == 1`` or ``q == 1``, else raise."""
    if not (math.isfinite(dt) and dt > 0):
        raise ValueError(f"dt must be a positive number, got {dt!r}")
    q = h / dt
    if q >= 1 - _RTOL_TIME and abs(q - round(q)) <= _RTOL_TIME * q:
        return 1, int(round(q))
    p = dt / h
    if p >= 1 and abs(p - round(p)) <= _RTOL_TIME * p:
        return int(round(p)), 1
    raise ValueError(
        f"dt={dt:.6g} must divide the frame step {h:.6g} or be a whole multiple of it "
        f"(ratio {p:.6g})"
    )


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


def _trajectories(data: Dataset | Sequence[TrajectoryData], what: str) -> list[TrajectoryData]:
    trajs = list(data.trajectories if isinstance(data, Dataset) else data)
    if not trajs:
        raise ValueError(f"{what}: no trajectories in the data")
    for i, t in enumerate(trajs):
        if not isinstance(t, TrajectoryData):
            raise ValueError(f"{what}: item {i} is a {type(t).__name__}, not a TrajectoryData")
    return trajs


def _record_value(record: Any, name: str) -> float:
    value = getattr(record, name, math.nan)
    try:
        return float(value)
    except (TypeError, ValueError):
        return math.nan


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


# ---------------------------------------------------------------------------------------- rollouts
@dataclass
class RolloutReport:
    r"""What :func:`rollout_errors` measured.

    Times are *elapsed* times since each trajectory's first frame. Arrays indexed by trajectory
    ``i`` and step ``k`` (time ``times[k] = k * dt``) hold ``nan`` where a value does not exist:
    errors at step times that are not data frame times or lie beyond the data, energies of a
    black-box stepper, everything after a failed step. The *statistics* over the trajectories
    (``error_mean`` ...) drop nothing: a failed or non-finite error counts as 1 (see
    :func:`score_errors`); they are ``nan`` only where no trajectory has a data frame.

    Attributes
    ----------
    times
        ``(n_steps + 1,)`` elapsed times of the rollout.
    dt, frame_dt, n_steps
        The rollout step, the data's frame step and the number of rollout steps.
    compared
        ``(n_steps + 1,)``: whether the step time is a data frame time (the common times).
    errors
        ``(n_traj, n_steps + 1)`` relative :math:`L^2` errors
        :math:`\|u - u_{data}\| / \|u_{data}\|` (assembled on the mesh), as measured.
    error_mean, error_std
        ``(n_steps + 1,)`` mean and standard deviation over the trajectories that have a data
        frame, of the errors scored by :func:`score_errors` (``metric="l2"``).
    energies
        ``(n_traj, n_steps + 1)`` the stepper's own energy (``nan`` for a black box).
    dissipation
        ``(n_traj, n_steps)`` the recorded dissipation rate of each step (``nan`` if not recorded).
    mass
        ``(n_traj, n_steps + 1, k)`` :math:`\int u_i` per component.
    mass_drift
        ``(n_traj, n_steps + 1)`` :math:`\max_i |\int u_i(t) - \int u_i(0)|`.
    energy_increases
        Per trajectory, the number of steps that increased the own energy (relative tolerance
        ``energy_rtol``); ``None`` without an energy.
    reference_energies, reference_energy_increases
        With ``reference_energy``: its values along the rollout ``(n_traj, n_steps + 1)`` and
        the number of increases per trajectory; else ``None``.
    data_times, reference_energies_data, reference_energy_increases_data
        The data's elapsed frame times (longest trajectory), the reference energy of the data
        frames ``(n_traj, n_frames)`` (``nan``-padded) and its increases; ``None`` without it.
    rollouts
        The rollouts (:class:`~femeso.steppers.Trajectory`, absolute times) when kept, else
        ``None``; see :meth:`trajectory_data` for VTK export and plots.
    failures
        Per trajectory, ``None`` or the message of the exception that stopped its rollout.
    wall_times
        Per trajectory, seconds spent in the stepper (its set-up included for the first; the
        comparisons with the data excluded).
    energy_rtol
        The relative tolerance of the increase counts.
    nodal_errors
        ``(n_traj, n_steps + 1)`` relative RMSE of the nodal values (the paper's metric,
        :func:`nodal_relative_rmse`), as measured; ``None`` if not measured.
    nodal_error_mean, nodal_error_std
        Their statistics as for ``error_mean`` (``metric="paper"``: an error >= 1 counts as 1 for
        every trajectory from that step on); ``None`` without ``nodal_errors``.
    comparable
        ``(n_traj, n_steps + 1)``: the trajectory has a data frame at that step (default: where
        ``errors`` is finite, and the compared steps of a failed trajectory after its failure
        where another trajectory was compared).
    failed_at
        Per trajectory ``None`` or the first step without a state of a rollout that failed
        (default: derived from ``failures`` and the recorded ``mass``).
    state_range
        ``(n_traj, 2)``: the smallest and largest nodal value every rollout reached (its start
        included), so that a model leaving the physical range of the data is seen; ``None``
        when not measured.

    """

    times: np.ndarray
    dt: float
    frame_dt: float
    n_steps: int
    compared: np.ndarray
    errors: np.ndarray
    error_mean: np.ndarray
    error_std: np.ndarray
    energies: np.ndarray
    dissipation: np.ndarray
    mass: np.ndarray
    mass_drift: np.ndarray
    energy_increases: list[int | None]
    data_times: np.ndarray
    reference_energies: np.ndarray | None = None
    reference_energy_increases: list[int | None] | None = None
    reference_energies_data: np.ndarray | None = None
    reference_energy_increases_data: list[int | None] | None = None
    rollouts: list[Any] | None = None
    failures: list[str | None] = field(default_factory=list)
    wall_times: list[float] = field(default_factory=list)
    energy_rtol: float = 1e-9
    nodal_errors: np.ndarray | None = None
    nodal_error_mean: np.ndarray | None = None
    nodal_error_std: np.ndarray | None = None
    comparable: np.ndarray | None = None
    failed_at: list[int | None] | None = None
    state_range: np.ndarray | None = None

    def __post_init__(self) -> None:
        n_traj = self.errors.shape[0]
        if self.failed_at is None:
            # The mass is recorded for every state the rollout produced.
            visited = np.isfinite(self.mass).all(axis=2)
            self.failed_at = [
                None
                if i >= len(self.failures) or self.failures[i] is None
                else int(np.argmin(np.append(visited[i], False)))
                for i in range(n_traj)
            ]
        if self.comparable is None:
            ok = np.isfinite(self.errors)
            elsewhere = ok.any(axis=0) & np.asarray(self.compared, dtype=bool)
            for i, k in enumerate(self.failed_at):
                if k is not None:
                    ok[i, k:] |= elsewhere[k:]
            self.comparable = ok
        if self.nodal_errors is not None and self.nodal_error_mean is None:
            self.nodal_error_mean, self.nodal_error_std = self.error_statistics("paper")

    @property
    def n_trajectories(self) -> int:
        """Number of trajectories evaluated."""
        return self.errors.shape[0]

    @property
    def n_failed(self) -> int:
        """Number of rollouts that stopped at a failed step."""
        return sum(k is not None for k in self.failed_at)

    def _measured(self, metric: str) -> np.ndarray:
        if metric not in METRICS:
            raise ValueError(f"metric must be one of {sorted(METRICS)}, got {metric!r}")
        if metric == "l2":
            return self.errors
        if self.nodal_errors is None:
            raise ValueError(f"this report has no {METRICS['paper']} (no nodal_errors)")
        return self.nodal_errors

    def scored_errors(self, metric: str = "l2") -> tuple[np.ndarray, int | None]:
        """Return the errors of ``metric`` as the tables count them (:func:`score_errors`)."""
        return score_errors(self._measured(metric), self.comparable, self.failed_at, metric=metric)

    def error_statistics(self, metric: str = "l2") -> tuple[np.ndarray, np.ndarray]:
        """Return the mean and standard deviation over the trajectories of the scored errors."""
        scored, _ = self.scored_errors(metric)
        return _statistics(scored, self.comparable)

    @property
    def error_times(self) -> np.ndarray:
        """Elapsed times at which at least one trajectory was compared with its data."""
        return self.times[np.isfinite(self.errors).any(axis=0)]

    def trajectory_data(self, i: int, *, metadata: dict | None = None) -> TrajectoryData:
        """Return rollout ``i`` as a :class:`~femeso.data.TrajectoryData` (e.g. for ``export_vtk``).

        Raises
        ------
        ValueError
            If the rollouts were not kept.

        """
        if self.rollouts is None:
            raise ValueError("the rollouts were not kept (pass keep_states=True)")
        return TrajectoryData.from_trajectory(self.rollouts[i], metadata=metadata or {})

    def summary(self) -> dict[str, Any]:
        """Return the headline numbers as Python scalars (``nan`` kept; see :meth:`to_dict`).

        Keys: ``n_trajectories``, ``dt``, ``frame_dt``, ``n_steps``, ``horizon``,
        ``error_first`` / ``error_last`` (mean relative :math:`L^2` error at the first compared
        step after the start and at the last compared one), ``error_max`` (largest mean error),
        ``nodal_error_first`` / ``nodal_error_last`` / ``nodal_error_max`` (the same for the
        paper's relative RMSE of nodal values; ``nan`` when not measured),
        ``energy_increases`` (total, ``None`` without an energy), ``reference_energy_increases``,
        ``max_mass_drift``, ``failures`` and ``n_failed`` (both: the number of failed rollouts),
        ``first_failed_step`` (``None`` without a failure), ``wall_time``, ``state_min`` /
        ``state_max`` (the range of nodal values reached by the rollouts, ``nan`` when not
        measured).
        """

        def first_last_max(mean: np.ndarray | None) -> tuple[float, float, float, float]:
            if mean is None:
                return math.nan, math.nan, math.nan, math.nan
            finite = np.isfinite(mean)
            finite[0] = False  # the start is exact by construction
            idx = np.flatnonzero(finite)
            if not idx.size:
                return math.nan, math.nan, math.nan, math.nan
            return (
                float(mean[idx[0]]),
                float(mean[idx[-1]]),
                float(self.times[idx[-1]]),
                float(np.max(mean[idx])),
            )

        first, last, last_time, largest = first_last_max(self.error_mean)
        n_first, n_last, _, n_largest = first_last_max(self.nodal_error_mean)
        failed = [k for k in self.failed_at if k is not None]
        counts = [c for c in self.energy_increases if c is not None]
        ref = self.reference_energy_increases
        ref_counts = [c for c in ref if c is not None] if ref is not None else []
        drift = self.mass_drift[np.isfinite(self.mass_drift)]
        return _plain(
            {
                "n_trajectories": self.n_trajectories,
                "dt": self.dt,
                "frame_dt": self.frame_dt,
                "n_steps": self.n_steps,
                "horizon": float(self.times[-1]),
                "error_first": first,
                "error_last": last,
                "error_last_time": last_time,
                "error_max": largest,
                "nodal_error_first": n_first,
                "nodal_error_last": n_last,
                "nodal_error_max": n_largest,
                "energy_increases": sum(counts) if counts else None,
                "reference_energy_increases": sum(ref_counts) if ref_counts else None,
                "max_mass_drift": float(drift.max()) if drift.size else math.nan,
                "failures": sum(f is not None for f in self.failures),
                "n_failed": len(failed),
                "first_failed_step": min(failed) if failed else None,
                "wall_time": float(sum(self.wall_times)),
                "state_min": _range_end(self.state_range, 0),
                "state_max": _range_end(self.state_range, 1),
            }
        )

    def to_dict(self, *, arrays: bool = True) -> dict[str, Any]:
        """Return the report as JSON-ready data (``nan`` becomes ``None``).

        Parameters
        ----------
        arrays
            Include the per-step arrays; without them only :meth:`summary` and the per-trajectory
            counts.

        """
        out: dict[str, Any] = {
            "summary": self.summary(),
            "energy_increases": self.energy_increases,
            "reference_energy_increases": self.reference_energy_increases,
            "reference_energy_increases_data": self.reference_energy_increases_data,
            "failures": self.failures,
            "failed_at": self.failed_at,
            "wall_times": self.wall_times,
            "energy_rtol": self.energy_rtol,
            "metrics": {"errors": METRICS["l2"], "nodal_errors": METRICS["paper"]},
        }
        if arrays:
            out.update(
                {
                    "times": self.times,
                    "compared": self.compared,
                    "errors": self.errors,
                    "error_mean": self.error_mean,
                    "error_std": self.error_std,
                    "nodal_errors": self.nodal_errors,
                    "nodal_error_mean": self.nodal_error_mean,
                    "nodal_error_std": self.nodal_error_std,
                    "comparable": self.comparable,
                    "energies": self.energies,
                    "dissipation": self.dissipation,
                    "mass": self.mass,
                    "mass_drift": self.mass_drift,
                    "data_times": self.data_times,
                    "reference_energies": self.reference_energies,
                    "reference_energies_data": self.reference_energies_data,
                }
            )
        return to_jsonable(out)


def _rollout_chunked(
    stepper: Any,
    n_steps: int,
    chunk: int,
    bar: Any,
    visit: Callable[[int, fd.Function], None],
    *,
    keep_all: bool,
) -> tuple[list[fd.Function], list[Any], float, list[float], str | None]:
    """Advance ``n_steps`` in rollouts of ``chunk`` steps; stop cleanly at the first failure.

    ``visit(k, u)`` is called for every state ``u`` after ``k`` steps (``k = 0`` first), as it
    comes, so that only ``chunk + 1`` states need to be alive at a time. Returns the states
    (every one with ``keep_all``, else the last only), the records, the initial own energy, the
    absolute times of every state and the failure message (``None`` if every step succeeded).
    """
    states: list[fd.Function] = []
    records: list[Any] = []
    times: list[float] = []
    initial_energy = math.nan
    done = 0
    while done < n_steps:
        m = min(chunk, n_steps - done)
        try:
            part = stepper.rollout(m, progress=False)
        except (RuntimeError, ArithmeticError) as exc:
            first_line = (str(exc).splitlines() or [""])[0]
            message = f"{type(exc).__name__} after {done} steps: {first_line}"
            logger.warning("rollout stopped: %s", message)
            return states, records, initial_energy, times, message
        if len(part.states) != m + 1 or len(part.records) != m:
            raise ValueError(
                f"the stepper's rollout({m}) returned {len(part.states)} states and "
                f"{len(part.records)} records, expected {m + 1} and {m} (store every state)"
            )
        first = 0 if done == 0 else 1
        if done == 0:
            initial_energy = float(getattr(part, "initial_energy", math.nan))
        for j in range(first, m + 1):
            visit(done + j, part.states[j])
        new_states = list(part.states[first:])
        states = states + new_states if keep_all else new_states[-1:]
        times.extend(float(t) for t in part.times[first:])
        records.extend(part.records)
        done += m
        if bar is not None:
            bar.update(m)
    return states, records, initial_energy, times, None


def rollout_errors(
    make_stepper: StepperFactory,
    data: Dataset | Sequence[TrajectoryData],
    *,
    n_steps: int | None = None,
    dt: float | None = None,
    reference_energy: Callable[[fd.Function], float] | None = None,
    keep_states: bool = True,
    energy_rtol: float = 1e-9,
    progress: bool = False,
) -> RolloutReport:
    r"""Roll a model out from each trajectory's first state and compare with the data.

    Each trajectory is rolled out autoregressively from its first frame with step ``dt`` (default:
    the data's frame step). Errors in both metrics -- the relative :math:`L^2` error
    :math:`\|u - u_{data}\|_{L^2}/\|u_{data}\|_{L^2}` and the paper's relative RMSE of the nodal
    values (:func:`nodal_relative_rmse`) -- are taken at the common times of the rollout and the
    data (every ``frame_dt/dt``-th step when ``dt`` divides the frame step; every step, against
    every ``dt/frame_dt``-th frame, when ``dt`` is a whole multiple of it). Energies, dissipation
    and mass are recorded at every step. A rollout that fails (the stepper raises a
    ``RuntimeError`` or ``ArithmeticError``, e.g. :class:`~femeso.steppers.StepFailure`) stops
    there; its errors count as 1 from then on in the statistics (:func:`score_errors`).

    One stepper is built by ``make_stepper`` for the first trajectory and restarted with
    ``stepper.reset(u0, t=t0)`` for the others (and for a first trajectory that does not start at
    ``t = 0``).

    Parameters
    ----------
    make_stepper
        ``make_stepper(u0, dt)`` returning a stepper (EnergyStableStepper interface).
    data
        A :class:`~femeso.data.Dataset` or a list of :class:`~femeso.data.TrajectoryData`, all
        with the same constant frame step, on the stepper's space.
    n_steps
        Rollout steps of size ``dt``; default: enough to cover the longest trajectory. May exceed
        the data (long horizon): errors beyond the data are ``nan``, energies and mass continue.
    dt
        The rollout step; must divide the frame step or be a whole multiple of it.
    reference_energy
        Optional ``Function -> float`` (e.g. the true model's ``energy_value``), evaluated along
        the rollout and the data, so that also a black-box stepper is judged by an energy.
        Collective: it is called on every rank.
    keep_states
        Keep the rollouts in :attr:`RolloutReport.rollouts` (for plots and VTK export).
    energy_rtol
        Relative tolerance of the energy-increase counts.
    progress
        Show a progress bar (rank 0).

    Returns
    -------
    RolloutReport

    Raises
    ------
    ValueError
        If there is no trajectory, the frames are not equally spaced or the trajectories' frame
        steps differ, ``dt`` is not commensurate with the frame step, or ``n_steps < 1``.

    """
    trajs = _trajectories(data, "rollout_errors")
    frame_steps = []
    for i, traj in enumerate(trajs):
        if len(traj.times) < 2 and dt is None:
            raise ValueError(f"rollout_errors: trajectory {i} has one frame only; pass dt")
        frame_steps.append(
            _uniform_step(traj.times, f"rollout_errors: trajectory {i}")
            if len(traj.times) > 1
            else math.nan
        )
    known = [h for h in frame_steps if math.isfinite(h)]
    h = known[0] if known else float(dt)
    if not np.allclose(known, h, rtol=_RTOL_TIME, atol=0.0):
        raise ValueError(
            f"rollout_errors: trajectories have different frame steps ({min(known):.6g} to "
            f"{max(known):.6g}); evaluate them separately"
        )
    dt = h if dt is None else float(dt)
    p, q = _step_ratio(dt, h)  # dt = h p / q
    n_frames = [len(t.times) for t in trajs]
    if n_steps is None:
        n_steps = ((max(n_frames) - 1) * q) // p
        if n_steps < 1:
            raise ValueError(
                f"rollout_errors: the data spans less than one step dt={dt:.6g}; pass n_steps"
            )
    if not isinstance(n_steps, int | np.integer) or n_steps < 1:
        raise ValueError(f"rollout_errors: n_steps must be an integer >= 1, got {n_steps!r}")
    n_steps = int(n_steps)
    n_traj = len(trajs)
    k_all = np.arange(n_steps + 1)
    compared = (k_all * p) % q == 0
    frame_of_step = np.where(compared, (k_all * p) // q, -1)
    chunk = q  # one rollout call per compared frame when dt < frame step

    errors = np.full((n_traj, n_steps + 1), np.nan)
    nodal_errors = np.full((n_traj, n_steps + 1), np.nan)
    comparable = np.zeros((n_traj, n_steps + 1), dtype=bool)
    failed_at: list[int | None] = []
    energies = np.full((n_traj, n_steps + 1), np.nan)
    dissipation = np.full((n_traj, n_steps), np.nan)
    n_comp = len(_masses(trajs[0].states[0]))
    mass = np.full((n_traj, n_steps + 1, n_comp), np.nan)
    state_range = np.full((n_traj, 2), np.nan)
    ref_roll = np.full((n_traj, n_steps + 1), np.nan) if reference_energy else None
    ref_data = np.full((n_traj, max(n_frames)), np.nan) if reference_energy else None
    rollouts: list[Any] | None = [] if keep_states else None
    failures: list[str | None] = []
    wall: list[float] = []
    increases: list[int | None] = []
    ref_increases: list[int | None] | None = [] if reference_energy else None
    ref_increases_data: list[int | None] | None = [] if reference_energy else None

    bar = progress_bar(n_traj * n_steps, "femeso evaluate", "step", enabled=progress)
    stepper = None
    for i, traj in enumerate(trajs):
        u0, t0 = traj.states[0], float(traj.times[0])
        start = time.perf_counter()
        if stepper is None:
            stepper = make_stepper(u0, dt)
            if t0 != 0.0:
                stepper.reset(u0, t=t0)
        else:
            stepper.reset(u0, t=t0)

        compare_time = [0.0]

        def visit(
            k: int,
            u: fd.Function,
            i: int = i,
            traj: TrajectoryData = traj,
            compare_time: list[float] = compare_time,
        ) -> None:
            tic = time.perf_counter()
            mass[i, k] = _masses(u)
            low, high = _value_range(u)
            state_range[i] = (np.fmin(state_range[i, 0], low), np.fmax(state_range[i, 1], high))
            j = frame_of_step[k]
            if 0 <= j < len(traj.states):
                errors[i, k] = relative_l2_error(u, traj.states[j])
                nodal_errors[i, k] = nodal_relative_rmse(u, traj.states[j])
            if reference_energy is not None:
                ref_roll[i, k] = float(reference_energy(u))
            compare_time[0] += time.perf_counter() - tic

        states, records, e0, abs_times, failure = _rollout_chunked(
            stepper, n_steps, chunk, bar, visit, keep_all=keep_states
        )
        wall.append(time.perf_counter() - start - compare_time[0])
        failures.append(failure)
        comparable[i] = (frame_of_step >= 0) & (frame_of_step < len(traj.states))
        if failure is None:
            failed_at.append(None)
        else:
            # The first step without a state; the start is the data's first frame itself.
            failed_at.append(max(len(abs_times), 1))
            if not abs_times:
                errors[i, 0] = nodal_errors[i, 0] = 0.0
        if abs_times:
            energies[i, 0] = e0
        for k, r in enumerate(records):
            energies[i, k + 1] = _record_value(r, "energy")
            dissipation[i, k] = _record_value(r, "dissipation")
        increases.append(_count_increases(energies[i], energy_rtol))
        if reference_energy is not None:
            for j, u in enumerate(traj.states):
                ref_data[i, j] = float(reference_energy(u))
            ref_increases.append(_count_increases(ref_roll[i], energy_rtol))
            ref_increases_data.append(_count_increases(ref_data[i], energy_rtol))
        if rollouts is not None:
            rollouts.append(
                Trajectory(
                    times=np.array(abs_times), states=states, records=records, initial_energy=e0
                )
            )
    if bar is not None:
        bar.close()
    mass_drift = np.max(np.abs(mass - mass[:, :1, :]), axis=2)
    error_mean, error_std = _statistics(score_errors(errors, comparable, failed_at)[0], comparable)
    report = RolloutReport(
        times=k_all * dt,
        dt=dt,
        frame_dt=h,
        n_steps=n_steps,
        compared=compared,
        errors=errors,
        error_mean=error_mean,
        error_std=error_std,
        energies=energies,
        dissipation=dissipation,
        mass=mass,
        mass_drift=mass_drift,
        energy_increases=increases,
        data_times=np.arange(max(n_frames)) * h,
        reference_energies=ref_roll,
        reference_energy_increases=ref_increases,
        reference_energies_data=ref_data,
        reference_energy_increases_data=ref_increases_data,
        rollouts=rollouts,
        failures=failures,
        wall_times=wall,
        energy_rtol=energy_rtol,
        nodal_errors=nodal_errors,
        comparable=comparable,
        failed_at=failed_at,
        state_range=state_range,
    )
    s = report.summary()
    logger.info(
        "evaluated %d trajectories, %d steps of dt=%.4g: mean %s %s -> %s, %s %s -> %s; %s%s",
        n_traj,
        n_steps,
        dt,
        METRICS["paper"],
        _fmt(s["nodal_error_first"]),
        _fmt(s["nodal_error_last"]),
        METRICS["l2"],
        _fmt(s["error_first"]),
        _fmt(s["error_last"]),
        "no own energy"
        if s["energy_increases"] is None
        else f"{s['energy_increases']} energy increases",
        f"; {s['n_failed']} rollout(s) failed (counted as error 1)" if s["n_failed"] else "",
    )
    return report


def error_table(
    report: RolloutReport, steps: Sequence[int] = TABLE_STEPS, *, metric: str = "l2"
) -> dict[str, Any]:
    """Return the mean and standard deviation of the rollout errors at the given steps.

    The rows of the paper's tables: errors of the rollouts from the test trajectories' first
    frames after ``steps`` steps of the rollout step, in one of the two metrics
    (:data:`METRICS`): ``"paper"``, the relative RMSE of the nodal values with the published
    divergence rule, or ``"l2"``, the relative :math:`L^2` error. Nothing is dropped from a mean
    (:func:`score_errors`): a failed rollout counts as 1 from its failing step on. Steps beyond
    the last one with a data frame are replaced by that last one (once).

    Parameters
    ----------
    report
        What :func:`rollout_errors` measured.
    steps
        Increasing rollout step counts (>= 1).
    metric
        ``"l2"`` (default) or ``"paper"``.

    Returns
    -------
    dict
        ``metric`` (its name, e.g. ``"relative RMSE of nodal values (paper)"``), ``steps``,
        ``times`` (elapsed), ``mean``, ``std`` (population standard deviation over the
        trajectories) and ``n`` (how many trajectories have a data frame there), one entry per
        step kept (empty lists when nothing was compared); ``n_trajectories``, ``n_failed`` (the
        rollouts that failed), ``failed_at`` (their first steps without a state, sorted) and
        ``diverged_from`` (the first step at which an error counts as diverged, ``None`` if
        none).

    Raises
    ------
    ValueError
        For an unknown metric, or ``"paper"`` on a report without nodal errors.

    """
    scored, diverged = report.scored_errors(metric)
    have = np.asarray(report.comparable, dtype=bool).any(axis=0)
    have[0] = False
    compared = np.flatnonzero(have)
    kept: list[int] = []
    if compared.size:
        last = int(compared[-1])
        kept = [int(k) for k in steps if 1 <= k <= last and have[k]]
        if any(k > last for k in steps) and last not in kept:
            kept.append(last)
    mean, std = _statistics(scored, report.comparable)
    failed = sorted(k for k in report.failed_at if k is not None)
    return _plain(
        {
            "metric": METRICS[metric],
            "steps": kept,
            "times": [float(report.times[k]) for k in kept],
            "mean": [float(mean[k]) for k in kept],
            "std": [float(std[k]) for k in kept],
            "n": [int(report.comparable[:, k].sum()) for k in kept],
            "n_trajectories": report.n_trajectories,
            "n_failed": len(failed),
            "failed_at": failed,
            "diverged_from": diverged,
        }
    )


class _Persistence:
    r"""The trivial forecast :math:`u(t + \Delta t) = u(t)` as a stepper (no energy)."""

    def __init__(self, u0: fd.Function, dt: float) -> None:
        self.dt = float(dt)
        self.reset(u0)

    def reset(self, u: fd.Function, *, t: float = 0.0) -> None:
        self.u, self.t = u.copy(deepcopy=True), float(t)

    def rollout(self, n_steps: int, *, progress: bool = False) -> Trajectory:
        times = self.t + self.dt * np.arange(n_steps + 1)
        self.t = float(times[-1])
        nan = math.nan
        records = [StepRecord(float(t), self.dt, nan, {}, nan, nan, [], 0, 0) for t in times[1:]]
        # The same (never modified) state at every step: nothing is copied.
        return Trajectory(times=times, states=[self.u] * (n_steps + 1), records=records)


def persistence_errors(
    data: Dataset | Sequence[TrajectoryData],
    *,
    n_steps: int | None = None,
    dt: float | None = None,
) -> RolloutReport:
    r"""Return the errors of persistence, :math:`u(t + \Delta t) = u(t)`, on the data.

    Persistence forecasts every later frame by the first one; its errors (frame 0 against frame
    ``k``, in both metrics) need no model and are the bar a learned model must clear at least.
    The report is that of :func:`rollout_errors` (the same steps, comparisons and statistics, so
    that :func:`error_table` rows line up with the models'), without energies.

    Parameters
    ----------
    data
        The trajectories (as for :func:`rollout_errors`).
    n_steps, dt
        As for :func:`rollout_errors`: pass the models' ``dt`` so that step ``k`` means the same
        time in both tables.

    Returns
    -------
    RolloutReport

    """
    return rollout_errors(_Persistence, data, n_steps=n_steps, dt=dt, keep_states=False)


def relative_energy_drift(report: RolloutReport) -> float | None:
    r"""Return the largest relative change of the stepper's own energy along the rollouts.

    :math:`\max_{i,k} |V(u_i^k) - V(u_i^0)| / |V(u_i^0)|`: a round-off-sized number for a
    conservative model (:math:`M = 0`); ``None`` for a stepper without an energy.
    """
    e = report.energies
    if not np.isfinite(e).any():
        return None
    scale = np.abs(e[:, :1])
    scale = np.where(scale > 0, scale, 1.0)
    return float(np.nanmax(np.abs(e - e[:, :1]) / scale))


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


# ------------------------------------------------------------------------------ step-size study
def step_size_study(
    make_stepper: StepperFactory,
    traj: TrajectoryData,
    factors: Sequence[float] = (0.1, 0.3, 1, 3, 10, 30, 100),
    t_end: float | None = None,
    *,
    reference: str = "auto",
    energy_rtol: float = 1e-9,
    progress: bool = False,
) -> dict[str, Any]:
    r"""Run a model at other step sizes than the data's and compare at a common end time.

    For each factor :math:`f` the model is rolled out from the first frame with
    :math:`\Delta t_f \approx f\,h` (``h`` the frame step) to the common end time ``t_end``
    (elapsed). ``t_end`` defaults to the largest step and must otherwise be a whole multiple of
    it; a step that does not divide ``t_end`` (e.g. ``0.3 h`` into ``100 h``) is shortened to
    ``t_end / ceil(t_end / (f h))``, and the step actually used is reported (``dt``).

    The state at ``t_end`` is compared (relative :math:`L^2`) with the reference:

    * ``reference="data"``: the data frame at ``t_end`` (``ValueError`` if there is none);
    * ``reference="finest"``: the rollout with the smallest step (whose own error is then
      ``nan``); the errors measure the time discretisation alone, without the data's own error;
    * ``reference="auto"`` (default): the data frame when the data reaches ``t_end`` at a frame
      time, else the finest rollout (``reference_note`` says which and why).

    Parameters
    ----------
    make_stepper
        ``make_stepper(u0, dt)`` (EnergyStableStepper interface).
    traj
        The trajectory (at least two equally spaced frames).
    factors
        Step sizes as multiples of the frame step.
    t_end
        Common elapsed end time; default: the largest step.
    reference, energy_rtol, progress
        See above; relative tolerance of the energy check; a progress bar per run (rank 0).

    Returns
    -------
    dict
        Python numbers and lists (``nan`` kept; :func:`write_json` writes them):
        ``frame_dt``, ``t_end``, ``reference``, ``reference_note``, and per factor (lists,
        sorted by factor) ``factors``, ``dt``, ``n_steps``, ``error`` (at ``t_end``),
        ``energy_non_increasing`` (every step kept the own energy non-increasing; ``None``
        without an energy), ``energy_increases``, ``halvings`` (total step halvings, ``None`` if
        not recorded), ``wall_time`` (the rollout, seconds), ``setup_time`` (building the
        stepper), ``failure``; then ``order`` (least-squares slope of :math:`\log e` against
        :math:`\log\Delta t` over the finite positive errors) and ``orders_pairwise`` (between
        consecutive steps).

    Raises
    ------
    ValueError
        On an empty factor list or a non-positive factor, a trajectory with fewer than two or
        unequally spaced frames, a ``t_end`` that is not a whole multiple of the largest step, or
        ``reference="data"`` without a data frame at ``t_end``.

    """
    if reference not in ("auto", "data", "finest"):
        raise ValueError(f"reference must be 'auto', 'data' or 'finest', got {reference!r}")
    if not isinstance(traj, TrajectoryData):
        raise ValueError(f"step_size_study needs a TrajectoryData, got {type(traj).__name__}")
    factors = sorted({float(f) for f in factors})
    if not factors or factors[0] <= 0 or not all(math.isfinite(f) for f in factors):
        raise ValueError(f"step_size_study: factors must be positive numbers, got {factors!r}")
    h = _uniform_step(traj.times, "step_size_study")
    dt_max = factors[-1] * h
    if t_end is None:
        t_end = dt_max
    t_end = float(t_end)
    ratio = t_end / dt_max
    if not (ratio >= 1 - _RTOL_TIME and abs(ratio - round(ratio)) <= _RTOL_TIME * ratio):
        raise ValueError(
            f"step_size_study: t_end={t_end:.6g} must be a whole multiple of the largest step "
            f"{dt_max:.6g}"
        )
    # The data frame at t_end, if there is one.
    j = t_end / h
    frame = int(round(j)) if abs(j - round(j)) <= _RTOL_TIME * max(j, 1) else None
    has_frame = frame is not None and frame < len(traj.states)
    if reference == "data" and not has_frame:
        raise ValueError(
            f"step_size_study: the data (frames every {h:.6g} up to "
            f"{traj.times[-1] - traj.times[0]:.6g}) has no frame at t_end={t_end:.6g}"
        )
    use_data = reference == "data" or (reference == "auto" and has_frame)
    if use_data:
        note = f"data frame {frame} at elapsed time {t_end:.6g}"
    elif reference == "finest":
        note = f"finest rollout (dt={factors[0] * h:.6g}), as asked"
    else:
        note = (
            f"finest rollout (dt={factors[0] * h:.6g}): the data (up to elapsed time "
            f"{traj.times[-1] - traj.times[0]:.6g}, frames every {h:.6g}) has no frame at "
            f"t_end={t_end:.6g}"
        )
    u0, t0 = traj.states[0], float(traj.times[0])
    runs = []
    for f in factors:
        n = max(1, math.ceil(t_end / (f * h) - _RTOL_TIME))
        dt = t_end / n
        start = time.perf_counter()
        stepper = make_stepper(u0, dt)
        if t0 != 0.0:
            stepper.reset(u0, t=t0)
        setup = time.perf_counter() - start
        bar = progress_bar(n, f"dt={dt:.3g}", "step", enabled=progress)
        start = time.perf_counter()
        # Only the final state is kept: at most 33 states are alive at a time.
        states, records, e0, _, failure = _rollout_chunked(
            stepper, n, 32, bar, lambda k, u: None, keep_all=False
        )
        wall = time.perf_counter() - start
        if bar is not None:
            bar.close()
        energies = np.array([e0] + [_record_value(r, "energy") for r in records])
        inc = _count_increases(energies, energy_rtol)
        halv = [getattr(r, "halvings", None) for r in records]
        runs.append(
            {
                "factor": f,
                "dt": dt,
                "n_steps": n,
                "final": states[-1] if failure is None else None,
                "energy_increases": inc,
                "energy_non_increasing": None if inc is None else inc == 0,
                "halvings": None if any(x is None for x in halv) else int(sum(halv)),
                "wall_time": wall,
                "setup_time": setup,
                "failure": failure,
            }
        )
    ref_state = traj.states[frame] if use_data else runs[0]["final"]
    errors = []
    for k, run in enumerate(runs):
        if run["final"] is None or ref_state is None or (not use_data and k == 0):
            errors.append(math.nan)
        else:
            errors.append(relative_l2_error(run["final"], ref_state))
    dts = np.array([r["dt"] for r in runs])
    err = np.array(errors)
    ok = np.isfinite(err) & (err > 0)
    order = float(np.polyfit(np.log(dts[ok]), np.log(err[ok]), 1)[0]) if ok.sum() >= 2 else math.nan
    pairwise = [
        float(np.log(err[k + 1] / err[k]) / np.log(dts[k + 1] / dts[k]))
        if ok[k] and ok[k + 1]
        else math.nan
        for k in range(len(runs) - 1)
    ]
    result = {
        "frame_dt": h,
        "t_end": t_end,
        "reference": "data" if use_data else "finest",
        "reference_note": note,
        "factors": [r["factor"] for r in runs],
        "dt": dts,
        "n_steps": [r["n_steps"] for r in runs],
        "error": err,
        "energy_non_increasing": [r["energy_non_increasing"] for r in runs],
        "energy_increases": [r["energy_increases"] for r in runs],
        "halvings": [r["halvings"] for r in runs],
        "wall_time": [r["wall_time"] for r in runs],
        "setup_time": [r["setup_time"] for r in runs],
        "failure": [r["failure"] for r in runs],
        "order": order,
        "orders_pairwise": pairwise,
    }
    logger.info(
        "step-size study to t=%.4g against the %s: errors %s, empirical order %.2f",
        t_end,
        note,
        ", ".join(_fmt(e) for e in err),
        order,
    )
    return _plain(result)


# ------------------------------------------------------------------------------ interpretability
def _as_states(model: OnsagerModel, u_samples: Any) -> torch.Tensor:
    u = torch.as_tensor(u_samples, dtype=DTYPE).detach()
    if u.ndim == 1:
        u = u[:, None]
    if u.ndim != 2 or u.shape[1] != model.n_states:
        raise ValueError(
            f"u_samples must have shape (n,) or (n, {model.n_states}), got {tuple(u.shape)}"
        )
    if u.shape[0] == 0:
        raise ValueError("u_samples is empty")
    if not torch.all(torch.isfinite(u)):
        raise ValueError("u_samples contains NaN or Inf values")
    return u


def _positions(model: OnsagerModel, u: torch.Tensor, uses_position: bool, what: str):
    """Return the samples' positions: the model's quadrature points, or ``None``.

    Samples of one state at the points get the points; position-dependent fields also accept
    several such states stacked (``torch.cat`` of ``model.state_at_points``), with the points
    repeated.
    """
    n_points = model.x.shape[0]
    if u.shape[0] == n_points:
        return model.x
    if uses_position:
        if n_points and u.shape[0] % n_points == 0:
            return model.x.repeat(u.shape[0] // n_points, 1)
        raise ValueError(
            f"{what} depends on position: sample the states at the model's quadrature points "
            f"({n_points} on this rank, e.g. model.state_at_points(u), or several states "
            f"stacked), got {u.shape[0]} samples"
        )
    return None


def _evaluate_density(density: Any, u: torch.Tensor, x: torch.Tensor | None) -> torch.Tensor:
    from femeso.energies import Density

    if isinstance(density, Density):
        return density(u, x)
    values = torch.as_tensor(density(u), dtype=DTYPE)
    return values.reshape(u.shape[0])


def _second_derivatives(density: Any, u: torch.Tensor, x: torch.Tensor | None) -> torch.Tensor:
    """Hessians ``d2F/du_i du_j`` at every sample, ``(n, k, k)``, by automatic differentiation."""
    u = u.detach().clone().requires_grad_(True)
    k = u.shape[1]
    with torch.enable_grad():
        F = _evaluate_density(density, u, x)
        (dF,) = torch.autograd.grad(F.sum(), u, create_graph=True)
        rows = []
        for i in range(k):
            (row,) = torch.autograd.grad(dF[:, i].sum(), u, retain_graph=i < k - 1)
            rows.append(row)
    return torch.stack(rows, dim=1).detach()


def _gather(a: np.ndarray, comm: Any) -> np.ndarray:
    """Concatenate the rows of ``a`` from every rank (all ranks get all rows)."""
    if comm.size == 1:
        return a
    return np.concatenate(comm.allgather(a), axis=0)


def _r2(y: np.ndarray, residual: np.ndarray) -> float:
    """Coefficient of determination; uncentred when ``y`` is constant (then ``1 - |r|^2/|y|^2``)."""
    ss_res = float(np.sum(residual**2))
    ss_tot = float(np.sum((y - y.mean()) ** 2))
    if ss_tot <= 1e-24 * max(float(np.sum(y**2)), 1e-300):
        ss_tot = float(np.sum(y**2))
        if ss_tot == 0.0:
            return 1.0 if ss_res == 0.0 else -math.inf
    return 1.0 - ss_res / ss_tot


def _scale_fit(y: np.ndarray, x: np.ndarray) -> tuple[float, float, float]:
    """Least-squares ``y ~ c x`` through the origin: ``(c, R^2, relative rms residual)``."""
    xx = float(np.dot(x, x))
    c = float(np.dot(x, y)) / xx if xx > 0 else math.nan
    res = y - c * x
    rel = math.sqrt(float(np.sum(res**2)) / max(float(np.sum(y**2)), 1e-300))
    return c, _r2(y, res), rel


def density_comparison(
    model: OnsagerModel,
    true_density: Any,
    u_samples: torch.Tensor | np.ndarray,
    *,
    conserved: bool,
    gauge_slope: float | None = None,
) -> dict[str, Any]:
    r"""Compare the learned density with the true one, modulo the identifiability gauge.

    Fits, by least squares over the samples,

    .. math:: F_{\rm learned}(u) \approx s\,F_{\rm true}(u) + o\ \,(+\ e\cdot u
              \text{ when ``conserved``})

    and, for the second derivatives (invariant to affine terms, computed by ``torch.autograd``),
    :math:`F''_{\rm learned} \approx s_2 F''_{\rm true}` through the origin (an offset in
    :math:`F''` is a quadratic term in :math:`F`, which does change the dynamics).

    The linear term is fitted only with a conserved mobility: there :math:`e\cdot u` shifts the
    chemical potential by a constant, which :math:`\nabla\cdot m\nabla\mu` does not see, so a
    learned :math:`F` is determined only up to it. With a local (Allen--Cahn) mobility a linear
    term is a real force and must not be fitted away.

    Reading the slope: the model's gauge makes :math:`F_\theta(0, x) = 0` (so :math:`o` absorbs
    the true density's :math:`F_{\rm true}(0)`) and normalises a learnable :math:`\kappa` to mean
    ``kappa_ref``; a model with the true dynamics then has
    :math:`V_{\rm learned} = s V_{\rm true} + {\rm const}` with
    :math:`s = \kappa_{\rm ref}/\kappa_{\rm true}` when the true :math:`\kappa` is constant (and
    :math:`m_{\rm learned} = m_{\rm true}/s`, see :func:`mobility_comparison`).
    Without the gauge (``gauge=None``, or a fixed :math:`\kappa`) the same reasoning gives
    :math:`s = \kappa_{\rm learned}/\kappa_{\rm true}`.

    Parameters
    ----------
    model
        The (learned) model; ``F`` is ``model.energy.density`` (the coercive
        :math:`\frac a2 u^2 + \frac b4 u^4` part included), i.e. ``model.density`` at the model's
        quadrature points.
    true_density
        A :class:`~femeso.energies.Density` (e.g. a ``KnownDensity``) or a callable
        ``(n, k) tensor -> (n,)`` written in PyTorch (for :math:`F''`).
    u_samples
        States ``(n,)`` or ``(n, k)``: e.g. ``model.state_at_points(u)`` of data states (this
        rank's points; a density that depends on position needs exactly these), or a grid of
        values (the same on every rank) for position-independent densities. Several states'
        samples may be stacked (``torch.cat``).
    conserved
        Whether the mobility is conserved (fit the linear term ``e``).
    gauge_slope
        The slope the gauge implies (the ``gauge`` entry of the result).

    Returns
    -------
    dict
        ``slope`` (``s``), ``offset`` (``o``), ``linear`` (``e``: a float for one component, a
        list for several, ``None`` unless ``conserved``), ``r2`` and ``relative_rms`` of the fit,
        ``second_derivative`` (``{"slope", "r2", "relative_rms"}``), ``gauge`` (with
        ``gauge_slope``: the slope fixed to the gauge's value, e.g.
        :math:`\kappa_{\rm ref}/\kappa_{\rm true}`, only the invisible constant and linear
        terms fitted, and R² against the visible, non-affine part of the true density -- the
        strict test; ``None`` without ``gauge_slope``), ``n_samples`` (all ranks),
        ``conserved``.

    Raises
    ------
    ValueError
        For samples of the wrong shape, empty, non-finite, too few to fit, or not at the
        quadrature points for a position-dependent density.

    """
    u = _as_states(model, u_samples)
    k = model.n_states
    uses_pos = model.energy.density.uses_position or getattr(true_density, "uses_position", False)
    x = _positions(model, u, uses_pos, "the density")
    with torch.no_grad():
        F_l = model.energy.density(u, x).numpy()
        F_t = _evaluate_density(true_density, u, x).detach().numpy()
    H_l = _second_derivatives(model.energy.density, u, x).reshape(u.shape[0], -1).numpy()
    H_t = _second_derivatives(true_density, u, x).reshape(u.shape[0], -1).numpy()
    comm = model.mesh.comm
    u_all = _gather(u.numpy(), comm)
    F_l, F_t = _gather(F_l, comm), _gather(F_t, comm)
    H_l, H_t = _gather(H_l, comm), _gather(H_t, comm)
    if not (np.isfinite(F_t).all() and np.isfinite(F_l).all()):
        raise ValueError("density_comparison: a density is not finite at some samples")
    columns = [F_t, np.ones_like(F_t)] + ([u_all[:, i] for i in range(k)] if conserved else [])
    A = np.stack(columns, axis=1)
    if A.shape[0] < A.shape[1] + 1:
        raise ValueError(
            f"density_comparison: {A.shape[0]} samples are too few to fit {A.shape[1]} coefficients"
        )
    coef, *_ = np.linalg.lstsq(A, F_l, rcond=None)
    residual = F_l - A @ coef
    slope2, r2_2, rel2 = _scale_fit(H_l.ravel(), H_t.ravel())
    gauge = None
    if gauge_slope is not None:
        # The slope is fixed by the gauge; only what the dynamics cannot see (a constant, and a
        # linear term for conserved dynamics) is fitted. R^2 is taken against the part of the
        # true density the dynamics do see (what remains after removing those terms).
        invisible = A[:, 1:]
        target = gauge_slope * F_t

        def visible(y: np.ndarray) -> np.ndarray:
            c, *_ = np.linalg.lstsq(invisible, y, rcond=None)
            return y - invisible @ c, c

        residual_g, c_g = visible(F_l - target)
        signal, _ = visible(target)
        gauge = {
            "slope": float(gauge_slope),
            "offset": float(c_g[0]),
            "linear": [float(c) for c in c_g[1:]] if conserved else None,
            "r2": 1.0 - float(np.sum(residual_g**2)) / max(float(np.sum(signal**2)), 1e-300),
        }
    linear = None
    if conserved:
        linear = float(coef[2]) if k == 1 else [float(c) for c in coef[2:]]
    return _plain(
        {
            "slope": float(coef[0]),
            "offset": float(coef[1]),
            "linear": linear,
            "r2": _r2(F_l, residual),
            "relative_rms": math.sqrt(
                float(np.sum(residual**2)) / max(float(np.sum((F_l - F_l.mean()) ** 2)), 1e-300)
            ),
            "second_derivative": {"slope": slope2, "r2": r2_2, "relative_rms": rel2},
            "gauge": gauge,
            "n_samples": int(A.shape[0]),
            "conserved": bool(conserved),
        }
    )


def _mobility_parts(model: OnsagerModel, kind: str) -> list[Any]:
    parts = [m for m in model.mobilities if getattr(m, "kind", None) == kind]
    if not parts:
        kinds = sorted({m.kind for m in model.mobilities}) or ["none"]
        raise ValueError(f"the model has no {kind!r} mobility (it has: {', '.join(kinds)})")
    return parts


def _learned_mobility(
    model: OnsagerModel, u: torch.Tensor, kind: str, x: torch.Tensor | None
) -> torch.Tensor:
    """Return the summed coefficients of the mobilities of ``kind`` at the samples ``(u, x)``."""
    with torch.no_grad():
        values = [m.coefficient(u, x) for m in _mobility_parts(model, kind)]
        return sum(values[1:], values[0])


def _true_mobility(true_mobility: Any, u: torch.Tensor, x: torch.Tensor | None) -> np.ndarray:
    if not callable(true_mobility):
        return np.full(u.shape[0], float(true_mobility))
    with torch.no_grad():
        values = true_mobility(u, x) if _uses_position(true_mobility) else true_mobility(u)
    return torch.as_tensor(values, dtype=DTYPE).detach().numpy()


def _uses_position(field: Any) -> bool:
    return bool(getattr(field, "uses_position", False))


def mobility_samples(
    model: OnsagerModel,
    true_mobility: Callable[..., Any] | float,
    u_samples: torch.Tensor | np.ndarray,
    *,
    kind: str = "conserved",
) -> dict[str, np.ndarray | None]:
    """Return the learned and the true mobility coefficients at the samples, from every rank.

    The samples as in :func:`mobility_comparison` (states at the model's quadrature points when
    either mobility depends on the position).

    Returns
    -------
    dict
        ``u`` ``(n, k)``, ``x`` ``(n, dim)`` (``None`` when neither mobility depends on the
        position), ``learned`` and ``true`` ``(n, k)``: the samples of all ranks.

    """
    if kind not in ("conserved", "local"):
        raise ValueError(f"kind must be 'conserved' or 'local', got {kind!r}")
    u = _as_states(model, u_samples)
    parts = _mobility_parts(model, kind)
    uses_pos = any(m.coefficient.uses_position for m in parts) or _uses_position(true_mobility)
    x = _positions(model, u, uses_pos, f"the {kind} mobility") if uses_pos else None
    m_l = _learned_mobility(model, u, kind, x).numpy().reshape(u.shape[0], -1)
    m_t = _true_mobility(true_mobility, u, x)
    m_t = np.broadcast_to(m_t.reshape(u.shape[0], -1), m_l.shape)
    comm = model.mesh.comm
    return {
        "u": _gather(u.numpy(), comm),
        "x": None if x is None else _gather(np.ascontiguousarray(x.numpy()), comm),
        "learned": _gather(np.ascontiguousarray(m_l), comm),
        "true": _gather(np.ascontiguousarray(m_t), comm),
    }


def mobility_comparison(
    model: OnsagerModel,
    true_mobility: Callable[..., Any] | float,
    u_samples: torch.Tensor | np.ndarray,
    *,
    kind: str = "conserved",
    density_slope: float | None = None,
    gauge_slope: float | None = None,
) -> dict[str, Any]:
    r"""Compare the learned mobility coefficient with the true one, modulo the gauge.

    Fits :math:`m_{\rm learned}(u, x) \approx c\,m_{\rm true}(u, x)` through the origin over the
    samples (all components together). The gauge (see :func:`density_comparison`) predicts
    :math:`c = 1/s` with :math:`s` the density slope, so ``product`` :math:`= s\,c \approx 1` for
    a model with the true dynamics. With ``gauge_slope`` :math:`s_g` (e.g.
    :math:`\kappa_{\rm ref}/\kappa_{\rm true}`, which the gauge fixes) nothing is fitted:
    ``gauge`` compares :math:`s_g\,m_{\rm learned}` with :math:`m_{\rm true}` directly.

    Either mobility may depend on the position (a field with ``uses_position``, e.g. an
    :class:`~femeso.fields.Expression`, called as ``(u, x)``): the samples must then be states
    at the model's quadrature points (one state's or several stacked, see
    :func:`density_comparison`), and the comparison runs over the pairs ``(u, x)``.

    Parameters
    ----------
    model
        The (learned) model; its mobility parts of the given ``kind`` are summed
        (``model.mobility_values``).
    true_mobility
        A number (constant mobility) or a callable ``(n, k) tensor -> (n,)`` or ``(n, k)``
        (e.g. a :class:`~femeso.fields.Expression`); one with a true ``uses_position`` attribute
        is called as ``(u, x)`` with ``x`` ``(n, dim)``.
    u_samples
        States ``(n,)`` or ``(n, k)`` (see :func:`density_comparison`).
    kind
        ``"conserved"`` or ``"local"``.
    density_slope
        The slope ``s`` of :func:`density_comparison`, to report ``product``.
    gauge_slope
        The density slope the gauge implies, for ``gauge``.

    Returns
    -------
    dict
        ``scale`` (``c``), ``r2``, ``relative_rms``, ``product`` (``s * c``, ``None`` without
        ``density_slope``), ``expected_scale`` (``1/s`` or ``None``), ``gauge`` (``None``
        without ``gauge_slope``, else ``slope`` :math:`s_g`, ``relative_l2``
        :math:`\|s_g m_{\rm learned} - m_{\rm true}\| / \|m_{\rm true}\|` over the samples,
        ``r2`` of :math:`s_g m_{\rm learned}` as a prediction of :math:`m_{\rm true}` and
        ``max_relative``, the largest :math:`|s_g m_{\rm learned} / m_{\rm true} - 1|` where
        :math:`m_{\rm true} > 0`), ``position`` (whether either mobility depends on it), ``kind``,
        ``n_samples``.

    Raises
    ------
    ValueError
        If ``kind`` is unknown or the model has no mobility of that kind, or for bad samples.

    """
    if kind not in ("conserved", "local"):
        raise ValueError(f"kind must be 'conserved' or 'local', got {kind!r}")
    values = mobility_samples(model, true_mobility, u_samples, kind=kind)
    m_l, m_t, uses_pos = values["learned"], values["true"], values["x"] is not None
    scale, r2, rel = _scale_fit(m_l.ravel(), m_t.ravel())
    product = None if density_slope is None else float(density_slope) * scale
    gauge = None
    if gauge_slope is not None:
        predicted, truth = float(gauge_slope) * m_l.ravel(), m_t.ravel()
        residual = predicted - truth
        positive = truth > 0
        gauge = {
            "slope": float(gauge_slope),
            "relative_l2": math.sqrt(
                float(np.sum(residual**2)) / max(float(np.sum(truth**2)), 1e-300)
            ),
            "r2": _r2(truth, residual),
            "max_relative": float(np.max(np.abs(residual[positive] / truth[positive])))
            if positive.any()
            else math.nan,
        }
    return _plain(
        {
            "scale": scale,
            "r2": r2,
            "relative_rms": rel,
            "product": product,
            "expected_scale": None if not density_slope else 1.0 / float(density_slope),
            "gauge": gauge,
            "position": bool(uses_pos),
            "kind": kind,
            "n_samples": int(m_l.shape[0]),
        }
    )


def density_curves(
    model: OnsagerModel,
    u_grid: np.ndarray | torch.Tensor,
    *,
    true_density: Any = None,
    fit: dict[str, Any] | None = None,
) -> dict[str, np.ndarray]:
    r"""Return ``F(u)`` on a grid, the learned one mapped back through a gauge fit, for plots.

    ``"learned"`` is :math:`(F_{\rm learned} - o - e u)/s` with the coefficients of ``fit`` (a
    :func:`density_comparison` result; raw :math:`F_{\rm learned}` without one), ``"true"`` is
    ``true_density`` (when given). Position-independent densities only.
    """
    u = _as_states(model, u_grid)
    if model.n_states != 1:
        raise ValueError("density_curves is for one state component")
    with torch.no_grad():
        learned = model.energy.density(u, None).numpy()
        out = {}
        if fit is not None:
            e = fit.get("linear") or 0.0
            learned = (learned - fit["offset"] - e * u[:, 0].numpy()) / fit["slope"]
        out["learned"] = learned
        if true_density is not None:
            out["true"] = _evaluate_density(true_density, u, None).detach().numpy()
    return out


def energy_scaling_exponent(
    model: OnsagerModel,
    states: Sequence[fd.Function],
    amplitudes: Sequence[float] | np.ndarray = np.geomspace(0.25, 2, 8),  # noqa: B008
    *,
    center: bool = False,
) -> dict[str, Any]:
    r"""Measure how the pointwise energy :math:`V_0 = \int F` scales with the state's amplitude.

    For each state and amplitude :math:`a`, :math:`V_0(a u) - V_0(0)` is computed with the model's
    quadrature rule, and the exponent :math:`p` is the least-squares slope of
    :math:`\log|V_0(a u) - V_0(0)|` against :math:`\log a` (the paper's diagnostic: :math:`p = 2`
    for a quadratic density, 4 for a quartic one).

    By default the state itself is scaled, :math:`u \mapsto a u` (the paper scales the input
    amplitude); with ``center=True`` only the fluctuation around the mean is,
    :math:`u \mapsto \bar u + a (u - \bar u)`, and :math:`V_0(0)` becomes :math:`V_0(\bar u)`
    (useful for conserved dynamics around a non-zero mean).

    Parameters
    ----------
    model
        The model (its pointwise density; a position-dependent one is evaluated at the points).
    states
        States on ``model.space``.
    amplitudes
        Positive amplitudes ``a``.
    center
        Scale the fluctuation around the (domain) mean instead of the state.

    Returns
    -------
    dict
        ``amplitudes``, ``exponents`` (per state), ``mean``, ``std``, ``r2`` (per state, of the
        log-log fit), ``local_exponents`` (per state, slopes between consecutive amplitudes),
        ``V0`` (per state and amplitude, :math:`V_0(a u) - V_0(0)`), ``V0_zero`` (per state),
        ``center``. Points with :math:`V_0(a u) = V_0(0)` are left out of the fit.

    Raises
    ------
    ValueError
        Without states, with fewer than two amplitudes or a non-positive one.

    """
    a = np.asarray(amplitudes, dtype=float)
    if a.ndim != 1 or a.size < 2 or not np.all(np.isfinite(a)) or np.any(a <= 0):
        raise ValueError(f"amplitudes must be at least two positive numbers, got {amplitudes!r}")
    states = list(states)
    if not states:
        raise ValueError("energy_scaling_exponent: no states")
    rule = model.rule
    exps, r2s, local, V0s, zeros = [], [], [], [], []
    with torch.no_grad():
        for u in states:
            if u.function_space() != model.space:
                raise ValueError("energy_scaling_exponent: a state is not on the model's space")
            u_q = model.state_at_points(u)
            if center:
                means = torch.tensor(
                    [m / model.volume for m in model.mass(u)], dtype=DTYPE
                ).reshape(1, -1)
            else:
                means = torch.zeros((1, model.n_states), dtype=DTYPE)
            base = means.expand_as(u_q)
            zero = float(rule.integrate(model.density(base)))
            values = np.array(
                [float(rule.integrate(model.density(base + float(s) * (u_q - base)))) for s in a]
            )
            d = values - zero
            # Leave out differences lost to cancellation (and exact zeros).
            ok = np.abs(d) > 1e-13 * np.maximum(np.abs(values), abs(zero))
            la, ld = np.log(a), np.log(np.abs(np.where(ok, d, 1.0)))
            if ok.sum() >= 2:
                coef = np.polyfit(la[ok], ld[ok], 1)
                res = ld[ok] - np.polyval(coef, la[ok])
                exps.append(float(coef[0]))
                r2s.append(_r2(ld[ok], res))
            else:
                exps.append(math.nan)
                r2s.append(math.nan)
            slopes = np.diff(ld) / np.diff(la)
            local.append(np.where(ok[:-1] & ok[1:], slopes, np.nan))
            V0s.append(d)
            zeros.append(zero)
    e = np.array(exps)
    finite = e[np.isfinite(e)]
    return _plain(
        {
            "amplitudes": a,
            "exponents": e,
            "mean": float(finite.mean()) if finite.size else math.nan,
            "std": float(finite.std()) if finite.size else math.nan,
            "r2": r2s,
            "local_exponents": np.array(local),
            "V0": np.array(V0s),
            "V0_zero": zeros,
            "center": bool(center),
        }
    )


def energy_parts_along(model: OnsagerModel, states: Sequence[fd.Function]) -> dict[str, np.ndarray]:
    """Return the energy by parts along a sequence of states.

    Returns
    -------
    dict
        ``"pointwise"``, ``"gradient"``, ``"nonlocal"`` and ``"total"``, each an array with one
        value per state (:meth:`~femeso.model.OnsagerModel.energy_parts`; collective).

    """
    parts = [model.energy_parts(u) for u in states]
    keys = ("pointwise", "gradient", "nonlocal", "total")
    return {key: np.array([p[key] for p in parts], dtype=float) for key in keys}
