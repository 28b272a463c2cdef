"""Training as phases (femeso.training.phases): one judge, every phase from the best so far, best
kept."""

import math

import firedrake as fd
import pytest

import femeso
from femeso.data.generators import allen_cahn_model, generate_dataset
from femeso.training.phases import ChooseStart, Optimise, PhasedTraining
from femeso.training.trainer import TrainingConfig


def data(V: fd.FunctionSpace, seed: int):
    return generate_dataset(
        V,
        lambda space: allen_cahn_model(space, epsilon=1.0),
        n_trajectories=2,
        n_frames=3,
        frame_dt=0.05,
        seed=seed,
        progress=False,
        initial_condition=lambda V, seed: femeso.random_smooth_field(V, seed=seed, amplitude=1.2),
    )


def model(V):
    energy = femeso.Energy(femeso.CoerciveNeuralDensity(width=8, seed=0), kappa=1.0)
    return femeso.OnsagerModel(V, energy, mobility=femeso.LocalMobility(1.0))


def settings(**overrides) -> TrainingConfig:
    return TrainingConfig(
        **{"iterations": 4, "batch_size": 2, "validate_every": 2, "seed": 0, **overrides}
    )


@pytest.fixture(scope="module")
def train_and_validation():
    V = fd.FunctionSpace(fd.PeriodicIntervalMesh(32, 2 * math.pi), "CG", 1)
    return data(V, 0), data(V, 10)


def test_a_phase_that_makes_things_worse_is_not_kept(train_and_validation, tmp_path):
    """Adam at a wild learning rate after a good start: the start's parameters are kept."""
    train, validation = train_and_validation
    m = model(train.space)
    training = PhasedTraining(m, train, validation, judge=settings(), progress=False)
    result = training.run(
        [ChooseStart(n_candidates=2), Optimise(settings(learning_rate=50.0), tmp_path / "adam")]
    )
    start = result["start"]
    assert start["chosen"] in start["candidates"]
    assert result["iterations"] == 4
    # the judge scores the kept parameters exactly as it scored the chosen start
    assert result["model"] == start["chosen"], result["model"]
    assert training.judge.validate() == pytest.approx(start["validation"], rel=1e-12)
    assert result["best_validation"] == pytest.approx(start["validation"], rel=1e-12)


def test_every_phase_is_judged_and_the_best_is_named(train_and_validation, tmp_path):
    train, validation = train_and_validation
    m = model(train.space)
    training = PhasedTraining(m, train, validation, judge=settings(), progress=False)
    lm = settings(optimizer="levenberg_marquardt", iterations=3, learning_rate=1.0)
    result = training.run(
        [
            Optimise(settings(), tmp_path / "adam"),
            Optimise(lm, tmp_path / "lm", "refine_iterations"),
        ]
    )
    assert (result["iterations"], result["refine_iterations"]) == (4, 3)
    assert result["model"] in (
        "Adam, best on validation",
        "Levenberg-Marquardt, best on validation",
    )
    assert training.judge.validate() == pytest.approx(result["best_validation"], rel=1e-12)
    assert result["best_validation"] < math.inf


def test_a_lengthening_unroll_schedule_runs_as_phases_judged_on_long_windows(tmp_path):
    """training.unroll_schedule: one Adam phase per window length, each counted and kept apart;
    training.judge_unroll: the kept model is chosen on validation windows of that length."""
    from femeso import jobs
    from femeso.config import ConfigError, validate
    from femeso.jobs.training import _training_config

    raw = {
        "job": {"output": str(tmp_path / "job")},
        "data": {"train": 2, "validation": 1, "test": 1, "frames": 4, "burn_in": 2},
        "training": {
            "iterations": 3,
            "batch_size": 2,
            "validate_every": 1,
            "refine_iterations": 2,
            "refine_batch_size": 2,
            "refine_unroll": [1, 2],
            "unroll_schedule": [2, 3],
            "schedule_iterations": 2,
            "judge_unroll": 4,
        },
        "baseline": {"enabled": False},
    }
    config = validate(raw, "job.toml")
    assert _training_config(config, baseline=False, judge=True).unroll == 4
    assert _training_config(config, baseline=False).unroll == 1
    jobs.generate(config, progress=False)
    out = jobs.train(config, models=("onsager",), progress=False)["onsager"]
    assert (out["iterations"], out["unroll_2"], out["unroll_3"]) == (3, 2, 2)
    assert (out["refine_iterations"], out["refine_unroll_2"]) == (2, 2)
    assert out["schedule_iterations"] == 4
    for unroll in (2, 3):
        history = tmp_path / "job" / "onsager" / f"unroll_{unroll}" / "history.json"
        assert history.exists(), history
    # every phase offered its result to the one judge; the kept one scored best
    judged = out["judged"]
    assert list(judged) == [
        "Adam, best on validation",
        "Adam, 2-step windows, best on validation",
        "Adam, 3-step windows, best on validation",
        "Levenberg-Marquardt, best on validation",
        "Levenberg-Marquardt, 2-step windows, best on validation",
    ]
    assert out["model"] == min(judged, key=judged.get)
    assert out["best_validation"] == min(judged.values())
    for key in ("unroll_schedule", "refine_unroll"):
        for bad, message in (
            ([1.5], "must list whole numbers"),
            ([2, 2], "must list whole numbers of steps >= 1, each once"),
            ([0], "must be a list of positive numbers"),
        ):
            changed = {**raw, "training": {**raw["training"], key: bad}}
            with pytest.raises(ConfigError, match=f"training.{key} {message}"):
                validate(changed, "job.toml")
    with pytest.raises(ConfigError, match="needs at least one window length"):
        validate({**raw, "training": {**raw["training"], "refine_unroll": []}}, "job.toml")
