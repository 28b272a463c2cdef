"""Trajectory data: containers, femeso's HDF5 format, users' formats and VTK export.

See :mod:`femeso.data.trajectories` and :mod:`femeso.data.io`.
"""

from femeso.data.io import (
    FORMAT_VERSION,
    export_vtk,
    from_grid_arrays,
    load_dataset,
    read_meshio_series,
    save_dataset,
    to_grid_arrays,
)
from femeso.data.trajectories import Dataset, DatasetSplit, TrajectoryData

__all__ = [
    "FORMAT_VERSION",
    "Dataset",
    "DatasetSplit",
    "TrajectoryData",
    "export_vtk",
    "from_grid_arrays",
    "load_dataset",
    "read_meshio_series",
    "save_dataset",
    "to_grid_arrays",
]
