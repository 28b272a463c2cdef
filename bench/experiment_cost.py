"""Cost of an experiment's model: time to the step-1 target, inference cost at large steps.

For a job whose ``femeso run`` has finished (data and trained model on disk), measured in the
same run on the same machine:

* time to target: a fresh model's gradient-matching warm start (the first stage of training)
  and its mean step-1 error on the test data, against the published step-1 number
  (``--target``); reported as seconds and as a multiple of the classical solver's cost of one
  step at the data step;
* per-step cost of the trained model and of the classical solver (true equation in the same
  stepper) at 1, 10 and 100 times the data step, as ratios: learned / classical at the same
  step, and the cost per unit of simulated time relative to the data step (an implicit scheme's
  advantage: a 10x step is far less than 10x cheaper per step);
* the wall time of every finished experiment (``runs/*/report/results.json``).

Usage::

    python bench/experiment_cost.py [experiments/allen_cahn_1d.toml] [--target 2.4e-3]
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

ARGS = sys.argv[1:]
sys.argv = sys.argv[:1]  # PETSc reads the command line when femeso imports it

from femeso._runtime import configure_environment  # noqa: E402

configure_environment()  # before Firedrake: threads, kernel caches
from femeso import jobs  # noqa: E402
from femeso.config import load_config  # noqa: E402
from femeso.evaluation import rollout_errors  # noqa: E402
from femeso.stepping.energy_stable import EnergyStableStepper  # noqa: E402
from femeso.training.warm_start import warm_start  # noqa: E402

ROOT = Path(__file__).resolve().parents[1]


def seconds_per_step(model, u0, dt: float, steps: int) -> tuple[float, int]:
    """Wall seconds per step of ``steps`` steps from ``u0`` (set-up and first step excluded)."""
    stepper = EnergyStableStepper(model, u0, dt)
    stepper.advance()  # compile kernels, factorise once
    t0 = time.perf_counter()
    for _ in range(steps):
        stepper.advance()
    halvings = sum(r.halvings for r in stepper.records)
    return (time.perf_counter() - t0) / steps, halvings


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("job", nargs="?", default=str(ROOT / "experiments/allen_cahn_1d.toml"))
    parser.add_argument("--target", type=float, default=2.4e-3, help="published step-1 error")
    parser.add_argument("--steps", type=int, default=10, help="timed steps per step size")
    args = parser.parse_args(ARGS)
    config = load_config(args.job)
    if not (config.output / "onsager" / "model.npz").exists():
        raise SystemExit(f"{args.job}: run `femeso run {args.job}` first (no trained model)")
    space = jobs.build_space(config)
    data = jobs.load_data(config, space)
    truth = jobs.true_model(config, space)
    dt = config.data.frame_dt
    u0 = data["test"].trajectories[0].states[0]

    classical, _ = seconds_per_step(truth, u0, dt, args.steps)
    print(f"{config.job.name}: {space.dim()} DoFs, data step {dt:g}")
    print(f"classical solver at the data step: {classical:.4f} s/step")

    fresh = jobs.learned_model(config, space)
    t0 = time.perf_counter()
    start = warm_start(fresh, data["train"])
    fit_seconds = time.perf_counter() - t0
    report = rollout_errors(jobs.stepper_factory(fresh), data["test"], n_steps=1, keep_states=False)
    error = float(report.error_mean[1])
    status = "MET" if error <= args.target else "not met"
    print(
        f"time to target: warm start {fit_seconds:.1f} s ({start.match.pairs} frame pairs) -> "
        f"step-1 error {error:.2e} (target {args.target:.1e}: {status}); "
        f"= {fit_seconds / classical:.0f} classical steps"
    )

    trained = jobs.load_trained(config, space, "onsager")
    print("step      learned s/step  classical s/step  learned/classical  cost per unit time")
    base = None
    for factor in (1, 10, 100):
        learned, halvings = seconds_per_step(trained, u0, factor * dt, max(2, args.steps // 2))
        reference, _ = seconds_per_step(truth, u0, factor * dt, max(2, args.steps // 2))
        per_time = learned / (factor * dt)
        base = base or per_time
        print(
            f"{factor:>3}x dt   {learned:14.4f}  {reference:16.4f}  {learned / reference:17.2f}"
            f"  {per_time / base:18.3f}" + (f"  ({halvings} halvings)" if halvings else "")
        )

    print("experiment wall times (femeso run, from runs/*/report/results.json):")
    for path in sorted((ROOT / "runs").glob("*/report/results.json")):
        results = json.loads(path.read_text())
        total = results.get("seconds_total")
        if total is not None:
            print(f"  {path.parts[-3]:<28} {total / 60:6.1f} min")


if __name__ == "__main__":
    main()
