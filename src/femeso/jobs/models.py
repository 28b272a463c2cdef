"""What a job builds from its configuration: the state space and the models."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import firedrake as fd
import numpy as np

from femeso.config import CHAINS, MESH_FROM_FILES, JobConfig
from femeso.data.generators import (
    allen_cahn_model,
    cahn_hilliard_model,
    kdv_model,
    mobility_coefficient,
)
from femeso.data.io import load_dataset_mesh
from femeso.jobs.output import _data_path, _model_path, _resolve_file_data
from femeso.meshes import bounding_box, load_mesh
from femeso.model.energies import (
    BarrierDensity,
    CoerciveNeuralDensity,
    ConstantKappa,
    Energy,
    EntropyDensity,
)
from femeso.model.fields import NeuralField
from femeso.model.mobilities import ConservedMobility, LocalMobility, SkewTransport
from femeso.model.onsager import OnsagerModel
from femeso.peers.blackbox import BlackBoxModel, BlackBoxStepper
from femeso.stepping.energy_stable import EnergyStableStepper
from femeso.stepping.solvers import DIRECT_SOLVER, ITERATIVE_SOLVER

__all__ = [
    "from_files",
    "build_space",
    "configured_space",
    "true_model",
    "learned_model",
    "baseline_model",
    "stepper_factory",
    "load_trained",
]


def from_files(config: JobConfig) -> bool:
    """Return whether the job learns from files (``data.source = "files"``)."""
    return config.data.source == "files"


def build_space(config: JobConfig, *, comm: Any = None) -> fd.FunctionSpace:
    """Return the job's state space (scalar CG of ``mesh.degree`` on the job's mesh).

    The mesh is distributed over ``comm`` (default ``COMM_WORLD``; an ensemble member's spatial
    communicator for trajectory-parallel training).

    For data from files the mesh is the one stored with the imported training data
    (``data/train.h5``: the files' own mesh, or the ``[mesh]`` they were resampled onto), and
    ``data.frame_dt``, ``data.frames`` and ``evaluation.horizon_factor`` are filled in from the
    data (``data/source.json``).
    """
    comm = fd.COMM_WORLD if comm is None else comm
    if from_files(config):
        _resolve_file_data(config)
        mesh = load_dataset_mesh(_data_path(config, "train"), comm=comm)
        return fd.FunctionSpace(mesh, "CG", config.mesh.degree)
    return configured_space(config, comm=comm)


def configured_space(config: JobConfig, *, comm: Any = None) -> fd.FunctionSpace:
    """Return scalar CG of ``mesh.degree`` on the mesh ``[mesh]`` describes (built or loaded).

    The mesh is distributed over ``comm`` (default ``COMM_WORLD``).
    """
    comm = fd.COMM_WORLD if comm is None else comm
    m = config.mesh
    if m.name == MESH_FROM_FILES:
        raise ValueError(f"{config.source}: mesh.name = {m.name!r} describes no mesh of its own")
    if m.name == "periodic_interval":
        mesh = fd.PeriodicIntervalMesh(m.cells, m.length, comm=comm)
    elif m.name == "periodic_square":
        mesh = fd.PeriodicSquareMesh(m.cells, m.cells, m.length, comm=comm)
    else:
        mesh = load_mesh(_mesh_file(config), refinement=m.refinement, comm=comm)
    return fd.FunctionSpace(mesh, "CG", m.degree)


def _mesh_file(config: JobConfig) -> str:
    """Return ``mesh.name``; a relative ``.msh``/``.geo`` path found beside the job file wins."""
    name = config.mesh.name
    if Path(name).suffix in (".msh", ".geo") and not Path(name).is_absolute():
        beside = Path(config.directory) / name
        if beside.exists():
            return str(beside)
    return name


def _true_mobility(config: JobConfig, mesh: fd.MeshGeometry):
    """Return the data's mobility on ``mesh``: a number or an Expression of ``(u[, x])``."""
    d = config.data
    return mobility_coefficient(d.mobility, mesh, scale=d.mobility_scale)


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
    m, seed = config.model, config.training_seed
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
        if m.range_entropy:
            density = density + EntropyDensity(*m.state_range)
    energy = Energy(density, ConstantKappa(1.0, learnable=True))
    conservative = []
    if m.transport == "learned":
        conservative.append(SkewTransport([m.velocity], dim=1, learnable=True))
    if m.mobility == "none":
        return OnsagerModel(space, energy, conservative=conservative, kappa_ref=m.kappa_ref)
    if m.mobility in ("neural", "neural_x", "neural_degenerate"):
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
    vanishing = m.state_range if m.mobility == "neural_degenerate" else None
    return OnsagerModel(
        space,
        energy,
        mobility=cls(coefficient, vanishing_range=vanishing),
        conservative=conservative,
        kappa_ref=m.kappa_ref,
    )


def baseline_model(config: JobConfig, space: fd.FunctionSpace) -> BlackBoxModel:
    """Return the (untrained) black-box baseline of the job."""
    return BlackBoxModel(space, width=config.baseline.width, seed=config.training_seed)


#: ``model.solver``: the PETSc settings of the scheme's Newton steps.
SOLVERS = {"direct": DIRECT_SOLVER, "iterative": ITERATIVE_SOLVER}


def stepper_factory(model, substeps: int = 1, solver: str = "direct"):
    """Return ``make_stepper(u0, dt)`` for an Onsager model or the black-box baseline.

    The Onsager model's steps take ``substeps`` scheme steps each, solved by ``solver``
    (:data:`SOLVERS`); the baseline takes one step with its own solver.
    """
    if isinstance(model, BlackBoxModel):
        return lambda u0, dt: BlackBoxStepper(model, u0, dt)
    parameters = SOLVERS[solver]
    return lambda u0, dt: EnergyStableStepper(
        model, u0, dt, substeps=substeps, solver_parameters=parameters
    )


def load_trained(config: JobConfig, space: fd.FunctionSpace, which: str):
    """Return the trained Onsager model or baseline saved by :func:`train`."""
    path = _model_path(config, which)
    if not path.exists():
        raise FileNotFoundError(f"{path} is missing: run `femeso train` first")
    model = baseline_model(config, space) if which == "baseline" else learned_model(config, space)
    model.load_parameters(path)
    return model
