"""Loading and generating meshes: gmsh ``.geo``/``.msh`` files and the geometries in ``meshes/``."""

from __future__ import annotations

import os
from pathlib import Path

import firedrake as fd
import numpy as np
from mpi4py import MPI

from femeso._log import logger
from femeso._runtime import cache_root

__all__ = ["available_meshes", "bounding_box", "generate_mesh", "load_mesh", "mesh_path"]

_SUFFIXES = (".msh", ".geo")


def mesh_directory() -> Path:
    """Return the directory of the reference geometries (``$FEMESO_MESH_DIR`` or ``meshes/``)."""
    default = Path(__file__).resolve().parents[2] / "meshes"
    return Path(os.environ.get("FEMESO_MESH_DIR", default))


def bounding_box(mesh: fd.MeshGeometry) -> tuple[np.ndarray, np.ndarray]:
    """Return the lower and upper corners ``(dim,)`` of the mesh's coordinates, on every rank.

    The extremes of the coordinate field's nodal values over all ranks: independent of the
    number of processes. On a periodic mesh (discontinuous coordinates) it spans the whole box.
    """
    dim = mesh.geometric_dimension
    coords = mesh.coordinates.dat.data_ro.reshape(-1, dim)
    lo, hi = np.empty(dim), np.empty(dim)
    comm = mesh.comm
    comm.Allreduce(coords.min(axis=0) if len(coords) else np.full(dim, np.inf), lo, op=MPI.MIN)
    comm.Allreduce(coords.max(axis=0) if len(coords) else np.full(dim, -np.inf), hi, op=MPI.MAX)
    return lo, hi


def available_meshes() -> list[str]:
    """Return the names of the reference geometries shipped in :func:`mesh_directory`."""
    return sorted(p.stem for p in mesh_directory().glob("*.geo"))


def mesh_path(name: str) -> Path:
    """Return the ``.msh`` file of a reference geometry.

    Parameters
    ----------
    name
        A geometry name such as ``"plate_with_holes"`` (see :func:`available_meshes`).

    Raises
    ------
    FileNotFoundError
        If no such geometry is shipped.

    """
    path = mesh_directory() / f"{name}.msh"
    if not path.exists():
        raise FileNotFoundError(
            f"no reference mesh {name!r} in {mesh_directory()}; available: {available_meshes()}"
        )
    return path


def generate_mesh(
    geo_file: str | Path, msh_file: str | Path, *, size: float | None = None, refinement: int = 0
) -> Path:
    """Mesh a gmsh ``.geo`` geometry into a ``.msh`` file (format 4.1) with the gmsh Python API.

    Parameters
    ----------
    geo_file
        The geometry. A ``DefineNumber`` named ``"Parameters/mesh size"`` sets the mesh size.
    msh_file
        Where to write the mesh (written to a temporary name, then renamed).
    size
        Mesh size; defaults to the geometry's own.
    refinement
        Halve the mesh size this many times.

    Returns
    -------
    Path
        ``msh_file``.

    """
    import gmsh

    geo_file, msh_file = Path(geo_file), Path(msh_file)
    if not geo_file.exists():
        raise FileNotFoundError(f"{geo_file}: geometry file not found")
    if refinement < 0:
        raise ValueError(f"refinement must be >= 0, got {refinement}")
    msh_file.parent.mkdir(parents=True, exist_ok=True)
    tmp = msh_file.with_name(f".{msh_file.name}.{os.getpid()}.tmp.msh")
    gmsh.initialize(["gmsh", "-v", "0"], readConfigFiles=False)
    try:
        gmsh.open(str(geo_file))
        h = size
        if h is None:
            values = gmsh.onelab.getNumber("Parameters/mesh size")
            h = values[0] if values else None
        if h is not None:
            h = h / 2**refinement
            gmsh.onelab.setNumber("Parameters/mesh size", [h])
            gmsh.option.setNumber("Mesh.CharacteristicLengthMax", h)
            gmsh.model.mesh.setSize(gmsh.model.getEntities(0), h)
        gmsh.option.setNumber("Mesh.MshFileVersion", 4.1)
        gmsh.option.setNumber("General.NumThreads", 1)
        gmsh.option.setNumber("Mesh.RandomSeed", 1)
        gmsh.model.mesh.generate(gmsh.model.getDimension())
        gmsh.write(str(tmp))
    finally:
        gmsh.finalize()
    os.replace(tmp, msh_file)
    return msh_file


def load_mesh(
    source: str | Path,
    *,
    refinement: int = 0,
    comm: MPI.Comm = MPI.COMM_WORLD,
    name: str | None = None,
) -> fd.MeshGeometry:
    """Load a mesh from a gmsh file or by the name of a reference geometry.

    Parameters
    ----------
    source
        A ``.msh`` file, a ``.geo`` file (meshed on the fly and cached), or the name of a
        reference geometry in ``meshes/`` (e.g. ``"plate_with_holes"``).
    refinement
        For geometries (``.geo`` or names): halve the mesh size this many times, re-meshing the
        true geometry so that curved boundaries stay curved. Not allowed for ``.msh`` files.
    comm
        The communicator to distribute the mesh over.
    name
        The Firedrake mesh name (defaults to the file stem).

    Returns
    -------
    firedrake.MeshGeometry

    """
    path = Path(source)
    if path.suffix not in _SUFFIXES:
        geo = mesh_directory() / f"{source}.geo"
        if not geo.exists():
            raise FileNotFoundError(
                f"{source!r} is neither a .msh/.geo file nor a reference geometry "
                f"(available: {available_meshes()})"
            )
        path = mesh_directory() / f"{source}.msh" if refinement == 0 else geo
        if not path.exists():
            path = geo
    if not path.exists():
        raise FileNotFoundError(f"{path}: mesh file not found")
    if path.suffix == ".msh" and refinement:
        raise ValueError(f"{path}: refinement needs the .geo geometry, not a .msh file")
    if path.suffix == ".geo":
        msh = cache_root() / "meshes" / f"{path.stem}-r{refinement}.msh"
        stale = not msh.exists() or msh.stat().st_mtime < path.stat().st_mtime
        if comm.rank == 0 and stale:
            logger.info("meshing %s (refinement %d) -> %s", path, refinement, msh)
            generate_mesh(path, msh, refinement=refinement)
        comm.barrier()
        path = msh
    return fd.Mesh(str(path), comm=comm, name=name or path.stem)
