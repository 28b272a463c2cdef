"""Train a job's peers next to its trained Onsager model and print one table with all of them.

A job's report (``femeso report``) rolls out every model again, the Onsager model included,
which on paper-size test sets takes many minutes. This script trains the peers named in the
job's ``[baseline] models`` (``femeso train --model peers``; ``--resume`` keeps peers trained
before), rolls out only the peers and persistence over the job's test trajectories with the
same scoring (:func:`femeso.evaluation.rollout_errors`, the paper's metric) and prints the
table with the Onsager row taken from the job's existing ``report/results.json``. It writes
``report/peers.json`` (rows, costs, architectures).

Usage::

    python scripts/peer_table.py JOB.toml [--resume]
"""

from __future__ import annotations

import argparse
import json
import logging
import sys
import time

from femeso._runtime import configure_environment, start_firedrake

logger = logging.getLogger("femeso")


def main() -> None:
    """Train the peers, roll them out, print and write the table."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("config")
    parser.add_argument("--resume", action="store_true", help="keep peers trained before")
    args = parser.parse_args()
    sys.argv = sys.argv[:1]  # PETSc reads the command line: these arguments are not its options
    configure_environment()  # threads, kernel caches
    start_firedrake()
    from femeso import jobs
    from femeso.config import load_config
    from femeso.evaluation import rollout_errors, write_json
    from femeso.peers.runner import data_step, peer_steppers, training_summary

    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(name)s: %(message)s")
    config = load_config(args.config)
    training = jobs.train(
        config, models=("peers",), progress=False, resume=args.resume, overwrite=not args.resume
    )
    space = jobs.build_space(config)
    data = jobs.load_data(config, space)
    reports = {}
    for name, make in peer_steppers(config, space, data_step(data["test"])).items():
        t0 = time.perf_counter()
        reports[name] = rollout_errors(make, data["test"], keep_states=False)
        logger.info("rollouts of %s: %.0f s", name, time.perf_counter() - t0)
    d = config.data
    results = jobs.rollout_results(reports, d.frames * d.frame_dt, data=data["test"])
    rows = results["tables"]["paper"]["rows"]
    saved = config.output / "report" / "results.json"
    if saved.exists():
        onsager = json.loads(saved.read_text())["tables"]["paper"]["rows"].get("onsager")
        if onsager is not None:
            rows = {"onsager": onsager, **rows}
    costs = jobs.model_costs(config, reports)
    for name in training:
        costs[name]["architecture"] = (training_summary(config, name) or {}).get("architecture")
    out = {
        "rows": rows,
        "costs": costs,
        "metric": results["tables"]["paper"]["metric"],
        "tables": results["tables"],  # every metric (the paper's and the relative L2 error)
    }
    write_json(config.output / "report" / "peers.json", out)
    for line in jobs.table_lines(rows, steps=(1, 5, 100)):
        logger.info("%s", line)
    if "l2" in results["tables"]:
        logger.info("relative L2 error:")
        for line in jobs.table_lines(results["tables"]["l2"]["rows"], steps=(1, 5, 100)):
            logger.info("%s", line)
    for name, c in costs.items():
        logger.info(
            "%s: %s parameters, trained in %s s, %s s per rollout step; %s",
            name,
            c["parameters"],
            None if c["training_seconds"] is None else f"{c['training_seconds']:.0f}",
            None if c["seconds_per_step"] is None else f"{c['seconds_per_step']:.2e}",
            c.get("architecture"),
        )


if __name__ == "__main__":
    main()
