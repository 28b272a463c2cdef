"""The stack femeso rests on: Firedrake + PETSc (MUMPS, HDF5), pyadjoint, the PyTorch bridge."""

import firedrake as fd
import numpy as np
import pytest
import torch
from firedrake.adjoint import (
    Control,
    ReducedFunctional,
    continue_annotation,
    pause_annotation,
    taylor_to_dict,
)
from firedrake.ml.pytorch import fem_operator, to_torch
from mpi4py import MPI

from femeso.meshes import load_mesh

MUMPS = {"ksp_type": "preonly", "pc_type": "lu", "pc_factor_mat_solver_type": "mumps"}


def poisson_errors(mesh_name: str, levels: int) -> tuple[np.ndarray, np.ndarray]:
    """Solve -Δu = f with u = exact on the boundary on a hierarchy; return (h, L2 errors)."""
    base = load_mesh(mesh_name)
    hierarchy = fd.MeshHierarchy(base, levels)
    hs, errors = [], []
    for mesh in hierarchy:
        x, y = fd.SpatialCoordinate(mesh)
        exact = fd.sin(np.pi * x) * fd.cos(2 * np.pi * y) + x * y
        V = fd.FunctionSpace(mesh, "CG", 1)
        u, v = fd.TrialFunction(V), fd.TestFunction(V)
        f = -fd.div(fd.grad(exact))
        uh = fd.Function(V)
        bc = fd.DirichletBC(V, exact, "on_boundary")
        fd.solve(
            fd.inner(fd.grad(u), fd.grad(v)) * fd.dx == f * v * fd.dx(degree=6),
            uh,
            bcs=bc,
            solver_parameters=MUMPS,
        )
        errors.append(fd.errornorm(exact, uh, "L2", degree_rise=3))
        diameters = fd.Function(fd.FunctionSpace(mesh, "DG", 0)).interpolate(fd.CellDiameter(mesh))
        hs.append(mesh.comm.allreduce(diameters.dat.data_ro.max(), op=MPI.MAX))
    return np.array(hs), np.array(errors)


def assert_second_order(hs, errors):
    rates = np.log(errors[:-1] / errors[1:]) / np.log(hs[:-1] / hs[1:])
    assert np.all(rates > 1.85), f"L2 rates {rates}, errors {errors}"
    assert errors[-1] < 1e-3


def test_poisson_converges_on_gmsh_mesh():
    hs, errors = poisson_errors("plate_with_holes", levels=2)
    assert_second_order(hs, errors)


@pytest.mark.parallel(nprocs=2)
def test_poisson_converges_on_gmsh_mesh_parallel():
    hs, errors = poisson_errors("plate_with_holes", levels=2)
    assert fd.COMM_WORLD.size == 2
    assert_second_order(hs, errors)


def test_pyadjoint_taylor_nonlinear():
    mesh = fd.UnitSquareMesh(12, 12)
    V = fd.FunctionSpace(mesh, "CG", 1)
    x, y = fd.SpatialCoordinate(mesh)
    continue_annotation()
    f = fd.Function(V).interpolate(fd.sin(3 * x) * y)
    u, v = fd.Function(V), fd.TestFunction(V)
    F = (1 + u**2) * fd.inner(fd.grad(u), fd.grad(v)) * fd.dx - f * v * fd.dx
    fd.solve(
        F == 0,
        u,
        bcs=fd.DirichletBC(V, 0, "on_boundary"),
        solver_parameters={"snes_rtol": 1e-14, "snes_atol": 1e-13, **MUMPS},
    )
    J = fd.assemble(u**4 * fd.dx + u * f * fd.dx)
    Jhat = ReducedFunctional(J, Control(f))
    pause_annotation()
    h = fd.Function(V).interpolate(fd.cos(2 * x + y))
    rates = taylor_to_dict(Jhat, f, h)
    assert min(rates["R1"]["Rate"]) > 1.9, rates["R1"]["Rate"]
    assert min(rates["R2"]["Rate"]) > 2.9, rates["R2"]["Rate"]


def test_torch_backward_through_fem_operator_matches_finite_differences():
    mesh = fd.UnitSquareMesh(8, 8)
    V = fd.FunctionSpace(mesh, "CG", 1)
    continue_annotation()
    m = fd.Function(V).interpolate(fd.Constant(0.3))
    u, v = fd.Function(V), fd.TestFunction(V)
    F = fd.inner(fd.grad(u), fd.grad(v)) * fd.dx + (u + u**3 - m) * v * fd.dx
    fd.solve(F == 0, u, solver_parameters={"snes_rtol": 1e-14, "snes_atol": 1e-13, **MUMPS})
    J = fd.assemble(0.5 * (u - 0.1) ** 2 * fd.dx)
    Jhat = ReducedFunctional(J, Control(m))
    pause_annotation()
    G = fem_operator(Jhat)

    rng = np.random.default_rng(0)
    m0 = to_torch(m).detach().clone().requires_grad_(True)
    loss = G(m0).sum()
    loss.backward()
    grad = m0.grad.detach().numpy().copy()

    direction = torch.tensor(rng.standard_normal(m0.shape), dtype=m0.dtype)
    eps = 1e-5
    with torch.no_grad():
        jp = G(m0 + eps * direction).sum().item()
        jm = G(m0 - eps * direction).sum().item()
    fd_derivative = (jp - jm) / (2 * eps)
    adjoint_derivative = float((grad * direction.numpy()).sum())
    assert abs(adjoint_derivative) > 1e-6
    assert abs(adjoint_derivative - fd_derivative) < 1e-6 * abs(fd_derivative)


def test_checkpointfile_round_trip(tmp_path):
    mesh = load_mesh("plate_with_holes", name="plate")
    V = fd.FunctionSpace(mesh, "CG", 2)
    x, y = fd.SpatialCoordinate(mesh)
    u = fd.Function(V, name="u").interpolate(fd.exp(x) * fd.sin(5 * y))
    path = tmp_path / "state.h5"
    with fd.CheckpointFile(str(path), "w") as afile:
        afile.save_mesh(mesh)
        afile.save_function(u, idx=0)
        afile.save_function(fd.Function(V).assign(2 * u), name="u", idx=1)
    with fd.CheckpointFile(str(path), "r") as afile:
        mesh2 = afile.load_mesh("plate")
        u0 = afile.load_function(mesh2, "u", idx=0)
        u1 = afile.load_function(mesh2, "u", idx=1)
    assert mesh2.num_cells() == mesh.num_cells()
    x2, y2 = fd.SpatialCoordinate(mesh2)
    exact = fd.Function(u0.function_space()).interpolate(fd.exp(x2) * fd.sin(5 * y2))
    assert np.max(np.abs(u0.dat.data_ro - exact.dat.data_ro)) < 1e-13
    assert np.max(np.abs(u1.dat.data_ro - 2 * exact.dat.data_ro)) < 1e-13


def test_bad_mesh_input_is_rejected(tmp_path):
    with pytest.raises(FileNotFoundError, match="no_such_geometry"):
        load_mesh("no_such_geometry")
    with pytest.raises(FileNotFoundError, match="missing.msh"):
        load_mesh(tmp_path / "missing.msh")
    with pytest.raises(ValueError, match="refinement needs the .geo"):
        from femeso.meshes import mesh_path

        load_mesh(mesh_path("plate_with_holes"), refinement=1)


@pytest.mark.parametrize("name", ["l_shape", "plate_with_holes", "curved_channel"])
def test_reference_geometries_refine(name):
    """Refinement re-meshes the true geometry: ~4x the cells per level, same area."""
    coarse, fine = load_mesh(name), load_mesh(name, refinement=1)
    ratio = fine.num_cells() / coarse.num_cells()
    assert 3.0 < ratio < 5.5, ratio
    one = fd.Constant(1.0)
    area_c = fd.assemble(one * fd.dx(domain=coarse))
    area_f = fd.assemble(one * fd.dx(domain=fine))
    assert abs(area_f - area_c) < 0.02 * area_c
