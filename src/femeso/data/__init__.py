"""Trajectory data: containers, femeso's HDF5 format, users' formats and VTK export.

See :mod:`femeso.data.trajectories`, :mod:`femeso.data.io`, :mod:`femeso.data.generators`
(reference PDE data) and :mod:`femeso.data.chains` (microscopic chains, coarse-grained).
"""

from femeso.data.chains import (
    BondBreakError,
    coarse_grain_to_mesh,
    dissipative_chain,
    fene_chain,
    fput_chain,
    generate_chain_dataset,
)
from femeso.data.generators import (
    allen_cahn_model,
    cahn_hilliard_model,
    generate_dataset,
    graded_mobility,
    kdv_model,
    mobility_coefficient,
    paper_allen_cahn,
    paper_sine_initial_condition,
)
from femeso.data.io import (
    FORMAT_VERSION,
    export_vtk,
    from_grid_arrays,
    load_dataset,
    read_grid_hdf5,
    read_meshio_series,
    save_dataset,
    to_grid_arrays,
)
from femeso.data.trajectories import Dataset, DatasetSplit, TrajectoryData

__all__ = [
    "FORMAT_VERSION",
    "BondBreakError",
    "Dataset",
    "DatasetSplit",
    "TrajectoryData",
    "allen_cahn_model",
    "cahn_hilliard_model",
    "coarse_grain_to_mesh",
    "dissipative_chain",
    "export_vtk",
    "fene_chain",
    "fput_chain",
    "generate_chain_dataset",
    "generate_dataset",
    "graded_mobility",
    "kdv_model",
    "mobility_coefficient",
    "paper_allen_cahn",
    "paper_sine_initial_condition",
    "from_grid_arrays",
    "load_dataset",
    "read_grid_hdf5",
    "read_meshio_series",
    "save_dataset",
    "to_grid_arrays",
]
