"""The reporting API for reporter plugins: what an ``on_study_end`` hook may use to write its files.

- ``build_leaderboard(results_dir) -> DataFrame``: the ranking, one row per candidate, built from the
  fold records alone (the same table as ``leaderboard.csv``).
- ``to_markdown(table) -> str``: that table as Markdown, then each candidate's best parameters (or
  failure) and warnings.
- ``tells_models_apart(metric, info) -> bool``: False for a metric that is the same for every model
  (top-k accuracy with k at or above the number of classes), which reports leave out.
- ``dead_warnings(warnings) -> list[str]``: those of a fold record's warnings that say its model
  learned nothing (the others label how it was trained, e.g. steered by its scored fold).
- ``read_records(path) -> list[FoldRecord]``: a results folder's fold records, from
  ``results_dir / RECORDS_FILE``; damaged lines are skipped.
- ``write_html_report(results_dir, thumbnails=None, audit=None) -> Path``: the evidence page,
  ``report.html`` (imports plotting and scoring code on first use, so it is loaded lazily). Its
  Grad-CAM heat maps need the dataset: pass ``RunInfo.thumbnails`` (the dataset's own method) as it is.
- ``confidence_markdown(results_dir, table) -> str``: a Markdown section on each candidate's
  out-of-fold errors and how many were made above 90 % confidence (loaded lazily too).

Only names listed here are the API; the modules they come from may change.
"""

from __future__ import annotations

import importlib
from typing import Any

from harness.evaluation.scores import dead_warnings
from harness.reports.leaderboard import build_leaderboard, tells_models_apart, to_markdown
from harness.results.records import RECORDS_FILE, read_records

#: Names loaded on first use, by the module that holds them.
LAZY = {"write_html_report": "harness.reports.html", "confidence_markdown": "harness.reports.confidence"}

__all__ = ["RECORDS_FILE", "build_leaderboard", "dead_warnings", "read_records", "tells_models_apart", "to_markdown", *LAZY]


def __getattr__(name: str) -> Any:
    if name in LAZY:
        return getattr(importlib.import_module(LAZY[name]), name)
    raise AttributeError(f"module 'harness.reports.api' has no attribute '{name}'")
