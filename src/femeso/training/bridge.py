r"""``loss.backward()`` through femeso rollouts: one ``torch.autograd.Function`` around the adjoint.

:func:`differentiable_rollout` runs an :class:`~femeso.stepping.energy_stable.EnergyStableStepper`
for a number of steps and returns the states' degrees of freedom as one PyTorch tensor. Any loss
written in PyTorch on that tensor back-propagates into the model's parameters (and into the initial
state, when it is a tensor that requires gradients) through :class:`RolloutFunction`, whose backward
pass chains the discrete adjoint of every (sub-)step
(:func:`femeso.stepping.adjoint.step_pullback`)::

    states = femeso.differentiable_rollout(stepper, u0, n_steps=5)   # (6, n_dofs)
    loss = ((states[1:] - data) ** 2).sum()
    loss.backward()                                                  # model parameters' .grad
    optimiser.step()

Tensors cross the Firedrake/PyTorch boundary here only: a state is its ``Function``'s owned
degrees of freedom (``u.dat.data_ro``, shape ``(n_owned,)``, or ``(n_owned, k)`` for ``k``
fields), and the gradient of a loss with respect to those values is a ``Cofunction`` with the
same entries. Under MPI each rank holds its own degrees of freedom; the adjoint solves are
collective, and the parameter gradients returned to PyTorch are summed over the ranks, i.e.
they are the gradients of the *sum* of the ranks' losses.
"""

from __future__ import annotations

import firedrake as fd
import torch

from femeso._log import logger
from femeso.model.fields import DTYPE
from femeso.stepping.adjoint import step_pullback
from femeso.stepping.energy_stable import EnergyStableStepper

__all__ = ["RolloutFunction", "differentiable_rollout"]


def _to_torch(u: fd.Function | fd.Cofunction) -> torch.Tensor:
    """Copy the owned degrees of freedom of a (co)function into a tensor."""
    return torch.as_tensor(u.dat.data_ro.copy(), dtype=DTYPE)


def _from_torch(values: torch.Tensor, out: fd.Function | fd.Cofunction) -> None:
    """Write owned degrees of freedom into a (co)function."""
    out.dat.data_wo[...] = values.detach().numpy()


class _Tape:
    """What a rollout's backward pass needs: every accepted sub-step ``(start, unknowns, dt)``."""

    def __init__(self, stepper: EnergyStableStepper, n_steps: int, t0: float) -> None:
        self.stepper, self.n_steps, self.t0 = stepper, n_steps, t0
        self.steps: list[list[tuple[fd.Function, fd.Function, float]]] = []
        self.halved = 0

    def forward(self, u0: torch.Tensor) -> torch.Tensor:
        stepper = self.stepper
        start = fd.Function(stepper.model.space)
        _from_torch(u0, start)
        logging_before = stepper.log_substeps
        stepper.log_substeps = True
        states = [_to_torch(start)]
        try:
            stepper.reset(start, t=self.t0)
            for _ in range(self.n_steps):
                record = stepper.advance()
                self.halved += record.halvings > 0
                self.steps.append(list(stepper.substep_log))
                states.append(_to_torch(stepper.u))
        finally:
            stepper.log_substeps, stepper.substep_log = logging_before, []
        if self.halved:
            logger.info(
                "differentiable rollout: %d of %d steps needed halvings; the gradient is that of "
                "the sub-steps taken",
                self.halved,
                self.n_steps,
            )
        return torch.stack(states)

    def backward(self, grad: torch.Tensor) -> tuple[torch.Tensor, list[torch.Tensor]]:
        """Return dL/du0 and dL/dtheta (summed over ranks) for ``grad`` = dL/d(states)."""
        stepper = self.stepper
        space = stepper.model.space
        seed = fd.Cofunction(space.dual())
        totals: list[torch.Tensor] | None = None
        for j in reversed(range(self.n_steps)):
            incoming = fd.Cofunction(space.dual())
            _from_torch(grad[j + 1], incoming)
            seed.dat.data[...] += incoming.dat.data_ro
            for start, unknowns, dt in reversed(self.steps[j]):
                stepper.restore(start, unknowns, dt)
                _, grads, seed = step_pullback(stepper, seed, wrt_state=True)
                totals = (
                    grads if totals is None else [a + b for a, b in zip(totals, grads, strict=True)]
                )
        stepper.holds_step = False
        dL_du0 = _to_torch(seed) + grad[0]
        if totals is None:
            totals = [torch.zeros_like(p) for p in _parameters(stepper)]
        return dL_du0, totals


def _parameters(stepper: EnergyStableStepper) -> list[torch.Tensor]:
    return [p for p in stepper.model.parameters() if p.requires_grad]


class RolloutFunction(torch.autograd.Function):
    """PyTorch's view of a rollout: ``(u0, theta) -> (u0, u1, ..., uN)``, backward by the adjoint.

    Use :func:`differentiable_rollout`; ``apply(tape, u0, *parameters)`` lists the parameters
    so that autograd routes their gradients.
    """

    @staticmethod
    def forward(ctx, tape: _Tape, u0: torch.Tensor, *parameters: torch.Tensor) -> torch.Tensor:
        """Run the rollout (the parameters are read from the model, listed for autograd)."""
        ctx.tape = tape
        return tape.forward(u0.detach())

    @staticmethod
    @torch.autograd.function.once_differentiable
    def backward(ctx, grad: torch.Tensor):
        """Return ``(None, dL/du0, *dL/dtheta)`` by the adjoint of every (sub-)step."""
        dL_du0, dL_dtheta = ctx.tape.backward(grad)
        return (None, dL_du0, *dL_dtheta)


def differentiable_rollout(
    stepper: EnergyStableStepper,
    u0: fd.Function | torch.Tensor,
    n_steps: int,
    *,
    t0: float = 0.0,
) -> torch.Tensor:
    """Roll out ``n_steps`` steps from ``u0``; return the states as a tensor autograd can follow.

    Parameters
    ----------
    stepper
        The stepper (its model, step size, scheme, sub-steps and solver settings are used as
        they are; it is reset to ``u0`` at time ``t0``).
    u0
        The initial state: a ``Function`` on the model's space, or a tensor of its owned degrees
        of freedom (``(n_owned,)`` or ``(n_owned, k)``); a tensor that requires gradients
        receives :math:`dL/du_0`.
    n_steps
        Number of steps.
    t0
        The time of ``u0`` (it matters for a time-dependent source only).

    Returns
    -------
    torch.Tensor
        ``(n_steps + 1, n_owned[, k])``: the owned degrees of freedom of ``u0, u1, ..., uN``.
        ``loss.backward()`` on any function of it fills the ``.grad`` of the model's trainable
        parameters (and of ``u0``), by the discrete adjoint of every step.

    Raises
    ------
    femeso.StepFailure
        If a step cannot be completed (as
        :meth:`~femeso.stepping.energy_stable.EnergyStableStepper.advance`).

    """
    if not isinstance(n_steps, int) or isinstance(n_steps, bool) or n_steps < 1:
        raise ValueError(f"n_steps must be a positive integer, got {n_steps!r}")
    if isinstance(u0, fd.Function):
        if u0.function_space() != stepper.model.space:
            raise ValueError("u0 must live on the model's state space")
        u0 = _to_torch(u0)
    expected = stepper.u.dat.data_ro.shape
    if tuple(u0.shape) != tuple(expected):
        raise ValueError(
            f"u0 must hold the state's {expected} owned degrees of freedom, got {tuple(u0.shape)}"
        )
    tape = _Tape(stepper, n_steps, float(t0))
    return RolloutFunction.apply(tape, u0.to(DTYPE), *_parameters(stepper))
