"""Training and inference cost of every model of a job, side by side in one run.

The job's data (default: the paper-protocol Allen--Cahn 1-D file, a few trajectories of it) are
imported once; then each model -- femeso's Onsager model (the job's ``[model]``), femeso's
black-box baseline and the peers FNO, MeshGraphNet and the spectral Onsager class -- is built
untrained and timed for

- **training**: ``--iterations`` optimiser steps on the training windows (Adam for everything,
  the job's batch size and unroll for the finite-element models, the peers' for the peers),
  reported per iteration and per window-step (one window of one step: the unit of data both
  kinds of training consume);
- **inference**: a rollout of ``--steps`` data steps from one state, per step (a step that
  fails ends the rollout, is printed, and the table says how many steps were done).

Ratios are against the Onsager model measured in the same run (the machine is shared and noisy).

    python bench/peer_cost.py                                  # AC 1-D paper file, 16 trajectories
    python bench/peer_cost.py --config experiments/fene_paper.toml --iterations 20

The data file must exist: ``python scripts/paper_data.py allen_cahn_1d --n 300 --seed 0
-o data/allen_cahn_1d_paper.h5``.
"""

from __future__ import annotations

from femeso._runtime import configure_environment, start_firedrake

configure_environment()  # threads, kernel caches
start_firedrake()

import argparse
import dataclasses
import math
import tempfile
import time
import tomllib
from pathlib import Path

import torch

from femeso import jobs
from femeso.config import validate
from femeso.jobs.training import _training_config  # noqa: E402
from femeso.peers.base import PeerStepper, fit
from femeso.peers.nodal import NodalLayout
from femeso.peers.runner import build_peer, data_step, fit_settings
from femeso.stepping.energy_stable import StepFailure
from femeso.training.trainer import Trainer

ROOT = Path(__file__).resolve().parents[1]
PEERS = ("fno", "meshgraphnet", "spectral_onsager")


def job(path: Path, output: Path, trajectories: int, iterations: int) -> dict:
    raw = tomllib.loads(path.read_text())
    raw["job"]["output"] = str(output)
    # the timed Adam steps (a file that trains by warm start + LM alone says 0)
    raw.setdefault("training", {})["iterations"] = iterations
    data = raw["data"]
    data["paths"] = [str((path.parent / p).resolve()) for p in data["paths"]]
    data["max_trajectories"] = trajectories
    data["split"] = [0.5, 0.25, 0.25]
    return validate(raw, str(output / "job.toml"))


def time_fe_model(config, which, space, data, iterations, steps):
    model = (
        jobs.baseline_model(config, space)
        if which == "baseline"
        else jobs.learned_model(config, space)
    )
    substeps = config.model.substeps if which == "onsager" else 1
    make = jobs.stepper_factory(model, substeps)
    settings = dataclasses.replace(
        _training_config(config, baseline=which == "baseline"),
        iterations=iterations,
        optimizer="adam",
        validate_every=0,
        checkpoint_every=0,
    )
    trainer = Trainer(model, data["train"], None, settings, make_stepper=make, progress=False)
    trainer.run()
    seconds = sum(r.seconds for r in trainer.history.records)
    u0 = data["test"].trajectories[0].states[0]
    stepper = make(u0, data_step(data["test"]))
    stepper.rollout(1)  # compile kernels
    step, done = timed_rollout(stepper, steps, which)
    params = sum(p.numel() for p in model.parameters() if p.requires_grad)
    windows = settings.batch_size * settings.unroll
    return seconds / iterations, seconds / iterations / windows, step, done, params


def timed_rollout(stepper, steps: int, name: str) -> tuple[float, int]:
    """Advance ``steps`` steps one at a time; return seconds per completed step and their number.

    A step that fails (an untrained model may be too stiff for its solver, a peer may produce
    non-finite values) ends the rollout and is reported; the time is that of the steps done.
    """
    seconds, done = 0.0, 0
    for _ in range(steps):
        t0 = time.perf_counter()
        try:
            stepper.rollout(1)
        except (StepFailure, ArithmeticError) as exc:
            print(f"{name}: rollout failed at step {done + 1} of {steps}: {exc}")
            break
        seconds += time.perf_counter() - t0
        done += 1
    return (seconds / done if done else math.nan), done


def time_peer(config, name, layout, data, iterations, steps):
    peer = build_peer(config, name, layout, data_step(data["train"]))
    settings = dataclasses.replace(
        fit_settings(config, name), iterations=iterations, validate_every=10**9
    )
    summary = fit(peer, data["train"], None, settings)
    stepper = PeerStepper(peer, data["test"].trajectories[0].states[0], peer.dt)
    stepper.rollout(1)
    step, done = timed_rollout(stepper, steps, name)
    per_iteration = summary.seconds_per_iteration
    windows = settings.batch_size * settings.unroll
    return per_iteration, per_iteration / windows, step, done, summary.parameters


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument(
        "--config", type=Path, default=ROOT / "experiments/allen_cahn_1d_paper.toml"
    )
    parser.add_argument("--trajectories", type=int, default=16)
    parser.add_argument("--iterations", type=int, default=10)
    parser.add_argument("--steps", type=int, default=50)
    parser.add_argument("--peer-iterations", type=int, default=50)
    args = parser.parse_args()
    torch.manual_seed(0)
    with tempfile.TemporaryDirectory() as tmp:
        config = job(args.config, Path(tmp), args.trajectories, args.iterations)
        jobs.generate(config, progress=False)
        space = jobs.build_space(config)
        data = jobs.load_data(config, space)
        rows = {}
        for which in ("onsager", "baseline"):
            rows[which] = time_fe_model(config, which, space, data, args.iterations, args.steps)
        layout = NodalLayout(space)
        for name in PEERS:
            try:
                rows[name] = time_peer(config, name, layout, data, args.peer_iterations, args.steps)
            except ValueError as exc:  # a peer that cannot run on this space says why
                print(f"{name}: not run: {exc}")
    ref = rows["onsager"]
    print(f"{space.dim()} DoFs, data step {data_step(data['train']):g}; ratios against onsager")
    print(
        f"{'model':<17}{'params':>9}{'s/iteration':>13}{'s/window-step':>15}{'ratio':>8}"
        f"{'s/rollout step':>16}{'ratio':>8}{'steps done':>12}"
    )
    for name, (it, ws, step, done, params) in rows.items():
        print(
            f"{name:<17}{params:>9d}{it:>13.3e}{ws:>15.3e}{ws / ref[1]:>8.3f}{step:>16.3e}"
            f"{step / ref[2]:>8.3f}{f'{done}/{args.steps}':>12}"
        )


if __name__ == "__main__":
    main()
