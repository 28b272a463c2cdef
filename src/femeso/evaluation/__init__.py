r"""Evaluation of learned dynamics: rollout errors, step-size studies and interpretability.

The diagnostics take any *stepper factory* ``make_stepper(u0, dt) -> stepper`` whose stepper has
the :class:`~femeso.stepping.energy_stable.EnergyStableStepper` interface, e.g.
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
  against true :math:`F` and :math:`m(u, x)`, modulo the identifiability gauge);
* :mod:`femeso.evaluation.plots` -- the report's figures;
* :mod:`femeso.evaluation.diagnostics` -- the energy-law and step-size diagnostics of a
  trained job (``scripts/paper_diagnostics.py``);
* :mod:`femeso.evaluation.transfer` -- ``femeso transfer``: a trained job on another mesh.

Every function is collective over the mesh's communicator where it assembles or integrates;
numbers are the same on every rank. Results are plain Python numbers and lists, with ``nan`` where
a number does not exist; :func:`to_jsonable` / :func:`write_json` turn ``nan`` into JSON ``null``.

The names load on first use.
"""

from femeso._runtime import lazy_exports

_EXPORTS = {
    "density_comparison": "femeso.evaluation.comparison",
    "density_curves": "femeso.evaluation.comparison",
    "mobility_comparison": "femeso.evaluation.comparison",
    "mobility_samples": "femeso.evaluation.comparison",
    "DIVERGED": "femeso.evaluation.metrics",
    "METRICS": "femeso.evaluation.metrics",
    "l2_norm": "femeso.evaluation.metrics",
    "nodal_relative_rmse": "femeso.evaluation.metrics",
    "relative_l2_error": "femeso.evaluation.metrics",
    "score_errors": "femeso.evaluation.metrics",
    "format_value": "femeso.evaluation.records",
    "to_jsonable": "femeso.evaluation.records",
    "write_json": "femeso.evaluation.records",
    "TABLE_STEPS": "femeso.evaluation.rollouts",
    "RolloutReport": "femeso.evaluation.rollouts",
    "StepperFactory": "femeso.evaluation.rollouts",
    "error_table": "femeso.evaluation.rollouts",
    "persistence_errors": "femeso.evaluation.rollouts",
    "relative_energy_drift": "femeso.evaluation.rollouts",
    "rollout_errors": "femeso.evaluation.rollouts",
    "energy_parts_along": "femeso.evaluation.studies",
    "energy_scaling_exponent": "femeso.evaluation.studies",
    "step_size_study": "femeso.evaluation.studies",
}

__all__ = sorted(_EXPORTS)
__getattr__, __dir__ = lazy_exports(__name__, _EXPORTS)
