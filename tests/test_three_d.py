"""The 3-D reference geometry: it meshes with its tags, and a 3-D step keeps the energy law.

``meshes/cylinder_with_inclusions.geo`` (a cylinder with three spherical inclusions removed) is
meshed by gmsh at a coarse size here; the experiment (``experiments/cahn_hilliard_3d.toml``) uses
its own size (20 303 P1 DoFs).
"""

import math

import firedrake as fd
import numpy as np
import pytest

import femeso
from femeso.meshes import generate_mesh, mesh_directory
from models import dissipative_model
from test_steppers import REL, energy_scale, run_steps

RADII = (0.16, 0.14, 0.1)


SIZES = (0.08, 0.06)


@pytest.fixture(scope="module")
def cylinders(tmp_path_factory):
    """The geometry meshed at two sizes (1817 and 3860 P1 DoFs)."""
    folder = tmp_path_factory.mktemp("three_d")
    meshes = []
    for size in SIZES:
        msh = folder / f"cylinder_{size}.msh"
        generate_mesh(mesh_directory() / "cylinder_with_inclusions.geo", msh, size=size)
        meshes.append(femeso.load_mesh(msh))
    return meshes


@pytest.fixture(scope="module")
def cylinder(cylinders):
    return cylinders[-1]


def test_the_3d_geometry_meshes_with_its_volume_and_boundary_tags(cylinders):
    """Volume and tagged wall areas approach the exact ones; the curved inclusion walls (tag 2)
    at second order in the mesh size (flat facets inscribed in spheres)."""
    one = fd.Constant(1.0)
    volume_exact = math.pi * 0.25 - 4 / 3 * math.pi * sum(r**3 for r in RADII)
    inclusions_exact = 4 * math.pi * sum(r**2 for r in RADII)
    errors = []
    for mesh in cylinders:
        assert mesh.topological_dimension == 3
        volume = fd.assemble(one * fd.dx(domain=mesh))
        assert abs(volume - volume_exact) < 3e-3 * volume_exact, (volume, volume_exact)
        outer = fd.assemble(one * fd.ds(1, domain=mesh))
        assert outer == pytest.approx(2 * math.pi * 0.5 + 2 * math.pi * 0.25, rel=5e-3)
        inclusions = fd.assemble(one * fd.ds(2, domain=mesh))
        errors.append(abs(inclusions - inclusions_exact) / inclusions_exact)
    order = math.log(errors[0] / errors[1]) / math.log(SIZES[0] / SIZES[1])
    assert errors[-1] < 0.04 and order > 1.8, (errors, order)


@pytest.mark.parametrize(
    "solver", [femeso.DIRECT_SOLVER, femeso.ITERATIVE_SOLVER], ids=["direct", "iterative"]
)
def test_a_3d_cahn_hilliard_step_keeps_the_energy_law_and_the_mass(cylinder, solver):
    """Random, untrained neural density and conserved neural mobility; natural BCs."""
    model = dissipative_model(cylinder, "conserved", seed=3)
    u0 = femeso.random_smooth_field(model.space, seed=3, amplitude=0.5)
    dt = 1e-3
    _, V0, mass0, records = run_steps(model, u0, dt, n=2, solver_parameters=solver)
    for r in records:
        assert r.energy_change <= REL * energy_scale(V0)
        assert abs(r.energy_change + dt * r.dissipation) <= REL * energy_scale(V0)
        assert r.dissipation > 0
        np.testing.assert_allclose(r.mass, mass0, rtol=1e-12, atol=1e-14)


def test_the_job_solver_key_chooses_the_steppers_petsc_settings(cylinder):
    """``[model] solver`` reaches the learned model's and the classical solver's steppers."""
    from femeso.config import ConfigError, validate
    from femeso.jobs.models import stepper_factory

    assert validate({"model": {"solver": "iterative"}}).model.solver == "iterative"
    with pytest.raises(ConfigError, match="model.solver"):
        validate({"model": {"solver": "cg"}})
    model = dissipative_model(cylinder, "conserved", seed=5)
    u0 = femeso.random_smooth_field(model.space, seed=5, amplitude=0.5)
    iterative = stepper_factory(model, 1, "iterative")(u0, 1e-3)
    assert iterative.solver.snes.getKSP().getType() == "gmres"
    assert iterative.solver_parameters["sub_pc_factor_mat_solver_type"] == "mumps"
    direct = stepper_factory(model, 1)(u0, 1e-3)
    assert direct.solver.snes.getKSP().getType() == "preonly"
