"""Step-size control shared by femeso's steppers: halve a failed sub-step, grow back after success.

Every femeso stepper -- the energy-stable stepper of an Onsager model (the learned model and the
classical solver of a known equation alike) and the black-box baseline -- advances by its step
``dt`` through :func:`take_step`: a sub-step whose solve fails (or that the stepper rejects, e.g.
an energy increase) is retried with half the size, at most ``max_halvings`` times in a row;
after an accepted sub-step the size doubles again. What a sub-step is, and what accepting one
means, stay with the stepper (``attempt`` and ``accept``).
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

import firedrake as fd

from femeso._log import logger

__all__ = ["StepCounts", "StepFailure", "take_step"]


class StepFailure(RuntimeError):
    """A time step could not be completed even after repeated step-size reductions."""


@dataclass
class StepCounts:
    """What one controlled step took: halvings, Newton and linear iterations (all sub-steps)."""

    halvings: int = 0
    newton_iterations: int = 0
    linear_iterations: int = 0


def take_step(
    stepper,
    *,
    attempt: Callable[[float, int], tuple[bool, str, int, int]],
    accept: Callable[[float], None],
    sub_dt: float,
) -> StepCounts:
    """Advance ``stepper`` from ``t`` to ``t + dt`` in controlled sub-steps.

    Parameters
    ----------
    stepper
        Has ``t``, ``dt``, ``max_halvings`` and the unknowns ``w`` (restored after a failed
        attempt, so that Newton restarts from the last accepted solution).
    attempt
        ``attempt(sub_dt, halvings) -> (ok, reason, newton_its, linear_its)``: solve one
        sub-step into ``stepper.w``; ``halvings`` is the count so far within this step.
    accept
        ``accept(sub_dt)``: take the converged sub-step (update the state, records ...).
    sub_dt
        The planned sub-step (``dt`` or ``dt / substeps``).

    Returns
    -------
    StepCounts

    Raises
    ------
    StepFailure
        After ``max_halvings + 1`` failures in a row; the message names the time, the smallest
        sub-step and the reason of the last failure.

    """
    counts = StepCounts()
    target, remaining = stepper.t + stepper.dt, stepper.dt
    failures = 0
    saved = fd.Function(stepper.w.function_space()).assign(stepper.w)
    while remaining > 1e-14 * stepper.dt:
        sub_dt = min(sub_dt, remaining)
        ok, reason, its, lits = attempt(sub_dt, counts.halvings)
        counts.newton_iterations += its
        counts.linear_iterations += lits
        if not ok:
            counts.halvings += 1
            failures += 1
            stepper.w.assign(saved)
            if failures > stepper.max_halvings:
                raise StepFailure(
                    f"step from t={stepper.t:.6g} failed after {failures - 1} halvings "
                    f"(dt down to {sub_dt:.3e}): {reason}"
                )
            logger.debug("t=%.6g: %s; retrying with dt=%.3e", stepper.t, reason, sub_dt / 2)
            sub_dt /= 2
            continue
        accept(sub_dt)
        saved.assign(stepper.w)
        stepper.t = target if remaining - sub_dt <= 1e-14 * stepper.dt else stepper.t + sub_dt
        remaining -= sub_dt
        if failures:  # a success after halving: try a larger sub-step again
            failures, sub_dt = failures - 1, 2 * sub_dt
    return counts
