r"""Gauss--Newton curvature of the training loss: tangent (forward) sensitivities of implicit steps.

A one-step window's loss is :math:`L(\theta) = \|u^{1}(\theta) - d\|_X^2 / \|d\|_X^2` with
:math:`u^1` the converged implicit step from the data state :math:`u^0 = d^0`. Its Jacobian
:math:`J = du^1/d\theta` follows from the converged residual :math:`R(w^1; u^0, \theta) = 0`:

.. math:: A\,\frac{dw^1}{d\theta} = -\sum_c \frac{\partial R}{\partial P_c}
          \frac{\partial P_c}{\partial \theta},

with :math:`A` the Jacobian the stepper assembles, :math:`P_c` the pointwise values at the
quadrature points (the discrete gradient of the density, the mobility coefficients, the
conservative coefficients), :math:`\partial R/\partial P_c` sparse matrices Firedrake assembles
once per step, and :math:`\partial P_c/\partial\theta` the per-point Jacobians of the networks
(``torch.func.jacfwd``). One LU factorisation (MUMPS) serves all parameter columns. The
Gauss--Newton matrix :math:`H = 2 J^T X J / \|d\|_X^2` and the gradient
:math:`g = 2 J^T X (u^1 - d) / \|d\|_X^2` of the window are summed over the MPI ranks.

:class:`LevenbergMarquardt` uses them: a damped Gauss--Newton step
:math:`(H + \lambda\,\mathrm{diag}(H))\,\delta = -g`, accepted when the loss decreases, the
damping adapted as in Marquardt (1963). For the small networks of femeso (about a hundred
parameters) it reaches loss levels that first-order optimisers approach only after thousands of
iterations (docs/training.md, "Training").
"""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass

import firedrake as fd
import numpy as np
import torch
import ufl
from mpi4py import MPI
from torch import nn

from femeso.stepping.adjoint import adjoint_forms
from femeso.stepping.discrete_gradients import (
    DEFAULT_TOL,
    scalar_discrete_gradient,
    traceable_scalar_discrete_gradient,
)
from femeso.stepping.energy_stable import StepFailure

__all__ = [
    "LevenbergMarquardt",
    "WindowCurvature",
    "state_tangent",
    "step_jacobian",
    "window_curvature",
]


def trainable(model: nn.Module) -> list[tuple[str, torch.Tensor]]:
    """Return the ``(name, parameter)`` pairs that require gradients, in a fixed order."""
    return [(n, p) for n, p in model.named_parameters() if p.requires_grad]


class _PointValues(nn.Module):
    """The pointwise values a held step depends on (:meth:`StepCoefficients.values`), traceable.

    The stepper's own coefficient definitions, with the discrete gradient written for
    ``torch.func``
    (:func:`~femeso.stepping.discrete_gradients.traceable_scalar_discrete_gradient`); the gradient
    coefficients are left out (a learned kappa is not supported here, see
    :func:`_check_supported`).
    """

    def __init__(self, stepper) -> None:
        super().__init__()
        self.model = stepper.model
        self.coefficients = stepper.coefficients
        self.targets: list[fd.Function] = self.coefficients.targets(kappa=False)

    def forward(self, u0: torch.Tensor, u1: torch.Tensor) -> list[torch.Tensor]:
        values = self.coefficients.values(
            u0, u1, kappa=False, discrete_gradient=traceable_scalar_discrete_gradient
        )
        return [v.reshape(-1) for v in values]


class _TangentForms:
    """Matrices of a stepper's tangent, built once: ``dR/dP_c`` per coefficient and the norm."""

    def __init__(self, stepper) -> None:
        self.values = _PointValues(stepper)
        self.blocks = {
            c: fd.derivative(stepper.residual, c, fd.TrialFunction(c.function_space()))
            for c in self.values.targets
        }
        self.matrices: dict[fd.Function, fd.Matrix] = {}
        self.V = stepper.model.space
        self.rhs = fd.Cofunction(stepper.W.dual())
        self.solution = fd.Function(stepper.W)
        self.mask = fd.Function(stepper.W)
        self.mask.assign(1.0)
        for bc in stepper.bcs:
            bc.zero(self.mask)
        self.norm_matrices: dict[str, fd.Matrix] = {}

    def norm_matrix(self, norm: str):
        """Return the (PETSc) matrix of the loss norm on the state space."""
        if norm not in self.norm_matrices:
            u, v = fd.TrialFunction(self.V), fd.TestFunction(self.V)
            form = fd.inner(u, v) * fd.dx
            if norm == "H1":
                form += fd.inner(fd.grad(u), fd.grad(v)) * fd.dx
            self.norm_matrices[norm] = fd.assemble(form, mat_type="aij")
        return self.norm_matrices[norm].petscmat


def _tangent_forms(stepper) -> _TangentForms:
    forms = getattr(stepper, "_tangent_forms", None)
    if forms is None:
        forms = stepper._tangent_forms = _TangentForms(stepper)
    return forms


class _StartStateForms:
    r"""The matrix :math:`\partial R/\partial u^n` of a held step, with the pointwise values.

    :math:`u^n` enters the residual directly (UFL) and through the pointwise values at the
    quadrature points: the discrete gradient :math:`\bar\mu(u^n, u^{n+1})` and a mobility
    evaluated at :math:`u^n` or at the midpoint. Each such value is replaced by its
    linearisation :math:`P + (\partial P/\partial u^n)(u^n_{var} - u^n)` at the points, and UFL
    differentiates the result in :math:`u^n_{var}`.
    """

    def __init__(self, stepper) -> None:
        model, rule = stepper.model, stepper.model.rule
        c = stepper.coefficients
        self.start = fd.Function(model.space)
        self.start_q = rule.function()
        self.dg_slope = rule.function()
        shift = self.start - self.start_q
        mapping = {stepper.u: self.start, c.dg[0]: c.dg[0] + self.dg_slope * shift}
        self.frozen_slopes: dict[str, fd.Function] = {}
        for kind, (values,) in c.mobility.items():
            if kind in c.at_midpoint:  # m((u^n + u^{n+1})/2): the same slope in u^n
                slope = c.mobility_slope[kind][0][0]
            elif c.state_dependent[kind]:  # m(u^n)
                slope = self.frozen_slopes[kind] = rule.function()
            else:
                continue
            mapping[values] = values + slope * shift
        self.form = fd.derivative(ufl.replace(stepper.residual, mapping), self.start)
        self.matrix = None

    def assemble(self, stepper):
        """Refresh the pointwise slopes at the held step and assemble the matrix (PETSc)."""
        model, rule = stepper.model, stepper.model.rule
        u0 = stepper.coefficients.u0
        u1 = torch.as_tensor(stepper._u1_q.dat.data_ro.reshape(-1, 1).copy())
        self.start.assign(stepper.u)
        rule.assign(self.start_q, u0[:, 0])
        with torch.no_grad():
            density = model.energy.density
            # The discrete gradient is symmetric in its two states: its slope in u^n is the
            # slope in the second argument with the arguments swapped.
            F1 = density(u1, model.x)
            _, slope = scalar_discrete_gradient(density, u1, u0, model.x, F0=F1, tol=DEFAULT_TOL)
            rule.assign(self.dg_slope, slope[:, 0])
        if self.frozen_slopes:
            start = u0.detach().clone().requires_grad_(True)
            with torch.enable_grad():
                mobility = model.mobility_values(start)
                for kind, target in self.frozen_slopes.items():
                    (row,) = torch.autograd.grad(mobility[kind][:, 0].sum(), start)
                    rule.assign(target, row[:, 0])
        self.matrix = fd.assemble(self.form, mat_type="aij", tensor=self.matrix)
        return self.matrix.petscmat


def _start_state_forms(stepper) -> _StartStateForms:
    forms = getattr(stepper, "_start_state_forms", None)
    if forms is None:
        forms = stepper._start_state_forms = _StartStateForms(stepper)
    return forms


def state_tangent(stepper, tangents: np.ndarray) -> np.ndarray:
    r"""Apply :math:`du^{n+1}/du^n` of the held step to columns of start-state perturbations.

    :math:`du^{n+1}/du^n\,t = -[A^{-1} (\partial R/\partial u^n)\,t]_u` with :math:`A` the
    step's Jacobian (one MUMPS factorisation for all columns). Chained over the sub-steps of a
    data step (``EnergyStableStepper(substeps=...)``) it carries :func:`step_jacobian` through
    them.

    Parameters
    ----------
    stepper
        A stepper holding a converged step
        (:meth:`~femeso.stepping.energy_stable.EnergyStableStepper.restore`).
    tangents
        ``(n_owned_state_dofs, m)`` perturbations of the start state.

    Returns
    -------
    numpy.ndarray
        ``(n_owned_state_dofs, m)``: the perturbations of the end state.

    """
    if not stepper.holds_step:
        raise ValueError("state_tangent: call stepper.restore(u0, w1) first")
    _check_supported(stepper)
    B = _start_state_forms(stepper).assemble(stepper)
    tangent, adjoint = _tangent_forms(stepper), adjoint_forms(stepper)
    adjoint.matrix = fd.assemble(
        adjoint.jacobian, bcs=adjoint.bcs, mat_type="aij", tensor=adjoint.matrix
    )
    adjoint.ksp.setOperators(adjoint.matrix.petscmat)
    with tangent.mask.dat.vec_ro as m:
        mask = m.array_r.copy()
    x = B.createVecRight()
    n_state = x.getLocalSize()
    out = np.zeros_like(tangents)
    for j in range(tangents.shape[1]):
        x.array[:] = tangents[:, j]
        with tangent.rhs.dat.vec_wo as rhs:
            B.mult(x, rhs)
            rhs.array[:] *= mask
            with tangent.solution.dat.vec_wo as sol:
                adjoint.ksp.solve(rhs, sol)
        with tangent.solution.dat.vec_ro as sol:
            out[:, j] = -sol.array_r[:n_state]
    return out


def _check_supported(stepper) -> None:
    model = stepper.model
    if stepper.k != 1:
        raise NotImplementedError("Gauss-Newton curvature is implemented for one-component states")
    if stepper.n_moments:
        raise NotImplementedError("Gauss-Newton curvature of a nonlocal energy is not implemented")
    kappa = model.energy.kappa
    if getattr(kappa, "learnable", False) and kappa.uses_position:
        raise NotImplementedError(
            "Gauss-Newton curvature with a learned kappa(x) is not implemented"
        )
    if getattr(kappa, "learnable", False) and model.gauge != "kappa":
        raise NotImplementedError("Gauss-Newton curvature with an ungauged learned kappa")


def step_jacobian(stepper) -> np.ndarray:
    r"""Return :math:`du^{1}/d\theta` of the step held by ``stepper`` (owned rows, all columns).

    ``stepper`` must hold a converged step put in place by
    :meth:`~femeso.stepping.energy_stable.EnergyStableStepper.restore`; the start state is held
    fixed (a data state). Columns follow :func:`trainable` order, each parameter flattened.

    Returns
    -------
    numpy.ndarray
        ``(n_owned_state_dofs, n_parameters)``.

    """
    if not stepper.holds_step:
        raise ValueError("step_jacobian: call stepper.restore(u0, w1) first")
    _check_supported(stepper)
    model = stepper.model
    tangent = _tangent_forms(stepper)
    adjoint = adjoint_forms(stepper)
    named = trainable(model)
    names = [n for n, _ in named]
    shapes = [p.shape for _, p in named]
    sizes = [p.numel() for _, p in named]
    flat = torch.cat([p.detach().reshape(-1) for _, p in named])
    u0 = stepper.coefficients.u0.detach()
    u1 = torch.as_tensor(stepper._u1_q.dat.data_ro.reshape(-1, 1).copy())

    def values_of(theta: torch.Tensor) -> tuple[torch.Tensor, ...]:
        params = {}
        for name, chunk, shape in zip(names, torch.split(theta, sizes), shapes, strict=True):
            params["model." + name] = chunk.reshape(shape)
        return tuple(torch.func.functional_call(tangent.values, params, (u0, u1)))

    jacobians = torch.func.jacfwd(values_of)(flat)  # per target: (n_values, n_parameters)

    adjoint.matrix = fd.assemble(
        adjoint.jacobian, bcs=adjoint.bcs, mat_type="aij", tensor=adjoint.matrix
    )
    adjoint.ksp.setOperators(adjoint.matrix.petscmat)
    n_params = flat.numel()
    comm = model.mesh.comm
    n_state = tangent.V.dof_dset.layout_vec.getLocalSize()
    columns = np.zeros((n_state, n_params))
    blocks = []
    for target, jac in zip(tangent.values.targets, jacobians, strict=True):
        if target not in tangent.matrices:
            tangent.matrices[target] = fd.assemble(tangent.blocks[target], mat_type="aij")
        else:
            fd.assemble(tangent.blocks[target], tensor=tangent.matrices[target])
        matrix = tangent.matrices[target].petscmat
        jac = jac.detach().numpy()
        # Which columns are non-zero is decided over all ranks: mult is collective.
        used = comm.allreduce(np.any(jac != 0, axis=0).astype(np.int64), op=MPI.SUM) > 0
        blocks.append((matrix, jac, used, matrix.createVecRight(), matrix.createVecLeft()))
    with tangent.mask.dat.vec_ro as m:
        mask = m.array_r.copy()
    for j in range(n_params):
        with tangent.rhs.dat.vec_wo as rhs:
            rhs.zeroEntries()
            for matrix, jac, used, x, y in blocks:
                if not used[j]:
                    continue
                x.array[:] = jac[:, j]
                matrix.mult(x, y)
                rhs.axpy(1.0, y)
            rhs.array[:] *= mask
            if rhs.norm() == 0.0:
                continue
            with tangent.solution.dat.vec_wo as sol:
                adjoint.ksp.solve(rhs, sol)
        with tangent.solution.dat.vec_ro as sol:
            columns[:, j] = -sol.array_r[:n_state]
    return columns


@dataclass
class WindowCurvature:
    """Loss, gradient and Gauss--Newton matrix of one or more windows (global sums)."""

    loss: float
    gradient: np.ndarray
    hessian: np.ndarray

    def __iadd__(self, other: WindowCurvature) -> WindowCurvature:
        self.loss += other.loss
        self.gradient = self.gradient + other.gradient
        self.hessian = self.hessian + other.hessian
        return self


def window_curvature(stepper, data: list[fd.Function], *, norm: str = "L2") -> WindowCurvature:
    r"""Roll out from ``data[0]``; return the loss, gradient and Gauss--Newton matrix of the window.

    The loss is the trainer's (:func:`~femeso.training.trainer.window_loss`): the mean over the
    window's ``K`` steps of :math:`\|u_k - d_k\|^2_X / \|d_k\|^2_X`. The state's parameter
    Jacobian :math:`J_k = du_k/d\theta` is carried through every step and every sub-step
    (:func:`state_tangent`), so the Gauss--Newton matrix is
    :math:`\frac{2}{K}\sum_k J_k^T X J_k / \|d_k\|^2_X`.

    Parameters
    ----------
    stepper
        An :class:`~femeso.stepping.energy_stable.EnergyStableStepper` at the window's step size.
    data
        The window's data states ``d_0, ..., d_K`` (``K >= 1``).
    norm
        ``"L2"`` or ``"H1"`` (the training loss's norm).

    Raises
    ------
    femeso.stepping.energy_stable.StepFailure
        When a step does not converge or needed halvings.
    ValueError
        For a window without a step.

    """
    if len(data) < 2:
        raise ValueError("a Gauss-Newton window needs at least one step")
    logging_before, stepper.log_substeps = stepper.log_substeps, True
    steps = []  # the converged sub-steps of every data step, logged by the forward rollout
    try:
        stepper.reset(data[0])
        for _ in data[1:]:
            record = stepper.advance()
            if record.halvings:
                raise StepFailure("the step needed halvings; no Gauss-Newton curvature")
            steps.append(list(stepper.substep_log))
    finally:
        stepper.log_substeps, stepper.substep_log = logging_before, []
    X = _tangent_forms(stepper).norm_matrix(norm)
    comm = stepper.model.mesh.comm
    total: WindowCurvature | None = None
    J = None
    for substeps, target in zip(steps, data[1:], strict=True):
        for start, w1, dt in substeps:
            stepper.restore(start, w1, dt)
            carried = state_tangent(stepper, J) if J is not None else 0.0
            J = step_jacobian(stepper) + carried
        part = _misfit_curvature(X, w1.subfunctions[0], target, J, comm)
        total = part if total is None else total.__iadd__(part)
    n = len(data) - 1
    return WindowCurvature(total.loss / n, total.gradient / n, total.hessian / n)


def _misfit_curvature(
    X, u: fd.Function, target: fd.Function, J: np.ndarray, comm
) -> WindowCurvature:
    """Loss, gradient and Gauss--Newton matrix of one relative misfit ``|u - d|^2_X / |d|^2_X``."""
    error = u.copy(deepcopy=True)
    error -= target
    with error.dat.vec_ro as e, target.dat.vec_ro as d:
        Xe, Xd = X.createVecLeft(), X.createVecLeft()
        X.mult(e, Xe)
        X.mult(d, Xd)
        scale = d.dot(Xd)
        misfit = e.dot(Xe)
        Xe_local = Xe.array_r.copy()
    XJ = np.empty_like(J)
    x, y = X.createVecRight(), X.createVecLeft()
    for j in range(J.shape[1]):
        x.array[:] = J[:, j]
        X.mult(x, y)
        XJ[:, j] = y.array_r
    gradient = comm.allreduce(2.0 * J.T @ Xe_local, op=MPI.SUM) / scale
    hessian = comm.allreduce(2.0 * J.T @ XJ, op=MPI.SUM) / scale
    return WindowCurvature(misfit / scale, gradient, 0.5 * (hessian + hessian.T))


class LevenbergMarquardt(torch.optim.Optimizer):
    r"""Levenberg--Marquardt steps for least-squares losses, with Gauss--Newton curvature.

    ``step(closure)`` takes a ``closure(curvature: bool, bound: float)`` that returns a
    :class:`WindowCurvature` (mean over the minibatch) when ``curvature`` is true and the loss
    alone (a float) otherwise; a loss-only evaluation may return ``inf`` as soon as it knows
    the loss is at least ``bound`` (the loss to beat). Each step solves
    :math:`(H + \lambda(\mathrm{diag} H + \epsilon))\,\delta = -g`, tries
    :math:`\theta + \mathrm{lr}\,\delta` and keeps it if the loss decreased (then
    :math:`\lambda \leftarrow \lambda/\text{decrease}`); otherwise it raises :math:`\lambda`
    by ``increase`` and tries again, at most ``max_tries`` times. The damping is
    optimiser state (saved in ``state_dict`` and checkpoints).

    Parameters
    ----------
    params
        The parameters (one group).
    lr
        Fraction of the damped Gauss--Newton step taken (1 is the classical method).
    damping
        Initial :math:`\lambda`.
    increase, decrease
        Factors of :math:`\lambda` after a rejected / accepted step.
    max_tries
        Trial steps per iteration before giving up (parameters unchanged).

    """

    def __init__(
        self,
        params,
        lr: float = 1.0,
        *,
        damping: float = 1e-3,
        increase: float = 4.0,
        decrease: float = 3.0,
        max_tries: int = 8,
    ) -> None:
        if damping <= 0 or increase <= 1 or decrease <= 1 or max_tries < 1:
            raise ValueError("damping > 0, increase > 1, decrease > 1 and max_tries >= 1 needed")
        defaults = {
            "lr": lr,
            "damping": damping,
            "increase": increase,
            "decrease": decrease,
            "max_tries": max_tries,
        }
        super().__init__(params, defaults)
        if len(self.param_groups) != 1:
            raise ValueError("LevenbergMarquardt takes one parameter group")

    @property
    def damping(self) -> float:
        r"""The current damping :math:`\lambda`."""
        return float(self.param_groups[0]["damping"])

    def _params(self) -> list[torch.Tensor]:
        return self.param_groups[0]["params"]

    @torch.no_grad()
    def step(  # type: ignore[override]
        self, closure: Callable[[bool, float], WindowCurvature | float]
    ) -> float:
        """Take one Levenberg--Marquardt step; return the loss before it."""
        group = self.param_groups[0]
        params = self._params()
        start = torch.nn.utils.parameters_to_vector(params).clone()
        with torch.enable_grad():
            current = closure(True, math.inf)
        if not isinstance(current, WindowCurvature):
            raise TypeError("the closure must return a WindowCurvature when asked for curvature")
        H, g = current.hessian, current.gradient
        diagonal = np.diag(H).copy()
        floor = 1e-12 * max(float(diagonal.max(initial=0.0)), 1e-300)
        for _ in range(group["max_tries"]):
            lam = group["damping"]
            system = H + lam * np.diag(diagonal + floor)
            try:
                delta = np.linalg.solve(system, -g)
            except np.linalg.LinAlgError:
                delta = np.linalg.lstsq(system, -g, rcond=None)[0]
            trial = start + group["lr"] * torch.as_tensor(delta, dtype=start.dtype)
            torch.nn.utils.vector_to_parameters(trial, params)
            loss = closure(False, current.loss)
            if math.isfinite(loss) and loss < current.loss:
                group["damping"] = max(lam / group["decrease"], 1e-12)
                return current.loss
            group["damping"] = min(lam * group["increase"], 1e12)
        torch.nn.utils.vector_to_parameters(start, params)
        return current.loss
