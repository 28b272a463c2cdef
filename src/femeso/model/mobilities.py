r"""Dissipative mobilities :math:`M \ge 0` and conservative operators :math:`W = -W^*`.

Dissipative parts enter the weak form as a bilinear form :math:`a_M(\mu, v)` with
:math:`a_M(\mu, \mu) \ge 0` for every state and every parameter value:

* :class:`LocalMobility` (:math:`L^2`, non-conserved, Allen--Cahn type):
  :math:`a_M(\mu, v) = \int \sum_i m_i(u, x)\, \mu_i v_i\,dx`;
* :class:`ConservedMobility` (:math:`H^{-1}`, Cahn--Hilliard type, conserves :math:`\int u_i`):
  :math:`a_M(\mu, v) = \int \sum_i m_i(u, x)\, \nabla\mu_i\cdot\nabla v_i\,dx`;
* :class:`TensorMobility` (anisotropic, conserved):
  :math:`a_M(\mu, v) = \int \sum_i \mathbf{M}(x)\nabla\mu_i\cdot\nabla v_i\,dx`,
  :math:`\mathbf{M} = LL^T \succeq 0`.

The coefficients are non-negative by construction: a :class:`~femeso.model.fields.NeuralField` goes
through a softplus, a closed-form :class:`~femeso.model.fields.Expression` through its positive part
:math:`\max(m, 0)` (so a degenerate mobility such as :math:`u(1-u)` stays admissible even where a
state leaves :math:`[0, 1]`), and a constant must be :math:`\ge 0`.

Conservative parts enter as :math:`a_W(\mu, v)` with :math:`a_W(\mu, \mu) = 0` *pointwise*, so
exactly under any quadrature:

* :class:`SkewTransport`: :math:`\frac12\int (b\cdot\nabla\mu_i)\, v_i - (b\cdot\nabla v_i)\,\mu_i`,
  the skew-symmetrised transport along a (given or learned) vector field ``b(x)`` — in 1-D with
  ``b = -1`` this is the KdV operator :math:`u_t = \partial_x\,\delta V/\delta u`;
* :class:`CanonicalCoupling`: :math:`\int c(x)\,(\mu_q v_p - \mu_p v_q)`, the canonical coupling
  of a pair of fields ``(q, p)``: :math:`q_t = c\,\mu_p`, :math:`p_t = -c\,\mu_q`.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from typing import Any

import torch
from torch import nn

from femeso.model.fields import DTYPE, NeuralField, PointwiseField, softplus

__all__ = [
    "CanonicalCoupling",
    "ConservedMobility",
    "LocalMobility",
    "MobilityCoefficient",
    "PointwiseMobility",
    "SkewTransport",
    "TensorMobility",
]


class MobilityCoefficient(nn.Module):
    """Non-negative coefficients ``m_i(u, x) >= 0``, one per state component.

    Parameters
    ----------
    coefficient
        A non-negative number or sequence (constant), a :class:`~femeso.model.fields.NeuralField`
        (made positive by a softplus) or a :class:`~femeso.model.fields.Expression` (its positive
        part is used).
    n_states
        Number of state components.
    vanishing_range
        ``(lo, hi)``: multiply the coefficient by :math:`4(u - lo)(hi - u)/(hi - lo)^2`
        (its positive part), a *degenerate* mobility that vanishes at the ends of a bounded
        state's range -- no flux where one of the two species is absent, as in
        :math:`m = u(1 - u)` -- and is the coefficient itself at the middle. One state component.

    """

    def __init__(
        self,
        coefficient: float | Sequence[float] | PointwiseField,
        n_states: int,
        *,
        vanishing_range: Sequence[float] | None = None,
    ):
        super().__init__()
        self.n_states = n_states
        self.vanishing_range: tuple[float, float] | None = None
        if vanishing_range is not None:
            lo, hi = (float(v) for v in vanishing_range)
            if n_states != 1 or not (math.isfinite(lo) and math.isfinite(hi) and lo < hi):
                raise ValueError(
                    "a degenerate mobility needs one state component and a finite range lo < hi, "
                    f"got {n_states} components and {list(vanishing_range)}"
                )
            self.vanishing_range = (lo, hi)
        if isinstance(coefficient, PointwiseField):
            if coefficient.n_outputs != n_states:
                raise ValueError(
                    f"a mobility field needs {n_states} outputs (one per state component), "
                    f"got {coefficient.n_outputs}"
                )
            if coefficient.uses_state and coefficient.n_states != n_states:
                raise ValueError(
                    f"a mobility field must read all {n_states} state components, "
                    f"it reads {coefficient.n_states}"
                )
            self.field = coefficient
            self.kind = "neural" if isinstance(coefficient, NeuralField) else "expression"
            self.state_dependent = coefficient.uses_state
            self.uses_position = coefficient.uses_position
        else:
            values = torch.as_tensor(coefficient, dtype=DTYPE).expand(n_states).clone()
            if torch.any(values < 0) or not torch.all(torch.isfinite(values)):
                raise ValueError(f"a constant mobility must be finite and >= 0, got {coefficient}")
            self.register_buffer("constant", values)
            self.field = None
            self.kind = "constant"
            self.state_dependent = False
            self.uses_position = False

    def forward(self, u: torch.Tensor, x: torch.Tensor | None) -> torch.Tensor:
        """Return ``(n, k)`` non-negative values at ``n`` points."""
        if self.kind == "constant":
            n = (u if u is not None else x).shape[0]
            return self.constant.expand(n, self.n_states)
        raw = self.field(u if self.field.uses_state else None, x)
        values = softplus(raw) if self.kind == "neural" else torch.clamp(raw, min=0.0)
        if self.vanishing_range is None:
            return values
        return values * torch.clamp(self._vanishing_factor(u), min=0.0)[:, None]

    def _vanishing_factor(self, u: Any) -> Any:
        """:math:`4(u - lo)(hi - u)/(hi - lo)^2` of the first component (torch or UFL)."""
        lo, hi = self.vanishing_range
        first = u[:, 0] if isinstance(u, torch.Tensor) else u[0]
        return 4.0 * (first - lo) * (hi - first) / (hi - lo) ** 2

    def ufl(self, u, x):
        """Return the coefficients as a list of UFL expressions."""
        from femeso.model.fields import UFL_OPS

        if self.kind == "constant":
            return [float(c) for c in self.constant]
        raw = self.field.ufl(u if self.field.uses_state else None, x)
        transform = UFL_OPS.softplus if self.kind == "neural" else UFL_OPS.max0
        values = [transform(r) for r in raw]
        if self.vanishing_range is None:
            return values
        return [UFL_OPS.max0(self._vanishing_factor(u)) * v for v in values]

    def config(self) -> dict:
        """Return the configuration."""
        if self.kind == "constant":
            return {"type": "constant", "value": self.constant.tolist()}
        return self.field.config()


class PointwiseMobility(nn.Module):
    """A dissipative part with a pointwise coefficient ``m_i(u, x) >= 0`` per state component.

    The base of femeso's mobility parts, and the extension point for new ones
    (``docs/extending.md``): a subclass sets

    ``kind``
        Parts of one kind are summed into one coefficient function at the quadrature points.
    ``conserves_mass``
        Whether ``a_M(u; mu, 1) = 0`` (then ``int u`` is conserved).
    ``form(m, mu, v, dx)``
        Its bilinear form for one state component with coefficient ``m`` (UFL); it must be
        positive semi-definite in ``mu`` for ``m >= 0``: the energy law rests on that.

    The coefficient (:class:`MobilityCoefficient`), its evaluation at the points, the stepper's
    linearisation, the adjoint and the Gauss--Newton tangent come with this class.
    """

    kind: str
    conserves_mass: bool

    def __init__(
        self,
        coefficient: float | Sequence[float] | PointwiseField = 1.0,
        *,
        n_states: int = 1,
        vanishing_range: Sequence[float] | None = None,
    ) -> None:
        super().__init__()
        self.coefficient = MobilityCoefficient(
            coefficient, n_states, vanishing_range=vanishing_range
        )
        self.n_states = n_states

    @staticmethod
    def form(m: Any, mu: Any, v: Any, dx: Any) -> Any:
        """Return the bilinear form of one component with coefficient ``m`` (per kind)."""
        raise NotImplementedError

    def ufl_form(self, u: list, X: Any, mu: list, v: list, dx: Any) -> Any:
        """``a_M(u; mu, v)`` of this part with its coefficient written out in UFL."""
        m = self.coefficient.ufl(u, X)
        return sum(self.form(m[i], mu[i], v[i], dx) for i in range(self.n_states))

    def config(self) -> dict:
        """Return the configuration."""
        config = {
            "type": type(self).__name__,
            "n_states": self.n_states,
            "coefficient": self.coefficient.config(),
        }
        if self.coefficient.vanishing_range is not None:
            config["vanishing_range"] = list(self.coefficient.vanishing_range)
        return config


class LocalMobility(PointwiseMobility):
    """Non-conserved (L2) mobility: ``a_M(mu, v) = sum_i (m_i(u, x) mu_i, v_i)``.

    Parameters
    ----------
    coefficient
        See :class:`MobilityCoefficient`.
    n_states
        Number of state components.

    """

    kind = "local"
    conserves_mass = False

    @staticmethod
    def form(m: Any, mu: Any, v: Any, dx: Any) -> Any:
        """``(m mu, v)``: this kind's bilinear form for one component, coefficient ``m``."""
        return m * mu * v * dx


class ConservedMobility(PointwiseMobility):
    """Conserved (H^-1) mobility: ``a_M(mu, v) = sum_i (m_i(u, x) grad mu_i, grad v_i)``.

    Parameters
    ----------
    coefficient
        See :class:`MobilityCoefficient`.
    n_states
        Number of state components.

    """

    kind = "conserved"
    conserves_mass = True

    @staticmethod
    def form(m: Any, mu: Any, v: Any, dx: Any) -> Any:
        """``(m grad mu, grad v)``: this kind's bilinear form for one component."""
        import ufl

        return m * ufl.inner(ufl.grad(mu), ufl.grad(v)) * dx


class SkewTransport(nn.Module):
    r"""Skew-symmetrised transport along ``b(x)``: :math:`a_W(\mu,\mu) = 0` pointwise.

    Parameters
    ----------
    velocity
        A constant vector (sequence of ``dim`` numbers) or a
        :class:`~femeso.model.fields.NeuralField` of position only with ``dim`` outputs (learned).
    dim
        Spatial dimension.
    learnable
        Learn a constant ``velocity`` (its initial value): one parameter per component, the
        smallest learned transport (e.g. KdV's :math:`W = -\partial_x` up to the gauge). The
        architecture (:meth:`config`) records the initial value; the learned one is saved with
        the parameters, so :func:`femeso.load_model` rebuilds the model with the learned velocity
        held fixed.

    """

    #: what the part is, for code that treats kinds differently (e.g. the warm start)
    kind = "transport"

    def __init__(
        self, velocity: Sequence[float] | NeuralField, *, dim: int, learnable: bool = False
    ) -> None:
        super().__init__()
        self.dim = dim
        self.learnable = learnable and not isinstance(velocity, NeuralField)
        if isinstance(velocity, NeuralField):
            if velocity.uses_state or velocity.n_outputs != dim:
                raise ValueError(
                    f"a learned transport velocity must be a field of position with {dim} outputs"
                )
            self.field = velocity
        else:
            values = torch.as_tensor(velocity, dtype=DTYPE).reshape(-1).clone()
            if values.numel() != dim or not torch.all(torch.isfinite(values)):
                raise ValueError(f"velocity must have {dim} finite components, got {velocity}")
            if self.learnable:
                self.constant = nn.Parameter(values)
            else:
                self.register_buffer("constant", values)
            self.initial = values.tolist()
            self.field = None

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """Return ``(n, dim)`` velocities at ``n`` points."""
        if self.field is None:
            return self.constant.expand(x.shape[0], self.dim)
        return self.field(None, x)

    @property
    def value_shape(self) -> tuple[int, ...]:
        """The shape of the coefficient at one point: the velocity, ``(dim,)``."""
        return (self.dim,)

    def point_values(self, x: torch.Tensor) -> torch.Tensor:
        """Return the coefficient at ``n`` points, ``(n, dim)``."""
        return self(x)

    def ufl_coefficient(self, X: Any) -> Any:
        """Return the velocity as a UFL vector of the position ``X``."""
        import ufl

        if self.field is None:
            return ufl.as_vector(self.constant.tolist())
        return ufl.as_vector(self.field.ufl(None, X))

    @staticmethod
    def form(b: Any, mu: list, v: list, dx: Any) -> Any:
        r"""Return ``a_W(mu, v) = sum_i [(b . grad mu_i) v_i - (b . grad v_i) mu_i] / 2`` (skew)."""
        import ufl

        return sum(
            0.5 * (ufl.dot(b, ufl.grad(m)) * w - ufl.dot(b, ufl.grad(w)) * m) * dx
            for m, w in zip(mu, v, strict=True)
        )

    def config(self) -> dict:
        """Return the configuration."""
        if self.field is not None:
            v = self.field.config()
        else:
            v = self.initial if self.learnable else self.constant.tolist()
        return {"type": "SkewTransport", "dim": self.dim, "velocity": v}


class CanonicalCoupling(nn.Module):
    r"""Canonical coupling of fields ``(q, p)``: :math:`q_t = c\,\mu_p,\ p_t = -c\,\mu_q`.

    Parameters
    ----------
    coefficient
        A constant or a :class:`~femeso.model.fields.NeuralField` of position with one output.
    pair
        The indices ``(q, p)`` of the coupled state components.

    """

    #: what the part is, for code that treats kinds differently (e.g. the warm start)
    kind = "coupling"

    def __init__(
        self, coefficient: float | NeuralField = 1.0, *, pair: tuple[int, int] = (0, 1)
    ) -> None:
        super().__init__()
        if len(pair) != 2 or pair[0] == pair[1]:
            raise ValueError(f"pair must name two different state components, got {pair}")
        self.pair = tuple(int(i) for i in pair)
        if isinstance(coefficient, NeuralField):
            if coefficient.uses_state or coefficient.n_outputs != 1:
                raise ValueError("a learned coupling coefficient must be a field of position")
            self.field = coefficient
        else:
            self.register_buffer("constant", torch.tensor([float(coefficient)], dtype=DTYPE))
            self.field = None

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """Return ``(n, 1)`` coefficients at ``n`` points."""
        if self.field is None:
            return self.constant.expand(x.shape[0], 1)
        return self.field(None, x)

    #: The shape of the coefficient at one point: a scalar.
    value_shape: tuple[int, ...] = ()

    def point_values(self, x: torch.Tensor) -> torch.Tensor:
        """Return the coefficient at ``n`` points, ``(n,)``."""
        return self(x)[:, 0]

    def ufl_coefficient(self, X: Any) -> Any:
        """Return the coefficient as a UFL expression of the position ``X``."""
        if self.field is None:
            return float(self.constant[0])
        return self.field.ufl(None, X)[0]

    def form(self, c: Any, mu: list, v: list, dx: Any) -> Any:
        """``a_W(mu, v) = c (mu_q v_p - mu_p v_q)``: ``q_t = c mu_p``, ``p_t = -c mu_q``."""
        q, p = self.pair
        return c * (mu[q] * v[p] - mu[p] * v[q]) * dx

    def config(self) -> dict:
        """Return the configuration."""
        c = self.field.config() if self.field is not None else float(self.constant[0])
        return {"type": "CanonicalCoupling", "pair": list(self.pair), "coefficient": c}


class TensorMobility(nn.Module):
    r"""Anisotropic conserved mobility :math:`\mathbf{M}(x) = L L^T \succeq 0` acting on gradients.

    :math:`\mathbf{M}(x) = L(x) L(x)^T` is symmetric positive semi-definite for every parameter
    value, with :math:`L` lower triangular (its diagonal through a softplus). It conserves
    :math:`\int u_i` like :class:`ConservedMobility`. It depends on position only (state-dependent
    tensors are not supported yet).

    Parameters
    ----------
    tensor
        A constant symmetric positive semi-definite ``dim x dim`` matrix, or a
        :class:`~femeso.model.fields.NeuralField` of position with ``dim (dim + 1) / 2`` outputs
        (the entries of ``L`` row by row).
    dim
        Spatial dimension.
    n_states
        Number of state components (the same tensor acts on each).

    """

    kind = "tensor"
    conserves_mass = True

    def __init__(
        self, tensor: Sequence[Sequence[float]] | NeuralField, *, dim: int, n_states: int = 1
    ) -> None:
        super().__init__()
        self.dim, self.n_states = dim, n_states
        n_entries = dim * (dim + 1) // 2
        if isinstance(tensor, NeuralField):
            if tensor.uses_state or tensor.n_outputs != n_entries:
                raise ValueError(
                    f"a learned mobility tensor must be a field of position with {n_entries} "
                    f"outputs (the lower triangle of L), got n_outputs={tensor.n_outputs}"
                )
            self.field = tensor
        else:
            matrix = torch.as_tensor(tensor, dtype=DTYPE)
            if matrix.shape != (dim, dim):
                raise ValueError(
                    f"the mobility tensor must be {dim} x {dim}, got {tuple(matrix.shape)}"
                )
            if not torch.allclose(matrix, matrix.T) or torch.linalg.eigvalsh(matrix).min() < 0:
                raise ValueError(
                    f"the mobility tensor must be symmetric positive semi-definite, "
                    f"got {matrix.tolist()}"
                )
            self.register_buffer("constant", matrix)
            self.field = None
        rows, cols = torch.tril_indices(dim, dim)
        self.register_buffer("_rows", rows)
        self.register_buffer("_cols", cols)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """Return ``(n, dim, dim)`` symmetric positive semi-definite tensors at ``n`` points."""
        if self.field is None:
            return self.constant.expand(x.shape[0], self.dim, self.dim)
        entries = self.field(None, x)
        diagonal = self._rows == self._cols
        entries = torch.where(diagonal, softplus(entries), entries)
        L = torch.zeros(x.shape[0], self.dim, self.dim, dtype=DTYPE)
        L[:, self._rows, self._cols] = entries
        return L @ L.transpose(1, 2)

    @staticmethod
    def form(M: Any, mu: Any, v: Any, dx: Any) -> Any:
        """``(M grad mu, grad v)``: the tensor's bilinear form for one component."""
        import ufl

        return ufl.inner(M * ufl.grad(mu), ufl.grad(v)) * dx

    def ufl_form(self, u: list, X: Any, mu: list, v: list, dx: Any) -> Any:
        """``a_M(mu, v)`` of this part with the tensor written out in UFL."""
        M = self.ufl(X)
        return sum(self.form(M, mu[i], v[i], dx) for i in range(len(mu)))

    def ufl(self, x) -> Any:
        """Return the tensor as a UFL matrix expression of the position ``x``."""
        import ufl

        from femeso.model.fields import UFL_OPS

        if self.field is None:
            return ufl.as_matrix(self.constant.tolist())
        entries = self.field.ufl(None, x)
        L = [[0.0] * self.dim for _ in range(self.dim)]
        for e, r, c in zip(entries, self._rows.tolist(), self._cols.tolist(), strict=True):
            L[r][c] = UFL_OPS.softplus(e) if r == c else e
        L = ufl.as_matrix(L)
        return L * L.T

    def config(self) -> dict:
        """Return the configuration."""
        t = self.field.config() if self.field is not None else self.constant.tolist()
        return {"type": "TensorMobility", "dim": self.dim, "n_states": self.n_states, "tensor": t}
