"""The stages of a femeso job -- generate, train, rollout, report -- driven by a :mod:`config`.

Every stage reads what the previous ones wrote under ``job.output``:

``data/{train,validation,test}.h5``
    the trajectories (:func:`femeso.data.save_dataset`), test trajectories reaching
    ``evaluation.horizon_factor`` times the training horizon;
``onsager/``, ``baseline/``
    checkpoints (``checkpoint.pt``, resumable), ``history.json``, ``best_model.npz`` and the
    final ``model.npz`` of the Onsager model and of the black-box baseline;
``rollouts/``
    VTK files of the test rollouts (true, learned, baseline, error) for ParaView;
``report/``
    ``results.json`` and PNG plots.

Modules, one stage or concern each (the public names load on first use from here, e.g.
``femeso.jobs.run``):

* :mod:`femeso.jobs.output` -- the output folder: paths, what a rerun may replace, loading data;
* :mod:`femeso.jobs.models` -- the state space and the models a configuration builds;
* :mod:`femeso.jobs.data` -- ``generate``: femeso's generators or the user's files;
* :mod:`femeso.jobs.training` -- ``train``: the phases of each model;
* :mod:`femeso.jobs.reporting` -- ``rollout`` and ``report``: scores, costs, interpretability;
* :mod:`femeso.jobs.figures` -- the report's figures;
* :mod:`femeso.jobs.summary` -- the printed table and summary;
* :mod:`femeso.jobs.pipeline` -- ``run``: all of it.
"""

from femeso._runtime import lazy_exports

_EXPORTS = {
    "check_output": "femeso.jobs.output",
    "prepare_data_folder": "femeso.jobs.output",
    "load_data": "femeso.jobs.output",
    "data_source": "femeso.jobs.output",
    "from_files": "femeso.jobs.models",
    "build_space": "femeso.jobs.models",
    "configured_space": "femeso.jobs.models",
    "true_model": "femeso.jobs.models",
    "learned_model": "femeso.jobs.models",
    "baseline_model": "femeso.jobs.models",
    "stepper_factory": "femeso.jobs.models",
    "load_trained": "femeso.jobs.models",
    "generate": "femeso.jobs.data",
    "data_files": "femeso.jobs.data",
    "import_files": "femeso.jobs.data",
    "generate_trajectories": "femeso.jobs.data",
    "burn_in_frames": "femeso.jobs.data",
    "initial_field_settings": "femeso.jobs.data",
    "train": "femeso.jobs.training",
    "rollout_reports": "femeso.jobs.reporting",
    "rollout": "femeso.jobs.reporting",
    "rollout_results": "femeso.jobs.reporting",
    "report": "femeso.jobs.reporting",
    "model_costs": "femeso.jobs.reporting",
    "state_samples": "femeso.jobs.reporting",
    "table_lines": "femeso.jobs.summary",
    "summary_lines": "femeso.jobs.summary",
    "run": "femeso.jobs.pipeline",
}

__all__ = sorted(_EXPORTS)
__getattr__, __dir__ = lazy_exports(__name__, _EXPORTS)
