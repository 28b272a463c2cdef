"""``femeso generate``: the job's trajectories, from femeso's generators or the user's files."""

from __future__ import annotations

import contextlib
import gc
import glob
import itertools
import json
import time
from pathlib import Path

import firedrake as fd
import numpy as np

from femeso._log import logger, progress_bar
from femeso.config import CHAINS, MESH_FROM_FILES, DataSection, JobConfig
from femeso.data.chains import generate_chain_dataset
from femeso.data.generators import (
    generate_dataset,
    paper_sine_initial_condition,
)
from femeso.data.initial_conditions import random_smooth_field
from femeso.data.io import save_dataset
from femeso.data.mapping import map_dataset
from femeso.data.resample import ResampleReport, describe_space, resample_trajectory
from femeso.data.trajectories import Dataset, TrajectoryData, split_indices, split_metadata
from femeso.jobs.models import build_space, configured_space, from_files, true_model
from femeso.jobs.output import SPLITS, _data_path, _source_path, prepare_data_folder

__all__ = [
    "burn_in_frames",
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
            config,
            space,
            count=count,
            frames=frames[split],
            seed=seeds[split],
            progress=progress,
            earliest_start=split == "test",
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


#: States (bytes as float64) read by the import between two collections of Python's garbage.
GC_BYTES = 64 * 2**20


def import_files(config: JobConfig, *, progress: bool = True) -> dict[str, Path]:
    """Read the job's data files, split them by whole trajectories, save them under ``data/``.

    The files are streamed: one trajectory is read, checked, (resampled,) and written to its
    part's file before the next is read, so the memory holds one trajectory whatever the size
    of the files (a grid HDF5 file is read trajectory by trajectory). Every trajectory must have
    equally spaced frames, all with the same step (the training step); ``data.max_trajectories``
    keeps the first ones; ``data.split`` (seeded by ``job.seed``, from the number of
    trajectories alone) cuts them into train / validation / test; ``data.train_frames`` shortens
    the training and validation trajectories. With ``mesh.name`` set, the data are resampled
    onto that mesh (:func:`femeso.data.resample.resample_trajectory`: interpolation across
    meshes, its loss measured and logged). ``data/source.json`` records the files, the step, the
    frames, the split and the resampling. An error leaves no data file behind.
    """
    from femeso.data.io import DataReader, DatasetWriter

    t0 = time.perf_counter()
    d, seed = config.data, config.job.seed
    files = data_files(config)
    reader = DataReader(files, format=d.format, fields=d.fields or None, degree=config.mesh.degree)
    total = len(reader)
    n = min(total, d.max_trajectories) if d.max_trajectories else total
    if n < total:
        logger.info(
            "data: keeping the first %d of %d trajectories (data.max_trajectories)", n, total
        )
    indices = dict(zip(SPLITS, split_indices(n, seed, d.split), strict=True))
    for name, idx in indices.items():
        if name != "validation" and len(idx) == 0:
            raise ValueError(
                f"{config.source}: data.split = {d.split} leaves no {name} trajectory out of {n}"
            )
    part_of = np.empty(n, dtype=object)
    for name, idx in indices.items():
        part_of[idx] = name
    target = configured_space(config) if config.mesh.name != MESH_FROM_FILES else None
    keep = d.train_frames
    writers: dict[str, DatasetWriter] = {}
    frames: dict[str, list[int]] = {name: [] for name in SPLITS}
    steps: list[float] = []
    losses: list[float] = []
    source_space = None
    unreleased = 0
    bar = progress_bar(n, "import", "trajectory", enabled=progress)
    with contextlib.ExitStack() as stack:
        for i, traj in enumerate(itertools.islice(reader, n)):
            where = f"{traj.metadata.get('source', 'data')}: trajectory {i}"
            steps.append(_frame_step(traj, where))
            if source_space is None:
                source_space = traj.space
            if target is not None:
                traj, loss = resample_trajectory(traj, target, what=where)
                losses.append(loss)
            name = part_of[i]
            if keep and name != "test":
                traj = TrajectoryData(
                    traj.space, traj.times[: keep + 1], traj.states[: keep + 1], traj.metadata
                )
            if name not in writers:
                path = _data_path(config, name)
                path.parent.mkdir(parents=True, exist_ok=True)
                writer = DatasetWriter(path, traj.space)
                writer.reserve(len(indices[name]) * len(traj), len(indices[name]))
                writers[name] = stack.enter_context(writer)
            writers[name].append(traj)
            frames[name].append(len(traj) - 1)
            # Firedrake's Functions sit in reference cycles, which Python's collector counts by
            # objects, not bytes: without a collection the import grew by 5.6 MiB per 2-D
            # trajectory of 128 x 128 x 101 (bench/import_cost.py); collecting after every
            # trajectory kept it flat but cost 25 s of the 46 s import of 300 small FENE
            # trajectories. So: a collection per GC_BYTES of states read.
            unreleased += 8 * traj.space.dim() * len(traj)
            del traj
            if unreleased > GC_BYTES:
                gc.collect()
                unreleased = 0
            if bar is not None:
                bar.update()
        metadata = reader.metadata()
        for name, writer in writers.items():
            writer.metadata = {
                **metadata,
                "split": split_metadata(name, seed, d.split, indices[name]),
            }
    if bar is not None:
        bar.close()
    frame_dt = float(np.mean(steps))
    resampled = None
    if target is not None:
        report = ResampleReport(describe_space(source_space), describe_space(target), losses)
        report.log("data")
        resampled = report.as_dict()
    source = {
        "files": [str(f) for f in files],
        "trajectories": n,
        "frame_dt": frame_dt,
        "train_frames": min(frames["train"]),
        "test_frames": min(frames["test"]),
        "split": {name: [int(k) for k in idx] for name, idx in indices.items()},
        "dofs": (target or source_space).dim(),
        "element": str((target or source_space).ufl_element()),
    }
    if resampled is not None:
        source["resampled"] = resampled
    if fd.COMM_WORLD.rank == 0:
        _source_path(config).write_text(json.dumps(source, indent=1) + "\n")
    fd.COMM_WORLD.barrier()
    logger.info(
        "import: %d trajectories from %d file(s), step %g, split %d / %d / %d, into %s (%.1f s)",
        n,
        len(files),
        frame_dt,
        *(len(idx) for idx in indices.values()),
        config.output / "data",
        time.perf_counter() - t0,
    )
    return {name: writer.path for name, writer in writers.items()}


def _frame_step(traj: TrajectoryData, where: str) -> float:
    """Return the frame step of ``traj``; ``ValueError`` for a trajectory of one frame.

    Uneven frames and steps that differ between trajectories were refused by the reader
    (:class:`femeso.data.io.DataReader`, which passes one-frame trajectories on).
    """
    if len(traj) < 2:
        raise ValueError(f"{where}: one frame only (nothing to learn a step from)")
    return float(np.mean(np.diff(traj.times)))


def generate_trajectories(
    config: JobConfig,
    space: fd.FunctionSpace,
    *,
    count: int,
    frames: int,
    seed: int,
    progress: bool = True,
    earliest_start: bool = False,
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
    earliest_start
        With ``data.burn_in = [lo, hi]``, drop ``lo`` frames from every trajectory (the test
        trajectories, rolled out from near the initial fields) instead of each trajectory's own
        draw (:func:`burn_in_frames`).

    Returns
    -------
    Dataset

    """
    d = config.data
    drops = [burn_in_frames(d, seed + i, earliest=earliest_start) for i in range(count)]
    if d.equation in CHAINS:
        return _chain_data(config, space, count, frames, seed, progress, drops)

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
        n_frames=frames + max(drops, default=0),
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
    return _drop_frames(data, drops, frames)


def burn_in_frames(data: DataSection, seed: int, *, earliest: bool = False) -> int:
    """Return how many frames trajectory ``seed`` drops before its first saved frame.

    ``data.burn_in`` as a number is used as it is. As ``[lo, hi]`` each trajectory draws its own
    whole number from ``lo..hi`` with a generator seeded by its seed alone (every rank and every
    rerun draws the same), or takes ``lo`` when ``earliest``.
    """
    if not isinstance(data.burn_in, list):
        return data.burn_in
    lo, hi = data.burn_in
    if earliest:
        return lo
    return int(np.random.default_rng([seed, 0xB0B1]).integers(lo, hi + 1))


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


def _drop_frames(data: Dataset, drops: list[int], frames: int) -> Dataset:
    """Keep frames ``n .. n + frames`` of every trajectory, ``n`` its entry of ``drops``."""
    if not any(drops):  # generated with exactly frames + 1 states each
        return data
    trajectories = [
        TrajectoryData(
            t.space,
            t.times[n : n + frames + 1],
            t.states[n : n + frames + 1],
            {**t.metadata, "burn_in_frames": n},
        )
        for t, n in zip(data.trajectories, drops, strict=True)
    ]
    return Dataset(data.space, trajectories, data.metadata)


def _chain_data(
    config: JobConfig,
    space: fd.FunctionSpace,
    count: int,
    frames: int,
    seed: int,
    progress: bool,
    drops: list[int],
) -> Dataset:
    """Return ``count`` chain trajectories coarse-grained to the job's periodic interval.

    The chain's own defaults (the paper's: 128 FPUT / 209 FENE particles, unit standard
    deviation) except the slow period (``mesh.length``), the frame step and the length; the
    first ``drops[i]`` frames of trajectory ``i`` are dropped.
    """
    d, m = config.data, config.mesh
    total = frames + max(drops, default=0)
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
    return _drop_frames(data, drops, frames)
