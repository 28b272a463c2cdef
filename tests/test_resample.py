"""Resampling data onto another mesh (``femeso.data.resample``): exact where it must be, the loss
measured and converging where it cannot be, and a job mesh outside the data refused.

The meshes are plain Firedrake meshes, not femeso's: unstructured-looking pairs made by two
different diagonals and sizes, so no vertex of one is guaranteed to lie on a vertex of the other.
"""

import firedrake as fd
import numpy as np
import pytest

from femeso.data.resample import resample_dataset, resample_trajectory
from femeso.data.trajectories import Dataset, TrajectoryData


def _trajectory(space, expressions, times=None):
    states = [fd.Function(space).interpolate(e) for e in expressions]
    times = np.arange(len(states), dtype=float) if times is None else times
    return TrajectoryData(space, times, states, {"source": "plain firedrake"})


def test_a_linear_field_is_moved_exactly_and_keeps_times_and_metadata():
    source = fd.FunctionSpace(fd.UnitSquareMesh(23, 19, diagonal="left"), "CG", 1)
    target = fd.FunctionSpace(fd.UnitSquareMesh(7, 11, diagonal="crossed"), "CG", 1)
    x = fd.SpatialCoordinate(source.mesh())
    traj = _trajectory(source, [1 + k * x[0] - 2 * x[1] for k in range(3)], np.array([0, 0.5, 1]))
    moved, loss = resample_trajectory(traj, target)
    assert loss < 1e-13  # P1 carries a linear field exactly, both ways
    y = fd.Function(fd.VectorFunctionSpace(target.mesh(), "CG", 1)).interpolate(
        fd.SpatialCoordinate(target.mesh())
    )
    points = y.dat.data_ro
    for k, state in enumerate(moved.states):
        assert np.allclose(state.dat.data_ro, 1 + k * points[:, 0] - 2 * points[:, 1], atol=1e-13)
    assert np.array_equal(moved.times, traj.times)
    assert moved.metadata["source"] == "plain firedrake"
    assert moved.metadata["resampled"]["max_relative_l2_loss"] == loss


def test_the_measured_loss_falls_at_second_order_with_the_target_mesh():
    source = fd.FunctionSpace(fd.UnitSquareMesh(96, 96, diagonal="left"), "CG", 1)
    x = fd.SpatialCoordinate(source.mesh())
    smooth = [fd.sin(3 * x[0] + k) * fd.cos(2 * x[1]) + 0.5 for k in range(4)]
    data = Dataset(source, [_trajectory(source, smooth)], {})
    losses = []
    for n in (6, 12, 24):
        target = fd.FunctionSpace(fd.UnitSquareMesh(n, n, diagonal="crossed"), "CG", 1)
        moved, report = resample_dataset(data, target)
        assert len(moved) == 1 and moved.space is target
        assert report.losses == [report.worst]
        assert moved.metadata["resampled"]["max_relative_l2_loss"] == report.worst
        losses.append(report.worst)
    rates = np.log2(np.array(losses[:-1]) / np.array(losses[1:]))
    assert np.all(rates > 1.7), (losses, rates)  # P1 interpolation: O(h^2)


def test_a_target_outside_the_data_is_refused_naming_both_meshes():
    source = fd.FunctionSpace(fd.UnitSquareMesh(8, 8, name="data_mesh"), "CG", 1)
    target = fd.FunctionSpace(fd.RectangleMesh(6, 6, 1.3, 1.0, name="job_mesh"), "CG", 1)
    traj = _trajectory(source, [fd.Constant(1.0)])
    with pytest.raises(ValueError, match="outside the domain") as error:
        resample_trajectory(traj, target, what="run_03.xdmf")
    message = str(error.value)
    assert "\n" not in message
    assert "run_03.xdmf" in message and "job_mesh" in message and "data_mesh" in message


def test_fields_that_are_not_one_scalar_and_other_dimensions_are_refused():
    mesh = fd.UnitSquareMesh(4, 4)
    vector = fd.VectorFunctionSpace(mesh, "CG", 1)
    scalar = fd.FunctionSpace(fd.UnitSquareMesh(3, 3), "CG", 1)
    traj = TrajectoryData(vector, np.array([0.0]), [fd.Function(vector)])
    with pytest.raises(ValueError, match="one scalar field"):
        resample_trajectory(traj, scalar)
    line = fd.FunctionSpace(fd.UnitIntervalMesh(5), "CG", 1)
    traj = _trajectory(scalar, [fd.Constant(1.0)])
    with pytest.raises(ValueError, match="dimensions differ"):
        resample_trajectory(traj, line)


@pytest.mark.parallel(nprocs=2)
def test_resampling_on_two_ranks_equals_the_serial_resampling():
    """Both meshes distributed over 2 ranks; the same meshes on one rank give the same loss."""
    results = {}
    for comm in (fd.COMM_WORLD, fd.COMM_SELF):
        source = fd.FunctionSpace(fd.UnitSquareMesh(30, 30, diagonal="left", comm=comm), "CG", 2)
        target = fd.FunctionSpace(fd.UnitSquareMesh(9, 13, diagonal="crossed", comm=comm), "CG", 1)
        x = fd.SpatialCoordinate(source.mesh())
        traj = _trajectory(source, [fd.exp(x[0]) * fd.sin(4 * x[1] + k) for k in range(3)])
        moved, loss = resample_trajectory(traj, target)
        y = fd.SpatialCoordinate(target.mesh())
        exact = [
            fd.Function(target).interpolate(fd.exp(y[0]) * fd.sin(4 * y[1] + k)) for k in range(3)
        ]
        # the moved values are the P2 field at the target's vertices: they differ from the exact
        # field's values there by the P2 error only
        errors = [fd.errornorm(e, s) for e, s in zip(exact, moved.states, strict=True)]
        results[comm.size] = (loss, errors)
    (loss2, errors2), (loss1, errors1) = results[2], results[1]
    assert fd.COMM_WORLD.size == 2
    assert loss2 == pytest.approx(loss1, rel=1e-10)
    assert np.allclose(errors2, errors1, rtol=1e-10)
    assert max(errors2) < 1e-4
