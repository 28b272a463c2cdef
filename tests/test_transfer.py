"""Geometry transfer (femeso.evaluation.transfer, `femeso transfer`): a trained job on other meshes.

One tiny job -- experiments/cahn_hilliard_fh_l_shape.toml (Flory--Huggins, degenerate mobility,
L-shaped domain) with 2 training trajectories of 6 frames and 15 + 3 iterations -- is trained
once, then transferred to the plate with holes (another geometry) and to the L-shape re-meshed
with half the mesh size. Measured properties: the results file holds finite errors for the three
models, the trained model beats the untrained one on the new meshes, the learned energy never
increases and the mass is conserved along the transferred rollouts, and bad requests are
one-line errors with exit status 2.
"""

import json
import shutil
import tomllib
from pathlib import Path

import numpy as np
import pytest

from femeso import jobs
from femeso.cli import main
from femeso.config import ConfigError, load_config, validate
from femeso.data.io import load_dataset
from femeso.evaluation import error_table, rollout_errors
from femeso.evaluation.transfer import mesh_label, summary_lines, target_config, transfer
from models import EXPERIMENTS, tiny_experiment

IRREGULAR = [
    "allen_cahn_l_shape",
    "cahn_hilliard_curved_channel",
    "cahn_hilliard_fh_plate_with_holes",
    "cahn_hilliard_fh_l_shape",
]
TARGETS = [("plate_with_holes", 0), ("l_shape", 1)]

#: Test rollouts as long as the training trajectories (on top of models.TINY).
SHORT_TESTS = {"evaluation": {"horizon_factor": 1}}


def write_toml(path: Path, raw: dict) -> Path:
    """Write a job table of scalars, lists and sub-tables as TOML.

    JSON literals are valid TOML here; a dict value becomes a ``[section.key]`` table.
    """
    lines: list[str] = []

    def table(name: str, keys: dict) -> None:
        lines.append(f"[{name}]")
        lines.extend(
            f"{key} = {json.dumps(value)}"
            for key, value in keys.items()
            if not isinstance(value, dict)
        )
        for key, value in keys.items():
            if isinstance(value, dict):
                table(f"{name}.{key}", value)

    for section, keys in raw.items():
        table(section, keys)
    path.write_text("\n".join(lines) + "\n")
    return path


def tiny_job(name: str, directory: Path, **sections) -> Path:
    """Write ``experiments/<name>.toml`` made tiny (and ``sections`` applied) to ``directory``."""
    raw = tiny_experiment(name, directory / "out", SHORT_TESTS, sections)
    return write_toml(directory / f"{name}.toml", raw)


@pytest.fixture(scope="module")
def trained(tmp_path_factory):
    """The tiny Flory--Huggins job on the L-shape, generated and trained through the CLI."""
    path = tiny_job("cahn_hilliard_fh_l_shape", tmp_path_factory.mktemp("transfer"))
    assert main(["generate", str(path), "--quiet"]) == 0
    assert main(["train", str(path), "--quiet"]) == 0
    return path


@pytest.fixture(scope="module")
def transferred(trained):
    """The job transferred: to the plate through the CLI, to the refined L-shape directly."""
    config = load_config(trained)
    out = {}
    assert main(["transfer", str(trained), "--mesh", "plate_with_holes", "--quiet"]) == 0
    path = config.output / "transfer" / "plate_with_holes" / "results.json"
    out["plate_with_holes"] = json.loads(path.read_text())
    out["l_shape-r1"] = transfer(config, "l_shape", refinement=1, progress=False)
    return config, out


@pytest.mark.parametrize("mesh,refinement", TARGETS)
def test_transfer_writes_the_error_table_of_every_model(transferred, mesh, refinement):
    config, results = transferred
    label = mesh_label(mesh, refinement)
    r = results[label]
    directory = config.output / "transfer" / label
    assert json.loads((directory / "results.json").read_text())["table"] == r["table"]
    assert set(r["table"]) == {"onsager", "classical", "baseline"}
    assert r["baseline_transferred"] and r["baseline_note"] is None
    for row in r["table"].values():
        assert row["steps"] == [1, 2, 3, 4, 5, 6] and row["n"] == [2] * 6
        assert np.all(np.isfinite(row["mean"])) and np.all(np.asarray(row["std"]) >= 0)
    # new seeds, the target mesh (the refined L-shape has about 4x the cells)
    assert r["seeds"] == [3000, 3001] and r["target"]["mesh"] == mesh
    assert r["source"]["cells"] == 730
    assert r["target"]["cells"] == (742 if mesh == "plate_with_holes" else 2802)
    # the true equation at the data step on the new mesh stays close to the new data
    assert max(r["table"]["classical"]["mean"]) < 2e-2
    text = "\n".join(summary_lines(r))
    assert f"to {label} (" in text and "\nonsager " in text and "\nbaseline " in text


@pytest.mark.parametrize("mesh,refinement", TARGETS)
def test_the_trained_model_beats_the_untrained_one_on_the_new_mesh(transferred, mesh, refinement):
    config, results = transferred
    label = mesh_label(mesh, refinement)
    data = load_dataset(config.output / "transfer" / label / "test.h5")
    assert data.space.mesh().num_cells() == results[label]["target"]["cells"]
    model = jobs.learned_model(config, data.space)  # the same network, untrained
    untrained = error_table(rollout_errors(jobs.stepper_factory(model), data, keep_states=False))[
        "mean"
    ]
    trained = results[label]["table"]["onsager"]["mean"]
    assert trained[0] < 0.9 * untrained[0], (trained, untrained)
    assert np.mean(trained) < np.mean(untrained), (trained, untrained)


@pytest.mark.parametrize("mesh,refinement", TARGETS)
def test_the_learned_energy_never_increases_along_the_transferred_rollouts(
    transferred, mesh, refinement
):
    _, results = transferred
    r = results[mesh_label(mesh, refinement)]
    onsager = r["onsager"]
    assert onsager["failures"] == 0 and onsager["n_steps"] == 6
    assert onsager["energy_increases"] == 0
    # conserved mobility: the mass is conserved on the new domain too, the baseline's is not
    assert onsager["max_mass_drift"] < 1e-12
    assert r["baseline"]["energy_increases"] is None


def test_without_a_trained_baseline_the_onsager_model_is_transferred_alone(
    trained, tmp_path, capsys
):
    raw = tomllib.loads(trained.read_text())
    raw["job"]["output"] = str(tmp_path / "out")
    path = write_toml(tmp_path / "job.toml", raw)
    (tmp_path / "out" / "onsager").mkdir(parents=True)
    shutil.copy(load_config(trained).output / "onsager" / "model.npz", tmp_path / "out" / "onsager")
    argv = ["transfer", str(path), "--mesh", "curved_channel", "--test", "1", "--quiet"]
    assert main(argv) == 0
    out = capsys.readouterr().out
    assert "baseline: not transferred: not trained (" in out
    assert "to curved_channel (1242 cells, 675 DoFs)" in out
    r = json.loads((tmp_path / "out" / "transfer" / "curved_channel" / "results.json").read_text())
    assert set(r["table"]) == {"onsager", "classical"} and r["n_test"] == 1
    assert not r["baseline_transferred"] and r["onsager"]["energy_increases"] == 0


def test_refinement_of_a_periodic_mesh_multiplies_its_cells():
    config = validate(tomllib.loads((EXPERIMENTS / "allen_cahn_1d.toml").read_text()), "ac")
    target = target_config(config, "periodic_interval", refinement=2)
    assert target.mesh.cells == 4 * config.mesh.cells
    assert target.data == config.data and target.model == config.model
    assert mesh_label("periodic_interval", 2) == "periodic_interval-r2"
    assert mesh_label("meshes/l_shape.msh") == "l_shape"


def error_line(capsys, argv: list[str]) -> str:
    """Run the command, expect exit status 2; return its one-line error."""
    assert main(argv) == 2
    err = capsys.readouterr().err.strip()
    assert err.startswith("femeso transfer: error:") and "\n" not in err, err
    return err


def fake_trained(name: str, tmp_path: Path, **sections) -> Path:
    """A job file whose output has an (empty) Onsager model file: the training looks done."""
    path = tiny_job(name, tmp_path, **sections)
    model = load_config(path).output / "onsager" / "model.npz"
    model.parent.mkdir(parents=True)
    model.touch()
    return path


def test_transfer_before_training_is_a_one_line_error(tmp_path, capsys):
    path = tiny_job("allen_cahn_l_shape", tmp_path)
    err = error_line(capsys, ["transfer", str(path), "--mesh", "plate_with_holes"])
    assert "model.npz is missing: train the job before transferring it" in err


@pytest.mark.parametrize(
    "name,argv,message",
    [
        (
            "cahn_hilliard_fh_l_shape",
            ["--mesh", "moebius_strip"],
            "'moebius_strip' is neither a .msh/.geo file nor a reference geometry",
        ),
        ("cahn_hilliard_fh_l_shape", ["--mesh", "missing.msh"], "missing.msh: mesh file not found"),
        (
            "allen_cahn_1d",
            ["--mesh", "l_shape"],
            "cannot transfer job 'allen_cahn_1d' to l_shape: data.initial = 'paper_sine' needs "
            "a periodic mesh",
        ),
        (
            "kdv",
            ["--mesh", "plate_with_holes"],
            "cannot transfer job 'kdv' to plate_with_holes: data.equation = 'kdv' needs "
            "mesh.name = 'periodic_interval'",
        ),
        (
            "allen_cahn_1d",
            ["--mesh", "periodic_square"],
            "the job's mesh is 1-D, periodic_square is 2-D (a transfer keeps the spatial "
            "dimension)",
        ),
        ("cahn_hilliard_fh_l_shape", ["--mesh", "l_shape", "--test", "0"], "an integer >= 1"),
        ("cahn_hilliard_fh_l_shape", ["--mesh", "l_shape", "--refinement", "-1"], ">= 0, got -1"),
    ],
)
def test_bad_transfers_are_one_line_errors(tmp_path, capsys, name, argv, message):
    # small periodic meshes: the dimension check builds both
    path = fake_trained(
        name, tmp_path, mesh={"cells": 8} if name in ("allen_cahn_1d", "kdv") else {}
    )
    err = error_line(capsys, ["transfer", str(path), *argv])
    assert message in err, err
    assert not (load_config(path).output / "transfer").exists()


def test_refining_a_mesh_file_is_a_one_line_error(tmp_path, capsys):
    msh = Path(__file__).resolve().parents[1] / "meshes" / "plate_with_holes.msh"
    path = fake_trained("cahn_hilliard_fh_l_shape", tmp_path)
    err = error_line(capsys, ["transfer", str(path), "--mesh", str(msh), "--refinement", "1"])
    assert "refinement needs the .geo geometry" in err


@pytest.mark.parametrize("name", IRREGULAR)
def test_the_irregular_domain_experiments_are_valid_jobs(name):
    raw = tomllib.loads((EXPERIMENTS / f"{name}.toml").read_text())
    config = validate(raw, name)
    m, d = config.mesh, config.data
    assert m.name in ("l_shape", "plate_with_holes", "curved_channel")
    assert d.equation in ("allen_cahn", "cahn_hilliard") and d.initial == "random"
    # the error table reaches step 100 of the test trajectories
    assert d.frames * config.evaluation.horizon_factor >= 100
    # the gauge puts the learned factors on the true ones' scale: F_learned = F, m_learned = m
    # (Allen--Cahn: V = int F / eps^2 + |grad u|^2 / 2 and m = eps^2, so kappa_ref = eps^2)
    if d.equation == "cahn_hilliard":
        assert config.model.kappa_ref == d.kappa
    else:
        assert config.model.kappa_ref == d.mobility == pytest.approx(d.epsilon**2)
    for other in ("l_shape", "plate_with_holes", "curved_channel"):
        assert target_config(config, other, refinement=1).mesh.name == other


def test_periodic_only_jobs_cannot_target_an_irregular_mesh():
    config = validate(tomllib.loads((EXPERIMENTS / "fput.toml").read_text()), "fput")
    with pytest.raises(ConfigError, match="cannot transfer job 'fput' to curved_channel-r1: "):
        target_config(config, "curved_channel", refinement=1)
