"""``femeso generate``: the job's trajectories, from femeso's generators or the user's files."""

from __future__ import annotations

import glob
import json
import time
from pathlib import Path

import firedrake as fd
import numpy as np

from femeso._log import logger
from femeso.config import CHAINS, MESH_FROM_FILES, DataSection, JobConfig
from femeso.data.chains import generate_chain_dataset
from femeso.data.generators import (
    generate_dataset,
    paper_sine_initial_condition,
)
from femeso.data.initial_conditions import random_smooth_field
from femeso.data.io import save_dataset
from femeso.data.mapping import map_dataset
from femeso.data.resample import resample_dataset
from femeso.data.trajectories import Dataset, TrajectoryData
from femeso.jobs.models import build_space, configured_space, from_files, true_model
from femeso.jobs.output import SPLITS, _data_path, _source_path, prepare_data_folder

__all__ = [
    "initial_field_settings",
    "generate",
    "data_files",
    "import_files",
    "generate_trajectories",
]


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
    training and validation trajectories. With ``mesh.name`` set, the data are resampled onto
    that mesh (:func:`femeso.data.resample.resample_dataset`: interpolation across meshes, its
    loss measured and logged). ``data/source.json`` records the files, the step, the frames, the
    split and the resampling.
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
    resampled = None
    if config.mesh.name != MESH_FROM_FILES:
        dataset, report = resample_dataset(dataset, configured_space(config), label="data")
        resampled = report.as_dict()
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
    if resampled is not None:
        source["resampled"] = resampled
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
    :mod:`femeso.evaluation.transfer`, another mesh's).

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
        drawn = initial_field_settings(d, seed)
        return random_smooth_field(
            V,
            seed=seed,
            amplitude=drawn["amplitude"],
            mean=drawn["mean"],
            max_wavenumber=drawn["wavenumber"],
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


def initial_field_settings(data: DataSection, seed: int) -> dict[str, float]:
    """Return the mean, amplitude and wavenumber of trajectory ``seed``'s random initial field.

    A ``[data]`` value given as ``[lo, hi]`` is drawn uniformly for each trajectory, from a
    generator seeded by the trajectory's seed alone (so every rank and every rerun draws the
    same); a number is used as it is.
    """
    rng = np.random.default_rng([seed, 0x1F1E1D])
    drawn = {}
    for key in ("mean", "amplitude", "wavenumber"):
        value = getattr(data, key)
        drawn[key] = float(rng.uniform(*value)) if isinstance(value, list) else float(value)
    return drawn


def _drop_frames(data: Dataset, n: int) -> Dataset:
    """Drop the first ``n`` frames of every trajectory."""
    if n == 0:
        return data
    trajectories = [
        TrajectoryData(t.space, t.times[n:], t.states[n:], {**t.metadata, "burn_in_frames": n})
        for t in data.trajectories
    ]
    return Dataset(data.space, trajectories, data.metadata)


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
