"""Data move between meshes and rank counts by DoF position, never by storage order."""

import firedrake as fd
import numpy as np
import pytest

import femeso
from femeso.data import Dataset, TrajectoryData, load_dataset, save_dataset
from femeso.data.mapping import DofMap, dof_coordinates, map_dataset


def field(V):
    """A smooth field with no symmetry of the reference meshes (a wrong DoF shows)."""
    x = fd.SpatialCoordinate(V.mesh())
    if V.mesh().geometric_dimension == 1:
        return fd.Function(V).interpolate(fd.sin(x[0]) + 0.3 * fd.cos(3 * x[0]))
    return fd.Function(V).interpolate(fd.sin(3 * x[0]) + x[1] ** 2 + 0.5 * x[0] * x[1])


def one_state_dataset(V):
    return Dataset(V, [TrajectoryData(V, [0.0, 1.0], [field(V), field(V)])])


def assert_values_at_points(data, V):
    """Every state of ``data`` equals the field evaluated at ``V``'s own DoF positions."""
    expected = field(V).dat.data_ro_with_halos
    for traj in data:
        for state in traj.states:
            assert state.function_space() == V
            np.testing.assert_allclose(state.dat.data_ro_with_halos, expected, rtol=0, atol=1e-13)


@pytest.mark.parametrize("name,degree", [("plate_with_holes", 1), ("l_shape", 2)])
def test_saved_data_land_on_a_freshly_loaded_mesh_by_position(tmp_path, name, degree):
    V = fd.FunctionSpace(femeso.load_mesh(name), "CG", degree)
    path = save_dataset(tmp_path / "data.h5", one_state_dataset(V))
    loaded = load_dataset(path)
    fresh = fd.FunctionSpace(femeso.load_mesh(name), "CG", degree)
    assert_values_at_points(map_dataset(loaded, fresh), fresh)


def test_periodic_interval_data_map_across_the_seam():
    source = fd.FunctionSpace(fd.PeriodicIntervalMesh(64, 2 * np.pi), "CG", 1)
    target = fd.FunctionSpace(fd.PeriodicIntervalMesh(64, 2 * np.pi), "CG", 1)
    positions, periods = dof_coordinates(target)
    assert periods[0] == pytest.approx(2 * np.pi)
    assert positions.min() >= 0 and positions.max() < 2 * np.pi
    assert_values_at_points(map_dataset(one_state_dataset(source), target), target)


def test_periodic_square_finds_both_periods():
    mesh = fd.PeriodicRectangleMesh(8, 6, 2.0, 1.5)
    _, periods = dof_coordinates(fd.FunctionSpace(mesh, "CG", 1))
    np.testing.assert_allclose(periods, [2.0, 1.5])
    half = fd.PeriodicRectangleMesh(8, 6, 2.0, 1.5, direction="x")
    _, periods = dof_coordinates(fd.FunctionSpace(half, "CG", 1))
    np.testing.assert_allclose(periods, [2.0, 0.0])


@pytest.mark.parametrize(
    "other,match",
    [
        (lambda: fd.FunctionSpace(femeso.load_mesh("l_shape"), "CG", 1), "another"),
        (lambda: fd.FunctionSpace(femeso.load_mesh("plate_with_holes"), "CG", 2), "element|size"),
    ],
)
def test_mismatched_data_are_refused_naming_both_sides(other, match):
    V = fd.FunctionSpace(femeso.load_mesh("plate_with_holes"), "CG", 1)
    with pytest.raises(ValueError, match=match) as info:
        map_dataset(one_state_dataset(V), other(), label="train.h5")
    message = str(info.value)
    assert message.startswith("train.h5: ") and "\n" not in message
    assert "source" in message and "target" in message


def test_same_size_on_another_geometry_is_refused():
    """Equal DoF counts are not enough: the positions must coincide."""
    a = fd.FunctionSpace(fd.UnitSquareMesh(6, 6), "CG", 1)
    b = fd.FunctionSpace(fd.RectangleMesh(6, 6, 1.0, 2.0), "CG", 1)
    assert a.dim() == b.dim()
    with pytest.raises(ValueError, match="another geometry"):
        DofMap.between(a, b)


@pytest.mark.parallel(nprocs=2)
def test_data_saved_serially_load_on_two_ranks_by_position(tmp_path_factory):
    comm = fd.COMM_WORLD
    assert comm.size == 2
    directory = comm.bcast(str(tmp_path_factory.mktemp("serial")) if comm.rank == 0 else None)
    path = f"{directory}/serial.h5"
    if comm.rank == 0:  # written by one process alone
        V = fd.FunctionSpace(femeso.load_mesh("plate_with_holes", comm=fd.COMM_SELF), "CG", 1)
        save_dataset(path, one_state_dataset(V))
    comm.barrier()
    loaded = load_dataset(path, comm=comm)
    fresh = fd.FunctionSpace(femeso.load_mesh("plate_with_holes", comm=comm), "CG", 1)
    assert_values_at_points(map_dataset(loaded, fresh), fresh)
