"""Memory and time of importing a paper-size grid file through ``femeso generate`` (streamed).

Writes a >= 1 GB file in the paper's 2-D layout (``u_sol_all`` float32 (N, 101, 128, 128, 1),
``t_coord``, ``x_coord``; plain h5py, :func:`read_cost.write_paper_file`) and a small one of the
same layout, then runs, each in a fresh process:

* ``femeso generate`` on a job with ``data.source = "files"`` on the small file (the reference:
  interpreter, Firedrake, PyTorch, the mesh) and on the large file: peak resident memory
  (``ru_maxrss`` of the child) and seconds; the import streams one trajectory at a time into the
  split files;
* ``femeso.data.read_data`` of the small and of the large file into one dataset in memory
  (what the import did before it streamed), unless ``--skip-in-memory``;
* ``femeso train`` on the imported large file (``--train-iterations`` Adam iterations, no warm
  start), with the data loaded whole (``data.in_memory_mib`` large) and read from disk when
  used (``data.in_memory_mib = 0``: one trajectory in memory at a time), unless
  ``--train-iterations 0``.

The figure to read is the import's memory growth over the reference against the data's size as
float64 states (the size a whole-file import would hold).

    python bench/import_cost.py                    # 160 trajectories: 1.06 GB
    python bench/import_cost.py --trajectories 40  # a smaller file
"""

from __future__ import annotations

import argparse
import os
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).parent))
from read_cost import FRAMES, N_GRID, write_paper_file  # noqa: E402

JOB = """
[job]
name = "import_cost"
output = "{output}"
seed = 0

[data]
source = "files"
paths = ["{data}"]

in_memory_mib = {budget}

[model]
dynamics = "local"
width = 8

[training]
warm_start = false
iterations = {iterations}
refine_iterations = 0
batch_size = 4
validate_every = {iterations}
validation_windows = 4
checkpoint_every = 1000

[baseline]
enabled = false
"""

#: Runs a module as ``python -m`` would and prints its own peak RSS (kB) at exit.
MEASURED = """
import atexit, resource, runpy, sys
atexit.register(
    lambda: print("MAXRSS", resource.getrusage(resource.RUSAGE_SELF).ru_maxrss, file=sys.stderr)
)
sys.argv = sys.argv[1:]
runpy.run_module(sys.argv[0], run_name="__main__")
"""

IN_MEMORY = """
import sys
from femeso.data.io import read_data
data = read_data(sys.argv[1])
print(len(data), sum(len(t) for t in data))
"""


def child_peak(module: str, args: list[str], cwd: Path) -> tuple[float, float]:
    """Run ``python -m module args`` in a child; return (seconds, its peak RSS in MiB)."""
    env = dict(os.environ, PETSC_OPTIONS="", OMP_NUM_THREADS="1")
    command = [sys.executable, "-c", MEASURED, module, *args]
    t0 = time.perf_counter()
    done = subprocess.run(command, cwd=cwd, env=env, capture_output=True, text=True)
    seconds = time.perf_counter() - t0
    if done.returncode != 0:
        raise SystemExit(f"{module} {' '.join(args)} failed:\n{done.stderr[-2000:]}")
    kb = [line.split()[1] for line in done.stderr.splitlines() if line.startswith("MAXRSS ")]
    return seconds, float(kb[-1]) / 1024.0


def import_job(root: Path, data: Path, name: str) -> tuple[float, float]:
    job = root / f"{name}.toml"
    job.write_text(JOB.format(output=root / name, data=data, budget=4096, iterations=1))
    return child_peak("femeso.cli", ["generate", job.name, "-q"], root)


def train_job(root: Path, name: str, budget: int, iterations: int) -> tuple[float, float]:
    """Train on the imported job ``name`` with ``data.in_memory_mib = budget``."""
    job = root / f"{name}.toml"
    job.write_text(JOB.format(output=root / name, data="-", budget=budget, iterations=iterations))
    return child_peak("femeso.cli", ["train", job.name, "-q", "--overwrite"], root)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--trajectories", type=int, default=160, help="N of the large file")
    parser.add_argument("--small", type=int, default=10, help="N of the reference file")
    parser.add_argument("--skip-in-memory", action="store_true", help="no whole-file read")
    parser.add_argument("--train-iterations", type=int, default=3, help="0: no training")
    args = parser.parse_args()
    root = Path(tempfile.mkdtemp(prefix="femeso-import-cost-"))
    try:
        small, large = root / "small.h5", root / "large.h5"
        write_paper_file(small, args.small)
        write_paper_file(large, args.trajectories)
        size = large.stat().st_size / 2**20
        states = args.trajectories * FRAMES * N_GRID * N_GRID * 8 / 2**20
        print(
            f"large file: ({args.trajectories}, {FRAMES}, {N_GRID}, {N_GRID}, 1) float32, "
            f"{size:.0f} MiB; as float64 states {states:.0f} MiB"
        )
        small_s, small_peak = import_job(root, small, "small")
        print(
            f"femeso generate, {args.small} trajectories: {small_s:.1f} s, "
            f"peak {small_peak:.0f} MiB"
        )
        large_s, large_peak = import_job(root, large, "large")
        growth = large_peak - small_peak
        frames = args.trajectories * FRAMES
        print(
            f"femeso generate, {args.trajectories} trajectories: {large_s:.1f} s "
            f"({frames / large_s:.0f} frames/s), peak {large_peak:.0f} MiB: growth over the "
            f"reference {growth:.0f} MiB = {growth / states:.3f} x the float64 states"
        )
        written = sum(p.stat().st_size for p in (root / "large" / "data").glob("*.h5")) / 2**20
        print(f"  written: {written:.0f} MiB in data/{{train,validation,test}}.h5")
        if not args.skip_in_memory:
            (root / "in_memory.py").write_text(IN_MEMORY)
            _, reference = child_peak("in_memory", [str(small)], root)
            memory_s, memory_peak = child_peak("in_memory", [str(large)], root)
            print(
                f"read_data of the whole file into memory (what the import did before it "
                f"streamed): {memory_s:.1f} s, peak {memory_peak:.0f} MiB: growth over "
                f"read_data of the small file {memory_peak - reference:.0f} MiB = "
                f"{(memory_peak - reference) / states:.3f} x the float64 states"
            )
        if args.train_iterations:
            for budget in (16384, 0):
                seconds, peak = train_job(root, "large", budget, args.train_iterations)
                print(
                    f"femeso train ({args.train_iterations} Adam iterations of 4 windows), "
                    f"data.in_memory_mib = {budget}: {seconds:.1f} s, peak {peak:.0f} MiB: "
                    f"growth over the small import {peak - small_peak:.0f} MiB"
                )
    finally:
        shutil.rmtree(root, ignore_errors=True)


if __name__ == "__main__":
    main()
