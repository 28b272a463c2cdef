"""Reference PDE data: Allen--Cahn, Cahn--Hilliard and KdV trajectories on any mesh.

Ground truth is computed with femeso's energy-stable stepper and the *known* energy and mobility,
on a finer mesh (``refine`` uniform refinements of the data mesh) and with a finer time step
(``substeps`` steps per saved frame) than the data it saves; the saved states are injected back
onto the data mesh's P1 space by interpolation (exact at the coarse vertices, which are fine
vertices).

Initial conditions: smooth random fields that make sense on irregular domains
(:func:`femeso.data.initial_conditions.random_smooth_field`), or the paper's 1-D protocol
(:func:`paper_sine_initial_condition`: three sine modes with wavenumbers 1..10, amplitudes U(0, 1),
random phases, rescaled to span exactly [-1, 1]).
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import firedrake as fd
import numpy as np
import ufl
from mpi4py import MPI

from femeso._log import logger, progress_bar
from femeso.data.batched import (
    BatchedReference,
    NotInLockstep,
    batch_sizes,
    batching_obstacle,
)
from femeso.data.initial_conditions import random_smooth_field
from femeso.data.trajectories import Dataset, TrajectoryData
from femeso.meshes import bounding_box
from femeso.model.energies import Energy, KnownDensity
from femeso.model.fields import Expression
from femeso.model.mobilities import ConservedMobility, LocalMobility, SkewTransport
from femeso.model.onsager import OnsagerModel
from femeso.stepping.energy_stable import EnergyStableStepper

__all__ = [
    "DEFAULT_BATCH",
    "DEFAULT_BATCH_DOFS",
    "DENSITIES",
    "MIN_DEFAULT_BATCH",
    "allen_cahn_model",
    "cahn_hilliard_model",
    "default_batch",
    "generate_dataset",
    "graded_mobility",
    "kdv_model",
    "mobility_coefficient",
    "paper_allen_cahn",
    "paper_sine_initial_condition",
]


def _double_well(u, x, ops):
    return 0.25 * (u[0] ** 2 - 1) ** 2


def _flory_huggins(u, x, ops, theta=0.3, theta_c=1.0):
    c = u[0]
    return theta * (c * ops.log(c) + (1 - c) * ops.log(1 - c)) + theta_c * c * (1 - c)


#: Known energy densities by name: the double well (u^2-1)^2/4 on [-1, 1] and the logarithmic
#: Flory-Huggins density on (0, 1) (theta = 0.3, theta_c = 1).
DENSITIES: dict[str, Callable[..., Any]] = {
    "double_well": _double_well,
    "flory_huggins": _flory_huggins,
}


def _density(density: str | KnownDensity, scale: float = 1.0) -> KnownDensity:
    if isinstance(density, KnownDensity):
        return density
    if density not in DENSITIES:
        raise ValueError(f"unknown density {density!r}; known: {sorted(DENSITIES)}")
    formula = DENSITIES[density]
    return KnownDensity(lambda u, x, ops: scale * formula(u, x, ops), name=density)


#: Variation of the graded mobility across the mesh: 1 at the lowest x_1, 1 + GRADE at the highest.
GRADE = 0.8


def graded_mobility(mesh: fd.MeshGeometry, *, scale: float = 1.0) -> Expression:
    r"""Return the graded mobility, a field of the state and the position.

    .. math:: m(u, x) = s\,\frac{1 + u^2}{2}\,(1 + 0.8\,\xi), \qquad
              \xi = \frac{x_1 - x_{1,\min}}{x_{1,\max} - x_{1,\min}} \in [0, 1]

    over the mesh's bounding box (:func:`femeso.meshes.bounding_box`): positive, it grows by
    :data:`GRADE` (80 %) across the domain in :math:`x_1` and doubles from :math:`u = 0` to
    :math:`u = \pm 1`.

    Parameters
    ----------
    mesh
        The mesh whose bounding box sets :math:`x_{1,\min}, x_{1,\max}`.
    scale
        The factor :math:`s > 0`.

    """
    if not scale > 0:
        raise ValueError(f"the graded mobility's scale must be > 0, got {scale!r}")
    lo, hi = bounding_box(mesh)
    x0, width = float(lo[0]), float(hi[0] - lo[0])
    s = float(scale)

    def formula(u, x, ops):
        return s * 0.5 * (1 + u[0] ** 2) * (1 + GRADE * (x[0] - x0) / width)

    return Expression(formula, uses_position=True, name=f"graded (x_1 in [{x0:g}, {x0 + width:g}])")


def mobility_coefficient(
    mobility: float | str | Expression, mesh: fd.MeshGeometry | None = None, *, scale: float = 1.0
) -> float | Expression:
    """Return a true mobility coefficient by name: ``scale`` times the named one.

    Parameters
    ----------
    mobility
        A number (constant), ``"degenerate"`` (``u(1-u)``), ``"graded"``
        (:func:`graded_mobility`, needs ``mesh``) or an :class:`~femeso.model.fields.Expression`
        (returned as it is, ``scale`` ignored).
    mesh
        The mesh of a position-dependent mobility.
    scale
        Factor of a number or a named mobility.

    """
    if isinstance(mobility, Expression):
        return mobility
    s = float(scale)
    if mobility == "degenerate":
        if s == 1.0:
            return Expression(lambda u, x, ops: u[0] * (1 - u[0]), name="u(1-u)")
        return Expression(lambda u, x, ops: s * u[0] * (1 - u[0]), name=f"{s:g} u(1-u)")
    if mobility == "graded":
        if mesh is None:
            raise ValueError("the graded mobility depends on the domain: give the mesh")
        return graded_mobility(mesh, scale=s)
    if isinstance(mobility, str):
        raise ValueError(
            f"unknown mobility {mobility!r}; use a number, 'degenerate', 'graded' or an Expression"
        )
    return float(mobility) * s


def allen_cahn_model(
    space: fd.FunctionSpace,
    *,
    epsilon: float = 0.1,
    density: str | KnownDensity = "double_well",
    mobility: float | str | Expression = 1.0,
) -> OnsagerModel:
    r"""Allen--Cahn :math:`u_t = -m(u, x)\,(F'(u)/\epsilon^2 - \Delta u)` as a member of the class.

    With the defaults this is the paper's :math:`u_t = u_{xx} + (u - u^3)/\epsilon^2`. The
    mobility is a number, ``"degenerate"``, ``"graded"`` or an Expression
    (:func:`mobility_coefficient` on the space's mesh).
    """
    energy = Energy(_density(density, 1.0 / epsilon**2), kappa=1.0)
    m = mobility_coefficient(mobility, space.mesh())
    return OnsagerModel(space, energy, mobility=LocalMobility(m))


def cahn_hilliard_model(
    space: fd.FunctionSpace,
    *,
    kappa: float = 1e-3,
    density: str | KnownDensity = "double_well",
    mobility: float | str | Expression = 1.0,
) -> OnsagerModel:
    r"""Cahn--Hilliard :math:`u_t = \nabla\cdot(m(u, x)\nabla(F'(u) - \kappa\Delta u))`, no-flux.

    The mobility as in :func:`allen_cahn_model`.
    """
    energy = Energy(_density(density), kappa=kappa)
    m = mobility_coefficient(mobility, space.mesh())
    return OnsagerModel(space, energy, mobility=ConservedMobility(m))


def kdv_model(space: fd.FunctionSpace) -> OnsagerModel:
    r"""Return KdV :math:`u_t + 6 u u_x + u_{xxx} = 0` on a periodic interval.

    :math:`M = 0`, :math:`W = -\partial_x`, :math:`V = \int \frac12 u_x^2 - u^3`.
    """
    energy = Energy(KnownDensity(lambda u, x, ops: -(u[0] ** 3), name="-u^3"), kappa=1.0)
    return OnsagerModel(space, energy, conservative=SkewTransport([-1.0], dim=1))


def paper_sine_initial_condition(space: fd.FunctionSpace, *, seed: int) -> fd.Function:
    """Return the paper's initial condition on a periodic box of side 2 pi.

    1-D: three sine modes with wavenumbers drawn from 1..10, amplitudes U(0, 1) and phases
    U(0, 2 pi), rescaled so that the nodal values span exactly [-1, 1] (the paper's protocol).
    2-D: the same with wave vectors whose components are drawn from 1..10 (the paper does not
    spell out its 2-D initial condition; this is the direct analogue).
    """
    mesh = space.mesh()
    dim = mesh.geometric_dimension
    rng = np.random.default_rng(seed)
    k = rng.integers(1, 11, size=(3, dim))
    a = rng.uniform(0, 1, size=3)
    phase = rng.uniform(0, 2 * np.pi, size=3)
    X = ufl.SpatialCoordinate(mesh)
    u = fd.Function(space).interpolate(
        sum(
            float(a[j]) * ufl.sin(sum(int(k[j, i]) * X[i] for i in range(dim)) + float(phase[j]))
            for j in range(3)
        )
    )
    comm = mesh.comm
    data = u.dat.data_ro
    lo = comm.allreduce(float(data.min()) if data.size else np.inf, op=MPI.MIN)
    hi = comm.allreduce(float(data.max()) if data.size else -np.inf, op=MPI.MAX)
    u.dat.data_wo[...] = 2 * (data - lo) / (hi - lo) - 1
    return u


#: Trajectories per batched system when ``generate_dataset(batch=None)``; the most reference
#: degrees of freedom of all copies together in a default batch; below
#: :data:`MIN_DEFAULT_BATCH` copies of that size, the default is one trajectory at a time.
#: Measured with ``bench/generation_cost.py`` (s per trajectory one at a time / batched, same
#: run, docs/benchmarks.md): 1-D Allen-Cahn, 256 cells, the paper's protocol: 7.2 / 1.15 (B = 8),
#: 0.57 (32), 0.41 (100); 2-D periodic squares: 16 x 16 (256 DoFs) 0.90 / 0.30 (8), 0.44 (32);
#: 32 x 32 (1024 DoFs) 3.3 / 2.2 (8), 1.7 / 1.1 (4) and 1.4 (16); 64 x 64 (4096 DoFs) 2.35 /
#: 2.41 (2), 2.34 (4): no gain where the arithmetic dominates (and a batch takes a Newton
#: iteration more when its slowest member needs it).
DEFAULT_BATCH = 32
DEFAULT_BATCH_DOFS = 8_192
MIN_DEFAULT_BATCH = 8

#: After this many batches whose steps needed halvings (each one then redone one trajectory at
#: a time), the rest of a dataset is generated one at a time.
MAX_ABANDONED_BATCHES = 2


def default_batch(n_trajectories: int, fine_dofs: int) -> int:
    """Return the default batch size for ``n_trajectories`` on ``fine_dofs`` reference DoFs.

    :data:`DEFAULT_BATCH`, at most :data:`DEFAULT_BATCH_DOFS` DoFs in all copies together and
    at most ``n_trajectories``; 1 (one at a time) where fewer than :data:`MIN_DEFAULT_BATCH`
    copies of the mesh fit in :data:`DEFAULT_BATCH_DOFS`.
    """
    fitting = DEFAULT_BATCH_DOFS // max(1, fine_dofs)
    if fitting < MIN_DEFAULT_BATCH:
        return 1
    return max(1, min(n_trajectories, DEFAULT_BATCH, fitting))


def generate_dataset(
    space: fd.FunctionSpace,
    model_factory: Callable[[fd.FunctionSpace], OnsagerModel],
    *,
    n_trajectories: int,
    n_frames: int,
    frame_dt: float,
    seed: int,
    substeps: int = 4,
    refine: int = 0,
    initial_condition: Callable[..., fd.Function] | None = None,
    name: str = "pde",
    parameters: dict | None = None,
    progress: bool = True,
    batch: int | None = None,
) -> Dataset:
    """Generate reference trajectories with femeso's stepper on a finer mesh and time step.

    Trajectories are solved ``batch`` at a time as one system on disjoint copies of the mesh
    (:mod:`femeso.data.batched`): the same equations, scheme, step, stepper and Newton
    tolerances (on 1-D meshes PETSc's own LU replaces MUMPS inside Newton), the frames equal to
    one-at-a-time generation's to the nonlinear solver's tolerance. Where batching does not
    apply (several MPI processes, non-simplex or curved meshes, non-P1 spaces, nonlocal
    energies, a batch whose step needed a halving or failed) trajectories are generated one at
    a time, and the log says why.

    Parameters
    ----------
    space
        The data space (scalar P1 on the data mesh).
    model_factory
        Builds the true model on a function space (e.g. ``allen_cahn_model``).
    n_trajectories, n_frames, frame_dt
        Number of trajectories, saved frames after the initial one, and time between frames.
    seed
        Seed of the initial conditions (trajectory ``i`` uses ``seed + i``).
    substeps
        Time steps per frame of the reference solve.
    refine
        Uniform refinements of the data mesh for the reference solve.
    initial_condition
        ``initial_condition(space, seed=...)`` on the *data* space; default: a smooth random
        field of amplitude 0.8.
    name, parameters
        Recorded in the metadata with the seed and the resolution.
    progress
        Show a progress bar (rank 0).
    batch
        Most trajectories per batched system; ``1``: one at a time; ``None``:
        :func:`default_batch`. Batches are made of nearly equal sizes.

    Returns
    -------
    Dataset

    """
    if n_trajectories < 1 or n_frames < 1 or substeps < 1 or refine < 0 or frame_dt <= 0:
        raise ValueError(
            "generate_dataset needs n_trajectories, n_frames, substeps >= 1, "
            "refine >= 0 and frame_dt > 0"
        )
    if batch is not None and (not isinstance(batch, int) or batch < 1):
        raise ValueError(f"generate_dataset needs batch >= 1 or None, got {batch!r}")
    initial_condition = initial_condition or (
        lambda V, seed: random_smooth_field(V, seed=seed, amplitude=0.8)
    )
    mesh = space.mesh()
    fine_mesh = fd.MeshHierarchy(mesh, refine)[-1] if refine else mesh
    fine_space = fd.FunctionSpace(fine_mesh, space.ufl_element())
    dt = frame_dt / substeps
    if batch is None:
        batch = default_batch(n_trajectories, fine_space.dim())
        if batch == 1 and n_trajectories > 1:
            logger.info(
                "generate %s: one trajectory at a time: %d reference DoFs per trajectory, too "
                "many for a default batch (fewer than %d copies fit in %d DoFs); pass batch= "
                "to batch anyway",
                name,
                fine_space.dim(),
                MIN_DEFAULT_BATCH,
                DEFAULT_BATCH_DOFS,
            )
    bar = progress_bar(
        n_trajectories * n_frames, f"femeso generate {name}", "frame", enabled=progress
    )
    single_model: list[OnsagerModel] = []

    def one_at_a_time(seeds: list[int]) -> list[tuple[list[fd.Function], list[float]]]:
        if not single_model:
            single_model.append(model_factory(fine_space))
        return [
            _one_trajectory(
                single_model[0],
                space,
                fine_space,
                initial_condition(space, seed=s),
                dt,
                n_frames,
                substeps,
                bar,
            )
            for s in seeds
        ]

    results: list[tuple[list[fd.Function], list[float]]] = []
    batched = batch > 1 and n_trajectories > 1
    obstacle = batching_obstacle(fine_space) if batched else None
    if obstacle is not None:
        logger.info("generate %s: one trajectory at a time: %s", name, obstacle)
        batched = False
    runners: dict[int, BatchedReference] = {}
    start, abandoned = 0, 0
    for size in batch_sizes(n_trajectories, batch):
        seeds = list(range(seed + start, seed + start + size))
        start += size
        if batched and size > 1 and size not in runners:
            runners[size] = BatchedReference(fine_space, model_factory, size, dt)
            if runners[size].obstacle is not None:
                logger.info(
                    "generate %s: one trajectory at a time: %s", name, runners[size].obstacle
                )
                batched = False
        if not batched or size == 1:
            results.extend(one_at_a_time(seeds))
            continue
        done = bar.n if bar is not None else 0
        try:
            batch_results = _batched_trajectories(
                runners[size], space, fine_space, initial_condition, seeds, n_frames, substeps, bar
            )
        except NotInLockstep as exc:
            logger.info(
                "generate %s: seeds %d to %d one at a time, not as a batch: %s",
                name,
                seeds[0],
                seeds[-1],
                exc,
            )
            if bar is not None:  # the frames of the abandoned batch are done again
                bar.n = done
            batch_results = one_at_a_time(seeds)
            abandoned += 1
            if abandoned == MAX_ABANDONED_BATCHES and start < n_trajectories:
                logger.info(
                    "generate %s: %d batches abandoned: the remaining %d trajectories one at "
                    "a time",
                    name,
                    abandoned,
                    n_trajectories - start,
                )
                batched = False
        results.extend(batch_results)
    trajectories = []
    for i, (states, energies) in enumerate(results):
        metadata = {
            "generator": name,
            "parameters": parameters or {},
            "seed": seed + i,
            "frame_dt": frame_dt,
            "reference_dt": dt,
            "reference_refinements": refine,
            "reference_energy": energies,
        }
        times = np.arange(n_frames + 1) * frame_dt
        trajectories.append(TrajectoryData(space, times, states, metadata))
    if bar is not None:
        bar.close()
    logger.info("generated %d %s trajectories of %d frames", n_trajectories, name, n_frames)
    return Dataset(
        space,
        trajectories,
        metadata={"generator": name, "seed": seed, "parameters": parameters or {}},
    )


def _one_trajectory(
    model: OnsagerModel,
    space: fd.FunctionSpace,
    fine_space: fd.FunctionSpace,
    u0: fd.Function,
    dt: float,
    n_frames: int,
    substeps: int,
    bar: Any,
) -> tuple[list[fd.Function], list[float]]:
    """Return the frames on ``space`` and the reference energies of one trajectory from ``u0``."""
    refine = fine_space.mesh() is not space.mesh()
    # Nested meshes: the coarse vertices are fine vertices, so interpolation between the
    # meshes is exact there in both directions.
    u0_fine = fd.Function(fine_space).interpolate(u0) if refine else u0
    stepper = EnergyStableStepper(model, u0_fine, dt)
    to_data = fd.interpolate(stepper.u, space) if refine else None
    states = [u0.copy(deepcopy=True)]
    energies = [model.energy_value(stepper.u)]
    for _ in range(n_frames):
        stepper.rollout(substeps)
        frame = fd.Function(space)
        if refine:
            fd.assemble(to_data, tensor=frame)
        else:
            frame.assign(stepper.u)
        states.append(frame)
        energies.append(stepper.records[-1].energy)
        if bar is not None:
            bar.update()
    return states, energies


def _batched_trajectories(
    runner: BatchedReference,
    space: fd.FunctionSpace,
    fine_space: fd.FunctionSpace,
    initial_condition: Callable[..., fd.Function],
    seeds: list[int],
    n_frames: int,
    substeps: int,
    bar: Any,
) -> list[tuple[list[fd.Function], list[float]]]:
    """Return what :func:`_one_trajectory` returns for each seed, solved as one batch."""
    refine = fine_space.mesh() is not space.mesh()
    initial = [initial_condition(space, seed=s) for s in seeds]
    initial_fine = [fd.Function(fine_space).interpolate(u0) if refine else u0 for u0 in initial]
    work = fd.Function(fine_space)
    to_data = fd.interpolate(work, space) if refine else None
    states: list[list[fd.Function]] = [[u0.copy(deepcopy=True)] for u0 in initial]

    def on_frame(n: int, values: np.ndarray) -> None:
        if n == 0:
            return
        for b, trajectory in enumerate(states):
            frame = fd.Function(space)
            if refine:
                work.dat.data_wo[...] = values[b]
                fd.assemble(to_data, tensor=frame)
            else:
                frame.dat.data_wo[...] = values[b]
            trajectory.append(frame)
        if bar is not None:
            bar.update(len(states))

    energies = runner.run(initial_fine, n_frames, substeps, on_frame)
    return [(s, energies[:, b].tolist()) for b, s in enumerate(states)]


def paper_allen_cahn(
    dim: int,
    *,
    n_trajectories: int,
    seed: int,
    n_frames: int = 100,
    substeps: int = 4,
    refine: int = 0,
    comm: Any = fd.COMM_WORLD,
    progress: bool = True,
    batch: int | None = None,
) -> Dataset:
    r"""Return the paper's Allen--Cahn data, :math:`u_t = \Delta u + (u - u^3)/\epsilon^2`.

    eps = 0.1. 1-D: periodic :math:`[0, 2\pi]` with 256 points; 2-D: :math:`[0, 2\pi]^2` with
    128 x 128 points; frames every 1e-3 up to T = 0.1 (``n_frames = 100``, 101 frames), initial
    condition :func:`paper_sine_initial_condition`. The reference solve takes ``substeps`` steps
    per frame (and ``refine`` mesh refinements), ``batch`` trajectories at a time
    (:func:`generate_dataset`).
    """
    if dim == 1:
        mesh = fd.PeriodicIntervalMesh(256, 2 * np.pi, comm=comm)
    elif dim == 2:
        mesh = fd.PeriodicSquareMesh(128, 128, 2 * np.pi, comm=comm)
    else:
        raise ValueError(f"the paper's Allen-Cahn data is 1-D or 2-D, got dim={dim}")
    space = fd.FunctionSpace(mesh, "CG", 1)
    data = generate_dataset(
        space,
        allen_cahn_model,
        n_trajectories=n_trajectories,
        n_frames=n_frames,
        frame_dt=1e-3,
        seed=seed,
        substeps=substeps,
        refine=refine,
        initial_condition=paper_sine_initial_condition,
        name=f"allen_cahn_{dim}d_paper",
        parameters={
            "epsilon": 0.1,
            "points": [256] if dim == 1 else [128, 128],
            "length": 2 * np.pi,
        },
        progress=progress,
        batch=batch,
    )
    # The mesh vertices are the paper's grid points: to_grid_arrays gives the paper's layout.
    points = [256] if dim == 1 else [128, 128]
    data.metadata["grid"] = {"shape": points, "lengths": [2 * np.pi] * dim}
    return data
