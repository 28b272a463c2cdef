"""The paper's step-size diagnostics (femeso.evaluation.diagnostics, scripts/paper_diagnostics.py).

Known models on a coarse periodic interval: the true Allen--Cahn model rolled at the paper's
inference steps converges at order 2 (midpoint discrete gradient) and never increases its
energy; its one-step |ΔV| is Δt times the dissipation (slope 1), and the true V read on its own
frames falls like Δt too. The true KdV model (M = 0) conserves its energy to round-off at every
step size. The command line, on a tiny generated job with an untrained model saved as the
trained one, writes diagnostics.json and the figure and turns bad requests into exit status 2.
"""

import importlib.util
import json
import math
import tomllib
from pathlib import Path

import firedrake as fd
import numpy as np
import pytest

from femeso import jobs
from femeso.config import load_config
from femeso.data.generators import allen_cahn_model, kdv_model, paper_sine_initial_condition
from femeso.data.trajectories import TrajectoryData
from femeso.evaluation.diagnostics import (
    data_energy_change,
    inference_sweep,
    loglog_slope,
    one_step_energy_change,
    start_frames,
)
from femeso.stepping.energy_stable import EnergyStableStepper

ROOT = Path(__file__).resolve().parents[1]
H = 1e-3  # the frame step
FACTORS = (0.03, 0.1, 0.3, 1.0, 3.0)


def factory(model):
    return lambda u0, dt: EnergyStableStepper(model, u0, dt)


def frames(model, u0, n_frames: int, substeps: int = 16) -> TrajectoryData:
    """``n_frames`` frames ``H`` apart of the model's own rollout at ``H / substeps``."""
    rollout = EnergyStableStepper(model, u0, H / substeps).rollout(
        (n_frames - 1) * substeps, store_every=substeps
    )
    return TrajectoryData.from_trajectory(rollout)


@pytest.fixture(scope="module")
def space():
    return fd.FunctionSpace(fd.PeriodicIntervalMesh(64, 2 * math.pi), "CG", 1)


@pytest.fixture(scope="module")
def allen_cahn(space):
    model = allen_cahn_model(space)
    return model, frames(model, paper_sine_initial_condition(space, seed=1), 9)


def test_the_true_allen_cahn_model_converges_at_order_two_and_dissipates(allen_cahn):
    model, traj = allen_cahn
    sweep = inference_sweep(factory(model), traj, FACTORS)
    assert sweep["t_end"] == pytest.approx(3 * H) and sweep["n_steps"] == [100, 30, 10, 3, 1]
    assert 1.8 < sweep["order_vs_finest"] < 2.4
    assert math.isnan(sweep["error_vs_finest"][0])
    # the data come from the same equation at H/16: the error against them falls with dt too
    assert sweep["error"][-1] > 100 * sweep["error"][0]
    assert sweep["energy_increases"] == [0] * 5
    assert all(c < 0 for c in sweep["energy_relative_change"])
    assert all(m < 0 for m in sweep["max_step_increase"])
    assert all(s > 0 for s in sweep["seconds_per_step"])
    # one step from two frames: dV = -dt <mu, M mu> < 0, order 1
    one = one_step_energy_change(factory(model), traj, FACTORS, starts=[0, 4])
    assert np.all(np.asarray(one["delta_V"]) < 0) and not any(one["round_off"])
    assert 0.9 < one["slope"] < 1.1
    # the true V read on the model's own frames k H apart: dV ~ k H dV/dt
    reading = data_energy_change(model.energy_value, traj, (1, 2, 4))
    assert reading["starts"] == [0, 1, 2, 3, 4] and reading["pairs"] == [5, 5, 5]
    assert all(d < 0 for d in reading["mean_signed"])
    assert 0.7 < reading["slope"] < 1.2
    # at k = 1 the reading is the model's own step at H up to the time error of one step
    one_step_at_h = one["mean_abs"][FACTORS.index(1.0)]
    reading_at_h = data_energy_change(model.energy_value, traj, (1,), starts=[0, 4])["mean_abs"]
    assert reading_at_h[0] == pytest.approx(one_step_at_h, rel=1e-2)


def test_a_conservative_model_keeps_its_energy_to_round_off(space):
    model = kdv_model(space)
    u0 = fd.Function(space).interpolate(0.5 * fd.sin(fd.SpatialCoordinate(space.mesh())[0]))
    traj = frames(model, u0, 3, substeps=4)
    one = one_step_energy_change(factory(model), traj, (0.1, 1.0, 3.0), starts=[0, 2])
    assert max(one["mean_relative"]) < 1e-10 and all(one["round_off"])
    assert math.isnan(one["slope"])
    sweep = inference_sweep(factory(model), traj, (0.5, 1.0))
    assert max(abs(c) for c in sweep["energy_relative_change"]) < 1e-10


def test_helpers_reject_bad_requests(allen_cahn):
    model, traj = allen_cahn
    assert start_frames(101, 8, reach=16) == [0, 12, 24, 36, 48, 60, 72, 84]
    assert start_frames(3, 8) == [0, 1, 2]
    with pytest.raises(ValueError, match="no frame 16 frames before"):
        start_frames(10, 2, reach=16)
    with pytest.raises(ValueError, match="no frames 16 steps apart"):
        data_energy_change(model.energy_value, traj, (16,))
    with pytest.raises(ValueError, match="not frames of a 9-frame run"):
        one_step_energy_change(factory(model), traj, (1.0,), starts=[9])
    with pytest.raises(ValueError, match="no frame at t_end"):
        inference_sweep(factory(model), traj, (1.0, 20.0))
    assert loglog_slope([1, 2, 4], [3, 6, 12]) == pytest.approx(1.0)
    assert math.isnan(loglog_slope([1, 2], [0.0, 1.0]))


def _script():
    spec = importlib.util.spec_from_file_location(
        "paper_diagnostics", ROOT / "scripts" / "paper_diagnostics.py"
    )
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_the_script_writes_the_diagnostics_of_a_job(tmp_path, capsys):
    raw = tomllib.loads((ROOT / "experiments" / "allen_cahn_1d.toml").read_text())
    raw["mesh"]["cells"] = 32
    raw["data"].update(train=1, validation=1, test=1, frames=5, substeps=2, refine=0)
    raw["job"]["output"] = str(tmp_path / "out")
    path = tmp_path / "job.toml"
    path.write_text(
        "\n".join(
            f"[{section}]\n" + "\n".join(f"{k} = {json.dumps(v)}" for k, v in keys.items())
            for section, keys in raw.items()
        )
        + "\n"
    )
    config = load_config(path)
    jobs.generate(config, progress=False)
    space = jobs.build_space(config)
    (config.output / "onsager").mkdir()
    jobs.learned_model(config, space).save(config.output / "onsager" / "model.npz")  # untrained
    main = _script().main
    args = [str(path), "--factors", "0.1", "1", "2", "--spacings", "1", "2", "--starts", "2", "-q"]
    assert main(args) == 0
    out = capsys.readouterr().out
    assert "inference sweep from frame 0 to t = 0.002" in out and "slope" in out
    report = config.output / "report"
    results = json.loads((report / "diagnostics.json").read_text())
    assert results["sweep"]["n_steps"] == [20, 2, 1] and results["classical"] is not None
    assert results["one_step"]["starts"] == [0, 3] and results["data_reading"]["pairs"] == [4, 4]
    assert (report / "diagnostics.png").stat().st_size > 10_000
    assert main([*args, "--test", "1"]) == 2
    assert "--test must be an integer in 0..0" in capsys.readouterr().err
    assert main([str(tmp_path / "missing.toml")]) == 2
