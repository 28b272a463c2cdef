"""Trajectory data: containers, femeso's HDF5 format, users' formats and VTK export.

See :mod:`femeso.data.trajectories`, :mod:`femeso.data.io`, :mod:`femeso.data.generators`
(reference PDE data) and :mod:`femeso.data.chains` (microscopic chains, coarse-grained).

The names load on first use (``femeso.data.describe`` answers without Firedrake).
"""

# ruff: noqa: F401  -- the TYPE_CHECKING imports are for type checkers only
from typing import TYPE_CHECKING

from femeso._runtime import lazy_exports

_EXPORTS = {
    "BondBreakError": "femeso.data.chains",
    "coarse_grain_to_mesh": "femeso.data.chains",
    "dissipative_chain": "femeso.data.chains",
    "fene_chain": "femeso.data.chains",
    "fput_chain": "femeso.data.chains",
    "generate_chain_dataset": "femeso.data.chains",
    "allen_cahn_model": "femeso.data.generators",
    "cahn_hilliard_model": "femeso.data.generators",
    "generate_dataset": "femeso.data.generators",
    "graded_mobility": "femeso.data.generators",
    "kdv_model": "femeso.data.generators",
    "mobility_coefficient": "femeso.data.generators",
    "paper_allen_cahn": "femeso.data.generators",
    "paper_sine_initial_condition": "femeso.data.generators",
    "FORMAT_VERSION": "femeso.data.io",
    "export_vtk": "femeso.data.io",
    "from_grid_arrays": "femeso.data.io",
    "load_dataset": "femeso.data.io",
    "read_grid_hdf5": "femeso.data.io",
    "read_meshio_series": "femeso.data.io",
    "save_dataset": "femeso.data.io",
    "to_grid_arrays": "femeso.data.io",
    "Dataset": "femeso.data.trajectories",
    "DatasetSplit": "femeso.data.trajectories",
    "TrajectoryData": "femeso.data.trajectories",
}

__all__ = sorted([*_EXPORTS])
__getattr__, __dir__ = lazy_exports(__name__, _EXPORTS)

if TYPE_CHECKING:  # what type checkers and IDEs see; at run time the names load on use
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
