"""The black-box baseline: its stepper (exact Newton, second order) and its adjoint protocol."""

import math

import firedrake as fd
import numpy as np
import pytest
import torch

import femeso
from femeso.peers.blackbox import FIELDS, BlackBoxModel, BlackBoxStepper
from femeso.stepping.energy_stable import StepFailure
from femeso.verification import perturbed_parameters, random_direction, taylor_test
from models import mesh

# Parameter perturbations: small enough to be in the asymptotic range for every direction tried
# (at 1e-2 the quadratic and cubic remainders of one direction cancel near eps = 2e-3); the
# converged loss is reproducible to < 1e-17, far below the smallest remainder (~1e-12).
PARAMETER_EPSILONS = [1e-4 / 2**i for i in range(4)]
STATE_EPSILONS = [1e-2 / 2**i for i in range(4)]


def random_model(msh, seed, *, position=False):
    """A random, untrained model; b drawn at random too (positive, so the model is well posed)."""
    model = BlackBoxModel(fd.FunctionSpace(msh, "CG", 1), width=8, seed=seed, position=position)
    g = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        model.b.copy_(0.005 + 0.05 * torch.rand((), generator=g, dtype=torch.float64))
    return model


class Problem:
    """``L = 1/2 ||u_n - target||^2`` after ``n`` steps from ``u0``, and its gradients."""

    def __init__(self, mesh_name, *, seed=5, dt=0.05, position=False):
        self.model = random_model(mesh(mesh_name), seed, position=position)
        V = self.V = self.model.space
        self.u0 = femeso.random_smooth_field(V, seed=seed)
        self.target = femeso.random_smooth_field(V, seed=seed + 1, amplitude=0.5)
        self.stepper = BlackBoxStepper(self.model, self.u0, dt)
        self.v = fd.TestFunction(V)

    def loss(self, u0=None, n_steps=1):
        """Run ``n_steps`` from ``u0``; return the loss and the saved (u_start, w_end) pairs."""
        st = self.stepper
        st.reset(self.u0 if u0 is None else u0)
        saved = []
        for _ in range(n_steps):
            start = st.u.copy(deepcopy=True)
            record = st.advance()
            assert record.halvings == 0
            saved.append((start, st.w.copy(deepcopy=True)))
        return 0.5 * fd.assemble((st.u - self.target) ** 2 * fd.dx), saved

    def gradients(self, n_steps=1):
        """Loss, dL/dtheta (flat) and dL/du0 by the adjoint protocol, last step first."""
        loss, saved = self.loss(n_steps=n_steps)
        self.model.zero_grad()
        st = self.stepper
        cotangent = fd.assemble((st.u - self.target) * self.v * fd.dx)
        for start, w_end in reversed(saved):
            st.restore(start, w_end)
            cotangent = st.vjp(cotangent)
        params = list(self.model.parameters())
        grad = torch.cat([p.grad.reshape(-1) for p in params])
        return loss, grad, cotangent

    def parameter_taylor(self, grad, loss0, n_steps=1):
        params = list(self.model.parameters())
        direction = random_direction(params, seed=1)

        def loss_at(eps):
            with perturbed_parameters(params, direction, eps):
                return self.loss(n_steps=n_steps)[0]

        return taylor_test(loss_at, loss0, float(grad @ direction), epsilons=PARAMETER_EPSILONS)

    def state_taylor(self, dL_du0, loss0, n_steps=1):
        delta = femeso.random_smooth_field(self.V, seed=11, max_wavenumber=3.0)
        return taylor_test(
            lambda eps: self.loss(fd.Function(self.V).assign(self.u0 + eps * delta), n_steps)[0],
            loss0,
            fd.assemble(fd.action(dL_du0, delta)),
            epsilons=STATE_EPSILONS,
        )


@pytest.mark.parametrize(
    "mesh_name,position", [("plate", True), ("plate", False), ("periodic_interval", False)]
)
def test_one_step_gradients_pass_taylor_tests(mesh_name, position):
    problem = Problem(mesh_name, position=position)
    loss0, grad, dL_du0 = problem.gradients()
    assert float(grad.abs().max()) > 0
    assert float(problem.model.b.grad) != 0
    result = problem.parameter_taylor(grad, loss0)
    assert result.min_rate > 1.9, result
    result = problem.state_taylor(dL_du0, loss0)
    assert result.min_rate > 1.9, result


def test_two_step_chain_passes_taylor_tests():
    """restore(step 2) + vjp, then restore(step 1) + vjp(returned cofunction): the chain rule."""
    problem = Problem("periodic_interval", seed=7, dt=0.1)
    loss0, grad, dL_du0 = problem.gradients(n_steps=2)
    result = problem.parameter_taylor(grad, loss0, n_steps=2)
    assert result.min_rate > 1.9, result
    result = problem.state_taylor(dL_du0, loss0, n_steps=2)
    assert result.min_rate > 1.9, result


def test_vjp_right_after_advance_matches_restore_and_accumulates():
    problem = Problem("periodic_interval", seed=3)
    st, model = problem.stepper, problem.model
    st.reset(problem.u0)
    st.advance()
    cotangent = fd.assemble((st.u - problem.target) * problem.v * fd.dx)
    model.zero_grad()
    direct = st.vjp(cotangent).dat.data_ro.copy()
    grads = [p.grad.clone() for p in model.parameters()]
    w1 = st.w.copy(deepcopy=True)
    st.reset(problem.target)  # move elsewhere; a reset stepper refuses a vjp
    with pytest.raises(ValueError, match="restore"):
        st.vjp(cotangent)
    st.restore(problem.u0, w1)
    restored = st.vjp(cotangent).dat.data_ro
    np.testing.assert_allclose(restored, direct, rtol=1e-10, atol=1e-14)
    for p, g in zip(model.parameters(), grads, strict=True):  # added to the existing grads
        torch.testing.assert_close(p.grad, 2 * g, rtol=1e-9, atol=1e-14)
    assert st.vjp(cotangent, wrt_state=False) is None  # the parameter part alone
    for p, g in zip(model.parameters(), grads, strict=True):
        torch.testing.assert_close(p.grad, 3 * g, rtol=1e-9, atol=1e-14)


def test_newton_is_quadratic_and_rollout_second_order():
    model = random_model(mesh("periodic_interval"), seed=2)
    u0 = femeso.random_smooth_field(model.space, seed=3, n_modes=3, max_wavenumber=2.0)

    def final(dt):
        stepper = BlackBoxStepper(model, u0, dt)
        traj = stepper.rollout(t_end=0.4)
        stats = stepper.solver_stats()
        assert stats["halvings"] == 0
        # exact Jacobian: a few Newton iterations per step to a 1e-13 tolerance
        assert stats["newton_iterations"] <= 4 * stats["steps"], stats
        assert len(traj.states) == stats["steps"] + 1
        assert math.isclose(traj.times[-1], 0.4)
        assert all(math.isnan(r.energy) and r.energy_parts == {} for r in traj.records)
        return stepper.u.copy(deepcopy=True)

    reference = final(0.1 / 8)
    errors = [fd.norm(final(dt) - reference) for dt in (0.1, 0.05)]
    assert errors[0] / errors[1] > 3.5, errors


def test_linear_diffusion_is_crank_nicolson_exactly():
    """a = r = g = 0, c = 1: M(u1 - u0) + dt b K (u0 + u1)/2 = 0, on a Fourier mode exactly."""
    n, length, beta, k, dt, steps = 48, 2 * math.pi, 0.3, 3, 0.1, 10
    model = BlackBoxModel(fd.FunctionSpace(mesh("periodic_interval"), "CG", 1), seed=1)
    with torch.no_grad():
        last = model.network.layers[-1]
        last.weight.zero_()
        last.bias.zero_()
        last.bias[FIELDS.index("c")] = 1.0
        model.b.fill_(beta)
    x = fd.SpatialCoordinate(model.mesh)[0]
    u0 = fd.Function(model.space).interpolate(fd.cos(k * x))
    stepper = BlackBoxStepper(model, u0, dt)
    stepper.rollout(steps)
    h = length / n  # P1 stiffness / mass symbols of the mode on the uniform periodic mesh
    lam = ((2 - 2 * math.cos(k * h)) / h) / (h * (4 + 2 * math.cos(k * h)) / 6)
    gain = ((1 - 0.5 * dt * beta * lam) / (1 + 0.5 * dt * beta * lam)) ** steps
    assert gain < 0.1  # the test has something to measure
    error = np.abs(stepper.u.dat.data_ro - gain * u0.dat.data_ro).max()
    assert error < 1e-12, error
    assert stepper.records[-1].mass[0] == pytest.approx(0.0, abs=1e-12)


def test_failing_steps_are_halved_then_reported():
    problem = Problem("periodic_interval", seed=4)
    st = problem.stepper
    original = st._solve
    calls = []

    def fail_once(dt):
        calls.append(dt)
        return (False, "forced", 0, 0) if len(calls) == 1 else original(dt)

    st._solve = fail_once
    record = st.advance()
    assert record.halvings == 1 and calls[1:] == [0.025, 0.025]
    assert st.t == pytest.approx(0.05)
    with pytest.raises(ValueError, match="restore"):  # the system is the last half step's
        st.vjp(fd.assemble(st.u * problem.v * fd.dx))
    del st._solve
    with torch.no_grad():
        problem.model.b.fill_(float("nan"))
    st.max_halvings = 2
    with pytest.raises(StepFailure, match="failed after 2 halvings"):
        st.advance()


def test_bad_input_is_rejected():
    msh = mesh("periodic_interval")
    with pytest.raises(ValueError, match="scalar continuous Lagrange"):
        BlackBoxModel(fd.VectorFunctionSpace(msh, "CG", 1, dim=2))
    with pytest.raises(ValueError, match="scalar continuous Lagrange"):
        BlackBoxModel(fd.FunctionSpace(msh, "DG", 1))
    model = BlackBoxModel(fd.FunctionSpace(msh, "CG", 1))
    u0 = fd.Function(model.space)
    for dt in (0.0, -1.0, float("nan"), float("inf"), "0.1"):
        with pytest.raises(ValueError, match="dt must be a positive number"):
            BlackBoxStepper(model, u0, dt)
    with pytest.raises(ValueError, match="state space"):
        BlackBoxStepper(model, fd.Function(fd.FunctionSpace(msh, "CG", 2)), 0.1)
    stepper = BlackBoxStepper(model, u0, 0.1)
    with pytest.raises(ValueError, match="mixed space"):
        stepper.restore(u0, u0)
    with pytest.raises(ValueError, match="dt must be a positive number"):
        stepper.restore(u0, stepper.w, dt=-0.1)


def test_save_and_load_round_trip(tmp_path):
    V = fd.FunctionSpace(mesh("periodic_interval"), "CG", 1)
    model = BlackBoxModel(V, width=8, seed=1)
    path = model.save(tmp_path / "baseline")
    other = BlackBoxModel(V, width=8, seed=2, b_init=-3.0)
    other.load_parameters(path)
    for p, q in zip(model.parameters(), other.parameters(), strict=True):
        assert torch.equal(p, q)
    with pytest.raises(ValueError, match="architecture differs"):
        BlackBoxModel(V, width=9).load_parameters(path)


def test_parameter_count_matches_an_onsager_model_of_the_same_width():
    V = fd.FunctionSpace(mesh("periodic_interval"), "CG", 1)
    width = 16
    onsager = femeso.OnsagerModel(
        V,
        femeso.Energy(femeso.CoerciveNeuralDensity(width=width), kappa=1.0),
        mobility=femeso.ConservedMobility(femeso.NeuralField(1, 1, width=width)),
    )
    count = sum(p.numel() for p in BlackBoxModel(V, width=width).parameters())
    reference = sum(p.numel() for p in onsager.parameters())
    assert abs(count - reference) <= 2, (count, reference)


@pytest.mark.parallel(nprocs=2)
def test_one_step_gradients_pass_taylor_tests_in_parallel():
    problem = Problem("plate", position=True)
    loss0, grad, dL_du0 = problem.gradients()
    result = problem.parameter_taylor(grad, loss0)
    assert result.min_rate > 1.9, result
    result = problem.state_taylor(dL_du0, loss0)
    assert result.min_rate > 1.9, result
