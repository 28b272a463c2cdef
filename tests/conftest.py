"""Shared fixtures. Importing femeso first applies its run-time environment (threads, caches)."""

import os

# pytest's own command-line flags reach PETSc's option database too: do not list them as unused.
os.environ.setdefault("PETSC_OPTIONS", "-options_left no")

import irksome  # noqa: E402, F401  (Irksome must be imported before any UFL algorithm runs)
import pytest  # noqa: E402
from firedrake.adjoint import get_working_tape, pause_annotation  # noqa: E402

import femeso  # noqa: E402, F401  (sets OMP_NUM_THREADS, kernel caches, Open MPI root permission)


@pytest.fixture(autouse=True)
def _clean_tape():
    """Give every test an empty pyadjoint tape and no annotation left switched on."""
    tape = get_working_tape()
    tape.clear_tape()
    yield
    tape.clear_tape()
    pause_annotation()
