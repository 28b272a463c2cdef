r"""Autoregressive rollouts compared with data: errors, energies and mass along the way.

A *stepper factory* ``make_stepper(u0, dt) -> stepper`` (:data:`StepperFactory`) builds a stepper
with the :class:`~femeso.stepping.energy_stable.EnergyStableStepper` interface (``reset(u, t=...)``,
``rollout(n_steps, progress=...)`` returning a :class:`~femeso.stepping.energy_stable.Trajectory`).
:func:`rollout_errors` rolls it out from the first state of each data trajectory and measures
the errors at the data frames in both metrics (:mod:`femeso.evaluation.metrics`), the energies,
dissipation and mass (:class:`RolloutReport`, JSON through :meth:`RolloutReport.to_dict`);
:func:`error_table` gives the rows of the paper's tables, :func:`persistence_errors` the trivial
forecast :math:`u(t + \Delta t) = u(t)` that every learned model must beat, and
:func:`relative_energy_drift` the largest relative change of the stepper's own energy.
"""

from __future__ import annotations

import math
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any

import firedrake as fd
import numpy as np

from femeso._log import logger, progress_bar
from femeso.data.trajectories import Dataset, TrajectoryData
from femeso.evaluation.metrics import (
    METRICS,
    _count_increases,
    _masses,
    _range_end,
    _statistics,
    _value_range,
    nodal_relative_rmse,
    relative_l2_error,
    score_errors,
)
from femeso.evaluation.records import _fmt, _plain, to_jsonable
from femeso.stepping.energy_stable import StepRecord, Trajectory

__all__ = [
    "TABLE_STEPS",
    "RolloutReport",
    "StepperFactory",
    "error_table",
    "persistence_errors",
    "relative_energy_drift",
    "rollout_errors",
]

#: A stepper factory: ``make_stepper(u0, dt)`` returns a stepper with the EnergyStableStepper API.
StepperFactory = Callable[[fd.Function, float], Any]

_RTOL_TIME = 1e-6  # relative tolerance when matching times and step ratios

#: The rollout steps of the paper's tables (step 1 to 5) and a long horizon.
TABLE_STEPS = (1, 2, 3, 4, 5, 100)


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
        The rollouts (:class:`~femeso.stepping.energy_stable.Trajectory`, absolute times) when
        kept, else ``None``; see :meth:`trajectory_data` for VTK export and plots.
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
    ``RuntimeError`` or ``ArithmeticError``, e.g.
    :class:`~femeso.stepping.energy_stable.StepFailure`) stops there; its errors count as 1 from
    then on in the statistics (:func:`score_errors`).

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
