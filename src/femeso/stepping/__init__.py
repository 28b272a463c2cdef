"""Time stepping: the energy-stable scheme, its step control and its adjoint.

- :mod:`femeso.stepping.discrete_gradients` -- the discrete gradients of the density;
- :mod:`femeso.stepping.coefficients` -- a step's pointwise coefficients (one owner);
- :mod:`femeso.stepping.energy_stable` -- :class:`EnergyStableStepper`, the scheme's forms and
  Newton solve;
- :mod:`femeso.stepping.control` -- halving, rejection and growth of the step (shared with the
  classical solver and the black-box baseline);
- :mod:`femeso.stepping.adjoint` -- the vector-Jacobian product of one step;
- :mod:`femeso.stepping.solvers` -- the PETSc solver settings.

The names load on first use.
"""

from femeso._runtime import lazy_exports

_EXPORTS = {
    "DIRECT_SOLVER": "femeso.stepping.energy_stable",
    "ITERATIVE_SOLVER": "femeso.stepping.energy_stable",
    "EnergyStableStepper": "femeso.stepping.energy_stable",
    "StepFailure": "femeso.stepping.energy_stable",
    "StepRecord": "femeso.stepping.energy_stable",
    "Trajectory": "femeso.stepping.energy_stable",
    "StepCounts": "femeso.stepping.control",
    "take_step": "femeso.stepping.control",
    "StepCoefficients": "femeso.stepping.coefficients",
    "adjoint_forms": "femeso.stepping.adjoint",
    "pullback_from_points": "femeso.stepping.adjoint",
    "step_pullback": "femeso.stepping.adjoint",
    "step_vjp": "femeso.stepping.adjoint",
    "sum_over_ranks": "femeso.stepping.adjoint",
    "discrete_gradient": "femeso.stepping.discrete_gradients",
    "discrete_gradient_and_jacobian": "femeso.stepping.discrete_gradients",
    "scalar_discrete_gradient": "femeso.stepping.discrete_gradients",
    "traceable_scalar_discrete_gradient": "femeso.stepping.discrete_gradients",
    "LU": "femeso.stepping.solvers",
    "lu_solver": "femeso.stepping.solvers",
}

__all__ = sorted(_EXPORTS)
__getattr__, __dir__ = lazy_exports(__name__, _EXPORTS)
