"""Cost of one energy-stable step: neural-field model vs. the analytic Allen--Cahn energy.

Both run through femeso's EnergyStableStepper on the same irregular 2-D mesh (the plate with
holes, re-meshed by gmsh to the requested size) with the same dt; a third column times a plain
Firedrake implementation of the same discrete-gradient step with the double well written
directly in UFL (no PyTorch), as an outside reference. Figures are ratios measured in one run.

    python bench/step_cost.py                 # ~20k and ~200k state DoFs
    python bench/step_cost.py --dofs 20000    # one size
"""

from __future__ import annotations

from femeso._runtime import configure_environment

configure_environment()  # before Firedrake: threads, kernel caches

import argparse
import time

import firedrake as fd
import numpy as np
import ufl

import femeso
from femeso._runtime import cache_root
from femeso.meshes import generate_mesh, mesh_directory


def plate_mesh(target_dofs: int) -> fd.MeshGeometry:
    # measured on this geometry: P1 vertices ~ 2.13 / h^2
    h = float(np.sqrt(2.13 / target_dofs))
    msh = cache_root() / "meshes" / f"plate-bench-{target_dofs}.msh"
    if fd.COMM_WORLD.rank == 0 and not msh.exists():
        generate_mesh(mesh_directory() / "plate_with_holes.geo", msh, size=h)
    fd.COMM_WORLD.barrier()
    return fd.Mesh(str(msh))


def models(V):
    double_well = femeso.KnownDensity(lambda u, x, ops: 0.25 * (u[0] ** 2 - 1) ** 2)
    analytic = femeso.OnsagerModel(
        V, femeso.Energy(double_well, kappa=1e-3), mobility=femeso.LocalMobility(1.0)
    )
    neural = femeso.OnsagerModel(
        V,
        femeso.Energy(femeso.CoerciveNeuralDensity(width=16, seed=0), kappa=1e-3),
        mobility=femeso.LocalMobility(1.0),
    )
    return analytic, neural


def time_femeso(model, u0, dt, steps):
    stepper = femeso.EnergyStableStepper(model, u0, dt)
    stepper.advance()  # compile kernels, warm caches
    t0 = time.perf_counter()
    for _ in range(steps):
        stepper.advance()
    elapsed = (time.perf_counter() - t0) / steps
    its = np.mean([r.newton_iterations for r in stepper.records[1:]])
    return elapsed, its


def time_plain_ufl(V, u0, dt, steps):
    """The same discrete-gradient step with the double well in UFL, Firedrake only."""
    W = V * V
    w = fd.Function(W)
    un = fd.Function(V).assign(u0)
    w.subfunctions[0].assign(u0)
    u1, mu = ufl.split(w)
    v, eta = fd.TestFunctions(W)
    dx = fd.dx(degree=4)
    # (F(u1) - F(u0)) / (u1 - u0) for F = (u^2-1)^2/4, written as the exact polynomial quotient
    dg = 0.25 * (u1 + un) * (u1**2 + un**2) - 0.5 * (u1 + un)
    F = (
        (u1 - un) * v
        + dt * mu * v
        + mu * eta
        - dg * eta
        - 1e-3 * ufl.inner(ufl.grad(0.5 * (u1 + un)), ufl.grad(eta))
    ) * dx
    solver = fd.NonlinearVariationalSolver(
        fd.NonlinearVariationalProblem(F, w), solver_parameters=femeso.DIRECT_SOLVER
    )
    solver.solve()
    un.assign(w.subfunctions[0])
    t0 = time.perf_counter()
    for _ in range(steps):
        solver.solve()
        un.assign(w.subfunctions[0])
    return (time.perf_counter() - t0) / steps


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--dofs", type=int, nargs="+", default=[20_000, 200_000])
    parser.add_argument("--steps", type=int, default=5)
    parser.add_argument("--dt", type=float, default=1e-2)
    args, _ = parser.parse_known_args()
    rows = []
    for target in args.dofs:
        mesh = plate_mesh(target)
        V = fd.FunctionSpace(mesh, "CG", 1)
        u0 = femeso.random_smooth_field(V, seed=0, max_wavenumber=8)
        analytic, neural = models(V)
        t_analytic, it_a = time_femeso(analytic, u0, args.dt, args.steps)
        t_neural, it_n = time_femeso(neural, u0, args.dt, args.steps)
        t_plain = time_plain_ufl(V, u0, args.dt, args.steps)
        rows.append((V.dim(), t_analytic, t_neural, t_plain, it_a, it_n))
    if fd.COMM_WORLD.rank == 0:
        print(
            f"{'state DoFs':>10} {'analytic s/step':>16} {'neural s/step':>14} "
            f"{'plain UFL s/step':>17} {'neural/analytic':>16} {'neural/plain':>13} "
            f"{'Newton its a/n':>15}"
        )
        for dofs, ta, tn, tp, ia, inn in rows:
            print(
                f"{dofs:>10d} {ta:>16.3f} {tn:>14.3f} {tp:>17.3f} {tn / ta:>16.2f} "
                f"{tn / tp:>13.2f} {ia:>7.1f}/{inn:<7.1f}"
            )
        print("target: neural/analytic <= 1.5")


if __name__ == "__main__":
    main()
