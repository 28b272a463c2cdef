"""Training as a list of phases, all judged on the same validation windows; the best is kept.

A femeso model is trained in phases: a choice of start (gradient-matching warm starts of several
polynomial degrees against the networks' own initialisation), then optimisers (Adam, then
Levenberg--Marquardt), each phase starting from the best parameters so far. One *judge* -- a
:class:`~femeso.training.trainer.Trainer` on the validation windows that trains nothing -- scores
every candidate start and the end of every phase, whatever that phase optimises; the best over all
of them is kept and named::

    training = femeso.training.phases.PhasedTraining(model, train, validation, judge=settings,
                                            make_stepper=make_stepper)
    result = training.run([ChooseStart(), Optimise(adam_settings), Optimise(lm_settings)])
    result["model"]     # e.g. "Levenberg-Marquardt, best on validation"

A phase is any object with a ``key`` (the name its count goes under in the result) and
``run(training) -> str | None`` that trains ``training.model`` and returns the label of what it
produced (``None``: nothing to offer).
"""

from __future__ import annotations

import math
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Protocol

import numpy as np
import torch

from femeso._log import logger
from femeso.data.trajectories import Dataset
from femeso.model.fields import bound_input_slopes
from femeso.training.ensemble import TrainingEnsemble
from femeso.training.trainer import Trainer, TrainingConfig, TrainingHistory
from femeso.training.warm_start import warm_start

__all__ = [
    "START_CANDIDATES",
    "BestModel",
    "ChooseStart",
    "Optimise",
    "PhasedTraining",
    "choose_start",
]

#: The candidate starts of an Onsager model, in order: label and warm-start degree (``None``:
#: the networks' own initialisation). :class:`ChooseStart` tries the first ``n`` of them.
START_CANDIDATES = (
    ("warm start (degree 5)", 5),
    ("initialisation", None),
    ("warm start (degree 3)", 3),
    ("warm start (degree 7)", 7),
)

_OPTIMISER_NAMES = {"levenberg_marquardt": "Levenberg-Marquardt", "adam": "Adam", "lbfgs": "L-BFGS"}


class BestModel:
    """The best-on-validation parameters offered so far, with their loss and label."""

    def __init__(self) -> None:
        self.validation, self.state, self.label = math.inf, None, ""
        #: every offer's label and validation loss, in order (the summary's ``judged``)
        self.offers: dict[str, float] = {}

    def offer(self, model: torch.nn.Module, validation: float, label: str) -> None:
        """Keep the model's current parameters if their validation loss is the best so far."""
        self.offers[label] = validation
        better = validation < self.validation
        logger.info(
            "judge: %s scores %.4e on the validation windows (%s)",
            label,
            validation,
            "the best so far" if better else f"kept: {self.label}, {self.validation:.4e}",
        )
        if better:
            self.validation, self.label = validation, label
            self.state = {k: v.detach().clone() for k, v in model.state_dict().items()}

    def restore(self, model: torch.nn.Module) -> None:
        """Load the best parameters so far into the model (nothing when none was validated)."""
        if self.state is not None:
            model.load_state_dict(self.state)


class Phase(Protocol):
    """What :class:`PhasedTraining` runs."""

    key: str

    def run(self, training: PhasedTraining) -> str | None:
        """Train ``training.model``; return the label of the result to offer, or ``None``."""


def choose_start(
    model: torch.nn.Module,
    train_data: Dataset,
    judge: Trainer | None,
    *,
    candidates: Sequence[tuple[str, int | None]] = START_CANDIDATES[:3],
    max_input_slope: float = 0.0,
) -> dict[str, Any]:
    """Try the candidate starts of an Onsager model; load the best on validation into it.

    Every warm start (:func:`femeso.training.warm_start.warm_start`) is applied whatever its
    residual; the validation windows (``judge``) decide. Without validation data the degree-5 warm
    start is kept when its residual is at most 0.5 (a warning says that nothing validated it).

    Returns
    -------
    dict
        ``chosen`` (label), ``validation`` (its loss), ``candidates`` (label -> validation loss
        or ``None`` for a failed candidate) and ``warm_start`` (the summary of the first warm
        start tried).

    """
    initial = {k: v.detach().clone() for k, v in model.state_dict().items()}
    scores: dict[str, float | None] = {}
    states: dict[str, dict] = {}
    first_warm: dict[str, Any] | None = None
    for label, degree in candidates:
        model.load_state_dict(initial)
        if degree is not None:
            try:
                fit = warm_start(model, train_data, degree=degree, max_residual=math.inf)
            except (ValueError, np.linalg.LinAlgError, RuntimeError) as exc:
                logger.warning("start %s failed: %s", label, exc)
                scores[label] = None
                continue
            first_warm = first_warm or fit.summary()
            if max_input_slope:  # the bound the optimisers keep, from here
                bound_input_slopes(model, max_input_slope)
        states[label] = {k: v.detach().clone() for k, v in model.state_dict().items()}
        scores[label] = judge.validate() if judge is not None else None
    if not states:
        raise RuntimeError(
            "every start failed: " + ", ".join(f"{k}: {v}" for k, v in scores.items())
        )
    if judge is None:
        residual = (first_warm or {}).get("relative_residual", math.inf)
        chosen = "warm start (degree 5)" if residual <= 0.5 else "initialisation"
        if chosen not in states:
            chosen = next(iter(states))
        logger.warning(
            "no validation data: the start is chosen by the warm start's residual (%.2f): %s",
            residual,
            chosen,
        )
        value = math.nan
    else:
        finite = {k: v for k, v in scores.items() if v is not None and math.isfinite(v)}
        if not finite:
            raise RuntimeError(
                "every start failed on the validation windows: "
                + ", ".join(f"{k}: {v}" for k, v in scores.items())
            )
        chosen = min(finite, key=finite.get)
        value = finite[chosen]
        others = ", ".join(
            f"{k} {'failed' if v is None or not math.isfinite(v) else f'{v:.3e}'}"
            for k, v in scores.items()
            if k != chosen
        )
        logger.info(
            "start: %s chosen, validation loss %.3e (others: %s)", chosen, value, others or "none"
        )
    model.load_state_dict(states[chosen])
    return {"chosen": chosen, "validation": value, "candidates": scores, "warm_start": first_warm}


@dataclass
class ChooseStart:
    """The start phase: :func:`choose_start` over the first ``n_candidates`` starts."""

    n_candidates: int = 3
    max_input_slope: float = 0.0
    key: str = "start"

    def run(self, training: PhasedTraining) -> str | None:
        """Choose the start; record it under ``start`` (and ``warm_start``) of the summary."""
        start = choose_start(
            training.model,
            training.train_data,
            training.judge,
            candidates=START_CANDIDATES[: self.n_candidates],
            max_input_slope=self.max_input_slope,
        )
        training.summary["start"] = start
        training.summary["warm_start"] = start.pop("warm_start")
        if training.judge is None:
            return None
        training.best.offer(training.model, start["validation"], start["chosen"])
        return start["chosen"]


@dataclass
class Optimise:
    """An optimiser phase: a :class:`~femeso.training.trainer.Trainer` run with ``settings``.

    ``directory`` receives its checkpoints (resumable), ``history.json`` and
    ``best_model.npz``; ``key`` names its iteration count in the summary; ``name`` (default: the
    optimiser's) names the phase's result.
    """

    settings: TrainingConfig
    directory: str | Path | None = None
    key: str = "iterations"
    name: str | None = None

    @property
    def label(self) -> str:
        """The phase's name, e.g. ``"Levenberg-Marquardt"`` or ``"Adam, 4-step windows"``."""
        return self.name or _OPTIMISER_NAMES.get(self.settings.optimizer, self.settings.optimizer)

    def run(self, training: PhasedTraining) -> str | None:
        """Run the trainer from the current parameters; offer its best to the judge."""
        trainer = Trainer(
            training.model,
            training.train_data,
            training.validation,
            self.settings,
            make_stepper=training.make_stepper,
            directory=self.directory,
            progress=training.progress,
            ensemble=training.ensemble,
        )
        history = trainer.run(resume=training.resume)
        training.histories.append(history)
        training.iterations[self.key] = trainer.iteration
        # a resumed run adds the optimiser time of the iterations done before
        training.earlier_seconds += sum(
            r.seconds for r in history.records if r.iteration <= trainer.resumed_iteration
        )
        if not (trainer.load_best() or training.judge is not None):
            return None
        if training.judge is not None:
            label = f"{self.label}, best on validation"
            training.best.offer(training.model, training.judge.validate(), label)
        else:
            label = f"{self.label}, best"
            training.best.offer(training.model, history.best_validation, label)
        return label


class PhasedTraining:
    """Train a model in phases; every phase starts from the best so far; keep the best.

    Parameters
    ----------
    model
        The model (trained in place; it ends with the best parameters found).
    train_data, validation
        The training and validation trajectories (``validation`` may be ``None``: nothing is
        judged then, and each phase's own best is kept).
    judge
        The settings whose validation windows judge every phase (the main phase's, so that
        every phase is scored on the same windows, whatever it optimises).
    make_stepper
        ``(u0, dt) -> stepper``, as :class:`~femeso.training.trainer.Trainer` takes it.
    progress
        Progress bars of the optimiser phases.
    resume
        Continue every optimiser phase from its checkpoint.
    ensemble
        The members that share the windows of every phase and of the judge
        (:class:`~femeso.training.ensemble.TrainingEnsemble`); default one member.

    """

    def __init__(
        self,
        model: torch.nn.Module,
        train_data: Dataset,
        validation: Dataset | None,
        *,
        judge: TrainingConfig,
        make_stepper: Callable | None = None,
        progress: bool = True,
        resume: bool = False,
        ensemble: TrainingEnsemble | None = None,
    ) -> None:
        self.model, self.train_data, self.validation = model, train_data, validation
        self.ensemble = ensemble
        self.make_stepper, self.progress, self.resume = make_stepper, progress, resume
        # The judge trains nothing: it scores the current parameters on the validation windows
        # of ``judge`` (settings of at least one iteration).
        self.judge = (
            Trainer(
                model,
                train_data,
                validation,
                judge,
                make_stepper=make_stepper,
                progress=False,
                ensemble=ensemble,
            )
            if validation is not None
            else None
        )
        self.best = BestModel()
        self.summary: dict[str, Any] = {}
        #: Iterations done per optimiser phase ``key`` (a caller may list absent phases as 0).
        self.iterations: dict[str, int] = {}
        self.histories: list[TrainingHistory] = []
        self.earlier_seconds = 0.0

    def run(self, phases: Sequence[Phase]) -> dict[str, Any]:
        """Run ``phases`` in order and return the summary of the training.

        Returns
        -------
        dict
            What the phases recorded (``start``, ``warm_start``), the iteration count of every
            optimiser phase under its ``key``, ``loss_first``/``loss_last`` (first and last
            optimiser phase), ``best_validation``, ``best_iteration``, ``model`` (the label of
            the kept result), ``judged`` (every result offered to the judge and its validation
            loss, in order), ``seconds`` (including the iterations of a resumed run done
            before) and ``parameters`` (trainable values).

        """
        t0 = time.perf_counter()
        for phase in phases:
            phase.run(self)
            self.best.restore(self.model)
        first = self.histories[0] if self.histories else TrainingHistory()
        last = self.histories[-1] if self.histories else TrainingHistory()
        return {
            **self.summary,
            **self.iterations,
            "loss_first": first.records[0].loss if first.records else math.nan,
            "loss_last": last.records[-1].loss if last.records else math.nan,
            "best_validation": self.best.validation if self.best.state else last.best_validation,
            "best_iteration": last.best_iteration,
            "model": self.best.label if self.best.state else "last iteration",
            "judged": dict(self.best.offers),
            "seconds": time.perf_counter() - t0 + self.earlier_seconds,
            "parameters": sum(p.numel() for p in self.model.parameters() if p.requires_grad),
        }
