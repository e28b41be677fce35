"""Bounded memory over long searches: a process whose memory grew too much continues in a fresh one.

TensorFlow keeps the graphs of every function it traced for a model's ``fit`` (the train step and
its optimizer's branches) after the model is gone, and ``keras.backend.clear_session()`` does not
free them (tensorflow/tensorflow#61791, keras-team/keras#17458): a search that builds a model per
fold grows by tens of MB per trial. No call frees them, so the harness measures the growth after
each trial. `harness run` trains in a worker process: past ``worker_budget_mb`` the worker ends
and a fresh one takes its place, as a process pool with a task limit does, while the command's own
process stays small. Past ``growth_budget_mb``, the last guard, the command line replaces a process
that trains itself with a fresh run of the same command. Either way the search resumes where it
stands (nothing is lost: records and trials are on disk).
"""

from __future__ import annotations

import psutil

from harness.core import settings
from harness.core.settings import DEFAULT_GROWTH_MB, DEFAULT_WORKER_GROWTH_MB, GROWTH_ENV, WORKER_GROWTH_ENV

__all__ = [
    "DEFAULT_GROWTH_MB", "DEFAULT_WORKER_GROWTH_MB", "GROWTH_ENV", "WORKER_GROWTH_ENV", "MemoryGuard",
    "RestartForMemory", "growth_budget_mb", "resident_mb", "worker_budget_mb",
]


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


def worker_budget_mb() -> float:
    """A training worker's growth budget (MB): $HARNESS_WORKER_GROWTH_MB, else 100; 0: train in
    the command's own process."""
    return settings.current().worker_growth_mb


class MemoryGuard:
    """Measures growth from the first trial's end; ``over_budget`` says why past the budget."""

    def __init__(self, budget_mb: float | None = None, setting: str = GROWTH_ENV):
        self.budget_mb = growth_budget_mb() if budget_mb is None else budget_mb
        self.setting = setting
        self.baseline: float | None = None
        self.previous = 0.0
        self.largest_step = 0.0
        self.trials = 0

    @classmethod
    def for_worker(cls) -> MemoryGuard:
        """The guard of a training worker: $HARNESS_WORKER_GROWTH_MB, or the last guard's budget where
        that is 0 (the workers of `--workers N` are replaced all the same)."""
        budget = worker_budget_mb()
        if budget:
            return cls(budget, WORKER_GROWTH_ENV)
        return cls(growth_budget_mb(), GROWTH_ENV)

    def over_budget(self) -> str | None:
        """Why this process should be replaced now, or None: when it has grown past the budget, or
        would after one more trial that grows as much as the largest one so far did (so that the
        memory stays within the budget instead of overshooting it by a trial)."""
        now = resident_mb()
        if now is None or not self.budget_mb:
            return None
        self.trials += 1
        if self.baseline is None:
            self.baseline = self.previous = now
            return None
        self.largest_step = max(self.largest_step, now - self.previous)
        self.previous = now
        grown = now - self.baseline
        if grown + self.largest_step <= self.budget_mb:
            return None
        return (
            f"memory grew by {grown:.0f} MB in {self.trials - 1} trial(s) (up to {self.largest_step:.0f} MB in one); "
            f"one more could pass ${self.setting} = {self.budget_mb:.0f} (the backend keeps each traced training "
            "function)"
        )
