"""One advisory lock per unit folder, shared by the batch's folder swap and the QA app's corrections.

A batch job rebuilds a unit in a staging copy and swaps it into place; a correction the QA app stores in that unit
while the job runs would vanish with the old folder. Both sides take this lock for their write into the unit folder,
and the swap first carries over every corrected version the staging copy lacks, so a re-run never loses a review.
The lock is ``flock`` on ``.koaimg-<unit>.lock`` beside the folder (kept: removing a lock file races its users):
exclusive between processes of one machine (Dask workers of that machine included); the kernel releases it when
its holder dies.
"""

from __future__ import annotations

import contextlib
import os
import shutil
from collections.abc import Iterator
from pathlib import Path

try:
    import fcntl
except ImportError:  # pragma: no cover - Windows has no flock; a run there is single-user
    fcntl = None  # type: ignore[assignment]

from ._atomic import _UMASK

#: the subfolder of a unit where the QA app keeps corrected versions (``corrected/v1`` ...); the batch never writes it
REVIEW_DIR = "corrected"


@contextlib.contextmanager
def unit_lock(folder: str | Path) -> Iterator[None]:
    """Hold the exclusive lock of unit ``folder`` (it need not exist yet)."""
    folder = Path(folder)
    folder.parent.mkdir(parents=True, exist_ok=True)
    fd = os.open(folder.parent / f".koaimg-{folder.name}.lock", os.O_RDWR | os.O_CREAT, 0o666 & ~_UMASK)
    try:
        if fcntl is not None:
            fcntl.flock(fd, fcntl.LOCK_EX)
        yield
    finally:
        os.close(fd)  # closing the descriptor releases the flock


def carry_reviews(final: Path, staging: Path) -> bool:
    """Copy ``final``'s corrected versions into ``staging`` (call under the lock, just before the swap).

    The job's staging copy leaves them out, so versions stored or discarded while it ran are taken as they are now.
    Copies, not moves: until the swap ``final`` stays complete, so a crash here loses nothing.
    """
    source = final / REVIEW_DIR
    if not source.is_dir():
        return False
    shutil.copytree(source, staging / REVIEW_DIR, ignore=shutil.ignore_patterns(".*"))
    return True
