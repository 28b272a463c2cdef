"""Users' files written by other programs: the paper's HDF5 layout, .npz, XDMF, CheckpointFiles.

Every file here is written by plain h5py, NumPy, meshio or Firedrake, never by femeso; the values
femeso reads are compared with the written arrays by coordinates, never by DoF position.
"""

from __future__ import annotations

import contextlib
import io
import json
import subprocess
import sys
from pathlib import Path

import firedrake as fd
import h5py
import meshio
import numpy as np
import pytest

from femeso.data import save_dataset
from femeso.data.describe import describe, describe_lines, detect_format
from femeso.data.io import (
    grid_hdf5_info,
    read_checkpoint_series,
    read_data,
    read_grid_hdf5,
    read_meshio_series,
    read_npz,
)
from test_data_io import by_coordinates, grid_mesh_arrays, shared_tmp, sorted_points, write_xdmf

TWO_PI = 2 * np.pi

# ------------------------------------------------------------------------------------------------
# helpers: files in the exact published layouts, written without femeso
# ------------------------------------------------------------------------------------------------


def paper_array(n=3, frames=101, points=32, seed=0, ny=None):
    rng = np.random.default_rng(seed)
    shape = (n, frames, points, 1) if ny is None else (n, frames, points, ny, 1)
    return rng.standard_normal(shape).astype(np.float32)


def write_paper(path, u, *, t=None, x=None, y=None, extra=None):
    """The paper's layout: u_sol_all (N, frames, points[, ny], 1) float32, t_coord, x_coord."""
    frames, points = u.shape[1], u.shape[2] if u.ndim > 2 else 8
    with h5py.File(path, "w") as h5:
        h5.create_dataset("u_sol_all", data=u)
        h5.create_dataset(
            "t_coord",
            data=np.linspace(0, 1e-2 * (frames - 1), frames, dtype=np.float32) if t is None else t,
        )
        h5.create_dataset(
            "x_coord",
            data=np.linspace(0, TWO_PI, points + 1)[:-1].astype(np.float32) if x is None else x,
        )
        if y is not None:
            h5.create_dataset("y_coord", data=y)
        for key, value in (extra or {}).items():
            h5.create_dataset(key, data=value)
    return Path(path)


def grid_values(state, u_traj_frame, lengths):
    """The array value at each owned P1 DoF's grid point, from the DoF's coordinates."""
    V = state.function_space()
    mesh = V.mesh()
    n = V.dof_dset.size
    coords = mesh.coordinates
    cell_x = coords.dat.data_ro_with_halos[coords.function_space().cell_node_map().values]
    cell_x = cell_x.reshape(*cell_x.shape[:2], -1)
    dofs = V.cell_node_map().values
    X = np.empty((V.dof_dset.total_size, cell_x.shape[-1]))
    X[dofs.ravel()] = cell_x.reshape(-1, cell_x.shape[-1])
    grid = u_traj_frame.shape
    h = np.asarray(lengths) / np.asarray(grid)
    ij = np.mod(np.rint(X[:n] / h).astype(int), grid)
    return u_traj_frame[tuple(ij.T)]


class CountingFile(io.FileIO):
    """A raw file that counts the bytes HDF5 reads through it (h5py's fileobj driver)."""

    def __init__(self, path, counter):
        super().__init__(path, "rb")
        self.counter = counter

    def readinto(self, buffer):
        n = super().readinto(buffer)
        self.counter["bytes"] += n or 0
        return n

    def read(self, size=-1):
        data = super().read(size)
        self.counter["bytes"] += len(data)
        return data


@contextlib.contextmanager
def counting_reads(monkeypatch, path):
    """Route every h5py.File(path) through CountingFile; yield the byte counter."""
    counter = {"bytes": 0, "opens": 0}
    original = h5py.File
    target = Path(path).resolve()

    def patched(name, mode="r", *args, **kwargs):
        if isinstance(name, str | Path) and Path(name).resolve() == target:
            assert mode == "r", "the reader must open users' files read-only"
            counter["opens"] += 1
            kwargs.pop("driver", None)
            return original(CountingFile(target, counter), "r", *args, **kwargs)
        return original(name, mode, *args, **kwargs)

    monkeypatch.setattr(h5py, "File", patched)
    yield counter
    monkeypatch.undo()


# ------------------------------------------------------------------------------------------------
# the paper's grid HDF5 layout
# ------------------------------------------------------------------------------------------------


def test_paper_layout_1d_times_period_and_values(tmp_path):
    u = paper_array(n=3, frames=101, points=32)
    path = write_paper(tmp_path / "allen_cahn.h5", u)
    before = path.read_bytes()

    info = grid_hdf5_info(path)
    assert (info.trajectories, info.frames, info.points) == (3, 101, 32)
    assert info.dt == 1e-2 and info.uniform
    assert info.period == TWO_PI
    assert info.fields_axis and info.fields == 1

    data = read_grid_hdf5(path, trajectories=[2, 0])
    assert path.read_bytes() == before
    assert [t.metadata["index"] for t in data] == [2, 0]
    assert data.metadata["grid"] == {"shape": [32], "lengths": [TWO_PI]}
    times = data[0].times
    assert len(times) == 101 and times[0] == 0.0 and times[1] == 1e-2 and times[-1] == 1.0
    assert np.allclose(np.diff(times), 1e-2, rtol=1e-12, atol=0)
    for traj, i in zip(data, [2, 0], strict=True):
        for k in (0, 1, 57, 100):
            expected = grid_values(traj.states[k], u[i, k, :, 0], [TWO_PI])
            n = data.space.dof_dset.size
            assert np.array_equal(traj.states[k].dat.data_ro[:n], expected.astype(float))


def test_paper_layout_2d_with_and_without_y_coord(tmp_path):
    u = paper_array(n=2, frames=4, points=8, ny=6, seed=1)
    x = (np.arange(8) * 0.5).astype(np.float32)
    no_y = write_paper(tmp_path / "no_y.h5", u, x=x)
    info = grid_hdf5_info(no_y)
    assert info.grid == (8, 6) and info.lengths == (4.0, 3.0)  # y spacing = x spacing
    with_y = write_paper(tmp_path / "with_y.h5", u, x=x, y=np.arange(6, dtype=np.float32) * 0.25)
    data = read_grid_hdf5(with_y)
    assert data.metadata["grid"] == {"shape": [8, 6], "lengths": [4.0, 1.5]}
    n = data.space.dof_dset.size
    for i in range(2):
        for k in range(4):
            expected = grid_values(data[i].states[k], u[i, k, :, :, 0], [4.0, 1.5])
            assert np.array_equal(data[i].states[k].dat.data_ro[:n], expected)


def test_one_trajectory_is_read_without_reading_the_array(tmp_path, monkeypatch):
    u = paper_array(n=40, frames=101, points=256, seed=2)  # 4.1 MB of float32
    path = write_paper(tmp_path / "big.h5", u)
    array_bytes = u.nbytes
    one = u[0].nbytes
    with counting_reads(monkeypatch, path) as counter:
        info = grid_hdf5_info(path)
    assert info.trajectories == 40 and counter["opens"] == 1
    assert counter["bytes"] < 0.01 * array_bytes, counter  # layout only: a few kB
    with counting_reads(monkeypatch, path) as counter:
        data = read_grid_hdf5(path, trajectories=[17])
    assert counter["opens"] >= 1
    # One trajectory and the coordinates; reading the whole array would be 40 times as much.
    assert one <= counter["bytes"] < 2 * one + 100_000, (counter, one, array_bytes)
    n = data.space.dof_dset.size
    expected = grid_values(data[0].states[5], u[17, 5, :, 0], [TWO_PI])
    assert np.array_equal(data[0].states[5].dat.data_ro[:n], expected)


@pytest.mark.parametrize(
    "problem,message",
    [
        ("t", r"t.h5: t_coord: frames are not equally spaced: t\[3\] - t\[2\] = 0.015"),
        ("x", r"x.h5: x_coord: points are not equally spaced: x_coord\[5\] - x_coord\[4\]"),
        ("x0", r"x0.h5: x_coord starts at 0.5, not at 0"),
        ("fields", r"fields.h5: array 'u_sol_all' has 2 fields \(last axis\); femeso reads one"),
        ("nan", r"nan.h5: 'u_sol_all': trajectory 1, frame 3 \(t = 0.03\) has 1 NaN/Inf"),
        ("tlen", r"tlen.h5: t_coord has shape \(5,\) but the array has 6 frames"),
        ("xlen", r"xlen.h5: x_coord has 7 values but the array has 8 points"),
        ("rank", r"rank.h5: array 'u_sol_all' has shape \(2, 6\); expected"),
    ],
)
def test_bad_paper_files_are_rejected(tmp_path, problem, message):
    u = paper_array(n=2, frames=6, points=8)
    t = np.arange(6) * 1e-2
    x = np.arange(8) * 0.25
    if problem == "t":
        t[3] += 5e-3
    elif problem == "x":
        x[5] += 0.01
    elif problem == "x0":
        x = x + 0.5
    elif problem == "fields":
        u = np.concatenate([u, u], axis=-1)
    elif problem == "nan":
        u[1, 3, 4, 0] = np.nan
    elif problem == "tlen":
        t = t[:5]
    elif problem == "xlen":
        x = x[:7]
    elif problem == "rank":
        u = u[:, :, 0, 0]
    path = write_paper(tmp_path / f"{problem}.h5", u, t=t, x=x)
    before = path.read_bytes()
    with pytest.raises(ValueError, match=message) as err:
        read_grid_hdf5(path)
    assert "\n" not in str(err.value) and str(err.value).startswith(str(path))
    assert path.read_bytes() == before
    with pytest.raises(ValueError, match=message):
        read_data([path])


def test_bare_layouts_without_coordinates(tmp_path):
    u = paper_array(n=2, frames=3, points=8)
    path = tmp_path / "bare.h5"
    with h5py.File(path, "w") as h5:
        h5.create_dataset("u_sol_all", data=u)  # (2, 3, 8, 1): 1-D with its fields axis
        h5.create_dataset("v", data=u[..., 0])  # (2, 3, 8): the older layout
    info = grid_hdf5_info(path)
    assert info.grid == (8,) and info.fields_axis and info.times is None and info.lengths is None
    for name in ("u_sol_all", "v"):
        data = read_grid_hdf5(path, dataset=name, times=[0.0, 0.5, 1.0])
        assert data.metadata["grid"] == {"shape": [8], "lengths": [TWO_PI]}
        n = data.space.dof_dset.size
        expected = grid_values(data[1].states[2], u[1, 2, :, 0], [TWO_PI])
        assert np.array_equal(data[1].states[2].dat.data_ro[:n], expected)


def test_grid_arguments_must_agree_with_the_file(tmp_path):
    path = write_paper(tmp_path / "paper.h5", paper_array(n=2, frames=3, points=8))
    with pytest.raises(ValueError, match=r"paper.h5: the file carries its times \(t_coord\)"):
        read_grid_hdf5(path, times=[0.0, 1.0, 2.0])
    with pytest.raises(ValueError, match=r"paper.h5: lengths=1.0 disagree with the period"):
        read_grid_hdf5(path, lengths=1.0)
    with pytest.raises(ValueError, match=r"paper.h5: trajectory 2 does not exist \(2 traj"):
        read_grid_hdf5(path, trajectories=[2])
    assert len(read_grid_hdf5(path, lengths=TWO_PI, trajectories=[-1])) == 1


# ------------------------------------------------------------------------------------------------
# .npz with explicit coordinates
# ------------------------------------------------------------------------------------------------


def test_npz_unstructured_values_at_points(tmp_path):
    points, cells = grid_mesh_arrays(5)
    rng = np.random.default_rng(4)
    u = rng.standard_normal((2, 3, len(points)))
    t = np.array([0.0, 0.1, 0.2])
    path = tmp_path / "plate.npz"
    np.savez(path, u=u, t=t, x=points[:, :2], cells=cells)
    data = read_npz(path)
    assert len(data) == 2 and data.mesh.num_vertices() == 25
    assert np.array_equal(data[1].times, t)
    for i in range(2):
        for k in range(3):
            c, v = by_coordinates(data[i].states[k])
            p, e = sorted_points(points[:, :2], u[i, k])
            assert np.array_equal(c, p) and np.array_equal(v, e)
    dataset = read_data([path])
    assert dataset.metadata["dt"] == pytest.approx(0.1) and dataset.metadata["formats"] == ["npz"]


def test_npz_periodic_grid(tmp_path):
    u = np.random.default_rng(5).standard_normal((4, 16))  # (frames, points): one trajectory
    x = np.arange(16) * 0.125
    path = tmp_path / "ring.npz"
    np.savez(path, u=u, t=np.arange(4) * 0.5, x=x, period=2.0)
    data = read_npz(path)
    assert data.metadata["grid"] == {"shape": [16], "lengths": [2.0]}
    n = data.space.dof_dset.size
    for k in range(4):
        assert np.array_equal(
            data[0].states[k].dat.data_ro[:n], grid_values(data[0].states[k], u[k], [2.0])
        )


@pytest.mark.parametrize(
    "problem,message",
    [
        ("no_t", r"no_t.npz: no array 't' \(the frame times"),
        ("nan", r"nan.npz: 'u': trajectory 1, frame 2 \(t = 0.2\) has 1 NaN/Inf"),
        ("cells", r"cells.npz: unsupported cells: 5 vertices per cell"),
        ("period", r"period.npz: period 3.0 is not len\(x\) \* spacing = 2.0"),
        ("points", r"points.npz: 'u' has 24 points but x has 25"),
        ("field", r"field.npz: no value array 'c'"),
        ("times", r"times.npz: t: times are not strictly increasing"),
    ],
)
def test_bad_npz_is_rejected(tmp_path, problem, message):
    points, cells = grid_mesh_arrays(5)
    u = np.zeros((2, 3, 25))
    arrays = {"u": u, "t": np.array([0.0, 0.1, 0.2]), "x": points[:, :2], "cells": cells}
    fields = None
    if problem == "no_t":
        del arrays["t"]
    elif problem == "nan":
        u[1, 2, 7] = np.nan
    elif problem == "cells":
        arrays["cells"] = np.zeros((4, 5), dtype=int)
    elif problem == "period":
        arrays = {"u": np.zeros((3, 16)), "t": arrays["t"], "x": np.arange(16) * 0.125}
        arrays["period"] = 3.0
    elif problem == "points":
        arrays["u"] = u[:, :, :24]
    elif problem == "field":
        fields = ["c"]
    elif problem == "times":
        arrays["t"] = np.array([0.0, 0.2, 0.1])
    path = tmp_path / f"{problem}.npz"
    np.savez(path, **arrays)
    with pytest.raises(ValueError, match=message) as err:
        read_npz(path, fields=fields)
    assert "\n" not in str(err.value) and str(err.value).startswith(str(path))


# ------------------------------------------------------------------------------------------------
# several meshio files, one mesh
# ------------------------------------------------------------------------------------------------


def shuffled(points, cells, seed):
    """The same mesh with its points in another order (a solver writing another numbering)."""
    perm = np.random.default_rng(seed).permutation(len(points))
    new = np.empty_like(points)
    new[perm] = points
    return new, perm[cells]


def test_two_xdmf_files_of_one_mesh_make_one_dataset(tmp_path):
    points, cells = grid_mesh_arrays(6)
    rng = np.random.default_rng(7)
    base = rng.standard_normal(len(points))
    a, b = tmp_path / "run_a.xdmf", tmp_path / "run_b.xdmf"
    write_xdmf(a, points, cells, [0.0, 0.1, 0.2], lambda t: {"c": base + t})
    p2, c2 = shuffled(points, cells, seed=9)
    base2 = np.empty_like(base)
    base2[np.random.default_rng(9).permutation(len(points))] = 2 * base
    write_xdmf(b, p2, c2, [1.0, 1.1, 1.2], lambda t: {"c": base2 + t})

    data = read_data([a, b])
    assert len(data) == 2 and data[0].mesh is data[1].mesh
    assert data.metadata["dt"] == pytest.approx(0.1)
    assert data.metadata["fields"] == ["c"]
    for traj, pts, values, times in (
        (data[0], points, base, [0.0, 0.1, 0.2]),
        (data[1], p2, base2, [1.0, 1.1, 1.2]),
    ):
        assert np.allclose(traj.times, times)
        for t, state in zip(times, traj.states, strict=True):
            c, v = by_coordinates(state)
            p, e = sorted_points(pts[:, :2], values + t)
            assert np.array_equal(c, p) and np.array_equal(v, e)

    # mesh=: the second file onto the first file's mesh, by coordinates.
    traj = read_meshio_series(b, mesh=data.mesh)
    assert traj.mesh is data.mesh


def test_files_on_different_meshes_are_rejected_naming_both(tmp_path):
    points, cells = grid_mesh_arrays(6)
    a, b, c = tmp_path / "a.xdmf", tmp_path / "b.xdmf", tmp_path / "c.xdmf"
    f = lambda t: {"c": points[:, 0] + t}  # noqa: E731
    write_xdmf(a, points, cells, [0.0, 1.0], f)
    moved = points.copy()
    moved[3, 0] += 0.01
    write_xdmf(b, moved, cells, [0.0, 1.0], f)
    with pytest.raises(
        ValueError, match=r"b.xdmf: its mesh differs from the mesh of .*a.xdmf: no"
    ) as err:
        read_data([a, b])
    assert "\n" not in str(err.value)
    same = tmp_path / "same.xdmf"  # the same cells in another order: the same mesh
    write_xdmf(same, points, cells[::-1], [0.0, 1.0], f)
    assert len(read_data([a, same])) == 2
    a0, b0, c0 = cells[0]
    d0 = cells[25][2]  # the quad (a0, b0, c0, d0) cut along its other diagonal: another mesh
    flipped = cells.copy()
    flipped[0], flipped[25] = [a0, b0, d0], [b0, c0, d0]
    write_xdmf(c, points, flipped, [0.0, 1.0], f)
    with pytest.raises(
        ValueError, match=r"c.xdmf: its mesh differs from .*a.xdmf: the same points"
    ):
        read_data([a, c])
    mesh = read_meshio_series(a).mesh
    with pytest.raises(ValueError, match=r"b.xdmf: its mesh differs from the mesh 'femeso_a'"):
        read_meshio_series(b, mesh=mesh)


def test_bad_series_in_read_data(tmp_path):
    points, cells = grid_mesh_arrays(5)
    f = lambda t: {"c": points[:, 0] + t}  # noqa: E731
    a, b, c = tmp_path / "a.xdmf", tmp_path / "b.xdmf", tmp_path / "c.xdmf"
    write_xdmf(a, points, cells, [0.0, 0.1, 0.2], f)
    write_xdmf(b, points, cells, [0.0, 0.2, 0.4], f)
    write_xdmf(c, points, cells, [0.0, 0.1, 0.3], f)
    with pytest.raises(ValueError, match=r"b.xdmf: frame step 0.2 differs from the frame step 0.1"):
        read_data([a, b])
    with pytest.raises(
        ValueError, match=r"c.xdmf: frames are not equally spaced: t\[2\] - t\[1\] = 0.2"
    ):
        read_data([c])
    with pytest.raises(ValueError, match=r"a.xdmf: no point data 'u' at time index 0 \(t = 0.0\)"):
        read_data([a], fields=["u"])
    d = tmp_path / "d.xdmf"
    write_xdmf(d, points, cells, [0.0, 0.1], lambda t: {"u": points[:, 0]})
    with pytest.raises(ValueError, match=r"d.xdmf: no point data 'c' at time index 0"):
        read_data([a, d])
    with pytest.raises(FileNotFoundError, match=r"missing.xdmf: no such file"):
        read_data([a, tmp_path / "missing.xdmf"])
    heavy = tmp_path / "a.h5"  # the heavy data of a.xdmf
    with pytest.raises(ValueError, match=r"a.h5: HDF5 file of no known layout"):
        read_data([heavy])


def test_vtu_list_needs_dt_and_forms_one_trajectory(tmp_path):
    points, cells = grid_mesh_arrays(4)
    files = []
    for k in range(3):
        files.append(tmp_path / f"step_{k}.vtu")
        meshio.write(
            str(files[-1]),
            meshio.Mesh(points, [("triangle", cells)], point_data={"c": points[:, 1] * k}),
        )
    with pytest.raises(ValueError, match=r"step_0.vtu: .vtu files carry no times; pass dt="):
        read_data(files)
    data = read_data(files, dt=0.5)
    assert len(data) == 1 and np.array_equal(data[0].times, [0.0, 0.5, 1.0])
    c, v = by_coordinates(data[0].states[2])
    p, e = sorted_points(points[:, :2], points[:, 1] * 2)
    assert np.array_equal(c, p) and np.array_equal(v, e)


# ------------------------------------------------------------------------------------------------
# a user's Firedrake CheckpointFile
# ------------------------------------------------------------------------------------------------


def write_checkpoint(path, *, times=(0.0, 0.05, 0.1), with_time=True, degree=1, comm=None):
    """A solver's output: save_mesh, then save_function(u, idx=k) at every step."""
    comm = comm or fd.COMM_WORLD
    mesh = fd.UnitSquareMesh(4, 3, comm=comm, name="domain")
    V = fd.FunctionSpace(mesh, "CG", degree)
    x, y = fd.SpatialCoordinate(mesh)
    u = fd.Function(V, name="concentration")
    with fd.CheckpointFile(str(path), "w", comm=comm) as out:
        out.save_mesh(mesh)
        for k, t in enumerate(times):
            u.interpolate(x + 10 * y + 100 * t)
            info = {"time": t} if with_time else {}
            out.save_function(u, idx=k, timestepping_info=info)
    return mesh


def test_checkpoint_file_of_a_solver(tmp_path):
    path = tmp_path / "solver.h5"
    write_checkpoint(path)
    assert detect_format(path) == "checkpoint"
    data = read_data([path, path])
    assert len(data) == 2 and data[0].mesh is data[1].mesh
    assert np.allclose(data[0].times, [0.0, 0.05, 0.1]) and data.metadata["dt"] == pytest.approx(
        0.05
    )
    assert data.metadata["fields"] == ["concentration"]
    for traj in data:
        for t, state in zip(traj.times, traj.states, strict=True):
            c, v = by_coordinates(state)
            assert np.allclose(v, c[:, 0] + 10 * c[:, 1] + 100 * t, rtol=0, atol=1e-12)

    (info,) = describe(path)
    assert (info["format"], info["points"], info["cells"], info["frames"]) == (
        "checkpoint",
        20,
        24,
        3,
    )
    assert info["frame_step"] == pytest.approx(0.05) and info["problems"] == []
    assert info["value_ranges"]["concentration"] == [0.0, 21.0]
    bare = tmp_path / "bare.h5"
    write_checkpoint(bare, with_time=False)
    with pytest.raises(ValueError, match=r"bare.h5: no times saved .*pass dt="):
        read_checkpoint_series(bare)
    assert np.allclose(read_checkpoint_series(bare, dt=0.05).times, [0.0, 0.05, 0.1])
    with pytest.raises(
        ValueError, match=r"solver.h5: no function 'c' \(functions: \['concentration'\]\)"
    ):
        read_data([path], fields=["c"])


def test_checkpoint_p2_is_interpolated_to_p1_and_mixed_with_xdmf(tmp_path):
    path = tmp_path / "p2.h5"
    mesh = write_checkpoint(path, degree=2)
    p2 = read_checkpoint_series(path, degree=2)
    assert p2.space.ufl_element().degree() == 2 and "transfer" not in p2.metadata
    p1 = read_checkpoint_series(path)
    assert p1.metadata["transfer"]["max_relative_l2_loss"] < 1e-12  # linear data
    # An XDMF file of the same mesh (points from the checkpoint mesh, in another order) joins.
    coords = mesh.coordinates.dat.data_ro.copy()
    cells = mesh.coordinates.function_space().cell_node_map().values.copy()
    pts, cl = shuffled(np.c_[coords, np.zeros(len(coords))], cells, seed=3)
    xdmf = tmp_path / "same.xdmf"
    write_xdmf(xdmf, pts, cl, [0.0, 0.05, 0.1], lambda t: {"concentration": pts[:, 0] + t})
    data = read_data([path, xdmf])
    assert len(data) == 2 and data[1].mesh is data[0].mesh


# ------------------------------------------------------------------------------------------------
# femeso's own files next to users' files, and writing
# ------------------------------------------------------------------------------------------------


def test_femeso_files_join_users_files_on_the_same_grid(tmp_path):
    paper = write_paper(tmp_path / "paper.h5", paper_array(n=2, frames=5, points=16))
    first = read_grid_hdf5(paper, trajectories=[0])
    saved = save_dataset(tmp_path / "train.h5", first)
    assert detect_format(saved) == "femeso" and detect_format(paper) == "grid_hdf5"
    data = read_data([paper, saved])
    assert len(data) == 3 and data.metadata["grid"]["shape"] == [16]
    n = data.space.dof_dset.size
    assert np.array_equal(data[2].states[3].dat.data_ro[:n], data[0].states[3].dat.data_ro[:n])


# ------------------------------------------------------------------------------------------------
# describe: no Firedrake, no torch, fast
# ------------------------------------------------------------------------------------------------


def test_describe_tells_what_is_in_each_file(tmp_path):
    points, cells = grid_mesh_arrays(5)
    xdmf = tmp_path / "series.xdmf"
    write_xdmf(xdmf, points, cells, [0.0, 0.1, 0.3], lambda t: {"c": points[:, 0] + t})
    u = paper_array(n=5, frames=11, points=16)
    u[3, 2, 1, 0] = np.nan
    paper = write_paper(tmp_path / "paper.h5", u)
    npz = tmp_path / "plate.npz"
    np.savez(npz, u=np.ones((2, 3, 25)), t=[0.0, 0.5, 1.0], x=points[:, :2], cells=cells)
    msh = tmp_path / "tagged.vtu"
    lines = np.array([[0, 1], [1, 2]])
    meshio.write(
        str(msh),
        meshio.Mesh(
            points,
            [("line", lines), ("triangle", cells)],
            point_data={"c": points[:, 0]},
            cell_data={"gmsh:physical": [np.array([3, 3]), np.ones(len(cells), dtype=int)]},
        ),
    )
    missing = tmp_path / "missing.npz"
    infos = describe([xdmf, paper, npz, msh, missing])
    json.dumps(infos)  # JSON-serialisable
    x, p, z, m, gone = infos
    assert x["format"] == "xdmf" and x["points"] == 25 and x["cells"] == 32
    assert x["cell_type"] == "triangle" and x["frames"] == 3 and x["uniform_step"] is False
    assert any("not equally spaced" in s for s in x["problems"])
    assert x["value_ranges"]["c"] == [0.0, 1.3]
    assert p["format"] == "grid_hdf5" and p["trajectories"] == 5 and p["frames"] == 11
    assert p["frame_step"] == 1e-2 and p["uniform_step"] and p["period"] == [TWO_PI]
    assert any(
        "'u_sol_all' has NaN/Inf values (first at trajectory 3, frame 2)" in s
        for s in p["problems"]
    )
    assert z["format"] == "npz" and z["trajectories"] == 2 and z["problems"] == []
    assert m["boundary_tags"] == {"gmsh:physical": {"line": [3], "triangle": [1]}}
    assert gone["problems"] == ["no such file"]
    text = "\n".join(describe_lines(infos))
    assert "refused: field 'u_sol_all' has NaN/Inf values" in text
    assert "readable by femeso" in text

    hexes = tmp_path / "hex.vtu"
    meshio.write(
        str(hexes), meshio.Mesh(points, [("hexahedron", np.arange(8)[None])], point_data={})
    )
    (h,) = describe(hexes)
    assert h["problems"] == [
        "unsupported cell type 'hexahedron' (supported: ['line', 'quad', 'tetra', 'triangle'])",
        "no point data",
    ]
    (asked,) = describe(xdmf, fields=["u"])
    assert "no point data 'u' at time index 0 (t = 0.0); available: ['c']" in asked["problems"]

    # The bounded sample of a paper file: never the whole array.
    big = write_paper(tmp_path / "big.h5", paper_array(n=200, frames=101, points=256))
    info = describe(big)[0]
    assert info["value_ranges_from"].startswith("a sample of ")


def test_describe_imports_without_firedrake_or_torch(tmp_path):
    """``femeso.data.describe`` (behind ``femeso inspect``) reads files without the heavy stack.

    How fast that is, is measured by ``time femeso inspect`` (docs/cli.md), not asserted here.
    """
    u = paper_array(n=2, frames=3, points=8)
    paper = write_paper(tmp_path / "paper.h5", u)
    code = f"""
import sys
from femeso.data.describe import describe
info = describe([{str(paper)!r}])[0]
assert info["trajectories"] == 2, info
print([m for m in ("firedrake", "torch", "petsc4py", "ufl") if m in sys.modules])
"""
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "[]", out.stdout


# ------------------------------------------------------------------------------------------------
# parallel
# ------------------------------------------------------------------------------------------------


@pytest.mark.parallel(nprocs=2)
def test_parallel_read_data(tmp_path):
    comm = fd.COMM_WORLD
    root = shared_tmp(tmp_path)
    points, cells = grid_mesh_arrays(9)
    a, b = root / "a.xdmf", root / "b.xdmf"
    p2, c2 = shuffled(points, cells, seed=1)
    if comm.rank == 0:
        write_xdmf(a, points, cells, [0.0, 0.5], lambda t: {"c": points[:, 0] + t})
        write_xdmf(b, p2, c2, [0.0, 0.5], lambda t: {"c": 2 * p2[:, 1] + t})
        write_paper(root / "paper.h5", paper_array(n=2, frames=3, points=12))
    comm.barrier()
    data = read_data([a, b], comm=comm)
    assert all(comm.allgather(data.space.dof_dset.size < 81))
    for traj, pts, f in (
        (data[0], points, lambda q: q[:, 0]),
        (data[1], p2, lambda q: 2 * q[:, 1]),
    ):
        for t, state in zip([0.0, 0.5], traj.states, strict=True):
            c, v = by_coordinates(state)
            p, e = sorted_points(pts[:, :2], f(pts) + t)
            assert np.array_equal(c, p) and np.array_equal(v, e)
    grid = read_data([root / "paper.h5"], comm=comm)
    assert comm.allreduce(grid.space.dof_dset.size) == 12 and len(grid) == 2


@pytest.mark.parallel(nprocs=2)
def test_parallel_checkpoint_files_share_one_mesh(tmp_path):
    comm = fd.COMM_WORLD
    path = shared_tmp(tmp_path) / "solver.h5"
    write_checkpoint(path, comm=comm)  # written on 2 ranks
    data = read_data([path, path], comm=comm)  # the second mapped by gathered coordinates
    assert data[0].mesh is data[1].mesh and all(comm.allgather(data.space.dof_dset.size < 20))
    for traj in data:
        for t, state in zip(traj.times, traj.states, strict=True):
            c, v = by_coordinates(state)
            assert np.allclose(v, c[:, 0] + 10 * c[:, 1] + 100 * t, rtol=0, atol=1e-12)
