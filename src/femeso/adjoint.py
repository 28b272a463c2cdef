r"""Parameter gradients of one implicit step, by the discrete adjoint, bridged to PyTorch.

For a converged step :math:`R(w; \theta) = 0` (:math:`w = (u^{n+1}, \mu)`) and a loss
:math:`L(u^{n+1})`, the gradient with respect to the parameters :math:`\theta` of the model is

.. math:: \frac{dL}{d\theta} = -\lambda^T \frac{\partial R}{\partial\theta}, \qquad
          J^T\lambda = \frac{\partial L}{\partial w},

with :math:`J` the exact Jacobian the stepper assembles. :math:`R` depends on :math:`\theta` only
through the values of the pointwise fields at the quadrature points (the discrete gradient of the
density, the mobility coefficients, :math:`\kappa`, the conservative coefficients), so
:math:`\lambda^T\partial R/\partial\theta = \sum_q (\partial R/\partial P_q)^T\lambda\,
\partial P_q/\partial\theta`: Firedrake assembles the first factor (one form per coefficient),
PyTorch back-propagates it through the networks. One transposed linear solve per step.

This is the single-step gradient of the paper's training protocol, where the gradient is cut
between autoregressive steps.
"""

from __future__ import annotations

import firedrake as fd
import torch
import ufl
from firedrake.petsc import PETSc
from mpi4py import MPI

from femeso.discrete_gradients import DEFAULT_TOL, discrete_gradient
from femeso.mobilities import SkewTransport
from femeso.steppers import EnergyStableStepper

__all__ = ["backpropagate_step"]


def _adjoint_state(stepper: EnergyStableStepper, dL_du1: fd.Cofunction) -> fd.Function:
    """Solve ``J^T lambda = dL/dw`` at the converged step (MUMPS)."""
    J = fd.assemble(stepper.jacobian, bcs=stepper.bcs, mat_type="aij")
    rhs = fd.Cofunction(stepper.W.dual())
    rhs.subfunctions[0].assign(dL_du1)
    for bc in stepper.bcs:  # no sensitivity through constrained values
        bc.zero(rhs)
    lam = fd.Function(stepper.W)
    ksp = PETSc.KSP().create(comm=stepper.W.mesh().comm)
    ksp.setOperators(J.petscmat)
    ksp.setType("preonly")
    pc = ksp.getPC()
    pc.setType("lu")
    pc.setFactorSolverType("mumps")
    with rhs.dat.vec_ro as b, lam.dat.vec_wo as x:
        ksp.solveTranspose(b, x)
    ksp.destroy()
    return lam


def backpropagate_step(stepper: EnergyStableStepper, dL_du1: fd.Cofunction) -> None:
    r"""Accumulate :math:`dL/d\theta` of the last step into the model parameters' ``.grad``.

    Call it right after :meth:`~femeso.steppers.EnergyStableStepper.advance` (a step taken
    without halvings, so that the converged system is the one of the whole step).

    Parameters
    ----------
    stepper
        The stepper, holding the converged step.
    dL_du1
        The derivative of the loss with respect to the new state, a ``Cofunction`` on the dual
        of the state space (e.g. ``assemble(inner(u1 - data, v) * dx)`` for
        :math:`\frac12\|u^{n+1} - u_{data}\|^2_{L^2}`).

    """
    if stepper.records and stepper.records[-1].halvings:
        raise ValueError("backpropagate_step needs a step taken without halvings")
    if stepper.n_moments:
        raise NotImplementedError("adjoint of the nonlocal energy part is not implemented yet")
    model, k = stepper.model, stepper.k
    lam = _adjoint_state(stepper, dL_du1)
    residual_lambda = ufl.action(stepper.residual, lam)

    def sensitivity(coefficient: fd.Function) -> torch.Tensor:
        """``(dR/dP_q)^T lambda`` for a coefficient on the quadrature points."""
        cof = fd.assemble(fd.derivative(residual_lambda, coefficient))
        shape = coefficient.ufl_shape
        return torch.as_tensor(cof.dat.data_ro.copy()).reshape((-1,) + shape)

    x = model.x
    u0 = stepper._u0_t
    u1 = torch.as_tensor(stepper._u1_q.dat.data_ro.reshape(-1, k).copy())
    total = torch.zeros((), dtype=u1.dtype)
    with torch.enable_grad():
        values = discrete_gradient(model.energy.density, u0, u1, x, tol=DEFAULT_TOL)
        for i in range(k):
            total = total + (values[:, i] * sensitivity(stepper.dg[i])).sum()
        kappa = model.kappa()
        for i in range(k):
            total = total + (kappa[:, i] * sensitivity(stepper.kappa_q[i])).sum()
        if stepper.mobility_q:
            u_eval = 0.5 * (u0 + u1) if stepper.dmobility_q else u0
            mobility = model.mobility_values(u_eval)
            for kind, functions in stepper.mobility_q.items():
                for i in range(k):
                    total = total + (mobility[kind][:, i] * sensitivity(functions[i])).sum()
        if stepper.tensor_mobility_q is not None:
            total = (
                total
                + (model.tensor_mobility_values() * sensitivity(stepper.tensor_mobility_q)).sum()
            )
        for w, target in zip(model.conservative, stepper.conservative_q, strict=True):
            coefficient = w(x) if isinstance(w, SkewTransport) else w(x)[:, 0]
            total = total + (coefficient * sensitivity(target)).sum()
        parameters = [p for p in model.parameters() if p.requires_grad]
        if parameters and total.requires_grad:
            grads = torch.autograd.grad(-total, parameters, allow_unused=True)
            comm = model.mesh.comm
            for p, g in zip(parameters, grads, strict=True):
                g = torch.zeros_like(p) if g is None else g.detach()
                if comm.size > 1:  # each rank holds the sum over its own quadrature points
                    g = torch.as_tensor(comm.allreduce(g.numpy(), op=MPI.SUM))
                p.grad = g.clone() if p.grad is None else p.grad + g
