"""Taylor tests: check a derivative by the convergence rate of its Taylor remainder.

For a map ``J`` (a scalar loss or a vector-valued step), a point ``m``, a direction ``h`` and the
directional derivative ``dJ(m) h`` to be checked, the remainders

    R1(eps) = || J(m + eps h) - J(m) ||                    -> O(eps)
    R2(eps) = || J(m + eps h) - J(m) - eps dJ(m) h ||      -> O(eps^2)

shrink at rate 1 and 2 as ``eps`` is halved. A wrong derivative leaves ``R2`` at rate 1, so the
rate -- not the size of a difference -- tells a right derivative from a wrong one. This is
pyadjoint's ``taylor_test``; here it is independent of a tape, so it checks femeso's own adjoints
and tangents, PyTorch gradients and Jacobians alike.

The map is given as a function of ``eps`` alone: the caller moves the point (a network's
parameters with :func:`perturbed_parameters`, a Firedrake ``Function`` with ``assign``, an array
with ``+``), so one helper serves every kind of input.

Examples
--------
>>> import math
>>> result = taylor_test(lambda eps: math.sin(1.0 + eps), math.sin(1.0), math.cos(1.0))
>>> result.min_rate > 1.9
True

"""

from __future__ import annotations

import functools
from collections.abc import Callable, Iterable, Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from typing import Any

import numpy as np
import torch
from torch import nn

__all__ = [
    "DEFAULT_EPSILONS",
    "TaylorResult",
    "perturbed_parameters",
    "random_direction",
    "taylor_test",
]

#: The perturbation sizes used when none are given: ``1e-2`` halved three times (as pyadjoint).
DEFAULT_EPSILONS: tuple[float, ...] = tuple(1e-2 / 2**i for i in range(4))


@dataclass(frozen=True, repr=False)
class TaylorResult:
    """The remainders of a Taylor test and their convergence rates.

    Attributes
    ----------
    epsilons
        The perturbation sizes, in the order they were tried.
    residuals
        The remainder's norm at each size: ``R2`` when a derivative was given, else ``R1``.
    rates
        ``log(residuals[i] / residuals[i + 1]) / log(epsilons[i] / epsilons[i + 1])``: the
        observed order between consecutive sizes. A zero residual gives ``nan`` or ``inf``.
    order
        The rate a correct derivative gives: 2 (``R2``), or 1 when no derivative was given.

    """

    epsilons: tuple[float, ...]
    residuals: tuple[float, ...]
    rates: tuple[float, ...]
    order: int

    @property
    def min_rate(self) -> float:
        """The smallest observed rate (``nan`` if any rate is ``nan``, so a test on it fails)."""
        return float(np.min(self.rates))

    def __repr__(self) -> str:
        # Compact: pytest prints an assertion message through a repr cut at 240 characters.
        def row(values: Sequence[float], spec: str) -> str:
            return "(" + ", ".join(format(v, spec) for v in values) + ")"

        return (
            f"TaylorResult(epsilons={row(self.epsilons, '.2e')}, "
            f"residuals={row(self.residuals, '.2e')}, rates={row(self.rates, '.3f')}, "
            f"order={self.order}, min_rate={self.min_rate:.3f})"
        )

    def __str__(self) -> str:
        lines = [f"Taylor test (expected rate {self.order}, observed min {self.min_rate:.3f})"]
        lines.append(f"  {'epsilon':>10}  {'residual':>10}  {'rate':>6}")
        for i, (eps, res) in enumerate(zip(self.epsilons, self.residuals, strict=True)):
            rate = f"{self.rates[i - 1]:6.3f}" if i > 0 else ""
            lines.append(f"  {eps:10.3e}  {res:10.3e}  {rate:>6}")
        return "\n".join(lines)


def taylor_test(
    functional: Callable[[float], Any],
    value: Any,
    derivative: Any,
    *,
    epsilons: Sequence[float] | None = None,
    norm: Callable[[Any], float] | None = None,
) -> TaylorResult:
    """Taylor-test a directional derivative.

    For each ``eps`` in ``epsilons`` the remainder
    ``norm(functional(eps) - value - eps * derivative)`` is computed (``derivative=None``:
    ``norm(functional(eps) - value)``), and the rates at which it shrinks are returned.

    Parameters
    ----------
    functional
        ``functional(eps)`` returns ``J(m + eps h)``: the map at the point moved by ``eps``
        along the direction. The caller moves (and restores) the point, e.g. with
        :func:`perturbed_parameters`. Each returned value is used before the next call.
    value
        ``J(m)``, the unperturbed value.
    derivative
        ``dJ(m) h``, the derivative being checked along the direction: a number for a scalar
        functional (e.g. ``gradient @ h``), the Jacobian-vector product for a vector-valued map.
        ``None`` tests the first-order remainder alone (expected rate 1).
    epsilons
        Perturbation sizes, at least two, positive and decreasing; default
        :data:`DEFAULT_EPSILONS` (``1e-2 / 2**i``, ``i = 0..3``).
    norm
        The norm of a remainder. Default: the absolute value of a number, the Euclidean norm of
        a NumPy array or a torch tensor, and Firedrake's ``norm`` (L2) of a UFL expression
        (values and derivatives that are Firedrake functions).

    Returns
    -------
    TaylorResult
        Residuals and rates; assert on ``result.min_rate`` with the result as the message,
        e.g. ``assert result.min_rate > 1.9, result``.

    Raises
    ------
    ValueError
        If ``epsilons`` has fewer than two sizes, or they are not positive and decreasing.

    Notes
    -----
    Choose ``epsilons`` in the asymptotic range: large enough that the remainder stays above
    the functional's rounding (or solver tolerance), small enough that higher-order terms do
    not dominate. A map that is linear along ``h`` has a round-off remainder and meaningless
    rates.

    """
    sizes = DEFAULT_EPSILONS if epsilons is None else tuple(float(e) for e in epsilons)
    if len(sizes) < 2:
        raise ValueError(f"epsilons must hold at least two sizes, got {sizes}")
    decreasing = all(a > b for a, b in zip(sizes, sizes[1:], strict=False))
    if not decreasing or sizes[-1] <= 0:
        raise ValueError(f"epsilons must be positive and decreasing, got {sizes}")
    measure = norm or _default_norm
    residuals = []
    for eps in sizes:
        remainder = functional(eps) - value
        if derivative is not None:
            remainder = remainder - eps * derivative
        residuals.append(float(measure(remainder)))
    return TaylorResult(
        epsilons=sizes,
        residuals=tuple(residuals),
        rates=_rates(residuals, sizes),
        order=1 if derivative is None else 2,
    )


def _rates(residuals: Sequence[float], epsilons: Sequence[float]) -> tuple[float, ...]:
    r = np.asarray(residuals, dtype=float)
    e = np.asarray(epsilons, dtype=float)
    with np.errstate(divide="ignore", invalid="ignore"):
        rates = np.log2(r[:-1] / r[1:]) / np.log2(e[:-1] / e[1:])
    return tuple(float(x) for x in rates)


def _default_norm(x: Any) -> float:
    if isinstance(x, torch.Tensor):
        return float(torch.linalg.vector_norm(x.detach()))
    if hasattr(x, "ufl_shape"):  # a Firedrake Function or a UFL expression of Functions
        import firedrake  # deferred: the helper works for numbers and tensors without Firedrake

        return float(firedrake.norm(x))
    return float(np.linalg.norm(np.ravel(np.asarray(x))))


def _parameters(parameters: nn.Module | Iterable[torch.Tensor]) -> list[torch.Tensor]:
    if isinstance(parameters, nn.Module):
        return [p for p in parameters.parameters() if p.requires_grad]
    return list(parameters)


def random_direction(parameters: nn.Module | Iterable[torch.Tensor], *, seed: int) -> torch.Tensor:
    """Draw a standard normal direction in the space of the parameters, flattened.

    Parameters
    ----------
    parameters
        A module (its parameters that require gradients) or a sequence of tensors.
    seed
        Seed of the generator.

    Returns
    -------
    torch.Tensor
        ``torch.randn(n, generator=torch.Generator().manual_seed(seed))`` in the parameters'
        dtype, ``n`` their total size, in the order of
        :func:`torch.nn.utils.parameters_to_vector`.

    """
    params = _parameters(parameters)
    if not params:
        raise ValueError("random_direction: no parameters (none requires gradients)")
    dtype = functools.reduce(torch.promote_types, (p.dtype for p in params))
    n = sum(p.numel() for p in params)
    return torch.randn(n, generator=torch.Generator().manual_seed(seed), dtype=dtype)


@contextmanager
def perturbed_parameters(
    parameters: nn.Module | Iterable[torch.Tensor],
    direction: torch.Tensor,
    eps: float,
) -> Iterator[list[torch.Tensor]]:
    """Move parameters to ``theta + eps * direction`` inside a ``with`` block, then restore them.

    Parameters
    ----------
    parameters
        A module (its parameters that require gradients) or a sequence of tensors, changed in
        place.
    direction
        A flat tensor of their total size, in the order of
        :func:`torch.nn.utils.parameters_to_vector` (e.g. from :func:`random_direction`).
    eps
        The step along the direction.

    Yields
    ------
    list of torch.Tensor
        The perturbed parameters.

    Raises
    ------
    ValueError
        If ``direction`` does not have one entry per parameter entry.

    Notes
    -----
    The saved values are copied back on leaving the block, also after an exception, so the
    parameters are restored bit for bit.

    Examples
    --------
    >>> layer = torch.nn.Linear(2, 1)
    >>> h = random_direction(layer, seed=0)
    >>> x = torch.ones(2)
    >>> def loss(eps):
    ...     with perturbed_parameters(layer, h, eps), torch.no_grad():
    ...         return float(layer(x).sum() ** 2)

    """
    params = _parameters(parameters)
    sizes = [p.numel() for p in params]
    if direction.dim() != 1 or direction.numel() != sum(sizes):
        raise ValueError(
            f"direction must be a flat tensor of {sum(sizes)} entries (one per parameter "
            f"entry), got shape {tuple(direction.shape)}"
        )
    with torch.no_grad():
        saved = [p.detach().clone() for p in params]
        for p, theta, step in zip(params, saved, direction.split(sizes), strict=True):
            p.copy_((theta.reshape(-1) + eps * step).view_as(p))
    try:
        yield params
    finally:
        with torch.no_grad():
            for p, theta in zip(params, saved, strict=True):
                p.copy_(theta)
