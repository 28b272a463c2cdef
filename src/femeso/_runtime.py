"""Run-time settings the stack needs, applied before Firedrake or PyTorch is imported.

Users should not have to export anything in their shell: importing :mod:`femeso` sets the
defaults below unless the variable is already set.
"""

from __future__ import annotations

import importlib
import os
from collections.abc import Callable
from pathlib import Path


def cache_root() -> Path:
    """Return femeso's per-user cache directory (``$FEMESO_CACHE_DIR`` or ``~/.cache/femeso``).

    ``XDG_CACHE_HOME`` is deliberately not consulted: Firedrake sets it on import when it is
    unset, so the answer would depend on whether Firedrake was imported first.
    """
    return Path(os.environ.get("FEMESO_CACHE_DIR", Path.home() / ".cache" / "femeso"))


def runtime_environment() -> dict[str, str]:
    """Return the environment variables femeso's entry points set, with their default values.

    Returns
    -------
    dict
        ``OMP_NUM_THREADS=1`` (threads fight MPI ranks on small machines), Open MPI's
        run-as-root permission when running as root, and the Firedrake/PyOP2/TSFC kernel cache
        directories under :func:`cache_root` (outside any clone, so that tests and CI reuse them).

    """
    kernels = cache_root() / "kernels"
    env = {
        "OMP_NUM_THREADS": "1",
        "FIREDRAKE_CACHE_DIR": str(kernels / "firedrake"),
        "PYOP2_CACHE_DIR": str(kernels / "pyop2"),
        "FIREDRAKE_TSFC_KERNEL_CACHE_DIR": str(kernels / "tsfc"),
    }
    if hasattr(os, "geteuid") and os.geteuid() == 0:
        env["OMPI_ALLOW_RUN_AS_ROOT"] = "1"
        env["OMPI_ALLOW_RUN_AS_ROOT_CONFIRM"] = "1"
    return env


def mpiexec_environment() -> dict[str, str]:
    """Return the environment for a child process started by ``mpiexec`` (tests, benchmarks).

    Returns
    -------
    dict
        ``os.environ`` with :func:`runtime_environment`'s defaults where unset, Open MPI allowed
        to place more ranks than cores (``OMPI_MCA_rmaps_base_oversubscribe``), and without
        ``PETSC_OPTIONS`` (the parent's options, e.g. the test-suite's, are not the child's).

    """
    env = {**runtime_environment(), "OMPI_MCA_rmaps_base_oversubscribe": "1", **os.environ}
    env.pop("PETSC_OPTIONS", None)
    return env


def configure_environment() -> None:
    """Apply :func:`runtime_environment` to ``os.environ`` without overriding user settings."""
    for name, value in runtime_environment().items():
        os.environ.setdefault(name, value)


def keep_command_line_from_petsc() -> None:
    """Initialise PETSc without the command line when running the ``femeso`` program.

    The program is ``femeso`` or ``python -m femeso.cli``.

    PETSc reads ``sys.argv`` on initialisation; the ``femeso`` command's own arguments are not
    PETSc options (``-o``, ``-q`` ...): PETSc would report them as unused options, or take one
    that happens to be a PETSc option name as its own. PETSc options for the command go in
    ``PETSC_OPTIONS``. Scripts that import femeso keep PETSc's usual command-line options.

    Firedrake initialises PETSc when it is imported (``petsctools.init(sys.argv)``) and warns
    that "PETSc has already been initialised" when someone did it first -- which is what calling
    ``petsc4py.init`` here used to do on every command. Instead Firedrake itself is imported
    here with the command line hidden, so that PETSc is initialised once, by Firedrake, with the
    program name only.
    """
    import sys
    from pathlib import Path

    program = Path(sys.argv[0])
    command = program.name == "femeso" or program.parts[-2:] == ("femeso", "cli.py")
    if not command or "firedrake" in sys.modules:  # ``femeso`` or ``python -m femeso.cli``
        return
    argv = sys.argv
    sys.argv = argv[:1]
    try:
        import firedrake  # noqa: F401  (initialises PETSc)
    finally:
        sys.argv = argv


#: The PETSc object that holds the inner ``COMM_WORLD`` (see hold_petsc_world_communicator).
_WORLD_ANCHOR: list[object] = []


def hold_petsc_world_communicator() -> None:
    """Keep PETSc's inner ``COMM_WORLD`` communicator alive, on every rank, until ``PetscFinalize``.

    PETSc objects on ``COMM_WORLD`` share one inner communicator, freed when its last object is
    destroyed. Python frees objects at moments that differ between ranks, so the inner
    communicator could be freed on one rank and not on another; the next collective PETSc call
    then duplicates ``COMM_WORLD`` on the first rank (``MPI_Comm_dup``) while the other talks on
    the old inner communicator (``MPI_Allreduce``), and both wait forever. That was the exit hang of
    ``mpiexec -n 2 femeso generate`` (issue 16; both ranks in petsc4py's garbage clean-up at
    exit). A zero-length vector created here, collectively, holds the inner communicator for the
    life of the process on every rank. Called by :func:`start_firedrake`; idempotent.
    """
    if _WORLD_ANCHOR:
        return
    from petsc4py import PETSc

    _WORLD_ANCHOR.append(PETSc.Vec().createMPI((0, PETSc.DECIDE), comm=PETSc.COMM_WORLD))


def start_firedrake() -> None:
    """Import Firedrake (initialising PETSc) the way femeso needs it; idempotent.

    Called by the ``femeso`` command before any command that computes, by the first use of a
    name of the :mod:`femeso` package, and by the test-suite: the command line is kept from
    PETSc (:func:`keep_command_line_from_petsc`), PETSc's ``COMM_WORLD`` is held on every
    rank (:func:`hold_petsc_world_communicator`) and meshes are partitioned the same way in
    every run (:func:`partition_deterministically`). ``femeso config`` and ``femeso inspect`` never
    call it, and answer without importing Firedrake or PyTorch.
    """
    keep_command_line_from_petsc()
    import firedrake  # noqa: F401

    hold_petsc_world_communicator()
    partition_deterministically()


def partition_deterministically() -> None:
    """Make PETSc split meshes over ranks the same way in every run, unless the user chose.

    PT-Scotch, PETSc's default partitioner here, gave another partition of the same mesh on
    every run (3 runs of the plate with holes on 2 ranks, 3 partitions), so results that depend
    on the partition (solver iteration counts, the last bits of a parallel sum) changed between
    runs. PETSc's ``simple`` partitioner splits the cells by number: deterministic, fine for
    the mesh sizes femeso trains on, less balanced in communication than PT-Scotch on large
    meshes. ``PETSC_OPTIONS=-petscpartitioner_type ptscotch`` (or any other) takes precedence.
    """
    from petsc4py import PETSc

    options = PETSc.Options()
    if not options.hasName("petscpartitioner_type"):
        options["petscpartitioner_type"] = "simple"


def lazy_exports(
    package: str, exports: dict[str, str]
) -> tuple[Callable[[str], object], Callable[[], list[str]]]:
    """Return a package's ``__getattr__`` and ``__dir__`` that import its public names on use.

    Parameters
    ----------
    package
        The package's ``__name__`` (for the error message).
    exports
        Public name -> the module that defines it.

    Importing the package stays cheap (no Firedrake, no PyTorch); the first use of a public name
    starts Firedrake (:func:`start_firedrake`) and imports the defining module.

    """

    def __getattr__(name: str) -> object:
        if name not in exports:
            raise AttributeError(f"module {package!r} has no attribute {name!r}")
        start_firedrake()
        value = getattr(importlib.import_module(exports[name]), name)
        importlib.import_module(package).__dict__[name] = value
        return value

    def __dir__() -> list[str]:
        return sorted(set(importlib.import_module(package).__dict__) | set(exports))

    return __getattr__, __dir__
