"""Run a small job's ``femeso generate`` on 2 ranks many times and count the runs that end.

Issue 16: ``mpiexec -n 2 femeso generate`` hung at exit (before the fix: 3 of 3 runs of this job,
killed after 120 s). Both ranks were in petsc4py's collective garbage clean-up at exit: one in
``MPI_Comm_dup`` of ``COMM_WORLD`` (inside ``PetscCommDuplicate``), the other in ``MPI_Allreduce``
on PETSc's inner communicator. Python had freed the last PETSc object of ``COMM_WORLD`` on one
rank only, so PETSc's inner communicator existed on one rank and not the other. ``import femeso``
now holds that communicator on every rank for the life of the process
(``femeso._runtime.hold_petsc_world_communicator``).

Usage::

    python scripts/rank_exit.py --runs 50 --ranks 2 --timeout 180

Prints one line per run and the counts: completed, hung (killed at the timeout), failed.
The exit status is 0 only when every run completed.
"""

from __future__ import annotations

import argparse
import os
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from femeso._runtime import mpiexec_environment

JOB = """
[job]
name = "rank-exit"
output = "{out}"
[data]
train = 2
validation = 1
test = 1
frames = 4
burn_in = 2
[training]
iterations = 2
batch_size = 2
validate_every = 2
checkpoint_every = 2
refine_iterations = 0
[baseline]
enabled = false
"""


def _stop(signum: int, frame: object) -> None:
    raise SystemExit(f"stopped by signal {signum}")


def main(argv: list[str] | None = None) -> int:
    """Run the job ``--runs`` times on ``--ranks`` ranks; 0 when every run completed."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--runs", type=int, default=50)
    parser.add_argument("--ranks", type=int, default=2)
    parser.add_argument("--timeout", type=float, default=180.0, help="seconds to a hang")
    parser.add_argument("--command", default="generate", choices=["generate", "run"])
    args = parser.parse_args(argv)
    signal.signal(signal.SIGTERM, _stop)

    femeso = str(Path(sys.executable).with_name("femeso"))
    env = mpiexec_environment()
    counts = {"completed": 0, "hung": 0, "failed": 0}
    root = Path(tempfile.mkdtemp(prefix="femeso-rank-exit-"))
    try:
        job = root / "job.toml"
        job.write_text(JOB.format(out=root / "out"))
        command = [
            "mpiexec",
            "-n",
            str(args.ranks),
            femeso,
            args.command,
            str(job),
            "-q",
            "--overwrite",
        ]
        for run in range(1, args.runs + 1):
            start = time.perf_counter()
            # A new session, so that a hung mpiexec and both ranks can be killed together.
            process = subprocess.Popen(
                command,
                stdout=subprocess.PIPE,
                stderr=subprocess.STDOUT,
                env=env,
                start_new_session=True,
            )
            try:
                output, _ = process.communicate(timeout=args.timeout)
                outcome = "completed" if process.returncode == 0 else "failed"
            except subprocess.TimeoutExpired:
                os.killpg(process.pid, signal.SIGKILL)
                output, _ = process.communicate()
                outcome = "hung"
            except BaseException:  # stopped (Ctrl-C, SIGTERM): take the job's ranks along
                os.killpg(process.pid, signal.SIGKILL)
                raise
            counts[outcome] += 1
            seconds = time.perf_counter() - start
            print(f"run {run:3d}/{args.runs}: {outcome} in {seconds:.1f} s", flush=True)
            if outcome == "failed":
                print(output.decode(errors="replace")[-1500:], flush=True)
    finally:
        shutil.rmtree(root, ignore_errors=True)
    print(
        f"{counts['completed']} of {args.runs} runs of "
        f"`mpiexec -n {args.ranks} femeso {args.command}` completed; "
        f"{counts['hung']} hung (> {args.timeout:.0f} s); {counts['failed']} failed"
    )
    return 0 if counts["completed"] == args.runs else 1


if __name__ == "__main__":
    sys.exit(main())
