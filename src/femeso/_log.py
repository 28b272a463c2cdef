"""femeso's logger: ``logging.getLogger("femeso")``, quiet on MPI ranks other than 0."""

from __future__ import annotations

import logging

from mpi4py import MPI

logger = logging.getLogger("femeso")


class _RankZeroFilter(logging.Filter):
    """Drop records on ranks > 0 of ``COMM_WORLD`` so that parallel runs print once."""

    def filter(self, record: logging.LogRecord) -> bool:
        return MPI.COMM_WORLD.rank == 0


logger.addFilter(_RankZeroFilter())
if not logger.handlers:
    _handler = logging.StreamHandler()
    _handler.setFormatter(logging.Formatter("femeso: %(message)s"))
    logger.addHandler(_handler)
    logger.setLevel(logging.INFO)
    logger.propagate = False
