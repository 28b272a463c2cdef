"""Ablation: which learned factor, F or m, carries the long-horizon error (issue 17).

For a trained job whose data come from a known equation, every test trajectory is rolled out
from its first frame to the end of its data (``evaluation.horizon_factor`` times the training
horizon) by four models that differ only in where their energy and their mobility come from:

========================  ================  ==================
row                       energy density F  mobility m (and W)
========================  ================  ==================
learned                   learned           learned
learned F, true m         learned           true
true F, learned m         true              learned
classical                 true              true
========================  ================  ==================

plus persistence (u(t) = u(0)). The learned energy keeps its gradient coefficient in the gauge
the job trained it in (``kappa_ref``); the true energy brings its own. The script prints the
relative L2 error and the paper's relative RMSE at step 1, at the training horizon and at 2, 5
and 10 times it, writes ``report/ablation.json`` (errors at every step) and plots the mean L2
error against time for every row (``report/ablation.png``)::

    python scripts/ablation.py JOB.toml
    python scripts/ablation.py JOB.toml --test-data OTHER_JOB.toml

The job must be trained (``femeso train``); nothing is retrained. With ``--test-data`` the test
trajectories are another job's on the same mesh (e.g. longer ones); the marks stay multiples of
this job's training horizon (to 50 times, as far as the data go) and the files are named
``ablation_<other job>.json`` / ``.png``.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

import numpy as np


def main() -> None:
    """Roll out the four models and persistence, print the table, write JSON and a plot."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("config", help="the job's TOML file")
    parser.add_argument("--test-data", help="another job's TOML file: roll out its test data")
    args, rest = parser.parse_known_args()
    sys.argv = sys.argv[:1] + rest  # the rest (PETSc options, if any) goes to PETSc

    from femeso._runtime import configure_environment, start_firedrake

    configure_environment()
    start_firedrake()
    from femeso import jobs
    from femeso.config import load_config
    from femeso.evaluation import rollout_errors, write_json
    from femeso.model.onsager import OnsagerModel

    config = load_config(args.config)
    space = jobs.build_space(config)
    truth = jobs.true_model(config, space)
    if truth is None:
        raise SystemExit("ablation: the job's data have no known equation (files or chains)")
    learned = jobs.load_trained(config, space, "onsager")
    data_config = load_config(args.test_data) if args.test_data else config
    if data_config.mesh != config.mesh:
        raise SystemExit("ablation: --test-data must name a job on the same mesh")
    test = jobs.load_data(data_config, space)["test"]
    models = {
        "learned": learned,
        "learned F, true m": OnsagerModel(
            space,
            learned.energy,
            mobility=list(truth.mobilities),
            conservative=list(truth.conservative),
            gauge=learned.gauge,
            kappa_ref=learned.kappa_ref,
        ),
        "true F, learned m": OnsagerModel(
            space,
            truth.energy,
            mobility=list(learned.mobilities),
            conservative=list(learned.conservative),
            gauge=None,
        ),
        "classical": truth,
    }
    substeps = config.model.substeps
    reports = {
        name: rollout_errors(jobs.stepper_factory(model, substeps), test, keep_states=False)
        for name, model in models.items()
    }
    first = next(iter(reports.values()))
    frames = config.data.frames
    frame_dt = first.frame_dt
    horizon = frames * frame_dt
    marks = {"step 1": frame_dt} | {
        f"{f}x horizon": f * horizon
        for f in (1, 2, 5, 10, 20, 50)
        if f * horizon <= first.times[-1] + 1e-12
    }

    def at(values: np.ndarray, t: float) -> float:
        k = int(np.argmin(np.abs(first.times - t)))
        return float(values[k])

    persistence = _persistence(test)
    rows = {}
    for name, report in reports.items():
        rows[name] = {
            "l2": {m: at(report.error_mean, t) for m, t in marks.items()},
            "paper": {m: at(report.nodal_error_mean, t) for m, t in marks.items()},
            "failed": int(report.n_failed),
        }
    rows["persistence"] = {
        "l2": {m: at(persistence[0], t) for m, t in marks.items()},
        "paper": {m: at(persistence[1], t) for m, t in marks.items()},
        "failed": 0,
    }
    header = f"{'model':<20}" + "".join(f"{m:>16}" for m in marks) + f"{'failed':>8}"
    for metric, title in (("l2", "relative L2 error"), ("paper", "paper metric (nodal RMSE)")):
        print(f"\n{config.job.name}: {title}, mean over {len(test)} test trajectories")
        print(header)
        for name, row in rows.items():
            cells = "".join(f"{row[metric][m]:>16.3e}" for m in marks)
            print(f"{name:<20}{cells}{row['failed']:>8d}")
    out = config.output / "report"
    stem = f"ablation_{data_config.job.name}" if args.test_data else "ablation"
    write_json(
        out / f"{stem}.json",
        {
            "times": first.times,
            "horizon": horizon,
            "rows": rows,
            "error_mean": {name: r.error_mean for name, r in reports.items()}
            | {"persistence": persistence[0]},
            "paper_error_mean": {name: r.nodal_error_mean for name, r in reports.items()}
            | {"persistence": persistence[1]},
        },
    )
    _plot(out / f"{stem}.png", first.times / horizon, reports, persistence[0], config)
    print(f"\nwrote {out / stem}.json and {out / stem}.png")


def _persistence(test) -> tuple[np.ndarray, np.ndarray]:
    """Mean L2 and paper errors of u(t) = u(0) at every frame (the rollout's step is a frame)."""
    from femeso.evaluation import nodal_relative_rmse, relative_l2_error

    n = min(len(t.states) for t in test)
    l2 = np.array([[relative_l2_error(t.states[0], t.states[k]) for k in range(n)] for t in test])
    paper = np.array(
        [[nodal_relative_rmse(t.states[0], t.states[k]) for k in range(n)] for t in test]
    )
    return l2.mean(axis=0), paper.mean(axis=0)


def _plot(path: Path, t: np.ndarray, reports, persistence: np.ndarray, config) -> None:
    from mpi4py import MPI

    if MPI.COMM_WORLD.rank != 0:
        return
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(6.5, 4.2))
    for name, report in reports.items():
        ax.semilogy(t[1:], report.error_mean[1:], label=name)
    n = min(len(persistence), len(t))
    ax.semilogy(t[1:n], persistence[1:n], "k:", label="persistence")
    ax.axvline(1.0, color="0.6", lw=0.8)
    ax.set_xlabel("time / training horizon")
    ax.set_ylabel("relative L2 error (mean over test trajectories)")
    ax.set_title(f"{config.job.name}: which factor carries the error")
    ax.legend(fontsize=8)
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)


if __name__ == "__main__":
    main()
