"""The run lock: one `harness run` at a time holds a results folder."""

from __future__ import annotations

import contextlib
import os
import socket
from pathlib import Path
from typing import Iterator

import psutil

from harness.core.locks import Timeout, exclusive
from harness.errors import HarnessError, file_system_error

#: The lock file a `harness run` holds in its results folder while it runs.
LOCK_FILE = ".run.lock"
#: Seconds to wait for a lock whose holder (named in the file) is gone: its workers are ending.
HOLDER_GONE_WAIT = 15


@contextlib.contextmanager
def run_lock(results_dir: Path) -> Iterator[int | None]:
    """Hold the results folder for this run: a second `harness run` on it is refused (its workers
    are this run's). The lock goes with the process, however it ends, and with the workers that
    inherit the descriptor it yields (None where the platform's lock has none to pass on)."""
    path = results_dir / LOCK_FILE
    held = contextlib.ExitStack()
    try:
        # A killed holder's workers end with it, a moment later: wait for them, never for a live run.
        lock = held.enter_context(exclusive(path, timeout=0 if _holder_alive(path) else HOLDER_GONE_WAIT))
    except Timeout:  # a TimeoutError, so an OSError: caught first
        raise HarnessError(
            f"{results_dir} is in use by another `harness run` ({_holder(path)}). Wait for it to finish, or give "
            "this run another --results folder; to share one search between processes, use --workers N."
        ) from None
    except OSError as exc:
        raise file_system_error(exc) from None
    with held:
        _write_holder(path)
        # filelock's POSIX lock is flock(), held by the open file description: a worker that
        # inherits the descriptor holds it on after its parent is killed.
        yield getattr(getattr(lock, "_context", None), "lock_file_fd", None)


def _write_holder(path: Path) -> None:
    """Say in the lock file who holds it, for the message a second run gets."""
    with path.open("r+") as handle:
        handle.truncate()
        handle.write(f"pid {os.getpid()} on {socket.gethostname()}")


def _holder(path: Path) -> str:
    try:
        return path.read_text().strip() or "another process"
    except OSError:
        return "another process"


def _holder_alive(path: Path) -> bool:
    """Whether the process named in the lock file may still run (unknown, another host: yes)."""
    words = _holder(path).split()
    if len(words) != 4 or words[0] != "pid" or not words[1].isdigit() or words[3] != socket.gethostname():
        return True
    return psutil.pid_exists(int(words[1]))
