"""A user's own simulation output, learned with one ``femeso run``.

The data here are made the way a user makes them, with nothing of femeso's: a gmsh geometry that
femeso does not ship (an ellipse with an off-centre hole), a plain Firedrake solver of
Allen--Cahn (implicit Euler, Newton), and the states written as XDMF time series by meshio, one
file per trajectory. The job file names the files by a glob; the mesh comes from the files.
"""

import contextlib
import json
import os
import re
import subprocess
import sys
from pathlib import Path

import firedrake as fd
import gmsh
import meshio
import numpy as np
import pytest

EPS2 = 0.01  # interface parameter squared of the user's equation
FRAME_DT = 0.02
FRAMES = 20
SUBSTEPS = 4
TRAJECTORIES = 8


def ellipse_with_hole(path: Path, size: float = 0.12) -> Path:
    """Mesh an ellipse (semi-axes 1.2, 0.8) minus a disk of radius 0.25 at (0.4, 0.1) with gmsh."""
    gmsh.initialize(["", "-v", "0"])
    try:
        gmsh.model.add("user_geometry")
        outer = gmsh.model.occ.addDisk(0, 0, 0, 1.2, 0.8)
        hole = gmsh.model.occ.addDisk(0.4, 0.1, 0, 0.25, 0.25)
        (surface, *_), _ = gmsh.model.occ.cut([(2, outer)], [(2, hole)])
        gmsh.model.occ.synchronize()
        gmsh.model.addPhysicalGroup(2, [surface[1]], 1)
        boundary = gmsh.model.getBoundary([surface], oriented=False)
        gmsh.model.addPhysicalGroup(1, [abs(b[1]) for b in boundary], 2)
        gmsh.option.setNumber("Mesh.MeshSizeMax", size)
        gmsh.option.setNumber("Mesh.MeshSizeMin", size)
        gmsh.model.mesh.generate(2)
        gmsh.write(str(path))
    finally:
        gmsh.finalize()
    return path


def user_solver_series(mesh_file: Path, out: Path, seed: int) -> Path:
    """Solve u_t = eps^2 lap u + u - u^3 (no-flux) in plain Firedrake; write an XDMF series."""
    mesh = fd.Mesh(str(mesh_file), comm=fd.COMM_SELF)
    V = fd.FunctionSpace(mesh, "CG", 1)
    W = fd.VectorFunctionSpace(mesh, "CG", 1)  # same vertex numbering as V
    x = fd.SpatialCoordinate(mesh)
    rng = np.random.default_rng(seed)
    u0 = 0.1 * rng.uniform(-1, 1)
    for _ in range(4):
        k = rng.uniform(0.5, 3.0, size=2)
        u0 = u0 + rng.uniform(0.2, 0.5) * fd.cos(k[0] * x[0] + rng.uniform(0, 6.3)) * fd.cos(
            k[1] * x[1] + rng.uniform(0, 6.3)
        )
    u, u_old, v = fd.Function(V), fd.Function(V), fd.TestFunction(V)
    u.interpolate(u0)
    dt = FRAME_DT / SUBSTEPS
    residual = (
        (u - u_old) / dt * v + EPS2 * fd.inner(fd.grad(u), fd.grad(v)) - (u - u**3) * v
    ) * fd.dx
    solver = fd.NonlinearVariationalSolver(
        fd.NonlinearVariationalProblem(residual, u),
        solver_parameters={"snes_rtol": 1e-12, "snes_atol": 1e-14, "pc_type": "lu"},
    )
    points = fd.Function(W).interpolate(x).dat.data_ro.copy()
    cells = W.cell_node_map().values
    with contextlib.chdir(out.parent), meshio.xdmf.TimeSeriesWriter(out.name) as writer:
        writer.write_points_cells(points, [("triangle", cells)])
        writer.write_data(0.0, point_data={"concentration": u.dat.data_ro.copy()})
        for k in range(1, FRAMES + 1):
            for _ in range(SUBSTEPS):
                u_old.assign(u)
                solver.solve()
            writer.write_data(k * FRAME_DT, point_data={"concentration": u.dat.data_ro.copy()})
    return out


JOB = """
[job]
name = "user_allen_cahn"
output = "out"
seed = 3

[data]
source = "files"
paths = ["runs/*.xdmf"]
fields = ["concentration"]

[model]
dynamics = "local"
mobility = "constant"
kappa_ref = 0.01

[training]
warm_start = true
iterations = 0
refine_iterations = 10
validate_every = 5

[baseline]
enabled = false

[evaluation]
step_factors = [1.0, 10.0]
"""


@pytest.fixture(scope="module")
def user_job(tmp_path_factory):
    root = tmp_path_factory.mktemp("user")
    mesh_file = ellipse_with_hole(root / "ellipse_with_hole.msh")
    (root / "runs").mkdir()
    for i in range(TRAJECTORIES):
        user_solver_series(mesh_file, root / "runs" / f"run_{i:02d}.xdmf", seed=100 + i)
    (root / "job.toml").write_text(JOB)
    return root


def femeso_command(*args, cwd):
    exe = Path(sys.executable).parent / "femeso"
    env = dict(os.environ, PETSC_OPTIONS="")
    return subprocess.run(
        [str(exe), *args], cwd=cwd, capture_output=True, text=True, env=env, timeout=900
    )


def test_user_xdmf_files_train_with_one_command(user_job):
    done = femeso_command("run", "job.toml", cwd=user_job)  # without -q, into a pipe (a log)
    assert done.returncode == 0, done.stderr[-3000:]
    # A log gets plain timestamped lines: no progress bars, no carriage returns.
    assert "\r" not in done.stderr
    lines = [line for line in done.stderr.splitlines() if "femeso: " in line]
    assert len(lines) > 5
    assert all(re.match(r"\d{4}-\d\d-\d\d \d\d:\d\d:\d\d femeso: ", line) for line in lines), lines
    results = json.loads((user_job / "out" / "report" / "results.json").read_text())
    source = json.loads((user_job / "out" / "data" / "source.json").read_text())
    # The files' own step and split (0.7 / 0.2 / 0.1 of the trajectories, whole ones).
    assert source["frame_dt"] == pytest.approx(FRAME_DT, rel=1e-12)
    sizes = [len(source["split"][k]) for k in ("train", "validation", "test")]
    assert sum(sizes) == TRAJECTORIES and sizes[2] >= 1 and sizes[1] >= 1
    assert results["training_horizon"] == pytest.approx(FRAMES * FRAME_DT)
    # No true model: no classical solver row, no density comparison.
    assert "classical" not in results and results.get("density") is None
    onsager = results["onsager"]
    # The learned model reproduces the held-out trajectory over the whole horizon.
    assert onsager["error_at_training_horizon"] < 2e-3, onsager  # measured 1.8e-4
    assert results["persistence"]["error_at_training_horizon"] > 50 * 2e-3  # measured 0.15
    assert onsager["energy_increases"] == 0
    assert (user_job / "out" / "report" / "density.png").exists()
    # A second run into the same folder changes nothing and says so in one line.
    before = (user_job / "out" / "onsager" / "model.npz").read_bytes()
    again = femeso_command("run", "job.toml", "-q", cwd=user_job)
    assert again.returncode == 2
    assert again.stderr.count("\n") == 1 and "--overwrite" in again.stderr
    assert (user_job / "out" / "onsager" / "model.npz").read_bytes() == before


@pytest.mark.parametrize(
    "change,message",
    [
        ({"paths": '["nothing/*.xdmf"]'}, "matches no file"),
        ({"fields": '["temperature"]'}, "temperature"),
        ({"split": "[0.9, 0.1, 0.0]"}, "data.split"),
        ({"equation": '"allen_cahn"'}, "generator setting"),
    ],
)
def test_bad_file_jobs_are_refused_in_one_line(user_job, tmp_path, change, message):
    present = {line.split("=")[0].strip() for line in JOB.splitlines()}
    lines = []
    for line in JOB.splitlines():
        key = line.split("=")[0].strip()
        lines.append(f"{key} = {change[key]}" if key in change else line)
        if line == "[data]":
            lines.extend(f"{k} = {v}" for k, v in change.items() if k not in present)
    job = user_job / f"bad_{tmp_path.name}.toml"
    job.write_text("\n".join(lines).replace('output = "out"', f'output = "{tmp_path}/out"'))
    done = femeso_command("generate", job.name, "-q", cwd=user_job)
    assert done.returncode == 2
    assert done.stderr.count("\n") == 1, done.stderr
    assert message in done.stderr
    assert not (tmp_path / "out" / "data" / "train.h5").exists()
