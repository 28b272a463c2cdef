"""Loading and generating meshes: gmsh ``.geo``/``.msh`` files and the geometries in ``meshes/``."""

from __future__ import annotations

import os
from pathlib import Path

import firedrake as fd
import numpy as np
from firedrake.petsc import PETSc
from mpi4py import MPI

from femeso._files import first_line, on_rank_zero, write_error
from femeso._log import logger
from femeso._runtime import cache_root

__all__ = [
    "available_meshes",
    "bounding_box",
    "check_gmsh_file",
    "count_cells",
    "generate_mesh",
    "load_mesh",
    "mesh_path",
]

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


def count_cells(mesh: fd.MeshGeometry) -> int:
    """Return the number of cells of the whole mesh, on any number of ranks.

    ``mesh.num_cells()`` is the calling rank's count, halo included: under ``mpiexec -n 2`` the
    3-D experiment's report printed 90 805 cells of 106 868.
    """
    return int(mesh.comm.allreduce(mesh.cell_set.size, op=MPI.SUM))


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
    # interruptible=False: else gmsh swaps Python's Ctrl-C handler for one that kills at once.
    gmsh.initialize(["gmsh", "-v", "0"], readConfigFiles=False, interruptible=False)
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
        dim = gmsh.model.getDimension()
        gmsh.model.mesh.generate(dim)
        if dim < 1 or not gmsh.model.mesh.getElements(dim=dim)[0]:
            raise ValueError("it gives no cells")
        gmsh.write(str(tmp))
        os.replace(tmp, msh_file)
    except Exception as exc:
        tmp.unlink(missing_ok=True)
        if isinstance(exc, OSError):
            raise write_error(msh_file, "the mesh", exc) from exc
        raise ValueError(f"{geo_file}: gmsh cannot mesh the geometry: {first_line(exc)}") from None
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise
    finally:
        gmsh.finalize()
    return msh_file


def check_gmsh_file(path: str | Path) -> None:
    """Check that a ``.msh`` file is a whole gmsh mesh before PETSc reads it.

    PETSc's reader answers a damaged file with a long traceback (or worse); this reads the
    header and the last line (a truncated file does not end with a ``$End...`` marker), then
    parses the file with gmsh's own reader and asks for its nodes and cells.

    Raises
    ------
    FileNotFoundError
        If there is no such file.
    ValueError
        One line naming the file and what is wrong with it.

    """
    path = Path(path)
    if not path.exists():
        raise FileNotFoundError(f"{path}: mesh file not found")
    if not path.is_file():
        raise ValueError(f"{path}: not a mesh file (not a regular file)")
    size = path.stat().st_size
    with open(path, "rb") as f:
        head = f.read(512)
        f.seek(max(0, size - 256))
        tail = f.read()
    lines = head.removeprefix(b"\xef\xbb\xbf").lstrip().splitlines()
    if not lines or lines[0].strip() != b"$MeshFormat":
        raise ValueError(f"{path}: not a gmsh mesh file (it does not start with $MeshFormat)")
    fields = lines[1].split() if len(lines) > 1 else []
    try:
        version, file_type, data_size = float(fields[0]), int(fields[1]), int(fields[2])
    except (IndexError, ValueError):
        raise ValueError(
            f"{path}: corrupt gmsh header (expected a line like '4.1 0 8' after $MeshFormat)"
        ) from None
    if not 2.0 <= version < 5.0 or file_type not in (0, 1) or data_size != 8:
        raise ValueError(
            f"{path}: unsupported gmsh format {fields[0].decode(errors='replace')} "
            f"(file type {file_type}, data size {data_size})"
        )
    last = tail.rstrip().rsplit(b"\n", 1)[-1].strip()
    if not last.startswith(b"$End"):
        raise ValueError(f"{path}: truncated mesh file (it does not end with a $End... marker)")
    problem = _gmsh_problem(path)
    if problem:
        raise ValueError(f"{path}: corrupt mesh file ({problem})")


def _gmsh_problem(path: Path) -> str | None:
    """Parse a ``.msh`` file with gmsh; return what is wrong with it, or ``None``."""
    import gmsh

    if gmsh.isInitialized():  # the caller's own gmsh session: leave it alone (PETSc checks)
        return None
    gmsh.initialize(["gmsh", "-v", "0"], readConfigFiles=False, interruptible=False)
    try:
        gmsh.open(str(path))
        dim = gmsh.model.getDimension()
        if dim < 1:
            return "no cells"
        if len(gmsh.model.mesh.getNodes()[0]) == 0:
            return "no nodes"
        if not gmsh.model.mesh.getElements(dim=dim)[0]:
            return f"no cells of dimension {dim}"
        return None
    except Exception as exc:  # gmsh reports every parse error as a bare Exception
        return f"gmsh: {first_line(exc)}"
    finally:
        gmsh.finalize()


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

    Raises
    ------
    FileNotFoundError
        If the file (or the reference geometry) does not exist.
    ValueError
        One line naming the file when it is not a readable gmsh mesh (truncated, corrupt, not a
        mesh) or the geometry cannot be meshed; checked before PETSc reads it
        (:func:`check_gmsh_file`).

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

        def mesh_geometry() -> None:
            if stale:
                logger.info("meshing %s (refinement %d) -> %s", path, refinement, msh)
                generate_mesh(path, msh, refinement=refinement)

        on_rank_zero(comm, mesh_geometry)
        path = msh
    # Check on rank 0 (which reads the file for PETSc) and tell every rank the outcome.
    on_rank_zero(comm, lambda: check_gmsh_file(path))
    try:
        return fd.Mesh(str(path), comm=comm, name=name or path.stem)
    except PETSc.Error as exc:
        raise ValueError(f"{path}: PETSc cannot read the mesh ({_petsc_reason(exc)})") from None


def _petsc_reason(exc: Exception) -> str:
    """Return the most specific line of a PETSc error (its last message, without the rank)."""
    lines = [line.strip() for line in str(exc).splitlines() if line.strip()]
    messages = [line.split("]", 1)[-1].strip() for line in lines if line.startswith("[")]
    return (messages or lines or [type(exc).__name__])[-1]
