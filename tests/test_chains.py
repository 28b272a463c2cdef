"""Microscopic chains: the paper's protocol (b = 1/24, linear co-moving coarse-graining, slow
steps, rejection rules), the KdV limit, Störmer–Verlet accuracy and reversibility, conservation
through the coarse-graining, the dissipative chain's energy law, seeds and MPI."""

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
    RejectedSampleError,
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
SMALL_SET = {"n_chain": 32, "t_end": 0.02, "frame_dt": 0.01, "max_wavenumber": 3}
TWO_PI = 2 * np.pi


def energy_error(traj):
    """Largest |H(t_k) - H(0)| over the saved times, relative to H(0)."""
    return float(np.max(np.abs(traj.energies - traj.energies[0])) / traj.energies[0])


@pytest.mark.parametrize("kind", ["fput", "fene"])
def test_stormer_verlet_energy_error_is_bounded_and_second_order(kind):
    slow_dt = RATE[kind]["frame_dt"] / 5
    errors = [
        energy_error(CHAINS[kind](seed=1, slow_dt=slow_dt, substeps=n, **RATE[kind]))
        for n in (50, 100)
    ]
    rate = math.log2(errors[0] / errors[1])
    assert errors[0] < 1e-4  # a small, bounded energy error
    assert errors[1] > 1e-12  # far above round-off: the rate is the integrator's
    assert rate == pytest.approx(2.0, abs=0.3)


def test_defaults_are_the_papers_protocol():
    fput = fput_chain(seed=0, t_end=0.01)
    eps = TWO_PI / 128
    # b = 1/24: c = 24 b = 1, alpha = a c = 1, a = 1
    assert fput.parameters["b"] == 1 / 24 and fput.parameters["a"] == 1.0
    assert 24 * fput.parameters["b"] == 1.0
    # 50 lab-time Verlet steps per slow step 1e-3, 10 slow steps per frame of 1e-2
    assert fput.dt == pytest.approx(1e-3 / eps**3 / 50, rel=1e-14)
    assert fput.lattice_times[1] == pytest.approx(500 * fput.dt, rel=1e-14)
    assert fput.shifts[1] == pytest.approx(eps * 1.0 * fput.lattice_times[1], rel=1e-12)
    assert fput.scale == pytest.approx(eps**2, rel=1e-15)
    full = fput_chain(seed=0)  # T = 1, 101 frames
    assert len(full.times) == 101 and full.times[-1] == pytest.approx(1.0)
    fene = fene_chain(seed=0)  # 209 particles, c = H = 1, slow step 5e-4, 51 frames of 5e-3
    eps = TWO_PI / 209
    assert fene.strains.shape == (51, 209) and fene.times[-1] == pytest.approx(0.25)
    assert fene.dt == pytest.approx(5e-4 / eps**3 / 50, rel=1e-14)
    assert fene.lattice_times[1] == pytest.approx(500 * fene.dt, rel=1e-14)
    assert np.abs(fene.strains).max() <= 0.9 * 50 * eps**2
    assert fene.parameters["max_strain_ratio"] == 0.9


def test_random_profile_has_three_distinct_modes_of_one_to_six_and_unit_std():
    rng = np.random.default_rng(0)
    seen = set()
    for _ in range(200):
        u = random_sine_profile(rng, 128)
        assert np.std(u) == pytest.approx(1.0, rel=1e-12) and abs(u.mean()) < 1e-14
        power = np.abs(np.fft.rfft(u)) / 128
        modes = np.flatnonzero(power > 1e-12)
        assert len(modes) == 3 and modes.min() >= 1 and modes.max() <= 6
        seen.update(modes.tolist())
    assert seen == {1, 2, 3, 4, 5, 6}
    with pytest.raises(ValueError, match="distinct"):
        random_sine_profile(rng, 128, max_wavenumber=2)


def _kdv(u0, t_end, *, a=1.0, b=1 / 24, steps=2000):
    """u_t + a u u_x + b u_xxx = 0 on [0, 2 pi): integrating-factor RK4, Fourier."""
    n = u0.size
    k = np.fft.rfftfreq(n, 1 / n)
    lin = 1j * b * k**3
    h = t_end / steps

    def rhs(w, t):
        u = np.fft.irfft(w * np.exp(lin * t), n=n)
        return -0.5j * a * k * np.fft.rfft(u * u) * np.exp(-lin * t)

    w, t = np.fft.rfft(u0), 0.0
    for _ in range(steps):
        k1 = rhs(w, t)
        k2 = rhs(w + h / 2 * k1, t + h / 2)
        k3 = rhs(w + h / 2 * k2, t + h / 2)
        k4 = rhs(w + h * k3, t + h)
        w, t = w + h / 6 * (k1 + 2 * k2 + 2 * k3 + k4), t + h
    return np.fft.irfft(w * np.exp(lin * t), n=n)


def test_fput_chain_follows_kdv_with_a_1_b_1_24_to_order_eps_squared():
    # In the co-moving slow frame the FPUT strains follow u_t + u u_x + u_xxx / 24 = 0 (a = 1,
    # b = 1/24: c = 24 b is the lattice's sound speed); the error is O(eps^2).
    profile = lambda x: np.sin(x) + 0.5 * np.cos(2 * x + 1.0)  # noqa: E731
    fine = np.arange(256) * TWO_PI / 256
    ref = np.fft.rfft(_kdv(profile(fine), 0.05)) / 256
    errors = []
    for n_chain in (32, 64, 128):
        xi = np.arange(n_chain) * TWO_PI / n_chain
        traj = fput_chain(u0=profile(xi), n_chain=n_chain, t_end=0.05, frame_dt=0.05)
        x = xi - traj.shifts[-1]  # particle n sits at eps n - eps c t
        k = np.arange(ref.size)
        weights = np.where((k == 0) | (k == 128), 1.0, 2.0)
        kdv_at_particles = np.real(np.exp(1j * np.outer(x, k)) @ (ref * weights))
        errors.append(np.abs(traj.strains[-1] / traj.eps**2 - kdv_at_particles).max())
    orders = np.log2(np.array(errors[:-1]) / np.array(errors[1:]))
    assert errors[-1] < 2e-3  # N = 128: 1.5e-3 of max |u| = 1.4
    assert np.all(orders > 1.8), (errors, orders)


@pytest.mark.parametrize("kind", ["fput", "fene"])
def test_paper_chains_conserve_energy_strain_and_momentum(kind):
    traj = CHAINS[kind](seed=5, **SHORT[kind])
    assert energy_error(traj) < 2e-6  # the paper's steps: c dt = 0.17 (FPUT), 0.37 (FENE)
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


def test_coarse_graining_is_the_co_moving_linear_interpolant():
    n_chain, length = 128, TWO_PI
    eps = length / n_chain
    xi = np.arange(n_chain) * eps

    def hat_profile(y):  # periodic, piecewise linear with kinks at the particles 10, 40, 90
        y = np.mod(y, length) / eps
        return np.interp(y, [0, 10, 40, 90, 128], [0.3, 2.0, -1.0, 0.5, 0.3])

    strain = eps**2 * hat_profile(xi)
    for shift in (0.0, 123.456, -0.3 * eps, 7 * eps):  # eps c t of late frames: many periods
        for n_points in (256, 200, 64):
            mesh = fd.PeriodicIntervalMesh(n_points, length)
            V = fd.FunctionSpace(mesh, "CG", 1)
            u = coarse_grain_to_mesh(strain, V, shift=shift, scale=eps**2, length=length)
            x = fd.Function(V).interpolate(fd.SpatialCoordinate(mesh)[0]).dat.data_ro
            # particle n sits at xi_n = eps n - shift: the profile, moved by -shift
            assert np.abs(u.dat.data_ro - hat_profile(x + shift)).max() < 1e-12
            # numpy.interp on the co-moving positions (the paper's coarse-graining)
            pos = np.mod(xi - shift, length)
            order = np.argsort(pos)
            ref = np.interp(x, pos[order], hat_profile(xi)[order], period=length)
            assert np.abs(u.dat.data_ro - ref).max() < 1e-12
            # With n_points a multiple of N every particle has the same weight: the mesh's
            # (trapezoidal) mass is the chain's, for any shift.
            if n_points % n_chain == 0:
                mass = fd.assemble(u * fd.dx)
                assert mass == pytest.approx(eps * strain.sum() / eps**2, rel=1e-13)
    # Not trigonometric: a mode between the grid points is not reproduced.
    wave = eps**2 * np.sin(40 * xi)
    V = fd.FunctionSpace(fd.PeriodicIntervalMesh(256, length), "CG", 1)
    u = coarse_grain_to_mesh(wave, V, shift=0.5 * eps, scale=eps**2)
    x = np.arange(256) * length / 256
    assert np.abs(np.sort(u.dat.data_ro) - np.sort(np.sin(40 * (x + 0.5 * eps)))).max() > 0.1
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


def test_fene_samples_beyond_nine_tenths_of_R_are_rejected():
    n_chain = 209
    xi = np.arange(n_chain) * 2 * np.pi / n_chain
    instant = {"t_end": 1e-6, "frame_dt": 1e-6, "slow_dt": 1e-6, "substeps": 1}  # c dt = 0.04
    with pytest.raises(BondBreakError, match=r"0\.9 R .*rejected"):
        fene_chain(u0=45.5 * np.sin(xi), **instant)  # |r / R| = 0.91
    assert (
        fene_chain(u0=44.5 * np.sin(xi), **instant).strains.max()
        > 0.88 * 50 * (2 * np.pi / 209) ** 2
    )
    fene_chain(u0=45.5 * np.sin(xi), max_strain_ratio=0.95, **instant)
    with pytest.raises(BondBreakError):  # the strain grows near R: rejected within a frame
        fene_chain(u0=43.0 * np.sin(xi), t_end=0.005)
    with pytest.raises(BondBreakError, match="maximal bond extension"):
        stormer_verlet(np.full(8, 2.0), np.zeros(8), FENEBond(1.0, 1.0), dt=0.1, n_steps=1)
    # The generator resamples from the trajectory's own stream, and says how often it did.
    params = {"n_chain": 64, "t_end": 0.005, "frame_dt": 0.005, "amplitude": 19.0}
    ds = generate_chain_dataset(
        "fene", n_trajectories=6, seed=0, n_points=64, progress=False, **params
    )
    resampled = [t.metadata["resampled"] for t in ds]
    assert sum(resampled) > 0 and ds.metadata["resampled"] == sum(resampled)
    assert np.abs(to_grid_arrays(ds)).max() <= 45.0  # u = r / eps^2 <= 0.9 R / eps^2 = 45
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


def test_fput_samples_beyond_max_abs_u_20_are_rejected():
    xi = np.arange(128) * 2 * np.pi / 128
    with pytest.raises(RejectedSampleError, match="max \\|u\\| exceeded 20"):
        fput_chain(u0=20.5 * np.sin(xi), t_end=0.01)
    assert np.abs(fput_chain(u0=19.5 * np.sin(xi), t_end=0.01).strains[0]).max() > 0
    params = {"n_chain": 64, "t_end": 0.01, "amplitude": 9.0}
    ds = generate_chain_dataset(
        "fput", n_trajectories=6, seed=0, n_points=64, progress=False, **params
    )
    resampled = [t.metadata["resampled"] for t in ds]
    assert sum(resampled) > 0 and ds.metadata["resampled"] == sum(resampled)
    assert np.abs(to_grid_arrays(ds)).max() <= 20.0
    assert not issubclass(RejectedSampleError, BondBreakError)
    assert issubclass(BondBreakError, RejectedSampleError)


@pytest.mark.parametrize("kind", ["fput", "fene", "dissipative"])
def test_datasets_are_reproducible_from_the_seed(kind):
    extra = {"temperature": 0.2} if kind == "dissipative" else {}
    params = dict(SMALL_SET, **extra)

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
    with pytest.raises(ValueError, match="multiple of slow_dt"):
        fput_chain(seed=0, t_end=0.015, frame_dt=0.0015)
    with pytest.raises(ValueError, match="unstable"):
        fput_chain(seed=0, t_end=0.01, substeps=5)


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
