"""One trial, as both search engines run it: a configuration trained and scored on every fold.

A fold another run or worker already finished is read back from the records, never trained again.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, Callable

import numpy as np

from harness.config.recipe import params_without_defaults
from harness.config.study import Candidate, TrainConfig
from harness.core.stop import StopToken
from harness.data.folds import fold_indices
from harness.evaluation.scores import LEARNED_NOTHING, fold_metrics, learned_nothing
from harness.plugins import Plugins
from harness.search.context import RunContext, run_info
from harness.search.ids import fold_seed
from harness.search.progress import SearchProgress, trial_line
from harness.specs import FoldRecord, MetricSpec, ModelSpec, TrialSummary
from harness.training.keeper import ModelKeeper
from harness.training.fit import fit_fold
from harness.training.tensorboard import fold_logdir

if TYPE_CHECKING:
    from harness.results.records import RecordStore
    from harness.results.storage import ResultStore

#: Called after each fold with its step and the records so far; True stops the trial there (pruned).
AfterFold = Callable[[int, list[FoldRecord]], bool]


@dataclass
class TrialContext:
    """What one trial's folds need: the run, the configuration and where its records go."""

    run: RunContext
    plugins: Plugins
    records: RecordStore | ResultStore
    candidate: Candidate
    spec: ModelSpec
    #: The candidate's parameters and training settings with the sampled values applied.
    params: dict[str, Any]
    train: TrainConfig
    #: The values the engine sampled for this trial, by parameter name.
    sampled: dict[str, Any]
    search: str
    config: str
    number: int
    extra_metrics: list[MetricSpec]
    progress: SearchProgress
    stop: StopToken
    keeper: ModelKeeper | None = None
    #: Put before the trial's lines: "[worker N] " when several workers share a console.
    label: str = ""
    #: The trial's fold records so far (also when it fails part-way, for the trial-end hook).
    done: list[FoldRecord] = field(default_factory=list)

    def mean(self) -> float:
        """The objective's mean over the folds done."""
        return float(np.mean([r.metrics[self.run.study.metrics.objective] for r in self.done]))


def run_trial(trial: TrialContext, splits: list[tuple[int, int]], after_fold: AfterFold | None = None) -> float | None:
    """Score the configuration on each (repeat, fold) of ``splits`` and return the objective's mean,
    announced as complete; None when ``after_fold`` stopped it (the caller announces that)."""
    progress = trial.progress
    progress.bars.update(progress.folds, total=len(splits), completed=0)
    for step, (repeat, fold) in enumerate(splits):
        trial.done.append(fold_record(trial, repeat, fold))
        progress.bars.update(progress.folds, completed=step + 1)
        if after_fold is not None and after_fold(step, trial.done):
            return None
    value = trial.mean()
    announce(trial, "complete", value)
    progress.bars.advance(progress.trials)
    return value


def announce(trial: TrialContext, state: str, value: float) -> None:
    """The trial's line on the console and the plugins' trial-end hook."""
    trial_line(trial.progress.console, trial.label, trial.candidate, trial.number, state, value, trial.sampled,
               trial.done, trial.run.study)
    trial_end(trial, state, value)


def trial_end(trial: TrialContext, state: str, value: float | None) -> None:
    """Tell the plugins a trial ended ("complete", "pruned" or "failed")."""
    summary = TrialSummary(trial.candidate.name, trial.number, state, value, dict(trial.sampled), list(trial.done))
    trial.plugins.hook.on_trial_end(run=run_info(trial.run), trial=summary)


def fold_record(trial: TrialContext, repeat: int, fold: int) -> FoldRecord:
    """One fold's record: reused when an earlier run or worker finished it, else trained and appended now."""
    record = trial.records.get(trial.search, trial.config, repeat, fold)
    if record is None:
        record = _run_fold(trial, repeat, fold)
        trial.records.append(record)
        trial.plugins.hook.on_fold_end(run=run_info(trial.run), record=record)
    return record


def _run_fold(trial: TrialContext, repeat: int, fold: int) -> FoldRecord:
    trial.stop.raise_if_requested()
    study, dataset, progress, train = trial.run.study, trial.run.dataset, trial.progress, trial.train
    train_idx, val_idx = fold_indices(trial.run.folds, repeat, fold)
    progress.bars.update(progress.epochs, total=train.total_epochs, completed=0)

    def on_epoch(epoch: int, logs: dict) -> None:
        progress.bars.update(progress.epochs, completed=epoch + 1)
        trial.stop.raise_if_requested()

    result = fit_fold(
        trial.spec, dataset, trial.candidate.image_size, trial.params, train, train_idx, val_idx,
        seed=fold_seed(study.seed, trial.config, repeat, fold), cache=trial.run.features, on_epoch=on_epoch,
        keeper=trial.keeper, tensorboard=fold_logdir(
            train, trial.run.results_dir, trial.candidate.name, trial.search, trial.number, repeat, study.cv.repeats, fold
        ), steer_idx=val_idx,
    )
    metrics = fold_metrics(dataset.labels[val_idx], result.probabilities, study.metrics.top_k, trial.extra_metrics)
    settings = params_without_defaults(trial.params) | {
        k: getattr(train, k) for k in ("epochs", "batch_size", "optimizer", "learning_rate")
    }
    if result.backbone:
        settings |= {"weights": train.weights, "freeze_base": train.freeze_base, "fine_tune": train.fine_tune is not None}
    dead = learned_nothing(result.probabilities)
    record = FoldRecord(
        candidate=trial.candidate.name, search_id=trial.search, config_id=trial.config, trial=trial.number,
        repeat=repeat, fold=fold, params=settings, tuned=dict(trial.sampled), metrics=metrics,
        fit_seconds=round(result.fit_seconds, 3), epochs_run=result.epochs_run, train_size=len(train_idx),
        val_size=len(val_idx), warnings=([f"{LEARNED_NOTHING}: {dead}"] if dead else []) + result.warnings,
        history=result.history,
    )
    trial.records.write_predictions(record.key, val_idx, dataset.labels[val_idx], result.probabilities)
    return record
