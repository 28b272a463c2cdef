"""The stepper's guarantees under MPI, and agreement with a serial run of the same problem."""

import firedrake as fd
import pytest

import femeso
from models import dissipative_model, mesh, neural_energy

REL = 1e-9


def energies_after_steps(comm, kind, seed, dt, n=3):
    msh = femeso.load_mesh("plate_with_holes", comm=comm)
    model = dissipative_model(msh, kind, seed)
    u0 = femeso.random_smooth_field(model.space, seed=seed, mean=0.1)
    stepper = femeso.EnergyStableStepper(model, u0, dt)
    V0 = model.energy_parts(stepper.u)
    records = [stepper.advance() for _ in range(n)]
    return V0, records


@pytest.mark.parallel(nprocs=2)
@pytest.mark.parametrize("kind,dt", [("conserved", 0.5), ("both", 1e-3), ("local", 10.0)])
def test_parallel_energy_law_mass_and_serial_agreement(kind, dt):
    assert fd.COMM_WORLD.size == 2
    V0, records = energies_after_steps(fd.COMM_WORLD, kind, seed=17, dt=dt)
    scale = abs(V0["pointwise"]) + abs(V0["gradient"])
    for r in records:
        assert r.energy_change <= REL * scale
        if r.halvings == 0:
            assert abs(r.energy_change + dt * r.dissipation) <= REL * scale
        if kind == "conserved":
            assert abs(r.mass[0] - records[0].mass[0]) <= 1e-11 * scale
    # The same problem on one process (each rank solves it alone) gives the same energies.
    V0_serial, serial = energies_after_steps(fd.COMM_SELF, kind, seed=17, dt=dt)
    assert V0["total"] == pytest.approx(V0_serial["total"], rel=1e-10)
    for r, s in zip(records, serial, strict=True):
        assert r.energy == pytest.approx(s.energy, rel=1e-8, abs=1e-10 * scale)


@pytest.mark.parallel(nprocs=2)
def test_parallel_pure_transport_conserves_energy():
    msh = mesh("periodic_interval")
    V = fd.FunctionSpace(msh, "CG", 1)
    model = femeso.OnsagerModel(
        V, neural_energy(1, 4), conservative=femeso.SkewTransport([-1.0], dim=1)
    )
    u0 = femeso.random_smooth_field(V, seed=4)
    stepper = femeso.EnergyStableStepper(model, u0, 0.1)
    V0 = model.energy_parts(stepper.u)
    for _ in range(3):
        r = stepper.advance()
        assert abs(r.energy - V0["total"]) <= REL * (abs(V0["pointwise"]) + V0["gradient"])


@pytest.mark.parallel(nprocs=2)
def test_parallel_nonlocal_energy_matches_serial():
    from test_steppers import nonlocal_model

    def run(comm):
        msh = fd.PeriodicIntervalMesh(48, 2 * 3.141592653589793, comm=comm)
        model = nonlocal_model(msh, 5, "dissipative")
        u0 = femeso.random_smooth_field(model.space, seed=5)
        stepper = femeso.EnergyStableStepper(model, u0, 0.3)
        return model.energy_parts(stepper.u), [stepper.advance() for _ in range(2)]

    V0, records = run(fd.COMM_WORLD)
    V0_serial, serial = run(fd.COMM_SELF)
    scale = abs(V0["pointwise"]) + V0["gradient"] + abs(V0["nonlocal"])
    for r, s in zip(records, serial, strict=True):
        assert r.energy_change <= REL * scale
        assert abs(r.energy_change + 0.3 * r.dissipation) <= REL * scale
        assert r.energy == pytest.approx(s.energy, rel=1e-9)


@pytest.mark.parallel(nprocs=2)
def test_parallel_iterative_solver_keeps_the_energy_law():
    """GMRES + overlapping Schwarz (subdomain LU) across 2 ranks: really iterative there."""
    msh = femeso.load_mesh("plate_with_holes")
    model = dissipative_model(msh, "both", 4)
    u0 = femeso.random_smooth_field(model.space, seed=4)
    stepper = femeso.EnergyStableStepper(model, u0, 0.05, solver_parameters=femeso.ITERATIVE_SOLVER)
    V0 = model.energy_parts(stepper.u)
    scale = abs(V0["pointwise"]) + V0["gradient"]
    for _ in range(2):
        r = stepper.advance()
        assert r.linear_iterations > r.newton_iterations
        if r.halvings == 0:
            assert abs(r.energy_change + 0.05 * r.dissipation) <= REL * scale
        assert r.energy_change <= REL * scale


@pytest.mark.parallel(nprocs=2)
def test_the_cell_count_is_of_the_whole_mesh_on_any_number_of_ranks():
    """The report's cell count: ``num_cells()`` is one rank's, halo included."""
    from femeso.meshes import count_cells

    distributed = femeso.load_mesh("plate_with_holes")
    alone = femeso.load_mesh("plate_with_holes", comm=fd.COMM_SELF)
    assert count_cells(distributed) == count_cells(alone) == alone.num_cells()
    assert distributed.num_cells() != alone.num_cells()  # what the report printed before
