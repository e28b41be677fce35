"""A request to stop a run at the next epoch end, keeping finished folds (a first Ctrl-C or SIGTERM)."""

from __future__ import annotations

import signal
import threading


class StopToken:
    """Whether a run was asked to stop, and by which signal (for the exit code: 128 + signum).

    The search checks it between epochs and folds; a signal handler calls ``request``.
    """

    def __init__(self) -> None:
        self._event = threading.Event()  # set from a signal handler, read by the training thread
        self._signum = signal.SIGINT

    def request(self, signum: int = signal.SIGINT) -> None:
        """Ask the run to stop at the next epoch end, remembering which signal asked."""
        self._signum = signum
        self._event.set()

    @property
    def requested(self) -> bool:
        """Whether a stop was asked for."""
        return self._event.is_set()

    @property
    def signum(self) -> int:
        """The signal that asked the run to stop: SIGINT (Ctrl-C) unless another did."""
        return self._signum

    def clear(self) -> None:
        """Forget an earlier request (a new run in the same process)."""
        self._event.clear()

    def raise_if_requested(self) -> None:
        """Raise KeyboardInterrupt when a stop was asked for: the run unwinds as on Ctrl-C."""
        if self._event.is_set():
            raise KeyboardInterrupt
