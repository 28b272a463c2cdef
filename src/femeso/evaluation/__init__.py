r"""Evaluation of learned dynamics: rollout errors, step-size studies and interpretability.

The diagnostics take any *stepper factory* ``make_stepper(u0, dt) -> stepper`` whose stepper has
the :class:`~femeso.steppers.EnergyStableStepper` interface, e.g.
``lambda u0, dt: EnergyStableStepper(model, u0, dt)``. A black-box stepper without an energy (its
records hold ``energy = nan``) works too: the numbers that need the model's own energy become
``nan``/``None``, and a ``reference_energy`` (e.g. the true model's
:meth:`~femeso.model.OnsagerModel.energy_value`) judges it instead.

Modules, one concern each (every public name is re-exported here, so
``from femeso.evaluation import rollout_errors`` works):

* :mod:`femeso.evaluation.metrics` -- norms and errors (:func:`l2_norm`,
  :func:`relative_l2_error`, :func:`nodal_relative_rmse`), the two error metrics
  (:data:`METRICS`) and how errors are scored and averaged (:func:`score_errors`);
* :mod:`femeso.evaluation.records` -- results as plain data: :func:`to_jsonable`,
  :func:`write_json`, :func:`format_value`;
* :mod:`femeso.evaluation.rollouts` -- autoregressive rollouts against data
  (:func:`rollout_errors`, :class:`RolloutReport`), the paper's table rows (:func:`error_table`),
  persistence (:func:`persistence_errors`) and :func:`relative_energy_drift`;
* :mod:`femeso.evaluation.studies` -- :func:`step_size_study` (other step sizes than the data's,
  the errors' empirical order), :func:`energy_scaling_exponent` (the paper's
  :math:`V_0(a u) \sim a^p`) and :func:`energy_parts_along`;
* :mod:`femeso.evaluation.comparison` -- interpretability: :func:`density_comparison`,
  :func:`mobility_comparison`, :func:`mobility_samples` and :func:`density_curves` (learned
  against true :math:`F` and :math:`m(u, x)`, modulo the identifiability gauge).

Every function is collective over the mesh's communicator where it assembles or integrates;
numbers are the same on every rank. Results are plain Python numbers and lists, with ``nan`` where
a number does not exist; :func:`to_jsonable` / :func:`write_json` turn ``nan`` into JSON ``null``.
"""

from femeso.evaluation.comparison import (
    density_comparison,
    density_curves,
    mobility_comparison,
    mobility_samples,
)
from femeso.evaluation.metrics import (
    DIVERGED,
    METRICS,
    l2_norm,
    nodal_relative_rmse,
    relative_l2_error,
    score_errors,
)
from femeso.evaluation.records import format_value, to_jsonable, write_json
from femeso.evaluation.rollouts import (
    TABLE_STEPS,
    RolloutReport,
    StepperFactory,
    error_table,
    persistence_errors,
    relative_energy_drift,
    rollout_errors,
)
from femeso.evaluation.studies import (
    energy_parts_along,
    energy_scaling_exponent,
    step_size_study,
)

__all__ = [
    "DIVERGED",
    "METRICS",
    "TABLE_STEPS",
    "RolloutReport",
    "StepperFactory",
    "density_comparison",
    "density_curves",
    "energy_parts_along",
    "energy_scaling_exponent",
    "error_table",
    "format_value",
    "l2_norm",
    "mobility_comparison",
    "mobility_samples",
    "nodal_relative_rmse",
    "relative_l2_error",
    "persistence_errors",
    "relative_energy_drift",
    "rollout_errors",
    "score_errors",
    "step_size_study",
    "to_jsonable",
    "write_json",
]
