"""Writing files so that a reader never sees half of one: the one atomic-write helper."""

from __future__ import annotations

import glob
import os
import socket
import tempfile
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import BinaryIO

import psutil

#: A temporary file of another machine (a cache on a shared disk) counts as orphaned after this long.
FOREIGN_ORPHAN_SECONDS = 24 * 3600


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
def atomic_writer(path: str | Path, *, fsync: bool = True, sweep: bool = False) -> Iterator[BinaryIO]:
    """``atomic_write`` for content written piece by piece (a large array streamed by ``np.save``,
    never held twice in memory): the ``with`` block writes to the binary file it is given, which
    replaces ``path`` when the block ends without an exception and is removed when it raises.
    ``sweep``: first remove what killed writers of ``path`` left (see ``sweep_orphans``)."""
    path = Path(path)
    if sweep:
        sweep_orphans(path)
    fd, tmp = temporary_beside(path)
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


def temporary_beside(path: str | Path) -> tuple[int, str]:
    """A new temporary file beside ``path`` (its descriptor and name), named after ``path``, this
    machine and this process, so that ``sweep_orphans`` can tell when its writer is gone."""
    path = Path(path)
    return tempfile.mkstemp(prefix=f".{path.name}.{_owner()}.", suffix=".tmp", dir=path.parent)


def sweep_orphans(path: str | Path) -> int:
    """Remove the temporary files of ``path`` whose writer was killed before it could (kill -9, a
    power cut): this machine's whose process is gone, another machine's after a day. Returns how
    many went. A decoded-image stack of a large collection left half-written is gigabytes."""
    path = Path(path)
    removed = 0
    for name in glob.glob(os.path.join(glob.escape(str(path.parent)), f".{glob.escape(path.name)}.*.tmp")):
        owner = Path(name).name[len(path.name) + 2:].split(".", 1)[0]
        if _orphaned(owner, name):
            try:
                os.unlink(name)
                removed += 1
            except OSError:  # another process swept it first, or the folder is read-only
                pass
    return removed


def _machine() -> str:
    """This machine, as far as its process ids go: the host name and, on Linux, the pid namespace
    (containers that share a host name and a cache volume each count their own pids)."""
    host = socket.gethostname().replace(".", "_")
    try:
        return f"{host}-{os.stat('/proc/self/ns/pid').st_ino}"
    except OSError:
        return host


def _owner() -> str:
    return f"{_machine()}-{os.getpid()}"


def _orphaned(owner: str, name: str) -> bool:
    machine, _, pid = owner.rpartition("-")
    if machine == _machine() and pid.isdigit():
        return not psutil.pid_exists(int(pid))
    try:  # another machine's, or a name from before owners were recorded
        return time.time() - os.stat(name).st_mtime > FOREIGN_ORPHAN_SECONDS
    except OSError:
        return False
