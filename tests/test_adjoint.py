"""The single-step parameter gradient (discrete adjoint + PyTorch) is Taylor-tested."""

import firedrake as fd
import numpy as np
import pytest
import torch
from torch.nn.utils import parameters_to_vector, vector_to_parameters

import femeso
from femeso.adjoint import backpropagate_step
from models import dissipative_model, mesh


def one_step_loss(model, u0, target, dt):
    stepper = femeso.EnergyStableStepper(model, u0, dt)
    stepper.advance()
    u1 = stepper.u
    loss = 0.5 * fd.assemble((u1 - target) ** 2 * fd.dx)
    return loss, stepper


def taylor_rates(mesh_name, kind):
    model = dissipative_model(mesh(mesh_name), kind, seed=5)
    V = model.space
    u0 = femeso.random_smooth_field(V, seed=5)
    target = femeso.random_smooth_field(V, seed=6, amplitude=0.5)
    dt = 0.05
    loss0, stepper = one_step_loss(model, u0, target, dt)
    model.zero_grad()
    v = fd.TestFunction(V)
    backpropagate_step(stepper, fd.assemble((stepper.u - target) * v * fd.dx))
    params = [p for p in model.parameters() if p.requires_grad]
    grad = torch.cat(
        [(p.grad if p.grad is not None else torch.zeros_like(p)).reshape(-1) for p in params]
    )
    assert float(grad.abs().max()) > 0
    theta = parameters_to_vector(params).detach().clone()
    direction = torch.randn(
        theta.shape, generator=torch.Generator().manual_seed(1), dtype=theta.dtype
    )
    derivative = float(grad @ direction)
    residuals = []
    epsilons = [1e-2 / 2**i for i in range(4)]
    for eps in epsilons:
        with torch.no_grad():
            vector_to_parameters(theta + eps * direction, params)
        loss, _ = one_step_loss(model, u0, target, dt)
        residuals.append(abs(loss - loss0 - eps * derivative))
    with torch.no_grad():
        vector_to_parameters(theta, params)
    return np.log2(np.array(residuals[:-1]) / np.array(residuals[1:])), residuals


@pytest.mark.parametrize("mesh_name,kind", [("plate", "both"), ("periodic_interval", "conserved")])
def test_step_gradient_passes_taylor_test(mesh_name, kind):
    rates, residuals = taylor_rates(mesh_name, kind)
    assert np.all(rates > 1.9), (residuals, rates)


@pytest.mark.parallel(nprocs=2)
def test_step_gradient_passes_taylor_test_in_parallel():
    rates, residuals = taylor_rates("plate", "both")
    assert np.all(rates > 1.9), (residuals, rates)
