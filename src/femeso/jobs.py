"""The stages of a femeso job -- generate, train, rollout, report -- driven by a :mod:`config`.

Every stage reads what the previous ones wrote under ``job.output``:

``data/{train,validation,test}.h5``
    the trajectories (:func:`femeso.data.save_dataset`), test trajectories reaching
    ``evaluation.horizon_factor`` times the training horizon;
``onsager/``, ``baseline/``
    checkpoints (``checkpoint.pt``, resumable), ``history.json``, ``best_model.npz`` and the
    final ``model.npz`` of the Onsager model and of the black-box baseline;
``rollouts/``
    VTK files of the test rollouts (true, learned, baseline, error) for ParaView;
``report/``
    ``results.json`` and PNG plots.
"""

from __future__ import annotations

import math
import time
from pathlib import Path
from typing import Any

import firedrake as fd
import numpy as np
import torch
from mpi4py import MPI

from femeso._log import logger
from femeso.baseline import BlackBoxModel, BlackBoxStepper
from femeso.config import CHAINS, JobConfig
from femeso.data.chains import generate_chain_dataset
from femeso.data.generators import (
    allen_cahn_model,
    cahn_hilliard_model,
    generate_dataset,
    kdv_model,
    mobility_coefficient,
    paper_sine_initial_condition,
)
from femeso.data.io import export_vtk, load_dataset, save_dataset
from femeso.data.trajectories import Dataset, TrajectoryData
from femeso.energies import CoerciveNeuralDensity, ConstantKappa, Energy
from femeso.fields import NeuralField, bound_input_slopes
from femeso.hypothesis import OnsagerModel
from femeso.initial_conditions import random_smooth_field
from femeso.meshes import bounding_box, load_mesh
from femeso.mobilities import ConservedMobility, LocalMobility, SkewTransport
from femeso.steppers import EnergyStableStepper
from femeso.training import Trainer, TrainingConfig
from femeso.warm_start import warm_start

__all__ = [
    "generate",
    "generate_trajectories",
    "report",
    "rollout",
    "rollout_reports",
    "rollout_results",
    "run",
    "summary_lines",
    "table_lines",
    "train",
]

SPLITS = ("train", "validation", "test")


# ---------------------------------------------------------------------- building blocks
def build_space(config: JobConfig) -> fd.FunctionSpace:
    """Return the job's state space (scalar CG of ``mesh.degree`` on the job's mesh)."""
    m = config["mesh"]
    if m["name"] == "periodic_interval":
        mesh = fd.PeriodicIntervalMesh(m["cells"], m["length"])
    elif m["name"] == "periodic_square":
        mesh = fd.PeriodicSquareMesh(m["cells"], m["cells"], m["length"])
    else:
        mesh = load_mesh(m["name"], refinement=m["refinement"])
    return fd.FunctionSpace(mesh, "CG", m["degree"])


def true_model(config: JobConfig, space: fd.FunctionSpace) -> OnsagerModel | None:
    """Return the model that generates the job's data (``None`` for chain data: none is known)."""
    d = config["data"]
    if d["equation"] in CHAINS:
        return None
    if d["equation"] == "kdv":
        return kdv_model(space)
    mobility = _true_mobility(config, space.mesh())
    if d["equation"] == "cahn_hilliard":
        return cahn_hilliard_model(space, kappa=d["kappa"], density=d["density"], mobility=mobility)
    return allen_cahn_model(space, epsilon=d["epsilon"], density=d["density"], mobility=mobility)


def learned_model(config: JobConfig, space: fd.FunctionSpace) -> OnsagerModel:
    """Return the (untrained) Onsager model of the job.

    Neural F, gauge-normalised kappa, a mobility m(u) (neural, constant or none: M = 0) or
    m(u, x) (``neural_x``: the position normalised by the mesh's bounding box, centre and
    half-widths) and, with ``model.transport = "learned"``, a skew transport along a learned
    constant velocity.
    """
    m, seed = config["model"], config["job"]["seed"]
    density = CoerciveNeuralDensity(
        width=m["width"], depth=m["depth"], polynomial_degree=m["polynomial_degree"], seed=seed
    )
    energy = Energy(density, ConstantKappa(1.0, learnable=True))
    conservative = []
    if m["transport"] == "learned":
        conservative.append(SkewTransport([m["velocity"]], dim=1, learnable=True))
    if m["mobility"] == "none":
        return OnsagerModel(space, energy, conservative=conservative, kappa_ref=m["kappa_ref"])
    if m["mobility"] in ("neural", "neural_x"):
        center, scale, dim = [m["input_center"]], [m["input_scale"]], None
        if m["mobility"] == "neural_x":
            lo, hi = bounding_box(space.mesh())
            dim = len(lo)
            center += (0.5 * (lo + hi)).tolist()
            scale += np.maximum(0.5 * (hi - lo), 1e-12).tolist()
        coefficient: Any = NeuralField(
            1,
            1,
            width=m["width"],
            depth=m["depth"],
            dim=dim,
            seed=seed + 1,
            input_center=center if dim else center[0],
            input_scale=scale if dim else scale[0],
        )
    else:
        coefficient = 1.0
    cls = ConservedMobility if config["data"]["equation"] == "cahn_hilliard" else LocalMobility
    return OnsagerModel(
        space,
        energy,
        mobility=cls(coefficient),
        conservative=conservative,
        kappa_ref=m["kappa_ref"],
    )


def baseline_model(config: JobConfig, space: fd.FunctionSpace) -> BlackBoxModel:
    """Return the (untrained) black-box baseline of the job."""
    return BlackBoxModel(space, width=config["baseline"]["width"], seed=config["job"]["seed"])


def stepper_factory(model, substeps: int = 1):
    """Return ``make_stepper(u0, dt)`` for an Onsager model or the black-box baseline.

    The Onsager model's steps take ``substeps`` scheme steps each; the baseline takes one.
    """
    if isinstance(model, BlackBoxModel):
        return lambda u0, dt: BlackBoxStepper(model, u0, dt)
    return lambda u0, dt: EnergyStableStepper(model, u0, dt, substeps=substeps)


def _data_path(config: JobConfig, split: str) -> Path:
    return config.output / "data" / f"{split}.h5"


def load_data(config: JobConfig, space: fd.FunctionSpace) -> dict[str, Dataset]:
    """Load the job's datasets onto ``space`` (written by :func:`generate`)."""
    out = {}
    for split in SPLITS:
        path = _data_path(config, split)
        if not path.exists():
            raise FileNotFoundError(f"{path} is missing: run `femeso generate` first")
        data = load_dataset(path, comm=space.mesh().comm)
        out[split] = _on_space(data, space)
    return out


def _on_space(data: Dataset, space: fd.FunctionSpace) -> Dataset:
    """Move a loaded dataset's states onto ``space`` (same mesh layout, values copied)."""
    trajectories = []
    for traj in data.trajectories:
        states = []
        for state in traj.states:
            f = fd.Function(space)
            f.dat.data[...] = state.dat.data_ro
            states.append(f)
        trajectories.append(TrajectoryData(space, traj.times, states, traj.metadata))
    return Dataset(space, trajectories, data.metadata)


def _drop_frames(data: Dataset, n: int) -> Dataset:
    """Drop the first ``n`` frames of every trajectory."""
    if n == 0:
        return data
    trajectories = [
        TrajectoryData(t.space, t.times[n:], t.states[n:], {**t.metadata, "burn_in_frames": n})
        for t in data.trajectories
    ]
    return Dataset(data.space, trajectories, data.metadata)


# ---------------------------------------------------------------------- stages
def generate(config: JobConfig, *, progress: bool = True) -> dict[str, Path]:
    """Generate the train / validation / test trajectories and save them under ``data/``."""
    t0 = time.perf_counter()
    d, seed = config["data"], config["job"]["seed"]
    space = build_space(config)
    frames = {
        "train": d["frames"],
        "validation": d["frames"],
        "test": d["frames"] * config["evaluation"]["horizon_factor"],
    }
    seeds = {"train": seed, "validation": seed + 1000, "test": seed + 2000}
    paths = {}
    for split in SPLITS:
        count = d[split]
        path = _data_path(config, split)
        path.parent.mkdir(parents=True, exist_ok=True)
        if count == 0:
            data = Dataset(space, [], {"split": split})
        else:
            data = generate_trajectories(
                config,
                space,
                count=count,
                frames=frames[split],
                seed=seeds[split],
                progress=progress,
            )
        paths[split] = save_dataset(path, data, overwrite=True)
    logger.info("generate: data in %s (%.1f s)", config.output / "data", time.perf_counter() - t0)
    return paths


def generate_trajectories(
    config: JobConfig,
    space: fd.FunctionSpace,
    *,
    count: int,
    frames: int,
    seed: int,
    progress: bool = True,
) -> Dataset:
    """Return ``count`` trajectories of the job's data protocol on ``space``.

    The job's equation (its true model, or the chains), initial fields, frame step, substeps,
    reference refinements and burn-in, on any state space (the job's own or, for
    :mod:`femeso.transfer`, another mesh's).

    Parameters
    ----------
    config
        The job.
    space
        The data space.
    count, frames
        Number of trajectories and saved frames after the initial one (burn-in not counted).
    seed
        Seed of the first trajectory's initial field (trajectory ``i`` uses ``seed + i``).
    progress
        Show a progress bar (rank 0).

    Returns
    -------
    Dataset

    """
    d = config["data"]
    if d["equation"] in CHAINS:
        return _chain_data(config, space, count, frames, seed, progress)

    def initial(V: fd.FunctionSpace, seed: int) -> fd.Function:
        if d["initial"] == "paper_sine":
            return paper_sine_initial_condition(V, seed=seed)
        return random_smooth_field(
            V, seed=seed, amplitude=d["amplitude"], mean=d["mean"], max_wavenumber=d["wavenumber"]
        )

    data = generate_dataset(
        space,
        lambda V: true_model(config, V),
        n_trajectories=count,
        n_frames=frames + d["burn_in"],
        frame_dt=d["frame_dt"],
        seed=seed,
        substeps=d["substeps"],
        refine=d["refine"],
        initial_condition=initial,
        name=d["equation"],
        parameters={k: d[k] for k in ("density", "mobility", "mobility_scale", "kappa", "epsilon")},
        progress=progress,
    )
    return _drop_frames(data, d["burn_in"])


def _chain_data(
    config: JobConfig, space: fd.FunctionSpace, count: int, frames: int, seed: int, progress: bool
) -> Dataset:
    """Return ``count`` chain trajectories coarse-grained to the job's periodic interval.

    The chain's own defaults (the paper's: 128 FPUT / 209 FENE particles, unit standard
    deviation) except the slow period (``mesh.length``), the frame step and the length; the
    ``burn_in`` first frames are dropped.
    """
    d, m = config["data"], config["mesh"]
    total = frames + d["burn_in"]
    data = generate_chain_dataset(
        d["equation"],
        n_trajectories=count,
        seed=seed,
        n_points=m["cells"],
        comm=space.mesh().comm,
        progress=progress,
        length=m["length"],
        frame_dt=d["frame_dt"],
        t_end=total * d["frame_dt"],
    )
    data = _on_space(data, space)
    if any(len(t.times) != total + 1 for t in data.trajectories):
        raise RuntimeError(f"the {d['equation']} chains did not return {total + 1} frames")
    return _drop_frames(data, d["burn_in"])


#: The training phases, named by the ``[training]`` key that sets their iteration count.
PHASES = ("iterations", "refine_iterations")

#: ``[training]`` keys of the job's phases, not of one :class:`TrainingConfig`.
PHASE_KEYS = ("refine_iterations", "refine_batch_size", "warm_start")


def _trainer_settings(config: JobConfig) -> dict[str, Any]:
    """Return the ``[training]`` keys that :class:`TrainingConfig` takes, with the job's seed."""
    settings = dict(config["training"], seed=config["job"]["seed"])
    for key in PHASE_KEYS:
        settings.pop(key)
    return settings


def _training_config(config: JobConfig, *, baseline: bool) -> TrainingConfig:
    settings = _trainer_settings(config)
    if baseline:
        settings["iterations"] = config["baseline"]["iterations"]
        settings["learning_rate"] = config["baseline"]["learning_rate"]
    return TrainingConfig(**settings)


def _refine_config(config: JobConfig) -> TrainingConfig:
    """Return the Levenberg--Marquardt phase that follows the first-order optimiser."""
    settings = _trainer_settings(config)
    settings.update(
        optimizer="levenberg_marquardt",
        iterations=config["training"]["refine_iterations"],
        batch_size=config["training"]["refine_batch_size"],
        unroll=1,
        learning_rate=1.0,
        lr_decay=1.0,
        weight_decay=0.0,
        gradient_clip=0.0,
        validate_every=min(5, config["training"]["refine_iterations"]),
        checkpoint_every=min(5, config["training"]["refine_iterations"]),
    )
    return TrainingConfig(**settings)


def _model_path(config: JobConfig, which: str) -> Path:
    return config.output / which / "model.npz"


def _phases(config: JobConfig, which: str) -> dict[str, tuple[TrainingConfig, Path]]:
    """Return the training phases of a model, in order: name -> (settings, checkpoint directory).

    The names are the keys of the training record that count the phase's iterations.
    """
    directory = config.output / which
    if which == "baseline":
        return {"iterations": (_training_config(config, baseline=True), directory)}
    phases = {}
    if config["training"]["iterations"] > 0:
        phases["iterations"] = (_training_config(config, baseline=False), directory)
    if config["training"]["refine_iterations"] > 0:  # Levenberg-Marquardt from the first phase
        phases["refine_iterations"] = (_refine_config(config), directory / "refine")
    return phases


def train(
    config: JobConfig,
    *,
    resume: bool = False,
    models: tuple[str, ...] = ("onsager", "baseline"),
    progress: bool = True,
) -> dict[str, Any]:
    """Train the Onsager model (and the baseline); keep the best-on-validation parameters.

    The Onsager model optionally starts from a gradient-matching fit of the data
    (``training.warm_start``, :func:`femeso.warm_start.warm_start`), then runs the first-order
    optimiser (``training.iterations``) and the Levenberg--Marquardt phase
    (``training.refine_iterations``), each phase starting from the best-on-validation parameters
    so far; the best over the warm start and all phases is kept. Each phase's directory receives
    ``checkpoint.pt`` every ``checkpoint_every`` iterations (``resume=True`` continues exactly
    from it), ``history.json`` and ``best_model.npz``; ``model.npz`` holds the parameters the
    later stages use (best on validation when validated).
    """
    space = build_space(config)
    data = load_data(config, space)
    validation = data["validation"] if len(data["validation"]) else None
    out = {}
    for which in models:
        if which == "baseline" and not config["baseline"]["enabled"]:
            continue
        t0 = time.perf_counter()
        model = (
            baseline_model(config, space) if which == "baseline" else learned_model(config, space)
        )
        best = _Best()
        summary: dict[str, Any] = {}
        if which == "onsager" and config["training"]["warm_start"]:
            summary["warm_start"] = warm_start(model, data["train"]).summary()
            if config["training"]["max_input_slope"]:  # the bound the optimisers keep, from here
                bound_input_slopes(model, config["training"]["max_input_slope"])
        histories, trainers = [], {}
        for phase, (settings, directory) in _phases(config, which).items():
            trainer = Trainer(
                model,
                data["train"],
                validation,
                settings,
                make_stepper=stepper_factory(model, config["model"]["substeps"]),
                directory=directory,
                progress=progress,
            )
            started = summary.get("warm_start", {}).get("applied", False)
            if not trainers and started and validation is not None:
                best.offer(model, trainer.validate(), "warm start")
                summary["warm_start"]["validation"] = best.validation
            histories.append(trainer.run(resume=resume))
            trainers[phase] = trainer
            if trainer.load_best():
                best.offer(model, histories[-1].best_validation, "best on validation")
            best.restore(model)
        model.save(_model_path(config, which))
        first, last = histories[0], histories[-1]
        out[which] = {
            **summary,
            **{phase: trainers[phase].iteration if phase in trainers else 0 for phase in PHASES},
            "loss_first": first.records[0].loss if first.records else math.nan,
            "loss_last": last.records[-1].loss if last.records else math.nan,
            "best_validation": best.validation if best.state else last.best_validation,
            "best_iteration": last.best_iteration,
            "model": best.label if best.state else "last iteration",
            "seconds": time.perf_counter() - t0,
        }
        logger.info(
            "train %s: %d iterations (+%d Levenberg-Marquardt) in %.0f s, loss %.3e -> %.3e, "
            "%s model kept",
            which,
            out[which]["iterations"],
            out[which]["refine_iterations"],
            out[which]["seconds"],
            out[which]["loss_first"],
            out[which]["loss_last"],
            out[which]["model"],
        )
    return out


class _Best:
    """The best-on-validation parameters over the training phases (and the warm start)."""

    def __init__(self) -> None:
        self.validation, self.state, self.label = math.inf, None, ""

    def offer(self, model: torch.nn.Module, validation: float, label: str) -> None:
        """Keep the model's current parameters if their validation loss is the best so far."""
        if validation < self.validation:
            self.validation, self.label = validation, label
            self.state = {k: v.detach().clone() for k, v in model.state_dict().items()}

    def restore(self, model: torch.nn.Module) -> None:
        """Load the best parameters so far into the model (nothing when none was validated)."""
        if self.state is not None:
            model.load_state_dict(self.state)


def load_trained(config: JobConfig, space: fd.FunctionSpace, which: str):
    """Return the trained Onsager model or baseline saved by :func:`train`."""
    path = _model_path(config, which)
    if not path.exists():
        raise FileNotFoundError(f"{path} is missing: run `femeso train` first")
    model = baseline_model(config, space) if which == "baseline" else learned_model(config, space)
    model.load_parameters(path)
    return model


def rollout_reports(
    config: JobConfig, space: fd.FunctionSpace, data: dict[str, Dataset], *, progress: bool
) -> dict[str, Any]:
    """Roll the trained Onsager model, the classical solver and the baseline out over the test data.

    The models are rebuilt on ``space`` (any mesh: see :mod:`femeso.transfer`); ``data["test"]``
    holds the trajectories; the baseline is rolled out when ``baseline.enabled``. Returns the
    :class:`~femeso.evaluation.RolloutReport` of each model by name.
    """
    from femeso.evaluation import rollout_errors

    truth = true_model(config, space)
    substeps = config["model"]["substeps"]  # the classical solver steps like the learned model
    steppers = {"onsager": stepper_factory(load_trained(config, space, "onsager"), substeps)}
    if truth is not None:
        steppers["classical"] = stepper_factory(truth, substeps)
    if config["baseline"]["enabled"]:
        steppers["baseline"] = stepper_factory(load_trained(config, space, "baseline"))
    reference = truth.energy_value if truth is not None else None
    reports = {}
    for name, make in steppers.items():
        reports[name] = rollout_errors(
            make, data["test"], reference_energy=reference, progress=progress
        )
    return reports


def rollout(config: JobConfig, *, progress: bool = True) -> dict[str, Any]:
    """Roll out the test trajectories with every model and write them as VTK under ``rollouts/``."""
    space = build_space(config)
    data = load_data(config, space)
    reports = rollout_reports(config, space, data, progress=progress)
    _write_vtk(config, data, reports)
    return {name: r.summary() for name, r in reports.items()}


def _write_vtk(config: JobConfig, data, reports) -> list[Path]:
    directory = config.output / "rollouts"
    directory.mkdir(parents=True, exist_ok=True)
    first = data["test"].trajectories[0]
    paths = [export_vtk(first, directory / "data_0.pvd", names=["u"], overwrite=True)]
    for name, r in reports.items():
        paths.append(
            export_vtk(
                r.trajectory_data(0), directory / f"{name}_0.pvd", names=["u"], overwrite=True
            )
        )
    logger.info("rollout: VTK files in %s", directory)
    return paths


#: The demo's acceptance targets (the learning issue).
TARGETS = {
    "error_at_training_horizon": 2e-2,
    "energy_increases": 0,
    "density_r2": 0.99,
}


def rollout_results(reports: dict[str, Any], horizon: float) -> dict[str, Any]:
    """Return each model's rollout summary and the error table (``table``) of the reports.

    Per model: :meth:`~femeso.evaluation.RolloutReport.summary`, the error at the training
    ``horizon`` and the relative drift of the model's own energy; ``table`` holds
    :func:`~femeso.evaluation.error_table` of every model.
    """
    from femeso.evaluation import error_table, relative_energy_drift

    results: dict[str, Any] = {}
    for name, r in reports.items():
        summary = r.summary()
        summary["error_at_training_horizon"] = _error_at(r, horizon)
        summary["energy_drift"] = relative_energy_drift(r)
        results[name] = summary
    results["table"] = {name: error_table(r) for name, r in reports.items()}
    return results


def _error_at(report, t: float) -> float:
    """Mean error at the elapsed time ``t`` of a rollout report."""
    i = int(np.argmin(np.abs(np.asarray(report.times) - t)))
    return float(report.error_mean[i])


def report(config: JobConfig, *, progress: bool = True) -> dict[str, Any]:
    """Evaluate the trained models on the test data; write ``report/results.json`` and plots.

    Returns the results (also printed as a table by the command line), including ``table``
    (per model the mean and standard deviation over the test trajectories of the relative L2
    error after 1..5 and 100 steps, see :func:`femeso.evaluation.error_table`), the energy
    drift of each model's own energy along the rollouts, and ``targets``: relative L2 error at
    the training horizon, energy increases and (with a known true density) the density fit's R².
    Chain data have no true model: no classical row, no density or mobility comparison.
    """
    from femeso.evaluation import (
        energy_scaling_exponent,
        step_size_study,
        write_json,
    )

    t0 = time.perf_counter()
    space = build_space(config)
    data = load_data(config, space)
    truth = true_model(config, space)
    model = load_trained(config, space, "onsager")
    reports = rollout_reports(config, space, data, progress=progress)
    d = config["data"]
    horizon = d["frames"] * d["frame_dt"]
    results: dict[str, Any] = {
        "job": config["job"]["name"],
        "config": dict(config),
        "training_horizon": horizon,
        "long_horizon": horizon * config["evaluation"]["horizon_factor"],
        "dofs": space.dim(),
        "cells": space.mesh().num_cells(),
        "ranks": space.mesh().comm.size,
    }
    results.update(rollout_results(reports, horizon))
    results["conservative"] = model.is_conservative
    results["transport"] = [w.constant.tolist() for w in model.conservative if w.field is None]

    samples = state_samples(model, [s for t in data["train"] for s in t.states])
    density = mobility = None
    if truth is not None:
        density, mobility = _interpretability(config, model, truth, samples, results)
    results["energy_scaling"] = {
        k: v
        for k, v in energy_scaling_exponent(model, data["test"].trajectories[0].states[:1]).items()
        if np.ndim(v) == 0
    }
    factors = config["evaluation"]["step_factors"]
    results["step_sizes"] = step_size_study(
        stepper_factory(model, config["model"]["substeps"]),
        data["test"].trajectories[0],
        factors=factors,
        reference="finest",
    )
    results["targets"] = _targets(results, density)
    directory = config.output / "report"
    directory.mkdir(parents=True, exist_ok=True)
    if config["evaluation"]["vtk"]:
        _write_vtk(config, data, reports)
    if config["evaluation"]["plots"]:
        results["plots"] = [
            str(p)
            for p in _plots(config, data, reports, model, truth, density, mobility, samples)
            if p
        ]
    results["seconds"] = time.perf_counter() - t0
    write_json(directory / "results.json", results)
    logger.info("report: %s", directory / "results.json")
    return results


#: At most this many state values per rank are compared with the truth in a report. All
#: quadrature points of all training states were used before: on the 128 x 128 Allen--Cahn mesh
#: 404 states x 196608 points = 79 million; measured, 10 of those states (2.0 million points)
#: raise the peak memory of the density comparison by 2.1 GB, and the full set got the report
#: killed at 23 GB.
MAX_STATE_SAMPLES = 2**20


def state_samples(
    model: OnsagerModel, states: list[fd.Function], limit: int = MAX_STATE_SAMPLES
) -> torch.Tensor:
    """Return the model's quadrature-point values of evenly spaced ``states``, ``<= limit`` rows.

    Whole states are kept (position-dependent fields need the points in order); the first state
    always, and at least one. The same states on every rank.
    """
    if not states:
        raise ValueError("state_samples: no states")
    first = model.state_at_points(states[0])
    per_state = model.mesh.comm.allreduce(first.shape[0], op=MPI.MAX)
    keep = max(1, min(len(states), limit // max(per_state, 1)))
    chosen = states[:: math.ceil(len(states) / keep)]
    return torch.cat([first] + [model.state_at_points(s) for s in chosen[1:]])


def _interpretability(
    config: JobConfig,
    model: OnsagerModel,
    truth: OnsagerModel,
    samples: torch.Tensor,
    results: dict[str, Any],
) -> tuple[dict[str, Any], dict[str, Any] | None]:
    """Compare the learned F (and m, when the model has one) with the truth, after the gauge.

    Writes ``results["density"]`` and ``results["mobility"]`` (``None`` for a conservative
    model) and returns the full comparisons for the plots.
    """
    from femeso.evaluation import density_comparison, mobility_comparison

    d = config["data"]
    # A constant shift of mu is invisible to a conserved mobility and to transport along a
    # divergence-free velocity: a linear term of F is not identifiable there.
    invisible_linear = d["equation"] in ("cahn_hilliard", "kdv")
    # the gauge normalises kappa to kappa_ref: a model with the true dynamics has
    # F_learned = (kappa_ref / kappa_true) F_true + invisible terms
    kappa_true = float(truth.kappa()[0, 0])
    gauge_slope = config["model"]["kappa_ref"] / kappa_true
    density = density_comparison(
        model,
        truth.energy.density,
        samples,
        conserved=invisible_linear,
        gauge_slope=gauge_slope,
    )
    results["density"] = {k: v for k, v in density.items() if k != "linear" or np.ndim(v) == 0}
    if model.is_conservative:
        results["mobility"] = None
        return density, None
    # the same gauge: m_learned = m_true / gauge_slope, at the data's (u, x) samples
    mobility = mobility_comparison(
        model,
        _true_mobility(config, model.mesh),
        samples,
        kind="conserved" if d["equation"] == "cahn_hilliard" else "local",
        density_slope=density["slope"],
        gauge_slope=gauge_slope,
    )
    results["mobility"] = {k: v for k, v in mobility.items() if np.ndim(v) == 0}
    return density, mobility


def _targets(results: dict[str, Any], density: dict[str, Any] | None) -> dict[str, Any]:
    """Return the acceptance targets that apply (no density target without a true density)."""
    onsager = results["onsager"]
    targets = {
        "error_at_training_horizon": (
            onsager["error_at_training_horizon"],
            TARGETS["error_at_training_horizon"],
            onsager["error_at_training_horizon"] <= TARGETS["error_at_training_horizon"],
        ),
        "energy_increases": (
            onsager["energy_increases"],
            0,
            onsager["energy_increases"] in (0, None),
        ),
    }
    if density is not None:
        targets["density_r2"] = (
            density["gauge"]["r2"],
            TARGETS["density_r2"],
            density["gauge"]["r2"] >= TARGETS["density_r2"],
        )
    return {k: {"value": v, "target": t, "met": bool(ok)} for k, (v, t, ok) in targets.items()}


def _rescaled(values: np.ndarray, like: np.ndarray) -> np.ndarray:
    """Affinely map ``values`` onto the range of ``like`` (to overlay energies of other gauges)."""
    a, b = np.nanmin(values), np.nanmax(values)
    c, d = np.nanmin(like), np.nanmax(like)
    return c + (values - a) * (d - c) / (b - a) if b > a else values


def _true_mobility(config: JobConfig, mesh: fd.MeshGeometry):
    """Return the data's mobility on ``mesh``: a number or an Expression of ``(u[, x])``."""
    d = config["data"]
    return mobility_coefficient(d["mobility"], mesh, scale=d["mobility_scale"])


def _plots(config, data, reports, model, truth, density, mobility, samples) -> list[Path | None]:
    from femeso.evaluation import density_curves
    from femeso.plots import plot_curves, plot_density, plot_fields

    directory = config.output / "report"
    d = config["data"]
    horizon = d["frames"] * d["frame_dt"]
    paths: list[Path | None] = []
    onsager = reports["onsager"]
    states = onsager.rollouts[0].states
    n = len(states)
    picks = sorted({0, min(d["frames"], n - 1), (n - 1) // 2, n - 1})
    truth_states = data["test"].trajectories[0].states
    fields = {"true": [truth_states[i] for i in picks], "onsager": [states[i] for i in picks]}
    labels = {"true": "data", "onsager": "Onsager model"}
    if "baseline" in reports and reports["baseline"].rollouts[0].states:
        base = reports["baseline"].rollouts[0].states
        if len(base) == n:
            fields["baseline"] = [base[i] for i in picks]
            labels["baseline"] = "black-box baseline"
    times = [float(onsager.rollouts[0].times[i]) for i in picks]
    paths.append(
        plot_fields(
            directory / "fields.png",
            fields,
            times,
            labels,
            reference="true",
            title=f"{config['job']['name']}: test trajectory 0",
        )
    )
    series = {name: r.error_mean for name, r in reports.items()}
    paths.append(
        plot_curves(
            directory / "error.png",
            {name: r.times for name, r in reports.items()},
            series,
            "relative L2 error",
            logy=True,
            train_end=horizon,
            title="rollout error against the data (mean over test trajectories)",
        )
    )
    paths.append(_energy_plot(directory / "energy.png", reports, horizon, known=truth is not None))
    u_grid = np.linspace(float(samples.min()), float(samples.max()), 200)
    true_density = truth.energy.density if truth is not None else None
    curves = density_curves(model, u_grid, true_density=true_density, fit=density)
    if mobility is None:  # no true model, or a conservative one: F only
        paths.append(plot_density(directory / "density.png", u_grid, curves, title="learned F(u)"))
        return paths
    if mobility.get("position"):  # m(u, x): F on its own, m at the samples and along x_1
        paths.append(
            plot_density(
                directory / "density.png", u_grid, curves, title="learned F(u) after the gauge fit"
            )
        )
        paths.append(_mobility_plot(directory / "mobility.png", config, model, mobility, samples))
        return paths
    u_t = torch.as_tensor(u_grid[:, None])
    scale = mobility.get("scale") or 1.0
    with torch.no_grad():
        learned = model.mobility_values(u_t)
    kind = next(iter(learned))
    true_m = _true_mobility(config, model.mesh)
    mob = {
        "learned / fitted scale": learned[kind][:, 0].numpy() / scale,
        "true": true_m(u_t)[:, 0].numpy() if callable(true_m) else np.full_like(u_grid, true_m),
    }
    paths.append(
        plot_density(
            directory / "density.png",
            u_grid,
            curves,
            mobility=mob,
            title="learned F(u) and m(u) after the gauge fit",
        )
    )
    return paths


#: States at which the mobility profiles along x_1 are drawn (the graded truth is even in u).
PROFILE_STATES = (0.0, 0.5, 1.0)


def _mobility_plot(
    path: Path, config: JobConfig, model: OnsagerModel, mobility: dict, samples: torch.Tensor
) -> Path:
    """Plot a position-dependent mobility comparison: at the data's samples, and along x_1."""
    from femeso.evaluation import mobility_samples
    from femeso.plots import plot_mobility

    kind, slope = mobility["kind"], mobility["gauge"]["slope"]
    true_m = _true_mobility(config, model.mesh)
    at_samples = mobility_samples(model, true_m, samples, kind=kind)
    profiles = {}
    for value in PROFILE_STATES:
        u = torch.full((model.x.shape[0], model.n_states), value, dtype=samples.dtype)
        at = mobility_samples(model, true_m, u, kind=kind)
        profiles[f"u = {value:g}"] = (at["x"][:, 0], at["true"][:, 0], slope * at["learned"][:, 0])
    g = mobility["gauge"]
    return plot_mobility(
        path,
        at_samples["true"],
        slope * at_samples["learned"],
        profiles=profiles,
        title=f"learned m(u, x) x {slope:.3g} (the gauge) against the true one: relative L2 error "
        f"{g['relative_l2']:.2e}, R2 {g['r2']:.4f}",
    )


def _energy_plot(path: Path, reports, horizon: float, *, known: bool) -> Path | None:
    """Plot the energies along the rollouts: the true V when known, the models' own V."""
    from femeso.plots import plot_curves

    onsager = reports["onsager"]
    energies: dict[str, np.ndarray] = {}
    times: dict[str, np.ndarray] = {}
    if known:
        for name, r in reports.items():
            energies[f"{name} (true V)"] = np.nanmean(r.reference_energies, axis=0)
            times[f"{name} (true V)"] = r.times
        energies["data (true V)"] = np.nanmean(onsager.reference_energies_data, axis=0)
        times["data (true V)"] = onsager.data_times
    own = np.nanmean(onsager.energies, axis=0)
    label = "Onsager model (own V, rescaled)" if known else "Onsager model (own V)"
    energies[label] = _rescaled(own, energies["data (true V)"]) if known else own
    times[label] = onsager.times
    return plot_curves(
        path,
        times,
        energies,
        "true energy V" if known else "learned energy V",
        train_end=horizon,
        title="energy along the rollouts",
    )


def run(config: JobConfig, *, resume: bool = False, progress: bool = True) -> dict[str, Any]:
    """Run the whole job: generate (unless the data exist and ``resume``), train, report."""
    t0 = time.perf_counter()
    have_data = all(_data_path(config, split).exists() for split in SPLITS)
    if not (resume and have_data):
        generate(config, progress=progress)
    training = train(config, resume=resume, progress=progress)
    results = report(config, progress=progress)
    results["training"] = training
    results["seconds_total"] = time.perf_counter() - t0
    from femeso.evaluation import write_json

    write_json(config.output / "report" / "results.json", results)
    return results


def _f(x: Any) -> str:
    """Format a number of the summary (``-`` for a missing one)."""
    return "-" if x is None else f"{x:.2e}" if isinstance(x, float) else str(x)


def table_lines(table: dict[str, dict[str, Any]]) -> list[str]:
    """Return the error table (mean ± std of the relative L2 error at each step) as text."""
    steps = max((t["steps"] for t in table.values()), key=len, default=[])
    lines = [f"{'step':<11}" + "".join(f"{k:>20}" for k in steps)]
    for name in ("onsager", "classical", "baseline"):
        if name not in table:
            continue
        t = table[name]
        rows = zip(t["steps"], t["mean"], t["std"], strict=True)
        cells = {k: f"{m:.2e} ± {s:.1e}" for k, m, s in rows}
        lines.append(f"{name:<11}" + "".join(f"{cells.get(k, '-'):>20}" for k in steps))
    return lines


def summary_lines(results: dict[str, Any]) -> list[str]:
    """Return the report as lines of text (the command line prints them)."""
    lines = [
        f"job {results['job']}: {results['cells']} cells, {results['dofs']} DoFs, "
        f"{results['ranks']} rank(s); training horizon {results['training_horizon']:g}, "
        f"long horizon {results['long_horizon']:g}",
        "relative L2 error of the rollouts from the test trajectories' first frames "
        "(mean ± std over the test trajectories):",
        *table_lines(results["table"]),
        f"{'':<11}{'err@1 step':>11}{'err@train T':>12}{'err@10x T':>11}{'max err':>10}"
        f"{'V incr.':>8}{'true V incr.':>13}{'V drift':>10}{'mass drift':>11}",
    ]
    for name in ("onsager", "baseline", "classical"):
        if name not in results:
            continue
        r = results[name]
        lines.append(
            f"{name:<11}{_f(r['error_first']):>11}{_f(r['error_at_training_horizon']):>12}"
            f"{_f(r['error_last']):>11}{_f(r['error_max']):>10}{_f(r['energy_increases']):>8}"
            f"{_f(r['reference_energy_increases']):>13}{_f(r['energy_drift']):>10}"
            f"{_f(r['max_mass_drift']):>11}"
        )
    if results.get("transport"):
        lines.append(f"learned transport velocity: {results['transport']}")
    d, m = results.get("density"), results.get("mobility")
    if d is not None:
        g = d["gauge"]
        lines.append(
            f"learned F vs true, in the gauge (F ~ {g['slope']:.4g} F_true + o + e u, only o, e "
            f"fitted): R2={g['r2']:.5f}; free fit: s={d['slope']:.4g}, R2={d['r2']:.5f}; "
            f"F'' slope {d['second_derivative']['slope']:.4g}, "
            f"R2={d['second_derivative']['r2']:.4f}"
        )
    if m is not None:
        lines.append(
            f"learned m vs true (m ~ c m_true): c={m.get('scale', float('nan')):.4g} "
            f"R2={m.get('r2', float('nan')):.4f}; s*c={m.get('product') or float('nan'):.4g}"
        )
        g = m.get("gauge")
        if g:
            over = "(u, x)" if m.get("position") else "u"
            lines.append(
                f"learned m vs true in the gauge (m ~ m_true / {g['slope']:.4g}, over the data's "
                f"{over} samples): relative L2 error {g['relative_l2']:.2e}, R2={g['r2']:.4f}, "
                f"max relative error {g['max_relative']:.2e}"
            )
    steps = results["step_sizes"]
    lines.append(
        "inference at other steps, error against the finest (t_end={:g}): ".format(steps["t_end"])
        + ", ".join(
            f"{fac:g}x dt: err {err:.2e}"
            for fac, err in zip(steps["factors"], steps["error"], strict=True)
        )
        + f"; order {steps['order']:.2f}"
    )
    relations = {"error_at_training_horizon": "<=", "energy_increases": "==", "density_r2": ">="}
    for key, t in results["targets"].items():
        verdict = "MET" if t["met"] else "NOT MET"
        lines.append(f"target {key}: {t['value']} (needs {relations[key]} {t['target']}) {verdict}")
    return lines
