"""Gauss-Newton curvature: the tangent of a step is Taylor-tested, its gradient is the adjoint's,
and Levenberg-Marquardt fits a member of the class from its own data."""

import firedrake as fd
import numpy as np
import pytest
import torch
from torch.nn.utils import parameters_to_vector, vector_to_parameters

import femeso
from femeso.training.gauss_newton import (
    LevenbergMarquardt,
    state_tangent,
    step_jacobian,
    trainable,
    window_curvature,
)
from femeso.training.trainer import TrainingConfig, window_loss, window_loss_and_gradient
from femeso.verification import perturbed_parameters, random_direction, taylor_test
from models import dissipative_model, levenberg_marquardt_closure, mesh, neural_energy


def conservative_model(seed: int) -> femeso.OnsagerModel:
    """A random KdV-like member: neural F(u), learned transport velocity b(x), M = 0."""
    V = fd.FunctionSpace(mesh("periodic_interval"), "CG", 1)
    velocity = femeso.NeuralField(0, 1, width=4, dim=1, seed=seed + 3)
    return femeso.OnsagerModel(
        V, neural_energy(1, seed), conservative=femeso.SkewTransport(velocity, dim=1)
    )


def models():
    return {
        "plate-both": dissipative_model(mesh("plate"), "both", seed=3),
        "periodic-conservative": conservative_model(seed=4),
    }


def window(model, seed, steps=1):
    V = model.space
    return [femeso.random_smooth_field(V, seed=seed + k, amplitude=0.8) for k in range(steps + 1)]


def step_state(model, u0, dt):
    stepper = femeso.EnergyStableStepper(model, u0, dt)
    record = stepper.advance()
    assert record.halvings == 0
    return stepper


def jacobian_taylor(model, dt=0.02):
    """Taylor test of u1(theta) against the step's Jacobian; also returns ||J h||."""
    params = [p for _, p in trainable(model)]
    u0 = window(model, 11)[0]
    stepper = step_state(model, u0, dt)
    u1 = stepper.u.copy(deepcopy=True)
    stepper.restore(u0, stepper.w)
    J = step_jacobian(stepper)
    direction = random_direction(params, seed=2)
    tangent = fd.Function(model.space)
    with tangent.dat.vec_wo as t:
        t.array[:] = J @ direction.numpy()

    def step_at(eps):
        with perturbed_parameters(params, direction, eps):
            return step_state(model, u0, dt).u

    return taylor_test(step_at, u1, tangent), fd.norm(tangent)


@pytest.mark.parametrize("name", ["plate-both", "periodic-conservative"])
def test_step_jacobian_passes_taylor_test(name):
    result, size = jacobian_taylor(models()[name])
    assert size > 0
    assert result.min_rate > 1.9, result


@pytest.mark.parallel(nprocs=2)
def test_step_jacobian_passes_taylor_test_in_parallel():
    result, _ = jacobian_taylor(dissipative_model(mesh("plate"), "both", seed=3))
    assert result.min_rate > 1.9, result


@pytest.mark.parametrize(
    "name,scheme",
    [
        ("plate-both", "midpoint"),
        ("plate-both", "linearised"),
        ("periodic-conservative", "midpoint"),
    ],
)
def test_state_tangent_passes_taylor_test(name, scheme):
    """du1/du0 of a held step (through the discrete gradient and the mobility at the points)."""
    model = models()[name]
    u0, direction = window(model, 41)
    dt = 0.02

    def step_from(u):
        stepper = femeso.EnergyStableStepper(model, u, dt, scheme=scheme)
        assert stepper.advance().halvings == 0
        return stepper

    stepper = step_from(u0)
    u1 = stepper.u.copy(deepcopy=True)
    stepper.restore(u0, stepper.w)
    with direction.dat.vec_ro as d:
        column = d.array_r.copy()[:, None]
    tangent = fd.Function(model.space)
    with tangent.dat.vec_wo as t:
        t.array[:] = state_tangent(stepper, column)[:, 0]
    result = taylor_test(
        lambda eps: step_from(fd.Function(model.space).assign(u0 + eps * direction)).u,
        u1,
        tangent,
    )
    assert fd.norm(tangent) > 0.1 * fd.norm(direction)
    assert result.min_rate > 1.9, result


@pytest.mark.parametrize("name", ["plate-both", "periodic-conservative"])
def test_substeps_jacobian_and_gradient_pass_taylor_tests(name):
    """A data step of 3 scheme sub-steps: the carried Jacobian, the adjoint gradient and the
    Gauss-Newton gradient of the window agree with finite differences and with each other."""
    model = models()[name]
    params = [p for _, p in trainable(model)]
    data = window(model, 51)
    stepper = femeso.EnergyStableStepper(model, data[0], 0.06, substeps=3)
    for p in params:
        p.grad = None
    loss, clean = window_loss_and_gradient(stepper, data)
    assert clean and not stepper.log_substeps and not stepper.substep_log  # switched off again
    adjoint = parameters_to_vector([p.grad for p in params]).numpy()
    c = window_curvature(stepper, data)
    assert c.loss == pytest.approx(loss, rel=1e-12)
    assert np.linalg.norm(c.gradient - adjoint) <= 1e-8 * np.linalg.norm(adjoint)
    direction = random_direction(params, seed=5)

    def loss_at(eps):
        with perturbed_parameters(params, direction, eps):
            return window_loss(stepper, data)[0]

    epsilons = [1e-3 / 2**i for i in range(4)]
    result = taylor_test(loss_at, loss, adjoint @ direction.numpy(), epsilons=epsilons)
    assert result.min_rate > 1.9, result
    # three sub-steps are not one step of the same size: the substeps enter the loss
    one = femeso.EnergyStableStepper(model, data[0], 0.06)
    assert abs(window_loss(one, data)[0] - loss) > 1e-6 * loss


def curvature_against_adjoint(model, norm, steps=1):
    data = window(model, 21, steps)
    stepper = femeso.EnergyStableStepper(model, data[0], 0.02)
    params = [p for _, p in trainable(model)]
    for p in params:
        p.grad = None
    loss, clean = window_loss_and_gradient(stepper, data, norm=norm)
    assert clean
    adjoint = torch.cat(
        [(p.grad if p.grad is not None else torch.zeros_like(p)).reshape(-1) for p in params]
    ).numpy()
    c = window_curvature(stepper, data, norm=norm)
    return loss, adjoint, c


@pytest.mark.parametrize("norm", ["L2", "H1"])
def test_gauss_newton_gradient_is_the_adjoint_gradient(norm):
    loss, adjoint, c = curvature_against_adjoint(models()["plate-both"], norm)
    assert c.loss == pytest.approx(loss, rel=1e-12)
    assert np.linalg.norm(c.gradient - adjoint) <= 1e-8 * np.linalg.norm(adjoint)
    # A Gauss-Newton matrix is symmetric positive semi-definite.
    assert np.allclose(c.hessian, c.hessian.T)
    assert np.linalg.eigvalsh(c.hessian).min() >= -1e-12 * np.abs(c.hessian).max()


@pytest.mark.parametrize("steps", [2, 3])
def test_gauss_newton_of_a_multi_step_window_is_the_adjoint_gradient(steps):
    """The Jacobian carried through every step: the unrolled window's gradient, and a PSD
    Gauss-Newton matrix (a 1-step window of the same start gives another loss)."""
    model = models()["plate-both"]
    loss, adjoint, c = curvature_against_adjoint(model, "L2", steps)
    assert c.loss == pytest.approx(loss, rel=1e-12)
    assert np.linalg.norm(c.gradient - adjoint) <= 1e-8 * np.linalg.norm(adjoint)
    assert np.linalg.eigvalsh(c.hessian).min() >= -1e-12 * np.abs(c.hessian).max()
    one = window_curvature(
        femeso.EnergyStableStepper(model, window(model, 21)[0], 0.02), window(model, 21)
    )
    assert abs(one.loss - c.loss) > 1e-6 * c.loss


@pytest.mark.parallel(nprocs=2)
def test_gauss_newton_gradient_is_the_adjoint_gradient_in_parallel():
    loss, adjoint, c = curvature_against_adjoint(
        dissipative_model(mesh("plate"), "both", seed=3), "L2"
    )
    assert c.loss == pytest.approx(loss, rel=1e-12)
    assert np.linalg.norm(c.gradient - adjoint) <= 1e-8 * np.linalg.norm(adjoint)


def test_gauss_newton_model_predicts_a_small_residual_loss_to_second_order():
    """Near a fit, H is the loss's Hessian up to the residual-weighted second derivatives."""
    model = models()["plate-both"]
    params = [p for _, p in trainable(model)]
    theta = parameters_to_vector(params).detach().clone()
    g = torch.Generator().manual_seed(4)
    u0 = window(model, 31)[0]
    # data: the same member with slightly different parameters
    with perturbed_parameters(params, torch.randn(theta.shape, generator=g), 1e-3):
        data = [u0, step_state(model, u0, 0.02).u.copy(deepcopy=True)]
    stepper = femeso.EnergyStableStepper(model, u0, 0.02)
    c = window_curvature(stepper, data)
    direction = torch.randn(theta.shape, generator=g, dtype=theta.dtype)
    d = direction.numpy()
    first, second = [], []
    for eps in [1e-2 / 2**i for i in range(4)]:
        with perturbed_parameters(params, direction, eps):
            moved = window_loss(stepper, data)[0]
        linear = c.loss + eps * c.gradient @ d
        first.append(abs(moved - linear))
        second.append(abs(moved - linear - 0.5 * eps**2 * d @ c.hessian @ d))
    assert all(s < 0.1 * f for s, f in zip(second, first, strict=True)), (first, second)


def test_levenberg_marquardt_recovers_a_member_from_its_own_data():
    """Data from a random member; start from perturbed parameters; LM must drive the loss down."""
    truth = dissipative_model(mesh("plate"), "conserved", seed=8)
    learner = dissipative_model(mesh("plate"), "conserved", seed=8)
    params = [p for _, p in trainable(learner)]
    theta = parameters_to_vector(params).detach()
    noise = torch.randn(theta.shape, generator=torch.Generator().manual_seed(5), dtype=theta.dtype)
    with torch.no_grad():
        vector_to_parameters(theta + 0.3 * noise, params)
    V = truth.space
    starts = [femeso.random_smooth_field(V, seed=s, amplitude=0.8) for s in (40, 41, 42)]
    windows = []
    for u0 in starts:
        stepper = step_state(truth, u0, 0.02)
        windows.append([u0, stepper.u.copy(deepcopy=True)])
    stepper = femeso.EnergyStableStepper(learner, starts[0], 0.02)

    closure = levenberg_marquardt_closure(stepper, windows)

    optimizer = LevenbergMarquardt(params)
    losses = [optimizer.step(closure) for _ in range(10)]
    final = closure(False)
    assert all(b <= a for a, b in zip(losses, losses[1:], strict=False)), losses  # monotone
    assert final < 1e-4 * losses[0], (losses, final)
    state = optimizer.state_dict()
    assert state["param_groups"][0]["damping"] == optimizer.damping


def test_levenberg_marquardt_settings_are_checked():
    assert TrainingConfig(optimizer="levenberg_marquardt", unroll=3).unroll == 3  # windows of 3
    with pytest.raises(ValueError, match="damping"):
        LevenbergMarquardt([torch.zeros(1, requires_grad=True)], damping=0.0)
    model = models()["plate-both"]
    stepper = femeso.EnergyStableStepper(model, window(model, 1)[0], 0.02)
    with pytest.raises(ValueError, match="at least one step"):
        window_curvature(stepper, window(model, 1)[:1])
    with pytest.raises(ValueError, match="restore"):
        step_jacobian(stepper)
