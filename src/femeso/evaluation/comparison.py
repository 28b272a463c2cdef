r"""Interpretability: the learned density and mobility against the true ones, modulo the gauge.

:func:`density_comparison` and :func:`mobility_comparison` fit the learned :math:`F` and
:math:`m(u, x)` to the true ones (:func:`mobility_samples` gives the raw samples of both
mobilities), and :func:`density_curves` gives :math:`F(u)` on a grid for plots, the learned one
mapped back through such a fit.

The gauge, for reading the fits
-------------------------------
:math:`(V, M, W)` and :math:`(cV + d, M/c, W/c)` give the same dynamics, and so does adding any
:math:`g(x)` to :math:`F`; with a *conserved* mobility (:math:`\nabla\cdot m\nabla\mu`) also any
linear term :math:`e\cdot u` (it shifts :math:`\mu` by a constant, whose gradient is zero; and
:math:`\int e\,u` is constant in time because the mass is). femeso's models fix :math:`d` by
:math:`F_\theta(0, x) = 0` and :math:`c` by normalising a learnable :math:`\kappa` to mean
``kappa_ref``. A model that reproduces the true dynamics therefore satisfies
:math:`F_{\rm learned} \approx s F_{\rm true} + o\ (+ e u)` with
:math:`s = \kappa_{\rm ref}/\kappa_{\rm true}` (for a constant true :math:`\kappa`) and
:math:`m_{\rm learned} \approx m_{\rm true}/s`, which is what the comparison functions fit.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from typing import Any

import numpy as np
import torch

from femeso.evaluation.metrics import _r2
from femeso.evaluation.records import _plain
from femeso.model.fields import DTYPE
from femeso.model.onsager import OnsagerModel

__all__ = ["density_comparison", "density_curves", "mobility_comparison", "mobility_samples"]


def _as_states(model: OnsagerModel, u_samples: Any) -> torch.Tensor:
    u = torch.as_tensor(u_samples, dtype=DTYPE).detach()
    if u.ndim == 1:
        u = u[:, None]
    if u.ndim != 2 or u.shape[1] != model.n_states:
        raise ValueError(
            f"u_samples must have shape (n,) or (n, {model.n_states}), got {tuple(u.shape)}"
        )
    if u.shape[0] == 0:
        raise ValueError("u_samples is empty")
    if not torch.all(torch.isfinite(u)):
        raise ValueError("u_samples contains NaN or Inf values")
    return u


def _positions(model: OnsagerModel, u: torch.Tensor, uses_position: bool, what: str):
    """Return the samples' positions: the model's quadrature points, or ``None``.

    Samples of one state at the points get the points; position-dependent fields also accept
    several such states stacked (``torch.cat`` of ``model.state_at_points``), with the points
    repeated.
    """
    n_points = model.x.shape[0]
    if u.shape[0] == n_points:
        return model.x
    if uses_position:
        if n_points and u.shape[0] % n_points == 0:
            return model.x.repeat(u.shape[0] // n_points, 1)
        raise ValueError(
            f"{what} depends on position: sample the states at the model's quadrature points "
            f"({n_points} on this rank, e.g. model.state_at_points(u), or several states "
            f"stacked), got {u.shape[0]} samples"
        )
    return None


def _evaluate_density(density: Any, u: torch.Tensor, x: torch.Tensor | None) -> torch.Tensor:
    from femeso.model.energies import Density

    if isinstance(density, Density):
        return density(u, x)
    values = torch.as_tensor(density(u), dtype=DTYPE)
    return values.reshape(u.shape[0])


def _second_derivatives(density: Any, u: torch.Tensor, x: torch.Tensor | None) -> torch.Tensor:
    """Hessians ``d2F/du_i du_j`` at every sample, ``(n, k, k)``, by automatic differentiation."""
    u = u.detach().clone().requires_grad_(True)
    k = u.shape[1]
    with torch.enable_grad():
        F = _evaluate_density(density, u, x)
        (dF,) = torch.autograd.grad(F.sum(), u, create_graph=True)
        rows = []
        for i in range(k):
            (row,) = torch.autograd.grad(dF[:, i].sum(), u, retain_graph=i < k - 1)
            rows.append(row)
    return torch.stack(rows, dim=1).detach()


def _gather(a: np.ndarray, comm: Any) -> np.ndarray:
    """Concatenate the rows of ``a`` from every rank (all ranks get all rows)."""
    if comm.size == 1:
        return a
    return np.concatenate(comm.allgather(a), axis=0)


def _scale_fit(y: np.ndarray, x: np.ndarray) -> tuple[float, float, float]:
    """Least-squares ``y ~ c x`` through the origin: ``(c, R^2, relative rms residual)``."""
    xx = float(np.dot(x, x))
    c = float(np.dot(x, y)) / xx if xx > 0 else math.nan
    res = y - c * x
    rel = math.sqrt(float(np.sum(res**2)) / max(float(np.sum(y**2)), 1e-300))
    return c, _r2(y, res), rel


def density_comparison(
    model: OnsagerModel,
    true_density: Any,
    u_samples: torch.Tensor | np.ndarray,
    *,
    conserved: bool,
    gauge_slope: float | None = None,
) -> dict[str, Any]:
    r"""Compare the learned density with the true one, modulo the identifiability gauge.

    Fits, by least squares over the samples,

    .. math:: F_{\rm learned}(u) \approx s\,F_{\rm true}(u) + o\ \,(+\ e\cdot u
              \text{ when ``conserved``})

    and, for the second derivatives (invariant to affine terms, computed by ``torch.autograd``),
    :math:`F''_{\rm learned} \approx s_2 F''_{\rm true}` through the origin (an offset in
    :math:`F''` is a quadratic term in :math:`F`, which does change the dynamics).

    The linear term is fitted only with a conserved mobility: there :math:`e\cdot u` shifts the
    chemical potential by a constant, which :math:`\nabla\cdot m\nabla\mu` does not see, so a
    learned :math:`F` is determined only up to it. With a local (Allen--Cahn) mobility a linear
    term is a real force and must not be fitted away.

    Reading the slope: the model's gauge makes :math:`F_\theta(0, x) = 0` (so :math:`o` absorbs
    the true density's :math:`F_{\rm true}(0)`) and normalises a learnable :math:`\kappa` to mean
    ``kappa_ref``; a model with the true dynamics then has
    :math:`V_{\rm learned} = s V_{\rm true} + {\rm const}` with
    :math:`s = \kappa_{\rm ref}/\kappa_{\rm true}` when the true :math:`\kappa` is constant (and
    :math:`m_{\rm learned} = m_{\rm true}/s`, see :func:`mobility_comparison`).
    Without the gauge (``gauge=None``, or a fixed :math:`\kappa`) the same reasoning gives
    :math:`s = \kappa_{\rm learned}/\kappa_{\rm true}`.

    Parameters
    ----------
    model
        The (learned) model; ``F`` is ``model.energy.density`` (the coercive
        :math:`\frac a2 u^2 + \frac b4 u^4` part included), i.e. ``model.density`` at the model's
        quadrature points.
    true_density
        A :class:`~femeso.model.energies.Density` (e.g. a ``KnownDensity``) or a callable
        ``(n, k) tensor -> (n,)`` written in PyTorch (for :math:`F''`).
    u_samples
        States ``(n,)`` or ``(n, k)``: e.g. ``model.state_at_points(u)`` of data states (this
        rank's points; a density that depends on position needs exactly these), or a grid of
        values (the same on every rank) for position-independent densities. Several states'
        samples may be stacked (``torch.cat``).
    conserved
        Whether the mobility is conserved (fit the linear term ``e``).
    gauge_slope
        The slope the gauge implies (the ``gauge`` entry of the result).

    Returns
    -------
    dict
        ``slope`` (``s``), ``offset`` (``o``), ``linear`` (``e``: a float for one component, a
        list for several, ``None`` unless ``conserved``), ``r2`` and ``relative_rms`` of the fit,
        ``second_derivative`` (``{"slope", "r2", "relative_rms"}``), ``gauge`` (with
        ``gauge_slope``: the slope fixed to the gauge's value, e.g.
        :math:`\kappa_{\rm ref}/\kappa_{\rm true}`, only the invisible constant and linear
        terms fitted, and R² against the visible, non-affine part of the true density -- the
        strict test; ``None`` without ``gauge_slope``), ``n_samples`` (all ranks),
        ``conserved``.

    Raises
    ------
    ValueError
        For samples of the wrong shape, empty, non-finite, too few to fit, or not at the
        quadrature points for a position-dependent density.

    """
    u = _as_states(model, u_samples)
    k = model.n_states
    uses_pos = model.energy.density.uses_position or getattr(true_density, "uses_position", False)
    x = _positions(model, u, uses_pos, "the density")
    with torch.no_grad():
        F_l = model.energy.density(u, x).numpy()
        F_t = _evaluate_density(true_density, u, x).detach().numpy()
    H_l = _second_derivatives(model.energy.density, u, x).reshape(u.shape[0], -1).numpy()
    H_t = _second_derivatives(true_density, u, x).reshape(u.shape[0], -1).numpy()
    comm = model.mesh.comm
    u_all = _gather(u.numpy(), comm)
    F_l, F_t = _gather(F_l, comm), _gather(F_t, comm)
    H_l, H_t = _gather(H_l, comm), _gather(H_t, comm)
    if not (np.isfinite(F_t).all() and np.isfinite(F_l).all()):
        raise ValueError("density_comparison: a density is not finite at some samples")
    columns = [F_t, np.ones_like(F_t)] + ([u_all[:, i] for i in range(k)] if conserved else [])
    A = np.stack(columns, axis=1)
    if A.shape[0] < A.shape[1] + 1:
        raise ValueError(
            f"density_comparison: {A.shape[0]} samples are too few to fit {A.shape[1]} coefficients"
        )
    coef, *_ = np.linalg.lstsq(A, F_l, rcond=None)
    residual = F_l - A @ coef
    slope2, r2_2, rel2 = _scale_fit(H_l.ravel(), H_t.ravel())
    gauge = None
    if gauge_slope is not None:
        # The slope is fixed by the gauge; only what the dynamics cannot see (a constant, and a
        # linear term for conserved dynamics) is fitted. R^2 is taken against the part of the
        # true density the dynamics do see (what remains after removing those terms).
        invisible = A[:, 1:]
        target = gauge_slope * F_t

        def visible(y: np.ndarray) -> np.ndarray:
            c, *_ = np.linalg.lstsq(invisible, y, rcond=None)
            return y - invisible @ c, c

        residual_g, c_g = visible(F_l - target)
        signal, _ = visible(target)
        gauge = {
            "slope": float(gauge_slope),
            "offset": float(c_g[0]),
            "linear": [float(c) for c in c_g[1:]] if conserved else None,
            "r2": 1.0 - float(np.sum(residual_g**2)) / max(float(np.sum(signal**2)), 1e-300),
        }
    linear = None
    if conserved:
        linear = float(coef[2]) if k == 1 else [float(c) for c in coef[2:]]
    return _plain(
        {
            "slope": float(coef[0]),
            "offset": float(coef[1]),
            "linear": linear,
            "r2": _r2(F_l, residual),
            "relative_rms": math.sqrt(
                float(np.sum(residual**2)) / max(float(np.sum((F_l - F_l.mean()) ** 2)), 1e-300)
            ),
            "second_derivative": {"slope": slope2, "r2": r2_2, "relative_rms": rel2},
            "gauge": gauge,
            "n_samples": int(A.shape[0]),
            "conserved": bool(conserved),
        }
    )


def _mobility_parts(model: OnsagerModel, kind: str) -> list[Any]:
    parts = [m for m in model.mobilities if getattr(m, "kind", None) == kind]
    if not parts:
        kinds = sorted({m.kind for m in model.mobilities}) or ["none"]
        raise ValueError(f"the model has no {kind!r} mobility (it has: {', '.join(kinds)})")
    return parts


def _learned_mobility(
    model: OnsagerModel, u: torch.Tensor, kind: str, x: torch.Tensor | None
) -> torch.Tensor:
    """Return the summed coefficients of the mobilities of ``kind`` at the samples ``(u, x)``."""
    with torch.no_grad():
        values = [m.coefficient(u, x) for m in _mobility_parts(model, kind)]
        return sum(values[1:], values[0])


def _true_mobility(true_mobility: Any, u: torch.Tensor, x: torch.Tensor | None) -> np.ndarray:
    if not callable(true_mobility):
        return np.full(u.shape[0], float(true_mobility))
    with torch.no_grad():
        values = true_mobility(u, x) if _uses_position(true_mobility) else true_mobility(u)
    return torch.as_tensor(values, dtype=DTYPE).detach().numpy()


def _uses_position(field: Any) -> bool:
    return bool(getattr(field, "uses_position", False))


def mobility_samples(
    model: OnsagerModel,
    true_mobility: Callable[..., Any] | float,
    u_samples: torch.Tensor | np.ndarray,
    *,
    kind: str = "conserved",
) -> dict[str, np.ndarray | None]:
    """Return the learned and the true mobility coefficients at the samples, from every rank.

    The samples as in :func:`mobility_comparison` (states at the model's quadrature points when
    either mobility depends on the position).

    Returns
    -------
    dict
        ``u`` ``(n, k)``, ``x`` ``(n, dim)`` (``None`` when neither mobility depends on the
        position), ``learned`` and ``true`` ``(n, k)``: the samples of all ranks.

    """
    if kind not in ("conserved", "local"):
        raise ValueError(f"kind must be 'conserved' or 'local', got {kind!r}")
    u = _as_states(model, u_samples)
    parts = _mobility_parts(model, kind)
    uses_pos = any(m.coefficient.uses_position for m in parts) or _uses_position(true_mobility)
    x = _positions(model, u, uses_pos, f"the {kind} mobility") if uses_pos else None
    m_l = _learned_mobility(model, u, kind, x).numpy().reshape(u.shape[0], -1)
    m_t = _true_mobility(true_mobility, u, x)
    m_t = np.broadcast_to(m_t.reshape(u.shape[0], -1), m_l.shape)
    comm = model.mesh.comm
    return {
        "u": _gather(u.numpy(), comm),
        "x": None if x is None else _gather(np.ascontiguousarray(x.numpy()), comm),
        "learned": _gather(np.ascontiguousarray(m_l), comm),
        "true": _gather(np.ascontiguousarray(m_t), comm),
    }


def mobility_comparison(
    model: OnsagerModel,
    true_mobility: Callable[..., Any] | float,
    u_samples: torch.Tensor | np.ndarray,
    *,
    kind: str = "conserved",
    density_slope: float | None = None,
    gauge_slope: float | None = None,
) -> dict[str, Any]:
    r"""Compare the learned mobility coefficient with the true one, modulo the gauge.

    Fits :math:`m_{\rm learned}(u, x) \approx c\,m_{\rm true}(u, x)` through the origin over the
    samples (all components together). The gauge (see :func:`density_comparison`) predicts
    :math:`c = 1/s` with :math:`s` the density slope, so ``product`` :math:`= s\,c \approx 1` for
    a model with the true dynamics. With ``gauge_slope`` :math:`s_g` (e.g.
    :math:`\kappa_{\rm ref}/\kappa_{\rm true}`, which the gauge fixes) nothing is fitted:
    ``gauge`` compares :math:`s_g\,m_{\rm learned}` with :math:`m_{\rm true}` directly.

    Either mobility may depend on the position (a field with ``uses_position``, e.g. an
    :class:`~femeso.model.fields.Expression`, called as ``(u, x)``): the samples must then be states
    at the model's quadrature points (one state's or several stacked, see
    :func:`density_comparison`), and the comparison runs over the pairs ``(u, x)``.

    Parameters
    ----------
    model
        The (learned) model; its mobility parts of the given ``kind`` are summed
        (``model.mobility_values``).
    true_mobility
        A number (constant mobility) or a callable ``(n, k) tensor -> (n,)`` or ``(n, k)``
        (e.g. a :class:`~femeso.model.fields.Expression`); one with a true ``uses_position``
        attribute is called as ``(u, x)`` with ``x`` ``(n, dim)``.
    u_samples
        States ``(n,)`` or ``(n, k)`` (see :func:`density_comparison`).
    kind
        ``"conserved"`` or ``"local"``.
    density_slope
        The slope ``s`` of :func:`density_comparison`, to report ``product``.
    gauge_slope
        The density slope the gauge implies, for ``gauge``.

    Returns
    -------
    dict
        ``scale`` (``c``), ``r2``, ``relative_rms``, ``product`` (``s * c``, ``None`` without
        ``density_slope``), ``expected_scale`` (``1/s`` or ``None``), ``gauge`` (``None``
        without ``gauge_slope``, else ``slope`` :math:`s_g`, ``relative_l2``
        :math:`\|s_g m_{\rm learned} - m_{\rm true}\| / \|m_{\rm true}\|` over the samples,
        ``r2`` of :math:`s_g m_{\rm learned}` as a prediction of :math:`m_{\rm true}` and
        ``max_relative``, the largest :math:`|s_g m_{\rm learned} / m_{\rm true} - 1|` where
        :math:`m_{\rm true} > 0`), ``position`` (whether either mobility depends on it), ``kind``,
        ``n_samples``.

    Raises
    ------
    ValueError
        If ``kind`` is unknown or the model has no mobility of that kind, or for bad samples.

    """
    if kind not in ("conserved", "local"):
        raise ValueError(f"kind must be 'conserved' or 'local', got {kind!r}")
    values = mobility_samples(model, true_mobility, u_samples, kind=kind)
    m_l, m_t, uses_pos = values["learned"], values["true"], values["x"] is not None
    scale, r2, rel = _scale_fit(m_l.ravel(), m_t.ravel())
    product = None if density_slope is None else float(density_slope) * scale
    gauge = None
    if gauge_slope is not None:
        predicted, truth = float(gauge_slope) * m_l.ravel(), m_t.ravel()
        residual = predicted - truth
        positive = truth > 0
        gauge = {
            "slope": float(gauge_slope),
            "relative_l2": math.sqrt(
                float(np.sum(residual**2)) / max(float(np.sum(truth**2)), 1e-300)
            ),
            "r2": _r2(truth, residual),
            "max_relative": float(np.max(np.abs(residual[positive] / truth[positive])))
            if positive.any()
            else math.nan,
        }
    return _plain(
        {
            "scale": scale,
            "r2": r2,
            "relative_rms": rel,
            "product": product,
            "expected_scale": None if not density_slope else 1.0 / float(density_slope),
            "gauge": gauge,
            "position": bool(uses_pos),
            "kind": kind,
            "n_samples": int(m_l.shape[0]),
        }
    )


def density_curves(
    model: OnsagerModel,
    u_grid: np.ndarray | torch.Tensor,
    *,
    true_density: Any = None,
    fit: dict[str, Any] | None = None,
) -> dict[str, np.ndarray]:
    r"""Return ``F(u)`` on a grid, the learned one mapped back through a gauge fit, for plots.

    ``"learned"`` is :math:`(F_{\rm learned} - o - e u)/s` with the coefficients of ``fit`` (a
    :func:`density_comparison` result; raw :math:`F_{\rm learned}` without one), ``"true"`` is
    ``true_density`` (when given). Position-independent densities only.
    """
    u = _as_states(model, u_grid)
    if model.n_states != 1:
        raise ValueError("density_curves is for one state component")
    with torch.no_grad():
        learned = model.energy.density(u, None).numpy()
        out = {}
        if fit is not None:
            e = fit.get("linear") or 0.0
            learned = (learned - fit["offset"] - e * u[:, 0].numpy()) / fit["slope"]
        out["learned"] = learned
        if true_density is not None:
            out["true"] = _evaluate_density(true_density, u, None).detach().numpy()
    return out
