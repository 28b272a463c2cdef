r"""Fitting a model to trajectory data: unrolled windows, discrete adjoints, PyTorch optimisers.

A training *window* is a data state :math:`d_0` and the next ``unroll`` states
:math:`d_1, \dots, d_K` of the same trajectory, a step ``dt`` apart. The model takes ``K`` implicit
steps from :math:`d_0`; the window's loss is the mean relative squared mismatch

.. math:: \ell = \frac1K \sum_{j=1}^K \frac{\|u_j - d_j\|_X^2}{\|d_j\|_X^2}

in :math:`X = L^2` (default) or :math:`H^1`, and a minibatch's loss is the mean over its windows.
Gradients come from the discrete adjoint (:func:`femeso.stepping.adjoint.step_vjp`) chained
backwards over the window -- the full gradient of the unrolled loss, or with ``gradient="cut"`` the
paper's protocol, where each step's loss is differentiated through that step only. Long windows can
store only every ``checkpoint_stride``-th state and recompute the rest in the reverse sweep
(memory ``K/s + s`` states instead of ``K``, one extra forward solve per step).

:class:`Trainer` runs the loop: seeded minibatches, any ``torch.optim`` optimiser and scheduler,
validation and the best model, atomic checkpoints every ``checkpoint_every`` iterations and on a
crash, and an exact :meth:`Trainer.run` ``(resume=True)``. Under ``mpiexec`` every rank computes
the same losses and gradients (assembled and summed over the distributed mesh).
"""

from __future__ import annotations

import copy
import gc
import json
import math
import time
import warnings
import zipfile
from collections.abc import Callable
from dataclasses import asdict, dataclass, field
from functools import partial
from pathlib import Path
from typing import Any

import firedrake as fd
import numpy as np
import torch
from mpi4py import MPI

from femeso._files import atomic_write, first_line, on_rank_zero
from femeso._log import logger, progress_bar
from femeso.config import DEFAULTS, GRADIENTS, NORMS, OPTIMIZERS
from femeso.data.trajectories import Dataset
from femeso.model.fields import bound_input_slopes
from femeso.stepping.energy_stable import EnergyStableStepper, StepFailure
from femeso.training.ensemble import TrainingEnsemble
from femeso.training.gauss_newton import LevenbergMarquardt, WindowCurvature, window_curvature

__all__ = [
    "Trainer",
    "TrainingConfig",
    "fit",
    "one_step_pairs",
    "window_loss",
    "window_loss_and_gradient",
]


def _default(name: str) -> Any:
    """Return the default of ``[training] name`` in a job file."""
    return DEFAULTS["training"][name].default


@dataclass
class TrainingConfig:
    """What :class:`Trainer` does; every field is validated on construction.

    Attributes
    ----------
    iterations
        Optimiser steps in total (a resumed run continues up to this number).
    batch_size
        Windows per minibatch (drawn without replacement; all windows if fewer).
    unroll
        Steps per window (the paper: 3-5).
    norm
        ``"L2"`` or ``"H1"``: the norm of the mismatch.
    gradient
        ``"full"`` (the exact gradient of the unrolled loss) or ``"cut"`` (each step's loss
        through that step only, the paper's protocol).
    checkpoint_stride
        Store every ``s``-th state of a window in the forward sweep and recompute the others in
        the reverse sweep; 1 stores all.
    optimizer, learning_rate, weight_decay
        ``"adam"``, ``"adamw"``, ``"sgd"``, ``"lbfgs"`` (full-batch quasi-Newton; one closure
        evaluation per line-search step) or ``"levenberg_marquardt"`` (damped Gauss--Newton with
        the exact tangent carried through every step of a window,
        :mod:`femeso.training.gauss_newton`; the learning rate is the fraction of the step taken,
        1 is the classical method), and its settings.
    lr_decay
        Multiply the learning rate by this factor over the whole run (exponential schedule; 1 is
        constant).
    gradient_clip
        Clip the gradient's norm to this value (0: off).
    max_input_slope
        After every optimiser step, clamp the first-layer weights of the model's neural fields
        to this magnitude (:func:`~femeso.model.fields.bound_input_slopes`; 0: off). It bounds the
        curvature of learned densities where no data constrain them.
    validate_every
        Evaluate the validation windows every this many iterations (0: never).
    validation_windows
        At most this many validation windows (a fixed, seeded choice).
    checkpoint_every
        Write a checkpoint every this many iterations (0: only at the end and on a crash).
    seed
        Seed of the minibatch draws (iteration ``i`` draws with ``default_rng([seed, i])``).

    """

    # The defaults are the job file's ``[training]`` defaults (femeso.config.TrainingSection): one
    # source for the library and the command (``femeso config`` prints them).
    iterations: int = _default("iterations")
    batch_size: int = _default("batch_size")
    unroll: int = _default("unroll")
    norm: str = _default("norm")
    gradient: str = _default("gradient")
    checkpoint_stride: int = _default("checkpoint_stride")
    optimizer: str = _default("optimizer")
    learning_rate: float = _default("learning_rate")
    weight_decay: float = _default("weight_decay")
    lr_decay: float = _default("lr_decay")
    gradient_clip: float = _default("gradient_clip")
    max_input_slope: float = _default("max_input_slope")
    validate_every: int = _default("validate_every")
    validation_windows: int = _default("validation_windows")
    checkpoint_every: int = _default("checkpoint_every")
    seed: int = DEFAULTS["job"]["seed"].default

    def __post_init__(self) -> None:
        positive = ("iterations", "batch_size", "unroll", "checkpoint_stride")
        for name in positive:
            value = getattr(self, name)
            if not isinstance(value, int) or isinstance(value, bool) or value < 1:
                raise ValueError(f"training.{name} must be an integer >= 1, got {value!r}")
        for name in ("validate_every", "validation_windows", "checkpoint_every", "seed"):
            value = getattr(self, name)
            if not isinstance(value, int) or isinstance(value, bool) or value < 0:
                raise ValueError(f"training.{name} must be an integer >= 0, got {value!r}")
        for name, allowed in (
            ("norm", NORMS),
            ("gradient", GRADIENTS),
            ("optimizer", OPTIMIZERS),
        ):
            if getattr(self, name) not in allowed:
                raise ValueError(
                    f"training.{name} must be one of {allowed}, got {getattr(self, name)!r}"
                )
        for name, low in (("learning_rate", 0.0), ("lr_decay", 0.0)):
            value = getattr(self, name)
            if not isinstance(value, int | float) or not math.isfinite(value) or value <= low:
                raise ValueError(f"training.{name} must be a number > {low}, got {value!r}")
        for name in ("weight_decay", "gradient_clip", "max_input_slope"):
            value = getattr(self, name)
            if not isinstance(value, int | float) or not math.isfinite(value) or value < 0:
                raise ValueError(f"training.{name} must be a number >= 0, got {value!r}")


def one_step_pairs(dataset: Dataset) -> list[tuple[fd.Function, fd.Function, float]]:
    """Return every ``(u_k, u_{k+1}, t_{k+1} - t_k)`` of the dataset's trajectories."""
    pairs = []
    for traj in dataset.trajectories:
        for k in range(len(traj.times) - 1):
            pairs.append(
                (traj.states[k], traj.states[k + 1], float(traj.times[k + 1] - traj.times[k]))
            )
    return pairs


def windows_of(dataset: Dataset, unroll: int) -> list[tuple[int, int]]:
    """Return ``(trajectory, start)`` of every window of ``unroll`` steps with a uniform step."""
    windows = []
    for i, traj in enumerate(dataset.trajectories):
        steps = np.diff(traj.times)
        for start in range(len(traj.times) - unroll):
            chunk = steps[start : start + unroll]
            if np.allclose(chunk, chunk[0], rtol=1e-9, atol=0):
                windows.append((i, start))
    return windows


class _Mismatch:
    """Relative squared mismatch ``||u - d||^2 / ||d||^2`` in L2 or H1, and its derivative.

    The forms are built once on work copies of ``u`` and ``d`` (assembling a fresh form costs
    its symbolic preprocessing every time).
    """

    def __init__(self, space: fd.FunctionSpace, norm: str) -> None:
        self.norm = norm
        self.u, self.d = fd.Function(space), fd.Function(space)
        error = self.u - self.d
        self.scale_form = self._inner(self.d, self.d)
        self.error_form = self._inner(error, error)
        self.factor = fd.Function(fd.FunctionSpace(space.mesh(), "R", 0))
        self.derivative_form = self._inner(2 * self.factor * error, fd.TestFunction(space))

    def _inner(self, a: Any, b: Any) -> Any:
        value = fd.inner(a, b) * fd.dx
        if self.norm == "H1":
            value += fd.inner(fd.grad(a), fd.grad(b)) * fd.dx
        return value

    def value(self, u: fd.Function, d: fd.Function) -> float:
        """Return the relative squared mismatch."""
        self.u.assign(u)
        self.d.assign(d)
        return fd.assemble(self.error_form) / fd.assemble(self.scale_form)

    def derivative(self, u: fd.Function, d: fd.Function, factor: float) -> fd.Cofunction:
        """Return ``factor * d/du ||u - d||^2 / ||d||^2``."""
        self.u.assign(u)
        self.d.assign(d)
        self.factor.assign(factor / fd.assemble(self.scale_form))
        return fd.assemble(self.derivative_form)


_MISMATCH: dict[tuple[Any, str], _Mismatch] = {}


def _mismatch(space: fd.FunctionSpace, norm: str) -> _Mismatch:
    key = (space, norm)
    if key not in _MISMATCH:
        _MISMATCH[key] = _Mismatch(space, norm)
    return _MISMATCH[key]


def window_loss(stepper, data: list[fd.Function], *, norm: str = "L2") -> tuple[float, bool]:
    """Roll out over a window; return its loss (no gradient) and whether no step needed halving.

    Parameters
    ----------
    stepper
        A stepper (:class:`~femeso.stepping.energy_stable.EnergyStableStepper` or the black-box
        baseline's) at the window's step size.
    data
        The window's data states ``d_0, ..., d_K``.
    norm
        ``"L2"`` or ``"H1"``.

    """
    mismatch = _mismatch(stepper.model.space, norm)
    stepper.reset(data[0])
    total, clean = 0.0, True
    for target in data[1:]:
        record = stepper.advance()
        clean = clean and record.halvings == 0
        total += mismatch.value(stepper.u, target)
    return total / (len(data) - 1), clean


def window_loss_and_gradient(
    stepper,
    data: list[fd.Function],
    *,
    norm: str = "L2",
    gradient: str = "full",
    checkpoint_stride: int = 1,
    weight: float = 1.0,
) -> tuple[float, bool]:
    r"""Return a window's loss and add ``weight`` times its parameter gradient into ``.grad``.

    A stepper that takes several scheme steps per step (``EnergyStableStepper(substeps=n)``)
    logs them during the window, and the adjoint runs back through every one; the loss sees
    the data steps only.

    Parameters
    ----------
    stepper
        A stepper with the adjoint protocol (``restore``, ``vjp``) at the window's step.
    data
        The window's data states ``d_0, ..., d_K``.
    norm, gradient, checkpoint_stride
        See :class:`TrainingConfig`.
    weight
        Factor of the gradient (e.g. ``1 / batch size`` for a mean over windows).

    Returns
    -------
    loss, clean
        The window's loss; ``clean`` is False when a step needed halvings, in which case no
        gradient was accumulated (the converged systems are not those of whole steps).

    """
    K = len(data) - 1
    mismatch = _mismatch(stepper.model.space, norm)
    stride = max(1, checkpoint_stride)
    stored: dict[int, fd.Function] = {}  # start states of the steps kept in the forward sweep
    substeps: dict[int, list] = {}  # per step: its accepted sub-steps (start, unknowns, dt)
    logging_before = getattr(stepper, "log_substeps", None)
    if logging_before is not None:
        stepper.log_substeps = True
    try:
        stepper.reset(data[0])
        total, clean = 0.0, True
        for j in range(K):
            if j % stride == 0:
                stored[j] = stepper.u.copy(deepcopy=True)
            record = stepper.advance()
            clean = clean and record.halvings == 0
            if stride == 1:
                substeps[j] = _accepted_substeps(stepper, stored.get(j))
            total += mismatch.value(stepper.u, data[j + 1])
        loss = total / K
        if not clean:
            return loss, False
        factor = weight / K
        adjoint: fd.Cofunction | None = None
        for segment_start in reversed(range(0, K, stride)):
            segment = range(segment_start, min(segment_start + stride, K))
            if stride > 1:  # recompute the segment's steps from its stored start state
                substeps = {}
                stepper.reset(stored[segment_start])
                for j in segment:
                    start = stepper.u.copy(deepcopy=True)
                    record = stepper.advance()
                    if record.halvings:
                        logger.debug("window recompute needed halvings; gradient skipped")
                        return loss, False
                    substeps[j] = _accepted_substeps(stepper, start)
            for j in reversed(segment):
                u_next = substeps[j][-1][1].subfunctions[0]
                seed = mismatch.derivative(u_next, data[j + 1], factor)
                if adjoint is not None and gradient == "full":
                    seed.dat.data[...] += adjoint.dat.data_ro
                for s, (start, unknowns, dt) in reversed(list(enumerate(substeps[j]))):
                    stepper.restore(start, unknowns, dt)
                    # "cut": the gradient stops between data steps, not between sub-steps
                    seed = stepper.vjp(seed, wrt_state=s > 0 or (gradient == "full" and j > 0))
                adjoint = seed
    finally:
        if logging_before is not None:
            stepper.log_substeps, stepper.substep_log = logging_before, []
    return loss, True


def _accepted_substeps(stepper, start: fd.Function | None) -> list:
    """Return the last step's sub-steps ``(start, unknowns, dt)``: logged, or the one taken."""
    log = getattr(stepper, "substep_log", None)
    if log:
        return list(log)
    if start is None:
        raise RuntimeError("the stepper did not log its sub-steps")
    return [(start, stepper.w.copy(deepcopy=True), None)]


@dataclass(slots=True)
class IterationRecord:
    """One optimiser step of a :class:`Trainer`."""

    iteration: int
    loss: float
    validation: float | None
    seconds: float
    skipped: int
    learning_rate: float


@dataclass
class TrainingHistory:
    """Records of every iteration and the best validation result so far."""

    records: list[IterationRecord] = field(default_factory=list)
    best_validation: float = math.inf
    best_iteration: int = -1

    @property
    def losses(self) -> list[float]:
        """Minibatch loss of every iteration."""
        return [r.loss for r in self.records]

    def to_dict(self) -> dict:
        """JSON-serialisable form."""
        return {
            "records": [asdict(r) for r in self.records],
            "best_validation": self.best_validation,
            "best_iteration": self.best_iteration,
        }

    @classmethod
    def from_dict(cls, data: dict) -> TrainingHistory:
        """Inverse of :meth:`to_dict`."""
        return cls(
            [IterationRecord(**r) for r in data["records"]],
            float(data["best_validation"]),
            int(data["best_iteration"]),
        )


StepperFactory = Callable[[fd.Function, float], Any]


def step_schedule(scheduler: torch.optim.lr_scheduler.LRScheduler) -> None:
    """Advance the learning-rate schedule by one iteration, also after a skipped iteration.

    The trainer steps the schedule on an iteration it skips (no window of the minibatch could
    be stepped), so that the schedule stays a function of the iteration and a resumed run
    matches an uninterrupted one. When the first iteration is skipped, PyTorch takes that for a
    misordered loop and warns "Detected call of lr_scheduler.step() before optimizer.step()";
    that warning, and only that one, is silenced here, for this call only.
    """
    with warnings.catch_warnings():
        warnings.filterwarnings(
            "ignore",
            message=r"Detected call of `lr_scheduler\.step\(\)` before `optimizer\.step\(\)`",
            category=UserWarning,
        )
        scheduler.step()


class Trainer:
    """Fit a model (Onsager or black-box) to trajectory data with adjoint gradients.

    Parameters
    ----------
    model
        A ``torch.nn.Module`` with ``space`` and ``mesh`` (an
        :class:`~femeso.model.OnsagerModel` or :class:`~femeso.peers.blackbox.BlackBoxModel`).
    train, validation
        Datasets on the model's space; ``validation`` may be ``None``.
    config
        A :class:`TrainingConfig`.
    make_stepper
        ``make_stepper(u0, dt)`` returns a stepper for the model; default
        ``EnergyStableStepper(model, u0, dt, solver_parameters=solver_parameters)``.
    directory
        Where checkpoints (``checkpoint.pt``), the best model and ``history.json`` go; ``None``
        keeps nothing on disk.
    solver_parameters
        PETSc options of the default stepper.
    progress
        Show a progress bar with the loss and the ETA (rank 0).
    ensemble
        The members that share each minibatch's windows
        (:class:`~femeso.training.ensemble.TrainingEnsemble`; the model's mesh must live on its
        spatial communicator). Default: one member, the mesh's communicator. Files are written
        by rank 0 of the ensemble's ``COMM_WORLD``.

    """

    #: Run a full garbage collection after every iteration of :meth:`run` (see there).
    collect_garbage: bool = True

    def __init__(
        self,
        model: torch.nn.Module,
        train: Dataset,
        validation: Dataset | None = None,
        config: TrainingConfig | None = None,
        *,
        make_stepper: StepperFactory | None = None,
        directory: str | Path | None = None,
        solver_parameters: dict | None = None,
        progress: bool = True,
        ensemble: TrainingEnsemble | None = None,
    ) -> None:
        self.model = model
        self.ensemble = ensemble or TrainingEnsemble(comm=model.mesh.comm)
        if MPI.Comm.Compare(model.mesh.comm, self.ensemble.comm) not in (MPI.IDENT, MPI.CONGRUENT):
            raise ValueError("the model's mesh must live on the ensemble's spatial communicator")
        self.config = config or TrainingConfig()
        for name, data in (("train", train), ("validation", validation)):
            if data is not None and data.space != model.space:
                raise ValueError(f"the {name} data and the model must share one function space")
        self.train, self.validation = train, validation
        self.windows = windows_of(train, self.config.unroll)
        if not self.windows:
            raise ValueError(
                f"the training data has no window of {self.config.unroll} uniform step(s)"
            )
        self.validation_windows: list[tuple[int, int]] = []
        if validation is not None and self.config.validate_every:
            candidates = windows_of(validation, self.config.unroll)
            rng = np.random.default_rng([self.config.seed, 7919])
            chosen = rng.permutation(len(candidates))[: self.config.validation_windows]
            self.validation_windows = [candidates[i] for i in sorted(chosen)]
        self._make_stepper = make_stepper or (
            lambda u0, dt: EnergyStableStepper(model, u0, dt, solver_parameters=solver_parameters)
        )
        self._steppers: dict[float, Any] = {}
        self.directory = Path(directory) if directory is not None else None
        self.progress = progress
        #: The communicator whose rank 0 writes the checkpoints and model files.
        self.comm = self.ensemble.writer
        self.optimizer = self._build_optimizer()
        gamma = self.config.lr_decay ** (1.0 / self.config.iterations)
        self.scheduler = torch.optim.lr_scheduler.ExponentialLR(self.optimizer, gamma=gamma)
        self.history = TrainingHistory()
        self.iteration = 0
        #: Iterations done before :meth:`load_checkpoint` (0 for a fresh run): the history's
        #: first ``resumed_iteration`` records come from an earlier process.
        self.resumed_iteration = 0
        self._initial_state = {k: v.detach().clone() for k, v in model.state_dict().items()}
        self.timings = {"forward_and_adjoint": 0.0, "optimizer": 0.0, "validation": 0.0}

    # ------------------------------------------------------------------ set-up
    def _build_optimizer(self) -> torch.optim.Optimizer:
        c = self.config
        params = [p for p in self.model.parameters() if p.requires_grad]
        if not params:
            raise ValueError("the model has no trainable parameters")
        if c.optimizer == "adam":
            return torch.optim.Adam(params, lr=c.learning_rate, weight_decay=c.weight_decay)
        if c.optimizer == "adamw":
            return torch.optim.AdamW(params, lr=c.learning_rate, weight_decay=c.weight_decay)
        if c.optimizer == "sgd":
            return torch.optim.SGD(params, lr=c.learning_rate, weight_decay=c.weight_decay)
        if c.optimizer == "levenberg_marquardt":
            return LevenbergMarquardt(params, lr=c.learning_rate)
        return torch.optim.LBFGS(
            params, lr=c.learning_rate, max_iter=1, history_size=20, line_search_fn="strong_wolfe"
        )

    def _stepper(self, u0: fd.Function, dt: float):
        key = round(dt, 12)
        if key not in self._steppers:
            self._steppers[key] = self._make_stepper(u0, dt)
        return self._steppers[key]

    @staticmethod
    def _window_data(dataset: Dataset, window: tuple[int, int], unroll: int):
        traj = dataset.trajectories[window[0]]
        start = window[1]
        dt = float(traj.times[start + 1] - traj.times[start])
        return traj.states[start : start + unroll + 1], dt

    # ------------------------------------------------------------------ one iteration
    def batch(self, iteration: int) -> list[tuple[int, int]]:
        """Return the windows of an iteration (a function of the seed and the iteration only)."""
        rng = np.random.default_rng([self.config.seed, iteration])
        n = len(self.windows)
        chosen = rng.choice(n, size=min(self.config.batch_size, n), replace=False)
        return [self.windows[i] for i in chosen]

    def loss_and_gradient(self, windows: list[tuple[int, int]]) -> tuple[float, int]:
        """Zero the gradients, then return the mean window loss and the number of skipped windows.

        The gradient of the mean over the windows that completed without halvings is left in
        the parameters' ``.grad``. Each ensemble member rolls out its share of ``windows``; the
        losses, counts and gradients are summed over the members.
        """
        c = self.config
        self.optimizer.zero_grad()
        loss_sum, completed, skipped = 0.0, 0, 0
        for window in self.ensemble.share(windows):
            data, dt = self._window_data(self.train, window, c.unroll)
            stepper = self._stepper(data[0], dt)
            try:
                loss, clean = window_loss_and_gradient(
                    stepper,
                    data,
                    norm=c.norm,
                    gradient=c.gradient,
                    checkpoint_stride=c.checkpoint_stride,
                    weight=1.0 / len(windows),
                )
            except StepFailure as exc:
                logger.warning("window %s: %s; skipped", window, exc)
                skipped += 1
                continue
            finally:
                stepper.records.clear()  # the trainer's steppers keep no history
            loss_sum += loss
            completed += 1
            skipped += not clean
        loss_sum, completed, skipped = self.ensemble.sum([loss_sum, completed, skipped])
        completed, skipped = int(completed), int(skipped)
        if not completed:
            raise StepFailure("every window of the minibatch failed")
        params = [p for p in self.model.parameters() if p.requires_grad]
        self.ensemble.sum_gradients(params)
        if skipped and skipped < len(windows):  # the mean over the windows that gave gradients
            for p in params:
                if p.grad is not None:
                    p.grad *= len(windows) / (len(windows) - skipped)
        return float(loss_sum / completed), skipped

    def _lm_closure(self, windows: list[tuple[int, int]], curvature: bool, bound: float):
        """Mean loss (and Gauss--Newton curvature) of the windows, for Levenberg--Marquardt.

        Windows whose step fails or needs halvings are left out of the curvature; a loss-only
        evaluation (a trial step) stops as soon as its mean must exceed ``bound``. Each ensemble
        member evaluates its share of ``windows``; the parts are summed over the members.
        """
        total: WindowCurvature | None = None
        used, loss_sum = 0, 0.0
        for window in self.ensemble.share(windows):
            data, dt = self._window_data(self.train, window, self.config.unroll)
            stepper = self._stepper(data[0], dt)
            try:
                if curvature:
                    part = window_curvature(stepper, data, norm=self.config.norm)
                    total = part if total is None else total.__iadd__(part)
                    used += 1
                else:  # a trial step: a step that needs halvings already rejects it
                    saved, stepper.max_halvings = stepper.max_halvings, 0
                    try:
                        loss_sum += window_loss(stepper, data, norm=self.config.norm)[0]
                    finally:
                        stepper.max_halvings = saved
            except StepFailure as exc:
                if not curvature:
                    logger.debug("trial step rejected on window %s: %s", window, exc)
                    loss_sum = math.inf  # the trial parameters do not step: reject them
                    break
                logger.warning("window %s: %s; skipped", window, exc)
            finally:
                stepper.records.clear()
            if not curvature and loss_sum >= bound * len(windows):
                loss_sum = math.inf  # this member's part alone exceeds the bound
                break
        if not curvature:
            return float(self.ensemble.sum([loss_sum])[0]) / len(windows)
        n = sum(p.numel() for p in self.model.parameters() if p.requires_grad)
        if total is None:
            total = WindowCurvature(0.0, np.zeros(n), np.zeros((n, n)))
        parts = self.ensemble.sum(
            np.concatenate([[total.loss, used], total.gradient.ravel(), total.hessian.ravel()])
        )
        used = int(parts[1])
        if not used:
            raise StepFailure("every window of the minibatch failed")
        gradient = parts[2 : 2 + n].reshape(total.gradient.shape)
        hessian = parts[2 + n :].reshape(total.hessian.shape)
        return WindowCurvature(parts[0] / used, gradient / used, hessian / used)

    def validate(self) -> float:
        """Return the mean loss over the validation windows (forward only; a failure is inf).

        Each ensemble member rolls out its share of the windows; the sum is over the members.
        """
        total, count = 0.0, 0
        for window in self.ensemble.share(self.validation_windows):
            data, dt = self._window_data(self.validation, window, self.config.unroll)
            try:
                stepper = self._stepper(data[0], dt)
                total += window_loss(stepper, data, norm=self.config.norm)[0]
                stepper.records.clear()
            except StepFailure:
                total = math.inf
            count += 1
        total, count = self.ensemble.sum([total, count])
        return float(total / count) if count else math.nan

    def step(self) -> IterationRecord:
        """Take one optimiser step (iteration ``self.iteration + 1``) and record it."""
        c = self.config
        t0 = time.perf_counter()
        windows = self.batch(self.iteration + 1)
        params = [p for p in self.model.parameters() if p.requires_grad]
        result: dict[str, Any] = {}

        def closure() -> torch.Tensor:
            loss, skipped = self.loss_and_gradient(windows)
            if c.gradient_clip:
                torch.nn.utils.clip_grad_norm_(params, c.gradient_clip)
            result.setdefault("loss", loss)
            result["skipped"] = skipped
            return torch.tensor(loss, dtype=torch.float64)

        start = torch.nn.utils.parameters_to_vector(params).detach().clone()
        try:
            if c.optimizer == "levenberg_marquardt":
                result["loss"] = self.optimizer.step(partial(self._lm_closure, windows))
                result["skipped"] = 0
            elif c.optimizer == "lbfgs":
                self.optimizer.step(closure)
            else:
                closure()
                t1 = time.perf_counter()
                self.optimizer.step()
                self.timings["optimizer"] += time.perf_counter() - t1
        except StepFailure as exc:
            # No window of this minibatch could be stepped with the current parameters (e.g. a
            # Flory-Huggins state pushed out of (0, 1)): skip the iteration and go back to
            # parameters that stepped. Staying put made every later minibatch fail as well (the
            # FH plate on 100-frame trajectories, after an LM step accepted on other windows).
            with torch.no_grad():
                torch.nn.utils.vector_to_parameters(start, params)
            logger.warning("iteration %d skipped: %s; %s", self.iteration + 1, exc, self._recover())
            result = {"loss": math.nan, "skipped": len(windows)}
        if c.max_input_slope:
            bound_input_slopes(self.model, c.max_input_slope)
        step_schedule(self.scheduler)
        self.iteration += 1
        validation = None
        if self.validation_windows and c.validate_every and self.iteration % c.validate_every == 0:
            t1 = time.perf_counter()
            validation = self.validate()
            self.timings["validation"] += time.perf_counter() - t1
            if validation < self.history.best_validation:
                self.history.best_validation, self.history.best_iteration = (
                    validation,
                    self.iteration,
                )
                self._save_best()
        record = IterationRecord(
            iteration=self.iteration,
            loss=result["loss"],
            validation=validation,
            seconds=time.perf_counter() - t0,
            skipped=result["skipped"],
            learning_rate=self.optimizer.param_groups[0]["lr"],
        )
        self.timings["forward_and_adjoint"] += record.seconds
        self.history.records.append(record)
        return record

    # ------------------------------------------------------------------ the loop
    def run(self, *, resume: bool = False) -> TrainingHistory:
        """Train up to ``config.iterations`` iterations; returns the history.

        Parameters
        ----------
        resume
            Continue from ``directory/checkpoint.pt`` exactly where it stopped (parameters,
            optimiser and scheduler state, iteration, history; minibatches are a function of the
            seed and the iteration). Without a checkpoint, start from scratch.

        """
        if resume:
            if self.directory is None:
                raise ValueError("resume needs a checkpoint directory")
            if self.checkpoint_path.exists():
                self.load_checkpoint(self.checkpoint_path)
            else:
                logger.info("no checkpoint in %s: starting from scratch", self.directory)
        c = self.config
        bar = progress_bar(
            c.iterations,
            "femeso train",
            "it",
            enabled=self.progress and self.iteration < c.iterations,
            initial=self.iteration,
        )
        # Every step leaves Firedrake functions and PETSc vectors in reference cycles; with the
        # large heap of UFL/Firedrake objects Python's full collections are rare (3 in 100
        # iterations) and the garbage piles up (bench/train_cost.py: +0.3 MiB/iteration at 426
        # DoFs, growing with the mesh). Freezing the set-up's objects makes them frequent.
        gc.collect()
        gc.freeze()
        gc.collect()
        try:
            while self.iteration < c.iterations:
                record = self.step()
                # Each iteration still leaves ~70 Functions (the windows' state copies) and ~34k
                # other objects in cycles; collecting them here, not when Python's counters say
                # so, keeps the memory flat. Measured (bench/train_cost.py --mesh interval, 65
                # DoFs, 300 iterations): RSS slope 1.24 -> 0.31 KiB/iteration, at 1.6 ms per
                # collection (0.3 % of a 0.52 s iteration) thanks to the freeze above.
                if self.collect_garbage:
                    gc.collect()
                if bar is not None:
                    postfix = {"loss": f"{record.loss:.3e}"}
                    if self.history.best_iteration > 0:
                        postfix["val"] = f"{self.history.best_validation:.3e}"
                    bar.set_postfix(postfix, refresh=False)
                    bar.update()
                if (
                    self.directory is not None
                    and c.checkpoint_every
                    and self.iteration % c.checkpoint_every == 0
                ):
                    self.save_checkpoint()
        except BaseException:
            # nothing lost on a crash or Ctrl-C: the last completed iteration is kept
            if self.directory is not None and self.history.records:
                self.save_checkpoint()
                logger.warning(
                    "training stopped at iteration %d; checkpoint in %s (resume with resume=True)",
                    self.iteration,
                    self.checkpoint_path,
                )
            raise
        finally:
            gc.unfreeze()
            if bar is not None:
                bar.close()
        if self.directory is not None:
            self.save_checkpoint()
        if self.history.records:
            first, last = self.history.records[0], self.history.records[-1]
            logger.info(
                "train: loss %.3e -> %.3e over %d iterations%s",
                first.loss,
                last.loss,
                self.iteration,
                f"; best validation {self.history.best_validation:.3e} at iteration "
                f"{self.history.best_iteration}"
                if self.history.best_iteration > 0
                else "",
            )
        return self.history

    # ------------------------------------------------------------------ checkpoints
    @property
    def checkpoint_path(self) -> Path:
        """``directory/checkpoint.pt``."""
        if self.directory is None:
            raise ValueError("this trainer has no directory")
        return self.directory / "checkpoint.pt"

    def state_dict(self) -> dict:
        """Everything a resumed run needs (tensors and plain Python values only)."""
        return {
            "format": "femeso-checkpoint-1",
            "iteration": self.iteration,
            "model": self.model.state_dict(),
            "optimizer": self.optimizer.state_dict(),
            "scheduler": self.scheduler.state_dict(),
            "torch_rng": torch.get_rng_state(),
            "config": asdict(self.config),
            "history": json.dumps(self.history.to_dict()),
            "best_model": getattr(self, "_best_state", None),
        }

    def save_checkpoint(self, path: str | Path | None = None) -> Path:
        """Write :meth:`state_dict` atomically (rank 0) and the history as JSON beside it.

        Raises
        ------
        OSError
            If a file cannot be written (disk full, file-size limit ...): one line naming it, its
            temporary removed, an existing checkpoint of that name unchanged.

        """
        path = Path(path) if path is not None else self.checkpoint_path

        def write() -> None:
            path.parent.mkdir(parents=True, exist_ok=True)
            with atomic_write(path, "the training checkpoint") as f:
                try:
                    torch.save(self.state_dict(), f)
                except RuntimeError as exc:
                    # torch's zip writer reports a failed write (disk full ...) as RuntimeError
                    raise OSError(
                        "the write failed (disk full or file-size limit?)"
                        if "write" in str(exc)
                        else first_line(exc)
                    ) from exc
            history = path.with_name("history.json")
            with atomic_write(history, "the training history") as f:
                f.write(json.dumps(self.history.to_dict(), indent=1).encode())

        on_rank_zero(self.comm, write)
        return path

    def load_checkpoint(self, path: str | Path) -> None:
        """Restore a :meth:`save_checkpoint` (same configuration but for ``iterations``).

        The file is read with ``torch.load(weights_only=True)`` (tensors and plain values only,
        never code) and checked whole -- format, settings, the model's parameter names, shapes
        and dtypes -- before the trainer changes; a checkpoint that does not fit leaves the
        trainer as it was.

        Raises
        ------
        FileNotFoundError
            If there is no such file.
        ValueError
            One line naming the file and what is wrong: unreadable (truncated, corrupt),
            holding pickled objects, not a femeso checkpoint, written with other settings or for
            another architecture.

        """
        path = Path(path)
        if not path.exists():
            raise FileNotFoundError(f"{path}: checkpoint not found")
        if not path.is_file():
            raise ValueError(f"{path}: not a training checkpoint (not a regular file)")
        _check_archive(path)
        try:
            state = torch.load(path, weights_only=True, map_location="cpu")
        except Exception as exc:  # whatever a damaged or hostile file makes torch raise
            reason = first_line(exc).split(". ")[0]
            if "Weights only load failed" in str(exc):
                reason = _unpickler_reason(exc)
                if "global" in reason.lower():  # a class or function: code run on loading
                    raise ValueError(
                        f"{path}: refused: the checkpoint holds pickled Python objects, not only "
                        f"tensors and plain values ({reason})"
                    ) from None
            raise ValueError(
                f"{path}: not a readable training checkpoint (truncated or corrupt: {reason})"
            ) from None
        if not isinstance(state, dict) or state.get("format") != "femeso-checkpoint-1":
            raise ValueError(f"{path}: not a femeso training checkpoint")
        for key, kind in _CHECKPOINT_ENTRIES.items():
            if not isinstance(state.get(key), kind):
                raise ValueError(f"{path}: corrupt checkpoint (entry {key!r} missing or invalid)")
        saved = dict(state["config"])
        mine = asdict(self.config)
        saved.pop("iterations", None), mine.pop("iterations")
        if saved != mine:
            changed = sorted(k for k in set(mine) | set(saved) if saved.get(k) != mine.get(k))
            raise ValueError(f"{path}: the checkpoint was written with other settings: {changed}")
        expected = self.model.state_dict()
        for entry in ("model", "best_model"):
            if state.get(entry) is not None:
                _check_parameters(path, entry, state[entry], expected)
        try:
            history = TrainingHistory.from_dict(json.loads(state["history"]))
            iteration = int(state["iteration"])
        except (ValueError, KeyError, TypeError) as exc:
            raise ValueError(f"{path}: corrupt checkpoint (history: {first_line(exc)})") from None
        # Everything else is checked by the load_state_dict calls: undo them if one refuses.
        backup = (
            {k: v.detach().clone() for k, v in expected.items()},
            copy.deepcopy(self.optimizer.state_dict()),
            copy.deepcopy(self.scheduler.state_dict()),
            torch.get_rng_state(),
        )
        try:
            self.model.load_state_dict(state["model"])
            self.optimizer.load_state_dict(state["optimizer"])
            self.scheduler.load_state_dict(state["scheduler"])
            torch.set_rng_state(state["torch_rng"])
        except (ValueError, KeyError, TypeError, RuntimeError, IndexError) as exc:
            self.model.load_state_dict(backup[0])
            self.optimizer.load_state_dict(backup[1])
            self.scheduler.load_state_dict(backup[2])
            torch.set_rng_state(backup[3])
            raise ValueError(
                f"{path}: the checkpoint does not fit this trainer ({first_line(exc)})"
            ) from None
        self.iteration = self.resumed_iteration = iteration
        self.history = history
        self._best_state = state.get("best_model")
        self._steppers.clear()
        logger.info("resumed from %s at iteration %d", path, self.iteration)

    def _recover(self) -> str:
        """Load the best validated parameters (else the initial ones) after a failed minibatch.

        Levenberg--Marquardt's damping grows by its rejection factor, so that the next steps from
        there are shorter. Returns what was done, for the log.
        """
        best = getattr(self, "_best_state", None)
        self.model.load_state_dict(best if best is not None else self._initial_state)
        what = (
            f"back to the best validated parameters (iteration {self.history.best_iteration})"
            if best is not None
            else "back to the initial parameters"
        )
        if isinstance(self.optimizer, LevenbergMarquardt):
            group = self.optimizer.param_groups[0]
            group["damping"] = min(group["damping"] * group["increase"], 1e12)
            what += f", damping {group['damping']:.1e}"
        return what

    def _save_best(self) -> None:
        self._best_state = {k: v.detach().clone() for k, v in self.model.state_dict().items()}
        if self.directory is not None and hasattr(self.model, "save"):
            self.directory.mkdir(parents=True, exist_ok=True)
            self.model.save(self.directory / "best_model.npz", comm=self.comm)

    def load_best(self) -> bool:
        """Load the best-on-validation parameters into the model; False when there are none."""
        best = getattr(self, "_best_state", None)
        if best is None:
            return False
        self.model.load_state_dict(best)
        return True


#: The entries of a training checkpoint and their types (``best_model`` may also be ``None``).
_CHECKPOINT_ENTRIES = {
    "iteration": int,
    "model": dict,
    "optimizer": dict,
    "scheduler": dict,
    "torch_rng": torch.Tensor,
    "config": dict,
    "history": str,
}


def _check_archive(path: Path) -> None:
    """Refuse an empty file or a damaged zip archive before torch's reader sees it.

    torch reports a truncated archive as ``[Errno 22] Invalid argument`` or as a paragraph about
    miniz; Python's reader says what is wrong and checks every member's CRC.
    """
    with open(path, "rb") as f:
        magic = f.read(4)
    if not magic:
        raise ValueError(f"{path}: not a readable training checkpoint (empty file)")
    if magic != b"PK\x03\x04":
        return  # not a zip archive: torch's legacy format, or garbage that torch refuses
    try:
        with zipfile.ZipFile(path) as archive:
            bad = archive.testzip()
    except (zipfile.BadZipFile, OSError, EOFError, ValueError, NotImplementedError) as exc:
        raise ValueError(
            f"{path}: not a readable training checkpoint (truncated or corrupt: {first_line(exc)})"
        ) from None
    if bad is not None:
        raise ValueError(
            f"{path}: not a readable training checkpoint (corrupt: entry {bad!r} fails its CRC)"
        )


def _unpickler_reason(exc: BaseException) -> str:
    """Return what torch's weights-only unpickler refused, from its many-line message."""
    boilerplate = ("Weights only load failed", "Check the documentation", "Please file an issue")
    for line in str(exc).splitlines():
        line = line.split("WeightsUnpickler error:", 1)[-1].strip()
        if line and not line.startswith(boilerplate):
            return line
    return "refused by torch.load(weights_only=True)"


def _check_parameters(
    path: Path, entry: str, saved: Any, expected: dict[str, torch.Tensor]
) -> None:
    """Refuse a checkpoint's parameters whose names, shapes or dtypes differ from the model's."""
    what = "model" if entry == "model" else "best model"
    if not isinstance(saved, dict) or not all(isinstance(v, torch.Tensor) for v in saved.values()):
        raise ValueError(f"{path}: corrupt checkpoint (entry {entry!r} is not a set of tensors)")
    missing = [k for k in expected if k not in saved]
    extra = [k for k in saved if k not in expected]
    if missing or extra:
        names = ", ".join(repr(k) for k in (missing or extra)[:3])
        raise ValueError(
            f"{path}: the checkpoint's {what} differs from this one: "
            + (f"no parameter {names}" if missing else f"unknown parameter {names}")
        )
    for key, tensor in expected.items():
        if saved[key].shape != tensor.shape or saved[key].dtype != tensor.dtype:
            raise ValueError(
                f"{path}: the checkpoint's {what} differs from this one: parameter {key!r} is "
                f"{tuple(saved[key].shape)} {saved[key].dtype} in the file, "
                f"{tuple(tensor.shape)} {tensor.dtype} here"
            )


def fit(
    model: torch.nn.Module,
    dataset: Dataset,
    *,
    epochs: int,
    batch_size: int = 8,
    optimizer: torch.optim.Optimizer | None = None,
    seed: int = 0,
    progress: bool = True,
    solver_parameters: dict | None = None,
) -> list[float]:
    """Fit one-step transitions with the paper's protocol (kept for scripts; see :class:`Trainer`).

    Returns the mean loss of each epoch (a pass over all one-step pairs in seeded order).
    """
    if epochs < 1 or batch_size < 1:
        raise ValueError(f"fit needs epochs >= 1 and batch_size >= 1, got {epochs}, {batch_size}")
    if dataset.space != model.space:
        raise ValueError("fit: the dataset and the model must share one function space")
    windows = windows_of(dataset, 1)
    if not windows:
        raise ValueError("fit: the dataset has no one-step pairs")
    optimizer = optimizer or torch.optim.Adam(model.parameters(), lr=1e-2)
    steppers: dict[float, Any] = {}
    rng = np.random.default_rng(seed)
    history: list[float] = []
    for _ in range(epochs):
        order = rng.permutation(len(windows))
        losses = []
        for start in range(0, len(order), batch_size):
            optimizer.zero_grad()
            batch = [windows[i] for i in order[start : start + batch_size]]
            for window in batch:
                data, dt = Trainer._window_data(dataset, window, 1)
                key = round(dt, 12)
                if key not in steppers:
                    steppers[key] = EnergyStableStepper(
                        model, data[0], dt, solver_parameters=solver_parameters
                    )
                loss, _ = window_loss_and_gradient(steppers[key], data, weight=1.0)
                losses.append(loss)
            optimizer.step()
        history.append(float(np.mean(losses)))
    logger.info("fit: loss %.3e -> %.3e over %d epochs", history[0], history[-1], epochs)
    return history
