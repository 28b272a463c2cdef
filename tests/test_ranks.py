"""Data written on one number of ranks train on another, with the serial losses.

Each stage is the ``femeso`` command in its own process, as a user runs it: ``generate`` on 1 or 2
ranks, ``train`` on 1 or 2 ranks from a copy of those data. The data reach the training mesh by
DoF position (never by storage order), so every combination gives the losses of the all-serial
run to solver tolerance.

``mpiexec -n 2 femeso generate`` used to hang at exit (PETSc's inner ``COMM_WORLD`` freed on one
rank only; see ``femeso._runtime.hold_petsc_world_communicator`` and ``scripts/rank_exit.py``);
the subprocesses' timeout turns a hang back into a failure here.
"""

import json
import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from femeso._runtime import mpiexec_environment

JOB = """
[job]
name = "ranks"
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
refine_iterations = 0
[baseline]
enabled = false
"""

REL = 1e-7  # solver tolerance: Newton and the adjoint solves stop at 1e-10 relative residuals


def femeso(*args: str, ranks: int = 1) -> subprocess.CompletedProcess:
    exe = str(Path(sys.executable).with_name("femeso"))
    command = [exe, *args] if ranks == 1 else ["mpiexec", "-n", str(ranks), exe, *args]
    done = subprocess.run(
        command, capture_output=True, text=True, env=mpiexec_environment(), timeout=600
    )
    assert done.returncode == 0, done.stderr[-2000:]
    return done


def job(root: Path, name: str, extra: str = "") -> Path:
    path = root / f"{name}.toml"
    path.write_text(JOB.format(out=root / name) + extra)
    return path


def losses(root: Path, name: str) -> list[float]:
    history = json.loads((root / name / "onsager" / "history.json").read_text())
    return [r["loss"] for r in history["records"]]


@pytest.fixture(scope="module")
def data(tmp_path_factory):
    """The same job's data generated on 1 rank and on 2 ranks."""
    root = tmp_path_factory.mktemp("ranks")
    for ranks in (1, 2):
        femeso("generate", str(job(root, f"gen{ranks}")), "-q", ranks=ranks)
    return root


def serial_run(data: Path) -> Path:
    """The all-serial run every other run is compared with (trained once)."""
    if not (data / "serial").exists():
        shutil.copytree(data / "gen1" / "data", data / "serial" / "data")
        femeso("train", str(job(data, "serial")), "-q")
    return data / "serial"


@pytest.mark.parametrize("generated,trained", [(1, 2), (2, 1), (2, 2)])
def test_training_on_any_rank_count_gives_the_serial_losses(data, generated, trained):
    serial_run(data)
    name = f"gen{generated}_train{trained}"
    shutil.copytree(data / f"gen{generated}" / "data", data / name / "data")
    femeso("train", str(job(data, name)), "-q", ranks=trained)
    reference, measured = losses(data, "serial"), losses(data, name)
    assert len(measured) == len(reference) == 4
    assert measured == pytest.approx(reference, rel=REL)


ENSEMBLE = """
[parallel]
ensemble = 2
"""


def test_ensemble_training_on_two_ranks_gives_the_serial_losses_and_model(data):
    """``mpiexec -n 2 femeso train`` with ``[parallel] ensemble = 2``: 2 members x 1 rank, each
    rolling out half of every minibatch, the files written once."""
    serial = serial_run(data)
    shutil.copytree(data / "gen2" / "data", data / "ensemble" / "data")
    done = femeso("train", str(job(data, "ensemble", ENSEMBLE)), ranks=2)
    assert "2 ensemble members x 1 spatial rank" in done.stderr
    reference, measured = losses(data, "serial"), losses(data, "ensemble")
    assert len(measured) == len(reference) == 4
    assert measured == pytest.approx(reference, rel=REL)
    model = np.load(data / "ensemble" / "onsager" / "model.npz")
    expected = np.load(serial / "onsager" / "model.npz")
    assert sorted(model.files) == sorted(expected.files)
    for key in expected.files:
        if key != "config":
            np.testing.assert_allclose(model[key], expected[key], rtol=1e-6, atol=1e-9)
    assert (data / "ensemble" / "onsager" / "checkpoint.pt").is_file()


def test_an_ensemble_larger_than_the_ranks_is_one_line(tmp_path):
    path = job(tmp_path, "odd", ENSEMBLE)
    done = subprocess.run(
        [str(Path(sys.executable).with_name("femeso")), "train", str(path), "-q"],
        capture_output=True,
        text=True,
        env=mpiexec_environment(),
        timeout=300,
    )
    assert done.returncode != 0
    lines = [line for line in done.stderr.splitlines() if line.strip()]
    assert lines[-1].endswith(
        "parallel.ensemble = 2 does not divide the 1 MPI rank(s): run on a multiple of 2 ranks "
        "(mpiexec -n 2, 4, ...)"
    ), done.stderr


PARTITION = """
import hashlib
import numpy as np
import femeso
from femeso._runtime import start_firedrake
start_firedrake()
import firedrake as fd
mesh = femeso.load_mesh("plate_with_holes")
x = fd.Function(fd.VectorFunctionSpace(mesh, "DG", 0)).interpolate(fd.SpatialCoordinate(mesh))
owned = x.dat.data_ro[: x.function_space().dof_dset.size]
key = hashlib.sha1(np.sort(np.round(owned[:, 0] * 1e6 + owned[:, 1], 6)).tobytes()).hexdigest()
keys = mesh.comm.gather(key)
if mesh.comm.rank == 0:
    print("PARTITION", *keys)
"""


def test_a_mesh_is_partitioned_the_same_way_in_every_run(tmp_path):
    """PT-Scotch gave a new partition of the plate on every run (3 of 3); femeso's default
    (``femeso._runtime.partition_deterministically``) gives one."""
    script = tmp_path / "partition.py"
    script.write_text(PARTITION)
    runs = []
    for _ in range(3):
        done = subprocess.run(
            ["mpiexec", "-n", "2", sys.executable, str(script)],
            capture_output=True,
            text=True,
            env=mpiexec_environment(),
            timeout=300,
        )
        assert done.returncode == 0, done.stderr[-2000:]
        runs.append([line for line in done.stdout.splitlines() if line.startswith("PARTITION")])
    assert len(runs[0]) == 1 and len(runs[0][0].split()) == 3  # two ranks, one key each
    assert runs[0] == runs[1] == runs[2]
