"""The PETSc solver settings femeso uses, named once."""

from __future__ import annotations

from typing import Any

from firedrake.petsc import PETSc

__all__ = ["DIRECT_SOLVER", "ITERATIVE_SOLVER", "LU", "lu_solver"]

#: A direct solve: MUMPS LU, no Krylov iterations.
LU: dict[str, Any] = {"ksp_type": "preonly", "pc_type": "lu", "pc_factor_mat_solver_type": "mumps"}

#: Newton with backtracking line search, MUMPS LU (the default).
DIRECT_SOLVER: dict[str, Any] = {
    "snes_type": "newtonls",
    "snes_linesearch_type": "bt",
    # Tight: the discrete energy law holds to the accuracy of the nonlinear solve. Newton
    # converges quadratically, so this costs about one iteration over a loose tolerance.
    "snes_rtol": 1e-13,
    "snes_atol": 1e-13,
    "snes_stol": 1e-14,
    "snes_max_it": 30,
    "mat_type": "aij",
    **LU,
}

#: Newton with line search, GMRES preconditioned by overlapping additive Schwarz with subdomain
#: LU: the factorisations stay local to each rank, for meshes whose global LU is too large. (The
#: mixed (u, mu) Jacobian of a non-convex energy is indefinite: block-Jacobi/ILU, and a
#: Schur-complement split with GAMG, stalled in our tests.) The subdomain LU is sequential MUMPS:
#: PETSc's own LU took 178 s for one step of the 3-D experiment (20 303 DoFs, 1 rank) against
#: 10 s. The energy law then holds to the linear tolerance, which is set tight.
ITERATIVE_SOLVER: dict[str, Any] = {
    **{k: v for k, v in DIRECT_SOLVER.items() if not k.startswith(("ksp", "pc"))},
    "ksp_type": "gmres",
    "ksp_rtol": 1e-12,
    "ksp_atol": 1e-15,
    "ksp_max_it": 1000,
    "ksp_gmres_restart": 200,
    "pc_type": "asm",
    "pc_asm_overlap": 2,
    "sub_pc_type": "lu",
    "sub_pc_factor_mat_solver_type": "mumps",
}


def lu_solver(comm: Any) -> PETSc.KSP:
    """Return a PETSc ``KSP`` that solves by :data:`LU` (set its operators before solving)."""
    ksp = PETSc.KSP().create(comm=comm)
    ksp.setType(LU["ksp_type"])
    pc = ksp.getPC()
    pc.setType(LU["pc_type"])
    pc.setFactorSolverType(LU["pc_factor_mat_solver_type"])
    return ksp
