"""Cross-process file locks on every platform (filelock: ``fcntl`` on POSIX, ``msvcrt`` on Windows)."""

from __future__ import annotations

from contextlib import contextmanager
from pathlib import Path
from typing import Iterator

from filelock import FileLock, Timeout

__all__ = ["FileLock", "Timeout", "exclusive"]


@contextmanager
def exclusive(path: str | Path, timeout: float = -1) -> Iterator[FileLock]:
    """Hold an exclusive lock on ``path`` (created if missing) for the ``with`` block; ``timeout``
    seconds to wait (-1: forever, 0: not at all, raising ``filelock.Timeout``)."""
    lock = FileLock(str(path), timeout=timeout)
    with lock:
        yield lock
