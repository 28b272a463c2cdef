"""The declared range's two optional parts: a learned mixing entropy (EntropyDensity,
model.range_entropy) and a mobility that vanishes at the range's ends
(model.mobility = "neural_degenerate"). Closed forms, the adjoint and Gauss-Newton gradients, the
class's guarantees on random untrained members, files and job files."""

import firedrake as fd
import numpy as np
import pytest
import torch

import femeso
from femeso.config import ConfigError, validate
from femeso.model.energies import BarrierDensity, EntropyDensity
from femeso.training.gauss_newton import window_curvature
from femeso.training.trainer import window_loss_and_gradient
from models import mesh, window_gradient_taylor


def bounded_member(seed: int, *, tilt: float = 0.0, dynamics=femeso.ConservedMobility):
    """A random member: network + barrier + entropy, degenerate neural mobility on (0, 1)."""
    V = fd.FunctionSpace(mesh("plate"), "CG", 1)
    g = torch.Generator().manual_seed(seed)
    strength = float(0.05 + 0.5 * torch.rand((), generator=g, dtype=torch.float64))
    density = femeso.CoerciveNeuralDensity(width=8, seed=seed)
    if tilt:
        density = density + femeso.KnownDensity(lambda u, x, ops: -tilt * u[0])
    density = (
        density
        + BarrierDensity(0.0, 1.0, strength=0.02)
        + EntropyDensity(0.0, 1.0, strength=strength)
    )
    mobility = femeso.NeuralField(1, 1, width=6, seed=seed + 7, input_center=0.5, input_scale=0.25)
    return femeso.OnsagerModel(
        V, femeso.Energy(density, kappa=1e-3), mobility=dynamics(mobility, vanishing_range=(0, 1))
    )


def start(V, seed: int) -> fd.Function:
    u0 = femeso.random_smooth_field(V, seed=seed, mean=0.5, amplitude=0.3)
    u0.dat.data[...] = np.clip(u0.dat.data_ro, 0.04, 0.96)
    return u0


def test_entropy_closed_form_derivatives_are_the_autograd_ones():
    entropy = EntropyDensity(-1.0, 2.0, strength=0.3)
    u = torch.linspace(-0.99, 1.99, 57, dtype=torch.float64)[:, None].requires_grad_(True)
    (first,) = torch.autograd.grad(entropy(u).sum(), u, create_graph=True)
    (second,) = torch.autograd.grad(first.sum(), u)
    d1, d2 = entropy.state_derivatives(u.detach())
    assert torch.allclose(d1, first[:, 0], rtol=1e-12, atol=1e-12)
    assert torch.allclose(d2, second[:, 0], rtol=1e-12, atol=1e-12)
    middle = entropy(torch.tensor([[0.5]], dtype=torch.float64)).detach()
    assert float(middle) == pytest.approx(0.0, abs=1e-15)
    assert torch.isnan(entropy(torch.tensor([[2.5]], dtype=torch.float64))).all()


def test_the_entropy_is_the_flory_huggins_entropy():
    """theta (u ln u + (1 - u) ln(1 - u)) on (0, 1), up to the constant theta ln 2."""
    entropy = EntropyDensity(0.0, 1.0, strength=0.3)
    u = torch.linspace(0.01, 0.99, 99, dtype=torch.float64)
    flory_huggins = 0.3 * (u * torch.log(u) + (1 - u) * torch.log(1 - u))
    with torch.no_grad():
        values = entropy(u[:, None])
    assert torch.allclose(values - 0.3 * np.log(2.0), flory_huggins, atol=1e-14)


def test_the_degenerate_mobility_vanishes_at_the_ends_and_is_the_network_at_the_middle():
    field = femeso.NeuralField(1, 1, width=6, seed=2)
    coefficient = femeso.ConservedMobility(field, vanishing_range=(-1.0, 3.0)).coefficient
    u = torch.tensor([[-1.0], [1.0], [3.0], [0.0]], dtype=torch.float64)
    with torch.no_grad():
        values = coefficient(u, None)[:, 0]
        plain = torch.nn.functional.softplus(field(u, None))[:, 0]
    assert values[0] == 0 and values[2] == 0
    assert values[1] == pytest.approx(float(plain[1]), rel=1e-15)
    assert values[3] == pytest.approx(0.75 * float(plain[3]), rel=1e-14)  # 4 * 1 * 3 / 16


def test_the_degenerate_mobility_in_ufl_is_the_one_in_torch():
    """The stepper's weak form (UFL) and the adjoint's point values (torch) are one function."""
    model = bounded_member(4)
    V = model.space
    u = start(V, 1)
    coefficient = model.mobilities[0].coefficient
    Q = fd.FunctionSpace(V.mesh(), "DG", 2)
    in_ufl = fd.Function(Q).interpolate(coefficient.ufl([u], None)[0])
    points = fd.Function(Q).interpolate(u).dat.data_ro[:, None]
    in_torch = coefficient(torch.as_tensor(points), None)[:, 0].detach().numpy()
    assert np.abs(in_ufl.dat.data_ro - in_torch).max() <= 1e-12 * np.abs(in_torch).max()
    assert in_torch.min() >= 0


@pytest.mark.parametrize("seed,tilt", [(0, 3.0), (1, -3.0), (2, 0.0)])
def test_random_bounded_members_keep_every_guarantee(seed, tilt):
    """Property: energy never increases, mass is conserved, every accepted state stays strictly
    inside (0, 1) -- for untrained networks tilted towards either end."""
    model = bounded_member(seed, tilt=tilt)
    u0 = start(model.space, seed)
    mass0 = fd.assemble(u0 * fd.dx)
    stepper = femeso.EnergyStableStepper(model, u0, 0.2)
    records = []
    for _ in range(8):
        try:
            records.append(stepper.advance())
        except femeso.StepFailure:
            break
        values = model.state_at_points(stepper.u).numpy()
        assert values.min() > 0.0 and values.max() < 1.0
        assert abs(fd.assemble(stepper.u * fd.dx) - mass0) <= 1e-11 * abs(mass0)
    assert len(records) > 1
    assert all(r.energy_change <= 1e-13 * max(1.0, abs(r.energy)) for r in records)
    assert sum(r.energy_change for r in records) < 0


def test_the_adjoint_gradient_passes_taylor_test_and_reaches_both_parts():
    model = bounded_member(3)
    V = model.space
    result = window_gradient_taylor(model, [start(V, 3), start(V, 4), start(V, 5)], 0.05)
    assert result.min_rate > 1.9, result
    entropy = model.energy.density.second
    assert isinstance(entropy, EntropyDensity)
    assert float(entropy.raw_strength.grad.abs()) > 0
    mobility = model.mobilities[0].coefficient.field
    assert float(mobility.layers[0].weight.grad.abs().max()) > 0


def test_the_gauss_newton_gradient_is_the_adjoint_gradient():
    model = bounded_member(5, dynamics=femeso.LocalMobility)
    V = model.space
    data = [start(V, 6), start(V, 7), start(V, 8)]
    stepper = femeso.EnergyStableStepper(model, data[0], 0.05)
    model.zero_grad()
    loss, clean = window_loss_and_gradient(stepper, data)
    assert clean
    adjoint = torch.cat([p.grad.reshape(-1) for p in model.parameters() if p.requires_grad]).numpy()
    curvature = window_curvature(stepper, data)
    assert curvature.loss == pytest.approx(float(loss), rel=1e-12)
    assert np.linalg.norm(curvature.gradient - adjoint) <= 1e-8 * np.linalg.norm(adjoint)


def test_a_bounded_member_round_trips_through_its_file(tmp_path):
    model = bounded_member(6)
    path = model.save(tmp_path / "model.npz")
    again = femeso.load_model(path, model.space)
    u = start(model.space, 6)
    assert again.energy_value(u) == pytest.approx(model.energy_value(u), rel=1e-14)
    assert again.mobilities[0].coefficient.vanishing_range == (0.0, 1.0)
    u_q = model.state_at_points(u)
    assert torch.equal(
        again.mobility_values(u_q)["conserved"], model.mobility_values(u_q)["conserved"]
    )


def test_the_job_file_builds_both_parts():
    from femeso.jobs.models import learned_model

    config = validate(
        {"model": {"state_range": [0, 1], "range_entropy": True, "mobility": "neural_degenerate"}},
        "job.toml",
    )
    model = learned_model(config, fd.FunctionSpace(mesh("plate"), "CG", 1))
    assert isinstance(model.energy.density.second, EntropyDensity)
    assert model.mobilities[0].coefficient.vanishing_range == (0.0, 1.0)


@pytest.mark.parametrize(
    "model",
    [{"range_entropy": True}, {"mobility": "neural_degenerate"}],
)
def test_both_parts_need_a_declared_range_in_one_line(model):
    with pytest.raises(ConfigError, match="needs model.state_range") as error:
        validate({"model": model}, "job.toml")
    assert "\n" not in str(error.value)


def test_a_degenerate_mobility_needs_a_finite_range_and_one_component():
    field = femeso.NeuralField(2, 2, width=4, seed=0)
    with pytest.raises(ValueError, match="one state component"):
        femeso.ConservedMobility(field, n_states=2, vanishing_range=(0, 1))
    with pytest.raises(ValueError, match="finite range"):
        femeso.ConservedMobility(femeso.NeuralField(1, 1, width=4, seed=0), vanishing_range=(1, 0))
