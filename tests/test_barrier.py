"""A declared state range (BarrierDensity, model.state_range): every accepted state lies strictly
inside it at the quadrature points, for every parameter value (the energy law: the barrier's energy
is infinite at the ends); the derivatives are exact; files and job files round-trip."""

import firedrake as fd
import numpy as np
import pytest
import torch

import femeso
from femeso.config import ConfigError, validate
from femeso.model.energies import BarrierDensity
from models import mesh, window_gradient_taylor


def drifting_model(V, *, barrier: bool) -> femeso.OnsagerModel:
    """Allen-Cahn with wells at -0.5 and 1.5: states near 1 are driven out of (0, 1)."""
    wells = femeso.KnownDensity(lambda u, x, ops: 4.0 * (u[0] + 0.5) ** 2 * (u[0] - 1.5) ** 2)
    density = wells + BarrierDensity(0.0, 1.0, strength=0.05, learnable=False) if barrier else wells
    return femeso.OnsagerModel(
        V, femeso.Energy(density, kappa=1e-3), mobility=femeso.LocalMobility(1.0), gauge=None
    )


def start(V, seed: int = 0) -> fd.Function:
    u0 = femeso.random_smooth_field(V, seed=seed, mean=0.8, amplitude=0.15)
    u0.dat.data[...] = np.clip(u0.dat.data_ro, 0.05, 0.97)
    return u0


def test_without_the_barrier_the_state_leaves_the_range():
    """The model used below does leave (0, 1): the barrier's test can fail."""
    V = fd.FunctionSpace(mesh("plate"), "CG", 1)
    trajectory = femeso.EnergyStableStepper(
        drifting_model(V, barrier=False), start(V), 0.05
    ).rollout(10)
    assert max(float(s.dat.data_ro.max()) for s in trajectory.states) > 1.0


@pytest.mark.parametrize("dt", [0.05, 0.5])
def test_with_the_barrier_every_state_stays_strictly_inside(dt):
    V = fd.FunctionSpace(mesh("plate"), "CG", 1)
    model = drifting_model(V, barrier=True)
    trajectory = femeso.EnergyStableStepper(model, start(V), dt).rollout(10)
    values = np.concatenate([model.state_at_points(s).numpy().ravel() for s in trajectory.states])
    assert values.min() > 0.0 and values.max() < 1.0
    assert values.max() > 0.98  # pushed against the barrier, not kept away by luck
    assert all(r.energy_change <= 0 for r in trajectory.records)


def accepted_states(stepper, n_steps: int) -> list[np.ndarray]:
    """The accepted states at the quadrature points (a step may fail: the guarantee is about
    what is accepted)."""
    at_points = stepper.model.state_at_points
    states = [at_points(stepper.u).numpy().ravel()]
    for _ in range(n_steps):
        try:
            stepper.advance()
        except femeso.StepFailure:
            break
        states.append(at_points(stepper.u).numpy().ravel())
    return states


@pytest.mark.parametrize("seed,tilt", [(0, 3.0), (1, -3.0), (2, 0.0)])
def test_random_learned_models_with_the_barrier_never_accept_a_state_outside(seed, tilt):
    """Property: untrained neural densities and mobilities, tilted towards one end, + barrier."""
    V = fd.FunctionSpace(mesh("plate"), "CG", 1)
    slope = femeso.KnownDensity(lambda u, x, ops: -tilt * u[0])
    density = femeso.CoerciveNeuralDensity(width=8, seed=seed) + slope + BarrierDensity(0.0, 1.0)
    model = femeso.OnsagerModel(
        V,
        femeso.Energy(density, kappa=1e-3),
        mobility=femeso.LocalMobility(femeso.NeuralField(1, 1, width=6, seed=seed + 7)),
    )
    u0 = femeso.random_smooth_field(V, seed=seed, mean=0.5, amplitude=0.3)
    u0.dat.data[...] = np.clip(u0.dat.data_ro, 0.05, 0.95)
    states = accepted_states(femeso.EnergyStableStepper(model, u0, 0.2), 8)
    assert len(states) > 1
    values = np.concatenate(states)
    assert values.min() > 0.0 and values.max() < 1.0


def test_closed_form_derivatives_are_the_autograd_ones():
    barrier = BarrierDensity(-1.0, 2.0, strength=0.3)
    u = torch.linspace(-0.99, 1.99, 57, dtype=torch.float64)[:, None].requires_grad_(True)
    (first,) = torch.autograd.grad(barrier(u).sum(), u, create_graph=True)
    (second,) = torch.autograd.grad(first.sum(), u)
    d1, d2 = barrier.state_derivatives(u.detach())
    assert torch.allclose(d1, first[:, 0], rtol=1e-12, atol=1e-12)
    assert torch.allclose(d2, second[:, 0], rtol=1e-12, atol=1e-12)
    assert torch.isnan(barrier(torch.tensor([[2.5]], dtype=torch.float64))).all()


def test_the_strength_gradient_passes_taylor_test():
    V = fd.FunctionSpace(mesh("plate"), "CG", 1)
    density = femeso.CoerciveNeuralDensity(width=6, seed=3) + BarrierDensity(
        0.0, 1.0, strength=0.05
    )
    model = femeso.OnsagerModel(
        V, femeso.Energy(density, kappa=1e-3), mobility=femeso.ConservedMobility(1.0)
    )
    result = window_gradient_taylor(model, [start(V, 3), start(V, 4)], 0.05)
    assert float(density.second.raw_strength.grad.abs()) > 0
    assert result.min_rate > 1.9, result


def test_a_model_with_the_barrier_round_trips_through_its_file(tmp_path):
    V = fd.FunctionSpace(mesh("plate"), "CG", 1)
    density = femeso.CoerciveNeuralDensity(width=6, seed=5) + BarrierDensity(0.0, 1.0, strength=0.2)
    model = femeso.OnsagerModel(
        V, femeso.Energy(density, kappa=1e-3), mobility=femeso.ConservedMobility(1.0)
    )
    path = model.save(tmp_path / "model.npz")
    again = femeso.load_model(path, V)
    u = start(V, 5)
    assert again.energy_value(u) == pytest.approx(model.energy_value(u), rel=1e-14)
    assert float(again.energy.density.second.strength.detach()) == pytest.approx(0.2, rel=1e-14)


def test_the_job_file_declares_the_range_in_one_line():
    config = validate({"model": {"state_range": [0, 1]}}, "job.toml")
    assert config.model.state_range == [0.0, 1.0] or config.model.state_range == [0, 1]
    for bad, words in (
        ([1, 0], "lo < hi"),
        ([0], "lo < hi"),
        ([0, "a"], "list of numbers"),
        ([0, float("inf")], "finite"),
    ):
        with pytest.raises(ConfigError, match=words) as error:
            validate({"model": {"state_range": bad}}, "job.toml")
        assert "\n" not in str(error.value)


def test_data_outside_the_declared_range_are_refused_in_one_line():
    from femeso.data.trajectories import Dataset, TrajectoryData
    from femeso.jobs.training import _check_state_range

    V = fd.FunctionSpace(mesh("plate"), "CG", 1)
    inside, outside = start(V, 0), start(V, 1)
    outside.dat.data[0] = 1.02
    config = validate({"model": {"state_range": [0, 1]}}, "job.toml")

    def dataset(*states):
        traj = TrajectoryData(
            space=V, times=np.arange(len(states), dtype=float), states=list(states)
        )
        return Dataset(V, [traj])

    _check_state_range(config, {"train": dataset(inside, inside)})
    with pytest.raises(ValueError, match=r"train trajectory 0: values from .* to 1.02 ") as error:
        _check_state_range(config, {"train": dataset(inside, outside)})
    assert "\n" not in str(error.value)
