"""Shared fixtures. The run-time environment (threads, caches) is applied first, as in the CLI."""
# ruff: noqa: I001, E402  -- the import order below is deliberate

import importlib
import os

# pytest's own command-line flags reach PETSc's option database too: do not list them as unused.
os.environ.setdefault("PETSC_OPTIONS", "-options_left no")

from femeso._runtime import configure_environment, start_firedrake

configure_environment()  # first: OMP_NUM_THREADS, kernel caches, Open MPI's root permission

start_firedrake()  # Firedrake initialises PETSc; PETSc's COMM_WORLD is held on every rank
import pytest
from firedrake.adjoint import get_working_tape, pause_annotation

# Irksome after Firedrake (which initialises PETSc) and before any UFL algorithm runs.
importlib.import_module("irksome")


@pytest.fixture(autouse=True)
def _clean_tape():
    """Give every test an empty pyadjoint tape and no annotation left switched on."""
    tape = get_working_tape()
    tape.clear_tape()
    yield
    tape.clear_tape()
    pause_annotation()
