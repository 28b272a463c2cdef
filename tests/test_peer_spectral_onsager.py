"""The paper's spectral Onsager class as a peer: structure on random models, training, rollouts."""

import math

import firedrake as fd
import numpy as np
import pytest
import torch

from femeso.data.trajectories import Dataset, TrajectoryData
from femeso.peers import peer_class
from femeso.peers.base import FitSettings, PeerStepper, fit
from femeso.peers.nodal import NodalLayout
from femeso.peers.spectral_onsager import SpectralOnsagerPeer

MESHES = {
    "1d-even": lambda: fd.PeriodicIntervalMesh(64, 2 * np.pi),
    "1d-odd": lambda: fd.PeriodicIntervalMesh(63, 2 * np.pi),
    "2d-quads": lambda: fd.PeriodicRectangleMesh(12, 8, 2 * np.pi, 4.0, quadrilateral=True),
    "2d-odd-triangles": lambda: fd.PeriodicRectangleMesh(7, 5, 3.0, 2 * np.pi),
}


@pytest.fixture(scope="module")
def layouts():
    cache = {}

    def get(name):
        if name not in cache:
            cache[name] = NodalLayout(fd.FunctionSpace(MESHES[name](), "CG", 1))
        return cache[name]

    return get


def random_peer(layout, dt=1e-3, seed=0, **options):
    """A peer with every parameter random (multipliers, a, b and the density MLP)."""
    torch.manual_seed(seed)
    peer = SpectralOnsagerPeer(layout, dt, **options)
    with torch.no_grad():
        peer.theta_m.normal_()
        peer.theta_w.normal_()
        peer.raw_a.normal_()
        peer.raw_b.normal_()
        for p in peer.density.parameters():
            p.normal_()
    return peer


def states(layout, batch=3, seed=1):
    return torch.randn(batch, layout.n, dtype=torch.float64, generator=torch.manual_seed(seed))


def test_grid_of_the_layouts(layouts):
    assert layouts("1d-even").grid_shape == (64,)
    assert layouts("2d-quads").grid_shape == (8, 12)
    assert layouts("2d-odd-triangles").grid_shape == (5, 7)


@pytest.mark.parametrize("mesh", list(MESHES))
def test_variational_derivative_is_the_energy_gradient(layouts, mesh):
    peer = random_peer(layouts(mesh))
    u = states(peer.layout).requires_grad_(True)
    (gradient,) = torch.autograd.grad(peer.energy(u).sum(), u)
    mu = peer.variational_derivative(u)
    error = torch.linalg.norm(gradient / peer.cell - mu) / torch.linalg.norm(mu)
    assert error < 1e-10


@pytest.mark.parametrize("mesh", list(MESHES))
def test_w_does_no_work_and_m_dissipates(layouts, mesh):
    peer = random_peer(layouts(mesh))
    n = peer.layout.n
    with torch.no_grad():
        eye = torch.eye(n, dtype=torch.float64)
        m_matrix, w_matrix = peer.apply_m(eye).T, peer.apply_w(eye).T
        scale_m, scale_w = m_matrix.abs().max(), w_matrix.abs().max()
        assert torch.linalg.norm(w_matrix + w_matrix.T) <= 1e-13 * n * scale_w
        assert torch.linalg.norm(m_matrix - m_matrix.T) <= 1e-13 * n * scale_m
        assert torch.linalg.eigvalsh(m_matrix).min() >= -1e-12 * n * scale_m
    u = states(peer.layout)
    mu = peer.variational_derivative(u).detach()
    with torch.no_grad():
        work_w = (mu * peer.apply_w(mu)).sum(dim=1)
        work_m = (mu * peer.apply_m(mu)).sum(dim=1)
    assert torch.all(work_w.abs() <= 1e-12 * (mu**2).sum(dim=1) * peer.theta_w.abs().max())
    assert torch.all(work_m > 0)
    # The rate is grad V . du/dt (autograd) and equals -h^d <mu, M mu>.
    u.requires_grad_(True)
    (gradient,) = torch.autograd.grad(peer.energy(u).sum(), u)
    rate = peer.energy_rate(u).detach()
    assert torch.all(rate < 0)
    np.testing.assert_allclose(rate, (gradient * peer.velocity(u)).sum(dim=1).detach(), rtol=1e-9)
    np.testing.assert_allclose(rate, -peer.cell * work_m, rtol=1e-9)


@pytest.mark.parametrize("mesh", ["1d-even", "2d-quads"])
def test_small_euler_steps_decrease_the_energy(layouts, mesh):
    """Explicit Euler at dt = 1e-7 on random dissipative models: V drops by dt * dV/dt."""
    peer = random_peer(layouts(mesh), dt=1e-7)
    u = states(peer.layout, batch=4)
    with torch.no_grad():
        drop = peer.energy(peer(u)) - peer.energy(u)
        predicted = peer.dt * peer.energy_rate(u)
    assert torch.all(drop < 0)
    np.testing.assert_allclose(drop / predicted, 1.0, atol=1e-2)


def test_mass_is_conserved_only_when_asked(layouts):
    layout = layouts("1d-even")
    u = states(layout) + 0.5
    free = random_peer(layout, dt=1e-4)
    with torch.no_grad():
        m0 = free.multipliers()[0][0, 0]
        change = free(u).sum(dim=1) - u.sum(dim=1)
        mu_sum = free.variational_derivative(u).sum(dim=1)
        assert m0 > 0 and free.multipliers()[1][0, 0] == 0
        np.testing.assert_allclose(change, -free.dt * m0 * mu_sum, rtol=1e-8)
        assert torch.all(change.abs() > 1e-6)
    kept = random_peer(layout, dt=1e-4, conserve_mass=True)
    with torch.no_grad():
        assert kept.multipliers()[0][0, 0] == 0
        change = kept(u).sum(dim=1) - u.sum(dim=1)
        assert torch.all(change.abs() <= 1e-12 * u.abs().sum(dim=1))


def test_heat_equation_step_is_exact_on_a_fourier_mode(layouts):
    """F = 0, a = 0, M = 1, W = 0: u_t = b u_xx; one step multiplies cos(3x) by 1 - dt b 9."""
    peer = random_peer(layouts("1d-even"), dt=1e-3)
    with torch.no_grad():
        peer.density[-1].weight.zero_()
        peer.density[-1].bias.zero_()
        peer.raw_a.fill_(-800.0)
        peer.theta_m.fill_(1.0)
        peer.theta_w.zero_()
    assert peer.a.item() == 0.0
    x = torch.from_numpy(peer.layout.positions[:, 0])
    u = torch.cos(3 * x + 0.4)[None, :]
    with torch.no_grad():
        out = peer(u)
    factor = 1 - peer.dt * peer.b.item() * 9
    np.testing.assert_allclose(out, factor * u, rtol=0, atol=1e-13)


@pytest.mark.parametrize(
    ("mesh", "mode"),
    [("1d-even", (0, 5)), ("2d-quads", (3, 2)), ("2d-quads", (3, 0)), ("2d-quads", (2, 6))],
)
def test_linear_step_on_a_fourier_mode_with_transport(layouts, mesh, mode):
    """F = 0, random a, b, M, W: the mode's complex amplitude gets 1 - dt (M + i W)(a + b k^2).

    Modes (k_y, k_x) index the half spectrum; k_x = 0 and k_x = 6 (Nyquist of 12) are the
    columns where ``multipliers()`` symmetrises M and antisymmetrises W.
    """
    peer = random_peer(layouts(mesh), dt=1e-3)
    with torch.no_grad():
        peer.density[-1].weight.zero_()
        peer.density[-1].bias.zero_()
    jy, jx = mode
    positions = peer.layout.positions
    kx = 2 * np.pi * jx / peer.layout.periods[0]
    ky = 2 * np.pi * jy / peer.layout.periods[1] if positions.shape[1] == 2 else 0.0
    phase = kx * positions[:, 0] + (ky * positions[:, 1] if positions.shape[1] == 2 else 0.0)
    wave = np.exp(1j * (phase + 0.7))
    with torch.no_grad():
        m, w = (t[jy, jx].item() for t in peer.multipliers())
        gain = 1 - peer.dt * (m + 1j * w) * (peer.a.item() + peer.b.item() * (kx**2 + ky**2))
        out = peer(torch.from_numpy(wave.real)[None, :])[0].numpy()
    assert abs(w) > 0.1
    np.testing.assert_allclose(out, (gain * wave).real, rtol=0, atol=1e-12)


def test_substeps_are_euler_steps_of_the_smaller_step(layouts):
    layout = layouts("1d-odd")
    half = random_peer(layout, dt=5e-4)
    two = SpectralOnsagerPeer(layout, 1e-3, substeps=2)
    two.load_state_dict(half.state_dict())
    u = states(layout)
    with torch.no_grad():
        np.testing.assert_allclose(two(u), half(half(u)), rtol=1e-13, atol=1e-13)


def test_training_flows_through_the_density_derivative(layouts):
    peer = random_peer(layouts("1d-even"), dt=1e-4)
    u = states(peer.layout)
    peer(u).pow(2).sum().backward()
    # Every parameter of F but the last bias (a constant of V, which no dynamics sees).
    density = [p for name, p in peer.density.named_parameters() if name != "4.bias"]
    assert all(p.grad is not None and p.grad.abs().max() > 0 for p in density)
    assert peer.density[-1].bias.grad is None


def heat_data(layout, space, n_traj=6, dt=0.05, frames=11, seed=0):
    x = layout.positions[:, 0]
    rng = np.random.default_rng(seed)
    times = np.arange(frames) * dt
    trajs = []
    k = np.arange(1, 4)[:, None]
    for _ in range(n_traj):
        amp, phase = rng.uniform(0.2, 1.0, (3, 1)), rng.uniform(0, 2 * np.pi, (3, 1))
        modes = amp * np.sin(k * x + phase)
        values = [0.3 + (np.exp(-(k**2) * t) * modes).sum(axis=0) for t in times]
        trajs.append(TrajectoryData(space, times, [layout.function(v) for v in values]))
    return trajs


def test_fit_rollout_and_files(layouts, tmp_path):
    layout = layouts("1d-even")
    space = layout.space
    trajs = heat_data(layout, space)
    assert peer_class("spectral_onsager") is SpectralOnsagerPeer
    torch.manual_seed(0)
    peer = SpectralOnsagerPeer(layout, 0.05, width=8)
    settings = FitSettings(
        iterations=40, learning_rate=1e-2, batch_size=8, unroll=3, validate_every=20
    )
    summary = fit(peer, Dataset(space, trajs[:4]), Dataset(space, trajs[4:]), settings)
    assert summary.loss_last < 0.1 * summary.loss_first
    assert summary.best_validation < 0.1 * summary.loss_first
    assert math.isfinite(summary.best_validation)
    stepper = PeerStepper(peer, trajs[5].states[0], 0.05)
    rollout = stepper.rollout(5)
    assert len(rollout.states) == 6
    values = np.array([layout.gather(u) for u in rollout.states])
    assert np.isfinite(values).all()
    path = peer.save(tmp_path / "peer.pt")
    again = SpectralOnsagerPeer(layout, 0.05, width=8)
    again.load_parameters(path)
    u = torch.from_numpy(values[:2])
    with torch.no_grad():
        np.testing.assert_array_equal(again(u), peer(u))
    with pytest.raises(ValueError, match="options"):
        SpectralOnsagerPeer(layout, 0.05, width=8, conserve_mass=True).load_parameters(path)


@pytest.mark.parametrize(
    "mesh",
    [
        lambda: fd.IntervalMesh(16, 2 * np.pi),
        lambda: fd.PeriodicRectangleMesh(6, 4, 2.0, 1.0, direction="x", quadrilateral=True),
    ],
    ids=["interval", "periodic-in-x-only"],
)
def test_non_periodic_meshes_are_refused(mesh):
    layout = NodalLayout(fd.FunctionSpace(mesh(), "CG", 1))
    with pytest.raises(ValueError, match="periodic in every direction"):
        SpectralOnsagerPeer(layout, 0.01)
