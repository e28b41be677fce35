"""Sends a study to an MLflow tracking server: ``[report] mlflow = { tracking_uri = "...",
experiment = "..." }`` in the study file, or $MLFLOW_TRACKING_URI (the experiment then named after
the study). Runs nested study > candidate > trial, each fold's scores and epochs as it ends, and
when the study ends the leaderboard and the study's files (see ``harness_plugins.reports.mlflow_runs``).

A tracking outage never costs results: the first failure prints one warning line and this run
sends nothing more (the results folder keeps everything); the next run of the study sends what is
missing when it ends. mlflow is imported only when a study is sent (``pip install -e '.[mlflow]'``).
"""

from __future__ import annotations

import os
import tomllib
from collections.abc import Callable, Mapping
from typing import Any
from pathlib import Path
from urllib.parse import urlsplit, urlunsplit

from rich.console import Console
from rich.markup import escape

from harness import FoldRecord, Leaderboard, RunInfo, TrialSummary, hookimpl

#: MLflow's own variable: with it set, a study without [report] mlflow goes to that server too.
TRACKING_URI_ENV = "MLFLOW_TRACKING_URI"
#: Written in the results folder when the server could not be reached: this run sends no more.
GAVE_UP_FILE = ".mlflow-unreachable"
#: The run lock's file (harness.workflows.lock.LOCK_FILE): its time tells one run from the next.
_RUN_LOCK = ".run.lock"
#: Short waits for MLflow's HTTP client (the user's own settings win): an unreachable server costs
#: seconds once, not minutes of retries.
_CLIENT_ENV = {
    "MLFLOW_HTTP_REQUEST_MAX_RETRIES": "1",
    "MLFLOW_HTTP_REQUEST_BACKOFF_FACTOR": "0",
    "MLFLOW_HTTP_REQUEST_BACKOFF_JITTER": "0",
    "MLFLOW_HTTP_REQUEST_TIMEOUT": "10",
    # MLflow prints a line per closed run; the study's run is named once, when it ends
    "MLFLOW_SUPPRESS_PRINTING_URL_TO_STDOUT": "true",
}


@hookimpl
def on_fold_end(run: RunInfo, record: FoldRecord) -> None:
    _send(run, lambda tracker: tracker.log_fold(record))


@hookimpl
def on_trial_end(run: RunInfo, trial: TrialSummary) -> None:
    _send(run, lambda tracker: tracker.end_trial(trial))


@hookimpl(trylast=True)  # after the other reporters: their report.html and report.md go up too
def on_study_end(run: RunInfo, leaderboard: Leaderboard) -> None:
    def end(tracker) -> None:
        from harness.reports.api import RECORDS_FILE, read_records

        study_run = tracker.end_study(leaderboard, read_records(Path(run.results_dir) / RECORDS_FILE))
        uri = _without_password(tracker.client.tracking_uri)
        where = f"{uri}/#/experiments/{tracker.experiment_id}/runs/{study_run}" if uri.startswith("http") else uri
        Console().print(f"MLflow: the study's run is {where}", soft_wrap=True, highlight=False)

    _send(run, end)


def _send(run: RunInfo, action: Callable) -> None:
    """Run ``action`` on the study's tracker, unless MLflow is off or this run gave up on it."""
    settings = _settings(run)
    if settings is None or _gave_up(Path(run.results_dir)):
        return
    uri, experiment = settings
    if not uri:
        return _give_up(run, "[report] mlflow is on but names no server: set its tracking_uri or "
                             "$MLFLOW_TRACKING_URI.")
    try:
        from harness_plugins.reports.mlflow_runs import Tracker
    except ImportError:
        return _give_up(run, "the study is to go to MLflow, but mlflow is not installed: pip install -e '.[mlflow]'.")
    for name, value in _CLIENT_ENV.items():
        os.environ.setdefault(name, value)
    try:
        action(Tracker.open(uri, experiment, run))
    except Exception as exc:  # whatever the server or the network did, the study goes on
        reason = (str(exc).strip().splitlines() or [""])[0][:200]
        _give_up(run, f"MLflow at {_without_password(uri)} failed ({type(exc).__name__}: {reason}); this run "
                      "sends it nothing more. Every result is in the results folder; the next run of the "
                      "study sends what is missing.")


def _settings(run: RunInfo) -> tuple[str, str] | None:
    """(tracking URI, experiment) from the results folder's study.toml and the environment."""
    copy = Path(run.results_dir) / "study.toml"
    path = copy if copy.is_file() else Path(run.study_file)
    try:
        with path.open("rb") as handle:
            report = tomllib.load(handle).get("report")
    except (OSError, tomllib.TOMLDecodeError):
        report = None
    return mlflow_settings(report, run.study, os.environ)


def mlflow_settings(report: Any, study: str, environ: Mapping[str, str]) -> tuple[str, str] | None:
    """``(tracking_uri, experiment)`` to send a study to, from its [report] table as the file has it
    (checked by harness.config.report when the study loaded) and the environment; None when MLflow
    is off. The URI is "" when neither the table nor the environment gives one."""
    table = report.get("mlflow") if isinstance(report, dict) else None
    if table is False or (table is None and not environ.get(TRACKING_URI_ENV)):
        return None
    table = table if isinstance(table, dict) else {}
    return table.get("tracking_uri") or environ.get(TRACKING_URI_ENV) or "", table.get("experiment") or study


def _run_token(results_dir: Path) -> str:
    """This run: when its lock was taken (workers share their run's), else this process."""
    try:
        return f"lock {(results_dir / _RUN_LOCK).stat().st_mtime_ns}"
    except OSError:
        return f"pid {os.getpid()}"


def _gave_up(results_dir: Path) -> bool:
    try:
        return (results_dir / GAVE_UP_FILE).read_text() == _run_token(results_dir)
    except OSError:
        return False


def _give_up(run: RunInfo, message: str) -> None:
    """The one warning line of this run, and the mark that stops it trying again."""
    results_dir = Path(run.results_dir)
    try:
        results_dir.mkdir(parents=True, exist_ok=True)
        part = results_dir / f"{GAVE_UP_FILE}.{os.getpid()}"
        part.write_text(_run_token(results_dir))
        part.replace(results_dir / GAVE_UP_FILE)
    except OSError:
        pass  # cannot mark it: the next hook tries (and warns) again
    Console(stderr=True).print(f"[yellow]warning:[/] mlflow: {escape(message)}", soft_wrap=True, highlight=False)


def _without_password(uri: str) -> str:
    parts = urlsplit(uri)
    if parts.password is None:
        return uri
    return urlunsplit(parts._replace(netloc=f"{parts.username}:***@{parts.hostname}"
                                            + (f":{parts.port}" if parts.port else "")))
