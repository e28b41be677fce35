"""Writes results/<study>/report.html when a study ends: the evidence page (harness.reports.html)."""

from __future__ import annotations

import pandas as pd

from harness import hookimpl


@hookimpl
def on_study_end(run, leaderboard: pd.DataFrame) -> None:
    from harness.reports.html import write_html_report

    write_html_report(run.results_dir, thumbnails=run.dataset.thumbnails, audit=list(run.notes))
