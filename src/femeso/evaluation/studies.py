r"""Studies of a model across a range: step sizes, state amplitudes, energy parts along states.

* :func:`step_size_study` -- the model re-run at other step sizes than the data's, compared at a
  common end time, with the errors' empirical order;
* :func:`energy_scaling_exponent` -- the exponent :math:`p` of the paper's
  :math:`V_0(a u) \sim a^p` over a range of amplitudes :math:`a`;
* :func:`energy_parts_along` -- the energy by parts along a sequence of states.
"""

from __future__ import annotations

import math
import time
from collections.abc import Sequence
from typing import Any

import firedrake as fd
import numpy as np
import torch

from femeso._log import logger, progress_bar
from femeso.data.trajectories import TrajectoryData
from femeso.evaluation.metrics import _count_increases, _r2, relative_l2_error
from femeso.evaluation.records import _fmt, _plain
from femeso.evaluation.rollouts import (
    _RTOL_TIME,
    StepperFactory,
    _record_value,
    _rollout_chunked,
    _uniform_step,
)
from femeso.model.fields import DTYPE
from femeso.model.onsager import OnsagerModel

__all__ = ["energy_parts_along", "energy_scaling_exponent", "step_size_study"]


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
