# femeso: `make demo`, `make test`, `make lint`. Each sets the environment up on first use.
SHELL := /bin/bash
SETUP := scripts/setup-env.sh
VENV = $(shell $(SETUP) --print-venv)
PY = $(VENV)/bin/python
NPROCS ?= 2
PYTEST_ARGS ?=

# Run-time settings (femeso's own entry points set the same ones; see src/femeso/_runtime.py).
export OMP_NUM_THREADS = 1
export OMPI_ALLOW_RUN_AS_ROOT = 1
export OMPI_ALLOW_RUN_AS_ROOT_CONFIRM = 1
export OMPI_MCA_rmaps_base_oversubscribe = 1

.PHONY: setup demo test test-serial test-parallel lint format bench clean-env

setup:
	@$(SETUP)

demo: setup
	$(VENV)/bin/femeso demo --overwrite

test: setup
	$(PY) -m pytest -m "not parallel and not slow" $(PYTEST_ARGS)
	mpiexec -n $(NPROCS) $(PY) -m pytest -m "parallel[$(NPROCS)] and not slow" $(PYTEST_ARGS)

test-serial: setup
	$(PY) -m pytest -m "not parallel and not slow" $(PYTEST_ARGS)

test-parallel: setup
	mpiexec -n $(NPROCS) $(PY) -m pytest -m "parallel[$(NPROCS)] and not slow" $(PYTEST_ARGS)

lint: setup
	$(VENV)/bin/ruff check src tests bench
	$(VENV)/bin/ruff format --check src tests bench

format: setup
	$(VENV)/bin/ruff format src tests bench
	$(VENV)/bin/ruff check --fix src tests bench

clean-env:
	rm -rf "$(VENV)"
