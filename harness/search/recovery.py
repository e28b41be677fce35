"""Recovery and budget: trials cut off by a crash are queued again, and no more trials run than the budget."""

from __future__ import annotations

import os
import socket
import warnings
from pathlib import Path

import optuna
from optuna.trial import TrialState

from harness.config.study import Study
from harness.errors import HarnessError
from harness.results import optuna_storage as store_module
from harness.results.layout import JOURNAL_FILE
from harness.results.storage import ResultStore
from harness.search.ids import search_id

#: Trial user attributes: cut off by an interrupt, the trial a retry stands for, the process that ran
#: it, the error it failed with, and a trial over the budget that never ran.
INTERRUPTED, RETRY_OF, OWNER, ERROR, SURPLUS = "interrupted", "retry_of", "owner", "error", "surplus"


def open_storage(study: Study, results_dir: Path) -> optuna.storages.BaseStorage:
    """The study's storage (see harness.results.optuna_storage): ``search.storage``, else the results
    folder's journal file, with heartbeats; a trial whose worker stopped beating is queued again."""
    return store_module.open_storage(
        study.search.storage, results_dir, study.search.heartbeat_seconds, study.search.grace_seconds,
        on_stale=queue_again,
    )


def queue_again(optuna_study: optuna.Study, trial: optuna.trial.FrozenTrial) -> None:
    """Queue a failed or vanished trial's configuration once more (its finished folds are reused)."""
    trials = optuna_study.get_trials(deepcopy=False)
    if trial.number not in {t.user_attrs.get(RETRY_OF) for t in trials}:
        optuna_study.enqueue_trial(trial.params, user_attrs={RETRY_OF: trial.number})


def repair_journal(results_dir: Path) -> int:
    """Drop a torn last entry of the journal (a crash or a full disk mid-write), which Optuna would
    otherwise join to the next entry and then fail to read. Only for a process that owns the
    folder (workers write concurrently); returns the bytes dropped."""
    path = results_dir / JOURNAL_FILE
    if not path.exists() or path.stat().st_size == 0:
        return 0
    with path.open("rb+") as fh:
        fh.seek(-1, os.SEEK_END)
        if fh.read(1) == b"\n":
            return 0
        fh.seek(0)
        data = fh.read()
        keep = data.rfind(b"\n") + 1
        fh.truncate(keep)
    return len(data) - keep


def requeue_unfinished_trials(study: Study, storage, records: ResultStore, every_running_trial_is_dead: bool) -> None:
    """Before any worker starts, queue again:
    - every RUNNING trial, when this process owns the study's storage (the results folder's own
      journal: no other worker can be running); in a shared storage, those whose heartbeat stopped;
    - every complete trial whose configuration lacks fold records.
    Their finished folds are reused."""
    splits = study.cv.folds * study.cv.repeats
    for candidate in study.candidates:
        sid = search_id(study, candidate)
        try:
            optuna_study = optuna.load_study(study_name=sid, storage=storage)
        except KeyError:  # its search has not started
            continue
        retry_cut_off(optuna_study, every_running_trial_is_dead=every_running_trial_is_dead)
        trials = optuna_study.get_trials(deepcopy=False)
        replaced = replaced_trials(trials)
        for t in trials:
            config = t.user_attrs.get("config_id")
            if t.state == TrialState.COMPLETE and config and t.number not in replaced:
                if records.count(sid, config) < splits:
                    optuna_study.enqueue_trial(t.params, user_attrs={RETRY_OF: t.number})


def retry_cut_off(optuna_study: optuna.Study, every_running_trial_is_dead: bool = False) -> None:
    """Queue once more each trial cut off by a crash, kill -9, Ctrl-C or a full disk; its finished
    folds are reused.

    A RUNNING trial counts as dead when its heartbeat stopped (Optuna fails it and calls
    ``queue_again``), or, with ``every_running_trial_is_dead``, at once.
    """
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", optuna.exceptions.ExperimentalWarning)
        optuna.storages.fail_stale_trials(optuna_study)
    trials = optuna_study.get_trials(deepcopy=False)
    retried = {t.user_attrs.get(RETRY_OF) for t in trials}
    for trial in trials:
        if trial.state == TrialState.RUNNING:
            if not every_running_trial_is_dead:
                continue
            try:
                # Optuna has no public call to fail another process's trial.
                optuna_study._storage.set_trial_state_values(trial._trial_id, state=TrialState.FAIL)
            except optuna.exceptions.UpdateFinishedTrialError:
                continue  # another worker got there first
        elif not (trial.state == TrialState.FAIL and trial.user_attrs.get(INTERRUPTED)):
            continue
        if trial.number not in retried:
            queue_again(optuna_study, trial)


class OverBudget(HarnessError):
    """A trial started when the budget was already taken by running or finished trials."""


def over_budget(trials: list[optuna.trial.FrozenTrial], number: int, budget: int) -> bool:
    """Whether trial ``number`` is beyond the budget: trials that count (finished, or running or
    queued to run) are ranked by number, so of two workers racing for the last place exactly one
    runs, whichever way their checks interleave."""
    live = (TrialState.COMPLETE, TrialState.PRUNED, TrialState.RUNNING, TrialState.WAITING)
    replaced = replaced_trials(trials)
    return sum(t.number < number and t.state in live and t.number not in replaced for t in trials) >= budget


def replaced_trials(trials: list[optuna.trial.FrozenTrial]) -> set[int]:
    """Numbers of the trials a retry stands for: they no longer count against the budget."""
    return {t.user_attrs[RETRY_OF] for t in trials if RETRY_OF in t.user_attrs}


def finished(optuna_study: optuna.Study) -> int:
    """Finished configurations: complete or pruned trials that no retry replaced."""
    trials = optuna_study.get_trials(deepcopy=False)
    replaced = replaced_trials(trials)
    return sum(t.state in (TrialState.COMPLETE, TrialState.PRUNED) and t.number not in replaced for t in trials)


def has_waiting(optuna_study: optuna.Study) -> bool:
    """Whether a trial is queued to run (a retry or an enqueued configuration)."""
    return any(t.state == TrialState.WAITING for t in optuna_study.get_trials(deepcopy=False))


def candidate_failures(study: Study, storage) -> dict[str, str]:
    """Candidates without a completed trial in the storage, each with the error of its last failed trial."""
    pairs = [(c.name, search_id(study, c)) for c in study.candidates]
    return store_module.candidate_failures(storage, pairs, ERROR)


def owner() -> str:
    """This process, as a trial's OWNER attribute names it."""
    return f"{socket.gethostname()}:{os.getpid()}"
