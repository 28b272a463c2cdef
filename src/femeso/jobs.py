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

import glob
import json
import math
import shutil
import time
from dataclasses import asdict
from pathlib import Path
from typing import Any

import firedrake as fd
import numpy as np
import torch
from mpi4py import MPI

from femeso._log import logger
from femeso.baseline import BlackBoxModel, BlackBoxStepper
from femeso.config import CHAINS, PEER_MODELS, JobConfig
from femeso.data.chains import generate_chain_dataset
from femeso.data.generators import (
    allen_cahn_model,
    cahn_hilliard_model,
    generate_dataset,
    kdv_model,
    mobility_coefficient,
    paper_sine_initial_condition,
)
from femeso.data.io import export_vtk, load_dataset, load_dataset_mesh, save_dataset
from femeso.data.mapping import map_dataset
from femeso.data.trajectories import Dataset, TrajectoryData
from femeso.energies import BarrierDensity, CoerciveNeuralDensity, ConstantKappa, Energy
from femeso.fields import NeuralField
from femeso.initial_conditions import random_smooth_field
from femeso.meshes import bounding_box, load_mesh
from femeso.mobilities import ConservedMobility, LocalMobility, SkewTransport
from femeso.model import OnsagerModel
from femeso.phases import ChooseStart, Optimise, PhasedTraining
from femeso.steppers import EnergyStableStepper
from femeso.training import TrainingConfig

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


#: The result folders of a job, made from its data (removed with the data on --overwrite).
RESULTS = ("onsager", "baseline", "rollouts", "report") + tuple(
    name for name in PEER_MODELS if name != "blackbox"
)


# ---------------------------------------------------------------------- building blocks
def from_files(config: JobConfig) -> bool:
    """Return whether the job learns from files (``data.source = "files"``)."""
    return config.data.source == "files"


def build_space(config: JobConfig) -> fd.FunctionSpace:
    """Return the job's state space (scalar CG of ``mesh.degree`` on the job's mesh).

    For data from files the mesh is the one stored with the imported training data
    (``data/train.h5``), and ``data.frame_dt``, ``data.frames`` and
    ``evaluation.horizon_factor`` are filled in from the data (``data/source.json``).
    """
    m = config.mesh
    if from_files(config):
        _resolve_file_data(config)
        mesh = load_dataset_mesh(_data_path(config, "train"))
        return fd.FunctionSpace(mesh, "CG", m.degree)
    if m.name == "periodic_interval":
        mesh = fd.PeriodicIntervalMesh(m.cells, m.length)
    elif m.name == "periodic_square":
        mesh = fd.PeriodicSquareMesh(m.cells, m.cells, m.length)
    else:
        mesh = load_mesh(m.name, refinement=m.refinement)
    return fd.FunctionSpace(mesh, "CG", m.degree)


def true_model(config: JobConfig, space: fd.FunctionSpace) -> OnsagerModel | None:
    """Return the model that generates the job's data (``None`` for chain data: none is known)."""
    d = config.data
    if from_files(config) or d.equation in CHAINS:
        return None
    if d.equation == "kdv":
        return kdv_model(space)
    mobility = _true_mobility(config, space.mesh())
    if d.equation == "cahn_hilliard":
        return cahn_hilliard_model(space, kappa=d.kappa, density=d.density, mobility=mobility)
    return allen_cahn_model(space, epsilon=d.epsilon, density=d.density, mobility=mobility)


def learned_model(config: JobConfig, space: fd.FunctionSpace) -> OnsagerModel:
    """Return the (untrained) Onsager model of the job.

    Neural F, gauge-normalised kappa, a mobility m(u) (neural, constant or none: M = 0) or
    m(u, x) (``neural_x``: the position normalised by the mesh's bounding box, centre and
    half-widths) and, with ``model.transport = "learned"``, a skew transport along a learned
    constant velocity.
    """
    m, seed = config.model, config.job.seed
    if m.transport == "learned" and space.mesh().geometric_dimension != 1:
        raise ValueError(
            f"{config.source}: model.transport = 'learned' needs 1-D periodic data, the data's "
            f"mesh is {space.mesh().geometric_dimension}-D"
        )
    density = CoerciveNeuralDensity(
        width=m.width, depth=m.depth, polynomial_degree=m.polynomial_degree, seed=seed
    )
    if m.state_range:  # every accepted state strictly inside: see BarrierDensity
        density = density + BarrierDensity(*m.state_range)
    energy = Energy(density, ConstantKappa(1.0, learnable=True))
    conservative = []
    if m.transport == "learned":
        conservative.append(SkewTransport([m.velocity], dim=1, learnable=True))
    if m.mobility == "none":
        return OnsagerModel(space, energy, conservative=conservative, kappa_ref=m.kappa_ref)
    if m.mobility in ("neural", "neural_x"):
        center, scale, dim = [m.input_center], [m.input_scale], None
        if m.mobility == "neural_x":
            lo, hi = bounding_box(space.mesh())
            dim = len(lo)
            center += (0.5 * (lo + hi)).tolist()
            scale += np.maximum(0.5 * (hi - lo), 1e-12).tolist()
        coefficient: Any = NeuralField(
            1,
            1,
            width=m.width,
            depth=m.depth,
            dim=dim,
            seed=seed + 1,
            input_center=center if dim else center[0],
            input_scale=scale if dim else scale[0],
        )
    else:
        coefficient = 1.0
    dynamics = m.dynamics
    if dynamics == "auto":
        dynamics = "conserved" if config.data.equation == "cahn_hilliard" else "local"
    cls = ConservedMobility if dynamics == "conserved" else LocalMobility
    return OnsagerModel(
        space,
        energy,
        mobility=cls(coefficient),
        conservative=conservative,
        kappa_ref=m.kappa_ref,
    )


def baseline_model(config: JobConfig, space: fd.FunctionSpace) -> BlackBoxModel:
    """Return the (untrained) black-box baseline of the job."""
    return BlackBoxModel(space, width=config.baseline.width, seed=config.job.seed)


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
    """Load the job's datasets onto ``space`` (written by :func:`generate`).

    The files may have been written on any number of ranks and on another mesh object of the
    same geometry: every state is matched to ``space``'s DoFs by position
    (:func:`femeso.data.mapping.map_dataset`), and a file on another geometry, element or size
    is an error naming it.
    """
    out = {}
    for split in SPLITS:
        path = _data_path(config, split)
        if split == "validation" and not path.exists() and _data_path(config, "train").exists():
            out[split] = Dataset(space, [], {"split": split})  # the job has no validation data
            continue
        if not path.exists():
            raise FileNotFoundError(f"{path} is missing: run `femeso generate` first")
        data = load_dataset(path, comm=space.mesh().comm)
        out[split] = map_dataset(data, space, label=str(path))
    return out


def _drop_frames(data: Dataset, n: int) -> Dataset:
    """Drop the first ``n`` frames of every trajectory."""
    if n == 0:
        return data
    trajectories = [
        TrajectoryData(t.space, t.times[n:], t.states[n:], {**t.metadata, "burn_in_frames": n})
        for t in data.trajectories
    ]
    return Dataset(data.space, trajectories, data.metadata)


# ---------------------------------------------------------------------- output folders
def check_output(config: JobConfig) -> None:
    """Raise ``ValueError`` if the job's output folder cannot be a folder (a file is in the way)."""
    out = config.output
    for path in (out, *out.parents):
        if path.exists():
            if not path.is_dir():
                raise ValueError(f"{out}: cannot be the output folder: {path} is a file")
            return


def _existing(paths: list[Path]) -> list[Path]:
    comm = fd.COMM_WORLD
    found = [str(p) for p in paths if p.exists()] if comm.rank == 0 else None
    return [Path(p) for p in comm.bcast(found, root=0)]


def _remove(paths: list[Path]) -> None:
    """Remove files and folders (rank 0), then wait for every rank."""
    comm = fd.COMM_WORLD
    if comm.rank == 0:
        for path in paths:
            if path.is_dir():
                shutil.rmtree(path)
            elif path.exists():
                path.unlink()
    comm.barrier()


def prepare_data_folder(config: JobConfig, *, overwrite: bool) -> None:
    """Refuse to replace earlier data unless ``overwrite``; then remove it and its results.

    Results made from earlier data (models, rollouts, report) would no longer match new data:
    they go with it.
    """
    check_output(config)
    data = [_data_path(config, split) for split in SPLITS] + [_source_path(config)]
    existing = _existing(data)
    if existing and not overwrite:
        raise FileExistsError(
            f"{existing[0]}: data of an earlier run are in {config.output} (pass --overwrite to "
            "replace them and the results made from them)"
        )
    stale = _existing(existing + [config.output / r for r in RESULTS])
    if stale:
        logger.warning("overwrite: removing %s", ", ".join(str(p) for p in stale))
        _remove(stale)


# ---------------------------------------------------------------------- stages
def generate(
    config: JobConfig, *, progress: bool = True, overwrite: bool = False
) -> dict[str, Path]:
    """Generate (or, for ``data.source = "files"``, import) the train / validation / test data.

    The trajectories are saved under ``data/``. Earlier data there is an error unless
    ``overwrite``, which also removes the results made from it.
    """
    prepare_data_folder(config, overwrite=overwrite)
    if from_files(config):
        return import_files(config, progress=progress)
    t0 = time.perf_counter()
    d, seed = config.data, config.job.seed
    space = build_space(config)
    frames = {
        "train": d.frames,
        "validation": d.frames,
        "test": d.frames * config.evaluation.horizon_factor,
    }
    seeds = {"train": seed, "validation": seed + 1000, "test": seed + 2000}
    paths = {}
    for split in SPLITS:
        count = getattr(d, split)
        path = _data_path(config, split)
        path.parent.mkdir(parents=True, exist_ok=True)
        if count == 0:  # no validation data: no file (an empty dataset has no space to save)
            logger.info("generate: no %s trajectories", split)
            continue
        data = generate_trajectories(
            config, space, count=count, frames=frames[split], seed=seeds[split], progress=progress
        )
        paths[split] = save_dataset(path, data)
    logger.info("generate: data in %s (%.1f s)", config.output / "data", time.perf_counter() - t0)
    return paths


def _source_path(config: JobConfig) -> Path:
    return config.output / "data" / "source.json"


def data_files(config: JobConfig) -> list[Path]:
    """Return the files of ``data.paths`` (globs expanded, relative to the job file), sorted.

    Raises
    ------
    FileNotFoundError
        If a path or pattern matches no file.

    """
    base = Path(config.directory)
    files: list[Path] = []
    for pattern in config.data.paths:
        full = Path(pattern) if Path(pattern).is_absolute() else base / pattern
        matches = sorted(Path(p) for p in glob.glob(str(full)))
        if not matches:
            raise FileNotFoundError(
                f"{config.source}: data.paths: {pattern!r} matches no file (in {base})"
            )
        files.extend(m for m in matches if m not in files)
    return files


def import_files(config: JobConfig, *, progress: bool = True) -> dict[str, Path]:
    """Read the job's data files, split them by whole trajectories, save them under ``data/``.

    Every trajectory must have equally spaced frames, all with the same step (the training
    step); ``data.max_trajectories`` keeps the first ones; ``data.split`` (seeded by
    ``job.seed``) cuts them into train / validation / test; ``data.train_frames`` shortens the
    training and validation trajectories. ``data/source.json`` records the files, the step,
    the frames and the split.
    """
    from femeso.data.io import read_data

    t0 = time.perf_counter()
    d, seed = config.data, config.job.seed
    files = data_files(config)
    dataset = read_data(files, format=d.format, fields=d.fields or None, degree=config.mesh.degree)
    if d.max_trajectories and len(dataset) > d.max_trajectories:
        logger.info(
            "data: keeping the first %d of %d trajectories (data.max_trajectories)",
            d.max_trajectories,
            len(dataset),
        )
        dataset = Dataset(dataset.space, dataset.trajectories[: d.max_trajectories], {})
    frame_dt = _common_frame_step(dataset)
    parts = dataset.split(seed, d.split)
    for name, part in zip(SPLITS, parts, strict=True):
        if name != "validation" and len(part) == 0:
            raise ValueError(
                f"{config.source}: data.split = {d.split} leaves no {name} trajectory out of "
                f"{len(dataset)}"
            )
    keep = d.train_frames
    paths = {}
    for name, part in zip(SPLITS, parts, strict=True):
        if keep and name != "test":
            part = Dataset(
                part.space,
                [
                    TrajectoryData(t.space, t.times[: keep + 1], t.states[: keep + 1], t.metadata)
                    for t in part
                ],
                part.metadata,
            )
        if len(part) == 0:  # no validation data: no file
            continue
        path = _data_path(config, name)
        path.parent.mkdir(parents=True, exist_ok=True)
        paths[name] = save_dataset(path, part)
    train_frames = min(len(t) for t in parts.train) - 1
    test_frames = min(len(t) for t in parts.test) - 1
    if keep:
        train_frames = min(train_frames, keep)
    source = {
        "files": [str(f) for f in files],
        "trajectories": len(dataset),
        "frame_dt": frame_dt,
        "train_frames": train_frames,
        "test_frames": test_frames,
        "split": {
            name: part.metadata["split"]["indices"]
            for name, part in zip(SPLITS, parts, strict=True)
        },
        "dofs": dataset.space.dim(),
        "element": str(dataset.space.ufl_element()),
    }
    if fd.COMM_WORLD.rank == 0:
        _source_path(config).write_text(json.dumps(source, indent=1) + "\n")
    fd.COMM_WORLD.barrier()
    logger.info(
        "import: %d trajectories from %d file(s), step %g, split %d / %d / %d, into %s (%.1f s)",
        len(dataset),
        len(files),
        frame_dt,
        *(len(p) for p in parts),
        config.output / "data",
        time.perf_counter() - t0,
    )
    return paths


def _common_frame_step(dataset: Dataset) -> float:
    """Return the frame step shared by every trajectory; ``ValueError`` naming the first misfit."""
    steps = []
    for i, traj in enumerate(dataset):
        where = f"{traj.metadata.get('source', 'data')}: trajectory {i}"
        if len(traj) < 2:
            raise ValueError(f"{where}: one frame only (nothing to learn a step from)")
        h = np.diff(traj.times)
        if np.ptp(h) > 1e-6 * np.mean(h):
            k = int(np.argmax(np.abs(h - np.median(h))))
            raise ValueError(
                f"{where}: frames are not equally spaced (step {h[k]:.6g} at frame {k}, "
                f"median {np.median(h):.6g})"
            )
        steps.append(float(np.mean(h)))
    if np.ptp(steps) > 1e-6 * np.mean(steps):
        i = int(np.argmax(np.abs(np.asarray(steps) - steps[0])))
        where = dataset[i].metadata.get("source", "data")
        raise ValueError(
            f"{where}: trajectory {i} has the frame step {steps[i]:.6g}, trajectory 0 "
            f"({dataset[0].metadata.get('source', 'data')}) {steps[0]:.6g}: one step per job"
        )
    return float(np.mean(steps))


def _resolve_file_data(config: JobConfig) -> None:
    """Fill in the frame step, frames and horizon factor of imported data (``source.json``)."""
    path = _source_path(config)
    if not path.exists():
        raise FileNotFoundError(
            f"{path} is missing: run `femeso generate` first (imports the files)"
        )
    source = json.loads(path.read_text())
    d = config.data
    d.frame_dt = float(source["frame_dt"])
    d.frames = int(source["train_frames"])
    config.evaluation.horizon_factor = max(
        1, int(source["test_frames"]) // max(1, int(source["train_frames"]))
    )


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
    d = config.data
    if d.equation in CHAINS:
        return _chain_data(config, space, count, frames, seed, progress)

    def initial(V: fd.FunctionSpace, seed: int) -> fd.Function:
        if d.initial == "paper_sine":
            return paper_sine_initial_condition(V, seed=seed)
        return random_smooth_field(
            V, seed=seed, amplitude=d.amplitude, mean=d.mean, max_wavenumber=d.wavenumber
        )

    data = generate_dataset(
        space,
        lambda V: true_model(config, V),
        n_trajectories=count,
        n_frames=frames + d.burn_in,
        frame_dt=d.frame_dt,
        seed=seed,
        substeps=d.substeps,
        refine=d.refine,
        initial_condition=initial,
        name=d.equation,
        parameters={
            k: getattr(d, k) for k in ("density", "mobility", "mobility_scale", "kappa", "epsilon")
        },
        progress=progress,
    )
    return _drop_frames(data, d.burn_in)


def _chain_data(
    config: JobConfig, space: fd.FunctionSpace, count: int, frames: int, seed: int, progress: bool
) -> Dataset:
    """Return ``count`` chain trajectories coarse-grained to the job's periodic interval.

    The chain's own defaults (the paper's: 128 FPUT / 209 FENE particles, unit standard
    deviation) except the slow period (``mesh.length``), the frame step and the length; the
    ``burn_in`` first frames are dropped.
    """
    d, m = config.data, config.mesh
    total = frames + d.burn_in
    data = generate_chain_dataset(
        d.equation,
        n_trajectories=count,
        seed=seed,
        n_points=m.cells,
        comm=space.mesh().comm,
        progress=progress,
        length=m.length,
        frame_dt=d.frame_dt,
        t_end=total * d.frame_dt,
    )
    data = map_dataset(data, space, label=f"the {d.equation} chains")
    if any(len(t.times) != total + 1 for t in data.trajectories):
        raise RuntimeError(f"the {d.equation} chains did not return {total + 1} frames")
    return _drop_frames(data, d.burn_in)


#: The training phases, named by the ``[training]`` key that sets their iteration count.
PHASES = ("iterations", "refine_iterations")

#: ``[training]`` keys of the job's phases, not of one :class:`TrainingConfig`.
PHASE_KEYS = ("refine_iterations", "refine_batch_size", "warm_start", "starts")


def _trainer_settings(config: JobConfig) -> dict[str, Any]:
    """Return the ``[training]`` keys that :class:`TrainingConfig` takes, with the job's seed."""
    settings = dict(asdict(config.training), seed=config.job.seed)
    for key in PHASE_KEYS:
        settings.pop(key)
    return settings


def _training_config(config: JobConfig, *, baseline: bool, judge: bool = False) -> TrainingConfig:
    """Return the main phase's settings (``judge``: for validation only, at least 1 iteration)."""
    settings = _trainer_settings(config)
    if baseline:
        settings["iterations"] = config.baseline.iterations
        settings["learning_rate"] = config.baseline.learning_rate
    if judge:  # the judge trains nothing; its windows are the main phase's
        settings["iterations"] = max(1, settings["iterations"])
    return TrainingConfig(**settings)


def _refine_config(config: JobConfig) -> TrainingConfig:
    """Return the Levenberg--Marquardt phase that follows the first-order optimiser."""
    settings = _trainer_settings(config)
    settings.update(
        optimizer="levenberg_marquardt",
        iterations=config.training.refine_iterations,
        batch_size=config.training.refine_batch_size,
        unroll=1,
        learning_rate=1.0,
        lr_decay=1.0,
        weight_decay=0.0,
        gradient_clip=0.0,
        validate_every=min(5, config.training.refine_iterations),
        checkpoint_every=min(5, config.training.refine_iterations),
    )
    return TrainingConfig(**settings)


def _model_path(config: JobConfig, which: str) -> Path:
    return config.output / which / "model.npz"


def _phases(config: JobConfig, which: str) -> list:
    """Return the training phases of a model, in order (:mod:`femeso.phases`).

    The Onsager model: the choice of start (``training.warm_start``, ``training.starts``), the
    first-order optimiser (``training.iterations``) and Levenberg--Marquardt
    (``training.refine_iterations``); the baseline: its optimiser. A phase's ``key`` is the
    training record's key that counts its iterations.
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
    if training.refine_iterations > 0:  # Levenberg-Marquardt from the first phase
        phases.append(Optimise(_refine_config(config), directory / "refine", "refine_iterations"))
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
    (``training.warm_start``, :func:`femeso.warm_start.warm_start`), then runs the first-order
    optimiser (``training.iterations``) and the Levenberg--Marquardt phase
    (``training.refine_iterations``), each phase starting from the best-on-validation parameters
    so far; the best over the warm start and all phases is kept. Each phase's directory receives
    ``checkpoint.pt`` every ``checkpoint_every`` iterations (``resume=True`` continues exactly
    from it), ``history.json`` and ``best_model.npz``; ``model.npz`` holds the parameters the
    later stages use (best on validation when validated). A model folder that holds results
    of an earlier run is an error unless ``resume`` (continue it) or ``overwrite`` (replace it).
    """
    check_output(config)
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
    space = build_space(config)
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
            # One judge for every start and phase: the main phase's validation windows.
            judge=_training_config(config, baseline=which == "baseline", judge=True),
            make_stepper=stepper_factory(model, config.model.substeps if which == "onsager" else 1),
            progress=progress,
            resume=resume,
        )
        training.iterations.update({phase: 0 for phase in PHASES})
        out[which] = training.run(_phases(config, which))
        if training.judge is not None and training.best.state is not None:
            logger.info(
                "train %s: kept the %s model (validation loss %.3e)",
                which,
                training.best.label,
                training.best.validation,
            )
        model.save(_model_path(config, which))
        from femeso.evaluation import write_json

        write_json(config.output / which / "training.json", out[which])
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
    if "peers" in models:
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
    from femeso.peers.runner import blackbox_enabled, data_step, peer_steppers

    truth = true_model(config, space)
    substeps = config.model.substeps  # the classical solver steps like the learned model
    steppers = {"onsager": stepper_factory(load_trained(config, space, "onsager"), substeps)}
    if truth is not None:
        steppers["classical"] = stepper_factory(truth, substeps)
    if blackbox_enabled(config):
        steppers["baseline"] = stepper_factory(load_trained(config, space, "baseline"))
    steppers.update(peer_steppers(config, space, data_step(data["test"])))
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


def rollout_results(
    reports: dict[str, Any], horizon: float, data: Dataset | None = None
) -> dict[str, Any]:
    r"""Return each model's rollout summary, the error tables and warnings about bad models.

    Per model: :meth:`~femeso.evaluation.RolloutReport.summary`, the mean error at the training
    ``horizon`` in both metrics (``error_at_training_horizon``: relative L2;
    ``nodal_error_at_training_horizon``: the paper's relative RMSE of nodal values) and the
    relative drift of the model's own energy. With the test ``data``, ``persistence``
    (:math:`u(t + \Delta t) = u(t)`, :func:`~femeso.evaluation.persistence_errors`) is scored
    like a model.

    Keys besides the models: ``table`` (relative L2 :func:`~femeso.evaluation.error_table` of
    every model, persistence left out: the form earlier results had), ``tables`` (``"paper"`` and
    ``"l2"``: ``{"metric": name, "rows": {model: error_table}}``, persistence included),
    ``metrics`` (key -> name) and ``warnings`` (lines ``"WARNING: ..."`` for every learned model
    whose error at step 1 or at the training horizon exceeds that of persistence or of the
    classical solver, in the paper's metric).
    """
    from femeso.evaluation import METRICS, error_table, persistence_errors, relative_energy_drift

    models = list(reports)
    reports = dict(reports)
    if data is not None:
        dt = reports[models[0]].dt if models else None
        reports["persistence"] = persistence_errors(data, dt=dt)
    results: dict[str, Any] = {}
    for name, r in reports.items():
        summary = r.summary()
        summary["error_at_training_horizon"] = _error_at(r, horizon)
        summary["nodal_error_at_training_horizon"] = _error_at(r, horizon, metric="paper")
        summary["energy_drift"] = relative_energy_drift(r)
        results[name] = summary
    results["table"] = {name: error_table(reports[name]) for name in models}
    have_nodal = all(r.nodal_errors is not None for r in reports.values())
    metrics = [m for m in METRICS if m != "paper" or have_nodal]
    results["tables"] = {
        m: {
            "metric": METRICS[m],
            "rows": {name: error_table(r, metric=m) for name, r in reports.items()},
        }
        for m in metrics
    }
    results["metrics"] = dict(METRICS)
    # Warnings in the headline metric: a learned model must beat persistence (and the solver).
    metric = "paper" if have_nodal else "l2"
    rows = results["tables"][metric]["rows"]
    prefix = "nodal_" if metric == "paper" else ""

    def at_step_1(name: str) -> float:
        row = rows[name]
        return row["mean"][row["steps"].index(1)] if 1 in row["steps"] else math.nan

    against = {"persistence": "persistence (u(t+dt) = u(t))", "classical": "the classical solver"}
    warnings = []
    for name in (n for n in models if n not in against):
        for other, label in against.items():
            if name not in reports or other not in reports:
                continue
            for where, mine, theirs in (
                ("step 1", at_step_1(name), at_step_1(other)),
                (
                    f"the training horizon t={horizon:g}",
                    results[name][f"{prefix}error_at_training_horizon"],
                    results[other][f"{prefix}error_at_training_horizon"],
                ),
            ):
                if math.isfinite(mine) and math.isfinite(theirs) and mine > theirs:
                    warnings.append(
                        f"WARNING: {name} is worse than {label} at {where}: {mine:.1e} vs "
                        f"{theirs:.1e} ({METRICS[metric]})"
                    )
    results["warnings"] = warnings
    results["models"] = list(reports)
    return results


def _error_at(report, t: float, metric: str = "l2") -> float:
    """Mean error (``"l2"`` or ``"paper"``) at the elapsed time ``t`` of a rollout report.

    ``nan`` when the report has no such errors or none at that step.
    """
    mean = report.error_mean if metric == "l2" else report.nodal_error_mean
    if mean is None:
        return math.nan
    i = int(np.argmin(np.abs(np.asarray(report.times) - t)))
    return float(mean[i])


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
    d = config.data
    horizon = d.frames * d.frame_dt
    results: dict[str, Any] = {
        "job": config.job.name,
        "config": config.as_dict(),
        "training_horizon": horizon,
        "long_horizon": horizon * config.evaluation.horizon_factor,
        "dofs": space.dim(),
        "cells": space.mesh().num_cells(),
        "ranks": space.mesh().comm.size,
    }
    results.update(rollout_results(reports, horizon, data=data["test"]))
    results["costs"] = model_costs(config, reports)
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
    factors = config.evaluation.step_factors
    results["step_sizes"] = step_size_study(
        stepper_factory(model, config.model.substeps),
        data["test"].trajectories[0],
        factors=factors,
        reference="finest",
    )
    results["targets"] = _targets(results, density)
    directory = config.output / "report"
    directory.mkdir(parents=True, exist_ok=True)
    if config.evaluation.vtk:
        _write_vtk(config, data, reports)
    if config.evaluation.plots:
        results["plots"] = [
            str(p)
            for p in _plots(config, data, reports, model, truth, density, mobility, samples)
            if p
        ]
    results["seconds"] = time.perf_counter() - t0
    write_json(directory / "results.json", results)
    logger.info("report: %s", directory / "results.json")
    return results


def model_costs(config: JobConfig, reports: dict[str, Any]) -> dict[str, dict[str, Any]]:
    """Per model: trainable parameters, training wall time and wall time per rollout step.

    The training figures come from each model's ``training.json`` (``None`` where the model
    is not trained, e.g. the classical solver, or was trained by an older femeso); the rollout
    figure is the stepper's wall time over the test rollouts divided by their steps.
    """
    from femeso.peers.runner import peer_directory

    costs = {}
    for name, r in reports.items():
        folder = config.output / name if name in ("onsager", "baseline") else None
        if name not in ("onsager", "baseline", "classical", "persistence"):
            folder = peer_directory(config, name)
        training = {}
        if folder is not None and (folder / "training.json").exists():
            training = json.loads((folder / "training.json").read_text())
        steps = (len(r.times) - 1) * max(len(r.wall_times), 1)
        costs[name] = {
            "parameters": training.get("parameters"),
            "training_seconds": training.get("seconds"),
            "seconds_per_step": sum(r.wall_times) / steps if r.wall_times and steps else None,
        }
    return costs


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

    d = config.data
    # A constant shift of mu is invisible to a conserved mobility and to transport along a
    # divergence-free velocity: a linear term of F is not identifiable there.
    invisible_linear = d.equation in ("cahn_hilliard", "kdv")
    # the gauge normalises kappa to kappa_ref: a model with the true dynamics has
    # F_learned = (kappa_ref / kappa_true) F_true + invisible terms
    kappa_true = float(truth.kappa()[0, 0])
    gauge_slope = config.model.kappa_ref / kappa_true
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
        kind="conserved" if d.equation == "cahn_hilliard" else "local",
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
    d = config.data
    return mobility_coefficient(d.mobility, mesh, scale=d.mobility_scale)


def _plots(config, data, reports, model, truth, density, mobility, samples) -> list[Path | None]:
    from femeso.evaluation import METRICS, density_curves
    from femeso.plots import plot_curves, plot_density, plot_fields

    directory = config.output / "report"
    d = config.data
    horizon = d.frames * d.frame_dt
    paths: list[Path | None] = []
    onsager = reports["onsager"]
    states = onsager.rollouts[0].states
    n = len(states)
    picks = sorted({0, min(d.frames, n - 1), (n - 1) // 2, n - 1})
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
            scale_with=("onsager",),  # a diverging baseline is clipped, not the scale
            title=f"{config.job.name}: test trajectory 0",
        )
    )
    # the scored means: a failed rollout counts as 1 from its failing step on
    series = {name: r.error_mean for name, r in reports.items()}
    paths.append(
        plot_curves(
            directory / "error.png",
            {name: r.times for name, r in reports.items()},
            series,
            METRICS["l2"],
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


def _mean_of_available(values: np.ndarray) -> tuple[np.ndarray, int]:
    """Return the per-step mean over the trajectories that have a value, and how many lack one.

    A trajectory lacks values after its rollout failed, or everywhere for a model without an
    energy; the legend says how many (no value is averaged away silently).
    """
    finite = np.isfinite(values)
    count = finite.sum(axis=0)
    total = np.where(finite, values, 0.0).sum(axis=0)
    mean = np.divide(total, count, out=np.full(count.shape, np.nan), where=count > 0)
    return mean, int((~finite.all(axis=1)).sum())


def _short_label(short: int, total: int) -> str:
    """Return the legend's note on a mean over fewer trajectories than there are."""
    return f"; {short} of {total} rollouts incomplete" if short else ""


def _energy_plot(path: Path, reports, horizon: float, *, known: bool) -> Path | None:
    """Plot the energies along the rollouts: the true V when known, the models' own V."""
    from femeso.plots import plot_curves

    onsager = reports["onsager"]
    energies: dict[str, np.ndarray] = {}
    times: dict[str, np.ndarray] = {}
    if known:
        for name, r in reports.items():
            mean, short = _mean_of_available(r.reference_energies)
            label = f"{name} (true V{_short_label(short, len(r.reference_energies))})"
            energies[label], times[label] = mean, r.times
        energies["data (true V)"], _ = _mean_of_available(onsager.reference_energies_data)
        times["data (true V)"] = onsager.data_times
    own, short = _mean_of_available(onsager.energies)
    rescaled = ", rescaled" if known else ""
    label = f"Onsager model (own V{rescaled}{_short_label(short, len(onsager.energies))})"
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


def run(
    config: JobConfig, *, resume: bool = False, progress: bool = True, overwrite: bool = False
) -> dict[str, Any]:
    """Run the whole job: generate (unless the data exist and ``resume``), train, report.

    An output folder with results of an earlier run is an error unless ``resume`` (continue
    it) or ``overwrite`` (replace all of it).
    """
    t0 = time.perf_counter()
    check_output(config)
    have_data = all(_data_path(config, split).exists() for split in ("train", "test"))
    if not (resume and have_data):
        generate(config, progress=progress, overwrite=overwrite)
    training = train(config, resume=resume, progress=progress, overwrite=overwrite)
    results = report(config, progress=progress)
    results["training"] = training
    results["seconds_total"] = time.perf_counter() - t0
    from femeso.evaluation import write_json

    write_json(config.output / "report" / "results.json", results)
    return results


def _f(x: Any) -> str:
    """Format a number of the summary (``-`` for a missing one)."""
    return "-" if x is None else f"{x:.2e}" if isinstance(x, float) else str(x)


def table_lines(
    table: dict[str, dict[str, Any]], *, steps: tuple[int, ...] | None = None
) -> list[str]:
    """Return an error table (mean ± std over the test trajectories at each step) as text.

    ``table``: model -> :func:`~femeso.evaluation.error_table` row (either metric). ``steps``
    selects the columns (default: every step of the rows); a selected step beyond the rows'
    last one is replaced by that last one. The last column counts the failed rollouts; a line
    below the table names the first step at which a row counts errors as diverged. A missing
    number prints as ``-``, never as ``nan``.
    """
    from femeso.evaluation import format_value

    have = sorted({k for t in table.values() for k in t["steps"]})
    columns = have
    if steps is not None:
        columns = [k for k in have if k in steps]
        if have and any(k > have[-1] for k in steps) and have[-1] not in columns:
            columns.append(have[-1])
    order = ["onsager", "classical", "baseline"]
    names = [n for n in order if n in table]
    names += [n for n in table if n not in names and n != "persistence"]
    names += [n for n in ("persistence",) if n in table]
    lines = [f"{'step':<17}" + "".join(f"{k:>20}" for k in columns) + f"{'failed':>9}"]
    notes = []
    for name in names:
        t = table[name]
        cells = {}
        for k, m, s in zip(t["steps"], t["mean"], t["std"], strict=True):
            mean = format_value(m, ".2e", missing="")
            cells[k] = f"{mean} ± {format_value(s, '.1e')}" if mean else "-"
        n_failed, n_traj = t.get("n_failed"), t.get("n_trajectories")
        failed = "-" if n_failed is None else f"{n_failed}/{n_traj}" if n_failed else "0"
        lines.append(
            f"{name:<17}" + "".join(f"{cells.get(k, '-'):>20}" for k in columns) + f"{failed:>9}"
        )
        if t.get("failed_at"):
            notes.append(
                f"  {name}: {n_failed} of {n_traj} rollouts failed (first at step "
                f"{t['failed_at'][0]}); a failed rollout counts as 1 from its failing step on"
            )
        if t.get("diverged_from") is not None:
            notes.append(f"  {name}: errors count as diverged (1) from step {t['diverged_from']}")
    return lines + notes


def _reached(summary: dict[str, Any]) -> str:
    """``[min, max]`` of the nodal values a model's rollouts reached (``-`` when not measured)."""
    low, high = summary.get("state_min"), summary.get("state_max")
    if low is None or high is None or not (math.isfinite(low) and math.isfinite(high)):
        return "-"
    return f"[{low:.3g}, {high:.3g}]"


def summary_lines(results: dict[str, Any]) -> list[str]:
    """Return the report as lines of text (the command line prints them).

    Both error tables, each titled with its metric (the paper's relative RMSE of nodal values at
    steps 1, 5 and 100; the relative L2 error at steps 1 to 5 and 100), the models' summary,
    warnings about learned models worse than persistence or the classical solver, the
    comparisons of the learned parts and the targets. No number prints as ``nan``.
    """
    from femeso.evaluation import METRICS, format_value

    def num(x: Any, spec: str = ".2e") -> str:
        return format_value(x, spec)

    source = "the test trajectories' first frames (mean ± std over the test trajectories"
    rules = {
        "paper": "; once an error reaches 1 or a rollout fails, every trajectory counts as 1 "
        "from that step on, as in the paper",
        "l2": "; a failed rollout counts as 1 from its failing step on",
    }
    lines = [
        f"job {results['job']}: {results['cells']} cells, {results['dofs']} DoFs, "
        f"{results['ranks']} rank(s); training horizon {results['training_horizon']:g}, "
        f"long horizon {results['long_horizon']:g}",
    ]
    tables = results.get("tables") or {"l2": {"metric": METRICS["l2"], "rows": results["table"]}}
    # the paper's metric at its table's steps (100: or the last one compared), L2 at all
    for metric, steps in (("paper", (1, 5, 100)), ("l2", None)):
        if metric not in tables:
            continue
        lines.append(f"{tables[metric]['metric']} of the rollouts from {source}{rules[metric]}):")
        lines.extend(table_lines(tables[metric]["rows"], steps=steps))
    lines.append(
        f"{'':<17}{'L2@1 step':>11}{'L2@train T':>12}{'L2@10x T':>11}{'max L2':>10}"
        f"{'RMSE@T':>10}{'failed':>8}{'V incr.':>8}{'true V incr.':>13}{'V drift':>10}"
        f"{'mass drift':>11}{'states reached':>22}"
    )
    for name in results.get("models") or ("onsager", "baseline", "classical", "persistence"):
        if name not in results:
            continue
        r = results[name]
        lines.append(
            f"{name:<17}{num(r['error_first']):>11}{num(r['error_at_training_horizon']):>12}"
            f"{num(r['error_last']):>11}{num(r['error_max']):>10}"
            f"{num(r.get('nodal_error_at_training_horizon')):>10}"
            f"{num(r.get('n_failed', r.get('failures'))):>8}{num(r['energy_increases']):>8}"
            f"{num(r['reference_energy_increases']):>13}{num(r['energy_drift']):>10}"
            f"{num(r['max_mass_drift']):>11}{_reached(r):>22}"
        )
    lines.append(
        f"(L2: {METRICS['l2']}; RMSE: {METRICS['paper']}; T: the training horizon, 10x T: the "
        "last step compared with the data)"
    )
    costs = results.get("costs") or {}
    if costs:
        lines.append(f"{'cost':<17}{'parameters':>12}{'training s':>12}{'s per rollout step':>20}")
        for name, c in costs.items():
            lines.append(
                f"{name:<17}{num(c['parameters'], 'd'):>12}{num(c['training_seconds'], '.0f'):>12}"
                f"{num(c['seconds_per_step'], '.2e'):>20}"
            )
    lines.extend(results.get("warnings") or [])
    if results.get("transport"):
        lines.append(f"learned transport velocity: {results['transport']}")
    d, m = results.get("density"), results.get("mobility")
    if d is not None:
        g, d2 = d["gauge"], d["second_derivative"]
        lines.append(
            f"learned F vs true, in the gauge (F ~ {num(g['slope'], '.4g')} F_true + o + e u, "
            f"only o, e fitted): R2={num(g['r2'], '.5f')}; free fit: s={num(d['slope'], '.4g')}, "
            f"R2={num(d['r2'], '.5f')}; F'' slope {num(d2['slope'], '.4g')}, "
            f"R2={num(d2['r2'], '.4f')}"
        )
    if m is not None:
        lines.append(
            f"learned m vs true (m ~ c m_true): c={num(m.get('scale'), '.4g')} "
            f"R2={num(m.get('r2'), '.4f')}; s*c={num(m.get('product'), '.4g')}"
        )
        g = m.get("gauge")
        if g:
            over = "(u, x)" if m.get("position") else "u"
            lines.append(
                f"learned m vs true in the gauge (m ~ m_true / {num(g['slope'], '.4g')}, over "
                f"the data's {over} samples): relative L2 error {num(g['relative_l2'])}, "
                f"R2={num(g['r2'], '.4f')}, max relative error {num(g['max_relative'])}"
            )
    steps = results.get("step_sizes")
    if steps:
        finest = steps.get("reference") == "finest"
        failures = steps.get("failure") or [None] * len(steps["factors"])
        cells = []
        for k, (fac, err, failure) in enumerate(
            zip(steps["factors"], steps["error"], failures, strict=True)
        ):
            if failure is not None:
                text = "failed"
            elif finest and k == 0:
                text = "reference"
            else:
                text = f"err {num(err)}"
            cells.append(f"{fac:g}x dt: {text}")
        against = "the finest" if finest else "the data"
        lines.append(
            f"inference at other steps, error against {against} (t_end={steps['t_end']:g}): "
            + ", ".join(cells)
            + f"; order {num(steps['order'], '.2f')}"
        )
    relations = {"error_at_training_horizon": "<=", "energy_increases": "==", "density_r2": ">="}
    for key, t in (results.get("targets") or {}).items():
        verdict = "MET" if t["met"] else "NOT MET"
        value = num(t["value"], ".3g")
        lines.append(
            f"target {key}: {value} (needs {relations.get(key, 'vs')} {t['target']}) {verdict}"
        )
    return lines
