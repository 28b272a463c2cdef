"""femeso's logger: ``logging.getLogger("femeso")``, quiet on MPI ranks other than 0."""

from __future__ import annotations

import logging

from mpi4py import MPI

logger = logging.getLogger("femeso")


class _RankZeroFilter(logging.Filter):
    """Drop records on ranks > 0 of ``COMM_WORLD`` so that parallel runs print once."""

    def filter(self, record: logging.LogRecord) -> bool:
        return MPI.COMM_WORLD.rank == 0


_handler = logging.StreamHandler()
_handler.setFormatter(logging.Formatter("femeso: %(message)s"))


def progress_bar(total: int, desc: str, unit: str, *, enabled: bool = True, initial: int = 0):
    """Return a tqdm progress bar on rank 0 of ``COMM_WORLD`` when ``enabled``, else ``None``.

    The one place femeso's bars are made: other ranks, and callers that asked for none, get
    ``None`` (callers test for it), so parallel runs draw one bar.
    """
    if not enabled or MPI.COMM_WORLD.rank != 0:
        return None
    from tqdm.auto import tqdm

    return tqdm(total=total, initial=initial, desc=desc, unit=unit)


def timestamp_log_lines() -> None:
    """Start femeso's lines with the time, for a log file (``2026-12-06 03:40:12 femeso: ...``).

    The ``femeso`` command calls it when its standard error is not a terminal; on a terminal the
    lines stay short and the progress bars show the time.
    """
    _handler.setFormatter(logging.Formatter("%(asctime)s femeso: %(message)s", "%Y-%m-%d %H:%M:%S"))


logger.addFilter(_RankZeroFilter())
# On the handler too: a logger's own filters do not see records of its children
# (``femeso.training.warm_start`` ...), which reach this handler by propagation.
_handler.addFilter(_RankZeroFilter())
if not logger.handlers:
    logger.addHandler(_handler)
    logger.setLevel(logging.INFO)
    logger.propagate = False
