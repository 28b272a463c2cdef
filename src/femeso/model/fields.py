"""Pointwise fields: small networks and closed-form expressions of the state u (and position x).

A *pointwise field* maps the state ``u`` (``k`` components) and, optionally, the position ``x``
to ``n_outputs`` values at every point. femeso evaluates pointwise fields in two ways:

* in PyTorch, batched over all quadrature points of a mesh (the fast path used by the stepper
  and by training): ``field(u, x)`` with ``u`` of shape ``(n, k)`` and ``x`` of shape ``(n, d)``;
* as a UFL expression (``field.ufl(u, x)``), so that a model's weak form can be written out in
  plain UFL and used in any Firedrake solver (slower, but nothing is hidden).

Both evaluations compute the same mathematical function. :class:`NeuralField` is a multilayer
perceptron with smooth (``tanh``) activations; :class:`Expression` wraps a formula written once
against a small namespace of operations (``ops.tanh``, ``ops.log`` ...) that exists for both
PyTorch tensors and UFL.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence
from typing import Any

import numpy as np
import torch
import ufl
from torch import nn

__all__ = [
    "DTYPE",
    "Expression",
    "NeuralField",
    "PointwiseField",
    "TORCH_OPS",
    "UFL_OPS",
    "bound_input_slopes",
    "softplus",
]

#: femeso computes in double precision: the discrete energy law holds to rounding only then.
DTYPE = torch.float64


class _TorchOps:
    """Elementary functions for PyTorch tensors (the namespace handed to :class:`Expression`)."""

    tanh = staticmethod(torch.tanh)
    exp = staticmethod(torch.exp)
    log = staticmethod(torch.log)
    sqrt = staticmethod(torch.sqrt)
    sin = staticmethod(torch.sin)
    cos = staticmethod(torch.cos)
    abs = staticmethod(torch.abs)

    @staticmethod
    def softplus(z):
        return torch.nn.functional.softplus(z)

    @staticmethod
    def max0(z):
        return torch.clamp(z, min=0.0)


class _UFLOps:
    """Elementary functions for UFL expressions (the namespace handed to :class:`Expression`)."""

    tanh = staticmethod(ufl.tanh)
    exp = staticmethod(ufl.exp)
    log = staticmethod(ufl.ln)
    sqrt = staticmethod(ufl.sqrt)
    sin = staticmethod(ufl.sin)
    cos = staticmethod(ufl.cos)
    abs = staticmethod(abs)

    @staticmethod
    def softplus(z):
        # log(1 + e^z) written so that it neither overflows nor loses precision.
        return ufl.max_value(z, 0) + ufl.ln(1 + ufl.exp(-abs(z)))

    @staticmethod
    def max0(z):
        return ufl.max_value(z, 0)


TORCH_OPS = _TorchOps()
UFL_OPS = _UFLOps()


def softplus(z: torch.Tensor) -> torch.Tensor:
    """Return ``log(1 + exp(z))`` > 0, the positivity transform used throughout femeso."""
    return torch.nn.functional.softplus(z)


class PointwiseField(nn.Module):
    """Base class: a function of the state ``u`` (``n_states`` components) and position ``x``.

    Subclasses implement :meth:`forward` (PyTorch, batched) and :meth:`ufl` (symbolic).
    """

    n_states: int
    n_outputs: int
    uses_position: bool
    uses_state: bool

    def forward(self, u: torch.Tensor, x: torch.Tensor | None = None) -> torch.Tensor:
        """Evaluate at ``n`` points: ``u`` is ``(n, n_states)``, ``x`` is ``(n, d)``."""
        raise NotImplementedError

    def ufl(self, u: Sequence[Any], x: Any = None) -> list[Any]:
        """Return the outputs as UFL expressions of the state components and the position."""
        raise NotImplementedError

    def config(self) -> dict:
        """Return the constructor arguments, so that the field can be rebuilt from a file."""
        raise NotImplementedError


class NeuralField(PointwiseField):
    r"""A multilayer perceptron of the state (and, optionally, of the position).

    .. math:: N(z) = W_L \tanh(\cdots \tanh(W_1 \hat z + b_1) \cdots) + b_L,
              \qquad \hat z = (z - c) / s

    The output is bounded, :math:`|N_j(z)| \le \sum_i |W_{L,ji}| + |b_{L,j}|`, for every input
    and every parameter value (:meth:`output_bound`); femeso builds coercive energies on that.

    Parameters
    ----------
    n_states
        Number of state components the field reads (0 for a field of position only).
    n_outputs
        Number of outputs.
    width, depth
        Hidden layer width and number of hidden layers.
    dim
        Spatial dimension; give it to make the field depend on position ``x`` too.
    input_center, input_scale
        Affine normalisation of the inputs (state first, then position); scalars or sequences.
    seed
        Seed of the parameter initialisation (``None``: PyTorch's global generator).
    init_scale
        Standard deviation multiplier of the output layer at initialisation.

    """

    def __init__(
        self,
        n_states: int = 1,
        n_outputs: int = 1,
        *,
        width: int = 16,
        depth: int = 1,
        dim: int | None = None,
        input_center: float | Sequence[float] = 0.0,
        input_scale: float | Sequence[float] = 1.0,
        seed: int | None = None,
        init_scale: float = 1.0,
    ) -> None:
        super().__init__()
        if n_states < 0 or n_outputs < 1 or width < 1 or depth < 1:
            raise ValueError(
                f"NeuralField needs n_states >= 0, n_outputs >= 1, width >= 1, depth >= 1; got "
                f"n_states={n_states}, n_outputs={n_outputs}, width={width}, depth={depth}"
            )
        if n_states == 0 and dim is None:
            raise ValueError("a NeuralField with n_states=0 must depend on position: give dim")
        self.n_states = n_states
        self.n_outputs = n_outputs
        self.dim = dim
        self.uses_position = dim is not None
        self.uses_state = n_states > 0
        self.width, self.depth, self.seed, self.init_scale = width, depth, seed, init_scale
        n_in = n_states + (dim or 0)
        center = torch.as_tensor(np.broadcast_to(input_center, (n_in,)).copy(), dtype=DTYPE)
        scale = torch.as_tensor(np.broadcast_to(input_scale, (n_in,)).copy(), dtype=DTYPE)
        if torch.any(scale <= 0):
            raise ValueError(f"input_scale must be positive, got {input_scale}")
        self.register_buffer("input_center", center)
        self.register_buffer("input_scale", scale)
        generator = torch.Generator().manual_seed(seed) if seed is not None else None
        sizes = [n_in] + [width] * depth + [n_outputs]
        self.layers = nn.ModuleList()
        for i, (n, m) in enumerate(zip(sizes[:-1], sizes[1:], strict=True)):
            layer = nn.Linear(n, m, dtype=DTYPE)
            gain = init_scale if i == len(sizes) - 2 else 1.0
            with torch.no_grad():
                bound = gain * math.sqrt(3.0 / n)  # uniform with standard deviation gain/sqrt(n)
                layer.weight.copy_(
                    (torch.rand(m, n, generator=generator, dtype=DTYPE) * 2 - 1) * bound
                )
                layer.bias.copy_((torch.rand(m, generator=generator, dtype=DTYPE) * 2 - 1) * bound)
            self.layers.append(layer)

    def _inputs(self, u: torch.Tensor | None, x: torch.Tensor | None) -> torch.Tensor:
        parts = []
        if self.uses_state:
            if u is None or u.shape[-1] != self.n_states:
                raise ValueError(
                    f"NeuralField expects state of shape (n, {self.n_states}), got "
                    f"{None if u is None else tuple(u.shape)}"
                )
            parts.append(u)
        if self.uses_position:
            if x is None or x.shape[-1] != self.dim:
                raise ValueError(
                    f"NeuralField expects positions of shape (n, {self.dim}), got "
                    f"{None if x is None else tuple(x.shape)}"
                )
            parts.append(x)
        z = parts[0] if len(parts) == 1 else torch.cat(parts, dim=-1)
        return (z - self.input_center) / self.input_scale

    def forward(self, u: torch.Tensor | None, x: torch.Tensor | None = None) -> torch.Tensor:
        """Evaluate at ``n`` points; returns ``(n, n_outputs)``."""
        z = self._inputs(u, x)
        for layer in self.layers[:-1]:
            z = torch.tanh(layer(z))
        return self.layers[-1](z)

    def forward_with_state_derivatives(
        self, u: torch.Tensor, x: torch.Tensor | None = None, *, second: bool = True
    ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor | None]:
        """Return the outputs and their first and second derivatives in a scalar state.

        Forward-mode differentiation through the layers (one ``tanh`` per layer), much cheaper
        than reverse-mode automatic differentiation for the Newton iterations of the stepper.

        Parameters
        ----------
        u
            ``(n, 1)`` states (the field must read exactly one state component).
        x
            ``(n, d)`` positions when the field uses them.
        second
            Also return the second derivative (else ``None`` in its place).

        Returns
        -------
        tuple of torch.Tensor
            ``y, dy/du, d2y/du2``, each ``(n, n_outputs)``.

        """
        if self.n_states != 1:
            raise ValueError("state derivatives in forward mode need a field of one state")
        z = self._inputs(u, x)
        # First layer: the input derivative is the constant column W[:, 0] / s_0, its second
        # derivative zero -- no matrix products needed.
        first = self.layers[0]
        da = (first.weight[:, 0] / self.input_scale[0])[None, :]
        z = torch.tanh(first(z))
        if len(self.layers) == 2:
            # One hidden layer: fold da into the output weights, so that each derivative costs
            # one matrix-vector product and no extra (n, width) arrays.
            last = self.layers[-1]
            slope = 1.0 - z * z
            dy = slope @ (last.weight * da).T
            if not second:
                return last(z), dy, None
            d2y = (z * slope) @ (-2.0 * last.weight * da * da).T
            return last(z), dy, d2y
        slope = 1.0 - z * z
        dz = slope * da
        d2z = -2.0 * z * dz * da
        for layer in self.layers[1:-1]:
            a = layer(z)
            da = dz @ layer.weight.T
            d2a = d2z @ layer.weight.T
            z = torch.tanh(a)
            slope = 1.0 - z * z
            dz = slope * da
            d2z = slope * d2a - 2.0 * z * slope * da * da
        last = self.layers[-1]
        return last(z), dz @ last.weight.T, (d2z @ last.weight.T) if second else None

    def second_derivative_bound(self) -> torch.Tensor:
        r"""Return ``C`` with ``|d^2 N_j / du^2| <= C_j`` for every input (one hidden layer).

        With one hidden layer :math:`N = c^T \tanh(w \hat z + b)`,
        :math:`|N''| \le \max|\tanh''| \sum_m |c_m| (w_m / s)^2` and
        :math:`\max|\tanh''| = 4 / (3\sqrt3)`; bounding the first-layer weights
        (:func:`bound_input_slopes`) bounds the curvature of a learned density.
        """
        if self.depth != 1 or self.n_states != 1:
            raise NotImplementedError("second_derivative_bound: one hidden layer, one state")
        first, last = self.layers[0], self.layers[-1]
        slopes = first.weight[:, 0] / self.input_scale[0]
        return 4.0 / (3.0 * math.sqrt(3.0)) * (last.weight.abs() * slopes[None, :] ** 2).sum(dim=1)

    def output_bound(self) -> torch.Tensor:
        """Return ``B`` with ``|N_j(z)| <= B_j`` for every input ``z`` (shape ``(n_outputs,)``)."""
        last = self.layers[-1]
        return last.weight.abs().sum(dim=1) + last.bias.abs()

    def ufl(self, u: Sequence[Any] | None, x: Any = None) -> list[Any]:
        """Return the outputs as UFL expressions (weights become floating-point literals)."""
        z = []
        if self.uses_state:
            z.extend(u)
        if self.uses_position:
            z.extend(x[i] for i in range(self.dim))
        c = self.input_center.detach().numpy()
        s = self.input_scale.detach().numpy()
        z = [(zi - float(ci)) / float(si) for zi, ci, si in zip(z, c, s, strict=True)]
        for i, layer in enumerate(self.layers):
            W = layer.weight.detach().numpy()
            b = layer.bias.detach().numpy()
            z = [
                sum((float(W[j, m]) * z[m] for m in range(W.shape[1])), float(b[j]))
                for j in range(W.shape[0])
            ]
            if i < len(self.layers) - 1:
                z = [ufl.tanh(zj) for zj in z]
        return z

    def config(self) -> dict:
        """Return the constructor arguments."""
        return {
            "type": "NeuralField",
            "n_states": self.n_states,
            "n_outputs": self.n_outputs,
            "width": self.width,
            "depth": self.depth,
            "dim": self.dim,
            "input_center": self.input_center.tolist(),
            "input_scale": self.input_scale.tolist(),
            "seed": self.seed,
            "init_scale": self.init_scale,
        }


class Expression(PointwiseField):
    """A known closed-form field, written once for both PyTorch and UFL.

    Parameters
    ----------
    formula
        ``formula(u, x, ops)`` returning one value or a list of ``n_outputs`` values. ``u`` is a
        list of the state components, ``x`` the position (indexable) or ``None``, and ``ops`` a
        namespace with ``tanh, exp, log, sqrt, sin, cos, abs, softplus, max0``.
    n_states, n_outputs
        Numbers of state components and outputs.
    uses_position
        Whether the formula reads ``x``.
    name
        A label for reports and saved models (the formula itself is code and is not saved).

    Examples
    --------
    The double-well density and a degenerate mobility::

        double_well = Expression(lambda u, x, ops: 0.25 * (u[0] ** 2 - 1) ** 2, name="double well")
        degenerate = Expression(lambda u, x, ops: u[0] * (1 - u[0]), name="u(1-u)")

    """

    def __init__(
        self,
        formula: Callable[..., Any],
        *,
        n_states: int = 1,
        n_outputs: int = 1,
        uses_position: bool = False,
        name: str = "expression",
    ) -> None:
        super().__init__()
        if not callable(formula):
            raise TypeError(f"Expression needs a callable formula(u, x, ops), got {formula!r}")
        self.formula = formula
        self.n_states = n_states
        self.n_outputs = n_outputs
        self.uses_position = uses_position
        self.uses_state = n_states > 0
        self.name = name

    def _as_list(self, value: Any) -> list[Any]:
        values = list(value) if isinstance(value, list | tuple) else [value]
        if len(values) != self.n_outputs:
            raise ValueError(
                f"Expression {self.name!r} returned {len(values)} values, expected {self.n_outputs}"
            )
        return values

    def forward(self, u: torch.Tensor | None, x: torch.Tensor | None = None) -> torch.Tensor:
        """Evaluate at ``n`` points; returns ``(n, n_outputs)``."""
        comps = [u[:, i] for i in range(self.n_states)] if u is not None else []
        xs = x.T if (x is not None and self.uses_position) else None
        n = (u if u is not None else x).shape[0]
        values = self._as_list(self.formula(comps, xs, TORCH_OPS))
        values = [torch.as_tensor(v, dtype=DTYPE).expand(n) for v in values]
        return torch.stack(values, dim=-1)

    def ufl(self, u: Sequence[Any] | None, x: Any = None) -> list[Any]:
        """Return the outputs as UFL expressions."""
        return self._as_list(self.formula(list(u or []), x, UFL_OPS))

    def config(self) -> dict:
        """Return a description; closed-form fields are rebuilt by the user's code, not a file."""
        return {
            "type": "Expression",
            "name": self.name,
            "n_states": self.n_states,
            "n_outputs": self.n_outputs,
            "uses_position": self.uses_position,
        }


def bound_input_slopes(module: nn.Module, bound: float) -> int:
    r"""Clamp the first-layer weights of every :class:`NeuralField` in ``module`` to +-``bound``.

    The weights act on the normalised input :math:`(z - c) / s`, so a ``tanh`` unit then turns
    over an input interval of at least about :math:`2 s / \text{bound}`. Unbounded, a
    second-order optimiser can sharpen one unit into a near-step just outside the data (where no
    loss sees it): measured on Cahn--Hilliard, a unit of weight 316 put ``F'' = 2.8e6`` at
    ``u = -1`` and every learned rollout's Newton solve failed once the state got there.
    Called by :class:`~femeso.training.trainer.Trainer` after every optimiser step (a projection).

    Parameters
    ----------
    module
        A model (or any module) holding neural fields.
    bound
        The largest allowed magnitude (> 0).

    Returns
    -------
    int
        How many weights were clamped.

    """
    if not (math.isfinite(bound) and bound > 0):
        raise ValueError(f"the input slope bound must be a positive number, got {bound!r}")
    clamped = 0
    with torch.no_grad():
        for field in module.modules():
            if isinstance(field, NeuralField):
                weight = field.layers[0].weight
                clamped += int((weight.abs() > bound).sum())
                weight.clamp_(-bound, bound)
    return clamped
