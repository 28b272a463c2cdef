"""The femeso command: validated TOML jobs, one-line errors, the whole job end to end."""

import json
import os
import subprocess
import sys
import tomllib
from pathlib import Path

import h5py
import numpy as np
import pytest

from femeso.cli import main
from femeso.config import SECTIONS, ConfigError, JobConfig, default_toml, load_config, validate


def write(tmp_path, text):
    path = tmp_path / "job.toml"
    path.write_text(text)
    return path


@pytest.mark.parametrize(
    "text,message",
    [
        ("[data]\nfram_dt = 0.1\n", "unknown key data.fram_dt"),
        ("[dat]\nframe_dt = 0.1\n", r"unknown section \[dat\]"),
        ('[data]\nframe_dt = "fast"\n', "data.frame_dt must be a number, got str"),
        ("[data]\nframe_dt = -1.0\n", "data.frame_dt must be > 0"),
        ("[training]\niterations = 2.5\n", "training.iterations must be an integer"),
        ('[training]\nnorm = "L1"\n', "training.norm must be one of"),
        ("[baseline]\nenabled = 1\n", "baseline.enabled must be true or false"),
        ('[data]\nmobility = "fast"\n', "data.mobility must be 'degenerate', 'graded' or a number"),
        ("[data\n", "not valid TOML"),
    ],
)
def test_bad_configurations_are_rejected_with_one_line(tmp_path, capsys, text, message):
    path = write(tmp_path, text)
    with pytest.raises(ConfigError, match=message):
        load_config(path)
    assert main(["generate", str(path)]) == 2
    err = capsys.readouterr().err.strip()
    assert err.startswith("femeso generate: error:") and "\n" not in err
    assert str(path) in err


def test_the_documented_defaults_are_a_valid_job_file(tmp_path):
    text = default_toml()
    raw = tomllib.loads(text)
    assert validate(raw) == load_config(None)
    assert text.count("# ") >= sum(len(section) for section in raw.values())


def test_the_job_schema_is_typed_and_round_trips():
    """One schema: typed sections, their dict form read back unchanged, no second defaults."""
    from dataclasses import fields

    from femeso.training.trainer import TrainingConfig

    raw = {"data": {"frame_dt": 0.02, "mobility": 2}, "model": {"state_range": [0, 1]}}
    config = validate(raw, "job.toml")
    assert config.data.frame_dt == 0.02 and config.data.mobility == 2.0
    assert isinstance(config.data.mobility, float) and config.model.state_range == [0, 1]
    assert validate(config.as_dict()) == config and config != JobConfig()
    assert validate({}) == JobConfig()
    # a list default is a copy per configuration, not shared between them
    config.data.paths.append("x.h5")
    assert JobConfig().data.paths == [] and validate({}).data.paths == []
    # the library's TrainingConfig takes its defaults from the [training] section
    section = SECTIONS["training"]()
    shared = [
        f.name for f in fields(TrainingConfig) if hasattr(section, f.name) and f.name != "seed"
    ]
    assert len(shared) >= 14
    assert {n: getattr(TrainingConfig(), n) for n in shared} == {
        n: getattr(section, n) for n in shared
    }
    # training.seed = -1 means job.seed, the library's default
    assert section.seed == -1 and TrainingConfig().seed == JobConfig().training_seed == 0


def test_training_seed_changes_the_networks_and_minibatches_not_the_data():
    """A seed study: ``training.seed`` seeds the networks and minibatches; ``job.seed`` the data."""
    import firedrake as fd
    import torch

    from femeso.jobs.models import learned_model
    from femeso.jobs.training import _trainer_settings

    space = fd.FunctionSpace(fd.PeriodicIntervalMesh(16, 1.0), "CG", 1)
    default, same, other = (
        validate({"job": {"seed": 4}, "training": t}) for t in ({}, {"seed": 4}, {"seed": 5})
    )
    assert (default.training_seed, other.training_seed) == (4, 5)
    assert _trainer_settings(other)["seed"] == 5 and _trainer_settings(default)["seed"] == 4

    def weights(config):
        model = learned_model(config, space)
        return torch.nn.utils.parameters_to_vector(model.parameters()).detach()

    assert torch.equal(weights(default), weights(same))
    assert not torch.equal(weights(default), weights(other))
    with pytest.raises(ConfigError, match="training.seed"):
        validate({"training": {"seed": -2}})


def test_missing_config_file_is_a_user_error(tmp_path, capsys):
    assert main(["run", str(tmp_path / "nope.toml")]) == 2
    assert "no such configuration file" in capsys.readouterr().err


TINY = """
[job]
name = "tiny"
output = "{out}"
[data]
train = 2
validation = 1
test = 1
frames = 4
burn_in = 2
[training]
iterations = 4
batch_size = 2
validate_every = 2
checkpoint_every = 2
refine_iterations = 2
refine_batch_size = 4
[baseline]
iterations = 2
learning_rate = 0.001
[evaluation]
horizon_factor = 2
step_factors = [0.5, 1.0, 2.0]
"""


def test_a_whole_job_runs_end_to_end(tmp_path):
    """generate -> train -> report on the plate with holes, at toy sizes, through the CLI."""
    out = tmp_path / "job"
    path = write(tmp_path, TINY.format(out=out))
    assert main(["run", str(path), "--quiet"]) == 0
    results = json.loads((out / "report" / "results.json").read_text())
    onsager, classical = results["onsager"], results["classical"]
    # the class's guarantees along the learned model's rollout, even after 4 iterations
    assert onsager["energy_increases"] == 0
    assert onsager["max_mass_drift"] < 1e-12
    assert classical["error_max"] < 1e-2  # the true equation at the data step
    history = json.loads((out / "onsager" / "history.json").read_text())
    assert len(history["records"]) == 4
    refine = json.loads((out / "onsager" / "refine" / "history.json").read_text())["records"]
    assert len(refine) == 2 and refine[-1]["learning_rate"] == 1.0  # Levenberg-Marquardt phase
    for name in ("fields", "error", "energy", "density"):
        assert (out / "report" / f"{name}.png").stat().st_size > 10_000
    for name in ("data", "onsager", "baseline", "classical"):
        assert (out / "rollouts" / f"{name}_0.pvd").exists()
    for name in ("onsager", "baseline"):
        assert (out / name / "model.npz").exists() and (out / name / "checkpoint.pt").exists()
    # resuming a finished job trains nothing more and reproduces the report's training record
    assert main(["train", str(path), "--resume", "--quiet", "--model", "onsager"]) == 0
    assert len(json.loads((out / "onsager" / "history.json").read_text())["records"]) == 4
    assert (
        len(json.loads((out / "onsager" / "refine" / "history.json").read_text())["records"]) == 2
    )
    assert results["step_sizes"]["factors"] == [0.5, 1.0, 2.0]
    # an empty list of step factors reports without the step-size study
    no_study = write(tmp_path, TINY.format(out=out).replace("[0.5, 1.0, 2.0]", "[]"))
    assert main(["report", str(no_study), "--quiet"]) == 0
    assert json.loads((out / "report" / "results.json").read_text())["step_sizes"] is None


@pytest.mark.parametrize("program", ["femeso", "python -m femeso.cli"])
def test_the_command_keeps_its_arguments_from_petsc(tmp_path, program):
    """PETSc would report the command's own options as unused (or take them as its own).

    ``train`` starts Firedrake (and PETSc) before it finds that the job has no data yet.
    """
    command = (
        [str(Path(sys.executable).with_name("femeso"))]
        if program == "femeso"
        else [sys.executable, "-m", "femeso.cli"]
    )
    job = write(tmp_path, f'[job]\noutput = "{tmp_path / "out"}"\n')
    env = {k: v for k, v in os.environ.items() if k != "PETSC_OPTIONS"}
    result = subprocess.run(
        [*command, "train", str(job), "-q", "--model", "onsager"],
        capture_output=True,
        text=True,
        check=False,
        env=env,
    )
    assert result.returncode == 2, result.stderr
    assert result.stderr.strip().count("\n") == 0, result.stderr
    assert "unused database option" not in result.stdout + result.stderr


@pytest.mark.parametrize("command", [["config"], ["config", "--check", "JOB"], ["inspect", "DATA"]])
def test_config_and_inspect_answer_without_firedrake_or_torch(tmp_path, command):
    """``femeso config`` and ``femeso inspect`` import neither Firedrake nor PyTorch."""
    data = tmp_path / "grid.h5"
    with h5py.File(data, "w") as f:
        f["u_sol_all"] = np.zeros((2, 3, 8, 1), dtype=np.float32)
        f["t_coord"] = np.arange(3) * 0.1
        f["x_coord"] = np.arange(8) * 0.25
    args = [
        str(write(tmp_path, "")) if a == "JOB" else str(data) if a == "DATA" else a for a in command
    ]
    probe = (
        "import sys; from femeso.cli import main; code = main(sys.argv[1:]); "
        "heavy = sorted(m for m in ('firedrake', 'torch', 'petsc4py.PETSc') if m in sys.modules); "
        "print('HEAVY', heavy); sys.exit(code)"
    )
    result = subprocess.run(
        [sys.executable, "-c", probe, *args], capture_output=True, text=True, check=False
    )
    assert result.returncode == 0, result.stderr
    assert "HEAVY []" in result.stdout, result.stdout[-500:]


def test_every_public_name_loads_on_use():
    """``import femeso`` is cheap; each name of ``__all__`` still resolves, a typo does not."""
    import femeso
    import femeso.data

    for package in (femeso, femeso.data):
        assert set(package.__all__) <= set(dir(package))
        for name in package.__all__:
            assert getattr(package, name) is not None, name
        with pytest.raises(AttributeError, match="has no attribute 'OnsagerModle'"):
            package.OnsagerModle  # noqa: B018


def test_the_demo_job_file_is_the_demo(capsys, tmp_path):
    """`femeso config --demo` prints a job file that validates to `femeso demo`'s configuration."""
    from femeso.config import demo_config

    assert main(["config", "--demo"]) == 0
    printed = tomllib.loads(capsys.readouterr().out)
    printed["job"]["output"] = str(tmp_path / "demo")
    demo = demo_config(tmp_path / "demo")
    assert validate(printed, "demo.toml") == demo
    # trained for the long horizon: the range with its entropy, late data, the 10-step judge
    assert demo.model.state_range == [0, 1] and demo.model.range_entropy
    assert demo.data.burn_in == [5, 185] and demo.training.judge_unroll == 10
    assert demo != JobConfig()
