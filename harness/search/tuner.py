"""keras-tuner as a second search engine: the same study file, folds, records and leaderboard.

``search.engine = "keras_tuner"`` runs one keras-tuner search per candidate with the oracle named
by ``search.oracle`` ("bayesian", "hyperband" or "random"). Its trials are scored like Optuna's:
a trial trains the configuration on every fold (``run_trial``), appends one record per fold, and
reports the mean of the objective. The Hyperband oracle sets each trial's epochs (up to
train.epochs); every trial trains from scratch, as a fold model is never carried between trials.
The tuner's own state lives in ``<results>/keras_tuner/`` so an interrupted search resumes.
"""

from __future__ import annotations

import contextlib
import io
import json
from dataclasses import dataclass
from functools import partial
from typing import Any

import keras_tuner as kt
from rich.console import Console

from harness.config.space import Dimension
from harness.config.study import Candidate, Study, effective_params
from harness.core.stop import StopToken
from harness.errors import HarnessError
from harness.plugins import Plugins
from harness.results.records import RecordStore
from harness.search.context import RunContext
from harness.search.ids import config_id, direction, search_id
from harness.search.progress import SearchProgress
from harness.search.trial import TrialContext, run_trial, trial_end
from harness.training.keeper import ModelKeeper

TUNER_DIR = "keras_tuner"
_PLAIN = (str, int, float, bool)


def _encoded(dim: Dimension) -> bool:
    """keras-tuner's Choice takes values of one plain type; anything else goes as JSON text."""
    kinds = {type(c) for c in dim.choices}
    return len(kinds) != 1 or not issubclass(kinds.pop(), _PLAIN)


def hyperparameters(space: dict[str, Dimension]):
    """The study's search space as keras-tuner HyperParameters."""
    hp = kt.HyperParameters()
    for name, dim in space.items():
        if dim.choices is not None:
            values = [json.dumps(c) for c in dim.choices] if _encoded(dim) else list(dim.choices)
            hp.Choice(name, values)
        elif isinstance(dim.low, int) and isinstance(dim.high, int) and not isinstance(dim.step, float):
            hp.Int(name, dim.low, dim.high, step=dim.step or 1, sampling="log" if dim.log else "linear")
        else:
            hp.Float(name, float(dim.low), float(dim.high), step=dim.step, sampling="log" if dim.log else "linear")
    return hp


def sampled_values(space: dict[str, Dimension], values: dict[str, Any]) -> dict[str, Any]:
    """A trial's values by parameter name, decoded as Optuna's engine gives them.

    Hyperband's budget ``tuner/epochs`` becomes the trial's ``epochs``.
    """
    sampled = {}
    for name, dim in space.items():
        value = values[name]
        sampled[name] = json.loads(value) if dim.choices is not None and _encoded(dim) else value
    if "tuner/epochs" in values:
        sampled["epochs"] = int(values["tuner/epochs"])
    return sampled


def make_oracle(study: Study, candidate: Candidate, goal: str) -> kt.Oracle:
    objective = kt.Objective("score", direction="max" if goal == "maximize" else "min")
    common = dict(objective=objective, hyperparameters=hyperparameters(candidate.space), seed=study.seed,
                  allow_new_entries=False, tune_new_entries=False)
    trials = study.search.trials
    if study.search.oracle == "hyperband":
        oracle = kt.oracles.HyperbandOracle(max_epochs=max(2, candidate.train.epochs), factor=3, **common)
        oracle.max_trials = trials  # Hyperband's brackets otherwise decide the count alone
        return oracle
    if study.search.oracle == "random":
        return kt.oracles.RandomSearchOracle(max_trials=trials, **common)
    return kt.oracles.BayesianOptimizationOracle(max_trials=trials, **common)


@dataclass
class TunerSession:
    """One process's keras-tuner search of a study: what each candidate's trials share."""

    run: RunContext
    plugins: Plugins
    records: RecordStore
    progress: SearchProgress
    stop: StopToken
    keeper: ModelKeeper

    def __post_init__(self) -> None:
        study = self.run.study
        self.splits = [(r, f) for r in range(study.cv.repeats) for f in range(study.cv.folds)]
        self.extra_metrics = [self.plugins.metrics.get(m) for m in study.metrics.extra]


def run_tuner_search(
    run: RunContext, plugins: Plugins, console: Console | None = None, workers: int = 1, *,
    stop: StopToken | None = None,
) -> dict[str, str]:
    """Run every candidate's keras-tuner search; resumes the tuner's saved state and reuses records.

    Returns the candidates whose every trial failed, each with its last error (the others still run).
    ``stop``: checked between epochs; a request stops the search with KeyboardInterrupt.
    """
    if workers > 1:
        raise HarnessError('several workers need search.engine = "optuna"; keras_tuner runs in one process.')
    console = console or Console(stderr=True)
    failures: dict[str, str] = {}
    with SearchProgress(console) as progress:
        session = TunerSession(run, plugins, RecordStore(run.results_dir), progress, stop or StopToken(), ModelKeeper())
        for candidate in run.study.candidates:
            error = _search_candidate(session, candidate)
            if error is not None:
                failures[candidate.name] = error
    return failures


def _search_candidate(session: TunerSession, candidate: Candidate) -> str | None:
    """One candidate's keras-tuner search; the reason it failed when no trial completed, else None."""
    study, progress = session.run.study, session.progress
    sid = search_id(study, candidate)
    errors: list[str] = []
    evaluate = partial(_evaluate, session, candidate, sid, session.plugins.models.get(candidate.model), errors)
    with contextlib.redirect_stdout(io.StringIO()):  # keras-tuner prints "Reloading Tuner from ..."
        tuner = FoldTuner(
            evaluate,
            oracle=make_oracle(study, candidate, direction(study, session.plugins)),
            directory=str(session.run.results_dir / TUNER_DIR),
            project_name=f"{sid}-{study.search.oracle}",
            overwrite=False,
        )
    done = sum(t.status == "COMPLETED" for t in tuner.oracle.trials.values())
    progress.bars.update(
        progress.trials, description=f"{candidate.name}: trials", total=study.search.trials, completed=done
    )
    try:
        tuner.search(verbose=0)
    except RuntimeError as exc:  # keras-tuner gives up after consecutive failed trials
        errors += [] if errors else [str(exc)]  # the trials' own error says more
    if not any(t.status == "COMPLETED" for t in tuner.oracle.trials.values()):
        return errors[-1] if errors else "no keras-tuner trial completed"
    return None


def _evaluate(session: TunerSession, candidate: Candidate, sid: str, spec, errors: list[str], trial) -> float:
    """One keras-tuner trial: the configuration on every fold (see harness.search.trial); its mean objective."""
    number = int(trial.trial_id)
    sampled = sampled_values(candidate.space, trial.hyperparameters.values)
    params, train = effective_params(candidate, sampled)
    context = TrialContext(
        session.run, session.plugins, session.records, candidate, spec, params, train, sampled, sid,
        config_id(sid, sampled), number, session.extra_metrics, session.progress, session.stop,
        keeper=session.keeper,
    )
    try:
        return run_trial(context, session.splits)
    except HarnessError as exc:
        errors.append(str(exc))
        session.progress.console.print(f"[red]{candidate.name} trial {number} failed:[/] {exc}")
        trial_end(context, "failed", None)
        raise kt.errors.FailedTrialError(str(exc)) from exc


class FoldTuner(kt.Tuner):
    """A Tuner whose trial is K-fold training through the harness, not one model.fit."""

    def __init__(self, evaluate, **kwargs):
        super().__init__(hypermodel=None, **kwargs)
        self._evaluate = evaluate

    def run_trial(self, trial, *args, **kwargs):
        return self._evaluate(trial)

    def save_model(self, trial_id, model, step=0):
        pass  # fold models are not kept; the records are the result

    def load_model(self, trial):
        return None
