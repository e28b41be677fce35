"""Bounded memory over long searches: a process whose memory grew too much continues in a fresh one.

TensorFlow keeps the graphs of every function it traced for a model's ``fit`` (the train step and
its optimizer's branches) after the model is gone, and ``keras.backend.clear_session()`` does not
free them (tensorflow/tensorflow#61791, keras-team/keras#17458): a search that builds a model per
fold grows by tens of MB per trial. No call frees them, so the harness measures the growth after
each trial and, past a budget, lets the command line replace the process with a fresh run of the
same command, which resumes where the search stands (nothing is lost: records and trials are on disk).
"""

from __future__ import annotations

import psutil

from harness.core import settings
from harness.core.settings import DEFAULT_GROWTH_MB, GROWTH_ENV

__all__ = ["DEFAULT_GROWTH_MB", "GROWTH_ENV", "MemoryGuard", "RestartForMemory", "growth_budget_mb", "resident_mb"]


class RestartForMemory(Exception):
    """Raised between trials when the process should continue as a fresh one (see module doc)."""


def resident_mb() -> float | None:
    """This process's resident memory in MB (psutil: Linux, macOS, Windows), or None where the
    platform does not tell."""
    try:
        return psutil.Process().memory_info().rss / (1024 * 1024)
    except (psutil.Error, OSError, NotImplementedError):
        return None


def growth_budget_mb() -> float:
    """The growth budget (MB): $HARNESS_MEMORY_GROWTH_MB, else 2048; 0 turns restarts off."""
    return settings.current().memory_growth_mb


class MemoryGuard:
    """Measures growth from the first trial's end; ``check`` raises RestartForMemory past the budget."""

    def __init__(self, budget_mb: float | None = None):
        self.budget_mb = growth_budget_mb() if budget_mb is None else budget_mb
        self.baseline: float | None = None
        self.trials = 0

    def over_budget(self) -> str | None:
        """Why this process should be replaced now, or None."""
        now = resident_mb()
        if now is None or not self.budget_mb:
            return None
        self.trials += 1
        if self.baseline is None:
            self.baseline = now
            return None
        grown = now - self.baseline
        if grown <= self.budget_mb:
            return None
        return (
            f"memory grew by {grown:.0f} MB in {self.trials - 1} trial(s), past ${GROWTH_ENV} = "
            f"{self.budget_mb:.0f} (TensorFlow keeps every traced training function)"
        )
