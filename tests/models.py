"""Model and mesh factories shared by the tests (random, untrained parameters)."""

from __future__ import annotations

import tomllib
from pathlib import Path

import firedrake as fd
import numpy as np
import torch

import femeso

_MESHES: dict[str, fd.MeshGeometry] = {}


def mesh(name: str, comm=fd.COMM_WORLD) -> fd.MeshGeometry:
    """Small meshes of every supported kind, built once per process and communicator."""
    key = f"{name}-{comm.size}-{id(comm) if comm is not fd.COMM_WORLD else 0}"
    if key not in _MESHES:
        builders = {
            "plate": lambda: femeso.load_mesh("plate_with_holes", comm=comm),
            "periodic_interval": lambda: fd.PeriodicIntervalMesh(
                48, 2 * 3.141592653589793, comm=comm
            ),
            "interval": lambda: fd.IntervalMesh(32, 1.0, comm=comm),
            "periodic_square": lambda: fd.PeriodicUnitSquareMesh(10, 10, comm=comm),
            "quads": lambda: fd.UnitSquareMesh(8, 8, quadrilateral=True, comm=comm),
            "tets": lambda: fd.UnitCubeMesh(3, 3, 3, comm=comm),
        }
        _MESHES[key] = builders[name]()
    return _MESHES[key]


def neural_energy(k: int, seed: int, *, position_dim: int | None = None) -> femeso.Energy:
    density = femeso.CoerciveNeuralDensity(k, width=8, dim=position_dim, seed=seed)
    # Random, untrained parameters: push the scalar coefficients away from their defaults too.
    g = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        density.raw_a.copy_(torch.randn((), generator=g, dtype=torch.float64) * 2)
        density.raw_b.copy_(torch.randn((), generator=g, dtype=torch.float64) * 2)
    kappa = femeso.ConstantKappa(float(torch.rand((), generator=g)) * 2 + 0.05, n_states=k)
    return femeso.Energy(density, kappa)


def neural_mobility(kind: str, k: int, seed: int, *, dim: int | None = None):
    field = femeso.NeuralField(k, k, width=6, dim=dim, seed=seed + 1000)
    cls = femeso.LocalMobility if kind == "local" else femeso.ConservedMobility
    return cls(field, n_states=k)


def dissipative_model(mesh_, kind: str, seed: int, *, degree: int = 1) -> femeso.OnsagerModel:
    """A random model: neural density, constant kappa, neural m(u, x) of the given kind."""
    V = fd.FunctionSpace(mesh_, "CG", degree)
    dim = mesh_.geometric_dimension
    mobility = (
        [neural_mobility("local", 1, seed, dim=dim), neural_mobility("conserved", 1, seed + 7)]
        if kind == "both"
        else neural_mobility(kind, 1, seed, dim=dim)
    )
    return femeso.OnsagerModel(V, neural_energy(1, seed, position_dim=dim), mobility=mobility)


def window_gradient_taylor(model, data: list[fd.Function], dt: float, *, seed: int = 1):
    """Taylor test of the adjoint gradient of a window's loss in the model's parameters.

    The gradient stays in the parameters' ``.grad`` afterwards (callers may inspect it).
    """
    from femeso.training.trainer import window_loss, window_loss_and_gradient
    from femeso.verification import perturbed_parameters, random_direction, taylor_test

    stepper = femeso.EnergyStableStepper(model, data[0], dt)
    model.zero_grad()
    loss0, clean = window_loss_and_gradient(stepper, data)
    assert clean
    params = [p for p in model.parameters() if p.requires_grad]
    grad = torch.cat([p.grad.reshape(-1) for p in params])
    direction = random_direction(params, seed=seed)

    def loss_at(eps):
        with perturbed_parameters(params, direction, eps):
            return window_loss(stepper, data)[0]

    return taylor_test(loss_at, loss0, float(grad @ direction))


def levenberg_marquardt_closure(stepper, windows: list[list[fd.Function]]):
    """The closure :class:`~femeso.training.gauss_newton.LevenbergMarquardt` takes, over
    ``windows``.

    Without curvature: the mean window loss (``inf`` when a step fails); with it: the mean
    loss, gradient and Gauss-Newton matrix.
    """
    from femeso.training.gauss_newton import WindowCurvature, window_curvature
    from femeso.training.trainer import window_loss

    def closure(curvature, bound=np.inf):
        if not curvature:
            try:
                return float(np.mean([window_loss(stepper, w)[0] for w in windows]))
            except femeso.StepFailure:
                return np.inf
        total = None
        for w in windows:
            part = window_curvature(stepper, w)
            total = part if total is None else total.__iadd__(part)
        n = len(windows)
        return WindowCurvature(total.loss / n, total.gradient / n, total.hessian / n)

    return closure


EXPERIMENTS = Path(__file__).resolve().parents[1] / "experiments"

#: The overrides that make an experiment tiny (a test file adds its own on top).
TINY = {
    "data": {"train": 2, "validation": 1, "test": 2, "frames": 6},
    "training": {
        "iterations": 15,
        "refine_iterations": 3,
        "validate_every": 5,
        "checkpoint_every": 0,
    },
    "baseline": {"iterations": 5, "peer_iterations": 5},
    "evaluation": {"step_factors": [1.0, 2.0], "plots": False, "vtk": False},
}


def tiny_experiment(name: str, output: Path, *overrides: dict) -> dict:
    """Return the raw TOML of ``experiments/<name>.toml`` made tiny, writing to ``output``.

    :data:`TINY` is applied first, then each of ``overrides`` (section -> keys, merged key by key).
    """
    raw = tomllib.loads((EXPERIMENTS / f"{name}.toml").read_text())
    for sections in (TINY, *overrides):
        for section, keys in sections.items():
            raw.setdefault(section, {}).update(keys)
    raw["job"]["output"] = str(output)
    return raw
