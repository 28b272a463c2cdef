"""Geometry transfer: a trained job's models evaluated on another mesh.

The models of a femeso job are pointwise neural fields of the state (the density F(u), the
mobility m(u), the baseline's fields) and a constant gradient coefficient: nothing in them is
tied to the training mesh (except a mobility of the position, ``model.mobility = "neural_x"``:
such a job is not transferred). :func:`transfer` rebuilds the trained Onsager model (and the
black-box baseline) on another mesh -- another geometry, or the same geometry re-meshed finer --
generates new test trajectories there with the job's true equation and data protocol (new
seeds), rolls the trained models and the classical solver out from their first frames and
writes ``<job.output>/transfer/<label>/`` with

``test.h5``
    the new test trajectories (:func:`femeso.data.save_dataset`);
``results.json``
    the error table (relative L2 error at steps 1..5 and 100, mean and standard deviation over
    the test trajectories, :func:`femeso.evaluation.error_table`), each model's rollout summary
    (energy increases, energy and mass drift, ...) and what was transferred.

The boundary conditions stay the natural (no-flux) ones of the weak form, on whatever boundary
the new mesh has. A transfer keeps the spatial dimension, and the target must admit the job's
data protocol (``femeso config`` rules, e.g. KdV and the chains need a periodic interval and
``paper_sine`` initial fields a periodic mesh): anything else is a one-line error.
"""

from __future__ import annotations

import time
from pathlib import Path
from typing import Any

from femeso import jobs
from femeso._log import logger
from femeso.config import ConfigError, JobConfig, validate
from femeso.data.io import save_dataset
from femeso.evaluation import write_json
from femeso.meshes import count_cells
from femeso.model.files import read_model_file

__all__ = [
    "PERIODIC_MESHES",
    "SEED_OFFSET",
    "mesh_label",
    "summary_lines",
    "target_config",
    "transfer",
]

#: The built-in periodic meshes; "refinement" doubles their ``mesh.cells`` instead of re-meshing.
PERIODIC_MESHES = ("periodic_interval", "periodic_square")

#: Test trajectory ``i`` of a transfer starts from seed ``job.seed + SEED_OFFSET + i`` (the job's
#: own splits use ``+0``, ``+1000`` and ``+2000``).
SEED_OFFSET = 3000


def mesh_label(mesh: str, refinement: int = 0) -> str:
    """Return the directory name of a transfer target: the mesh's name or file stem, ``-rN``."""
    stem = Path(mesh).stem if Path(mesh).suffix in (".msh", ".geo") else mesh
    return f"{stem}-r{refinement}" if refinement else stem


def target_config(config: JobConfig, mesh: str, *, refinement: int = 0) -> JobConfig:
    """Return the job's configuration with its mesh replaced (everything else kept).

    Parameters
    ----------
    config
        The trained job.
    mesh
        A reference geometry (``l_shape``, ``plate_with_holes``, ``curved_channel``), a
        ``.msh``/``.geo`` file, or ``periodic_interval`` / ``periodic_square``.
    refinement
        Uniform refinements of the target: the geometry re-meshed with the mesh size halved
        ``refinement`` times, or ``2**refinement`` times the job's cells for a periodic mesh.

    Returns
    -------
    JobConfig
        The validated configuration; ``job.output`` is unchanged, so that
        :func:`femeso.jobs.load_trained` finds the job's trained models.

    Raises
    ------
    ValueError
        If ``refinement`` is not an integer >= 0.
    ConfigError
        One line, when the job's data protocol or model does not admit the target mesh.

    """
    if isinstance(refinement, bool) or not isinstance(refinement, int) or refinement < 0:
        raise ValueError(f"refinement must be an integer >= 0, got {refinement!r}")
    raw = config.as_dict()
    raw["mesh"]["name"] = str(mesh)
    if mesh in PERIODIC_MESHES:
        raw["mesh"]["cells"] = config.mesh.cells * 2**refinement
        raw["mesh"]["refinement"] = 0
    else:
        raw["mesh"]["refinement"] = refinement
    source = f"{config.source} on {mesh_label(str(mesh), refinement)}"
    try:
        target = validate(raw, source)
    except ConfigError as exc:
        raise ConfigError(
            f"cannot transfer job {config.job.name!r} to {mesh_label(str(mesh), refinement)}"
            f": {str(exc).removeprefix(source + ': ')}"
        ) from None
    return target


def _baseline_status(config: JobConfig) -> str | None:
    """Return why the baseline is not transferred, or ``None`` when it is."""
    if not config.baseline.enabled:
        return "disabled in the job (baseline.enabled = false)"
    path = config.output / "baseline" / "model.npz"
    if not path.exists():
        return f"not trained ({path} is missing)"
    if read_model_file(path)[0].get("position"):
        return "its fields depend on the position x, learned on the job's own domain"
    return None


def transfer(
    config: JobConfig,
    mesh: str,
    *,
    refinement: int = 0,
    n_test: int | None = None,
    seed: int | None = None,
    progress: bool = True,
) -> dict[str, Any]:
    """Evaluate a trained job's models on another mesh, against new data of its equation.

    Parameters
    ----------
    config
        The job; its training must be done (``<job.output>/onsager/model.npz``).
    mesh, refinement
        The target mesh (see :func:`target_config`).
    n_test
        Number of new test trajectories (default ``data.test``), each as long as the job's
        test trajectories (``data.frames * evaluation.horizon_factor`` frames).
    seed
        Seed of the first new trajectory (default ``job.seed + SEED_OFFSET``).
    progress
        Show progress bars (rank 0).

    Returns
    -------
    dict
        What ``results.json`` holds: ``job``, ``source`` and ``target`` (mesh, refinement,
        cells, DoFs), ``label``, ``seeds``, ``n_test``, the horizons, per model
        (``onsager``, ``classical`` when the equation is known, ``baseline`` when transferred)
        the rollout summary of :func:`femeso.jobs.rollout_results`, ``table`` (the error
        table), ``baseline_transferred`` and ``baseline_note``, ``directory`` and ``seconds``.

    Raises
    ------
    FileNotFoundError
        If the job is not trained, or the mesh is neither a file nor a reference geometry.
    ValueError
        One line, if the target does not admit the job (other dimension, periodic-only data or
        model, a mobility of the position) or ``n_test < 1``.

    """
    t0 = time.perf_counter()
    label = mesh_label(str(mesh), refinement)
    model_path = config.output / "onsager" / "model.npz"
    if not model_path.exists():
        raise FileNotFoundError(
            f"{model_path} is missing: train the job before transferring it "
            f"(`femeso train {config.source}`)"
        )
    if config.model.mobility == "neural_x":
        raise ValueError(
            f"cannot transfer job {config.job.name!r} to {label}: its mobility "
            "(model.mobility = 'neural_x') is a field of the position on the job's own domain"
        )
    n_test = config.data.test if n_test is None else n_test
    if isinstance(n_test, bool) or not isinstance(n_test, int) or n_test < 1:
        raise ValueError(f"the number of test trajectories must be an integer >= 1, got {n_test!r}")
    target = target_config(config, mesh, refinement=refinement)
    space = jobs.build_space(target)
    source_space = jobs.build_space(config)
    dim, source_dim = space.mesh().geometric_dimension, source_space.mesh().geometric_dimension
    if dim != source_dim:
        raise ValueError(
            f"cannot transfer job {config.job.name!r} to {label}: the job's mesh is "
            f"{source_dim}-D, {label} is {dim}-D (a transfer keeps the spatial dimension)"
        )
    baseline_note = _baseline_status(config)
    target.baseline.enabled = baseline_note is None
    # Peers learn on the job's own nodes (a grid, a graph): they are not transferred.
    peers = [m for m in target.baseline.models if m != "blackbox"]
    if peers:
        logger.info(
            "transfer: the peers %s are not transferred (trained on the job's nodes)",
            ", ".join(peers),
        )
    target.baseline.models = ["blackbox"]
    logger.info(
        "transfer %s: %s (%d cells) -> %s (%d cells, %d DoFs)",
        config.job.name,
        mesh_label(config.mesh.name, config.mesh.refinement),
        count_cells(source_space.mesh()),
        label,
        count_cells(space.mesh()),
        space.dim(),
    )

    d = config.data
    seed = config.job.seed + SEED_OFFSET if seed is None else seed
    frames = d.frames * config.evaluation.horizon_factor
    data = jobs.generate_trajectories(
        target,
        space,
        count=n_test,
        frames=frames,
        seed=seed,
        progress=progress,
        earliest_start=True,
    )
    directory = config.output / "transfer" / label
    directory.mkdir(parents=True, exist_ok=True)
    save_dataset(directory / "test.h5", data, overwrite=True)

    reports = jobs.rollout_reports(target, space, {"test": data}, progress=progress)
    horizon = d.frames * d.frame_dt
    results: dict[str, Any] = {
        "job": config.job.name,
        "label": label,
        "source": {
            "mesh": config.mesh.name,
            "refinement": config.mesh.refinement,
            "cells": count_cells(source_space.mesh()),
            "dofs": source_space.dim(),
        },
        "target": {
            "mesh": str(mesh),
            "refinement": refinement,
            "cells": count_cells(space.mesh()),
            "dofs": space.dim(),
        },
        "ranks": space.mesh().comm.size,
        "n_test": n_test,
        "seeds": [seed + i for i in range(n_test)],
        "training_horizon": horizon,
        "long_horizon": horizon * config.evaluation.horizon_factor,
        "baseline_transferred": baseline_note is None,
        "baseline_note": baseline_note,
        **jobs.rollout_results(reports, horizon),
        "directory": str(directory),
    }
    results["seconds"] = time.perf_counter() - t0
    write_json(directory / "results.json", results)
    logger.info("transfer: %s (%.0f s)", directory / "results.json", results["seconds"])
    return results


def summary_lines(results: dict[str, Any]) -> list[str]:
    """Return a transfer's results as lines of text (the command line prints them)."""
    s, t = results["source"], results["target"]
    lines = [
        f"job {results['job']} transferred from {mesh_label(s['mesh'], s['refinement'])} "
        f"({s['cells']} cells, {s['dofs']} DoFs) to {results['label']} ({t['cells']} cells, "
        f"{t['dofs']} DoFs), {results['ranks']} rank(s); {results['n_test']} new test "
        f"trajectories (seeds {results['seeds'][0]}..{results['seeds'][-1]}), long horizon "
        f"{results['long_horizon']:g}",
        "relative L2 error of the rollouts from the new trajectories' first frames "
        "(mean ± std over the test trajectories):",
        *jobs.table_lines(results["table"]),
    ]
    for name in ("onsager", "classical", "baseline"):
        if name not in results:
            continue
        r = results[name]
        increases = "- (no energy)" if r["energy_increases"] is None else r["energy_increases"]
        lines.append(
            f"{name}: own energy increases {increases} in {r['n_steps']} steps x "
            f"{r['n_trajectories']} rollouts, max mass drift {r['max_mass_drift']:.2e}, "
            f"failed rollouts {r['failures']}"
        )
    if not results["baseline_transferred"]:
        lines.append(f"baseline: not transferred: {results['baseline_note']}")
    lines.append(f"results: {Path(results['directory']) / 'results.json'}")
    return lines
