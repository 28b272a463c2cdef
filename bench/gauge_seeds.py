"""Identifiability in practice: two seeds trained on the same data, learned factors compared.

The gauge (F(0) = 0, kappa normalised to kappa_ref) makes the factors (F, m) of a dynamics unique
within the class; whether two trainings find them is what this script measures. It trains the
Onsager model of a job (default: the demo) with ``training.seed`` = 0 and 1 on the data of the job
(generated once), and prints, over the central 98 % of the training data's values:

* F': max |F'_0 - F'_1| / range(F'_true), after removing each curve's mean for conserved
  dynamics (there the linear part of F is invisible);
* m: max |m_0 - m_1| / max m_true;
* the same distances of each seed to the truth.

Usage::

    python bench/gauge_seeds.py [job.toml] [--output DIR]
"""

from __future__ import annotations

import argparse
import shutil
import sys
import time
from pathlib import Path

ARGS = sys.argv[1:]
sys.argv = sys.argv[:1]  # PETSc reads the command line when femeso imports it

import numpy as np  # noqa: E402
import torch  # noqa: E402

from femeso._runtime import configure_environment  # noqa: E402

configure_environment()  # before Firedrake: threads, kernel caches
from femeso import jobs  # noqa: E402
from femeso.config import demo_config, load_config, validate  # noqa: E402


def curves(config, seed_dir: Path, seed: int):
    """Train seed ``seed`` on the data in ``seed_dir`` and return (u, F', m) of the result."""
    raw = config.as_dict()
    raw["training"]["seed"], raw["job"]["output"] = seed, str(seed_dir)
    raw["baseline"]["enabled"] = False
    cfg = validate(raw)
    t0 = time.perf_counter()
    jobs.train(cfg, models=("onsager",), progress=False)
    seconds = time.perf_counter() - t0
    space = jobs.build_space(cfg)
    model = jobs.load_trained(cfg, space, "onsager")
    truth = jobs.true_model(cfg, space)
    data = jobs.load_data(cfg, space)["train"]
    values = np.concatenate([s.dat.data_ro for t in data.trajectories for s in t.states])
    lo, hi = np.percentile(values, [1, 99])
    u = torch.linspace(lo, hi, 200, dtype=torch.float64)[:, None]
    with torch.no_grad():
        learned = [model.energy.density.value_and_state_derivative(u, None)[1].reshape(-1)]
        learned.append(model.mobilities[0].coefficient(u, None)[:, 0])
        true_m = truth.mobilities[0].coefficient(u, None)[:, 0]
    with torch.enable_grad():
        v = u.clone().requires_grad_(True)
        (true_dF,) = torch.autograd.grad(truth.energy.density(v, None).sum(), v)
    return seconds, u[:, 0].numpy(), [x.numpy() for x in learned], true_dF[:, 0].numpy(), true_m


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("config", nargs="?", help="job TOML (default: the demo)")
    parser.add_argument("--output", default="bench-gauge-seeds", help="work directory")
    args = parser.parse_args(ARGS)
    config = load_config(args.config) if args.config else demo_config(args.output)
    base = Path(args.output)
    raw = config.as_dict()
    raw["job"]["output"] = str(base / "seed0")
    jobs.generate(validate(raw), progress=False)
    shutil.copytree(base / "seed0" / "data", base / "seed1" / "data", dirs_exist_ok=True)
    conserved = config.data.equation == "cahn_hilliard"
    results = [curves(config, base / f"seed{s}", s) for s in (0, 1)]
    true_dF, true_m = results[0][3], results[0][4].numpy()

    def centred(f):
        return f - f.mean() if conserved else f

    span = np.ptp(centred(true_dF))
    dF = [centred(r[2][0]) for r in results]
    m = [r[2][1] for r in results]
    print(f"data range of u: [{results[0][1][0]:.3f}, {results[0][1][-1]:.3f}]")
    print(f"training time per seed: {results[0][0]:.0f} s, {results[1][0]:.0f} s")
    f_gap = np.abs(dF[0] - dF[1]).max() / span
    m_gap = np.abs(m[0] - m[1]).max() / true_m.max()
    print(f"F' seed 0 vs seed 1: max diff / range(F'_true) = {f_gap:.3e}")
    print(f"m  seed 0 vs seed 1: max diff / max(m_true)    = {m_gap:.3e}")
    for s in (0, 1):
        print(
            f"seed {s} vs truth: F' {np.abs(dF[s] - centred(true_dF)).max() / span:.3e}, "
            f"m {np.abs(m[s] - true_m).max() / true_m.max():.3e}"
        )


if __name__ == "__main__":
    main()
