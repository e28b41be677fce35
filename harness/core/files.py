"""Writing files so that a reader never sees half of one: the one atomic-write helper."""

from __future__ import annotations

import os
import tempfile
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import BinaryIO


def atomic_write(path: str | Path, data: bytes | str, *, fsync: bool = True) -> Path:
    """Write ``data`` to ``path`` through a unique temporary file beside it, then rename it into place.

    Readers see the old file or the new one, never a torn one, also when several processes write
    the same path at once (each has its own temporary file). ``fsync`` makes the content durable
    before the rename. A fault (full disk, no permission) leaves the old file as it was and no
    temporary file behind, and is raised as the ``OSError`` it is.
    """
    with atomic_writer(path, fsync=fsync) as fh:
        fh.write(data.encode() if isinstance(data, str) else data)
    return Path(path)


@contextmanager
def atomic_writer(path: str | Path, *, fsync: bool = True) -> Iterator[BinaryIO]:
    """``atomic_write`` for content written piece by piece (a large array streamed by ``np.save``,
    never held twice in memory): the ``with`` block writes to the binary file it is given, which
    replaces ``path`` when the block ends without an exception and is removed when it raises."""
    path = Path(path)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    try:
        with os.fdopen(fd, "wb") as fh:
            _give_mode(fh.fileno(), path)
            yield fh
            if fsync:
                fh.flush()
                os.fsync(fh.fileno())
        os.replace(tmp, path)
    except BaseException:
        try:
            os.unlink(tmp)
        except OSError:
            pass
        raise


def _give_mode(fd: int, path: Path) -> None:
    """mkstemp makes the file private (0600); give it the mode the file had, or a plain file's."""
    try:
        mode = path.stat().st_mode & 0o777
    except FileNotFoundError:
        mode = 0o644
    try:
        os.fchmod(fd, mode)
    except (AttributeError, NotImplementedError):  # os.fchmod: not on Windows before Python 3.13
        pass
