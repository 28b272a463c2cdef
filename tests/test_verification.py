"""The Taylor test itself, on maps with known derivatives: a right derivative converges at rate 2,
a wrong one at rate 1 (so a wrong gradient fails the tests that use it), for numbers, NumPy
arrays, torch tensors, Firedrake Functions and the parameters of a torch module."""

import math

import firedrake as fd
import numpy as np
import pytest
import torch
from torch.nn.utils import parameters_to_vector, vector_to_parameters

from femeso.verification import (
    DEFAULT_EPSILONS,
    TaylorResult,
    perturbed_parameters,
    random_direction,
    taylor_test,
)


def test_sin_with_its_derivative_converges_at_rate_two():
    x = 0.7
    result = taylor_test(lambda eps: math.sin(x + eps), math.sin(x), math.cos(x))
    assert isinstance(result, TaylorResult) and result.order == 2
    assert result.epsilons == DEFAULT_EPSILONS == (1e-2, 5e-3, 2.5e-3, 1.25e-3)
    assert len(result.residuals) == 4 and len(result.rates) == 3
    assert result.min_rate > 1.9, result
    # the remainder is -sin(x) eps^2 / 2 + O(eps^3)
    np.testing.assert_allclose(result.residuals[-1], math.sin(x) * 1.25e-3**2 / 2, rtol=1e-3)


def test_a_wrong_derivative_converges_at_rate_one():
    x = 0.7
    result = taylor_test(lambda eps: math.sin(x + eps), math.sin(x), 1.1 * math.cos(x))
    np.testing.assert_allclose(result.rates, 1.0, atol=0.1)
    # even a 0.1 % error is caught: the remainder eps * error overtakes eps^2 sin(x) / 2
    result = taylor_test(lambda eps: math.sin(x + eps), math.sin(x), 1.001 * math.cos(x))
    assert result.min_rate < 1.5, result


def test_without_a_derivative_the_first_order_remainder_converges_at_rate_one():
    result = taylor_test(lambda eps: math.exp(0.2 + eps), math.exp(0.2), None)
    assert result.order == 1
    np.testing.assert_allclose(result.rates, 1.0, atol=0.01)
    assert result.min_rate < 1.9  # a missing derivative cannot pass a rate-2 test


def test_rates_are_normalised_by_the_epsilon_ratio():
    result = taylor_test(lambda eps: math.cos(eps), 1.0, 0.0, epsilons=np.array([1e-1, 1e-2, 1e-3]))
    assert result.epsilons == (1e-1, 1e-2, 1e-3)
    np.testing.assert_allclose(result.rates, 2.0, atol=1e-3)


def vector_map(x):
    return np.array([np.sin(x[0]) * x[1], np.exp(x[0] - x[1]), x[1] ** 3])


def jacobian(x):
    e = np.exp(x[0] - x[1])
    return np.array([[np.cos(x[0]) * x[1], np.sin(x[0])], [e, -e], [0.0, 3 * x[1] ** 2]])


def test_a_vector_map_with_its_jacobian_converges_at_rate_two_and_with_a_wrong_one_at_rate_one():
    x, h = np.array([0.3, -0.8]), np.array([1.0, 0.5])
    F = vector_map(x)
    right = taylor_test(lambda eps: vector_map(x + eps * h), F, jacobian(x) @ h)
    assert right.min_rate > 1.9, right
    # the residual is the Euclidean norm of the vector remainder
    eps = DEFAULT_EPSILONS[0]
    expected = np.linalg.norm(vector_map(x + eps * h) - F - eps * jacobian(x) @ h)
    assert right.residuals[0] == pytest.approx(expected, rel=1e-14)
    wrong_jacobian = jacobian(x)
    wrong_jacobian[2, 1] *= 1.01  # one wrong entry
    wrong = taylor_test(lambda eps: vector_map(x + eps * h), F, wrong_jacobian @ h)
    assert wrong.min_rate < 1.5, wrong


def test_a_torch_map_with_its_jacobian_vector_product():
    g = torch.Generator().manual_seed(0)
    W = torch.randn(5, 3, generator=g, dtype=torch.float64)
    x = torch.randn(3, generator=g, dtype=torch.float64)
    h = torch.randn(3, generator=g, dtype=torch.float64)

    def F(y):
        return torch.tanh(W @ y)

    value, jvp = torch.func.jvp(F, (x,), (h,))
    assert taylor_test(lambda eps: F(x + eps * h), value, jvp).min_rate > 1.9
    assert taylor_test(lambda eps: F(x + eps * h), value, 1.01 * jvp).min_rate < 1.5


def test_a_firedrake_map_uses_the_l2_norm_of_the_remainder():
    V = fd.FunctionSpace(fd.UnitIntervalMesh(8), "CG", 1)
    (x,) = fd.SpatialCoordinate(V.mesh())
    u = fd.Function(V).interpolate(fd.sin(3 * x))
    h = fd.Function(V).interpolate(1 + x)

    def square(eps):
        return fd.Function(V).interpolate((u + eps * h) ** 2)

    value = square(0.0)
    tangent = fd.Function(V).interpolate(2 * u * h)
    result = taylor_test(square, value, tangent)
    assert result.min_rate > 1.9, result
    # u^2 is exact in eps: the remainder is eps^2 h^2, interpolated
    eps = DEFAULT_EPSILONS[1]
    h2 = fd.Function(V).interpolate(h * h)
    assert result.residuals[1] == pytest.approx(eps**2 * fd.norm(h2), rel=1e-8)
    assert taylor_test(square, value, 1.01 * tangent).min_rate < 1.5


def seeded(make):
    """Build a module from a seeded global generator, leaving the global state as it was."""
    with torch.random.fork_rng():
        torch.manual_seed(0)
        return make().double()


def test_a_module_gradient_with_perturbed_parameters():
    net = seeded(
        lambda: torch.nn.Sequential(torch.nn.Linear(2, 4), torch.nn.Tanh(), torch.nn.Linear(4, 1))
    )
    x = torch.randn(7, 2, generator=torch.Generator().manual_seed(1), dtype=torch.float64)
    before = parameters_to_vector(net.parameters()).detach().clone()

    def loss():
        return (net(x) ** 2).mean()

    net.zero_grad()
    loss0 = loss()
    loss0.backward()
    grad = torch.cat([p.grad.reshape(-1) for p in net.parameters()])
    h = random_direction(net, seed=2)

    def loss_at(eps):
        with perturbed_parameters(net, h, eps), torch.no_grad():
            return float(loss())

    result = taylor_test(loss_at, float(loss0.detach()), float(grad @ h))
    assert result.min_rate > 1.9, result
    assert taylor_test(loss_at, float(loss0.detach()), 0.9 * float(grad @ h)).min_rate < 1.5
    assert torch.equal(parameters_to_vector(net.parameters()), before)  # restored bit for bit


def test_perturbed_parameters_is_vector_to_parameters_and_restores_after_an_error():
    net = seeded(lambda: torch.nn.Linear(3, 2))
    frozen = torch.nn.Parameter(torch.zeros(4, dtype=torch.float64), requires_grad=False)
    net.register_parameter("frozen", frozen)
    trainable = [p for p in net.parameters() if p.requires_grad]
    theta = parameters_to_vector(trainable).detach().clone()
    h = random_direction(net, seed=7)
    # the direction the tests used to draw by hand
    expected = torch.randn(
        theta.shape, generator=torch.Generator().manual_seed(7), dtype=theta.dtype
    )
    assert torch.equal(h, expected)
    reference = [p.detach().clone() for p in trainable]
    vector_to_parameters(theta + 0.3 * h, reference)
    with perturbed_parameters(net, h, 0.3) as moved:
        assert len(moved) == len(trainable) == 2  # the frozen parameter is not moved
        for p, q in zip(moved, reference, strict=True):
            assert torch.equal(p, q)
        assert torch.equal(frozen, torch.zeros(4, dtype=torch.float64))
    assert torch.equal(parameters_to_vector(trainable), theta)
    with pytest.raises(RuntimeError, match="inside"), perturbed_parameters(trainable, h, 1.0):
        raise RuntimeError("inside")
    assert torch.equal(parameters_to_vector(trainable), theta)


def test_bad_inputs_are_rejected():
    net = seeded(lambda: torch.nn.Linear(3, 2))
    with (
        pytest.raises(ValueError, match="flat tensor of 8 entries"),
        perturbed_parameters(net, torch.zeros(7), 1.0),
    ):
        pass
    with pytest.raises(ValueError, match="at least two"):
        taylor_test(math.sin, 0.0, 1.0, epsilons=[1e-2])
    with pytest.raises(ValueError, match="positive and decreasing"):
        taylor_test(math.sin, 0.0, 1.0, epsilons=[1e-2, 1e-1])
    with pytest.raises(ValueError, match="no parameters"):
        random_direction([], seed=0)


def test_the_result_reads_well_in_an_assertion_message():
    result = taylor_test(lambda eps: math.sin(0.7 + eps), math.sin(0.7), 0.0)
    text = str(result)
    assert "expected rate 2" in text and "1.250e-03" in text and len(text.splitlines()) == 6
    # pytest shows an assertion message through a repr cut at 240 characters: it fits
    assert len(repr(result)) < 240 and "order=2" in repr(result)
    with pytest.raises(AssertionError, match=r"1\.250?e-03"):
        assert result.min_rate > 1.9, result
    # a zero remainder (a map linear along h) gives nan rates, which fail a rate test
    linear = taylor_test(lambda eps: 2.0 * eps, 0.0, 2.0)
    assert np.isnan(linear.min_rate) and not linear.min_rate > 1.9
