"""Errors that are the user's to fix: printed as one line, never as a traceback."""

from __future__ import annotations

import difflib
from collections.abc import Iterable

#: Exit codes of the `harness` command (documented in the README).
EXIT_OK = 0
EXIT_INTERNAL = 1
EXIT_USER = 2
EXIT_INTERRUPTED = 130
#: A training worker that ended to be replaced by a fresh one (its memory grew; see harness.core.memory).
EXIT_RECYCLE = 75


class HarnessError(Exception):
    """A mistake in a study file, a plugin, the data or the command line.

    The message says what, where, and what to do next; the CLI prints it and exits with code 2.
    """


class WorkerFailed(HarnessError):
    """The process that trained for this command stopped with an error: its exit code is the
    command's. ``told``: that process has printed the one line that says why."""

    def __init__(self, message: str, exit_code: int, told: bool):
        super().__init__(message)
        self.exit_code, self.told = exit_code, told


def did_you_mean(name: str, choices: Iterable[str]) -> str:
    """' Did you mean 'x'?' for the closest choice, or '' when nothing is close."""
    close = difflib.get_close_matches(str(name), [str(c) for c in choices], n=1, cutoff=0.6)
    return f" Did you mean '{close[0]}'?" if close else ""


#: What to do about a file-system fault, by errno name.
_FS_ADVICE = {
    "EACCES": "make it writable (or readable) for you, or choose another --results folder",
    "EPERM": "make it writable (or readable) for you, or choose another --results folder",
    "EROFS": "choose another --results folder, on a writable disk",
    "ENOSPC": "free some space on that disk",
    "EDQUOT": "your disk quota is used up: free some space",
    "ENOTDIR": "a part of the path is a file, not a folder: choose another path",
    "EISDIR": "a folder stands where a file is expected: move it away",
    "EEXIST": "a file stands where a folder is expected: move it away or choose another path",
    "ENOENT": "check the path",
}


def file_system_error(exc: OSError, action: str = "run the same command again to resume") -> HarnessError:
    """One line for an OSError: the path, what went wrong, what to do, and that a rerun resumes."""
    import errno as errno_names

    name = errno_names.errorcode.get(exc.errno or 0, "")
    where = exc.filename if exc.filename is not None else "a file"
    what = exc.strerror or str(exc)
    advice = _FS_ADVICE.get(name, "fix it")
    return HarnessError(f"{where}: {what}. {advice[0].upper()}{advice[1:]}, then {action}.")
