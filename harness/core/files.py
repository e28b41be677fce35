"""Writing files so that a reader never sees half of one: the one atomic-write helper."""

from __future__ import annotations

import os
import tempfile
from pathlib import Path


def atomic_write(path: str | Path, data: bytes | str, *, fsync: bool = True) -> Path:
    """Write ``data`` to ``path`` through a unique temporary file beside it, then rename it into place.

    Readers see the old file or the new one, never a torn one, also when several processes write
    the same path at once (each has its own temporary file). ``fsync`` makes the content durable
    before the rename. A fault (full disk, no permission) leaves the old file as it was and no
    temporary file behind, and is raised as the ``OSError`` it is.
    """
    path = Path(path)
    payload = data.encode() if isinstance(data, str) else data
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    try:
        # mkstemp makes the file private (0600); give it the mode the file had, or a plain file's.
        try:
            os.fchmod(fd, path.stat().st_mode & 0o777)
        except FileNotFoundError:
            os.fchmod(fd, 0o644)
        except (AttributeError, NotImplementedError):  # os.fchmod: not on Windows
            pass
        with os.fdopen(fd, "wb") as fh:
            fh.write(payload)
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
    return path
