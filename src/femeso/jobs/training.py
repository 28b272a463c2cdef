"""``femeso train``: the phases of the Onsager model and of the black-box baseline."""

from __future__ import annotations

from dataclasses import asdict
from typing import Any

from mpi4py import MPI

from femeso._log import logger
from femeso.config import JobConfig
from femeso.data.trajectories import Dataset
from femeso.jobs.models import baseline_model, build_space, learned_model, stepper_factory
from femeso.jobs.output import _existing, _model_path, _remove, check_output, load_data
from femeso.training.ensemble import TrainingEnsemble
from femeso.training.phases import ChooseStart, Optimise, PhasedTraining
from femeso.training.trainer import TrainingConfig

__all__ = ["train"]


#: The training phases, named by the ``[training]`` key that sets their iteration count.
PHASES = ("iterations", "schedule_iterations", "refine_iterations")


#: ``[training]`` keys of the job's phases, not of one :class:`TrainingConfig`.
PHASE_KEYS = (
    "refine_iterations",
    "refine_batch_size",
    "warm_start",
    "starts",
    "unroll_schedule",
    "schedule_iterations",
    "judge_unroll",
    "refine_unroll",
)


def _trainer_settings(config: JobConfig) -> dict[str, Any]:
    """Return the ``[training]`` keys that :class:`TrainingConfig` takes, with the job's seed."""
    settings = dict(asdict(config.training), seed=config.training_seed)
    for key in PHASE_KEYS:
        settings.pop(key)
    return settings


def _training_config(config: JobConfig, *, baseline: bool, judge: bool = False) -> TrainingConfig:
    """Return the main phase's settings (``judge``: for validation only, at least 1 iteration)."""
    settings = _trainer_settings(config)
    if baseline:
        settings["iterations"] = config.baseline.iterations
        settings["learning_rate"] = config.baseline.learning_rate
    if judge:  # the judge trains nothing; its windows are the main phase's unless judge_unroll
        settings["iterations"] = max(1, settings["iterations"])
        if not baseline and config.training.judge_unroll:
            settings["unroll"] = config.training.judge_unroll
    return TrainingConfig(**settings)


def _schedule_config(config: JobConfig, unroll: int) -> TrainingConfig:
    """Return one phase of the lengthening schedule: Adam on windows of ``unroll`` steps.

    The phase continues at the learning rate the first-order phase ended with
    (``learning_rate * lr_decay``), held constant: a continuation of that phase on longer
    windows, not a restart.
    """
    settings = _trainer_settings(config)
    iterations = config.training.schedule_iterations
    settings.update(
        unroll=unroll,
        iterations=iterations,
        learning_rate=settings["learning_rate"] * settings["lr_decay"],
        lr_decay=1.0,
        validate_every=min(settings["validate_every"], iterations),
        checkpoint_every=min(settings["checkpoint_every"], iterations),
    )
    return TrainingConfig(**settings)


def _refine_config(config: JobConfig, unroll: int = 1) -> TrainingConfig:
    """Return a Levenberg--Marquardt phase on windows of ``unroll`` steps."""
    settings = _trainer_settings(config)
    settings.update(
        optimizer="levenberg_marquardt",
        iterations=config.training.refine_iterations,
        batch_size=config.training.refine_batch_size,
        unroll=unroll,
        learning_rate=1.0,
        lr_decay=1.0,
        weight_decay=0.0,
        gradient_clip=0.0,
        validate_every=min(5, config.training.refine_iterations),
        checkpoint_every=min(5, config.training.refine_iterations),
    )
    return TrainingConfig(**settings)


def _phases(config: JobConfig, which: str) -> list:
    """Return the training phases of a model, in order (:mod:`femeso.training.phases`).

    The Onsager model: the choice of start (``training.warm_start``, ``training.starts``), the
    first-order optimiser (``training.iterations``), one Adam phase per window length of
    ``training.unroll_schedule`` (key ``unroll_<k>``, folder ``unroll_<k>/``) and
    Levenberg--Marquardt (``training.refine_iterations``); the baseline: its optimiser. A
    phase's ``key`` is the training record's key that counts its iterations.
    """
    directory = config.output / which
    if which == "baseline":
        return [Optimise(_training_config(config, baseline=True), directory)]
    training = config.training
    phases: list = []
    if training.warm_start:
        phases.append(ChooseStart(training.starts, training.max_input_slope))
    if training.iterations > 0:
        phases.append(Optimise(_training_config(config, baseline=False), directory))
    for unroll in training.unroll_schedule:  # windows lengthen, each from the best so far
        phases.append(
            Optimise(
                _schedule_config(config, unroll),
                directory / f"unroll_{unroll}",
                f"unroll_{unroll}",
                name=f"Adam, {unroll}-step windows",
            )
        )
    for i, unroll in enumerate(training.refine_unroll if training.refine_iterations else []):
        # Levenberg-Marquardt from the best so far; the first keeps the historical names
        first = i == 0 and unroll == 1
        phases.append(
            Optimise(
                _refine_config(config, unroll),
                directory / ("refine" if first else f"refine_unroll_{unroll}"),
                "refine_iterations" if first else f"refine_unroll_{unroll}",
                name=None if unroll == 1 else f"Levenberg-Marquardt, {unroll}-step windows",
            )
        )
    return phases


def train(
    config: JobConfig,
    *,
    resume: bool = False,
    models: tuple[str, ...] = ("onsager", "baseline", "peers"),
    progress: bool = True,
    overwrite: bool = False,
) -> dict[str, Any]:
    """Train the Onsager model, the baseline and the peers; keep the best on validation.

    ``models`` selects among ``"onsager"``, ``"baseline"`` (femeso's black-box model, when
    ``baseline.models`` names ``"blackbox"``) and ``"peers"`` (the other models of
    ``baseline.models``, :func:`femeso.peers.runner.train_peers`).

    The Onsager model optionally starts from a gradient-matching fit of the data
    (``training.warm_start``, :func:`femeso.training.warm_start.warm_start`), then runs the
    first-order optimiser (``training.iterations``), the lengthening schedule
    (``training.unroll_schedule``) and the Levenberg--Marquardt phase
    (``training.refine_iterations``), each phase starting from the best-on-validation parameters
    so far; the best over the warm start and all phases is kept (judged on
    ``training.judge_unroll``-step validation windows when set). Each phase's directory receives
    ``checkpoint.pt`` every ``checkpoint_every`` iterations (``resume=True`` continues exactly
    from it), ``history.json`` and ``best_model.npz``; ``model.npz`` holds the parameters the
    later stages use (best on validation when validated). A model folder that holds results
    of an earlier run is an error unless ``resume`` (continue it) or ``overwrite`` (replace it).
    """
    check_output(config)
    ensemble = TrainingEnsemble.split(config.parallel.ensemble)
    if ensemble.members > 1:
        logger.info("train: %s (parallel.ensemble)", ensemble.describe())
    from femeso.peers.runner import blackbox_enabled, peer_directory, peer_names, train_peers

    trained = [which for which in models if which == "onsager" or blackbox_enabled(config)]
    if "peers" in models:
        trained = [w for w in trained if w != "peers"]
    folders = [config.output / which for which in trained]
    if "peers" in models:
        folders += [peer_directory(config, name) for name in peer_names(config)]
    if not resume:
        existing = _existing(folders)
        if existing and not overwrite:
            raise FileExistsError(
                f"{existing[0]}: results of an earlier training run (pass --resume to continue "
                "it or --overwrite to replace it)"
            )
        _remove(existing)
    space = build_space(config, comm=ensemble.comm)
    data = load_data(config, space)
    _check_state_range(config, data)
    validation = data["validation"] if len(data["validation"]) else None
    out = {}
    for which in models:
        if which == "peers" or (which == "baseline" and not blackbox_enabled(config)):
            continue
        model = (
            baseline_model(config, space) if which == "baseline" else learned_model(config, space)
        )
        training = PhasedTraining(
            model,
            data["train"],
            validation,
            # One judge for every start and phase: the main phase's validation windows, or
            # windows of training.judge_unroll steps.
            judge=_training_config(config, baseline=which == "baseline", judge=True),
            make_stepper=stepper_factory(
                model,
                config.model.substeps if which == "onsager" else 1,
                config.model.solver,
            ),
            progress=progress,
            resume=resume,
            ensemble=ensemble,
        )
        training.iterations.update({phase: 0 for phase in PHASES})
        out[which] = training.run(_phases(config, which))
        out[which]["schedule_iterations"] = sum(
            out[which].get(f"unroll_{k}", 0) for k in config.training.unroll_schedule
        )
        lm_iterations = out[which]["refine_iterations"] + sum(
            out[which].get(f"refine_unroll_{k}", 0) for k in config.training.refine_unroll
        )
        if training.judge is not None and training.best.state is not None:
            logger.info(
                "train %s: kept the %s model (validation loss %.3e)",
                which,
                training.best.label,
                training.best.validation,
            )
        model.save(_model_path(config, which), comm=ensemble.writer)
        from femeso.evaluation import write_json

        write_json(config.output / which / "training.json", out[which])
        logger.info(
            "train %s: %d iterations (+%d in the unroll schedule, +%d Levenberg-Marquardt) in "
            "%.0f s, loss %.3e -> %.3e, %s model kept",
            which,
            out[which]["iterations"],
            out[which]["schedule_iterations"],
            lm_iterations,
            out[which]["seconds"],
            out[which]["loss_first"],
            out[which]["loss_last"],
            out[which]["model"],
        )
    if "peers" in models:
        if ensemble.members > 1:  # the peers train on all ranks, not on an ensemble member
            space = build_space(config)
            data = load_data(config, space)
        out.update(train_peers(config, space, data, progress=progress, resume=resume))
    return out


def _check_state_range(config: JobConfig, data: dict[str, Dataset]) -> None:
    """Refuse data outside ``model.state_range`` (one line naming the split and trajectory)."""
    bounds = config.model.state_range
    if not bounds:
        return
    lo, hi = bounds
    for split, dataset in data.items():
        for i, traj in enumerate(dataset.trajectories):
            low = min(float(s.dat.data_ro.min()) for s in traj.states)
            high = max(float(s.dat.data_ro.max()) for s in traj.states)
            low = traj.space.mesh().comm.allreduce(low, op=MPI.MIN)
            high = traj.space.mesh().comm.allreduce(high, op=MPI.MAX)
            if not (lo < low and high < hi):
                raise ValueError(
                    f"{split} trajectory {i}: values from {low:.4g} to {high:.4g} are not all "
                    f"strictly inside model.state_range [{lo:g}, {hi:g}]"
                )
