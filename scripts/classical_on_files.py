"""femeso's classical solver on data femeso did not make: the true equation rolled out on the files.

A job on files (``data.source = "files"``) has no true model: the files do not say which equation
made them. This script takes the equation from a generator job of the same physics (e.g.
``experiments/allen_cahn_1d.toml`` for the paper's Allen--Cahn files: the same PDE, ε and domain)
and rolls femeso's classical solver -- the energy-stable scheme with the *true* energy and
mobility on the file job's own mesh, at the data step, ``--substeps`` scheme steps per data step
-- out from the first frame of every test trajectory of the file job, scored like every other row
(:func:`femeso.evaluation.rollout_errors`, the paper's metric). It is the row the paper calls
"classical": a numerical solver at the data's coarse step, here on the data's 256 P1 nodes (so
its error has a spatial part that the paper's spectral solver does not).

It prints the row at steps 1, 5 and the last step and writes ``report/classical.json`` of the file
job (rows and cost, in the layout of ``report/peers.json``).

Usage::

    python scripts/classical_on_files.py FILE_JOB.toml --equation GENERATOR_JOB.toml [--substeps 1]
"""

from __future__ import annotations

import argparse
import logging
import sys
import time

from femeso._runtime import configure_environment, start_firedrake

logger = logging.getLogger("femeso")


def main() -> None:
    """Roll the classical solver out on the file job's test trajectories; print, write the row."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("config", help="the job on files (its data imported by femeso generate)")
    parser.add_argument("--equation", required=True, help="a generator job of the same physics")
    parser.add_argument("--substeps", type=int, default=1, help="scheme steps per data step")
    args = parser.parse_args()
    sys.argv = sys.argv[:1]  # PETSc reads the command line: these arguments are not its options
    configure_environment()
    start_firedrake()
    from femeso import jobs
    from femeso.config import load_config
    from femeso.evaluation import rollout_errors, write_json

    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(name)s: %(message)s")
    config = load_config(args.config)
    physics = load_config(args.equation)
    if not jobs.from_files(config):
        raise SystemExit(f"{args.config}: not a job on files (data.source = 'files')")
    space = jobs.build_space(config)
    data = jobs.load_data(config, space)
    truth = jobs.true_model(physics, space)
    if truth is None:
        raise SystemExit(f"{args.equation}: its data have no known true model (chains, files)")
    make = jobs.stepper_factory(truth, args.substeps, config.model.solver)
    t0 = time.perf_counter()
    report = rollout_errors(make, data["test"], keep_states=False)
    seconds = time.perf_counter() - t0
    d = config.data
    results = jobs.rollout_results({"classical": report}, d.frames * d.frame_dt, data=data["test"])
    rows = results["tables"]["paper"]["rows"]
    last = rows["classical"]["steps"][-1]
    for line in jobs.table_lines(rows, steps=(1, 5, last)):
        logger.info("%s", line)
    steps = report.summary()["n_steps"] * len(data["test"])
    logger.info(
        "classical (%s, %d substep(s)): %d test trajectories in %.0f s, %.2e s per step",
        args.equation,
        args.substeps,
        len(data["test"]),
        seconds,
        seconds / max(steps, 1),
    )
    write_json(
        config.output / "report" / "classical.json",
        {
            "rows": rows,
            "metric": results["tables"]["paper"]["metric"],
            "equation": args.equation,
            "substeps": args.substeps,
            "seconds": seconds,
            "seconds_per_step": seconds / max(steps, 1),
        },
    )


if __name__ == "__main__":
    main()
