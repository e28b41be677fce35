"""Ctrl-C and SIGTERM: the first asks the run to stop at the end of its epoch, keeping every
finished fold, and the command exits 130 (143 for SIGTERM); the second stops at once.

The handlers only set a ``StopToken`` (harness.core), which the command hands to the search, so
installing them loads no search code. (An interrupt raised at an arbitrary point can land in a
backend's own callback and be lost: hence a request the search checks between epochs.)
"""

from __future__ import annotations

import signal

from rich.console import Console

from harness.core.stop import StopToken


class GracefulStop:
    """The signal handlers of one command: ``install`` them, ``restore`` the previous ones after."""

    def __init__(self, err: Console, quiet: bool = False):
        self.err = err
        #: A worker process is quiet: the command that started it says what happens.
        self.quiet = quiet
        self.token = StopToken()
        self.previous: dict[int, object] = {}

    def install(self) -> None:
        # SIGBREAK: how a Windows parent asks a worker in its own process group to stop.
        signals = (signal.SIGINT, signal.SIGTERM, *([signal.SIGBREAK] if hasattr(signal, "SIGBREAK") else []))
        try:
            for signum in signals:
                self.previous[signum] = signal.signal(signum, self._handle)
        except ValueError:  # not the main thread: leave signals as they are
            pass

    def _handle(self, signum, frame) -> None:
        if self.token.requested:
            raise KeyboardInterrupt
        self.token.request(signum)
        if self.quiet:
            return
        again = "Ctrl-C" if signum == signal.SIGINT else "the signal"
        self.err.print(f"[yellow]stopping at the end of this epoch[/] ({again} again to stop at once)")

    def restore(self) -> None:
        for signum, previous in self.previous.items():
            signal.signal(signum, previous)
        self.previous.clear()

    def exit_code(self) -> int:
        """128 + the signal that stopped the command: 130 for Ctrl-C, 143 for SIGTERM."""
        return 128 + self.token.signum
