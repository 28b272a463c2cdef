"""The single-step parameter gradient (discrete adjoint + PyTorch) is Taylor-tested."""

import firedrake as fd
import pytest
import torch

import femeso
from femeso.verification import perturbed_parameters, random_direction, taylor_test
from models import dissipative_model, mesh


def one_step_loss(model, u0, target, dt):
    stepper = femeso.EnergyStableStepper(model, u0, dt)
    stepper.advance()
    u1 = stepper.u
    loss = 0.5 * fd.assemble((u1 - target) ** 2 * fd.dx)
    return loss, stepper


def step_gradient_taylor(mesh_name, kind):
    model = dissipative_model(mesh(mesh_name), kind, seed=5)
    V = model.space
    u0 = femeso.random_smooth_field(V, seed=5)
    target = femeso.random_smooth_field(V, seed=6, amplitude=0.5)
    dt = 0.05
    loss0, stepper = one_step_loss(model, u0, target, dt)
    model.zero_grad()
    v = fd.TestFunction(V)
    dL_du1 = fd.assemble((stepper.u - target) * v * fd.dx)
    with pytest.raises(ValueError, match="restore"):  # after advance, stepper.u is u1
        stepper.vjp(dL_du1)
    stepper.restore(u0, stepper.w)
    stepper.vjp(dL_du1, wrt_state=False)
    params = [p for p in model.parameters() if p.requires_grad]
    grad = torch.cat(
        [(p.grad if p.grad is not None else torch.zeros_like(p)).reshape(-1) for p in params]
    )
    assert float(grad.abs().max()) > 0
    direction = random_direction(params, seed=1)

    def loss_at(eps):
        with perturbed_parameters(params, direction, eps):
            return one_step_loss(model, u0, target, dt)[0]

    return taylor_test(loss_at, loss0, float(grad @ direction))


@pytest.mark.parametrize("mesh_name,kind", [("plate", "both"), ("periodic_interval", "conserved")])
def test_step_gradient_passes_taylor_test(mesh_name, kind):
    result = step_gradient_taylor(mesh_name, kind)
    assert result.min_rate > 1.9, result


@pytest.mark.parallel(nprocs=2)
def test_step_gradient_passes_taylor_test_in_parallel():
    result = step_gradient_taylor("plate", "both")
    assert result.min_rate > 1.9, result


def unrolled_loss(model, u0, targets, dt, stepper=None):
    """0.5 sum_j ||u_j - target_j||^2 over len(targets) steps; returns loss, states, unknowns."""
    stepper = stepper or femeso.EnergyStableStepper(model, u0, dt)
    stepper.reset(u0)
    starts, unknowns, loss = [], [], 0.0
    for target in targets:
        starts.append(stepper.u.copy(deepcopy=True))
        record = stepper.advance()
        assert record.halvings == 0
        unknowns.append(stepper.w.copy(deepcopy=True))
        loss += 0.5 * fd.assemble((stepper.u - target) ** 2 * fd.dx)
    return loss, starts, unknowns, stepper


def unrolled_gradient(model, u0, targets, dt):
    """Chain step_vjp backwards over the window: returns loss, dL/du0, and fills .grad."""
    loss, starts, unknowns, stepper = unrolled_loss(model, u0, targets, dt)
    v = fd.TestFunction(model.space)
    model.zero_grad()
    adjoint = None
    for j in reversed(range(len(targets))):
        u_j = unknowns[j].subfunctions[0]
        local = fd.assemble((u_j - targets[j]) * v * fd.dx)
        if adjoint is not None:
            local.dat.data[...] += adjoint.dat.data_ro
        stepper.restore(starts[j], unknowns[j])
        adjoint = stepper.vjp(local)
    return loss, adjoint


def window_problem(mesh_name, kind, n_steps):
    model = dissipative_model(mesh(mesh_name), kind, seed=5)
    V = model.space
    u0 = femeso.random_smooth_field(V, seed=5)
    targets = [femeso.random_smooth_field(V, seed=6 + j, amplitude=0.5) for j in range(n_steps)]
    return model, u0, targets


@pytest.mark.parametrize("mesh_name,kind", [("plate", "both"), ("periodic_interval", "conserved")])
def test_state_gradient_of_a_window_passes_taylor_test(mesh_name, kind):
    """dL/du0 of a 3-step unrolled loss: the chained vector-Jacobian products are exact."""
    model, u0, targets = window_problem(mesh_name, kind, 3)
    dt = 0.05
    loss0, dL_du0 = unrolled_gradient(model, u0, targets, dt)
    direction = femeso.random_smooth_field(model.space, seed=11, amplitude=1.0)
    derivative = float(dL_du0.dat.data_ro @ direction.dat.data_ro)
    derivative = model.mesh.comm.allreduce(derivative)
    assert abs(derivative) > 1e-8

    def loss_at(eps):
        perturbed = fd.Function(model.space).assign(u0 + eps * direction)
        return unrolled_loss(model, perturbed, targets, dt)[0]

    result = taylor_test(loss_at, loss0, derivative)
    assert result.min_rate > 1.9, result


@pytest.mark.parametrize("scheme", ["midpoint", "linearised"])
def test_parameter_gradient_of_a_window_passes_taylor_test(scheme):
    """dL/dtheta of a 3-step unrolled loss, through both mobility evaluations."""
    model, u0, targets = window_problem("plate", "both", 3)
    dt = 0.05
    stepper = femeso.EnergyStableStepper(model, u0, dt, scheme=scheme)
    loss0, starts, unknowns, _ = unrolled_loss(model, u0, targets, dt, stepper)
    v = fd.TestFunction(model.space)
    model.zero_grad()
    adjoint = None
    for j in reversed(range(3)):
        local = fd.assemble((unknowns[j].subfunctions[0] - targets[j]) * v * fd.dx)
        if adjoint is not None:
            local.dat.data[...] += adjoint.dat.data_ro
        stepper.restore(starts[j], unknowns[j])
        adjoint = stepper.vjp(local, wrt_state=j > 0)
    params = [p for p in model.parameters() if p.requires_grad]
    grad = torch.cat([p.grad.reshape(-1) for p in params])
    direction = random_direction(params, seed=3)

    def loss_at(eps):
        with perturbed_parameters(params, direction, eps):
            return unrolled_loss(model, u0, targets, dt, stepper)[0]

    result = taylor_test(loss_at, loss0, float(grad @ direction))
    assert result.min_rate > 1.9, result


@pytest.mark.parallel(nprocs=2)
def test_window_gradient_passes_taylor_test_in_parallel():
    test_state_gradient_of_a_window_passes_taylor_test("plate", "both")
