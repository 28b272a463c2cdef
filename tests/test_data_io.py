"""Trajectory data I/O: round trips of every format, parallel write/read, bad input rejected."""

from __future__ import annotations

import contextlib
import hashlib
import os
from pathlib import Path

import firedrake as fd
import meshio
import numpy as np
import pytest

from femeso.data import (
    Dataset,
    TrajectoryData,
    export_vtk,
    from_grid_arrays,
    load_dataset,
    read_meshio_series,
    save_dataset,
    to_grid_arrays,
)

# ------------------------------------------------------------------------------------------------
# helpers
# ------------------------------------------------------------------------------------------------


def grid_mesh_arrays(n=6, *, shuffle_seed=3, quads=False):
    """Points (with a zero z column) and cells of a structured mesh of [0,1]x[0,2], shuffled."""
    x, y = np.meshgrid(np.linspace(0, 1, n), np.linspace(0, 2, n), indexing="ij")
    pts = np.c_[x.ravel(), y.ravel(), np.zeros(n * n)]
    idx = np.arange(n * n).reshape(n, n)
    a, b = idx[:-1, :-1].ravel(), idx[1:, :-1].ravel()
    c, d = idx[1:, 1:].ravel(), idx[:-1, 1:].ravel()
    cells = np.c_[a, b, c, d] if quads else np.r_[np.c_[a, b, c], np.c_[a, c, d]]
    perm = np.random.default_rng(shuffle_seed).permutation(n * n)  # new index of old point
    new_pts = np.empty_like(pts)
    new_pts[perm] = pts
    return new_pts, perm[cells]


def dof_coordinates(space):
    mesh = space.mesh()
    return fd.Function(fd.VectorFunctionSpace(mesh, "CG", 1)).interpolate(
        fd.SpatialCoordinate(mesh)
    )


def by_coordinates(f):
    """(coordinates, values) of the owned DoFs of a P1 function on all ranks, sorted by x then y."""
    space = f.function_space()
    comm = space.mesh().comm
    n = space.dof_dset.size
    X = dof_coordinates(space).dat.data_ro[:n]
    c = np.concatenate(comm.allgather(X))
    v = np.concatenate(comm.allgather(f.dat.data_ro[:n]))
    order = np.lexsort(c.T[::-1])
    return c[order], v[order]


def sorted_points(points, values):
    order = np.lexsort(points.T[::-1])
    return points[order], values[order]


def digest(path):
    return hashlib.sha256(Path(path).read_bytes()).hexdigest()


def exact_dataset(comm, *, n_traj=2, n_times=3):
    """P1 data u = x + 16 y + 64 t + 256 i on UnitSquareMesh(8, 8): exact in binary."""
    mesh = fd.UnitSquareMesh(8, 8, comm=comm, name="square")
    V = fd.FunctionSpace(mesh, "CG", 1)
    x, y = fd.SpatialCoordinate(mesh)
    times = np.array([0.0, 0.5, 1.25, 2.0][:n_times])
    trajs = []
    for i in range(n_traj):
        states = [fd.Function(V).interpolate(x + 16 * y + 64 * t + 256 * i) for t in times]
        trajs.append(TrajectoryData(V, times, states, {"generator": "exact", "i": i}))
    return Dataset(V, trajs, {"name": "exact", "seed": 7})


def check_exact(dataset, n_traj=2, n_times=3):
    assert len(dataset) == n_traj
    mesh = dataset.mesh
    assert mesh.comm.allreduce(dataset.space.dof_dset.size) == 81
    assert mesh.comm.allreduce(mesh.cell_set.size) == 128
    X = dof_coordinates(dataset.space).dat.data_ro
    for i, traj in enumerate(dataset):
        assert np.array_equal(traj.times, [0.0, 0.5, 1.25, 2.0][:n_times])
        assert traj.metadata == {"generator": "exact", "i": i}
        for t, state in zip(traj.times, traj.states, strict=True):
            expected = X[:, 0] + 16 * X[:, 1] + 64 * t + 256 * i
            assert np.array_equal(state.dat.data_ro, expected)
    assert dataset.metadata == {"name": "exact", "seed": 7}


def shared_tmp(tmp_path):
    """Rank 0's tmp_path on every rank."""
    return Path(fd.COMM_WORLD.bcast(str(tmp_path), root=0))


def write_xdmf(path, points, cells, times, fields, cell_type="triangle"):
    # meshio 5.3.5 writes the .h5 beside the working directory: write from the file's directory.
    with contextlib.chdir(Path(path).parent), meshio.xdmf.TimeSeriesWriter(Path(path).name) as w:
        w.write_points_cells(points, [(cell_type, cells)])
        for t in times:
            w.write_data(t, point_data=fields(t))


def fields_of(points):
    rng = np.random.default_rng(11)
    base = rng.standard_normal(len(points))
    vec = rng.standard_normal((len(points), 2))
    return lambda t: {"u": base + t, "v": vec * (1 + t)}


# ------------------------------------------------------------------------------------------------
# femeso's own format
# ------------------------------------------------------------------------------------------------


@pytest.mark.parametrize("kind", ["scalar", "mixed"])
def test_checkpoint_round_trip(tmp_path, kind):
    mesh = fd.UnitSquareMesh(5, 4, name="plate")
    if kind == "scalar":
        V = fd.FunctionSpace(mesh, "CG", 1)
    else:
        V = fd.MixedFunctionSpace(
            [fd.FunctionSpace(mesh, "CG", 1), fd.VectorFunctionSpace(mesh, "CG", 2)]
        )
    rng = np.random.default_rng(0)
    trajs = []
    for i in range(3):
        # trajectory 1 has one state (a trajectory of one column was once refused on writing)
        times = np.cumsum(rng.uniform(0.1, 1.0, size=1 if i == 1 else 4))
        states = []
        for _ in times:
            f = fd.Function(V)
            for sub in f.subfunctions:
                sub.dat.data[:] = rng.standard_normal(sub.dat.data.shape)
            states.append(f)
        trajs.append(TrajectoryData(V, times, states, {"seed": i, "params": {"kappa": 0.1 * i}}))
    dataset = Dataset(V, trajs, {"generator": "random", "n": 3})
    path = save_dataset(tmp_path / "data.h5", dataset)
    assert sorted(os.listdir(tmp_path)) == ["data.h5"]  # no temporary file left behind

    loaded = load_dataset(path)
    assert loaded.metadata == {"generator": "random", "n": 3}
    assert loaded.mesh.num_vertices() == mesh.num_vertices() == 30
    assert loaded.mesh.num_cells() == mesh.num_cells() == 40
    assert np.array_equal(loaded.mesh.coordinates.dat.data_ro, mesh.coordinates.dat.data_ro)
    assert loaded.space.ufl_element() == V.ufl_element()
    assert len(loaded) == 3
    for a, b in zip(trajs, loaded, strict=True):
        assert b.metadata == a.metadata
        assert np.array_equal(b.times, a.times)
        assert len(b.states) == len(a.states) == len(a.times)
        for fa, fb in zip(a.states, b.states, strict=True):
            assert fb.function_space() == loaded.space
            for sa, sb in zip(fa.subfunctions, fb.subfunctions, strict=True):
                assert np.array_equal(sa.dat.data_ro, sb.dat.data_ro)


def test_save_is_atomic_and_never_overwrites(tmp_path, monkeypatch):
    dataset = exact_dataset(fd.COMM_WORLD)
    path = save_dataset(tmp_path / "data.h5", dataset)
    before = digest(path)
    with pytest.raises(FileExistsError, match="data.h5: file exists"):
        save_dataset(path, dataset)
    assert digest(path) == before

    calls = {"n": 0}
    original = fd.CheckpointFile.save_function

    def crash_on_second_trajectory(self, *args, **kwargs):
        calls["n"] += 1  # one save_function per trajectory (a component per state)
        if calls["n"] == 2:
            raise RuntimeError("simulated crash")
        return original(self, *args, **kwargs)

    monkeypatch.setattr(fd.CheckpointFile, "save_function", crash_on_second_trajectory)
    # A failure inside the writer is one line naming the file (the cause stays chained).
    with pytest.raises(OSError, match="data.h5: cannot write the dataset: simulated crash") as err:
        save_dataset(path, dataset, overwrite=True)
    assert isinstance(err.value.__cause__, RuntimeError)
    assert calls["n"] == 2
    assert digest(path) == before  # the old file is intact
    with pytest.raises(OSError, match="new.h5: cannot write the dataset: simulated crash"):
        calls["n"] = 0
        save_dataset(tmp_path / "new.h5", dataset)
    assert sorted(os.listdir(tmp_path)) == ["data.h5"]  # no partial file, no temporary file
    monkeypatch.undo()

    save_dataset(path, exact_dataset(fd.COMM_WORLD, n_traj=1), overwrite=True)
    assert digest(path) != before
    assert len(load_dataset(path)) == 1


def test_save_refuses_nan_and_writes_nothing(tmp_path):
    dataset = exact_dataset(fd.COMM_WORLD)
    dataset[1].states[2].dat.data[5] = np.nan  # changed after the trajectory checked it
    with pytest.raises(
        ValueError,
        match=r"^\S*bad.h5: trajectory 1, state 2 \(t = 1.25\) has 1 NaN/Inf values; nothing wr",
    ):
        save_dataset(tmp_path / "bad.h5", dataset)
    assert os.listdir(tmp_path) == []
    dataset[1].states[2].dat.data[5] = np.inf
    good = save_dataset(tmp_path / "good.h5", exact_dataset(fd.COMM_WORLD))
    before = digest(good)
    with pytest.raises(ValueError, match="good.h5: trajectory 1, state 2"):
        save_dataset(good, dataset, overwrite=True)
    assert digest(good) == before and os.listdir(tmp_path) == ["good.h5"]


def test_load_rejects_missing_corrupt_and_foreign_files(tmp_path):
    missing = tmp_path / "missing.h5"
    with pytest.raises(FileNotFoundError, match="missing.h5: no such file"):
        load_dataset(missing)

    garbage = tmp_path / "garbage.h5"
    garbage.write_bytes(b"this is not HDF5 at all" * 100)
    with pytest.raises(ValueError, match="garbage.h5: not a readable femeso dataset"):
        load_dataset(garbage)

    good = save_dataset(tmp_path / "good.h5", exact_dataset(fd.COMM_WORLD))
    truncated = tmp_path / "truncated.h5"
    truncated.write_bytes(good.read_bytes()[: good.stat().st_size // 2])
    with pytest.raises(ValueError, match="truncated.h5: "):
        load_dataset(truncated)

    foreign = tmp_path / "foreign.h5"
    with fd.CheckpointFile(str(foreign), "w") as f:
        f.save_mesh(fd.UnitIntervalMesh(4))
    with pytest.raises(ValueError, match="foreign.h5: no /femeso group"):
        load_dataset(foreign)


def test_split_is_reproducible_from_the_seed():
    dataset = exact_dataset(fd.COMM_WORLD, n_traj=10, n_times=1)
    a = dataset.split(seed=5)
    b = dataset.split(seed=5)
    c = dataset.split(seed=6)
    assert [len(p) for p in a] == [7, 2, 1]
    ids = [[t.metadata["i"] for t in part] for part in a]
    assert ids == [[t.metadata["i"] for t in part] for part in b]
    assert ids != [[t.metadata["i"] for t in part] for part in c]
    assert sorted(sum(ids, [])) == list(range(10))
    assert a.test.metadata["split"]["indices"] == ids[2]
    assert [len(p) for p in dataset.split(seed=1, fractions=(0.5, 0.25, 0.25))] == [5, 3, 2]
    with pytest.raises(ValueError, match="must sum to 1"):
        dataset.split(seed=0, fractions=(0.5, 0.2, 0.2))
    with pytest.raises(ValueError, match="three numbers >= 0"):
        dataset.split(seed=0, fractions=(1.2, -0.2, 0.0))


# ------------------------------------------------------------------------------------------------
# meshio series
# ------------------------------------------------------------------------------------------------


def test_xdmf_round_trip(tmp_path):
    points, cells = grid_mesh_arrays()
    times = [0.0, 0.25, 1.0]
    fields = fields_of(points)
    path = tmp_path / "series.xdmf"
    write_xdmf(path, points, cells, times, fields)
    digests = {p.name: digest(p) for p in tmp_path.iterdir()}

    traj = read_meshio_series(path, metadata={"origin": "test"})
    assert {p.name: digest(p) for p in tmp_path.iterdir()} == digests  # inputs untouched
    assert np.array_equal(traj.times, times)
    assert traj.metadata["fields"] == ["u", "v"] and traj.metadata["origin"] == "test"
    assert traj.mesh.num_vertices() == len(points) == 36
    assert traj.mesh.num_cells() == len(cells) == 50
    assert traj.mesh.geometric_dimension == 2
    for t, state in zip(times, traj.states, strict=True):
        u, v = state.subfunctions
        cu, vu = by_coordinates(u)
        cv, vv = by_coordinates(v)
        pu, eu = sorted_points(points[:, :2], fields(t)["u"])
        pv, ev = sorted_points(points[:, :2], fields(t)["v"])
        assert np.array_equal(cu, pu) and np.array_equal(vu, eu)
        assert np.array_equal(cv, pv) and np.array_equal(vv, ev)


@pytest.mark.parametrize("quads", [False, True])
def test_vtu_list_and_vtk_export_round_trip(tmp_path, quads):
    points, cells = grid_mesh_arrays(5, quads=quads)
    fields = fields_of(points)
    times = [0.5, 1.5, 4.0]
    files = []
    for k, t in enumerate(times):
        files.append(tmp_path / f"step_{k}.vtu")
        cell_type = "quad" if quads else "triangle"
        meshio.write(
            str(files[-1]), meshio.Mesh(points, [(cell_type, cells)], point_data=fields(t))
        )
    traj = read_meshio_series(files, fields=["u"], times=times)
    assert np.array_equal(traj.times, times)
    assert traj.mesh.num_vertices() == 25 and traj.mesh.num_cells() == len(cells)
    assert traj.mesh.ufl_cell().cellname == ("quadrilateral" if quads else "triangle")
    for t, state in zip(times, traj.states, strict=True):
        c, v = by_coordinates(state)
        p, e = sorted_points(points[:, :2], fields(t)["u"])
        assert np.array_equal(c, p) and np.array_equal(v, e)

    pvd = export_vtk(traj, tmp_path / "out" / "export.pvd")
    with pytest.raises(FileExistsError, match="export.pvd: file exists"):
        export_vtk(traj, pvd)
    back = read_meshio_series(pvd)
    assert back.metadata["fields"] == ["u"]
    assert np.array_equal(back.times, times)
    assert back.mesh.num_vertices() == 25 and back.mesh.num_cells() == len(cells)
    for a, b in zip(traj.states, back.states, strict=True):
        ca, va = by_coordinates(a)
        cb, vb = by_coordinates(b)
        assert np.array_equal(ca, cb) and np.array_equal(va, vb)


def test_other_degrees_are_interpolated_and_the_loss_reported(tmp_path):
    points, cells = grid_mesh_arrays()
    path = tmp_path / "series.xdmf"
    write_xdmf(path, points, cells, [0.0, 1.0], fields_of(points))
    p2 = read_meshio_series(path, fields=["u"], degree=2)
    assert p2.space.ufl_element().degree() == 2
    assert p2.metadata["transfer"]["max_relative_l2_loss"] < 1e-14  # P1 is inside P2
    dg0 = read_meshio_series(path, fields=["u"], family="DG", degree=0, method="project")
    assert dg0.space.ufl_element().degree() == 0
    assert dg0.metadata["transfer"]["method"] == "project"
    assert dg0.metadata["transfer"]["max_relative_l2_loss"] > 1e-2


# ------------------------------------------------------------------------------------------------
# grid arrays
# ------------------------------------------------------------------------------------------------


@pytest.mark.parametrize("shape,lengths", [((3, 4, 10), 2.0), ((2, 3, 5, 7), (1.0, 3.0))])
def test_grid_round_trip(tmp_path, shape, lengths):
    array = np.random.default_rng(1).standard_normal(shape)
    copy = array.copy()
    times = np.linspace(0.0, 1.0, shape[1])
    dataset = from_grid_arrays(array, lengths=lengths, times=times, metadata={"pde": "test"})
    assert np.array_equal(array, copy)  # the input is not modified
    assert len(dataset) == shape[0]
    assert dataset.space.dof_dset.size == np.prod(shape[2:])
    assert np.array_equal(dataset[1].times, times)
    assert np.array_equal(to_grid_arrays(dataset), array)
    # The P1 values at the mesh vertices are the grid values at those points.
    X = dof_coordinates(dataset.space).dat.data_ro.reshape(dataset.space.dof_dset.size, -1)
    L = np.broadcast_to(lengths, (len(shape) - 2,))
    ij = np.mod(np.rint(X / (L / np.array(shape[2:]))).astype(int), shape[2:])
    flat = ij[:, 0] if len(shape) == 3 else ij[:, 0] * shape[3] + ij[:, 1]
    assert np.array_equal(
        dataset[1].states[2].dat.data_ro, array.reshape(*shape[:2], -1)[1, 2, flat]
    )

    loaded = load_dataset(save_dataset(tmp_path / "grid.h5", dataset))
    assert loaded.metadata["pde"] == "test"
    assert np.array_equal(to_grid_arrays(loaded), array)


# ------------------------------------------------------------------------------------------------
# bad input
# ------------------------------------------------------------------------------------------------


def bad_xdmf(tmp_path, problem):
    points, cells = grid_mesh_arrays()
    path = tmp_path / f"{problem}.xdmf"
    good = fields_of(points)
    times = [0.0, 1.0, 2.0]
    fields = good
    cell_type = "triangle"
    if problem == "size":
        fields = lambda t: {"u": good(t)["u"][:-1]}  # noqa: E731
    elif problem == "nan":
        fields = lambda t: {"u": np.where(np.arange(36) == 4, np.nan, good(t)["u"])}  # noqa: E731
    elif problem == "inf":
        fields = lambda t: {"u": np.where(np.arange(36) == 4, np.inf, good(t)["u"])}  # noqa: E731
    elif problem == "times":
        times = [0.0, 1.0, 1.0]
    elif problem == "cells":
        cells, cell_type = np.c_[cells[:, :3], cells[::-1, :3]][:25], "wedge"
    write_xdmf(path, points, cells, times, fields, cell_type)
    return path


@pytest.mark.parametrize(
    "problem,message",
    [
        ("size", r"size.xdmf: point data 'u' at time index 0 has 35 values but the mesh has 36"),
        ("nan", r"nan.xdmf: point data 'u' at time index 0 \(t = 0.0\) has 1 NaN/Inf values"),
        ("inf", r"inf.xdmf: point data 'u' at time index 0 \(t = 0.0\) has 1 NaN/Inf values"),
        ("times", r"times.xdmf: times are not strictly increasing \(t\[2\] = 1.0 <= t\[1\]"),
        ("cells", r"cells.xdmf: unsupported cell type 'wedge'"),
    ],
)
def test_bad_xdmf_is_rejected(tmp_path, problem, message):
    path = bad_xdmf(tmp_path, problem)
    before = digest(path)
    with pytest.raises(ValueError, match=message):
        read_meshio_series(path)
    assert digest(path) == before


def test_missing_and_corrupt_meshio_files_are_rejected(tmp_path):
    with pytest.raises(FileNotFoundError, match="nothing.xdmf: no such file"):
        read_meshio_series(tmp_path / "nothing.xdmf")
    corrupt = tmp_path / "corrupt.xdmf"
    corrupt.write_text("<Xdmf><Domain><Grid")
    with pytest.raises(ValueError, match="corrupt.xdmf: not a readable XDMF time series"):
        read_meshio_series(corrupt)
    broken = tmp_path / "broken.vtu"
    broken.write_text("<VTKFile type='UnstructuredGrid'><Unstr")
    with pytest.raises(ValueError, match="broken.vtu: not a readable mesh file"):
        read_meshio_series([broken])
    points, cells = grid_mesh_arrays()
    good = tmp_path / "good.vtu"
    meshio.write(
        str(good), meshio.Mesh(points, [("triangle", cells)], point_data={"u": points[:, 0]})
    )
    with pytest.raises(FileNotFoundError, match="gone.vtu: no such file"):
        read_meshio_series([good, tmp_path / "gone.vtu"])
    pvd = tmp_path / "bad.pvd"
    pvd.write_text(
        '<VTKFile type="Collection"><Collection>'
        '<DataSet timestep="1.0" file="good.vtu"/><DataSet timestep="0.5" file="good.vtu"/>'
        "</Collection></VTKFile>"
    )
    with pytest.raises(ValueError, match=r"bad.pvd: times are not strictly increasing"):
        read_meshio_series(pvd)


def test_mixed_meshes_and_cell_types_are_rejected(tmp_path):
    points, cells = grid_mesh_arrays()
    data = {"u": points[:, 0]}
    a, b = tmp_path / "a.vtu", tmp_path / "b.vtu"
    meshio.write(str(a), meshio.Mesh(points, [("triangle", cells)], point_data=data))
    meshio.write(str(b), meshio.Mesh(points * 2, [("triangle", cells)], point_data=data))
    with pytest.raises(ValueError, match="b.vtu: mixed meshes: its mesh differs from the one in"):
        read_meshio_series([a, b])
    mixed = tmp_path / "mixed.vtu"
    quads = np.array([[0, 1, 2, 3]])
    meshio.write(
        str(mixed), meshio.Mesh(points, [("triangle", cells), ("quad", quads)], point_data=data)
    )
    with pytest.raises(ValueError, match=r"mixed.vtu: mixed cell types \['quad', 'triangle'\]"):
        read_meshio_series(mixed)
    hexes = tmp_path / "hex.vtu"
    meshio.write(
        str(hexes), meshio.Mesh(points, [("hexahedron", np.arange(8)[None])], point_data=data)
    )
    with pytest.raises(ValueError, match="hex.vtu: unsupported cell type 'hexahedron'"):
        read_meshio_series(hexes)

    one, two = exact_dataset(fd.COMM_WORLD), exact_dataset(fd.COMM_WORLD)
    with pytest.raises(ValueError, match="mixed meshes: trajectory 1 is on mesh"):
        Dataset(one.space, [one[0], two[0]])


def test_bad_grid_arrays_and_states_are_rejected():
    good = np.zeros((2, 3, 8))
    bad = good.copy()
    bad[1, 2, 5] = np.nan
    with pytest.raises(ValueError, match=r"1 NaN/Inf values \(first at index \(1, 2, 5\)\)"):
        from_grid_arrays(bad)
    with pytest.raises(ValueError, match=r"expected shape .* got shape \(3, 8\)"):
        from_grid_arrays(good[0])
    with pytest.raises(ValueError, match=r"2 times for 3 time slices"):
        from_grid_arrays(good, times=[0.0, 1.0])
    with pytest.raises(
        ValueError, match=r"not strictly increasing \(t\[1\] = 0.0 <= t\[0\] = 1.0\)"
    ):
        from_grid_arrays(good, times=[1.0, 0.0, 2.0])
    with pytest.raises(ValueError, match="times contain NaN or Inf"):
        from_grid_arrays(good, times=[0.0, np.inf, 2.0])

    V = fd.FunctionSpace(fd.UnitIntervalMesh(4), "CG", 1)
    f = fd.Function(V)
    f.dat.data[2] = np.inf
    with pytest.raises(ValueError, match=r"state 1 \(t = 1.0\) has 1 NaN/Inf values"):
        TrajectoryData(V, [0.0, 1.0], [fd.Function(V), f])
    with pytest.raises(ValueError, match="2 times but 1 states"):
        TrajectoryData(V, [0.0, 1.0], [fd.Function(V)])
    with pytest.raises(ValueError, match="not JSON-serialisable"):
        TrajectoryData(V, [0.0], [fd.Function(V)], {"array": np.zeros(2)})


# ------------------------------------------------------------------------------------------------
# parallel
# ------------------------------------------------------------------------------------------------


@pytest.mark.parallel(nprocs=2)
def test_two_ranks_write_one_reads(tmp_path):
    comm = fd.COMM_WORLD
    assert comm.size == 2
    path = shared_tmp(tmp_path) / "parallel.h5"
    dataset = exact_dataset(comm)
    assert all(comm.allgather(dataset.space.dof_dset.size < 81))  # really distributed
    save_dataset(path, dataset)
    check_exact(load_dataset(path, comm=comm))
    serial = load_dataset(path, comm=fd.COMM_SELF)  # each rank alone
    assert serial.space.dof_dset.size == 81
    check_exact(serial)


@pytest.mark.parallel(nprocs=2)
def test_one_rank_writes_two_read(tmp_path):
    comm = fd.COMM_WORLD
    path = shared_tmp(tmp_path) / "serial.h5"
    if comm.rank == 0:
        save_dataset(path, exact_dataset(fd.COMM_SELF))
    comm.barrier()
    loaded = load_dataset(path, comm=comm)
    assert all(comm.allgather(loaded.space.dof_dset.size < 81))
    check_exact(loaded)


@pytest.mark.parallel(nprocs=2)
def test_parallel_meshio_and_grid_reads(tmp_path):
    comm = fd.COMM_WORLD
    path = shared_tmp(tmp_path) / "series.xdmf"
    points, cells = grid_mesh_arrays(9)
    fields = fields_of(points)
    if comm.rank == 0:
        write_xdmf(path, points, cells, [0.0, 1.0], fields)
    comm.barrier()
    traj = read_meshio_series(path, fields=["u"], comm=comm)
    assert all(comm.allgather(traj.space.dof_dset.size < 81))
    for t, state in zip([0.0, 1.0], traj.states, strict=True):
        c, v = by_coordinates(state)
        p, e = sorted_points(points[:, :2], fields(t)["u"])
        assert np.array_equal(c, p) and np.array_equal(v, e)

    array = np.random.default_rng(2).standard_normal((2, 3, 6, 5))
    dataset = from_grid_arrays(array, lengths=(2.0, 1.0), comm=comm)
    assert comm.allreduce(dataset.space.dof_dset.size) == 30
    assert np.array_equal(to_grid_arrays(dataset), array)


def test_paper_hdf5_grid_layout_round_trip(tmp_path):
    """trajectories x time x points in one HDF5 array, as the paper stores its data."""
    import h5py

    from femeso.data import read_grid_hdf5, to_grid_arrays

    rng = np.random.default_rng(0)
    array = rng.standard_normal((3, 4, 16))
    path = tmp_path / "paper.h5"
    with h5py.File(path, "w") as h5:
        h5.create_dataset("u", data=array)
    before = path.read_bytes()
    data = read_grid_hdf5(path, dataset="u", times=[0.0, 1e-3, 2e-3, 3e-3])
    assert np.array_equal(to_grid_arrays(data), array)
    assert path.read_bytes() == before  # the user's file is untouched
    with pytest.raises(ValueError, match=r"no array 'v' \(arrays: \['u'\]\)"):
        read_grid_hdf5(path, dataset="v")
    with pytest.raises(FileNotFoundError, match="missing.h5"):
        read_grid_hdf5(tmp_path / "missing.h5", dataset="u")
    bad = tmp_path / "bad.h5"
    bad.write_text("not hdf5")
    with pytest.raises(ValueError, match="bad.h5: not a readable HDF5 file"):
        read_grid_hdf5(bad, dataset="u")
