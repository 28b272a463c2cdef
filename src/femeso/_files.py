"""Writing files atomically, and turning a failure into one line that names the file.

Every file femeso writes (model files, training checkpoints, meshes) goes to a temporary file in
the same directory, is flushed to disk, then renamed over the final name: a reader sees the old
file or the new one, never half of one. The temporary is named ``.<name>.tmp`` -- hidden, and
without the final suffix, so that a temporary left by a killed process is never taken for a
model or a checkpoint; the next write of the same file reuses (and renames) it.
"""

from __future__ import annotations

import os
from collections.abc import Callable, Iterator
from contextlib import contextmanager, suppress
from pathlib import Path
from typing import BinaryIO, TypeVar

from mpi4py import MPI

__all__ = [
    "atomic_write",
    "check_room",
    "first_line",
    "on_rank_zero",
    "temporary_path",
    "write_error",
]

T = TypeVar("T")


def first_line(exc: BaseException) -> str:
    """Return the first line of an exception's message (its type name when the message is empty)."""
    lines = str(exc).strip().splitlines()
    return lines[0].strip() if lines else type(exc).__name__


def temporary_path(path: Path) -> Path:
    """Return the temporary file beside ``path`` that :func:`atomic_write` writes first."""
    return path.with_name(f".{path.name}.tmp")


def write_error(path: Path, what: str, exc: OSError) -> OSError:
    """Return an ``OSError`` of the same class as ``exc`` whose message names ``path``, one line."""
    reason = exc.strerror or first_line(exc)
    error = type(exc)(f"{path}: cannot write {what}: {reason}")
    error.errno = exc.errno
    return error


@contextmanager
def atomic_write(path: str | Path, what: str) -> Iterator[BinaryIO]:
    """Open ``path`` for binary writing so that it appears whole or not at all.

    Parameters
    ----------
    path
        The final file.
    what
        What the file is, for error messages (``"the model file"``).

    Yields
    ------
    BinaryIO
        The temporary file (:func:`temporary_path`), renamed over ``path`` when the block ends
        without an exception.

    Raises
    ------
    OSError
        Of the class of the original error (disk full, file-size limit, permissions ...), with one
        line naming ``path``. The temporary is removed on every failure, ``path`` is untouched.

    """
    path = Path(path)
    tmp = temporary_path(path)
    try:
        with open(tmp, "wb") as f:
            yield f
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException as exc:
        with suppress(OSError):
            tmp.unlink()
        if isinstance(exc, OSError):
            raise write_error(path, what, exc) from exc
        raise


def check_room(path: Path, nbytes: int, what: str) -> None:
    """Refuse, before anything is written, a file of about ``nbytes`` that cannot fit.

    Two limits are checked: the free space of the file system that holds ``path``, and the
    process's file-size limit (``ulimit -f``, ``RLIMIT_FSIZE``). HDF5 does not recover from a
    write that hits either (the error surfaces as a crash when the file is closed), so the check
    comes first; ``nbytes`` is the writer's estimate of the file's size.

    Raises
    ------
    OSError
        ``ENOSPC`` or ``EFBIG``, one line naming ``path``, the size and the limit.

    """
    import errno
    import resource
    import shutil

    free = shutil.disk_usage(path.parent).free
    soft, _ = resource.getrlimit(resource.RLIMIT_FSIZE)
    mib = 2.0**20
    if nbytes > free:
        reason, code = f"the disk has {free / mib:.1f} MiB free", errno.ENOSPC
    elif soft != resource.RLIM_INFINITY and nbytes > soft:
        reason, code = f"the file-size limit (ulimit -f) is {soft / mib:.1f} MiB", errno.EFBIG
    else:
        return
    error = OSError(
        f"{path}: cannot write {what}: it needs about {nbytes / mib:.1f} MiB and {reason}; "
        "nothing written"
    )
    error.errno = code
    raise error


def on_rank_zero(comm: MPI.Comm, action: Callable[[], T]) -> T | None:
    """Run ``action`` on rank 0 of ``comm``; raise its ``ValueError``/``OSError`` on every rank.

    A write done by rank 0 alone must not leave the other ranks waiting in a collective when it
    fails: the outcome is broadcast and every rank raises the same one-line error.
    """
    result, caught, failure = None, None, None
    if comm.rank == 0:
        try:
            result = action()
        except (OSError, ValueError) as exc:
            caught = exc
            failure = (type(exc), str(exc), getattr(exc, "errno", None))
    failure = comm.bcast(failure, root=0)
    if caught is not None:
        raise caught
    if failure is not None:
        cls, message, errno = failure
        try:
            error = cls(message)
        except TypeError:  # an exception class with another constructor
            error = (OSError if issubclass(cls, OSError) else ValueError)(message)
        if errno is not None:
            error.errno = errno
        raise error
    return result
