"""The output folder of a job: where each stage writes, and what a rerun may replace."""

from __future__ import annotations

import json
import shutil
from pathlib import Path
from typing import Any

import firedrake as fd

from femeso._log import logger
from femeso.config import PEER_MODELS, JobConfig
from femeso.data.io import dataset_counts, load_dataset, open_dataset
from femeso.data.mapping import map_dataset
from femeso.data.trajectories import Dataset

__all__ = ["check_output", "data_source", "prepare_data_folder", "load_data"]


SPLITS = ("train", "validation", "test")


#: The result folders of a job, made from its data (removed with the data on --overwrite).
RESULTS = ("onsager", "baseline", "rollouts", "report") + tuple(
    name for name in PEER_MODELS if name != "blackbox"
)


def _data_path(config: JobConfig, split: str) -> Path:
    return config.output / "data" / f"{split}.h5"


def _source_path(config: JobConfig) -> Path:
    return config.output / "data" / "source.json"


def _model_path(config: JobConfig, which: str) -> Path:
    return config.output / which / "model.npz"


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


def load_data(config: JobConfig, space: fd.FunctionSpace) -> dict[str, Dataset]:
    """Load the job's datasets onto ``space`` (written by :func:`generate`).

    The files may have been written on any number of ranks and on another mesh object of the
    same geometry: every state is matched to ``space``'s DoFs by position
    (:func:`femeso.data.mapping.map_dataset`), and a file on another geometry, element or size
    is an error naming it. A file whose states take more than ``data.in_memory_mib`` as float64
    is not loaded whole: its trajectories are read when used, as many kept in memory as fit
    (:func:`femeso.data.io.open_dataset`), and the log says so.
    """
    budget = config.data.in_memory_mib * 2**20
    out = {}
    for split in SPLITS:
        path = _data_path(config, split)
        if split == "validation" and not path.exists() and _data_path(config, "train").exists():
            out[split] = Dataset(space, [], {"split": split})  # the job has no validation data
            continue
        if not path.exists():
            raise FileNotFoundError(f"{path} is missing: run `femeso generate` first")
        counts = dataset_counts(path, comm=space.mesh().comm)
        per_state = 8 * space.dim()
        if sum(counts) * per_state <= budget:
            data = load_dataset(path, comm=space.mesh().comm)
            out[split] = map_dataset(data, space, label=str(path))
            continue
        keep = max(1, budget // (per_state * max(counts)))
        logger.info(
            "%s: %d trajectories, %.2f GiB as float64 (more than data.in_memory_mib = %d): "
            "read from the file when used, at most %d in memory at a time",
            path,
            len(counts),
            sum(counts) * per_state / 2**30,
            config.data.in_memory_mib,
            min(keep, len(counts)),
        )
        out[split] = open_dataset(path, space, keep=keep)
    return out


def data_source(config: JobConfig) -> dict[str, Any]:
    """Return ``data/source.json`` of a job on files (what was imported); ``{}`` for generated data.

    Raises
    ------
    FileNotFoundError
        If the job learns from files and their import has not run.

    """
    if config.data.source != "files":
        return {}
    path = _source_path(config)
    if not path.exists():
        raise FileNotFoundError(
            f"{path} is missing: run `femeso generate` first (imports the files)"
        )
    return json.loads(path.read_text())


def _resolve_file_data(config: JobConfig) -> None:
    """Fill in the frame step, frames and horizon factor of imported data (``source.json``)."""
    source = data_source(config)
    d = config.data
    d.frame_dt = float(source["frame_dt"])
    d.frames = int(source["train_frames"])
    config.evaluation.horizon_factor = max(
        1, int(source["test_frames"]) // max(1, int(source["train_frames"]))
    )
