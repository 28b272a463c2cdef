"""Reduced versions of the paper's experiments (experiments/*.toml): tiny sizes, real measurements.

Each job is the experiment's own file with a 64-cell mesh, 2 training trajectories of 6 frames and
a few iterations; the assertions are measured properties that a broken stage would fail: training
lowers the one-step error well below the untrained model's, the report's table has the paper's
rows, the learned energy never increases (Allen--Cahn) or is conserved to round-off (KdV and the
chains, M = 0), and bad experiment settings are one-line configuration errors.
"""

import math
import tomllib
from pathlib import Path

import firedrake as fd
import numpy as np
import pytest

import femeso
from femeso import jobs
from femeso.config import ConfigError, validate
from femeso.evaluation import error_table, rollout_errors
from femeso.peers.runner import peer_names
from models import EXPERIMENTS, tiny_experiment

#: Tiny on a 64-cell mesh (on top of models.TINY).
SMALL_MESH = {"mesh": {"cells": 64}}


def experiment(name: str, tmp_path: Path, **sections) -> dict:
    """Return the raw TOML of ``experiments/<name>.toml`` made tiny (and ``sections`` applied)."""
    return tiny_experiment(name, tmp_path / name, SMALL_MESH, sections)


def untrained_first_step_error(config) -> float:
    """Mean relative L2 error after one step of the untrained model over the test data."""
    space = jobs.build_space(config)
    data = jobs.load_data(config, space)
    model = jobs.learned_model(config, space)
    make = jobs.stepper_factory(model, config.model.substeps)
    report = rollout_errors(make, data["test"], n_steps=1, keep_states=False)
    return float(report.error_mean[1])


def run_tiny(name: str, tmp_path: Path, **sections):
    """Run the tiny experiment; return its config, results and the untrained one-step error."""
    config = validate(experiment(name, tmp_path, **sections), f"{name} (tiny)")
    results = jobs.run(config, progress=False)
    return config, results, untrained_first_step_error(config)


def check_table(results: dict, models: set[str]) -> None:
    """The table has one row per model, steps 1..5 and the last frame (6 < 100), finite stats."""
    assert set(results["table"]) == models
    for row in results["table"].values():
        assert row["steps"] == [1, 2, 3, 4, 5, 6]
        assert len(row["mean"]) == len(row["std"]) == len(row["n"]) == 6
        assert row["n"] == [2] * 6
        assert np.all(np.isfinite(row["mean"])) and np.all(np.asarray(row["std"]) >= 0)
    lines = "\n".join(jobs.summary_lines(results))
    for model in models:
        assert f"\n{model}" in lines


@pytest.mark.parametrize("experiment_name", ["allen_cahn_1d"])
def test_allen_cahn_training_beats_the_untrained_model_and_never_raises_the_energy(
    tmp_path, experiment_name
):
    # F must reach the scale 1/eps^2 = 100 (the gauge fixes kappa = 1): the warm start finds
    # it from the data (reference data on the 64-cell mesh itself: on the twice-refined one the
    # 64-cell mesh does not resolve the interfaces and the one-step fit is rejected)
    data = {"refine": 0, "substeps": 4}
    config, results, untrained = run_tiny(experiment_name, tmp_path, data=data)
    check_table(results, {"onsager", "classical", "baseline"})
    start = results["training"]["onsager"]["warm_start"]
    assert start["applied"] and abs(start["coefficient"] - 1) < 0.05
    trained = results["table"]["onsager"]["mean"][0]
    assert trained < 0.1 * untrained, (trained, untrained)
    assert results["onsager"]["energy_increases"] == 0
    assert not results["conservative"]
    # the classical solver is the data's own model at 4x the step: close to the data
    assert results["table"]["classical"]["mean"][0] < 1e-3


@pytest.mark.parametrize("experiment_name", ["kdv", "fput", "fene"])
def test_conservative_experiments_learn_the_transport_and_conserve_the_energy(
    tmp_path, experiment_name
):
    config, results, untrained = run_tiny(experiment_name, tmp_path)
    known = experiment_name == "kdv"
    peers = set(peer_names(config))  # the peers the experiment file names (kdv: fno, spectral)
    check_table(results, {"onsager", "baseline"} | ({"classical"} if known else set()) | peers)
    assert results["conservative"]
    assert results["onsager"]["energy_drift"] < 1e-10
    if known:
        assert results["classical"]["energy_drift"] < 1e-10
        assert "density_r2" in results["targets"]
    else:
        assert "density_r2" not in results["targets"] and "density" not in results
    trained = results["table"]["onsager"]["mean"][0]
    assert trained < (0.5 if known else 0.9) * untrained, (trained, untrained)
    # the velocity starts with the wrong sign (the truth: -1 for KdV, about -b = -0.05 for the
    # chain in this gauge); a few iterations flip it for KdV and move it down for the chain
    ((velocity,),) = results["transport"]
    assert velocity < (0.0 if known else config.model.velocity), velocity


def test_chain_data_is_the_coarse_grained_chain(tmp_path):
    config = validate(experiment("fene", tmp_path), "fene (tiny)")
    jobs.generate(config, progress=False)
    data = jobs.load_data(config, jobs.build_space(config))
    lengths = {len(t.times) for split in ("train", "validation") for t in data[split]}
    assert lengths == {7}
    assert {len(t.times) for t in data["test"]} == {7}
    assert data["test"].trajectories[0].times[1] == pytest.approx(5e-3)
    for t in data["train"]:
        values = np.array([s.dat.data_ro for s in t.states])
        assert np.all(np.isfinite(values))
        # unit standard deviation of the initial profile (modes beyond the mesh dropped)
        assert 0.5 < values[0].std() < 1.2


def test_error_table_keeps_steps_one_to_five_and_the_last_compared(tmp_path):
    from femeso.evaluation import RolloutReport

    n_traj, n_steps = 3, 8
    errors = np.arange(n_traj * (n_steps + 1), dtype=float).reshape(n_traj, n_steps + 1)
    errors[:, 0] = 0.0
    errors[1, 7:] = np.nan  # a rollout that failed after 6 steps
    report = RolloutReport(
        times=np.arange(n_steps + 1) * 0.1,
        dt=0.1,
        frame_dt=0.1,
        n_steps=n_steps,
        compared=np.ones(n_steps + 1, bool),
        errors=errors,
        error_mean=np.nanmean(errors, axis=0),
        error_std=np.nanstd(errors, axis=0),
        energies=np.full((n_traj, n_steps + 1), np.nan),
        dissipation=np.full((n_traj, n_steps), np.nan),
        mass=np.zeros((n_traj, n_steps + 1, 1)),
        mass_drift=np.zeros((n_traj, n_steps + 1)),
        energy_increases=[None] * n_traj,
        data_times=np.arange(n_steps + 1) * 0.1,
    )
    table = error_table(report, steps=(1, 2, 3, 4, 5, 100))
    assert table["steps"] == [1, 2, 3, 4, 5, 8]
    assert table["n"] == [3, 3, 3, 3, 3, 2]
    assert table["mean"][0] == pytest.approx(errors[:, 1].mean())
    assert table["std"][2] == pytest.approx(errors[:, 3].std())
    assert table["mean"][-1] == pytest.approx(np.mean([errors[0, 8], errors[2, 8]]))
    assert math.isclose(table["times"][-1], 0.8)
    assert error_table(report, steps=(2, 4))["steps"] == [2, 4]


@pytest.mark.parametrize(
    "sections,message",
    [
        ({"data": {"initial": "cosine"}}, "data.initial must be one of"),
        ({"data": {"equation": "burgers"}}, "data.equation must be one of"),
        ({"model": {"transport": "neural"}}, "model.transport must be one of"),
        ({"model": {"velocity": "fast"}}, "model.velocity must be a number"),
        (
            {"mesh": {"name": "l_shape"}, "data": {"equation": "kdv"}},
            "data.equation = 'kdv' needs mesh.name = 'periodic_interval'",
        ),
        (
            {"mesh": {"name": "periodic_square"}, "data": {"equation": "fput"}},
            "data.equation = 'fput' needs mesh.name = 'periodic_interval'",
        ),
        (
            {"mesh": {"name": "l_shape"}, "data": {"initial": "paper_sine"}},
            "data.initial = 'paper_sine' needs a periodic mesh",
        ),
        (
            {"model": {"mobility": "none", "transport": "none"}},
            "leave no dynamics",
        ),
        ({"model": {"polynomial_degree": 5}}, "model.polynomial_degree must be 0 or an even"),
        (
            {
                "mesh": {"name": "periodic_square"},
                "model": {"transport": "learned"},
                "training": {"warm_start": False},
            },
            "model.transport = 'learned' needs mesh.name = 'periodic_interval'",
        ),
        ({"mesh": {"name": "files"}}, "mesh.name = 'files' .the data's own mesh. needs data"),
    ],
)
def test_bad_experiment_settings_are_one_line_errors(tmp_path, sections, message):
    raw = experiment("allen_cahn_1d", tmp_path)
    for section, keys in sections.items():
        raw[section].update(keys)
    with pytest.raises(ConfigError, match=message) as info:
        validate(raw, "job.toml")
    assert "\n" not in str(info.value) and str(info.value).startswith("job.toml: ")


def test_a_file_job_takes_its_mesh_from_the_files_unless_mesh_name_names_one():
    files = {"data": {"source": "files", "paths": ["runs/*.xdmf"]}, "model": {"dynamics": "local"}}
    own = validate(files, "job.toml")
    assert own.mesh.name == "files"
    resampled = validate({**files, "mesh": {"name": "l_shape", "refinement": 1}}, "job.toml")
    assert (resampled.mesh.name, resampled.mesh.refinement) == ("l_shape", 1)
    for config in (own, resampled):
        assert validate(config.as_dict(), "again.toml") == config
    with pytest.raises(ConfigError, match="mesh.refinement: with data.source = 'files'") as info:
        validate({**files, "mesh": {"refinement": 1}}, "job.toml")
    assert "\n" not in str(info.value) and "mesh.name" in str(info.value)


@pytest.mark.parametrize("name", ["allen_cahn_1d", "kdv", "fput", "fene"])
def test_the_experiment_files_are_valid_jobs(name):
    raw = tomllib.loads((EXPERIMENTS / f"{name}.toml").read_text())
    config = validate(raw, name)
    assert config.mesh.cells == 256 and config.data.frames == 100
    assert config.evaluation.horizon_factor == 1


def test_report_samples_are_capped_by_whole_evenly_spaced_states():
    V = fd.FunctionSpace(fd.PeriodicIntervalMesh(16, 1.0), "CG", 1)
    model = femeso.OnsagerModel(V, femeso.Energy(femeso.CoerciveNeuralDensity(width=4), kappa=1.0))
    states = [fd.Function(V).assign(float(i)) for i in range(10)]
    per_state = model.state_at_points(states[0]).shape[0]
    everything = jobs.state_samples(model, states, limit=10**9)
    assert everything.shape[0] == 10 * per_state
    capped = jobs.state_samples(model, states, limit=3 * per_state + 1)
    assert capped.shape[0] <= 3 * per_state + 1
    assert sorted(set(np.round(capped[:, 0].numpy(), 9))) == [0.0, 4.0, 8.0]  # whole, even
    assert jobs.state_samples(model, states, limit=1).shape[0] == per_state  # at least one
    with pytest.raises(ValueError, match="no states"):
        jobs.state_samples(model, [])


def test_every_experiment_file_is_a_valid_job():
    paths = sorted(EXPERIMENTS.glob("*.toml"))
    assert len(paths) >= 17
    for path in paths:
        validate(tomllib.loads(path.read_text()), str(path))
