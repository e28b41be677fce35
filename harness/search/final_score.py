"""After selection: a search's selected configuration scored once on images the search never saw.

The locked test set (``[cv] test``) is scored once per candidate when its search is done; nested
cross-validation scores each outer fold the same way (see ``harness.search.nested``). The score is
stored in the study's storage like a fold record: written once (a claim makes one process do it,
whichever workers finish together), read back on every rerun, and never shown to a search.
"""

from __future__ import annotations

import os
import time
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from rich.console import Console

from harness.config.study import Candidate, effective_params
from harness.core.stop import StopToken
from harness.data.folds import cv_indices, fold_indices, test_indices
from harness.evaluation.scores import fold_metrics
from harness.evaluation.selection import select_configuration
from harness.evaluation.stats import binomial_interval
from harness.plugins import Plugins
from harness.results.optuna_storage import is_shared
from harness.results.storage import ResultStore
from harness.search.context import RunContext
from harness.search.ids import direction, fold_seed, search_id
from harness.search.recovery import owner
from harness.specs import TestRecord
from harness.training.fit import fit_fold

#: Where refit models are kept in a results folder (as ``harness.reports.heatmaps.MODELS_DIR``).
MODELS_DIR = "models"
#: Seconds between the scoring process's signs of life in its claim.
BEAT_SECONDS = 5.0


@dataclass
class FinalScore:
    """What one final scoring needs: the search, the rows it could use, the rows it never saw."""

    run: RunContext
    plugins: Plugins
    store: ResultStore
    candidate: Candidate
    search: str
    #: Every row the search trained or validated on (what a refit trains on), and the unseen rows.
    train_idx: np.ndarray
    test_idx: np.ndarray
    #: The folds the search used (the "folds" model retrains them); None: the run's own folds.
    folds: object = None
    outer: int | None = None

    @property
    def where(self) -> str:
        return "the test set" if self.outer is None else f"outer fold {self.outer}"


def score_test_set(run: RunContext, plugins: Plugins, store: ResultStore, console: Console, stop: StopToken) -> None:
    """Score every candidate's selected configuration on the locked test set, once (none without one)."""
    test_idx = test_indices(run.folds)
    if not run.study.cv.has_test or not len(test_idx):
        return
    for candidate in run.study.candidates:
        target = FinalScore(run, plugins, store, candidate, search_id(run.study, candidate),
                            cv_indices(run.folds), test_idx)
        final_score(target, console, stop)


def final_score(target: FinalScore, console: Console, stop: StopToken) -> TestRecord | None:
    """The search's final score: read back when stored, else computed and stored now; None while
    the search has no complete configuration."""
    store, study = target.store, target.run.study
    stored = store.get_test(target.search)
    if stored is not None:
        return stored
    folds = target.folds if target.folds is not None else target.run.folds
    n_splits = study.cv.folds * study.cv.repeats
    maximize = direction(study, target.plugins) == "maximize"
    selection = select_configuration(store.records([target.search]), study.metrics.objective, maximize, n_splits)
    if selection is None:
        return None
    # The run's own folder holds the only process (its run lock): any claim left is a dead one.
    stale = study.search.grace_seconds if is_shared(study.search.storage) else 0.0
    while not store.claim_test(target.search, owner(), stale):
        if store.get_test(target.search) is not None:
            return store.get_test(target.search)
        stop.raise_if_requested()
        time.sleep(1.0)
    if store.get_test(target.search) is not None:  # stored while this process waited for the claim
        return store.get_test(target.search)
    console.print(f"{target.candidate.name}: scoring its selected configuration ({len(selection.means)} complete) "
                  f"on {target.where}: {len(target.test_idx)} images, never seen by its search…")
    record, probabilities = _score(target, selection, folds, stop)
    labels = target.run.dataset.labels[target.test_idx]
    store.append_test(record, target.test_idx, labels, probabilities)
    store.release_test_claim(target.search)
    low, high = binomial_interval(round(record.metrics["accuracy"] * record.n), record.n)
    console.print(f"{target.candidate.name} on {target.where}: accuracy {record.metrics['accuracy']:.3f} "
                  f"(95% CI {low:.3f}–{high:.3f}, n = {record.n}); cross-validated {study.metrics.objective} "
                  f"{record.cv_score:.3f}")
    return record


def _score(target: FinalScore, selection, folds, stop: StopToken) -> tuple[TestRecord, np.ndarray]:
    """Fit the selected configuration as ``test.model`` says and score the unseen rows."""
    run, candidate = target.run, target.candidate
    study, dataset = run.study, run.dataset
    first = selection.records[0]
    params, train = effective_params(candidate, first.tuned)
    spec = target.plugins.models.get(candidate.model)
    beat = _beat(target, stop)
    started = time.perf_counter()
    if study.cv.test_model == "refit":
        fits = [(target.train_idx, None, fold_seed(study.seed, selection.config_id, -1, -1))]
    else:  # each fold's model as its search trained it: its validation rows steer it where the study says so
        fits = [(*fold_indices(folds, 0, fold), fold_seed(study.seed, selection.config_id, 0, fold))
                for fold in range(study.cv.folds)]
    probabilities = np.zeros((len(target.test_idx), len(dataset.classes)))
    keep = _refit_file(target, selection.config_id) if study.cv.test_model == "refit" else None
    for train_idx, steer_idx, seed in fits:
        partial = None if keep is None else keep.with_name(f".{keep.stem}.{os.getpid()}.partial.keras")
        try:
            result = fit_fold(spec, dataset, candidate.image_size, params, train, train_idx, target.test_idx,
                              seed=seed, cache=run.features, on_epoch=beat, save_model=partial,
                              steer_idx=steer_idx)
            if partial is not None:
                os.replace(partial, keep)  # whole or absent
        finally:
            if partial is not None:
                partial.unlink(missing_ok=True)
        probabilities += result.probabilities / len(fits)
    extra = [target.plugins.metrics.get(m) for m in study.metrics.extra]
    metrics = fold_metrics(dataset.labels[target.test_idx], probabilities, study.metrics.top_k, extra)
    record = TestRecord(
        candidate=candidate.name, search_id=target.search, config_id=selection.config_id,
        model=study.cv.test_model, outer=target.outer, n=len(target.test_idx), metrics=metrics,
        cv_score=selection.score, configurations=len(selection.means), params=first.params, tuned=first.tuned,
        train_size=len(target.train_idx), fit_seconds=round(time.perf_counter() - started, 3),
    )
    return record, probabilities


def _refit_file(target: FinalScore, config: str) -> Path | None:
    """Where the test set's refit is kept: the report's Grad-CAM heat maps use the same model
    (``harness.reports.heatmaps.model_path``) instead of refitting it. None for an outer fold."""
    if target.outer is not None:
        return None
    folder = Path(target.run.results_dir) / MODELS_DIR
    folder.mkdir(parents=True, exist_ok=True)
    return folder / f"{target.search}-{config}.keras"


def _beat(target: FinalScore, stop: StopToken):
    """The epoch callback of a final fit: a sign of life in the claim (every few seconds), and the stop check."""
    last = [0.0]

    def on_epoch(epoch: int, logs: dict) -> None:
        stop.raise_if_requested()
        if time.time() - last[0] > BEAT_SECONDS:
            target.store.beat_test_claim(target.search)
            last[0] = time.time()

    return on_epoch
