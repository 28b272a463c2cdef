r"""The paper's step-size diagnostics of a trained job: other inference steps, |ΔV| against Δt.

The source paper (REFERENCE.md) trains at the data step :math:`h` and reports, besides the
rollout error tables,

* **inference at other step sizes**: the learned model re-run at :math:`\Delta t` from
  :math:`10^{-5}` to :math:`3\cdot10^{-3}` after training at :math:`10^{-3}`
  (:data:`PAPER_STEP_FACTORS` times :math:`h`; the chains, trained at their own :math:`h`, get the
  same factors). :func:`inference_sweep` rolls the model from one data frame to a common end
  time (default the largest step, :math:`3h`, a whole number of every step) and compares with the
  data frame there and with the finest rollout, checks the model's own energy along each rollout
  and times the steps;
* **one-step** :math:`|\Delta V|` **against** :math:`\Delta t` ("scales roughly like
  :math:`\Delta t^1` for the chains"), read two ways:

  - :func:`one_step_energy_change`: one step of the learned model from several data frames,
    :math:`|V(u^1) - V(u^0)|` of its own energy. femeso's discrete-gradient scheme makes this
    exactly :math:`\Delta t\,a_M(u^*;\mu,\mu)` (order 1 for a dissipative model) and exactly zero
    for a conservative one (:math:`M = 0`: KdV, FPUT, FENE), where only round-off is left;
  - :func:`data_energy_change`: the learned :math:`V` evaluated on *data* frames :math:`k` frame
    steps apart, :math:`|V(u(t + k h)) - V(u(t))|` -- how far the data's own dynamics is from
    conserving (or dissipating like) the learned energy. This is the reading that can show the
    paper's :math:`\Delta t^1` for a conservative model.

:func:`run` does all of it for a trained job (``femeso train`` done) and writes
``<job.output>/report/diagnostics.json`` and ``diagnostics.png``; ``scripts/paper_diagnostics.py``
is its command line. The pointwise-energy scaling exponent, the paper's third diagnostic, is in
every report already (:func:`femeso.evaluation.energy_scaling_exponent`).
"""

from __future__ import annotations

import math
import time
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import firedrake as fd
import numpy as np
from mpi4py import MPI

from femeso._log import logger
from femeso.data.trajectories import TrajectoryData
from femeso.evaluation import relative_l2_error, step_size_study, to_jsonable, write_json

__all__ = [
    "DATA_SPACINGS",
    "PAPER_STEP_FACTORS",
    "ROUND_OFF",
    "data_energy_change",
    "inference_sweep",
    "loglog_slope",
    "one_step_energy_change",
    "plot_diagnostics",
    "run",
    "start_frames",
    "summary_lines",
]

#: The paper's inference steps 1e-5, 3e-5, ..., 3e-3 after training at 1e-3, in data steps.
PAPER_STEP_FACTORS = (0.01, 0.03, 0.1, 0.3, 1.0, 3.0)

#: Spacings (in frame steps) of the data reading of |ΔV|: the data have frames at h multiples only.
DATA_SPACINGS = (1, 2, 4, 8, 16)

#: A mean relative |ΔV| below this is round-off (a conservative scheme), left out of slope fits.
ROUND_OFF = 1e-10

#: A stepper factory ``make_stepper(u0, dt)`` (EnergyStableStepper interface).
StepperFactory = Callable[[fd.Function, float], Any]


# ---------------------------------------------------------------------------------------- helpers
def loglog_slope(x: Sequence[float], y: Sequence[float]) -> float:
    r"""Return the least-squares slope of :math:`\log|y|` against :math:`\log x`.

    Points with a non-finite or zero ``y`` (or a non-positive ``x``) are left out; ``nan`` when
    fewer than two remain.
    """
    x, y = np.asarray(x, dtype=float), np.abs(np.asarray(y, dtype=float))
    ok = np.isfinite(x) & np.isfinite(y) & (x > 0) & (y > 0)
    if ok.sum() < 2:
        return math.nan
    return float(np.polyfit(np.log(x[ok]), np.log(y[ok]), 1)[0])


def start_frames(n_frames: int, count: int, reach: int = 0) -> list[int]:
    """Return up to ``count`` evenly spaced frame indices ``n`` with ``n + reach < n_frames``.

    Raises
    ------
    ValueError
        If ``count < 1`` or the trajectory has no frame ``reach`` frames before its last.

    """
    if count < 1:
        raise ValueError(f"the number of start frames must be >= 1, got {count}")
    last = n_frames - 1 - reach
    if last < 0:
        raise ValueError(
            f"a trajectory of {n_frames} frames has no frame {reach} frames before its last"
        )
    return sorted({int(round(v)) for v in np.linspace(0, last, count)})


def _frame_step(traj: TrajectoryData) -> float:
    steps = np.diff(np.asarray(traj.times, dtype=float))
    if steps.size == 0 or not np.allclose(steps, steps[0], rtol=1e-6, atol=0.0):
        raise ValueError("the trajectory needs at least two equally spaced frames")
    return float(steps[0])


# ------------------------------------------------------------------------------ inference sweep
def inference_sweep(
    make_stepper: StepperFactory,
    traj: TrajectoryData,
    factors: Sequence[float] = PAPER_STEP_FACTORS,
    *,
    t_end: float | None = None,
    progress: bool = False,
) -> dict[str, Any]:
    r"""Roll a model from a trajectory's first frame at other step sizes to a common end time.

    :func:`femeso.evaluation.step_size_study` against the data frame at ``t_end`` (so ``t_end``
    must be a frame time), with the states at ``t_end`` also compared with the finest rollout's
    and the model's own energy followed along each rollout.

    Parameters
    ----------
    make_stepper
        ``make_stepper(u0, dt)``; its steppers' records carry ``energy`` and ``energy_change``
        (:class:`~femeso.stepping.energy_stable.EnergyStableStepper`).
    traj
        The data trajectory (equally spaced frames up to at least ``t_end``).
    factors
        Step sizes as multiples of the frame step ``h``.
    t_end
        Common elapsed end time; default the largest step.
    progress
        A progress bar per rollout (rank 0).

    Returns
    -------
    dict
        What :func:`~femeso.evaluation.step_size_study` returns (``error`` against the data,
        ``energy_increases``, ``wall_time`` ... per step size, sorted) and, per step size,
        ``error_vs_finest`` (``nan`` for the finest), ``seconds_per_step``, ``energy_start``
        and ``energy_end`` (the model's own :math:`V` at the first frame and at ``t_end``),
        ``energy_relative_change`` (:math:`(V_{end} - V_0)/|V_0|`),
        ``max_step_increase`` (the largest one-step :math:`V^{n+1} - V^n`, relative to
        :math:`|V_0|`); ``order_vs_finest`` (log-log slope of ``error_vs_finest``).

    Raises
    ------
    ValueError
        As :func:`~femeso.evaluation.step_size_study` (e.g. no data frame at ``t_end``).

    """
    steppers: dict[float, Any] = {}

    def capturing(u0: fd.Function, dt: float) -> Any:
        # step_size_study keeps only the final states' errors: keep the steppers, whose state
        # after the rollout is the final state, for the comparison with the finest rollout.
        stepper = make_stepper(u0, dt)
        steppers[float(dt)] = stepper
        return stepper

    study = step_size_study(capturing, traj, factors, t_end, reference="data", progress=progress)
    dts = study["dt"]
    finals = [
        None if failure is not None else steppers[float(dt)].u
        for dt, failure in zip(dts, study["failure"], strict=True)
    ]
    finest = finals[0]
    study["error_vs_finest"] = [
        math.nan if k == 0 or u is None or finest is None else relative_l2_error(u, finest)
        for k, u in enumerate(finals)
    ]
    study["order_vs_finest"] = loglog_slope(dts, study["error_vs_finest"])
    study["seconds_per_step"] = [
        w / n for w, n in zip(study["wall_time"], study["n_steps"], strict=True)
    ]
    start, end, change, step_max = [], [], [], []
    for dt in dts:
        records = list(getattr(steppers[float(dt)], "records", []))
        energies = np.array([getattr(r, "energy", math.nan) for r in records], dtype=float)
        if not records or not np.all(np.isfinite(energies)):
            start.append(math.nan)
            end.append(math.nan)
            change.append(math.nan)
            step_max.append(math.nan)
            continue
        v0 = records[0].energy - records[0].energy_change
        scale = abs(v0) if v0 != 0 else 1.0
        start.append(v0)
        end.append(float(energies[-1]))
        change.append((energies[-1] - v0) / scale)
        step_max.append(max(r.energy_change for r in records) / scale)
    study["energy_start"] = start
    study["energy_end"] = end
    study["energy_relative_change"] = change
    study["max_step_increase"] = step_max
    return to_jsonable(study, nan_as_none=False)


# --------------------------------------------------------------------------------- one-step |ΔV|
def one_step_energy_change(
    make_stepper: StepperFactory,
    traj: TrajectoryData,
    factors: Sequence[float] = PAPER_STEP_FACTORS,
    *,
    starts: Sequence[int] = (0,),
) -> dict[str, Any]:
    r"""One step of the model from data frames at each step size: its own :math:`|\Delta V|`.

    For every step :math:`\Delta t = f h` one stepper is built and reset to each start frame
    :math:`u^0` in turn; one step gives :math:`\Delta V = V(u^1) - V(u^0)` of the model's own
    energy (the step record's ``energy_change``).

    Parameters
    ----------
    make_stepper
        ``make_stepper(u0, dt)`` (EnergyStableStepper interface: ``reset``, ``advance``).
    traj
        The data trajectory.
    factors
        Step sizes as multiples of the frame step ``h``.
    starts
        Indices of the start frames.

    Returns
    -------
    dict
        ``dt``, ``starts``, ``delta_V`` (per step size and start frame, signed; ``nan`` where
        the step failed), ``energy`` (:math:`V(u^0)` per start frame), ``mean_abs`` and
        ``mean_relative`` (mean over the start frames of :math:`|\Delta V|` and of
        :math:`|\Delta V|/|V(u^0)|`), ``max_increase`` (largest signed :math:`\Delta V`),
        ``round_off`` (per step size: ``mean_relative < ROUND_OFF``), ``slope`` (log-log slope
        of ``mean_abs`` against :math:`\Delta t` over the steps above round-off; ``nan`` when
        fewer than two are) and ``seconds``.

    Raises
    ------
    ValueError
        On a non-positive factor or a start frame outside the trajectory.

    """
    factors = sorted(float(f) for f in factors)
    if not factors or factors[0] <= 0:
        raise ValueError(f"factors must be positive numbers, got {factors!r}")
    starts = [int(n) for n in starts]
    if not starts or min(starts) < 0 or max(starts) >= len(traj.states):
        raise ValueError(f"start frames {starts} are not frames of a {len(traj.states)}-frame run")
    h = _frame_step(traj)
    t0 = time.perf_counter()
    dts = [f * h for f in factors]
    delta = np.full((len(dts), len(starts)), np.nan)
    energy = np.full(len(starts), np.nan)
    for i, dt in enumerate(dts):
        stepper = make_stepper(traj.states[starts[0]], dt)
        for j, n in enumerate(starts):
            stepper.reset(traj.states[n], t=float(traj.times[n]))
            try:
                record = stepper.advance()
            except (RuntimeError, ArithmeticError) as exc:
                logger.warning("one step of %.3g from frame %d failed: %s", dt, n, exc)
                continue
            delta[i, j] = record.energy_change
            energy[j] = record.energy - record.energy_change
    with np.errstate(invalid="ignore", divide="ignore"):
        mean_abs = np.nanmean(np.abs(delta), axis=1)
        mean_rel = np.nanmean(np.abs(delta) / np.abs(energy)[None, :], axis=1)
    round_off = mean_rel < ROUND_OFF
    slope = loglog_slope(np.where(round_off, np.nan, dts), mean_abs)
    return to_jsonable(
        {
            "dt": dts,
            "factors": factors,
            "starts": starts,
            "delta_V": delta,
            "energy": energy,
            "mean_abs": mean_abs,
            "mean_relative": mean_rel,
            "max_increase": np.nanmax(delta, axis=1),
            "round_off": [bool(r) for r in round_off],
            "slope": slope,
            "seconds": time.perf_counter() - t0,
        },
        nan_as_none=False,
    )


def data_energy_change(
    energy: Callable[[fd.Function], float],
    traj: TrajectoryData,
    spacings: Sequence[int] = DATA_SPACINGS,
    *,
    starts: Sequence[int] | None = None,
) -> dict[str, Any]:
    r"""Return the mean |ΔV| of an energy between data frames :math:`k` frame steps apart.

    For each spacing :math:`k`, the mean over the start frames :math:`n` (those with
    :math:`n + k` a frame) of :math:`|V(u_{n+k}) - V(u_n)|`, and the log-log slope against
    :math:`\Delta t = k h`. With a model's learned :math:`V` this measures how far the data's own
    dynamics is from the model's energy law: a conservative model whose energy the data do not
    exactly conserve shows :math:`|\Delta V| \approx \Delta t\,|dV/dt|`, order 1.

    Parameters
    ----------
    energy
        ``energy(u) -> float``, e.g. :meth:`~femeso.model.OnsagerModel.energy_value`.
    traj
        The data trajectory.
    spacings
        Frame spacings :math:`k \ge 1`.
    starts
        Indices of the start frames; default every frame ``max(spacings)`` frames before the
        last or earlier (the same frames for every spacing).

    Returns
    -------
    dict
        ``spacings``, ``dt``, ``starts``, ``pairs`` (per spacing, how many start frames had a
        frame :math:`k` later), ``mean_abs``, ``mean_relative`` (:math:`|\Delta V| / |V(u_n)|`),
        ``mean_signed`` and ``slope``.

    Raises
    ------
    ValueError
        On a spacing < 1 or a start frame outside the trajectory.

    """
    spacings = sorted(int(k) for k in spacings)
    if not spacings or spacings[0] < 1:
        raise ValueError(f"frame spacings must be integers >= 1, got {spacings!r}")
    n_frames = len(traj.states)
    if n_frames <= spacings[-1]:
        raise ValueError(
            f"a trajectory of {n_frames} frames has no frames {spacings[-1]} steps apart"
        )
    if starts is None:
        starts = range(n_frames - spacings[-1])
    starts = [int(n) for n in starts]
    if not starts or min(starts) < 0 or max(starts) >= n_frames:
        raise ValueError(f"start frames {starts} are not frames of a {n_frames}-frame run")
    h = _frame_step(traj)
    values: dict[int, float] = {}

    def V(n: int) -> float:
        if n not in values:
            values[n] = float(energy(traj.states[n]))
        return values[n]

    mean_abs, mean_rel, mean_signed, pairs = [], [], [], []
    for k in spacings:
        d = np.array([V(n + k) - V(n) for n in starts if n + k < n_frames])
        v = np.array([V(n) for n in starts if n + k < n_frames])
        pairs.append(int(d.size))
        if d.size == 0:
            mean_abs.append(math.nan)
            mean_rel.append(math.nan)
            mean_signed.append(math.nan)
            continue
        mean_abs.append(float(np.mean(np.abs(d))))
        with np.errstate(divide="ignore"):
            mean_rel.append(float(np.mean(np.abs(d) / np.abs(v))))
        mean_signed.append(float(np.mean(d)))
    dts = [k * h for k in spacings]
    return to_jsonable(
        {
            "spacings": spacings,
            "dt": dts,
            "starts": starts,
            "pairs": pairs,
            "mean_abs": mean_abs,
            "mean_relative": mean_rel,
            "mean_signed": mean_signed,
            "slope": loglog_slope(dts, mean_abs),
        },
        nan_as_none=False,
    )


# ------------------------------------------------------------------------------------- the job
def run(
    config: Any,
    *,
    test: int = 0,
    factors: Sequence[float] = PAPER_STEP_FACTORS,
    spacings: Sequence[int] = DATA_SPACINGS,
    n_starts: int = 8,
    progress: bool = True,
) -> dict[str, Any]:
    """Run the paper's step-size diagnostics on a trained job and write them under ``report/``.

    Every step size is one scheme step (the learned model and, when the equation is known, the
    classical solver), whatever ``model.substeps`` the job trained with: the sweep itself
    covers the finer steps.

    Parameters
    ----------
    config
        The job (:func:`femeso.config.load_config`); ``onsager/model.npz`` and the data must
        exist (``femeso train`` done).
    test
        Index of the test trajectory.
    factors
        Inference steps as multiples of the data step (default: the paper's 1e-5 ... 3e-3 at a
        data step of 1e-3). The rollouts run to the largest step.
    spacings
        Frame spacings of the data reading of |ΔV|.
    n_starts
        Number of start frames of the model's one-step reading (evenly spaced over the frames
        that the data reading starts from: those with a frame ``max(spacings)`` later).
    progress
        Progress bars (rank 0).

    Returns
    -------
    dict
        What ``report/diagnostics.json`` holds: ``job``, ``equation``, ``test``, ``frame_dt``,
        ``conservative``, ``substeps_trained``, ``sweep`` (:func:`inference_sweep` of the
        learned model), ``classical`` (the same for the true model when one is known, else
        ``None``), ``one_step`` (:func:`one_step_energy_change`), ``data_reading``
        (:func:`data_energy_change` of the learned V), ``data_reading_true`` (of the true V,
        when known), ``figure``, ``seconds``.

    Raises
    ------
    FileNotFoundError
        If the job is not trained or its data are missing.
    ValueError
        If ``test`` is not a test trajectory, or the trajectory is too short.

    """
    from femeso import jobs

    t0 = time.perf_counter()
    space = jobs.build_space(config)
    model = jobs.load_trained(config, space, "onsager")
    data = jobs.load_data(config, space)["test"]
    if isinstance(test, bool) or not isinstance(test, int) or not 0 <= test < len(data):
        raise ValueError(f"--test must be an integer in 0..{len(data) - 1}, got {test!r}")
    traj = data.trajectories[test]
    h = _frame_step(traj)
    truth = jobs.true_model(config, space)
    logger.info(
        "diagnostics %s: test trajectory %d, frame step %g, steps %s x %g",
        config.job.name,
        test,
        h,
        ", ".join(f"{f:g}" for f in sorted(factors)),
        h,
    )
    sweep = inference_sweep(jobs.stepper_factory(model), traj, factors, progress=progress)
    classical = None
    if truth is not None:
        classical = inference_sweep(jobs.stepper_factory(truth), traj, factors, progress=progress)
    starts = start_frames(len(traj.states), n_starts, reach=max(spacings))
    one_step = one_step_energy_change(jobs.stepper_factory(model), traj, factors, starts=starts)
    # energies of data frames are cheap: every frame with a frame max(spacings) later starts
    reading = data_energy_change(model.energy_value, traj, spacings)
    reading_true = None
    if truth is not None:
        reading_true = data_energy_change(truth.energy_value, traj, spacings)
    results: dict[str, Any] = {
        "job": config.job.name,
        "equation": config.data.equation,
        "test": test,
        "frame_dt": h,
        "conservative": model.is_conservative,
        # every dt above is one scheme step, whatever sub-steps the job trained with
        "substeps_trained": config.model.substeps,
        "sweep": sweep,
        "classical": classical,
        "one_step": one_step,
        "data_reading": reading,
        "data_reading_true": reading_true,
    }
    directory = config.output / "report"
    results["figure"] = str(plot_diagnostics(directory / "diagnostics.png", results))
    results["seconds"] = time.perf_counter() - t0
    write_json(directory / "diagnostics.json", results)
    logger.info("diagnostics: %s (%.0f s)", directory / "diagnostics.json", results["seconds"])
    return results


def plot_diagnostics(
    path: str | Path, results: dict[str, Any], *, comm: Any = MPI.COMM_WORLD
) -> Path:
    r"""Plot the error at the end time and :math:`|\Delta V|` against :math:`\Delta t` (log-log).

    Parameters
    ----------
    path
        The PNG file (written by rank 0 of ``comm``).
    results
        What :func:`run` returns.
    comm
        The communicator.

    Returns
    -------
    pathlib.Path
        ``path`` (on every rank).

    """
    from femeso.evaluation.plots import DPI

    path = Path(path)
    if comm.rank != 0:
        return path
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    def points(x: Any, y: Any) -> tuple[np.ndarray, np.ndarray]:
        x, y = np.asarray(x, dtype=float), np.abs(np.asarray(y, dtype=float))
        ok = np.isfinite(x) & np.isfinite(y) & (y > 0)
        return x[ok], y[ok]

    h = results["frame_dt"]
    fig, (left, right) = plt.subplots(1, 2, figsize=(11, 4.2), layout="constrained")
    s = results["sweep"]
    left.loglog(*points(s["dt"], s["error"]), "o-", label="learned vs data")
    left.loglog(
        *points(s["dt"], s["error_vs_finest"]),
        "s--",
        label=f"learned vs its finest step (order {s['order_vs_finest']:.2f})",
    )
    c = results.get("classical")
    if c is not None:
        left.loglog(*points(c["dt"], c["error"]), "^:", label="true equation vs data")
    left.axvline(h, color="0.5", lw=1, ls=":", label=f"training step {h:g}")
    left.set_xlabel(r"$\Delta t$")
    left.set_ylabel(f"relative $L^2$ error at t = {s['t_end']:g}")
    left.set_title("inference at other step sizes")
    left.legend(fontsize="small")
    left.grid(alpha=0.3, which="both")

    o = results["one_step"]
    x, y = points(np.where(o["round_off"], np.nan, o["dt"]), o["mean_abs"])
    if x.size:
        right.loglog(x, y, "o-", label=f"model's own step (slope {o['slope']:.2f})")
    if any(o["round_off"]):
        xr, yr = points(np.where(o["round_off"], o["dt"], np.nan), o["mean_abs"])
        right.loglog(xr, yr, "x", color="0.4", label="model's own step: round-off (M = 0)")
    d = results["data_reading"]
    right.loglog(
        *points(d["dt"], d["mean_abs"]),
        "s-",
        label=f"learned V on data frames (slope {d['slope']:.2f})",
    )
    t = results.get("data_reading_true")
    if t is not None:
        right.loglog(
            *points(t["dt"], t["mean_abs"]),
            "^:",
            label=f"true V on data frames (slope {t['slope']:.2f})",
        )
    right.set_xlabel(r"$\Delta t$")
    right.set_ylabel(r"mean $|\Delta V|$")
    right.set_title(r"one-step energy change $|\Delta V|$")
    right.legend(fontsize="small")
    right.grid(alpha=0.3, which="both")
    fig.suptitle(f"{results['job']}: test trajectory {results['test']}")
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=DPI, bbox_inches="tight")
    plt.close(fig)
    return path


def _g(x: Any, fmt: str = ".2e") -> str:
    return "-" if x is None or (isinstance(x, float) and not math.isfinite(x)) else format(x, fmt)


def summary_lines(results: dict[str, Any]) -> list[str]:
    """Return the diagnostics as lines of text (the command line prints them)."""
    s, o = results["sweep"], results["one_step"]
    kind = "conservative (M = 0)" if results["conservative"] else "dissipative"
    lines = [
        f"job {results['job']} ({results['equation']}, {kind} model): test trajectory "
        f"{results['test']}, frame step {results['frame_dt']:g}",
        f"inference sweep from frame 0 to t = {s['t_end']:g} (data frame there):",
        f"{'dt':>10}{'steps':>7}{'err vs data':>13}{'err vs finest':>15}{'V rel. change':>15}"
        f"{'V incr.':>9}{'s/step':>9}"
        + (f"{'true eq. vs data':>18}" if results["classical"] else ""),
    ]
    c = results["classical"]
    for k, dt in enumerate(s["dt"]):
        row = (
            f"{dt:>10.3g}{s['n_steps'][k]:>7}{_g(s['error'][k]):>13}"
            f"{_g(s['error_vs_finest'][k]):>15}{_g(s['energy_relative_change'][k], '+.2e'):>15}"
            f"{_g(s['energy_increases'][k], 'd'):>9}{_g(s['seconds_per_step'][k], '.3f'):>9}"
        )
        if c is not None:
            row += f"{_g(c['error'][k]):>18}"
        if s["failure"][k]:
            row += f"  FAILED: {s['failure'][k]}"
        lines.append(row)
    lines.append(f"order of the error against the finest step: {_g(s['order_vs_finest'], '.2f')}")
    lines.append(f"one-step |dV| of the model's own energy (mean over start frames {o['starts']}):")
    lines.append(f"{'dt':>10}{'mean |dV|':>12}{'mean |dV|/|V|':>15}{'max dV':>11}")
    for k, dt in enumerate(o["dt"]):
        note = "  round-off: the scheme conserves V" if o["round_off"][k] else ""
        lines.append(
            f"{dt:>10.3g}{_g(o['mean_abs'][k]):>12}{_g(o['mean_relative'][k]):>15}"
            f"{_g(o['max_increase'][k], '+.1e'):>11}{note}"
        )
    lines.append(f"slope of log|dV| vs log dt (model's own step): {_g(o['slope'], '.2f')}")
    readings = [("learned", results["data_reading"]), ("true", results["data_reading_true"])]
    for name, d in readings:
        if d is None:
            continue
        lines.append(
            f"|dV| of the {name} V on data frames k*h apart (mean over {len(d['starts'])} "
            f"start frames; k = "
            f"{', '.join(str(k) for k in d['spacings'])}): "
            + ", ".join(f"{_g(v)}" for v in d["mean_abs"])
            + f"; slope {_g(d['slope'], '.2f')}"
        )
    lines.append(
        f"written: {Path(results['figure']).with_name('diagnostics.json')}, {results['figure']}"
    )
    return lines
