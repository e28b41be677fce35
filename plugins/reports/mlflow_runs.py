"""The MLflow side of the ``mlflow`` reporter: a study's runs, found by their tags, and what is logged
to each. Imports mlflow: loaded only when a study is sent to MLflow.

One experiment (the study's name unless set), in it one run per study (tag ``harness.kind`` =
"study"), one nested run per candidate ("candidate", ``harness.candidate``) and one nested run per
configuration of a candidate's search ("trial", ``harness.search_id`` and ``harness.config_id``; a
retried trial keeps its configuration, so its run). A trial's run holds its parameters, its folds'
scores (``fold_<k>/<metric>``, ``repeat_<r>/fold_<k>/<metric>`` with repeats), each fold's epochs
as step metrics (``fold_<k>/epoch/<key>``, step = epoch) and, once complete, the folds' means.
Every write first looks for what is there: a resumed study adds to the same runs, and a fold's
metrics are logged once.
"""

from __future__ import annotations

import json
import re
import tempfile
import time
from collections.abc import Iterable
from pathlib import Path

from mlflow.entities import Metric, Param, RunTag
from mlflow.exceptions import MlflowException
from mlflow.tracking import MlflowClient

from harness import FoldRecord, Leaderboard, RunInfo, TrialSummary

KIND, STUDY, CANDIDATE = "harness.kind", "harness.study", "harness.candidate"
SEARCH, CONFIG, TRIAL = "harness.search_id", "harness.config_id", "harness.trial"
PARENT = "mlflow.parentRunId"
#: The study's files logged as artifacts of its run when it ends (those that exist).
STUDY_FILES = ("leaderboard.csv", "leaderboard.md", "report.html", "report.md", "study.toml")
#: user:password@ in any URL (a [search] storage on PostgreSQL, say).
_URL_PASSWORD = re.compile(r"(\b[a-zA-Z][\w+.-]*://[^\s:/@\"']+):[^\s@\"']+@")


def without_passwords(text: str) -> str:
    """``text`` with each URL's password replaced by ***."""
    return _URL_PASSWORD.sub(r"\1:***@", text)
#: How a trial's state shows in MLflow.
_STATUS = {"complete": "FINISHED", "pruned": "KILLED", "fail": "FAILED", "failed": "FAILED"}
#: MLflow's limits per log_batch call and on a parameter's value.
_MAX_METRICS, _MAX_PARAMS, _MAX_VALUE = 1000, 100, 6000


class Tracker:
    """A study's runs on one tracking server; each method finds (or makes) the runs it writes to."""

    def __init__(self, client: MlflowClient, experiment_id: str, run: RunInfo):
        self.client, self.experiment_id, self.run = client, experiment_id, run

    @classmethod
    def open(cls, tracking_uri: str, experiment: str, run: RunInfo) -> Tracker:
        client = MlflowClient(tracking_uri=tracking_uri)
        found = client.get_experiment_by_name(experiment)
        if found is None:
            try:
                return cls(client, client.create_experiment(experiment), run)
            except MlflowException:  # another worker made it first
                found = client.get_experiment_by_name(experiment)
        return cls(client, found.experiment_id, run)

    # -- the runs, by their tags --------------------------------------------------------------

    def _find(self, tags: dict[str, str]) -> list:
        where = " and ".join(f"tags.`{key}` = '{_quoted(value)}'" for key, value in tags.items())
        runs, token = [], None
        while True:
            page = self.client.search_runs([self.experiment_id], where, max_results=1000,
                                           order_by=["attributes.start_time ASC"], page_token=token)
            runs += list(page)
            token = page.token
            if not token:
                return runs

    def _ensure(self, tags: dict[str, str], name: str, parent: str | None, params: dict | None = None):
        """The run with these tags, made (with ``params``) when there is none. Two processes making it
        at once both keep the earliest and delete their own."""
        found = self._find(tags)
        if found:
            return found[0]
        made = self.client.create_run(self.experiment_id, run_name=name,
                                      tags=tags | ({PARENT: parent} if parent else {}))
        if params:
            self._log(made.info.run_id, params=params)
        found = self._find(tags)
        if found and found[0].info.run_id != made.info.run_id:
            self.client.delete_run(made.info.run_id)
            return found[0]
        return self.client.get_run(made.info.run_id)

    def study_run(self):
        run = self.run
        params = {"dataset": run.dataset, "images": run.images, "classes": len(run.classes), "objective": run.objective,
                  "cv.scheme": run.cv.scheme, "cv.folds": run.cv.folds, "cv.repeats": run.cv.repeats,
                  "cv.seed": run.cv.seed, "cv.grouped": run.cv.grouped, "cv.stratified": run.cv.stratified}
        return self._ensure({KIND: "study", STUDY: run.study}, run.study, None, params)

    def candidate_run(self, candidate: str, parent: str | None = None):
        parent = parent or self.study_run().info.run_id
        return self._ensure({KIND: "candidate", STUDY: self.run.study, CANDIDATE: candidate}, candidate, parent)

    def trial_run(self, candidate: str, search: str, config: str, number: int, params: dict, parent: str | None = None):
        tags = {KIND: "trial", STUDY: self.run.study, CANDIDATE: candidate, SEARCH: search, CONFIG: config}
        found = next(iter(self._find(tags)), None)  # the parents are looked up only to make it
        if found is None:
            parent = parent or self.candidate_run(candidate).info.run_id
            found = self._ensure(tags, f"{candidate} trial {number}", parent, params)
        missing = {k: v for k, v in params.items() if k not in found.data.params}
        if missing:  # a run made by a trial that failed before its first fold lacks the fixed settings
            self._log(found.info.run_id, params=missing)
        if found.data.tags.get(TRIAL) != str(number):
            self.client.set_tag(found.info.run_id, TRIAL, str(number))
        return found

    # -- what is logged -----------------------------------------------------------------------

    def log_fold(self, record: FoldRecord, run=None) -> None:
        """A fold's scores and epochs on its trial's run, unless they are there already."""
        run = run or self.trial_run(record.candidate, record.search_id, record.config_id, record.trial,
                                    record.params | record.tuned)
        prefix = self._fold_prefix(record)
        done = f"{prefix}/fit_seconds"
        if done in run.data.metrics:
            return
        stamp = int(record.finished_at * 1000)
        metrics = [Metric(f"{prefix}/epoch/{key}", float(value), stamp, step)
                   for key, values in record.history.items() if key != "phase"
                   for step, value in enumerate(values) if isinstance(value, (int, float))]
        metrics += [Metric(f"{prefix}/{name}", float(value), stamp, 0) for name, value in record.metrics.items()]
        metrics += [Metric(f"{prefix}/epochs_run", float(record.epochs_run), stamp, 0),
                    Metric(done, float(record.fit_seconds), stamp, 0)]  # last: it says the fold is logged
        self._log(run.info.run_id, metrics=metrics)

    def end_trial(self, trial: TrialSummary) -> None:
        """A trial's outcome: its folds (any not logged yet), the folds' means and its status."""
        if not trial.records:
            return  # failed before its first fold: nothing to show (the results folder says why)
        first = trial.records[0]
        run = self.trial_run(trial.candidate, first.search_id, first.config_id, trial.number, first.params | first.tuned)
        for record in trial.records:
            self.log_fold(record, run)
        run = self.client.get_run(run.info.run_id)
        self._close_trial(run, trial.state, trial.records)

    def _close_trial(self, run, state: str, records: list[FoldRecord]) -> None:
        if state == "complete" and records:
            means = {name: sum(r.metrics[name] for r in records) / len(records) for name in records[0].metrics}
            new = [Metric(k, v, int(time.time() * 1000), 0) for k, v in means.items() if run.data.metrics.get(k) != v]
            self._log(run.info.run_id, metrics=new)
        self.client.set_tag(run.info.run_id, "harness.state", state)
        self.client.set_terminated(run.info.run_id, _STATUS.get(state, "FINISHED"))

    def end_study(self, leaderboard: Leaderboard, records: list[FoldRecord]) -> str:
        """Every fold the runs lack (a tracking outage loses nothing), the leaderboard on the
        candidates' runs, the study's files as artifacts of its run, and the runs closed; returns
        the study run's id."""
        study = self.run_id_of(self.study_run())
        candidates = {r.candidate: self.run_id_of(self.candidate_run(r.candidate, study)) for r in leaderboard.rows}
        self._sync(records, candidates)
        for row in leaderboard.rows:
            stamp = int(time.time() * 1000)
            metrics = [Metric(f"{name}_mean", s.mean, stamp, 0) for name, s in row.metrics.items()]
            metrics += [Metric(f"{name}_std", s.std, stamp, 0) for name, s in row.metrics.items()]
            metrics += [Metric("rank", float(row.rank), stamp, 0)] if row.rank is not None else []
            self._log(candidates[row.candidate], metrics=metrics,
                      tags={"harness.status": row.status, "harness.best_trial": str(row.best_trial),
                            "harness.model": row.model})
            self.client.set_terminated(candidates[row.candidate], "FAILED" if row.status == "failed" else "FINISHED")
        with tempfile.TemporaryDirectory() as staging:
            for name in STUDY_FILES:
                path = Path(self.run.results_dir) / name
                if path.is_file() and name.endswith(".toml"):  # a [search] storage URL may hold a password
                    path = Path(staging) / name
                    path.write_text(without_passwords((Path(self.run.results_dir) / name).read_text()))
                if path.is_file():
                    self.client.log_artifact(study, str(path))
        self.client.set_terminated(study, "FINISHED")
        return study

    def _sync(self, records: list[FoldRecord], candidates: dict[str, str]) -> None:
        """Log the folds of ``records`` that their trials' runs lack; close the trials whose folds are all in."""
        found = {(r.data.tags.get(SEARCH), r.data.tags.get(CONFIG)): r
                 for r in self._find({KIND: "trial", STUDY: self.run.study})}
        by_config: dict[tuple[str, str], list[FoldRecord]] = {}
        for record in records:
            by_config.setdefault((record.search_id, record.config_id), []).append(record)
        folds = self.run.cv.folds * self.run.cv.repeats
        for key, group in by_config.items():
            first = group[0]
            run = found.get(key)
            if run is None or any(f"{self._fold_prefix(r)}/fit_seconds" not in run.data.metrics for r in group):
                run = run or self.trial_run(first.candidate, first.search_id, first.config_id, first.trial,
                                            first.params | first.tuned, candidates.get(first.candidate))
                for record in group:
                    self.log_fold(record, run)
                run = self.client.get_run(run.info.run_id)
            if len(group) >= folds and run.info.status != "FINISHED":
                self._close_trial(run, "complete", group)

    # -- helpers ------------------------------------------------------------------------------

    def _fold_prefix(self, record: FoldRecord) -> str:
        return f"repeat_{record.repeat}/fold_{record.fold}" if self.run.cv.repeats > 1 else f"fold_{record.fold}"

    @staticmethod
    def run_id_of(run) -> str:
        return run.info.run_id

    def _log(self, run_id: str, metrics: Iterable = (), params: dict | None = None, tags: dict | None = None) -> None:
        """log_batch within MLflow's limits; metrics in order (a fold's marker goes last)."""
        metrics = list(metrics)
        param_list = [Param(k, _value(v)) for k, v in (params or {}).items()]
        tag_list = [RunTag(k, str(v)) for k, v in (tags or {}).items()]
        for start in range(0, max(len(metrics), len(param_list), 1), _MAX_METRICS):
            chunk = metrics[start : start + _MAX_METRICS]
            params_now = param_list[:_MAX_PARAMS] if start == 0 else []
            self.client.log_batch(run_id, metrics=chunk, params=params_now, tags=tag_list if start == 0 else [])
        for start in range(_MAX_PARAMS, len(param_list), _MAX_PARAMS):
            self.client.log_batch(run_id, params=param_list[start : start + _MAX_PARAMS])


def _value(value) -> str:
    text = value if isinstance(value, str) else json.dumps(value, sort_keys=True, default=str)
    return text[:_MAX_VALUE]


def _quoted(value: str) -> str:
    return str(value).replace("\\", "\\\\").replace("'", "\\'")
