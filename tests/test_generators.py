"""Reference PDE generators: protocols, reproducibility, conservation and convergence."""

import math

import firedrake as fd
import numpy as np
import pytest

import femeso
from femeso.data import load_dataset, save_dataset
from femeso.data.generators import (
    allen_cahn_model,
    cahn_hilliard_model,
    generate_dataset,
    kdv_model,
    paper_sine_initial_condition,
)


def ac_1d(n_cells=64):
    mesh = fd.PeriodicIntervalMesh(n_cells, 2 * math.pi)
    return fd.FunctionSpace(mesh, "CG", 1)


def values(dataset):
    return np.array([[s.dat.data_ro.copy() for s in t.states] for t in dataset.trajectories])


def test_paper_initial_condition_spans_exactly_minus_one_to_one():
    V = ac_1d(256)
    for seed in range(5):
        u = paper_sine_initial_condition(V, seed=seed)
        assert u.dat.data_ro.min() == pytest.approx(-1.0, abs=1e-15)
        assert u.dat.data_ro.max() == pytest.approx(1.0, abs=1e-15)


def test_allen_cahn_generator_is_reproducible_and_dissipative():
    V = ac_1d()

    def make(seed):
        return generate_dataset(
            V,
            allen_cahn_model,
            n_trajectories=2,
            n_frames=4,
            frame_dt=1e-3,
            seed=seed,
            substeps=2,
            initial_condition=paper_sine_initial_condition,
            name="allen_cahn_1d",
            progress=False,
        )

    a, b, c = make(3), make(3), make(4)
    assert len(a.trajectories) == 2
    assert np.allclose(a.trajectories[0].times, np.arange(5) * 1e-3)
    assert np.array_equal(values(a), values(b))
    assert not np.allclose(values(a), values(c))
    for t in a.trajectories:
        energies = np.array(t.metadata["reference_energy"])
        assert np.all(np.diff(energies) < 0)
        assert t.metadata["reference_dt"] == pytest.approx(5e-4)


def final_state(V, substeps, refine=0, n_frames=4, frame_dt=2e-3):
    data = generate_dataset(
        V,
        allen_cahn_model,
        n_trajectories=1,
        n_frames=n_frames,
        frame_dt=frame_dt,
        seed=7,
        substeps=substeps,
        refine=refine,
        initial_condition=paper_sine_initial_condition,
        progress=False,
    )
    return data.trajectories[0].states[-1]


def test_generator_converges_in_time_at_second_order():
    V = ac_1d()
    reference = final_state(V, 32)
    errors = [fd.errornorm(reference, final_state(V, s)) for s in (1, 2, 4)]
    rates = np.log2(np.array(errors[:-1]) / np.array(errors[1:]))
    assert np.all(rates > 1.8), (errors, rates)


def test_generator_converges_under_mesh_refinement():
    V = ac_1d(32)
    reference = final_state(V, 4, refine=4)
    errors = [fd.errornorm(reference, final_state(V, 4, refine=r)) for r in (0, 1, 2)]
    rates = np.log2(np.array(errors[:-1]) / np.array(errors[1:]))
    assert np.all(rates > 1.7), (errors, rates)


def test_cahn_hilliard_flory_huggins_degenerate_mobility_on_l_shape(tmp_path):
    V = fd.FunctionSpace(femeso.load_mesh("l_shape"), "CG", 1)

    def model(space):
        return cahn_hilliard_model(
            space, kappa=1e-3, density="flory_huggins", mobility="degenerate"
        )

    data = generate_dataset(
        V,
        model,
        n_trajectories=1,
        n_frames=3,
        frame_dt=2e-3,
        seed=1,
        substeps=2,
        initial_condition=lambda V, seed: femeso.random_smooth_field(
            V, seed=seed, amplitude=0.1, mean=0.5, max_wavenumber=6
        ),
        name="cahn_hilliard",
        progress=False,
    )
    traj = data.trajectories[0]
    masses = [fd.assemble(s * fd.dx) for s in traj.states]
    assert np.max(np.abs(np.array(masses) - masses[0])) < 1e-13
    assert np.all(np.diff(traj.metadata["reference_energy"]) < 0)
    path = save_dataset(tmp_path / "ch.h5", data)
    again = load_dataset(path)
    assert np.array_equal(values(again), values(data))
    assert again.trajectories[0].metadata["generator"] == "cahn_hilliard"


def test_kdv_generator_conserves_energy():
    V = ac_1d(96)
    data = generate_dataset(
        V,
        kdv_model,
        n_trajectories=1,
        n_frames=5,
        frame_dt=1e-3,
        seed=2,
        substeps=2,
        initial_condition=lambda V, seed: femeso.random_smooth_field(V, seed=seed, amplitude=0.5),
        name="kdv",
        progress=False,
    )
    energies = np.array(data.trajectories[0].metadata["reference_energy"])
    assert np.max(np.abs(energies - energies[0])) <= 1e-9 * abs(energies[0])


def test_bad_generator_arguments_are_rejected():
    V = ac_1d(8)
    with pytest.raises(ValueError, match="n_trajectories"):
        generate_dataset(
            V, allen_cahn_model, n_trajectories=0, n_frames=1, frame_dt=1e-3, seed=0, progress=False
        )
    with pytest.raises(ValueError, match="unknown density"):
        allen_cahn_model(V, density="quartic")


def test_paper_initial_condition_in_two_dimensions():
    mesh = fd.PeriodicSquareMesh(32, 32, 2 * math.pi)
    u = paper_sine_initial_condition(fd.FunctionSpace(mesh, "CG", 1), seed=3)
    assert u.dat.data_ro.min() == pytest.approx(-1.0, abs=1e-15)
    assert u.dat.data_ro.max() == pytest.approx(1.0, abs=1e-15)


def generate_small(comm):
    mesh = fd.PeriodicIntervalMesh(48, 2 * math.pi, comm=comm)
    V = fd.FunctionSpace(mesh, "CG", 1)
    data = generate_dataset(
        V,
        allen_cahn_model,
        n_trajectories=2,
        n_frames=3,
        frame_dt=1e-3,
        seed=11,
        substeps=2,
        initial_condition=paper_sine_initial_condition,
        progress=False,
    )
    return data, V


@pytest.mark.parallel(nprocs=2)
def test_generator_under_mpi_matches_a_serial_run(tmp_path_factory):
    """Distributed generation gives the same frames as one process (compared in L2 through
    femeso's own file format, written by 2 ranks and read by each rank alone)."""
    data, _ = generate_small(fd.COMM_WORLD)
    serial, V_serial = generate_small(fd.COMM_SELF)
    path = fd.COMM_WORLD.bcast(
        str(tmp_path_factory.mktemp("gen") / "ac.h5") if fd.COMM_WORLD.rank == 0 else None
    )
    save_dataset(path, data)
    again = load_dataset(path, comm=fd.COMM_SELF)
    for t_par, t_ser in zip(again.trajectories, serial.trajectories, strict=True):
        for a, b in zip(t_par.states, t_ser.states, strict=True):
            b_on_a = fd.Function(a.function_space()).interpolate(b)
            assert fd.errornorm(b_on_a, a) < 1e-10 * (1 + fd.norm(b_on_a))


@pytest.mark.parametrize("dim,points", [(1, 256), (2, 128 * 128)])
def test_paper_allen_cahn_protocol(dim, points):
    from femeso.data import paper_allen_cahn, to_grid_arrays

    data = paper_allen_cahn(dim, n_trajectories=1, seed=0, n_frames=2, substeps=1, progress=False)
    traj = data.trajectories[0]
    assert data.space.dim() == points
    assert np.allclose(traj.times, [0.0, 1e-3, 2e-3])
    assert traj.metadata["parameters"]["epsilon"] == 0.1
    grid = to_grid_arrays(data)
    assert grid.shape[:2] == (1, 3) and grid[0, 0].min() == pytest.approx(-1.0)
    assert np.all(np.diff(traj.metadata["reference_energy"]) < 0)


def test_initial_fields_drawn_per_trajectory_from_declared_ranges():
    """[data] mean/amplitude/wavenumber = [lo, hi]: each trajectory its own, seeded, in range."""
    from femeso.config import ConfigError, validate
    from femeso.jobs import build_space, generate_trajectories, initial_field_settings

    ranges = {"mean": [0.3, 0.7], "amplitude": [0.05, 0.2], "wavenumber": [2.0, 6.0]}
    config = validate({"data": {**ranges, "burn_in": 0, "substeps": 1}}, "job.toml")
    drawn = [initial_field_settings(config.data, seed) for seed in range(40)]
    for key, (lo, hi) in ranges.items():
        values = np.array([d[key] for d in drawn])
        assert np.all((values >= lo) & (values <= hi)), key
        assert values.max() - values.min() > 0.5 * (hi - lo), key  # the range is explored
    assert drawn[3] == initial_field_settings(config.data, 3)  # a trajectory's seed fixes it
    # the generated fields carry the drawn mean and amplitude: max |u0 - mean| = amplitude
    space = build_space(config)
    data = generate_trajectories(config, space, count=2, frames=1, seed=11, progress=False)
    for i, trajectory in enumerate(data.trajectories):
        setting = initial_field_settings(config.data, 11 + i)
        u0 = trajectory.states[0].dat.data_ro
        assert abs(np.abs(u0 - setting["mean"]).max() - setting["amplitude"]) < 1e-12
    # a number keeps every trajectory the same; a bad range is refused with one line
    fixed = validate({"data": {"mean": 0.4}})
    assert {initial_field_settings(fixed.data, s)["mean"] for s in range(5)} == {0.4}
    for bad in ([0.7, 0.3], [0.1, 0.2, 0.3]):
        with pytest.raises(ConfigError, match="data.mean must be a number or two numbers"):
            validate({"data": {"mean": bad}})
    with pytest.raises(ConfigError, match="data.amplitude must be a list of positive numbers"):
        validate({"data": {"amplitude": [-0.1, 0.2]}})


def test_burn_in_drawn_per_trajectory_keeps_the_frames_of_the_whole_trajectory():
    """[data] burn_in = [lo, hi]: trajectory i keeps frames n_i .. n_i + frames of the trajectory
    its seed makes (n_i its own seeded draw); test data (earliest start) drop lo."""
    from femeso.config import ConfigError, validate
    from femeso.jobs import build_space, burn_in_frames, generate_trajectories

    base = {
        "mesh": {"name": "periodic_interval", "cells": 32},
        "data": {"equation": "allen_cahn", "substeps": 1, "frame_dt": 0.05},
    }
    lo, hi, frames, count = 1, 5, 2, 4
    ranged = validate({**base, "data": {**base["data"], "burn_in": [lo, hi]}}, "job.toml")
    whole = validate({**base, "data": {**base["data"], "burn_in": 0}}, "job.toml")
    drops = [burn_in_frames(ranged.data, 7 + i) for i in range(count)]
    assert all(lo <= n <= hi for n in drops) and len(set(drops)) > 1, drops
    assert drops[2] == burn_in_frames(ranged.data, 9)  # a trajectory's seed fixes it
    space = build_space(ranged)
    data = generate_trajectories(ranged, space, count=count, frames=frames, seed=7, progress=False)
    full = generate_trajectories(
        whole, space, count=count, frames=frames + max(drops), seed=7, progress=False
    )
    for n, kept, reference in zip(drops, data.trajectories, full.trajectories, strict=True):
        assert len(kept.states) == frames + 1 and kept.metadata["burn_in_frames"] == n
        assert np.allclose(kept.times, reference.times[n : n + frames + 1], rtol=0, atol=1e-14)
        for a, b in zip(kept.states, reference.states[n : n + frames + 1], strict=True):
            assert np.allclose(a.dat.data_ro, b.dat.data_ro, rtol=0, atol=1e-12)
    earliest = generate_trajectories(
        ranged, space, count=1, frames=frames, seed=7, progress=False, earliest_start=True
    )
    assert earliest.trajectories[0].metadata["burn_in_frames"] == lo
    assert np.allclose(earliest.trajectories[0].times, full.trajectories[0].times[lo : lo + 3])
    for bad in ([3, 1], [1.5, 2], [-1, 2], [1, 2, 3]):
        with pytest.raises(ConfigError, match="data.burn_in must be"):
            validate({"data": {"burn_in": bad}}, "job.toml")
