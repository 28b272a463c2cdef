"""``femeso run``: the whole job, generate -> train -> report."""

from __future__ import annotations

import time
from typing import Any

from femeso.config import JobConfig
from femeso.jobs.data import generate
from femeso.jobs.output import _data_path, check_output
from femeso.jobs.reporting import report
from femeso.jobs.training import train

__all__ = ["run"]


def run(
    config: JobConfig, *, resume: bool = False, progress: bool = True, overwrite: bool = False
) -> dict[str, Any]:
    """Run the whole job: generate (unless the data exist and ``resume``), train, report.

    An output folder with results of an earlier run is an error unless ``resume`` (continue
    it) or ``overwrite`` (replace all of it).
    """
    t0 = time.perf_counter()
    check_output(config)
    have_data = all(_data_path(config, split).exists() for split in ("train", "test"))
    if not (resume and have_data):
        generate(config, progress=progress, overwrite=overwrite)
    training = train(config, resume=resume, progress=progress, overwrite=overwrite)
    results = report(config, progress=progress)
    results["training"] = training
    results["seconds_total"] = time.perf_counter() - t0
    from femeso.evaluation import write_json

    write_json(config.output / "report" / "results.json", results)
    return results
