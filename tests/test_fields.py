"""Coercivity, positivity and exactness of the pointwise building blocks, for random parameters."""

import numpy as np
import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

import femeso
from femeso.model.fields import DTYPE
from femeso.model.mobilities import MobilityCoefficient
from femeso.stepping.discrete_gradients import (
    discrete_gradient,
    discrete_gradient_and_jacobian,
    scalar_discrete_gradient,
)

seeds = st.integers(min_value=0, max_value=100_000)
FAST = settings(max_examples=40, deadline=None, derandomize=True)


def randomise(module: torch.nn.Module, seed: int, scale: float = 3.0) -> None:
    """Overwrite every parameter with large random values (an untrained, arbitrary theta)."""
    g = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for p in module.parameters():
            p.copy_(torch.randn(p.shape, generator=g, dtype=p.dtype) * scale)


@FAST
@given(seed=seeds, k=st.integers(1, 3), position=st.booleans())
def test_neural_density_is_coercive_for_every_theta(seed, k, position):
    density = femeso.CoerciveNeuralDensity(k, width=12, dim=2 if position else None, seed=seed)
    randomise(density, seed)
    alpha, C = density.coercivity_bounds()
    assert alpha > 0
    g = torch.Generator().manual_seed(seed + 1)
    u = (
        torch.randn(20_000, k, generator=g, dtype=DTYPE)
        * torch.logspace(-2, 3, 20_000, dtype=DTYPE)[:, None]
    )
    x = torch.rand(20_000, 2, generator=g, dtype=DTYPE) * 10 - 5 if position else None
    F = density(u, x)
    lower = alpha * (u * u).sum(dim=1) - C
    assert int((F < lower - 1e-9 * (1 + lower.abs())).sum()) == 0
    # the additive gauge: F(0, x) = 0 (to rounding: N(0, x) is evaluated in batches of
    # different sizes, which BLAS may sum in different orders)
    zero = torch.zeros(50, k, dtype=DTYPE)
    bound = float(density.network.output_bound()[0].detach())
    assert torch.max(density(zero, x[:50] if position else None).abs()) <= 1e-14 * (1 + bound)


@FAST
@given(seed=seeds, k=st.integers(1, 2), position=st.booleans())
def test_neural_mobility_and_kappa_are_positive_for_every_theta(seed, k, position):
    field = femeso.NeuralField(k, k, width=8, dim=2 if position else None, seed=seed)
    randomise(field, seed, scale=10.0)
    m = MobilityCoefficient(field, k)
    g = torch.Generator().manual_seed(seed)
    u = torch.randn(5000, k, generator=g, dtype=DTYPE) * 100
    x = torch.randn(5000, 2, generator=g, dtype=DTYPE) if position else None
    assert int((m(u, x) < 0).sum()) == 0
    kappa = femeso.NeuralKappa(2, n_states=k, seed=seed)
    randomise(kappa, seed, scale=10.0)
    assert int((kappa(torch.randn(5000, 2, dtype=DTYPE) * 100) <= 0).sum()) == 0


def test_known_mobility_uses_its_positive_part():
    degenerate = femeso.Expression(lambda u, x, ops: u[0] * (1 - u[0]))
    m = MobilityCoefficient(degenerate, 1)
    u = torch.linspace(-2, 3, 101, dtype=DTYPE)[:, None]
    values = m(u, None)[:, 0]
    assert torch.all(values >= 0)
    inside = (u[:, 0] > 0) & (u[:, 0] < 1)
    assert torch.allclose(values[inside], (u[:, 0] * (1 - u[:, 0]))[inside])


@pytest.mark.parametrize("bad", [-1.0, float("nan")])
def test_negative_constant_mobility_is_rejected(bad):
    with pytest.raises(ValueError, match="constant mobility must be finite and >= 0"):
        femeso.LocalMobility(bad)


def test_non_positive_kappa_is_rejected():
    with pytest.raises(ValueError, match="kappa must be positive"):
        femeso.Energy(femeso.CoerciveNeuralDensity(), kappa=0.0)


@FAST
@given(seed=seeds, k=st.integers(1, 3), spread=st.integers(-120, 10).map(lambda i: i / 10))
def test_discrete_gradient_identity_is_exact(seed, k, spread):
    """sum_i mu_i (u1_i - u0_i) = F(u1) - F(u0) to rounding, for tiny and large increments."""
    density = femeso.CoerciveNeuralDensity(k, width=10, seed=seed)
    randomise(density, seed, scale=1.0)
    g = torch.Generator().manual_seed(seed)
    u0 = torch.randn(4000, k, generator=g, dtype=DTYPE)
    u1 = u0 + torch.randn(4000, k, generator=g, dtype=DTYPE) * 10.0**spread

    def F(u, x=None):
        return density(u)

    mu = discrete_gradient(F, u0, u1)
    lhs = (mu * (u1 - u0)).sum(dim=1)
    rhs = F(u1) - F(u0)
    scale = F(u0).abs() + F(u1).abs() + 1.0
    assert torch.max((lhs - rhs).abs() / scale) < 1e-13


@FAST
@given(seed=seeds, k=st.integers(1, 2))
def test_discrete_gradient_jacobian_matches_finite_differences(seed, k):
    density = femeso.CoerciveNeuralDensity(k, width=10, seed=seed)
    randomise(density, seed, scale=1.0)
    g = torch.Generator().manual_seed(seed)
    u0 = torch.randn(200, k, generator=g, dtype=DTYPE)
    # increments away from the quotient's switch to the midpoint derivative (|d| ~ 1e-6)
    step = torch.randn(200, k, generator=g, dtype=DTYPE)
    u1 = u0 + torch.sign(step) * (0.05 + 0.3 * step.abs())

    def F(u, x=None):
        return density(u)

    _, jac = discrete_gradient_and_jacobian(F, u0, u1)
    h = 1e-6
    for j in range(k):
        e = torch.zeros(k, dtype=DTYPE)
        e[j] = h
        fd_col = (discrete_gradient(F, u0, u1 + e) - discrete_gradient(F, u0, u1 - e)) / (2 * h)
        assert torch.allclose(jac[:, :, j], fd_col, rtol=1e-5, atol=1e-7)


def test_discrete_gradient_is_consistent_with_the_derivative():
    """mu(u, u + d) -> F'(u) as d -> 0, at second order (symmetric quotient)."""
    density = femeso.KnownDensity(lambda u, x, ops: ops.exp(u[0]) + u[0] ** 4)
    u = torch.tensor([[0.3]], dtype=DTYPE)
    exact = np.exp(0.3) + 4 * 0.3**3
    errs = []
    for d in (1e-1, 5e-2, 2.5e-2):
        mid = u - d / 2
        mu = discrete_gradient(density, mid, mid + d)
        errs.append(abs(float(mu[0, 0]) - exact))
    r = np.log(np.array(errs[:-1]) / np.array(errs[1:])) / np.log(2)
    assert np.all(r > 1.9), r


def test_neural_field_ufl_rendering_matches_torch():
    import firedrake as fd
    import ufl

    mesh = fd.UnitSquareMesh(4, 4)
    field = femeso.NeuralField(1, 2, width=5, depth=2, dim=2, seed=3, input_scale=[2.0, 1, 1])
    V = fd.FunctionSpace(mesh, "CG", 1)
    X = ufl.SpatialCoordinate(mesh)
    u = fd.Function(V).interpolate(ufl.sin(3 * X[0]) * X[1])
    out = field.ufl([u], X)
    values = [fd.Function(V).interpolate(o).dat.data_ro for o in out]
    x = torch.as_tensor(
        fd.Function(fd.VectorFunctionSpace(mesh, "CG", 1)).interpolate(X).dat.data_ro.copy(),
        dtype=DTYPE,
    )
    expected = (
        field(torch.as_tensor(u.dat.data_ro.copy(), dtype=DTYPE)[:, None], x).detach().numpy()
    )
    for j in range(2):
        assert np.allclose(values[j], expected[:, j], rtol=1e-12, atol=1e-13)


def test_bad_field_arguments_are_rejected():
    with pytest.raises(ValueError, match="n_states=0 must depend on position"):
        femeso.NeuralField(0, 1)
    with pytest.raises(ValueError, match="input_scale must be positive"):
        femeso.NeuralField(1, 1, input_scale=0.0)
    with pytest.raises(TypeError, match="callable"):
        femeso.Expression("u**2")


@FAST
@given(seed=seeds)
def test_learned_mobility_tensor_is_positive_semidefinite_for_every_theta(seed):
    field = femeso.NeuralField(0, 6, dim=3, width=8, seed=seed)
    randomise(field, seed, scale=5.0)
    tensor = femeso.TensorMobility(field, dim=3)
    M = tensor(torch.randn(3000, 3, dtype=DTYPE) * 10)
    assert torch.allclose(M, M.transpose(1, 2))
    eigenvalues = torch.linalg.eigvalsh(M)
    assert int((eigenvalues < -1e-12 * eigenvalues.abs().max()).sum()) == 0


@FAST
@given(seed=seeds, position=st.booleans(), spread=st.integers(-10, 0), depth=st.integers(1, 3))
def test_closed_form_scalar_discrete_gradient_matches_automatic_differentiation(
    seed, position, spread, depth
):
    """The stepper's fast path (forward-mode derivatives) equals the autograd reference."""
    density = femeso.CoerciveNeuralDensity(
        1, width=10, depth=depth, dim=2 if position else None, seed=seed
    )
    randomise(density, seed, scale=1.0)
    g = torch.Generator().manual_seed(seed)
    x = torch.rand(3000, 2, generator=g, dtype=DTYPE) if position else None
    u0 = torch.randn(3000, 1, generator=g, dtype=DTYPE)
    u1 = (
        u0
        + torch.randn(3000, 1, generator=g, dtype=DTYPE)
        * torch.logspace(spread - 3, spread + 1, 3000, dtype=DTYPE)[:, None]
    )
    F0 = density(u0, x)
    fast, slope = scalar_discrete_gradient(density, u0, u1, x, F0=F0)
    ref, jac = discrete_gradient_and_jacobian(density, u0, u1, x, F0=F0)
    assert torch.allclose(fast, ref, rtol=1e-12, atol=1e-12)
    assert torch.allclose(slope[:, 0], jac[:, 0, 0], rtol=1e-9, atol=1e-9)


@FAST
@given(seed=seeds, bound=st.integers(1, 40).map(float), scale=st.sampled_from([0.5, 1.0, 2.0]))
def test_bounded_input_slopes_bound_the_curvature_of_a_random_density(seed, bound, scale):
    density = femeso.CoerciveNeuralDensity(width=12, seed=0)
    density.network.input_scale.fill_(scale)
    randomise(density.network, seed, scale=60.0)  # slopes far above the bound
    first = density.network.layers[0].weight
    before = int((first.abs() > bound).sum())
    assert femeso.model.fields.bound_input_slopes(density, bound) == before > 0
    assert float(first.detach().abs().max()) <= bound
    limit = float(density.network.second_derivative_bound()[0].detach())
    assert limit <= 4 / (3 * 3**0.5) * float(
        density.network.layers[1].weight.detach().abs().sum()
    ) * (bound / scale) ** 2 * (1 + 1e-12)
    u = torch.linspace(-6, 6, 4001, dtype=DTYPE)[:, None]
    _, _, d2N = density.network.forward_with_state_derivatives(u)
    assert float(d2N.detach().abs().max()) <= limit * (1 + 1e-12)


def test_the_curvature_bound_is_attained_by_a_single_unit():
    network = femeso.NeuralField(1, 1, width=3, input_scale=0.5)
    with torch.no_grad():
        network.layers[0].weight.copy_(torch.tensor([[4.0], [1.0], [2.0]]))
        network.layers[0].bias.zero_()
        network.layers[1].weight.copy_(torch.tensor([[-3.0, 0.0, 0.0]]))
    u = torch.linspace(-1, 1, 20001, dtype=DTYPE)[:, None]
    _, _, d2N = network.forward_with_state_derivatives(u)
    limit = float(network.second_derivative_bound()[0].detach())
    assert limit == pytest.approx(4 / (3 * 3**0.5) * 3.0 * (4.0 / 0.5) ** 2)
    assert float(d2N.detach().abs().max()) == pytest.approx(limit, rel=1e-6)


@pytest.mark.parametrize("bad", [0.0, -1.0, float("inf"), float("nan")])
def test_bad_input_slope_bounds_are_rejected(bad):
    with pytest.raises(ValueError, match="input slope bound must be a positive number"):
        femeso.model.fields.bound_input_slopes(femeso.CoerciveNeuralDensity(width=4), bad)


def random_polynomial_density(seed: int, degree: int) -> femeso.CoerciveNeuralDensity:
    """A density with a polynomial part whose lower coefficients are large and of any sign."""
    density = femeso.CoerciveNeuralDensity(width=6, polynomial_degree=degree, seed=seed)
    randomise(density, seed)
    with torch.no_grad():
        g = torch.Generator().manual_seed(seed + 7)
        density.poly_coefficients.mul_(10.0)
        density.raw_leading.copy_(torch.empty((), dtype=DTYPE).uniform_(-12.0, 2.0, generator=g))
    return density


@FAST
@given(seed=seeds, degree=st.sampled_from([4, 6, 8]))
def test_polynomial_density_is_coercive_for_every_theta(seed, degree):
    """Lower coefficients of any sign: F >= alpha u^2 - C still holds, with C from min P."""
    density = random_polynomial_density(seed, degree)
    alpha, C = density.coercivity_bounds()
    assert alpha > 0
    g = torch.Generator().manual_seed(seed + 1)
    u = (
        torch.randn(40_000, 1, generator=g, dtype=DTYPE)
        * torch.logspace(-2, 4, 40_000, dtype=DTYPE)[:, None]
    )
    F = density(u)
    lower = alpha * u[:, 0] ** 2 - C
    assert int((F < lower - 1e-9 * (1 + lower.abs())).sum()) == 0
    # the polynomial's minimum is exact: no sample is lower and samples come within 1e-6 of it
    # (log-spaced out to Cauchy's bound on the roots of P', beyond which P increases)
    coefficients = density.polynomial().detach().numpy()
    minimum = density.polynomial_minimum()
    slopes = np.arange(1, degree + 1) * coefficients[1:]
    reach = 1 + np.abs(slopes[:-1]).max() / slopes[-1]
    half = np.logspace(-6, np.log10(reach), 1_000_000)
    sampled = np.polynomial.polynomial.polyval(np.concatenate([-half, [0.0], half]), coefficients)
    tolerance = 1e-6 * (abs(float(sampled.min())) + 1.0)
    assert sampled.min() - tolerance <= minimum <= sampled.min() + 1e-12 * np.abs(sampled).max()
    scale = float(np.abs(coefficients).max()) + 1.0
    assert float(density(torch.zeros(1, 1, dtype=DTYPE)).detach().abs()) <= 1e-12 * scale


@FAST
@given(seed=seeds, degree=st.sampled_from([4, 6]))
def test_polynomial_density_closed_forms_match_automatic_differentiation(seed, degree):
    density = random_polynomial_density(seed, degree)
    u = torch.linspace(-3, 3, 601, dtype=DTYPE)[:, None]
    dF, d2F = density.state_derivatives(u)
    ref_dF, ref_d2F = femeso.model.energies.Density.state_derivatives(density, u)
    F, dF_pair = density.value_and_state_derivative(u)
    scale = 1 + float(ref_d2F.abs().max())
    assert torch.allclose(dF, ref_dF, rtol=1e-12, atol=1e-12 * scale)
    assert torch.allclose(d2F, ref_d2F, rtol=1e-10, atol=1e-10 * scale)
    assert torch.allclose(dF_pair, ref_dF, rtol=1e-12, atol=1e-12 * scale)
    assert torch.allclose(F, density(u), rtol=1e-12, atol=1e-12 * scale)


def test_polynomial_density_ufl_rendering_and_saved_configuration_match_torch(tmp_path):
    import firedrake as fd
    import ufl

    from femeso.model.onsager import _build

    density = random_polynomial_density(5, 6)
    mesh = fd.UnitIntervalMesh(16)
    V = fd.FunctionSpace(mesh, "CG", 1)
    (X,) = ufl.SpatialCoordinate(mesh)
    u = fd.Function(V).interpolate(4 * ufl.sin(5 * X) - 1)
    rendered = fd.Function(V).interpolate(density.ufl([u])).dat.data_ro
    torch_u = torch.as_tensor(u.dat.data_ro.copy(), dtype=DTYPE)[:, None]
    expected = density(torch_u).detach().numpy()
    assert np.allclose(rendered, expected, rtol=1e-12, atol=1e-10 * np.abs(expected).max())
    rebuilt = _build(density.config(), 1)
    rebuilt.load_state_dict(density.state_dict())
    assert torch.equal(rebuilt(torch_u), density(torch_u))


@pytest.mark.parametrize(
    "kwargs, message",
    [
        ({"polynomial_degree": 5}, "even number >= 4, got 5"),
        ({"polynomial_degree": 2}, "even number >= 4, got 2"),
        ({"polynomial_degree": 6, "n_states": 2}, "one state component, got 2"),
        ({"polynomial_degree": 6, "leading_min": 0.0}, "leading_min must be positive"),
    ],
)
def test_bad_polynomial_parts_are_rejected(kwargs, message):
    with pytest.raises(ValueError, match=message):
        femeso.CoerciveNeuralDensity(**kwargs)
