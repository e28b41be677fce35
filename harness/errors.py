"""Errors that are the user's to fix: printed as one line, never as a traceback."""

from __future__ import annotations

import difflib
from collections.abc import Iterable

#: Exit codes of the `harness` command (documented in the README).
EXIT_OK = 0
EXIT_INTERNAL = 1
EXIT_USER = 2
EXIT_INTERRUPTED = 130


class HarnessError(Exception):
    """A mistake in a study file, a plugin, the data or the command line.

    The message says what, where, and what to do next; the CLI prints it and exits with code 2.
    """


def did_you_mean(name: str, choices: Iterable[str]) -> str:
    """' Did you mean 'x'?' for the closest choice, or '' when nothing is close."""
    close = difflib.get_close_matches(str(name), [str(c) for c in choices], n=1, cutoff=0.6)
    return f" Did you mean '{close[0]}'?" if close else ""
