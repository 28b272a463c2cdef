"""Hostile but honest input: every file femeso reads is checked at the boundary.

A damaged, tampered or foreign model file, training checkpoint or mesh is refused with one line
that names the file and what is wrong -- before anything large is allocated and without changing
any file or object that exists. Writes are atomic: a failed write (NaN parameters, a full disk, a
file-size limit) leaves no partial file under the final name and no temporary behind.
"""

import json
import math
import os
import pickle
import resource
import shutil
import subprocess
import sys
import zipfile
from pathlib import Path

import firedrake as fd
import numpy as np
import pytest
import torch

import femeso
import femeso.model.files as model_files
import femeso.model.onsager as onsager_module
from femeso.data.io import save_dataset
from femeso.data.trajectories import Dataset, TrajectoryData
from femeso.meshes import load_mesh, mesh_directory
from femeso.peers.blackbox import BlackBoxModel
from femeso.training.trainer import Trainer, TrainingConfig
from models import mesh

FEMESO = Path(sys.executable).with_name("femeso")


# ---------------------------------------------------------------------- helpers
def snapshot(path: Path) -> tuple[bytes, int]:
    """The bytes and modification time of a file, to show that a refusal changed nothing."""
    return path.read_bytes(), path.stat().st_mtime_ns


def assert_one_line(excinfo: pytest.ExceptionInfo, path: Path, *words: str) -> str:
    message = str(excinfo.value)
    assert "\n" not in message, message
    assert str(path) in message, message
    for word in words:
        assert word in message, message
    return message


def leftovers(folder: Path) -> list[str]:
    """Temporary files left in a folder."""
    return sorted(p.name for p in folder.iterdir() if p.name.startswith("."))


def model(seed: int = 0, width: int = 8) -> femeso.OnsagerModel:
    """A small model; ``seed`` draws its parameters (not part of the architecture)."""
    V = fd.FunctionSpace(mesh("periodic_interval"), "CG", 1)
    density = femeso.CoerciveNeuralDensity(width=width, seed=0)
    mobility = femeso.ConservedMobility(femeso.NeuralField(1, 1, width=4, seed=1))
    m = femeso.OnsagerModel(V, femeso.Energy(density, kappa=0.5), mobility=mobility)
    g = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for p in m.parameters():
            p.copy_(torch.randn(p.shape, generator=g, dtype=p.dtype))
    return m


def state_of(module: torch.nn.Module) -> dict[str, torch.Tensor]:
    return {k: v.detach().clone() for k, v in module.state_dict().items()}


def same_state(a: dict[str, torch.Tensor], b: dict[str, torch.Tensor]) -> bool:
    return a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a)


def rewrite(path: Path, change) -> None:
    """Rewrite a model file with ``change(arrays)`` applied to its arrays (a tampered file)."""
    with np.load(path, allow_pickle=False) as data:
        arrays = {k: data[k] for k in data.files}
    change(arrays)
    with open(path, "wb") as f:
        np.savez(f, **arrays)


def set_config(change):
    def apply(arrays):
        config = json.loads(str(arrays["config"]))
        change(config)
        arrays["config"] = np.array(json.dumps(config))

    return apply


WEIGHT = "param:energy.density.network.layers.0.weight"


def truncate(path):
    data = path.read_bytes()
    path.write_bytes(data[: len(data) // 2])


def nan_weight(arrays):
    arrays[WEIGHT] = arrays[WEIGHT].copy()
    arrays[WEIGHT][0, 0] = np.nan


def inf_weight(arrays):
    arrays[WEIGHT] = np.full_like(arrays[WEIGHT], np.inf)


def lying_header(path):
    """A weight whose header claims 10**9 rows while the file holds 8 values."""
    import io

    header = io.BytesIO()
    np.lib.format.write_array_header_1_0(
        header, {"descr": "<f8", "fortran_order": False, "shape": (10**9, 1)}
    )
    with np.load(path, allow_pickle=False) as data:
        arrays = {k: data[k] for k in data.files}
    with zipfile.ZipFile(path, "w") as archive:
        for key, value in arrays.items():
            with archive.open(f"{key}.npy", "w") as f:
                if key == WEIGHT:
                    f.write(header.getvalue() + value.tobytes())
                else:
                    np.lib.format.write_array(f, value, allow_pickle=False)


def rewrite_with_pickle(path):
    """A weight stored as a pickled object array (``np.load(allow_pickle=True)`` would run it)."""
    with np.load(path, allow_pickle=False) as data:
        arrays = {k: data[k] for k in data.files}
    arrays[WEIGHT] = np.array([{"x": 1}], dtype=object)
    with open(path, "wb") as f:
        np.savez(f, **arrays)


# name -> (damage(path), words the message must hold)
DAMAGED_MODEL_FILES = {
    "truncated": (truncate, ["truncated or corrupt"]),
    "empty": (lambda p: p.write_bytes(b""), ["truncated or corrupt"]),
    "not a zip": (lambda p: p.write_bytes(b"hello, not a model\n" * 20), ["truncated or corrupt"]),
    "pickle": (
        lambda p: p.write_bytes(pickle.dumps({"config": "x"})),
        ["truncated or corrupt"],
    ),
    "bad JSON": (
        lambda p: rewrite(p, lambda a: a.update(config=np.array("{width: 8"))),
        ["not valid JSON"],
    ),
    "JSON NaN": (
        lambda p: rewrite(p, set_config(lambda c: c.update(kappa_ref=math.nan))),
        ["not valid JSON", "NaN"],
    ),
    "JSON list": (
        lambda p: rewrite(p, lambda a: a.update(config=np.array("[1, 2]"))),
        ["not a JSON object"],
    ),
    "no architecture": (lambda p: rewrite(p, lambda a: a.pop("config")), ["no architecture"]),
    "missing weight": (lambda p: rewrite(p, lambda a: a.pop(WEIGHT)), ["missing", "layers.0"]),
    "extra weight": (
        lambda p: rewrite(p, lambda a: a.update({"param:extra": np.zeros(3)})),
        ["does not have", "extra"],
    ),
    "mis-shaped weight": (
        lambda p: rewrite(p, lambda a: a.update({WEIGHT: a[WEIGHT].reshape(1, -1)})),
        ["shape", "layers.0.weight"],
    ),
    "float32 weight": (
        lambda p: rewrite(p, lambda a: a.update({WEIGHT: a[WEIGHT].astype(np.float32)})),
        ["float32"],
    ),
    "object weight": (rewrite_with_pickle, ["not numbers"]),
    "lying header": (lying_header, ["size does not match its shape"]),
    "NaN weight": (lambda p: rewrite(p, nan_weight), ["NaN or infinite", "layers.0.weight"]),
    "Inf weight": (lambda p: rewrite(p, inf_weight), ["NaN or infinite", "layers.0.weight"]),
}


# ---------------------------------------------------------------------- model files
def test_a_valid_model_file_round_trips_exactly(tmp_path):
    original = model(seed=3)
    path = original.save(tmp_path / "model")
    assert path == tmp_path / "model.npz" and leftovers(tmp_path) == []
    again = femeso.load_model(path, original.space)
    assert same_state(state_of(again), state_of(original))
    assert again.config() == original.config()
    other = model(seed=4)
    other.load_parameters(path)
    assert same_state(state_of(other), state_of(original))
    config, state = model_files.read_model_file(path, expected=original.state_dict())
    assert config == json.loads(json.dumps(original.config()))
    assert same_state(state, state_of(original))


def test_a_valid_baseline_round_trips_exactly(tmp_path):
    V = fd.FunctionSpace(mesh("periodic_interval"), "CG", 1)
    original = BlackBoxModel(V, width=6, seed=2)
    path = original.save(tmp_path / "baseline.npz")
    other = BlackBoxModel(V, width=6, seed=2)
    with torch.no_grad():
        other.b.fill_(7.0)
    other.load_parameters(path)
    assert same_state(state_of(other), state_of(original))


@pytest.mark.parametrize("case", DAMAGED_MODEL_FILES)
def test_a_damaged_model_file_is_refused_in_one_line(tmp_path, case):
    damage, words = DAMAGED_MODEL_FILES[case]
    original = model()
    path = original.save(tmp_path / "model.npz")
    damage(path)
    before = snapshot(path)
    target = model(seed=5)
    parameters = state_of(target)
    with pytest.raises(ValueError) as excinfo:
        target.load_parameters(path)
    assert_one_line(excinfo, path, *words)
    assert same_state(state_of(target), parameters)  # the model did not change
    with pytest.raises(ValueError) as excinfo:
        femeso.load_model(path, original.space)
    assert_one_line(excinfo, path)
    assert snapshot(path) == before


def test_a_model_file_of_another_architecture_names_what_differs(tmp_path):
    path = model(width=8).save(tmp_path / "model.npz")
    before = snapshot(path)
    with pytest.raises(ValueError) as excinfo:
        model(width=16).load_parameters(path)
    assert_one_line(
        excinfo, path, "architecture differs", "energy.density.width is 8 in the file, 16"
    )
    V = fd.FunctionSpace(mesh("periodic_interval"), "CG", 1)
    with pytest.raises(ValueError) as excinfo:
        BlackBoxModel(V, width=9).load_parameters(path)
    assert_one_line(excinfo, path, "architecture differs")
    assert snapshot(path) == before


@pytest.mark.parametrize(
    "change,words",
    [
        (lambda c: c["energy"]["density"].update(width=10**9), ["implausible", "width"]),
        (lambda c: c["energy"]["density"].update(depth=10**6), ["implausible", "depth"]),
        (lambda c: c["energy"]["density"].update(width=4096), ["needs at least", "holds"]),
        (lambda c: c["energy"]["density"].update(polynomial_degree=10**9), ["implausible"]),
        (lambda c: c.update(quadrature_degree=10**6), ["implausible", "quadrature_degree"]),
        (lambda c: c["energy"]["density"].update(width="8"), ["implausible", "width"]),
    ],
)
def test_an_absurd_architecture_is_refused_before_anything_is_built(
    tmp_path, monkeypatch, change, words
):
    original = model()
    path = original.save(tmp_path / "model.npz")
    rewrite(path, set_config(change))
    before = snapshot(path)
    built = []

    def forbidden(*args, **kwargs):
        built.append(kwargs)
        raise AssertionError("a network was built from an unchecked architecture")

    # any construction would fail loudly: the refusal must come before the first one
    monkeypatch.setattr(onsager_module, "NeuralField", forbidden)
    monkeypatch.setattr(onsager_module, "CoerciveNeuralDensity", forbidden)
    with pytest.raises(ValueError) as excinfo:
        femeso.load_model(path, original.space)
    assert_one_line(excinfo, path, *words)
    assert built == []
    monkeypatch.undo()
    # into an existing model: the architecture comparison refuses it first
    with pytest.raises(ValueError) as excinfo:
        model().load_parameters(path)
    assert_one_line(excinfo, path, "architecture differs")
    assert snapshot(path) == before


def test_an_absurd_width_fails_fast_under_a_memory_limit(tmp_path):
    """The 8e15-byte case, in a process that could not allocate even 1 GiB more."""
    path = model().save(tmp_path / "model.npz")
    rewrite(path, set_config(lambda c: c["energy"]["density"].update(width=10**9)))
    script = f"""
import resource, sys
import firedrake as fd
import femeso
V = fd.FunctionSpace(fd.PeriodicIntervalMesh(8, 1.0), "CG", 1)
soft, hard = resource.getrlimit(resource.RLIMIT_AS)
used = int(open("/proc/self/statm").read().split()[0]) * resource.getpagesize()
resource.setrlimit(resource.RLIMIT_AS, (used + 2**30, hard))
try:
    femeso.load_model({str(path)!r}, V)
except ValueError as exc:
    print("refused:", exc)
"""
    result = subprocess.run(
        [sys.executable, "-c", script], capture_output=True, text=True, timeout=120, check=False
    )
    assert result.returncode == 0, result.stderr[-2000:]
    assert f"refused: {path}: implausible architecture" in result.stdout


def test_a_tampered_architecture_that_cannot_be_built_is_one_line(tmp_path):
    original = model()
    for change, words in [
        (lambda c: c.pop("energy"), ["no energy"]),
        (lambda c: c.update(format_version=99), ["unsupported model format 99"]),
        (lambda c: c.pop("quadrature_degree"), ["no entry 'quadrature_degree'"]),
        (lambda c: c["energy"]["density"].update(type="Evil"), ["cannot rebuild"]),
        (lambda c: c["energy"]["density"].update(surprise=1), ["invalid architecture"]),
        (lambda c: c.update(mobilities=7), ["invalid architecture"]),
    ]:
        path = original.save(tmp_path / "model.npz")
        rewrite(path, set_config(change))
        with pytest.raises(ValueError) as excinfo:
            femeso.load_model(path, original.space)
        assert_one_line(excinfo, path, *words)


def test_a_missing_model_file_or_a_folder_is_named(tmp_path):
    space = model().space
    with pytest.raises(FileNotFoundError) as excinfo:
        femeso.load_model(tmp_path / "none.npz", space)
    assert_one_line(excinfo, tmp_path / "none.npz", "not found")
    folder = tmp_path / "folder.npz"
    folder.mkdir()
    with pytest.raises(ValueError) as excinfo:
        model().load_parameters(folder)
    assert_one_line(excinfo, folder, "not a regular file")


def test_non_finite_parameters_are_refused_when_saving(tmp_path):
    good = model()
    path = good.save(tmp_path / "model.npz")
    before = snapshot(path)
    bad = model()
    with torch.no_grad():
        bad.energy.density.raw_a.fill_(math.nan)
    with pytest.raises(ValueError) as excinfo:
        bad.save(path)
    assert_one_line(excinfo, path, "raw_a", "NaN or infinite")
    assert snapshot(path) == before
    with pytest.raises(ValueError) as excinfo:
        bad.save(tmp_path / "new.npz")
    assert not (tmp_path / "new.npz").exists()
    assert leftovers(tmp_path) == []


@pytest.fixture
def file_size_limit():
    """Limit the size of files this process writes (writes past it fail with EFBIG)."""
    soft, hard = resource.getrlimit(resource.RLIMIT_FSIZE)

    def limit(nbytes: int) -> None:
        resource.setrlimit(resource.RLIMIT_FSIZE, (nbytes, hard))

    yield limit
    resource.setrlimit(resource.RLIMIT_FSIZE, (soft, hard))


def test_a_full_disk_leaves_the_model_file_as_it_was(tmp_path, file_size_limit):
    path = model(seed=1).save(tmp_path / "model.npz")
    before = snapshot(path)
    bigger = model(seed=2, width=64)
    file_size_limit(path.stat().st_size + 100)  # the bigger model does not fit
    with pytest.raises(OSError) as excinfo:
        bigger.save(path)
    file_size_limit(resource.RLIM_INFINITY)
    assert_one_line(excinfo, path, "cannot write the model file", "File too large")
    assert snapshot(path) == before
    assert leftovers(tmp_path) == []


def test_a_dataset_that_will_not_fit_is_refused_before_writing(tmp_path, file_size_limit):
    """HDF5 crashed at exit after a failed write: a dataset beyond the limit is never started."""
    space = fd.FunctionSpace(mesh("plate"), "CG", 1)
    data = Dataset(
        space,
        [
            TrajectoryData(
                space,
                np.arange(4) * 0.1,
                [femeso.random_smooth_field(space, seed=s) for s in range(4)],
            )
        ],
    )
    path = save_dataset(tmp_path / "train.h5", data)
    before = snapshot(path)
    file_size_limit(path.stat().st_size // 2)
    with pytest.raises(OSError) as excinfo:
        save_dataset(path, data, overwrite=True)
    file_size_limit(resource.RLIM_INFINITY)
    assert_one_line(excinfo, path, "cannot write the dataset", "file-size limit", "nothing written")
    assert snapshot(path) == before
    assert sorted(p.name for p in tmp_path.iterdir()) == ["train.h5"]


def test_an_interrupted_write_leaves_nothing_that_looks_like_a_model(tmp_path, monkeypatch):
    path = model().save(tmp_path / "model.npz")
    before = snapshot(path)

    def killed(f, **arrays):
        f.write(b"PK\x03\x04 half a model")
        raise KeyboardInterrupt

    monkeypatch.setattr(model_files.np, "savez", killed)
    with pytest.raises(KeyboardInterrupt):
        model(seed=7).save(path)
    assert snapshot(path) == before
    assert leftovers(tmp_path) == []
    assert sorted(p.name for p in tmp_path.glob("*.npz")) == ["model.npz"]


# ---------------------------------------------------------------------- training checkpoints
def dataset(space) -> Dataset:
    states = [femeso.random_smooth_field(space, seed=s) for s in range(3)]
    return Dataset(space, [TrajectoryData(space, np.array([0.0, 0.1, 0.2]), states)])


def trainer(directory, *, width=8, **settings) -> Trainer:
    m = model(width=width)
    config = TrainingConfig(iterations=2, batch_size=1, validate_every=0, **settings)
    return Trainer(m, dataset(m.space), config=config, directory=directory, progress=False)


def test_a_checkpoint_round_trips(tmp_path):
    writer = trainer(tmp_path)
    with torch.no_grad():
        writer.model.energy.density.raw_a.fill_(0.25)
    path = writer.save_checkpoint()
    assert leftovers(tmp_path) == []
    reader = trainer(tmp_path)
    reader.load_checkpoint(path)
    assert same_state(state_of(reader.model), state_of(writer.model))


class Payload:
    """An object whose unpickling would run a command."""

    def __init__(self, marker: Path) -> None:
        self.marker = marker

    def __reduce__(self):
        return (os.system, (f"touch {self.marker}",))


def pickled_checkpoint(path: Path) -> None:
    torch.save({"format": "femeso-checkpoint-1", "x": Payload(path.with_name("pwned"))}, path)


DAMAGED_CHECKPOINTS = {
    "truncated": (truncate, ["not a readable training checkpoint", "truncated or corrupt"]),
    "not a checkpoint": (
        lambda p: p.write_bytes(b"\x00garbage" * 50),
        ["not a readable training checkpoint"],
    ),
    "empty": (lambda p: p.write_bytes(b""), ["not a readable training checkpoint"]),
    "pickled code": (pickled_checkpoint, ["refused", "pickled Python objects", "system"]),
    "foreign": (lambda p: torch.save({"weights": torch.zeros(3)}, p), ["not a femeso"]),
    "corrupt entry": (
        lambda p: torch.save({"format": "femeso-checkpoint-1", "iteration": "3"}, p),
        ["corrupt checkpoint", "'iteration'"],
    ),
}


@pytest.mark.parametrize("case", DAMAGED_CHECKPOINTS)
def test_a_damaged_checkpoint_is_refused_in_one_line(tmp_path, case):
    damage, words = DAMAGED_CHECKPOINTS[case]
    path = trainer(tmp_path).save_checkpoint()
    damage(path)
    before = snapshot(path)
    reader = trainer(tmp_path)
    parameters = state_of(reader.model)
    with pytest.raises(ValueError) as excinfo:
        reader.run(resume=True)
    assert_one_line(excinfo, path, *words)
    assert same_state(state_of(reader.model), parameters) and reader.iteration == 0
    assert snapshot(path) == before
    assert not (tmp_path / "pwned").exists()


def test_a_checkpoint_of_another_width_is_refused_before_loading(tmp_path):
    path = trainer(tmp_path, width=8).save_checkpoint()
    before = snapshot(path)
    reader = trainer(tmp_path, width=16)
    parameters = state_of(reader.model)
    with pytest.raises(ValueError) as excinfo:
        reader.load_checkpoint(path)
    assert_one_line(excinfo, path, "differs from this one", "(8, 1)", "(16, 1)")
    assert same_state(state_of(reader.model), parameters)
    assert snapshot(path) == before


def test_a_checkpoint_of_other_settings_is_refused_in_one_line(tmp_path):
    path = trainer(tmp_path).save_checkpoint()
    with pytest.raises(ValueError) as excinfo:
        trainer(tmp_path, learning_rate=0.5).load_checkpoint(path)
    assert_one_line(excinfo, path, "other settings", "learning_rate")


def test_a_missing_checkpoint_is_named(tmp_path):
    with pytest.raises(FileNotFoundError) as excinfo:
        trainer(tmp_path).load_checkpoint(tmp_path / "nothing.pt")
    assert_one_line(excinfo, tmp_path / "nothing.pt", "not found")


def test_a_full_disk_leaves_the_checkpoint_as_it_was(tmp_path, file_size_limit):
    writer = trainer(tmp_path)
    path = writer.save_checkpoint()
    before = snapshot(path)
    big = trainer(tmp_path, width=64)
    file_size_limit(path.stat().st_size)
    with pytest.raises(OSError) as excinfo:
        big.save_checkpoint()
    file_size_limit(resource.RLIM_INFINITY)
    assert_one_line(excinfo, path, "cannot write the training checkpoint")
    assert snapshot(path) == before
    assert leftovers(tmp_path) == []


# ---------------------------------------------------------------------- meshes
@pytest.fixture
def plate(tmp_path) -> Path:
    path = tmp_path / "plate.msh"
    shutil.copy(mesh_directory() / "plate_with_holes.msh", path)
    return path


def scramble_nodes(path: Path) -> None:
    """Garbage in the middle of the node section, the file's start and end intact."""
    text = path.read_text()
    start = text.index("$Nodes") + 200
    path.write_text(text[:start] + "x y z garbage 1e999 ;;\n" * 20 + text[start + 400 :])


DAMAGED_MESHES = {
    "truncated": (truncate, ["truncated mesh file"]),
    "empty": (lambda p: p.write_bytes(b""), ["not a gmsh mesh file"]),
    "not a mesh": (lambda p: p.write_text("hello\n"), ["not a gmsh mesh file"]),
    "bad header": (
        lambda p: p.write_text("$MeshFormat\nfour 0 8\n$EndMeshFormat\n"),
        ["corrupt gmsh header"],
    ),
    "corrupt nodes": (scramble_nodes, ["corrupt mesh file"]),
    "no elements": (
        lambda p: p.write_text("$MeshFormat\n4.1 0 8\n$EndMeshFormat\n"),
        ["corrupt mesh file"],
    ),
}


@pytest.mark.parametrize("case", DAMAGED_MESHES)
def test_a_damaged_mesh_is_refused_in_one_line(plate, case):
    damage, words = DAMAGED_MESHES[case]
    damage(plate)
    before = snapshot(plate)
    with pytest.raises(ValueError) as excinfo:
        load_mesh(plate)
    assert_one_line(excinfo, plate, *words)
    assert snapshot(plate) == before


def test_a_valid_mesh_file_loads(plate):
    msh = load_mesh(plate)
    assert msh.num_cells() > 0


def test_a_missing_mesh_file_is_named(tmp_path):
    with pytest.raises(FileNotFoundError) as excinfo:
        load_mesh(tmp_path / "absent.msh")
    assert_one_line(excinfo, tmp_path / "absent.msh", "not found")


@pytest.mark.parametrize(
    "text", ["Point(1) = {0, 0, 0;\nthis is not gmsh\n", "", "Point(1) = {0, 0, 0};\n"]
)
def test_a_geometry_gmsh_cannot_mesh_is_one_line(tmp_path, monkeypatch, text):
    monkeypatch.setenv("FEMESO_CACHE_DIR", str(tmp_path / "cache"))
    geo = tmp_path / "broken.geo"
    geo.write_text(text)
    with pytest.raises(ValueError) as excinfo:
        load_mesh(geo)
    assert_one_line(excinfo, geo, "gmsh cannot mesh")
    assert list((tmp_path / "cache" / "meshes").glob("*")) == []


def test_a_petsc_failure_to_read_a_mesh_is_one_line(plate, monkeypatch):
    from firedrake.petsc import PETSc

    def refuse(*args, **kwargs):
        raise PETSc.Error(62)

    monkeypatch.setattr(femeso.meshes.fd, "Mesh", refuse)
    with pytest.raises(ValueError) as excinfo:
        load_mesh(plate)
    assert_one_line(excinfo, plate, "PETSc cannot read the mesh")


# ---------------------------------------------------------------------- the command
def test_the_command_refuses_a_corrupt_mesh_in_one_line_without_warnings(tmp_path, plate):
    truncate(plate)
    before = snapshot(plate)
    job = tmp_path / "job.toml"
    job.write_text(f'[job]\noutput = "{tmp_path / "out"}"\n[mesh]\nname = "{plate}"\n')
    result = subprocess.run(
        [str(FEMESO), "generate", str(job), "--quiet"],
        capture_output=True,
        text=True,
        timeout=300,
        check=False,
        env={**os.environ, "PYTHONWARNINGS": "default"},
    )
    assert result.returncode == 2, result.stderr
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1, result.stderr
    assert str(plate) in lines[0] and "truncated mesh file" in lines[0]
    assert "already been initialised" not in result.stderr
    assert snapshot(plate) == before


def test_model_file_members_are_plain_arrays(tmp_path):
    """The format itself: a zip of NumPy arrays, nothing pickled, no temporary beside it."""
    path = model().save(tmp_path / "model.npz")
    with zipfile.ZipFile(path) as archive:
        names = archive.namelist()
    assert "config.npy" in names and all(n.endswith(".npy") for n in names)
    assert leftovers(tmp_path) == []


def test_the_schedule_step_of_a_skipped_iteration_is_silent_and_nothing_else_is():
    """A skipped first iteration steps the schedule before the optimiser, on purpose."""
    import warnings

    from femeso.training.trainer import step_schedule

    def scheduler() -> torch.optim.lr_scheduler.LRScheduler:
        opt = torch.optim.SGD([torch.zeros(1, requires_grad=True)], lr=1.0)
        return torch.optim.lr_scheduler.ExponentialLR(opt, 0.9)

    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        step_schedule(scheduler())
        assert caught == []
        scheduler().step()  # a user's own loop still gets PyTorch's warning
        assert any("lr_scheduler.step()" in str(w.message) for w in caught)


def test_importing_femeso_changes_no_environment_variable():
    """Run-time settings belong to the command, the Makefile and the test-suite, not the import."""
    code = (
        "import os, firedrake, torch; e = dict(os.environ); import femeso; "
        "assert e == dict(os.environ), set(os.environ.items()) ^ set(e.items())"
    )
    env = {k: v for k, v in os.environ.items() if k not in ("OMP_NUM_THREADS",)}
    result = subprocess.run(
        [sys.executable, "-c", code], env=env, capture_output=True, text=True, timeout=300
    )
    assert result.returncode == 0, result.stderr[-2000:]


FILE_SIZE_JOB = """
[job]
name = "fsize"
output = "{out}"
[mesh]
name = "periodic_interval"
cells = 32
[data]
equation = "allen_cahn"
train = 2
validation = 1
test = 1
frames = 3
"""

UNDER_A_FILE_SIZE_LIMIT = """
import resource, sys
from femeso._runtime import start_firedrake
from femeso.cli import main
start_firedrake()  # MPI and PETSc start-up write files of their own first
limit = int(sys.argv[1])
resource.setrlimit(resource.RLIMIT_FSIZE, (limit, resource.getrlimit(resource.RLIMIT_FSIZE)[1]))
sys.exit(main({args!r}))
"""


def test_generate_under_a_file_size_limit_is_one_line_and_leaves_no_file(tmp_path):
    """Before: 75 lines of HDF5 errors and a segmentation fault (issue 16).

    The job runs once without a limit first: with the limit, a kernel not yet in Firedrake's
    cache could not be written to the cache's database either (a traceback from sqlite, outside
    femeso; noted on the issue).
    """
    env = {k: v for k, v in os.environ.items() if k != "PETSC_OPTIONS"}
    warm = tmp_path / "warm.toml"
    warm.write_text(FILE_SIZE_JOB.format(out=tmp_path / "warm"))
    femeso = Path(sys.executable).with_name("femeso")
    first = subprocess.run(
        [str(femeso), "generate", str(warm), "-q"], capture_output=True, text=True, env=env
    )
    assert first.returncode == 0, first.stderr[-2000:]
    job = tmp_path / "job.toml"
    job.write_text(FILE_SIZE_JOB.format(out=tmp_path / "out"))
    script = tmp_path / "limited.py"
    script.write_text(UNDER_A_FILE_SIZE_LIMIT.format(args=["generate", str(job), "-q"]))
    done = subprocess.run(
        [sys.executable, str(script), "20000"],
        capture_output=True,
        text=True,
        env=env,
        timeout=600,
    )
    assert done.returncode == 2, done.stderr[-2000:]
    errors = [line for line in done.stderr.splitlines() if "error" in line.lower()]
    assert len(errors) == 1, done.stderr[-2000:]
    assert "train.h5: cannot write the dataset" in errors[0] and "file-size limit" in errors[0]
    data = tmp_path / "out" / "data"
    assert not data.exists() or sorted(p.name for p in data.iterdir()) == []
