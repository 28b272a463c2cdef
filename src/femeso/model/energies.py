r"""Energy functionals of the Onsager class.

.. math::

    V(u) = \int_\Omega F(u, x)\,dx + \frac12 \int_\Omega \sum_i \kappa_i(x) |\nabla u_i|^2\,dx

* :class:`CoerciveNeuralDensity` is a learnable pointwise density that is coercive for every
  parameter value: :math:`F(u, x) \ge \alpha |u|^2 - C` with :math:`\alpha > 0`.
* :class:`KnownDensity` is a closed-form density (double well, Flory--Huggins ...). Densities add
  up (``KnownDensity(...) + CoerciveNeuralDensity(...)``), so a user fixes what is known and
  learns the rest.
* :class:`ConstantKappa` and :class:`NeuralKappa` are the gradient coefficients, positive for
  every parameter value.

The pointwise part ("V0") and the gradient part are reported separately by
:meth:`femeso.model.OnsagerModel.energy_parts`.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence
from typing import Any

import numpy as np
import torch
from torch import nn

from femeso.model.fields import DTYPE, UFL_OPS, Expression, NeuralField, softplus

__all__ = [
    "BarrierDensity",
    "CoerciveNeuralDensity",
    "ConstantKappa",
    "Density",
    "Energy",
    "EntropyDensity",
    "KnownDensity",
    "NeuralKappa",
    "NonlocalEnergy",
    "RangeDensity",
    "SumDensity",
]


class Density(nn.Module):
    """A pointwise energy density ``F(u, x)`` (abstract).

    Subclasses implement :meth:`forward` (PyTorch, ``(n, k), (n, d) -> (n,)``) and :meth:`ufl`.
    """

    n_states: int
    uses_position: bool = False

    def forward(self, u: torch.Tensor, x: torch.Tensor | None = None) -> torch.Tensor:
        """Evaluate ``F`` at ``n`` points."""
        raise NotImplementedError

    def coercivity_bounds(self) -> tuple[float, float] | None:
        """Return ``(alpha, C)`` with ``F >= alpha |u|^2 - C`` if the density guarantees one.

        ``None`` (the default): the density promises nothing (e.g. a known density, whose
        coercivity is the user's).
        """
        return None

    def value_and_state_derivative(
        self, u: torch.Tensor, x: torch.Tensor | None = None
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """Return ``F`` and ``dF/du`` at ``n`` points of a scalar state, ``(n,)`` each."""
        return self.forward(u, x), self.state_derivatives(u, x)[0]

    def state_derivatives(
        self, u: torch.Tensor, x: torch.Tensor | None = None
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """Return ``dF/du`` and ``d2F/du2`` at ``n`` points of a scalar state, ``(n,)`` each.

        The default uses reverse-mode automatic differentiation; densities with a cheaper
        closed form override it.
        """
        if u.shape[-1] != 1:
            raise ValueError("state_derivatives is for densities of one state component")
        u = u.detach().requires_grad_(True)
        zeros = torch.zeros(u.shape[0], dtype=u.dtype)
        with torch.enable_grad():
            F = self.forward(u, x)
            if not F.requires_grad:  # a density that does not depend on u
                return zeros, zeros.clone()
            (dF,) = torch.autograd.grad(F.sum(), u, create_graph=True)
            if not dF.requires_grad:  # linear in u: F'' = 0
                return dF[:, 0].detach(), zeros
            (d2F,) = torch.autograd.grad(dF.sum(), u, allow_unused=True)
        return dF[:, 0].detach(), zeros if d2F is None else d2F[:, 0]

    def ufl(self, u: Sequence[Any], x: Any = None) -> Any:
        """Return ``F`` as a UFL expression of the state components ``u`` and position ``x``."""
        raise NotImplementedError

    def __add__(self, other: Density) -> SumDensity:
        return SumDensity(self, other)

    def config(self) -> dict:
        """Return the constructor arguments (for saving)."""
        raise NotImplementedError


class SumDensity(Density):
    """The sum of two densities (e.g. a known part and a learned correction)."""

    def __init__(self, first: Density, second: Density) -> None:
        super().__init__()
        if first.n_states != second.n_states:
            raise ValueError(
                f"cannot add densities of {first.n_states} and {second.n_states} state components"
            )
        self.first, self.second = first, second
        self.n_states = first.n_states
        self.uses_position = first.uses_position or second.uses_position

    def forward(self, u, x=None):
        """Evaluate ``F_1 + F_2``."""
        return self.first(u, x) + self.second(u, x)

    def value_and_state_derivative(self, u, x=None):
        """Return the summed values and first state derivatives."""
        F1, d1 = self.first.value_and_state_derivative(u, x)
        F2, d2 = self.second.value_and_state_derivative(u, x)
        return F1 + F2, d1 + d2

    def state_derivatives(self, u, x=None):
        """Return the summed first and second state derivatives."""
        d1, dd1 = self.first.state_derivatives(u, x)
        d2, dd2 = self.second.state_derivatives(u, x)
        return d1 + d2, dd1 + dd2

    def ufl(self, u, x=None):
        """Return ``F_1 + F_2`` in UFL."""
        return self.first.ufl(u, x) + self.second.ufl(u, x)

    def config(self) -> dict:
        """Return both parts' configurations."""
        return {"type": "SumDensity", "first": self.first.config(), "second": self.second.config()}


class KnownDensity(Density):
    """A closed-form density ``F(u, x)``.

    Parameters
    ----------
    formula
        ``formula(u, x, ops)`` with ``u`` the list of state components (see
        :class:`femeso.model.fields.Expression`).
    n_states
        Number of state components.
    uses_position
        Whether the formula reads ``x``.
    name
        Label for reports.

    Examples
    --------
    >>> double_well = KnownDensity(lambda u, x, ops: 0.25 * (u[0] ** 2 - 1) ** 2)

    """

    def __init__(
        self,
        formula: Callable[..., Any],
        *,
        n_states: int = 1,
        uses_position: bool = False,
        name: str = "known density",
    ) -> None:
        super().__init__()
        self.expression = Expression(
            formula, n_states=n_states, uses_position=uses_position, name=name
        )
        self.n_states = n_states
        self.uses_position = uses_position
        self.name = name

    def forward(self, u, x=None):
        """Evaluate the formula."""
        return self.expression(u, x)[:, 0]

    def ufl(self, u, x=None):
        """Return the formula in UFL."""
        return self.expression.ufl(u, x)[0]

    def config(self) -> dict:
        """Describe the density (the formula is code: rebuild it from your script)."""
        return {
            "type": "KnownDensity",
            "name": self.name,
            "n_states": self.n_states,
            "uses_position": self.uses_position,
        }


class RangeDensity(Density):
    r"""A density of a scalar state on a declared range ``(lower, upper)`` with a learned strength.

    The base of the range's parts (:class:`BarrierDensity`, :class:`EntropyDensity`): it owns
    the range, the strength :math:`\mathrm{softplus}(\rho) > 0` and the configuration;
    subclasses set ``label`` (for messages) and ``initial_strength`` and implement the density.
    """

    n_states = 1
    label: str
    initial_strength: float

    def __init__(
        self, lower: float, upper: float, *, strength: float | None = None, learnable: bool = True
    ) -> None:
        super().__init__()
        strength = self.initial_strength if strength is None else strength
        lower, upper, strength = float(lower), float(upper), float(strength)
        if not (np.isfinite(lower) and np.isfinite(upper) and lower < upper):
            raise ValueError(
                f"the {self.label}'s range must be finite with lower < upper, "
                f"got [{lower}, {upper}]"
            )
        if not (np.isfinite(strength) and strength > 0):
            raise ValueError(f"the {self.label}'s strength must be > 0, got {strength}")
        self.lower, self.upper, self.learnable = lower, upper, learnable
        # softplus^{-1}(strength), stable for small and large values
        raw = torch.tensor(strength, dtype=DTYPE)
        raw = raw + torch.log(-torch.expm1(-raw))
        self.raw_strength = nn.Parameter(raw, requires_grad=learnable)

    @property
    def strength(self) -> torch.Tensor:
        """The learned strength (> 0)."""
        return softplus(self.raw_strength)

    def config(self) -> dict:
        """Return the configuration (the strength is saved with the parameters)."""
        return {
            "type": type(self).__name__,
            "lower": self.lower,
            "upper": self.upper,
            "learnable": self.learnable,
        }


class BarrierDensity(RangeDensity):
    r"""A logarithmic barrier that keeps a scalar state inside a declared range ``(lo, hi)``.

    .. math:: B(u) = -s\,\ln\frac{4\,(u - lo)(hi - u)}{(hi - lo)^2} \;\ge 0,
              \qquad s = \mathrm{softplus}(\rho) > 0,

    zero at the middle of the range, convex, and :math:`+\infty` at its ends. Added to a learned
    density (``CoerciveNeuralDensity(...) + BarrierDensity(0, 1)``) it makes the range
    invariant *by the energy law*: every accepted step has
    :math:`V_h(u^{n+1}) \le V_h(u^n) < \infty`, the other parts of :math:`V_h` are bounded
    below, so :math:`u^{n+1}` lies strictly inside the range at every quadrature point, for every
    parameter value and step size (a Newton iterate outside has no finite energy and the step
    is halved). An entropy term :math:`(u-lo)\ln(u-lo)` would not do: its energy is finite at
    the ends, and a discrete-gradient step can reach them. Outside the range the density is
    ``nan``.

    Parameters
    ----------
    lower, upper
        The range, ``lower < upper``.
    strength
        Initial :math:`s` (> 0; default 1e-2).
    learnable
        Learn :math:`s` (through :math:`\rho`); otherwise it stays at ``strength``.

    """

    label = "barrier"
    initial_strength = 1e-2

    def forward(self, u, x=None):
        """Evaluate ``B`` at ``n`` points (``nan`` outside the range)."""
        w = self.upper - self.lower
        a, b = u[:, 0] - self.lower, self.upper - u[:, 0]
        return -self.strength * torch.log(4.0 * a * b / w**2)

    def state_derivatives(self, u, x=None):
        """Return ``B'`` and ``B''`` in closed form."""
        a, b = u[:, 0] - self.lower, self.upper - u[:, 0]
        s = self.strength
        return s * (1.0 / b - 1.0 / a), s * (1.0 / a**2 + 1.0 / b**2)

    def ufl(self, u, x=None):
        """Return ``B`` in UFL (the strength at its current value)."""
        import ufl

        w = self.upper - self.lower
        a, b = u[0] - self.lower, self.upper - u[0]
        return -float(self.strength.detach()) * ufl.ln(4.0 * a * b / w**2)

    def contains(self, values: np.ndarray) -> bool:
        """Whether every value lies strictly inside the range."""
        values = np.asarray(values)
        return bool(np.all((values > self.lower) & (values < self.upper)))


class EntropyDensity(RangeDensity):
    r"""A learned mixing entropy of a scalar state bounded to a declared range ``(lo, hi)``.

    .. math:: S(u) = \theta\,\bigl(a \ln a + b \ln b + \ln 2\bigr),
              \qquad a = \frac{u - lo}{hi - lo},\ b = 1 - a,
              \qquad \theta = \mathrm{softplus}(\rho) > 0,

    the ideal (lattice-gas, Flory--Huggins, regular-solution) entropy of mixing of the two
    species a bounded fraction describes: zero at the middle of the range, convex, with
    :math:`S'' = \theta / ((hi - lo)^2\, a\, b)`. Its curvature grows like :math:`1/a` at the
    ends, which neither the bounded network of :class:`CoerciveNeuralDensity` nor the
    :math:`1/a^2` of a :class:`BarrierDensity` follows; with a learned :math:`\theta` the class
    contains every density "entropy + smooth rest". :math:`S` is finite at the ends, so it does
    not keep a rollout inside the range by itself: it is meant to be added next to a
    :class:`BarrierDensity`, which does. Outside the range it is ``nan``.

    Parameters
    ----------
    lower, upper
        The range, ``lower < upper``.
    strength
        Initial :math:`\theta` (> 0; default 0.1).
    learnable
        Learn :math:`\theta` (through :math:`\rho`); otherwise it stays at ``strength``.

    """

    label = "entropy"
    initial_strength = 0.1

    def _fractions(self, u: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        a = (u[:, 0] - self.lower) / (self.upper - self.lower)
        return a, 1.0 - a

    def forward(self, u, x=None):
        """Evaluate ``S`` at ``n`` points (``nan`` outside the range)."""
        a, b = self._fractions(u)
        return self.strength * (a * torch.log(a) + b * torch.log(b) + math.log(2.0))

    def state_derivatives(self, u, x=None):
        """Return ``S'`` and ``S''`` in closed form."""
        a, b = self._fractions(u)
        w = self.upper - self.lower
        theta = self.strength
        return theta * (torch.log(a) - torch.log(b)) / w, theta / (w**2 * a * b)

    def ufl(self, u, x=None):
        """Return ``S`` in UFL (the strength at its current value)."""
        import ufl

        w = self.upper - self.lower
        a = (u[0] - self.lower) / w
        b = 1.0 - a
        theta = float(self.strength.detach())
        return theta * (a * ufl.ln(a) + b * ufl.ln(b) + math.log(2.0))


class CoerciveNeuralDensity(Density):
    r"""A learnable density that is coercive for every parameter value.

    .. math::

        F_\theta(u, x) = \frac{a}{2}|u|^2 + \frac{b}{4}|u|^4 + P_\theta(u)
            + N_\theta(u, x) - N_\theta(0, x),
        \qquad a = a_{\min} + \mathrm{softplus}(\theta_a) > 0,\ b = \mathrm{softplus}(\theta_b)

    with :math:`N_\theta` a :class:`~femeso.model.fields.NeuralField` whose output is bounded by
    :math:`B_\theta`, and an optional polynomial part (``polynomial_degree = p``, one state
    component) :math:`P_\theta(u) = \sum_{j=1}^{p-1} c_j u^j + e\,u^p`, the :math:`c_j` of any
    sign, the leading coefficient :math:`e = e_{\min} + \mathrm{softplus}(\theta_e) > 0` and
    :math:`p` even, so that :math:`P_\theta \ge -C_P > -\infty`. Hence
    :math:`F_\theta(u, x) \ge \frac{a}{2}|u|^2 - 2B_\theta - C_P` for all :math:`u, x`
    (:meth:`coercivity_bounds`). Subtracting :math:`N_\theta(0, x)` is the additive part of
    femeso's identifiability gauge: :math:`F_\theta(0, x) = 0`, which removes the
    constants and functions of ``x`` alone that never change the dynamics.

    The bounded network can follow an energy that *decreases* like :math:`-u^4` only over a
    finite range, and only approximately; the polynomial part represents it on the data's range
    exactly while the small leading term keeps :math:`F` coercive (e.g. the FENE chain, whose
    mesoscopic energy in femeso's gauge :math:`\kappa > 0` is close to :math:`-1.3\,u^4`;
    docs/results.md).

    Parameters
    ----------
    n_states
        Number of state components.
    width, depth
        Size of the network.
    dim
        Spatial dimension, to let ``F`` depend on position.
    quartic
        Include the learnable quartic term (recommended for double-well-like energies).
    a_min
        Floor of the quadratic coefficient (the coercivity constant is at least ``a_min / 2``).
    input_scale
        Typical amplitude of the state, used to normalise the network input.
    polynomial_degree
        Degree ``p`` of the polynomial part: 0 (none) or an even number >= 4 (one state only).
    leading_min
        Floor :math:`e_{\min} > 0` of the polynomial part's leading coefficient.
    seed
        Initialisation seed.

    """

    def __init__(
        self,
        n_states: int = 1,
        *,
        width: int = 16,
        depth: int = 1,
        dim: int | None = None,
        quartic: bool = True,
        a_min: float = 1e-3,
        input_scale: float = 1.0,
        polynomial_degree: int = 0,
        leading_min: float = 1e-6,
        seed: int | None = None,
    ) -> None:
        super().__init__()
        if a_min <= 0:
            raise ValueError(f"a_min must be positive for coercivity, got {a_min}")
        if polynomial_degree and (polynomial_degree < 4 or polynomial_degree % 2):
            raise ValueError(
                f"polynomial_degree must be 0 or an even number >= 4, got {polynomial_degree}"
            )
        if polynomial_degree and n_states != 1:
            raise ValueError(f"a polynomial part needs one state component, got {n_states}")
        if leading_min <= 0:
            raise ValueError(f"leading_min must be positive for coercivity, got {leading_min}")
        self.n_states = n_states
        self.polynomial_degree = polynomial_degree
        self.leading_min = leading_min
        if polynomial_degree:
            # c_1 ... c_{p-1} start at 0 and e at 2 e_min: P = 2 e_min u^p.
            self.poly_coefficients = nn.Parameter(torch.zeros(polynomial_degree - 1, dtype=DTYPE))
            raw = torch.log(torch.expm1(torch.tensor(leading_min, dtype=DTYPE)))
            self.raw_leading = nn.Parameter(raw)
        self.uses_position = dim is not None
        self.quartic = quartic
        self.a_min = a_min
        self.network = NeuralField(
            n_states, 1, width=width, depth=depth, dim=dim, input_scale=input_scale, seed=seed
        )
        self.raw_a = nn.Parameter(torch.tensor(0.0, dtype=DTYPE))
        self.raw_b = nn.Parameter(torch.tensor(-2.0, dtype=DTYPE)) if quartic else None

    @property
    def a(self) -> torch.Tensor:
        """The quadratic coefficient ``a >= a_min``."""
        return self.a_min + softplus(self.raw_a)

    @property
    def b(self) -> torch.Tensor:
        """The quartic coefficient ``b >= 0`` (0 without the quartic term)."""
        return softplus(self.raw_b) if self.quartic else torch.zeros((), dtype=DTYPE)

    def polynomial(self) -> torch.Tensor:
        """Coefficients of the polynomial part, degree 0 first (an empty tensor without one)."""
        if not self.polynomial_degree:
            return torch.zeros(0, dtype=DTYPE)
        leading = self.leading_min + softplus(self.raw_leading)
        zero = torch.zeros(1, dtype=DTYPE)
        return torch.cat([zero, self.poly_coefficients, leading.reshape(1)])

    def _polynomial_derivatives(self, c: torch.Tensor, order: int) -> list[torch.Tensor]:
        """``[P, P', P''][:order + 1]`` at the scalar states ``c`` (zeros without a polynomial)."""
        coefficients = self.polynomial()
        out = []
        for _ in range(order + 1):
            value = torch.zeros_like(c)
            for coefficient in coefficients.flip(0):  # Horner
                value = value * c + coefficient
            out.append(value)
            powers = torch.arange(1, len(coefficients), dtype=DTYPE)
            coefficients = coefficients[1:] * powers
        return out

    def forward(self, u, x=None):
        """Evaluate ``F_theta`` at ``n`` points."""
        sq = (u * u).sum(dim=-1)
        # N(0, x): one evaluation suffices when the network ignores position.
        zero = torch.zeros_like(u if self.uses_position else u[:1])
        offset = self.network(zero, x)[:, 0]
        F = 0.5 * self.a * sq + 0.25 * self.b * sq * sq + self.network(u, x)[:, 0] - offset
        if self.polynomial_degree:
            F = F + self._polynomial_derivatives(u[:, 0], 0)[0]
        return F

    def value_and_state_derivative(self, u, x=None):
        """Return ``F`` and ``F'`` in one pass through the network."""
        if self.n_states != 1:
            return super().value_and_state_derivative(u, x)
        N, dN, _ = self.network.forward_with_state_derivatives(u, x, second=False)
        zero = torch.zeros_like(u if self.uses_position else u[:1])
        offset = self.network(zero, x)[:, 0]
        c = u[:, 0]
        a, b = self.a, self.b
        F = 0.5 * a * c**2 + 0.25 * b * c**4 + N[:, 0] - offset
        dF = a * c + b * c**3 + dN[:, 0]
        if self.polynomial_degree:
            P, dP = self._polynomial_derivatives(c, 1)
            F, dF = F + P, dF + dP
        return F, dF

    def state_derivatives(self, u, x=None):
        """Return ``F'`` and ``F''`` in closed form (forward mode through the network)."""
        if self.n_states != 1:
            return super().state_derivatives(u, x)
        _, dN, d2N = self.network.forward_with_state_derivatives(u, x)
        c = u[:, 0]
        a, b = self.a, self.b
        dF, d2F = a * c + b * c**3 + dN[:, 0], a + 3 * b * c**2 + d2N[:, 0]
        if self.polynomial_degree:
            _, dP, d2P = self._polynomial_derivatives(c, 2)
            dF, d2F = dF + dP, d2F + d2P
        return dF, d2F

    def ufl(self, u, x=None):
        """Return ``F_theta`` in UFL."""
        sq = sum(ui * ui for ui in u)
        a, b = float(self.a.detach()), float(self.b.detach())
        n_u = self.network.ufl(u, x)[0]
        n_0 = self.network.ufl([0.0] * self.n_states, x)[0]
        F = 0.5 * a * sq + 0.25 * b * sq * sq + n_u - n_0
        for j, coefficient in enumerate(self.polynomial().detach().tolist()):
            if coefficient:
                F = F + coefficient * u[0] ** j
        return F

    def polynomial_minimum(self) -> float:
        r"""Return :math:`\min_u P_\theta(u) \le 0` of the polynomial part (0 without one)."""
        if not self.polynomial_degree:
            return 0.0
        coefficients = self.polynomial().detach().numpy()
        stationary = np.polynomial.polynomial.polyroots(
            np.polynomial.polynomial.polyder(coefficients)
        )
        # every root's real part: a double real root may come out as a pair with an O(1e-8)
        # imaginary part, and P at any extra real point can only be >= the minimum
        values = np.polynomial.polynomial.polyval(np.append(stationary.real, 0.0), coefficients)
        return float(min(values.min(), 0.0))

    def coercivity_bounds(self) -> tuple[float, float]:
        """Return ``(alpha, C)`` with ``F(u, x) >= alpha |u|^2 - C`` for every ``u, x``."""
        with torch.no_grad():
            bound = 2.0 * float(self.network.output_bound()[0])
            return 0.5 * float(self.a), bound - self.polynomial_minimum()

    def config(self) -> dict:
        """Return the constructor arguments."""
        net = self.network
        return {
            "type": "CoerciveNeuralDensity",
            "n_states": self.n_states,
            "width": net.width,
            "depth": net.depth,
            "dim": net.dim,
            "quartic": self.quartic,
            "a_min": self.a_min,
            "input_scale": float(net.input_scale[0]),
            "polynomial_degree": self.polynomial_degree,
            "leading_min": self.leading_min,
            "seed": net.seed,
        }


class ConstantKappa(nn.Module):
    """Constant gradient coefficients ``kappa_i > 0``, one per state component.

    Parameters
    ----------
    value
        Initial (or fixed) value(s); a scalar is used for every component.
    n_states
        Number of state components.
    learnable
        Learn the value(s) (through a softplus, so they stay positive).

    """

    uses_position = False

    def __init__(
        self, value: float | Sequence[float] = 1.0, *, n_states: int = 1, learnable: bool = False
    ) -> None:
        super().__init__()
        values = torch.as_tensor(value, dtype=DTYPE).expand(n_states).clone()
        if torch.any(values <= 0):
            raise ValueError(f"kappa must be positive, got {value}")
        self.n_states = n_states
        self.learnable = learnable
        if learnable:
            # inverse softplus, so that the initial value is exactly `value`
            self.raw = nn.Parameter(values + torch.log(-torch.expm1(-values)))
        else:
            self.register_buffer("fixed", values)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """Return ``(n, k)`` values at ``n`` points."""
        values = softplus(self.raw) if self.learnable else self.fixed
        return values.expand(x.shape[0], self.n_states)

    def ufl_values(self, X: Any) -> list[float]:
        """Return the ``k`` coefficients for UFL (numbers; ``X`` is not used)."""
        with torch.no_grad():
            return [float(c) for c in self.forward(torch.zeros(1, 1, dtype=DTYPE))[0]]

    def config(self) -> dict:
        """Return the constructor arguments (the value is saved with the parameters)."""
        values = self.forward(torch.zeros(1, 1, dtype=DTYPE))[0]
        return {
            "type": "ConstantKappa",
            "value": values.tolist(),
            "n_states": self.n_states,
            "learnable": self.learnable,
        }


class NeuralKappa(nn.Module):
    """Space-dependent gradient coefficients ``kappa_i(x) = softplus(N_theta(x)_i) > 0``.

    Parameters
    ----------
    dim
        Spatial dimension.
    n_states
        Number of state components.
    width, depth, seed
        Network size and initialisation seed.

    """

    uses_position = True
    learnable = True

    def __init__(
        self,
        dim: int,
        *,
        n_states: int = 1,
        width: int = 8,
        depth: int = 1,
        seed: int | None = None,
    ) -> None:
        super().__init__()
        self.n_states = n_states
        self.network = NeuralField(0, n_states, width=width, depth=depth, dim=dim, seed=seed)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """Return ``(n, k)`` values at ``n`` points."""
        return softplus(self.network(None, x))

    def ufl_values(self, X: Any) -> list[Any]:
        """Return the ``k`` coefficients as UFL expressions of the coordinates ``X``."""
        return [UFL_OPS.softplus(r) for r in self.network.ufl(None, X)]

    def config(self) -> dict:
        """Return the constructor arguments."""
        net = self.network
        return {
            "type": "NeuralKappa",
            "dim": net.dim,
            "n_states": self.n_states,
            "width": net.width,
            "depth": net.depth,
            "seed": net.seed,
        }


class NonlocalEnergy(nn.Module):
    r"""A learnable nonlocal energy of a few moments of the state.

    .. math:: V_{nl}(u) = N_\theta(c(u)) - N_\theta(0), \qquad
              c_j(u) = \frac{1}{|\Omega|}\int_\Omega u\,\phi_j\,dx, \quad j = 1..r,

    with given basis functions :math:`\phi_j(x)` (low Fourier modes on a periodic box, low
    polynomials, Laplacian eigenfunctions ...) and :math:`N_\theta` a
    :class:`~femeso.model.fields.NeuralField` whose output is bounded, so the total energy stays
    coercive for every parameter value. Subtracting :math:`N_\theta(0)` is the additive gauge.

    Parameters
    ----------
    basis
        Callables ``phi_j(x)`` returning UFL expressions of the spatial coordinate.
    width, depth, seed
        Network size and initialisation seed.
    input_scale
        Typical size of the moments, used to normalise the network input.

    """

    def __init__(
        self,
        basis: Sequence[Callable[[Any], Any]],
        *,
        width: int = 8,
        depth: int = 1,
        seed: int | None = None,
        input_scale: float = 1.0,
    ) -> None:
        super().__init__()
        basis = list(basis)
        if not basis or not all(callable(phi) for phi in basis):
            raise ValueError("NonlocalEnergy needs a non-empty list of callables phi_j(x)")
        self.basis = basis
        self.n_moments = len(basis)
        self.network = NeuralField(
            self.n_moments, 1, width=width, depth=depth, seed=seed, input_scale=input_scale
        )

    def forward(self, c: torch.Tensor, x: torch.Tensor | None = None) -> torch.Tensor:
        """Return ``N(c) - N(0)`` for moments ``c`` of shape ``(n, r)`` (``x`` is unused)."""
        return self.network(c)[:, 0] - self.network(torch.zeros_like(c[:1]))[:, 0]

    def config(self) -> dict:
        """Return the configuration (the basis functions are code and are not saved)."""
        net = self.network
        return {
            "type": "NonlocalEnergy",
            "n_moments": self.n_moments,
            "width": net.width,
            "depth": net.depth,
            "seed": net.seed,
        }


class Energy(nn.Module):
    r"""An energy :math:`V(u) = \int F(u,x)\,dx + \frac12\int \sum_i\kappa_i |\nabla u_i|^2 dx`.

    Parameters
    ----------
    density
        The pointwise density ``F``.
    kappa
        Gradient coefficient(s): a positive number (fixed), a :class:`ConstantKappa` or a
        :class:`NeuralKappa`.
    nonlocal_part
        An optional :class:`NonlocalEnergy` (one state component only).

    """

    def __init__(
        self,
        density: Density,
        kappa: float | nn.Module = 1.0,
        *,
        nonlocal_part: NonlocalEnergy | None = None,
    ) -> None:
        super().__init__()
        if not isinstance(density, Density):
            raise TypeError(f"density must be a femeso Density, got {type(density).__name__}")
        self.density = density
        self.n_states = density.n_states
        if not isinstance(kappa, nn.Module):
            kappa = ConstantKappa(kappa, n_states=density.n_states)
        if kappa.n_states != density.n_states:
            raise ValueError(
                f"kappa has {kappa.n_states} components but the density has {density.n_states}"
            )
        self.kappa = kappa
        if nonlocal_part is not None:
            if not isinstance(nonlocal_part, NonlocalEnergy):
                raise TypeError(f"nonlocal_part must be a NonlocalEnergy, got {nonlocal_part!r}")
            if density.n_states != 1:
                raise ValueError("a nonlocal energy part is supported for one state component")
        self.nonlocal_part = nonlocal_part

    @property
    def uses_position(self) -> bool:
        """Whether the energy depends on position."""
        return self.density.uses_position or self.kappa.uses_position

    def config(self) -> dict:
        """Return the energy's configuration."""
        config = {"density": self.density.config(), "kappa": self.kappa.config()}
        if self.nonlocal_part is not None:
            config["nonlocal"] = self.nonlocal_part.config()
        return config
