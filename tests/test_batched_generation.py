"""Batched reference generation: the same trajectories as one at a time, to Newton's tolerance."""

import logging
import math

import firedrake as fd
import numpy as np
import pytest

import femeso
from femeso._log import logger
from femeso.data.batched import BatchedReference, batch_sizes, batching_obstacle, mesh_copies
from femeso.data.generators import (
    allen_cahn_model,
    cahn_hilliard_model,
    default_batch,
    generate_dataset,
    kdv_model,
    paper_sine_initial_condition,
)

#: Batched and one-at-a-time frames agree to this relative tolerance: the nonlinear solver's (a
#: batch's Newton iterations stop on the norm of the whole batch's residual). Measured (largest
#: nodal difference over the largest nodal value): Allen-Cahn 1-D 3.5e-15, with a refinement
#: 1.6e-15; Cahn-Hilliard (Flory-Huggins, degenerate mobility) on the L-shape 1.1e-11; graded
#: mobility on the periodic square 0 (the same MUMPS arithmetic block by block); KdV 4.4e-16.
#: Reference energies: 4e-16 to 5e-15.
AGREEMENT = 1e-9


def values(dataset):
    return np.array([[s.dat.data_ro.copy() for s in t.states] for t in dataset.trajectories])


def energies(dataset):
    return np.array([t.metadata["reference_energy"] for t in dataset.trajectories])


def relative_difference(a, b):
    return float(np.abs(a - b).max() / np.abs(b).max())


@pytest.fixture
def messages():
    """The femeso log's messages while the test runs."""
    records = []
    handler = logging.Handler(logging.INFO)
    handler.emit = lambda record: records.append(record.getMessage())
    logger.addHandler(handler)
    yield records
    logger.removeHandler(handler)


def generate(space, factory, batch, **kwargs):
    options = dict(n_trajectories=5, n_frames=4, frame_dt=1e-3, seed=3, substeps=2)
    options.update(kwargs)
    return generate_dataset(space, factory, progress=False, batch=batch, **options)


@pytest.mark.parametrize("refine", [0, 1])
def test_allen_cahn_1d_batched_equals_one_at_a_time(refine, messages):
    V = fd.FunctionSpace(fd.PeriodicIntervalMesh(48, 2 * math.pi), "CG", 1)
    ic = paper_sine_initial_condition
    single = generate(V, allen_cahn_model, 1, refine=refine, initial_condition=ic)
    batched = generate(V, allen_cahn_model, 3, refine=refine, initial_condition=ic)  # 3 + 2
    assert not any("one at a time" in m for m in messages), messages
    difference = relative_difference(values(batched), values(single))
    assert difference < AGREEMENT, difference
    assert relative_difference(energies(batched), energies(single)) < AGREEMENT
    for a, b in zip(batched.trajectories, single.trajectories, strict=True):
        assert a.metadata == {**b.metadata, "reference_energy": a.metadata["reference_energy"]}
        assert np.array_equal(a.times, b.times)
        assert a.states[0].function_space() == V
    assert np.all(np.diff(energies(batched), axis=1) < 0)


def test_cahn_hilliard_2d_batched_equals_one_at_a_time_and_conserves_mass(messages):
    """Conserved mobility, Flory-Huggins, degenerate mobility: the L-shape (not periodic)."""
    V = fd.FunctionSpace(femeso.load_mesh("l_shape"), "CG", 1)

    def model(space):
        return cahn_hilliard_model(space, density="flory_huggins", mobility="degenerate")

    def ic(V, seed):
        return femeso.random_smooth_field(V, seed=seed, amplitude=0.1, mean=0.5, max_wavenumber=6)

    kwargs = dict(n_trajectories=3, n_frames=3, frame_dt=2e-3, initial_condition=ic)
    single = generate(V, model, 1, **kwargs)
    batched = generate(V, model, 3, **kwargs)
    assert not any("one at a time" in m for m in messages), messages
    difference = relative_difference(values(batched), values(single))
    assert difference < AGREEMENT, difference
    assert relative_difference(energies(batched), energies(single)) < AGREEMENT
    for trajectory in batched.trajectories:  # each copy conserves its own mass
        masses = np.array([fd.assemble(s * fd.dx) for s in trajectory.states])
        assert np.abs(masses - masses[0]).max() < 1e-13
        assert np.all(np.diff(trajectory.metadata["reference_energy"]) < 0)


def test_position_dependent_mobility_on_a_periodic_square_batched(messages):
    """The graded mobility m(u, x): every copy sits where the mesh does."""
    V = fd.FunctionSpace(fd.PeriodicSquareMesh(8, 8, 2 * math.pi), "CG", 1)

    def model(space):
        return cahn_hilliard_model(space, kappa=1e-2, mobility="graded")

    single = generate(V, model, 1, n_trajectories=2)
    batched = generate(V, model, 2, n_trajectories=2)
    assert not any("one at a time" in m for m in messages), messages
    difference = relative_difference(values(batched), values(single))
    assert difference < AGREEMENT, difference


def test_kdv_batched_equals_one_at_a_time():
    V = fd.FunctionSpace(fd.PeriodicIntervalMesh(48, 2 * math.pi), "CG", 1)

    def ic(V, seed):
        return femeso.random_smooth_field(V, seed=seed, amplitude=0.5)

    single = generate(V, kdv_model, 1, n_trajectories=2, initial_condition=ic)
    batched = generate(V, kdv_model, 2, n_trajectories=2, initial_condition=ic)
    difference = relative_difference(values(batched), values(single))
    assert difference < AGREEMENT, difference
    e = energies(batched)
    assert np.abs(e - e[:, :1]).max() <= 1e-9 * np.abs(e).max()  # energy conserved per copy


@pytest.mark.parametrize(
    "make",
    [
        lambda: fd.PeriodicIntervalMesh(7, 2.0),
        lambda: fd.PeriodicSquareMesh(3, 4, 1.0),
        lambda: femeso.load_mesh("l_shape"),
        lambda: fd.UnitCubeMesh(2, 2, 2),
    ],
)
def test_mesh_copies_reproduce_the_mesh(make):
    mesh = make()
    copies = mesh_copies(mesh, 3)
    V = fd.FunctionSpace(mesh, "CG", 1)
    W = fd.FunctionSpace(copies.mesh, "CG", 1)
    assert copies.check(V, W) is None
    nodes = copies.node_map(V, W)
    assert nodes.shape == (3, V.dim()) and len(np.unique(nodes)) == W.dim()
    assert np.bincount(copies.cell_copy).tolist() == [mesh.num_cells()] * 3
    volume = fd.assemble(fd.Constant(1.0) * fd.dx(domain=mesh))
    assert fd.assemble(fd.Constant(1.0) * fd.dx(domain=copies.mesh)) == pytest.approx(3 * volume)
    # a field put on copy 1 only integrates to its integral on the mesh, and nothing elsewhere
    u = femeso.random_smooth_field(V, seed=0)
    w = fd.Function(W)
    w.dat.data_wo[nodes[1]] = u.dat.data_ro
    assert fd.assemble(w * fd.dx) == pytest.approx(fd.assemble(u * fd.dx), rel=1e-12)


def test_energies_are_split_by_copy():
    V = fd.FunctionSpace(fd.PeriodicIntervalMesh(32, 2 * math.pi), "CG", 1)
    runner = BatchedReference(V, allen_cahn_model, 2, 1e-4)
    assert runner.obstacle is None
    model = allen_cahn_model(V)
    fields = [paper_sine_initial_condition(V, seed=s) for s in (1, 2)]
    u = fd.Function(runner.batch_space)
    for b, f in enumerate(fields):
        u.dat.data_wo[runner.nodes[b]] = f.dat.data_ro
    expected = [model.energy_value(f) for f in fields]
    assert runner.energies(u) == pytest.approx(expected, rel=1e-13)


def test_where_batching_does_not_apply_it_says_so(messages):
    mesh = fd.PeriodicIntervalMesh(16, 2 * math.pi)
    P2 = fd.FunctionSpace(mesh, "CG", 2)
    assert "P1" in batching_obstacle(P2)
    quads = fd.FunctionSpace(fd.UnitSquareMesh(2, 2, quadrilateral=True), "CG", 1)
    assert "simplex" in batching_obstacle(quads)
    data = generate(P2, allen_cahn_model, 4, n_trajectories=2, n_frames=1)
    assert len(data) == 2
    assert any("one trajectory at a time" in m and "P1" in m for m in messages), messages


def test_a_batch_that_needs_halvings_is_redone_one_at_a_time(messages):
    """A step large enough for Newton to fail: the batch is abandoned, the frames are exact."""
    V = fd.FunctionSpace(fd.PeriodicIntervalMesh(32, 2 * math.pi), "CG", 1)
    kwargs = dict(n_trajectories=3, n_frames=2, frame_dt=0.05, substeps=1, seed=0)
    kwargs["initial_condition"] = paper_sine_initial_condition
    batched = generate(V, allen_cahn_model, 3, **kwargs)
    assert any("not as a batch" in m and "halving" in m for m in messages), messages
    single = generate(V, allen_cahn_model, 1, **kwargs)
    assert np.array_equal(values(batched), values(single))


def test_batch_sizes_and_default():
    assert batch_sizes(10, 8) == [5, 5]
    assert batch_sizes(7, 3) == [3, 2, 2]
    assert batch_sizes(4, 1) == [1, 1, 1, 1]
    assert batch_sizes(3, 100) == [3]
    assert default_batch(100, 256) == 32
    assert default_batch(5, 256) == 5
    assert default_batch(100, 100_000) == 1
    V = fd.FunctionSpace(fd.PeriodicIntervalMesh(8, 1.0), "CG", 1)
    with pytest.raises(ValueError, match="batch"):
        generate(V, allen_cahn_model, 0)
