"""Microscopic chains: Störmer–Verlet accuracy and reversibility, conservation through the
coarse-graining, the dissipative chain's energy law, FENE rejection, seeds and MPI."""

from __future__ import annotations

import math

import firedrake as fd
import numpy as np
import pytest

from femeso.data import to_grid_arrays
from femeso.data.chains import (
    BondBreakError,
    FENEBond,
    FPUTBond,
    coarse_grain_to_mesh,
    dissipative_chain,
    fene_chain,
    fput_chain,
    generate_chain_dataset,
    random_sine_profile,
    stormer_verlet,
)

CHAINS = {"fput": fput_chain, "fene": fene_chain}
# Short runs of the paper's chains (N = 128 / 209): a few frames of slow time.
SHORT = {"fput": {"t_end": 0.04, "frame_dt": 0.01}, "fene": {"t_end": 0.02, "frame_dt": 0.005}}
# Windows of 20 frames for the rate: the Verlet energy error oscillates; its envelope scales.
RATE = {"fput": {"t_end": 0.1, "frame_dt": 0.005}, "fene": {"t_end": 0.05, "frame_dt": 0.0025}}
SMALL_SET = {"n_chain": 32, "t_end": 0.02, "frame_dt": 0.01, "courant": 0.4, "max_wavenumber": 3}


def energy_error(traj):
    """Largest |H(t_k) - H(0)| over the saved times, relative to H(0)."""
    return float(np.max(np.abs(traj.energies - traj.energies[0])) / traj.energies[0])


@pytest.mark.parametrize("kind", ["fput", "fene"])
def test_stormer_verlet_energy_error_is_bounded_and_second_order(kind):
    errors = [
        energy_error(CHAINS[kind](seed=1, courant=courant, **RATE[kind])) for courant in (0.2, 0.1)
    ]
    rate = math.log2(errors[0] / errors[1])
    assert errors[0] < 1e-4  # c dt = 0.2: a small, bounded energy error
    assert errors[1] > 1e-12  # far above round-off: the rate is the integrator's
    assert rate == pytest.approx(2.0, abs=0.3)


@pytest.mark.parametrize("kind", ["fput", "fene"])
def test_paper_chains_conserve_energy_strain_and_momentum(kind):
    traj = CHAINS[kind](seed=5, **SHORT[kind])
    assert energy_error(traj) < 1e-6  # default c dt = 0.1
    scale = np.abs(traj.strains).sum(axis=1).max()
    assert np.abs(traj.strains.sum(axis=1) - traj.strains[0].sum()).max() < 1e-13 * scale
    pscale = np.abs(traj.momenta).sum(axis=1).max()
    assert np.abs(traj.momenta.sum(axis=1)).max() < 1e-13 * pscale
    # The initial strain velocities are the right-travelling wave: dr/dt = -c eps^3 u0'.
    eps, c = traj.eps, 24 * traj.parameters["b"]
    u0 = traj.strains[0] / eps**2
    xi = np.arange(len(u0)) * eps
    k = np.fft.rfftfreq(len(u0), d=eps) * 2 * np.pi
    du0 = np.fft.irfft(1j * k * np.fft.rfft(u0), n=len(u0))
    rate = np.roll(traj.momenta[0], -1) - traj.momenta[0]
    assert np.abs(rate + c * eps**3 * du0).max() < 1e-12 * c * eps**3 * np.abs(du0).max()
    assert np.std(u0) == pytest.approx(1.0, rel=1e-12) and xi[-1] < 2 * np.pi


@pytest.mark.parametrize(
    "bond",
    [FPUTBond(stiffness=1.44, alpha=1.2), FENEBond(stiffness=1.44, max_strain=50 * 0.03**2)],
    ids=["fput", "fene"],
)
def test_stormer_verlet_is_time_reversible(bond):
    rng = np.random.default_rng(2)
    eps = 2 * np.pi / 128
    r0 = eps**2 * random_sine_profile(rng, 128, amplitude=3.0)
    p0 = eps**2 * np.cumsum(rng.standard_normal(128) * 0.1)
    p0 -= p0.mean()
    r1, p1 = stormer_verlet(r0, p0, bond, dt=0.2, n_steps=3000)
    assert np.abs(r1 - r0).max() > 1e-2 * np.abs(r0).max()  # it did move
    r2, p2 = stormer_verlet(r1, -p1, bond, dt=0.2, n_steps=3000)
    assert np.abs(r2 - r0).max() <= 1e-10 * np.abs(r0).max()
    assert np.abs(-p2 - p0).max() <= 1e-10 * np.abs(p0).max()


def test_coarse_graining_is_the_co_moving_trigonometric_interpolant():
    n_chain, length = 128, 2 * np.pi
    eps = length / n_chain
    xi = np.arange(n_chain) * eps
    strain = eps**2 * (0.3 + np.sin(3 * xi) + 0.5 * np.cos(7 * xi + 1.0))
    shift = 123.456  # eps c t of a late frame, many periods
    for n_points in (256, 128, 64):
        mesh = fd.PeriodicIntervalMesh(n_points, length)
        V = fd.FunctionSpace(mesh, "CG", 1)
        u = coarse_grain_to_mesh(strain, V, shift=shift, scale=eps**2, length=length)
        x = fd.Function(V).interpolate(fd.SpatialCoordinate(mesh)[0]).dat.data_ro
        y = x + shift  # particle n sits at xi_n = eps n - shift
        exact = 0.3 + np.sin(3 * y) + 0.5 * np.cos(7 * y + 1.0)
        assert np.abs(u.dat.data_ro - exact).max() < 1e-10
        # The trapezoidal rule is exact on the interpolant: mesh mass = chain mass.
        mass = fd.assemble(u * fd.dx)
        assert mass == pytest.approx(eps * strain.sum() / eps**2, rel=1e-13)
    with pytest.raises(ValueError, match="scalar P1"):
        coarse_grain_to_mesh(strain, fd.FunctionSpace(mesh, "DG", 0))


def test_coarse_grained_dataset_conserves_chain_mass_and_energy():
    ds = generate_chain_dataset(
        "fput", n_trajectories=2, seed=1, n_points=64, progress=False, **SMALL_SET
    )
    for traj in ds:
        masses = np.array([fd.assemble(u * fd.dx) for u in traj.states])
        assert np.abs(masses - masses[0]).max() < 1e-11 * np.abs(masses).max() + 1e-14
        energies = np.array(traj.metadata["chain_energy"])
        assert np.abs(energies - energies[0]).max() < 1e-4 * energies[0]
    assert ds.metadata["kind"] == "fput" and ds.metadata["parameters"]["n_chain"] == 32
    assert to_grid_arrays(ds).shape == (2, 3, 64)


@pytest.mark.parametrize("potential", ["quartic", "double_well"])
def test_dissipative_chain_energy_decreases_and_mass_is_conserved(potential):
    traj = dissipative_chain(seed=3, potential=potential, mean=0.3, t_end=0.05)
    E = traj.energies
    assert np.all(np.diff(E) <= 0.0)
    assert E[-1] < 0.5 * E[0]
    total = traj.strains.sum(axis=1)
    assert np.abs(total - total[0]).max() < 1e-13 * np.abs(traj.strains).sum(axis=1).max()
    assert total[0] == pytest.approx(0.3 * traj.strains.shape[1], rel=1e-12)
    # The coarse-grained field carries the same mass: eps * sum r.
    V = fd.FunctionSpace(fd.PeriodicIntervalMesh(256, 2 * np.pi), "CG", 1)
    u = coarse_grain_to_mesh(traj.strains[-1], V)
    assert fd.assemble(u * fd.dx) == pytest.approx(traj.eps * total[0], rel=1e-12)


def test_dissipative_chain_with_noise_conserves_mass_and_is_seeded():
    a = dissipative_chain(seed=3, temperature=0.5, mean=0.3, t_end=0.01)
    b = dissipative_chain(seed=3, temperature=0.5, mean=0.3, t_end=0.01)
    c = dissipative_chain(seed=4, temperature=0.5, mean=0.3, t_end=0.01)
    total = a.strains.sum(axis=1)
    assert np.abs(total - total[0]).max() < 1e-12 * np.abs(a.strains).sum(axis=1).max()
    assert np.array_equal(a.strains, b.strains)
    assert not np.allclose(a.strains[-1], c.strains[-1])
    cold = dissipative_chain(seed=3, temperature=0.0, mean=0.3, t_end=0.01)
    assert np.abs(a.strains[-1] - cold.strains[-1]).max() > 1e-3  # the noise acts


def test_fene_samples_reaching_R_are_rejected():
    n_chain = 209
    xi = np.arange(n_chain) * 2 * np.pi / n_chain
    with pytest.raises(BondBreakError, match="reached R"):
        fene_chain(u0=55.0 * np.sin(xi), t_end=0.005, frame_dt=0.005)
    with pytest.raises(BondBreakError, match="maximal bond extension"):
        stormer_verlet(np.full(8, 2.0), np.zeros(8), FENEBond(1.0, 1.0), dt=0.1, n_steps=1)
    # The generator resamples from the trajectory's own stream, and says how often it did.
    params = {"n_chain": 64, "t_end": 0.005, "frame_dt": 0.005, "amplitude": 25.0}
    ds = generate_chain_dataset(
        "fene", n_trajectories=6, seed=0, n_points=64, progress=False, **params
    )
    resampled = [t.metadata["resampled"] for t in ds]
    assert sum(resampled) > 0 and ds.metadata["resampled"] == sum(resampled)
    assert np.abs(to_grid_arrays(ds)).max() < 50.0  # u = r / eps^2 < R / eps^2 = 50
    with pytest.raises(BondBreakError, match="resampled"):
        generate_chain_dataset(
            "fene",
            n_trajectories=1,
            seed=0,
            n_points=64,
            progress=False,
            max_resamples=2,
            **dict(params, amplitude=80.0),
        )


@pytest.mark.parametrize("kind", ["fput", "fene", "dissipative"])
def test_datasets_are_reproducible_from_the_seed(kind):
    extra = {"temperature": 0.2} if kind == "dissipative" else {}
    params = dict(SMALL_SET, **extra)
    if kind == "dissipative":
        params.pop("courant")

    def make(seed, n=3, batch_size=64):
        ds = generate_chain_dataset(
            kind,
            n_trajectories=n,
            seed=seed,
            n_points=48,
            progress=False,
            batch_size=batch_size,
            **params,
        )
        return to_grid_arrays(ds), ds

    a, ds = make(7)
    b, _ = make(7, batch_size=1)
    assert np.array_equal(a, b)  # batches do not change the chains
    assert np.array_equal(make(7, n=2)[0], a[:2])  # trajectory i depends on (seed, i) only
    c, _ = make(8)
    assert np.abs(a - c).max() > 1e-2
    assert ds.metadata["seed"] == 7 and ds[1].metadata["index"] == 1
    assert len(ds[0].metadata["chain_energy"]) == len(ds[0].times) == 3


def test_generator_rejects_bad_parameters():
    with pytest.raises(ValueError, match="unknown parameter"):
        generate_chain_dataset("fput", n_trajectories=1, seed=0, progress=False, alpah=1.0)
    with pytest.raises(ValueError, match="kind must be"):
        generate_chain_dataset("toda", n_trajectories=1, seed=0)
    with pytest.raises(ValueError, match="multiple of frame_dt"):
        fput_chain(seed=0, t_end=0.015, frame_dt=0.01)


@pytest.mark.parallel(nprocs=2)
@pytest.mark.parametrize("kind", ["fput", "dissipative"])
def test_parallel_dataset_equals_serial(kind):
    assert fd.COMM_WORLD.size == 2
    params = dict(SMALL_SET)
    if kind == "dissipative":
        params = {"n_chain": 32, "t_end": 0.02, "frame_dt": 0.01, "temperature": 0.2}
    common = {"n_trajectories": 3, "seed": 5, "n_points": 40, "progress": False, **params}
    world = generate_chain_dataset(kind, comm=fd.COMM_WORLD, **common)
    serial = generate_chain_dataset(kind, comm=fd.COMM_SELF, **common)
    assert world.mesh.comm.size == 2 and serial.mesh.comm.size == 1
    a, b = to_grid_arrays(world), to_grid_arrays(serial)
    assert np.abs(a - b).max() <= 1e-14 * np.abs(b).max()
    for tw, ts in zip(world, serial, strict=True):
        assert tw.metadata == ts.metadata
        assert np.array_equal(tw.times, ts.times)
