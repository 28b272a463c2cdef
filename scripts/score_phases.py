"""Score the best model of every training phase of a trained job: the judge and the long horizon.

``femeso train`` keeps one model, the judge's best over the start and the phases. This script
reloads each phase's ``best_model.npz`` (the first-order phase, every phase of
``training.unroll_schedule``) and the kept ``model.npz``. For each it prints:

- the judge's validation loss (on ``training.judge_unroll``-step windows when set);
- the mean relative L2 error at the training horizon over the test trajectories;
- the same error at the end of the test data.

It shows what each phase bought even when the judge did not keep it::

    python scripts/score_phases.py JOB.toml

Nothing is retrained.
"""

from __future__ import annotations

import argparse
from pathlib import Path

from femeso._runtime import configure_environment, start_firedrake


def main() -> None:
    """Print the table for the job named on the command line."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("config", type=Path, help="the trained job's TOML file")
    args = parser.parse_args()
    configure_environment()
    start_firedrake()
    from femeso import jobs
    from femeso.config import load_config
    from femeso.evaluation import rollout_errors
    from femeso.jobs.training import _training_config
    from femeso.training.trainer import Trainer

    config = load_config(args.config)
    space = jobs.build_space(config)
    data = jobs.load_data(config, space)
    folder = config.output / "onsager"
    phases = [(f"{config.training.unroll}-step windows (first phase)", folder / "best_model.npz")]
    phases += [
        (f"{k}-step windows", folder / f"unroll_{k}" / "best_model.npz")
        for k in config.training.unroll_schedule
    ]
    phases.append(("kept (model.npz)", folder / "model.npz"))
    horizon_step = config.data.frames  # the training horizon, in data steps
    print(f"{'best model of':<34} {'judge loss':>11} {'L2 at T':>9} {'L2 at end':>10}")
    for label, path in phases:
        if not path.exists():
            print(f"{label:<34} {'(no ' + path.name + ')':>11}")
            continue
        model = jobs.learned_model(config, space)
        model.load_parameters(path)
        make = jobs.stepper_factory(model, config.model.substeps)
        settings = _training_config(config, baseline=False, judge=True)
        judge = Trainer(
            model, data["train"], data["validation"], settings, make_stepper=make, progress=False
        )
        report = rollout_errors(make, data["test"], keep_states=False, progress=False)
        summary = report.summary()
        print(
            f"{label:<34} {judge.validate():>11.4e} {report.error_mean[horizon_step]:>9.3e} "
            f"{summary['error_last']:>10.3e}",
            flush=True,
        )


if __name__ == "__main__":
    main()
