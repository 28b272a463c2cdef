r"""Gradients of losses through implicit steps, by the discrete adjoint, bridged to PyTorch.

For a converged step :math:`R(w^{n+1}; u^n, \theta) = 0` (:math:`w = (u^{n+1}, \mu)`) and
:math:`a = dL/du^{n+1}`, the vector-Jacobian products of the step are

.. math:: \frac{dL}{d\theta} = -\lambda^T \frac{\partial R}{\partial\theta}, \qquad
          \frac{dL}{du^n} = -\lambda^T \frac{\partial R}{\partial u^n}, \qquad
          J^T\lambda = (a, 0),

with :math:`J` the exact Jacobian the stepper assembles (one transposed MUMPS solve per step).
:math:`R` depends on :math:`\theta` only through the values of the pointwise fields at the
quadrature points :math:`P_q` (the discrete gradient of the density, the mobility coefficients,
:math:`\kappa`, the conservative coefficients), so
:math:`\lambda^T\partial R/\partial\theta = \sum_q (\partial R/\partial P_q)^T\lambda\,
\partial P_q/\partial\theta`: Firedrake assembles the first factor (one form per coefficient),
PyTorch back-propagates it through the networks. :math:`u^n` enters both directly (UFL) and
through the :math:`P_q`, which depend on :math:`u^n` at the points; the transpose of the point
sampling :math:`u \mapsto (u(x_q))_q` maps the latter back to the state space.

Chaining :func:`step_vjp` backwards over a window of steps gives the gradient of an unrolled
multi-step loss (:mod:`femeso.training.trainer`).
"""

from __future__ import annotations

from typing import TYPE_CHECKING

import firedrake as fd
import torch
import ufl
from mpi4py import MPI

from femeso.model.onsager import components
from femeso.model.quadrature import QuadratureRule
from femeso.stepping.solvers import lu_solver

if TYPE_CHECKING:  # the stepper imports this module; this one needs the type only
    from femeso.stepping.energy_stable import EnergyStableStepper

__all__ = [
    "adjoint_forms",
    "pullback_from_points",
    "step_pullback",
    "step_vjp",
    "sum_over_ranks",
]


class _AdjointForms:
    """The forms of a stepper's adjoint, built once: the adjoint state and its solver live here."""

    def __init__(self, stepper) -> None:
        self.W = stepper.W
        self.lam = fd.Function(self.W, name="adjoint")
        self.rhs = fd.Cofunction(self.W.dual())
        self.residual_lambda = ufl.action(stepper.residual, self.lam)
        self.sensitivities: dict[fd.Function, tuple[ufl.Form, fd.Cofunction]] = {}
        self.direct = fd.derivative(self.residual_lambda, stepper.u)
        self.jacobian = stepper.jacobian
        self.bcs = stepper.bcs
        rule, k = stepper.model.rule, stepper.k
        self.rule = rule
        self.points = [rule.function() for _ in range(k)]
        v = components(fd.TestFunction(stepper.model.space), k)
        self.pullback = sum(h * v[i] * rule.dx for i, h in enumerate(self.points))
        self.matrix = None
        self.ksp = lu_solver(self.W.mesh().comm)

    def solve(self, dL_du1: fd.Cofunction) -> fd.Function:
        """Solve ``J^T lambda = (dL/du1, 0)`` at the converged step (MUMPS LU)."""
        self.matrix = fd.assemble(self.jacobian, bcs=self.bcs, mat_type="aij", tensor=self.matrix)
        self.rhs.dat.zero()
        self.rhs.subfunctions[0].assign(dL_du1)
        for bc in self.bcs:  # no sensitivity through constrained values
            bc.zero(self.rhs)
        self.ksp.setOperators(self.matrix.petscmat)
        with self.rhs.dat.vec_ro as b, self.lam.dat.vec_wo as x:
            self.ksp.solveTranspose(b, x)
        return self.lam

    def sensitivity(self, coefficient: fd.Function) -> torch.Tensor:
        """``(dR/dP_q)^T lambda`` for a coefficient on the quadrature points."""
        if coefficient not in self.sensitivities:
            form = fd.derivative(self.residual_lambda, coefficient)
            self.sensitivities[coefficient] = (
                form,
                fd.Cofunction(coefficient.function_space().dual()),
            )
        form, tensor = self.sensitivities[coefficient]
        fd.assemble(form, tensor=tensor)
        return torch.as_tensor(tensor.dat.data_ro.copy()).reshape((-1,) + coefficient.ufl_shape)

    def pull_back(self, values: torch.Tensor) -> fd.Cofunction:
        """:func:`pullback_from_points` with forms built once."""
        scaled = (values / self.rule.weights[:, None]).detach()
        for i, h in enumerate(self.points):
            self.rule.assign(h, scaled[:, i])
        return fd.assemble(self.pullback)


def adjoint_forms(stepper) -> _AdjointForms:
    """Return the stepper's adjoint forms, built on first use."""
    forms = getattr(stepper, "_adjoint_forms", None)
    if forms is None:
        forms = stepper._adjoint_forms = _AdjointForms(stepper)
    return forms


def pullback_from_points(
    rule: QuadratureRule, space: fd.FunctionSpace, values: torch.Tensor
) -> fd.Cofunction:
    r"""Apply the transpose of point sampling: ``g -> (sum_q g_q v_i(x_q))_i``.

    Parameters
    ----------
    rule
        The quadrature rule whose points sampled the state.
    space
        The state space (scalar, or vector of ``k`` components).
    values
        ``(n_points, k)`` sensitivities with respect to the sampled values.

    Returns
    -------
    firedrake.Cofunction
        On the dual of ``space``. Implemented as ``assemble((g / w) v dx)`` with the rule's own
        weights ``w``, which integrates to exactly the sum over the points.

    """
    k = values.shape[1]
    scaled = (values / rule.weights[:, None]).detach()
    v = components(fd.TestFunction(space), k)
    form = 0
    for i in range(k):
        h = rule.function()
        rule.assign(h, scaled[:, i])
        form += h * v[i] * rule.dx
    return fd.assemble(form)


def sum_over_ranks(
    parameters: list[torch.Tensor], grads: tuple[torch.Tensor | None, ...], comm
) -> list[torch.Tensor]:
    """Return per-rank gradient contributions summed over the communicator (zeros for None)."""
    out = []
    for p, g in zip(parameters, grads, strict=True):
        g = torch.zeros_like(p) if g is None else g.detach()
        if comm.size > 1:  # each rank holds the sum over its own quadrature points
            g = torch.as_tensor(comm.allreduce(g.numpy(), op=MPI.SUM))
        out.append(g)
    return out


def step_vjp(
    stepper: EnergyStableStepper, dL_du1: fd.Cofunction, *, wrt_state: bool = True
) -> fd.Cofunction | None:
    r"""Back-propagate through the converged step held by ``stepper``.

    Accumulates :math:`dL/d\theta` into the model parameters' ``.grad`` (summed over MPI ranks)
    and returns :math:`dL/du^n` (see :func:`step_pullback`, which returns both instead).

    Parameters
    ----------
    stepper
        The stepper, holding a converged step put in place by
        :meth:`~femeso.stepping.energy_stable.EnergyStableStepper.restore` (the start state and the
        converged unknowns of a step taken without halvings).
    dL_du1
        :math:`dL/du^{n+1}`, a ``Cofunction`` on the dual of the state space (e.g.
        ``assemble(inner(u1 - data, v) * dx)`` for :math:`\frac12\|u^{n+1} - u_{data}\|^2`).
    wrt_state
        Also compute :math:`dL/du^n` (skip it for the last step of a chain).

    Returns
    -------
    firedrake.Cofunction or None
        :math:`dL/du^n` on the dual of the state space, or ``None`` without ``wrt_state``.

    """
    parameters, grads, dL_du0 = step_pullback(stepper, dL_du1, wrt_state=wrt_state)
    for p, g in zip(parameters, grads, strict=True):
        p.grad = g.clone() if p.grad is None else p.grad + g
    return dL_du0


def step_pullback(
    stepper: EnergyStableStepper, dL_du1: fd.Cofunction, *, wrt_state: bool = True
) -> tuple[list[torch.Tensor], list[torch.Tensor], fd.Cofunction | None]:
    r"""Return the parameters, :math:`dL/d\theta` (summed over ranks) and :math:`dL/du^n`.

    The vector-Jacobian product of the step held by ``stepper`` (see :func:`step_vjp` for the
    arguments), without touching any ``.grad``: what :class:`femeso.training.bridge.RolloutFunction`
    hands to PyTorch's autograd.
    """
    if not stepper.holds_step:
        raise ValueError("step_vjp: call stepper.restore(u0, w1) first (after advance, u is u1)")
    if stepper.n_moments:
        raise NotImplementedError("adjoint of the nonlocal energy part is not implemented yet")
    model, k = stepper.model, stepper.k
    forms = adjoint_forms(stepper)
    forms.solve(dL_du1)
    sensitivity = forms.sensitivity

    coefficients = stepper.coefficients
    u0 = coefficients.u0.detach().clone().requires_grad_(wrt_state)
    u1 = torch.as_tensor(stepper._u1_q.dat.data_ro.reshape(-1, k).copy())
    total = torch.zeros((), dtype=u1.dtype)
    with torch.enable_grad():
        values = coefficients.values(u0, u1)
        for target, value in zip(coefficients.targets(), values, strict=True):
            total = total + (value * sensitivity(target)).sum()
        parameters = [p for p in model.parameters() if p.requires_grad]
        inputs = parameters + ([u0] if wrt_state else [])
        if inputs and total.requires_grad:
            grads = torch.autograd.grad(-total, inputs, allow_unused=True)
        else:
            grads = (None,) * len(inputs)
    summed = sum_over_ranks(parameters, grads[: len(parameters)], model.mesh.comm)
    if not wrt_state:
        return parameters, summed, None
    dL_du0 = fd.assemble(forms.direct)
    dL_du0.dat.data[...] *= -1
    if grads[-1] is not None:
        through_points = forms.pull_back(grads[-1])
        dL_du0.dat.data[...] += through_points.dat.data_ro
    return parameters, summed, dL_du0
