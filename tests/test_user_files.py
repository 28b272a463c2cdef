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


def _rectangle(path: Path, width: float, height: float, size: float) -> Path:
    """Mesh a centred rectangle with gmsh (a job mesh larger than the user's ellipse)."""
    gmsh.initialize(["", "-v", "0"])
    try:
        gmsh.model.add("rectangle")
        surface = gmsh.model.occ.addRectangle(-width / 2, -height / 2, 0, width, height)
        gmsh.model.occ.synchronize()
        gmsh.model.addPhysicalGroup(2, [surface], 1)
        gmsh.option.setNumber("Mesh.MeshSizeMax", size)
        gmsh.model.mesh.generate(2)
        gmsh.write(str(path))
    finally:
        gmsh.finalize()
    return path


def test_user_files_are_resampled_onto_the_job_mesh_with_the_loss_reported(user_job, tmp_path):
    """``[mesh] name`` beside files: the data are interpolated onto that mesh, the loss reported.

    The values femeso stores are checked against matplotlib's linear interpolation on the user's
    own triangles (code that is not femeso's and not Firedrake's).
    """
    from matplotlib.tri import LinearTriInterpolator, Triangulation

    from femeso.data.io import load_dataset

    coarse = ellipse_with_hole(tmp_path / "coarse.msh", size=0.15)
    job = tmp_path / "job.toml"
    job.write_text(
        JOB.replace('output = "out"', f'output = "{tmp_path}/out"').replace(
            '"runs/*.xdmf"', f'"{user_job}/runs/*.xdmf"'
        )
        + '\n[mesh]\nname = "coarse.msh"\n'
    )
    done = femeso_command("run", job.name, "-q", cwd=tmp_path)
    assert done.returncode == 0, done.stderr[-3000:]
    source = json.loads((tmp_path / "out" / "data" / "source.json").read_text())
    report = source["resampled"]
    assert "coarse" in report["to"] and len(report["per_trajectory"]) == TRAJECTORIES
    # the loss is measured, not zero: the coarse mesh cannot carry the user's interfaces exactly
    assert 1e-4 < report["max_relative_l2_loss"] < 5e-2, report  # measured 3.1e-2
    results = json.loads((tmp_path / "out" / "report" / "results.json").read_text())
    assert results["resampled"]["max_relative_l2_loss"] == report["max_relative_l2_loss"]
    assert "data resampled from" in done.stdout and "onto" in done.stdout
    # measured 6.5e-3 (persistence 0.15; 1.8e-4 on the user's own mesh: the coarse mesh does not
    # carry the user's interfaces, and no model on it can be exact)
    assert results["onsager"]["error_at_training_horizon"] < 2e-2, results["onsager"]
    # train.h5 is on the job's mesh, with the values of the user's P1 field at its vertices
    train = load_dataset(tmp_path / "out" / "data" / "train.h5")
    n_vertices = len(meshio.read(coarse).points)
    assert train.space.dim() == n_vertices
    where = fd.Function(fd.VectorFunctionSpace(train.space.mesh(), "CG", 1)).interpolate(
        fd.SpatialCoordinate(train.space.mesh())
    )
    points = where.dat.data_ro
    i = source["split"]["train"][0]
    user = meshio.xdmf.TimeSeriesReader(str(sorted((user_job / "runs").glob("*.xdmf"))[i]))
    with contextlib.chdir(user_job / "runs"):
        user_points, user_cells = user.read_points_cells()
        values = [user.read_data(k)[1]["concentration"] for k in range(user.num_steps)]
    triangles = Triangulation(user_points[:, 0], user_points[:, 1], user_cells[0].data)
    last = train[0].states[-1].dat.data_ro
    expected = LinearTriInterpolator(triangles, values[len(train[0]) - 1])(
        points[:, 0], points[:, 1]
    )
    inside = ~np.ma.getmaskarray(expected)
    # boundary vertices of the coarse mesh may lie just outside the user's (measured: 79 % inside)
    assert inside.mean() > 0.6
    assert np.allclose(last[inside], expected.data[inside], atol=1e-10)
    # a job mesh that reaches outside the user's domain: one line, nothing written
    _rectangle(tmp_path / "large.msh", 3.0, 2.0, 0.3)
    job.write_text(job.read_text().replace("coarse.msh", "large.msh").replace("/out", "/out2"))
    refused = femeso_command("generate", job.name, "-q", cwd=tmp_path)
    assert refused.returncode == 2
    error = [line for line in refused.stderr.splitlines() if "error" in line]
    assert len(error) == 1 and error[0] == refused.stderr.splitlines()[-1], refused.stderr
    assert "outside the domain" in error[0] and "'large' (" in error[0]
    assert "(292 DoFs" in error[0]  # the user's scalar space, named as such
    assert not (tmp_path / "out2" / "data" / "train.h5").exists()
