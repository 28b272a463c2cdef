"""``loss.backward()`` through a rollout (femeso.training.bridge) gives the discrete adjoint's
gradients."""

import firedrake as fd
import numpy as np
import pytest
import torch

import femeso
from femeso.training.trainer import window_loss_and_gradient
from femeso.verification import taylor_test
from models import dissipative_model, mesh

N_STEPS = 5
DT = 0.05


def problem(mesh_name: str, kind: str):
    model = dissipative_model(mesh(mesh_name), kind, seed=5)
    V = model.space
    u0 = femeso.random_smooth_field(V, seed=5)
    data = [u0] + [
        femeso.random_smooth_field(V, seed=20 + j, amplitude=0.5) for j in range(N_STEPS)
    ]
    return model, data


def mass_matrix(V: fd.FunctionSpace) -> torch.Tensor:
    """The L2 mass matrix on the owned DoFs (serial tests: all of them), dense."""
    u, v = fd.TrialFunction(V), fd.TestFunction(V)
    M = fd.assemble(fd.inner(u, v) * fd.dx, mat_type="aij").petscmat
    return torch.as_tensor(M.convert("dense").getDenseArray().copy())


def relative_mismatch(states: torch.Tensor, data: list[fd.Function], M: torch.Tensor):
    """Mean over steps of ||u_j - d_j||^2 / ||d_j||^2 in L2: training's window loss, in torch."""
    d = torch.stack([torch.as_tensor(f.dat.data_ro.copy()) for f in data])
    e = states[1:] - d[1:]
    return ((e @ M * e).sum(1) / (d[1:] @ M * d[1:]).sum(1)).mean()


@pytest.mark.parametrize("mesh_name,kind", [("plate", "both"), ("periodic_interval", "conserved")])
def test_backward_through_five_steps_is_the_adjoint_gradient(mesh_name, kind):
    model, data = problem(mesh_name, kind)
    params = [p for p in model.parameters() if p.requires_grad]
    stepper = femeso.EnergyStableStepper(model, data[0], DT)
    model.zero_grad()
    loss_adjoint, clean = window_loss_and_gradient(stepper, data)
    assert clean
    expected = torch.cat([p.grad.reshape(-1).clone() for p in params])

    model.zero_grad()
    states = femeso.differentiable_rollout(stepper, data[0], N_STEPS)
    assert states.shape == (N_STEPS + 1, *data[0].dat.data_ro.shape)
    loss = relative_mismatch(states, data, mass_matrix(model.space))
    loss.backward()
    got = torch.cat([p.grad.reshape(-1) for p in params])

    assert float(loss.detach()) == pytest.approx(loss_adjoint, rel=1e-12)
    assert float(expected.abs().max()) > 0
    assert torch.allclose(got, expected, rtol=1e-9, atol=1e-12 * float(expected.abs().max()))


def test_gradient_with_respect_to_the_initial_state_passes_taylor_test():
    model, data = problem("plate", "both")
    stepper = femeso.EnergyStableStepper(model, data[0], DT, substeps=2)
    M = mass_matrix(model.space)
    u0 = torch.as_tensor(data[0].dat.data_ro.copy()).requires_grad_(True)
    loss = relative_mismatch(femeso.differentiable_rollout(stepper, u0, 3), data[:4], M)
    loss.backward()
    direction = torch.as_tensor(
        femeso.random_smooth_field(model.space, seed=11, amplitude=1.0).dat.data_ro.copy()
    )
    derivative = float(u0.grad @ direction)
    assert abs(derivative) > 1e-8

    def loss_at(eps):
        with torch.no_grad():
            states = femeso.differentiable_rollout(stepper, u0.detach() + eps * direction, 3)
            return float(relative_mismatch(states, data[:4], M))

    result = taylor_test(loss_at, float(loss.detach()), derivative)
    assert result.min_rate > 1.9, result


def test_an_optimiser_step_on_the_bridge_lowers_the_loss():
    """The PyTorch idiom end to end: zero_grad, backward, step."""
    model, data = problem("periodic_interval", "conserved")
    stepper = femeso.EnergyStableStepper(model, data[0], DT)
    M = mass_matrix(model.space)
    optimiser = torch.optim.Adam(model.parameters(), lr=1e-3)
    losses = []
    for _ in range(3):
        optimiser.zero_grad()
        loss = relative_mismatch(femeso.differentiable_rollout(stepper, data[0], N_STEPS), data, M)
        assert stepper.t == pytest.approx(N_STEPS * DT)  # every rollout starts at t0 = 0
        loss.backward()
        optimiser.step()
        losses.append(float(loss.detach()))
    assert np.all(np.diff(losses) < 0), losses


def test_bad_arguments_are_one_line_errors():
    model, data = problem("periodic_interval", "conserved")
    stepper = femeso.EnergyStableStepper(model, data[0], DT)
    with pytest.raises(ValueError, match="n_steps must be a positive integer"):
        femeso.differentiable_rollout(stepper, data[0], 0)
    with pytest.raises(ValueError, match="owned degrees of freedom"):
        femeso.differentiable_rollout(stepper, torch.zeros(3, dtype=torch.float64), 2)
