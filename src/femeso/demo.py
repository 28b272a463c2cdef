"""The built-in default job of ``femeso demo`` / ``make demo``."""

from __future__ import annotations

import time

import firedrake as fd
import numpy as np

from femeso._log import logger
from femeso.meshes import load_mesh

__all__ = ["run_demo"]


def run_demo(*, mesh: str = "plate_with_holes", steps: int = 20, dt: float = 2e-3) -> dict:
    """Solve a manufactured Poisson problem on a reference mesh and report what was done.

    Parameters
    ----------
    mesh
        Reference geometry name or ``.msh`` file.
    steps, dt
        Unused until the energy-stable stepper lands; kept for the command-line interface.

    Returns
    -------
    dict
        DoFs, solver iterations, L2 error and wall time.

    """
    t0 = time.perf_counter()
    msh = load_mesh(mesh)
    V = fd.FunctionSpace(msh, "CG", 2)
    x, y = fd.SpatialCoordinate(msh)
    exact = fd.sin(np.pi * x) * fd.cos(2 * np.pi * y)
    u, v = fd.TrialFunction(V), fd.TestFunction(V)
    uh = fd.Function(V, name="u")
    problem = fd.LinearVariationalProblem(
        fd.inner(fd.grad(u), fd.grad(v)) * fd.dx,
        -fd.div(fd.grad(exact)) * v * fd.dx(degree=8),
        uh,
        bcs=fd.DirichletBC(V, exact, "on_boundary"),
    )
    solver = fd.LinearVariationalSolver(
        problem, solver_parameters={"ksp_type": "cg", "pc_type": "gamg", "ksp_rtol": 1e-12}
    )
    solver.solve()
    error = fd.errornorm(exact, uh, "L2", degree_rise=3)
    result = {
        "mesh": mesh,
        "cells": msh.num_cells(),
        "dofs": V.dim(),
        "ksp_iterations": solver.snes.ksp.getIterationNumber(),
        "l2_error": error,
        "seconds": time.perf_counter() - t0,
    }
    logger.info(
        "Poisson, P2 on %s: %d cells, %d DoFs, CG+GAMG %d iterations, L2 error %.3e, %.1f s",
        mesh,
        result["cells"],
        result["dofs"],
        result["ksp_iterations"],
        error,
        result["seconds"],
    )
    return result
