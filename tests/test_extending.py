"""A mobility added in one file (docs/examples/h1_mobility.py) runs through every part of femeso:
the energy law of the stepper, the discrete adjoint and Levenberg--Marquardt."""

import importlib.util
from pathlib import Path

import firedrake as fd
import pytest
import torch

import femeso
from femeso.training.gauss_newton import (
    LevenbergMarquardt,
    step_jacobian,
    trainable,
)
from femeso.verification import perturbed_parameters, random_direction, taylor_test
from models import levenberg_marquardt_closure, mesh, neural_energy, window_gradient_taylor

EXAMPLE = Path(__file__).resolve().parents[1] / "docs" / "examples" / "h1_mobility.py"


def example():
    spec = importlib.util.spec_from_file_location("h1_mobility", EXAMPLE)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


H1Mobility = example().H1Mobility


def network(seed: int) -> femeso.NeuralField:
    return femeso.NeuralField(1, 1, width=6, dim=2, seed=seed)


def model(seed: int, *, split: bool = False) -> femeso.OnsagerModel:
    """A random model with an H1 mobility; ``split``: the same as local + conserved parts."""
    V = fd.FunctionSpace(mesh("plate"), "CG", 1)
    m = network(seed + 1000)
    if split:
        twin = network(seed + 1000)
        twin.load_state_dict(m.state_dict())
        mobility = [femeso.LocalMobility(m), femeso.ConservedMobility(twin)]
    else:
        mobility = H1Mobility(m)
    return femeso.OnsagerModel(V, neural_energy(1, seed, position_dim=2), mobility=mobility)


@pytest.mark.parametrize("seed", [1, 2, 3])
def test_the_energy_law_holds_for_random_parameters(seed):
    """V(u^{n+1}) - V(u^n) = -dt a_M(u*; mu, mu) <= 0, exactly, with the new form."""
    m = model(seed)
    assert not m.conserves_mass
    u0 = femeso.random_smooth_field(m.space, seed=seed, amplitude=0.8)
    trajectory = femeso.EnergyStableStepper(m, u0, 0.05).rollout(4)
    for record in trajectory.records:
        scale = abs(record.energy) + 1.0
        assert record.dissipation > 0
        assert record.energy_change <= 0
        assert abs(record.energy_change + 0.05 * record.dissipation) < 1e-10 * scale


def test_the_form_is_local_plus_conserved_with_one_coefficient():
    u0 = femeso.random_smooth_field(model(4).space, seed=4, amplitude=0.8)
    one = femeso.EnergyStableStepper(model(4), u0, 0.05).rollout(3)
    two = femeso.EnergyStableStepper(model(4, split=True), u0, 0.05).rollout(3)
    for a, b in zip(one.states, two.states, strict=True):
        assert fd.errornorm(a, b) <= 1e-10 * fd.norm(b)
    # and the local term matters: the conserved part alone gives another step
    V = fd.FunctionSpace(mesh("plate"), "CG", 1)
    alone = femeso.OnsagerModel(
        V, neural_energy(1, 4, position_dim=2), mobility=femeso.ConservedMobility(network(1004))
    )
    other = femeso.EnergyStableStepper(alone, u0, 0.05).rollout(1)
    assert fd.errornorm(other.states[1], one.states[1]) > 1e-3 * fd.norm(one.states[1])


def test_the_adjoint_gradient_passes_taylor_test():
    m = model(5)
    V = m.space
    u0 = femeso.random_smooth_field(V, seed=5, amplitude=0.8)
    data = [u0, femeso.random_smooth_field(V, seed=6, amplitude=0.5)]
    result = window_gradient_taylor(m, data, 0.05)
    assert result.min_rate > 1.9, result


def test_the_step_jacobian_passes_taylor_test():
    m = model(6)
    params = [p for _, p in trainable(m)]
    u0 = femeso.random_smooth_field(m.space, seed=7, amplitude=0.8)
    stepper = femeso.EnergyStableStepper(m, u0, 0.02)
    stepper.advance()
    u1 = stepper.u.copy(deepcopy=True)
    stepper.restore(u0, stepper.w)
    J = step_jacobian(stepper)
    direction = random_direction(params, seed=2)
    tangent = fd.Function(m.space)
    with tangent.dat.vec_wo as t:
        t.array[:] = J @ direction.numpy()

    def step_at(eps):
        with perturbed_parameters(params, direction, eps):
            s = femeso.EnergyStableStepper(m, u0, 0.02)
            s.advance()
            return s.u

    result = taylor_test(step_at, u1, tangent)
    assert fd.norm(tangent) > 0
    assert result.min_rate > 1.9, result


def test_levenberg_marquardt_fits_the_new_part_from_its_own_data():
    truth, learner = model(8), model(8)
    params = [p for _, p in trainable(learner)]
    with torch.no_grad():
        for p in params:
            p.add_(
                0.2
                * torch.randn(p.shape, generator=torch.Generator().manual_seed(5), dtype=p.dtype)
            )
    V = truth.space
    windows = []
    for s in (40, 41, 42):
        u0 = femeso.random_smooth_field(V, seed=s, amplitude=0.8)
        stepper = femeso.EnergyStableStepper(truth, u0, 0.02)
        stepper.advance()
        windows.append([u0, stepper.u.copy(deepcopy=True)])
    stepper = femeso.EnergyStableStepper(learner, windows[0][0], 0.02)

    closure = levenberg_marquardt_closure(stepper, windows)

    optimizer = LevenbergMarquardt(params)
    losses = [optimizer.step(closure) for _ in range(6)]
    assert closure(False) < 1e-2 * losses[0], losses
