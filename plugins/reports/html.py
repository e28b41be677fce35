"""Writes results/<study>/report.html when a study ends: the evidence page (harness.reports.api.write_html_report)."""

from __future__ import annotations

from harness import Leaderboard, RunInfo, hookimpl


@hookimpl
def on_study_end(run: RunInfo, leaderboard: Leaderboard) -> None:
    from harness.reports.api import write_html_report

    write_html_report(run.results_dir, thumbnails=run.thumbnails, audit=list(run.notes))
