r"""A data-driven starting point for training: gradient matching by linear least squares.

Training an Onsager model by rollout losses from a random initialisation fails when the true
energy has a scale far from the networks' initial O(1) output: e.g. Allen--Cahn with the gauge
:math:`\kappa = 1` needs :math:`F' = (u^3 - u)/\varepsilon^2`, a hundred times larger, and the
first-order optimiser moves each parameter by about its learning rate per step. This module
estimates the scale from the data before any rollout.

For a model with a single dissipative part (local or conserved mobility) or a single
conservative transport, and a constant coefficient :math:`c` standing in for the mobility or
velocity, the midpoint relation of femeso's scheme between two data frames,

.. math:: \frac{u^{n+1} - u^n}{\Delta t} = -c\,\mathcal{A}\,\mu, \qquad
          \mu = P\bigl(-\nabla\cdot\kappa\nabla u^{n+1/2} + \bar F'(u^n, u^{n+1})\bigr), \qquad
          F'(u) = \sum_{k=0}^{p} a_k\,t(u)^k,

(:math:`P` the :math:`L^2` projection onto the state space, :math:`\bar F'` the stepper's discrete
gradient, the mean of :math:`F'` along the segment from :math:`u^n` to :math:`u^{n+1}`,
:math:`\mathcal{A}` the unit operator of the part: identity, :math:`-\Delta` or the skew
transport :math:`\tfrac12(\partial_x\cdot - \partial_x^*\cdot)`, :math:`t` an affine map of the
data range onto :math:`[-1, 1]`) is *linear* in :math:`\beta = (c, c\,a_0, \dots, c\,a_p)`. With
:math:`\kappa` fixed by the gauge, the least-squares fit of :math:`\beta` over many frame pairs
(in the :math:`L^2` norm, mass matrix :math:`M`) gives :math:`c` and :math:`F'` directly.
:func:`warm_start` then regresses the model's networks onto them (L-BFGS, PyTorch only): the
density's :math:`F'_\theta` onto the fitted polynomial over the data's range, the mobility
network onto the constant :math:`c` (or sets a learned transport velocity to it). Training starts
from there; the rollout loss and the Levenberg--Marquardt phase remove the bias of the
polynomial and of data generated more finely than the model's step.

For a conserved or transported state a constant chemical potential moves nothing, so
:math:`a_0` is not identifiable and is set to 0. Data whose frames do not follow the one-step
relation (e.g. stiff mesh-scale modes that the midpoint scheme keeps oscillating, as in
Cahn--Hilliard data generated with substeps) leave a large residual; :func:`warm_start` then
leaves the model unchanged.
"""

from __future__ import annotations

import logging
import math
from dataclasses import dataclass

import firedrake as fd
import numpy as np
import torch
import ufl

from femeso.data.trajectories import Dataset
from femeso.model.energies import (
    BarrierDensity,
    CoerciveNeuralDensity,
    Density,
    RangeDensity,
    SumDensity,
)
from femeso.model.fields import DTYPE, NeuralField
from femeso.model.onsager import OnsagerModel
from femeso.stepping.solvers import LU

__all__ = ["GradientMatch", "WarmStart", "gradient_matching", "warm_start"]

logger = logging.getLogger(__name__)

#: 3-point Gauss-Legendre rule on [0, 1].
_GAUSS_POINTS = (0.5 - 0.5 * 0.6**0.5, 0.5, 0.5 + 0.5 * 0.6**0.5)
_GAUSS_WEIGHTS = (5 / 18, 8 / 18, 5 / 18)


@dataclass(frozen=True)
class GradientMatch:
    r"""The least-squares fit of a constant-coefficient member of the class to the data.

    Attributes
    ----------
    operator
        The part that was fitted: ``"local"``, ``"conserved"`` or ``"transport"``.
    coefficient
        The constant mobility (or transport velocity) :math:`c`, in the model's gauge.
    derivative
        Coefficients :math:`a_k` of :math:`F'(u) = \sum_k a_k t(u)^k`, lowest degree first.
    center, half_width
        The affine map :math:`t(u) = (u - \mathrm{center}) / \mathrm{half\_width}`.
    relative_residual
        :math:`\|\dot u + c\,\mathcal{A}\mu\| / \|\dot u\|` over the fitted pairs.
    pairs
        Number of frame pairs used.

    """

    operator: str
    coefficient: float
    derivative: tuple[float, ...]
    center: float
    half_width: float
    relative_residual: float
    pairs: int

    def density_derivative(self, u: np.ndarray) -> np.ndarray:
        """Return the fitted :math:`F'` at the states ``u``."""
        t = (np.asarray(u, dtype=float) - self.center) / self.half_width
        return np.polynomial.polynomial.polyval(t, np.asarray(self.derivative))

    def state_range(self, margin: float = 0.1) -> tuple[float, float]:
        """Return the data's state range widened by ``margin`` of its width on both sides."""
        w = self.half_width * (1.0 + margin)
        return self.center - w, self.center + w


def _part(model: OnsagerModel) -> tuple[str, torch.nn.Module]:
    """Return the single part the fit applies to, or raise with one line."""
    if model.n_states != 1 or model.energy.nonlocal_part is not None:
        raise NotImplementedError(
            "warm start: gradient matching supports one-component states without a nonlocal "
            "energy part"
        )
    parts = list(model.mobilities) + list(model.conservative)
    if len(parts) != 1:
        raise NotImplementedError(
            f"warm start: gradient matching needs exactly one mobility or one transport, the "
            f"model has {len(model.mobilities)} mobilities and {len(model.conservative)} "
            f"conservative parts"
        )
    # A part's kind names its bilinear form (parts of one kind share it): local (m mu, v),
    # conserved (m grad mu, grad v), transport (the skew form along b); only these are fitted.
    part = parts[0]
    kind = getattr(part, "kind", None)
    if kind in ("local", "conserved"):
        return kind, part
    if kind == "transport" and part.field is None and part.dim == 1:
        return "transport", part
    raise NotImplementedError(
        f"warm start: gradient matching does not support a {type(part).__name__} part "
        "(local or conserved mobility, or a constant 1-D transport)"
    )


def _fixed_coefficient(kind: str, part: torch.nn.Module) -> float | None:
    """Return the part's coefficient when it is not learned (then only ``F'`` is fitted)."""
    if kind == "transport":
        return None if part.learnable else float(part.constant[0])
    if part.coefficient.kind == "constant":
        return float(part.coefficient.constant[0])
    return None


def _frame_pairs(data: Dataset, max_pairs: int) -> list[tuple[fd.Function, fd.Function, float]]:
    # The pairs are chosen by index first: only the chosen states are read (data read from
    # disk when used, femeso.data.io.open_dataset, are not loaded whole).
    index = [(i, k) for i, traj in enumerate(data.trajectories) for k in range(len(traj) - 1)]
    if not index:
        raise ValueError("warm start: the data have no pair of consecutive frames")
    if len(index) > max_pairs:
        keep = np.unique(np.linspace(0, len(index) - 1, max_pairs).round().astype(int))
        index = [index[j] for j in keep]
    pairs = []
    for i, k in index:
        traj = data.trajectories[i]
        states = traj.states[k : k + 2]
        pairs.append((states[0], states[1], float(traj.times[k + 1] - traj.times[k])))
    return pairs


def _state_range(data: Dataset) -> tuple[float, float]:
    lo, hi = np.inf, -np.inf
    for traj in data.trajectories:
        for state in traj.states:
            with state.dat.vec_ro as v:
                lo, hi = min(lo, v.min()[1]), max(hi, v.max()[1])
    if not hi > lo:
        raise ValueError(f"warm start: the data are constant ({lo}): nothing to fit")
    return float(lo), float(hi)


class _Columns:
    r"""The columns :math:`g_j = M^{-1}\mathcal{A}\mu_j` at one midpoint, reusing the matrices."""

    def __init__(self, model: OnsagerModel, kind: str, degree: int) -> None:
        V = model.space
        trial, test = fd.TrialFunction(V), fd.TestFunction(V)
        dx = model.rule.dx
        X = ufl.SpatialCoordinate(model.mesh)
        kappa = model._kappa_ufl(X)[0]
        self.degree = degree
        self.mass = fd.assemble(trial * test * fd.dx)
        self.solver = fd.LinearSolver(self.mass, solver_parameters=LU)
        self.stiffness = fd.assemble(kappa * ufl.inner(ufl.grad(trial), ufl.grad(test)) * dx)
        if kind == "local":
            self.operator = None
        elif kind == "conserved":
            self.operator = fd.assemble(ufl.inner(ufl.grad(trial), ufl.grad(test)) * fd.dx)
        else:
            b = ufl.as_vector([1.0])
            self.operator = fd.assemble(
                0.5
                * (ufl.dot(b, ufl.grad(trial)) * test - ufl.dot(b, ufl.grad(test)) * trial)
                * fd.dx
            )
        self.u, self.t0, self.t1 = fd.Function(V), fd.Function(V), fd.Function(V)
        self.load = fd.Cofunction(V.dual())
        self.mu = fd.Function(V)
        self.test, self.dx = test, dx
        self.work = fd.Cofunction(V.dual())

    def _project_and_apply(self, rhs: fd.Cofunction, out: fd.Function) -> None:
        """``out = M^{-1} A M^{-1} rhs`` (``A`` the identity for a local mobility)."""
        self.solver.solve(self.mu if self.operator is not None else out, rhs)
        if self.operator is None:
            return
        with self.mu.dat.vec_ro as x, self.work.dat.vec_wo as y:
            self.operator.petscmat.mult(x, y)
        self.solver.solve(out, self.work)

    def __call__(
        self, u0: fd.Function, u1: fd.Function, center: float, half_width: float
    ) -> list[fd.Function]:
        self.u.assign(0.5 * (u0 + u1))
        self.t0.assign((u0 - center) / half_width)
        self.t1.assign((u1 - center) / half_width)
        columns = [fd.Function(self.u.function_space()) for _ in range(self.degree + 2)]
        with self.u.dat.vec_ro as x, self.load.dat.vec_wo as y:
            self.stiffness.petscmat.mult(x, y)
        self._project_and_apply(self.load, columns[0])
        # the stepper's discrete gradient: the mean of phi_k along the segment u0 -> u1
        # (3-point Gauss-Legendre, exact for the polynomial degrees used here up to 5)
        segment = [self.t0 + s * (self.t1 - self.t0) for s in _GAUSS_POINTS]
        for k in range(self.degree + 1):
            mean = sum(w * t**k for w, t in zip(_GAUSS_WEIGHTS, segment, strict=True))
            fd.assemble(mean * self.test * self.dx, tensor=self.load)
            self._project_and_apply(self.load, columns[k + 1])
        return columns


def gradient_matching(
    model: OnsagerModel,
    data: Dataset,
    *,
    degree: int = 5,
    max_pairs: int = 256,
) -> GradientMatch:
    """Fit a constant coefficient and a polynomial ``F'`` to the data by linear least squares.

    Parameters
    ----------
    model
        The model whose structure (mobility kind or transport, gauge of ``kappa``) is fitted;
        it is not modified.
    data
        Trajectories on the model's function space; pairs of consecutive frames are used.
    degree
        Polynomial degree of ``F'``.
    max_pairs
        At most this many frame pairs, evenly spread over the data.

    Returns
    -------
    GradientMatch
        The fit.

    Raises
    ------
    NotImplementedError
        For models outside the supported structure (one line).
    ValueError
        If the data cannot be fitted (no pairs, constant data, ``degree < 1``).

    """
    if degree < 1:
        raise ValueError(f"warm start: degree must be >= 1, got {degree}")
    kind, part = _part(model)
    fixed = _fixed_coefficient(kind, part)
    lo, hi = _state_range(data)
    center, half_width = 0.5 * (lo + hi), 0.5 * (hi - lo)
    columns = _Columns(model, kind, degree)
    n = degree + 2
    gram, rhs, norm = np.zeros((n, n)), np.zeros(n), 0.0
    pairs = _frame_pairs(data, max_pairs)
    rate = fd.Function(model.space)
    weighted = fd.Cofunction(model.space.dual())
    for u0, u1, dt in pairs:
        g = columns(u0, u1, center, half_width)
        rate.assign((u1 - u0) / dt)
        mg = []
        for gj in g:
            with gj.dat.vec_ro as x, weighted.dat.vec_wo as y:
                columns.mass.petscmat.mult(x, y)
            mg.append(weighted.copy(deepcopy=True))
        with rate.dat.vec_ro as r:
            for i in range(n):
                with mg[i].dat.vec_ro as mi:
                    rhs[i] -= mi.dot(r)
                    for j in range(i, n):
                        with g[j].dat.vec_ro as gj:
                            gram[i, j] += mi.dot(gj)
            with weighted.dat.vec_wo as y:
                columns.mass.petscmat.mult(r, y)
            with weighted.dat.vec_ro as y:
                norm += y.dot(r)
    gram = np.triu(gram) + np.triu(gram, 1).T
    if kind != "local":
        # a constant chemical potential does not move a conserved or transported state: the
        # constant term of F' is not identifiable (set to 0; its column is zero)
        gram[1, :], gram[:, 1], rhs[1] = 0.0, 0.0, 0.0
        gram[1, 1] = 1.0
    if fixed is None:
        beta, residual = _least_squares(gram, rhs, norm)
        c = beta[0]
    else:
        c = fixed
        shifted = norm - 2.0 * c * rhs[0] + c * c * gram[0, 0]  # ||rate + c g_0||^2
        beta_rest, residual = _least_squares(gram[1:, 1:], rhs[1:] - c * gram[1:, 0], shifted)
        residual *= np.sqrt(shifted / norm)
        beta = np.concatenate([[c], beta_rest])
    return GradientMatch(
        operator=kind,
        coefficient=float(c),
        derivative=tuple(float(b / c) if c else math.nan for b in beta[1:]),
        center=center,
        half_width=half_width,
        relative_residual=residual,
        pairs=len(pairs),
    )


def _least_squares(gram: np.ndarray, rhs: np.ndarray, norm: float) -> tuple[np.ndarray, float]:
    """Minimise ``norm - 2 beta.rhs + beta.gram.beta`` (column-scaled normal equations).

    Returns the minimiser and the relative residual ``sqrt(min / norm)``.
    """
    scale = np.sqrt(np.maximum(np.diag(gram), 1e-300))
    solution = np.linalg.lstsq(gram / np.outer(scale, scale), rhs / scale, rcond=1e-13)[0]
    beta = solution / scale
    squared = norm - 2.0 * beta @ rhs + beta @ gram @ beta
    return beta, float(np.sqrt(max(squared, 0.0) / norm)) if norm > 0 else float("nan")


@dataclass(frozen=True)
class WarmStart:
    """What :func:`warm_start` did.

    Attributes
    ----------
    match
        The gradient-matching fit the networks were regressed onto.
    density_error
        Relative root-mean-square mismatch of the model's ``F'`` and the fitted one over the
        data's range after the regression.
    mobility_error
        The same for the mobility coefficient (``nan`` when it is fixed or a transport).
    applied
        Whether the model was changed (False when the fit was not trusted).

    """

    match: GradientMatch
    density_error: float
    mobility_error: float
    applied: bool = True

    def summary(self) -> dict[str, float | str]:
        """Return JSON-ready figures."""
        m = self.match
        return {
            "operator": m.operator,
            "coefficient": m.coefficient,
            "relative_residual": m.relative_residual,
            "pairs": m.pairs,
            "density_error": self.density_error,
            "mobility_error": self.mobility_error,
            "applied": self.applied,
        }


def _regress(
    parameters: list[torch.nn.Parameter],
    mismatch,
    iterations: int,
) -> float:
    """Minimise ``mean(mismatch()**2)`` with L-BFGS; return the final relative RMS mismatch."""
    optimizer = torch.optim.LBFGS(
        parameters,
        lr=1.0,
        max_iter=iterations,
        line_search_fn="strong_wolfe",
        tolerance_grad=1e-12,
        tolerance_change=1e-14,
        history_size=50,
    )

    def closure():
        optimizer.zero_grad()
        loss = mismatch().pow(2).mean()
        loss.backward()
        return loss

    optimizer.step(closure)
    with torch.no_grad():
        return float(mismatch().pow(2).mean().sqrt())


def _fit_polynomial_part(
    density: CoerciveNeuralDensity, u: torch.Tensor, x: torch.Tensor | None, target: torch.Tensor
) -> None:
    r"""Set the free coefficients :math:`c_j` of the density's polynomial part by least squares.

    The network's output layer is zeroed first (the network then adds nothing; the regression
    and training that follow grow it where the polynomial misses), the quadratic, quartic and
    leading terms are held, and :math:`\sum_j j c_j u^{j-1}` is fitted to what they leave of
    ``target`` -- exactly, when the fitted F' has degree below ``p``. Regressing everything
    jointly from the network's random start instead let it take part of a cubic F' with
    near-step units at the ends of the range (KdV, degree 4: F'' = 10^3 there).
    """
    with torch.no_grad():
        output = density.network.layers[-1]
        output.weight.zero_()
        output.bias.zero_()
        c = u[:, 0]
        coefficients = density.polynomial()
        basis = torch.stack([j * c ** (j - 1) for j in range(1, density.polynomial_degree)], dim=1)
        # everything but the free terms (the leading term included) is held
        rest = density.state_derivatives(u, x)[0] - basis @ coefficients[1:-1]
        scale = basis.abs().amax(dim=0).clamp_min(1e-300)
        solution = torch.linalg.lstsq(
            basis / scale, (target - rest)[:, None], driver="gelsd"
        ).solution
        density.poly_coefficients.copy_(solution[:, 0] / scale)


def _network_and_fixed_parts(density: Density) -> tuple[CoerciveNeuralDensity, list[Density]]:
    """Split ``network + barrier [+ entropy]`` into the network density and the range's parts.

    Raises
    ------
    NotImplementedError
        If the density is not a :class:`CoerciveNeuralDensity` plus range parts.

    """
    parts: list[Density] = []
    stack = [density]
    while stack:
        part = stack.pop()
        if isinstance(part, SumDensity):
            stack += [part.second, part.first]
        else:
            parts.append(part)
    networks = [p for p in parts if isinstance(p, CoerciveNeuralDensity)]
    fixed = [p for p in parts if isinstance(p, RangeDensity)]
    if len(networks) != 1 or len(networks) + len(fixed) != len(parts):
        names = " + ".join(type(p).__name__ for p in parts)
        raise NotImplementedError(
            f"warm start: needs a CoerciveNeuralDensity (plus a declared range's barrier and "
            f"entropy), the model has {names}"
        )
    return networks[0], fixed


def warm_start(
    model: OnsagerModel,
    data: Dataset,
    *,
    degree: int = 5,
    max_pairs: int = 256,
    samples: int = 201,
    iterations: int = 500,
    max_residual: float = 0.5,
) -> WarmStart:
    """Set the model's networks to the gradient-matching fit of the data (see the module).

    Parameters
    ----------
    model
        An Onsager model with a :class:`~femeso.model.energies.CoerciveNeuralDensity` and one local
        or conserved mobility (constant or a neural field) or one constant 1-D transport;
        modified in place.
    data
        Training trajectories on the model's space.
    degree, max_pairs
        Passed to :func:`gradient_matching`.
    samples
        Points of the data's state range (widened by 10 %) the networks are regressed on.
    iterations
        L-BFGS iterations of each regression.
    max_residual
        Leave the model unchanged (and log a warning) when the fit's relative residual is
        larger: the data do not follow the one-step relation closely enough to trust it.

    Returns
    -------
    WarmStart
        The fit and the regression mismatches; ``applied`` is False (model unchanged, a warning
        logged) when the fit is not trusted: relative residual above ``max_residual`` or a
        non-positive mobility.

    """
    density, fixed = _network_and_fixed_parts(model.energy.density)
    barrier = next((part for part in fixed if isinstance(part, BarrierDensity)), None)
    match = gradient_matching(model, data, degree=degree, max_pairs=max_pairs)
    sign_ok = match.coefficient > 0 if match.operator != "transport" else match.coefficient != 0
    if not (match.relative_residual <= max_residual and sign_ok):
        logger.warning(
            "warm start skipped: the gradient-matching fit (c = %.3g) leaves %.2f of the data's "
            "rate unexplained (limit %.2f; frames too far apart for the one-step relation, e.g. "
            "stiff under-resolved modes, or another structure): the model keeps its "
            "initialisation",
            match.coefficient,
            match.relative_residual,
            max_residual,
        )
        return WarmStart(match, math.nan, math.nan, applied=False)
    lo, hi = match.state_range()
    if barrier is not None:  # samples strictly inside the declared range
        margin = 1e-3 * (barrier.upper - barrier.lower)
        lo, hi = max(lo, barrier.lower + margin), min(hi, barrier.upper - margin)
    u = torch.linspace(lo, hi, samples, dtype=DTYPE)[:, None]
    generator = torch.Generator().manual_seed(0)
    x_all = model.x
    x = x_all[torch.randint(len(x_all), (samples,), generator=generator)]
    target = torch.as_tensor(match.density_derivative(u[:, 0].numpy()), dtype=DTYPE)
    with torch.no_grad():  # fit the network to what the range's parts (as they are) leave
        for part in fixed:
            target = target - part.state_derivatives(u)[0]
    target_scale = target.pow(2).mean().sqrt().clamp_min(1e-300)

    def density_mismatch() -> torch.Tensor:
        return (density.state_derivatives(u, x)[0] - target) / target_scale

    if density.polynomial_degree:
        _fit_polynomial_part(density, u, x, target)
    density_error = _regress(list(density.parameters()), density_mismatch, iterations)
    kind, part = _part(model)
    mobility_error = float("nan")
    c = torch.tensor(match.coefficient, dtype=DTYPE)
    if kind == "transport":
        if part.learnable:
            with torch.no_grad():
                part.constant.fill_(c)
    elif part.coefficient.kind == "neural":
        coefficient = part.coefficient
        field: NeuralField = coefficient.field

        def mobility_mismatch() -> torch.Tensor:
            return (coefficient(u, x)[:, 0] - c) / c

        mobility_error = _regress(list(field.parameters()), mobility_mismatch, iterations)
    result = WarmStart(match, density_error, mobility_error)
    mobility_text = (
        f"mobility {mobility_error:.2e}" if math.isfinite(mobility_error) else "no mobility fitted"
    )
    logger.info(
        "warm start (%s, %d frame pairs): c = %.4g, residual %.2e; regression mismatch F' %.2e, %s",
        kind,
        match.pairs,
        match.coefficient,
        match.relative_residual,
        density_error,
        mobility_text,
    )
    return result
