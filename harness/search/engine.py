"""The search: one Optuna study per candidate; one trial = one configuration scored on every fold."""

from __future__ import annotations

import hashlib
import json
import logging
import os
import signal
import socket
import threading
import time
import warnings
from pathlib import Path
from typing import Any

import numpy as np
import optuna
from optuna.trial import TrialState
from rich.console import Console
from rich.markup import escape
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn

from harness.config.study import Candidate, Study, effective_params
from harness.data.dataset import Dataset
from harness.errors import HarnessError
from harness.evaluation.scores import fold_metrics, learned_nothing
from harness.data.folds import fold_indices
from harness.core.memory import MemoryGuard, RestartForMemory
from harness.plugins import Plugins
from harness.search.context import RunContext, run_info
from harness.specs import FoldRecord, TrialSummary
from harness.training.features import FeatureCache
from harness.results import storage as store_module
from harness.results.storage import JOURNAL_FILE, RUN_FILE, SQLITE_FILE, ResultStore, folds_grouped
from harness.training.train import fit_fold

__all__ = ["JOURNAL_FILE", "RUN_FILE", "SQLITE_FILE", "folds_grouped"]
#: Set by a first Ctrl-C or SIGTERM (see harness.cli.app): the run stops at the next epoch end, keeping
#: finished folds.
STOP_REQUESTED = threading.Event()
_stop_signal = signal.SIGINT


def request_stop(signum: int = signal.SIGINT) -> None:
    """Ask the run to stop at the next epoch end, remembering which signal asked (for the exit code)."""
    global _stop_signal
    _stop_signal = signum
    STOP_REQUESTED.set()


def stop_signal() -> int:
    """The signal that asked the run to stop: SIGINT (Ctrl-C) unless another did."""
    return _stop_signal
INTERRUPTED, RETRY_OF, OWNER, ERROR, SURPLUS = "interrupted", "retry_of", "owner", "error", "surplus"


def search_id(study: Study, candidate: Candidate) -> str:
    """The Optuna study name of a candidate: a new one whenever its fixed settings change."""
    return f"{candidate.name}-{candidate.fingerprint(study)}"


def config_id(search: str, params: dict[str, Any]) -> str:
    text = json.dumps([search, params], sort_keys=True, default=str)
    return hashlib.sha256(text.encode()).hexdigest()[:12]


def fold_seed(seed: int, config: str, repeat: int, fold: int) -> int:
    digest = hashlib.sha256(f"{seed}/{config}/{repeat}/{fold}".encode()).digest()
    return int.from_bytes(digest[:4], "little") % (2**31 - 1)


def direction(study: Study, plugins: Plugins) -> str:
    objective = study.metrics.objective
    if objective == "loss":
        return "minimize"
    if objective in plugins.metrics and not plugins.metrics.get(objective).greater_is_better:
        return "minimize"
    return "maximize"


def open_storage(study: Study, results_dir: Path) -> optuna.storages.BaseStorage:
    """The study's storage (see harness.results.storage): ``search.storage``, else the results folder's
    journal file, with heartbeats; a trial whose worker stopped beating is queued again."""
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


def make_sampler(name: str, seed: int) -> optuna.samplers.BaseSampler:
    if name == "random":
        return optuna.samplers.RandomSampler(seed=seed)
    if name == "cmaes":
        return optuna.samplers.CmaEsSampler(seed=seed)
    if name == "qmc":
        return optuna.samplers.QMCSampler(seed=seed)
    return optuna.samplers.TPESampler(seed=seed, n_startup_trials=5)


def configuration_number(trials: list[optuna.trial.FrozenTrial], number: int) -> int:
    """How many configurations were proposed before trial ``number``: its earlier trials less
    those a retry replaced (cut off by a crash) and those never run (over the budget). A resumed
    search numbers its configurations as an uninterrupted one does."""
    replaced = {t.user_attrs.get(RETRY_OF) for t in trials}
    return sum(
        t.number < number and t.number not in replaced and not t.user_attrs.get(SURPLUS) for t in trials
    )


class SeededPerTrial(optuna.samplers.BaseSampler):
    """A sampler made afresh for each trial, seeded from the candidate's seed and the trial's
    configuration number: what it proposes depends on the seed, the candidate and the trial
    history alone, never on what a process sampled before (so kill -9 and resume, or several
    workers, propose what one uninterrupted run would)."""

    def __init__(self, name: str, seed: int):
        self._name, self._seed = name, seed
        self._current = make_sampler(name, seed)

    def before_trial(self, study: optuna.Study, trial: optuna.trial.FrozenTrial) -> None:
        index = configuration_number(study.get_trials(deepcopy=False), trial.number)
        self._current = make_sampler(self._name, sampler_seed(self._seed, str(index)))
        self._current.before_trial(study, trial)

    def infer_relative_search_space(self, study, trial):
        return self._current.infer_relative_search_space(study, trial)

    def sample_relative(self, study, trial, search_space):
        return self._current.sample_relative(study, trial, search_space)

    def sample_independent(self, study, trial, param_name, param_distribution):
        return self._current.sample_independent(study, trial, param_name, param_distribution)

    def after_trial(self, study, trial, state, values) -> None:
        self._current.after_trial(study, trial, state, values)


def study_sampler(name: str, seed: int) -> optuna.samplers.BaseSampler:
    """The sampler of one candidate's search. QMC keeps one seed: its points come from one
    scrambled sequence, indexed by the study's count of trials."""
    return make_sampler(name, seed) if name == "qmc" else SeededPerTrial(name, seed)


def make_pruner(name: str) -> optuna.pruners.BasePruner:
    if name == "median":
        return optuna.pruners.MedianPruner(n_startup_trials=3, n_warmup_steps=1)
    if name == "percentile":
        return optuna.pruners.PercentilePruner(25.0, n_startup_trials=3, n_warmup_steps=1)
    if name == "hyperband":
        return optuna.pruners.HyperbandPruner()
    if name == "successive_halving":
        return optuna.pruners.SuccessiveHalvingPruner()
    return optuna.pruners.NopPruner()


def write_run_file(run: RunContext, plugins: Plugins, failures: dict[str, str] | None = None,
                   store: ResultStore | None = None) -> None:
    """What `harness leaderboard` needs to rebuild the table from the records alone: the settings
    as run (overrides listed) and the candidates that failed, with their reasons. With ``store``,
    the storage keeps it too (for every machine of the study)."""
    study = run.study
    info = {
        "study": study.name,
        "study_file": str(study.path),
        "overrides": study.overrides,
        "objective": study.metrics.objective,
        "direction": direction(study, plugins),
        "top_k": study.metrics.top_k,
        "folds": study.cv.folds,
        "repeats": study.cv.repeats,
        "scheme": study.cv.scheme,
        # Whether folds kept groups together, as run: a dataset without groups splits by image either way.
        "grouped": bool(study.cv.grouped and run.dataset.has_groups),
        "classes": run.dataset.classes,
        "candidates": [
            {
                "name": c.name, "model": c.model, "search_id": search_id(study, c),
                "weights": c.train.weights, "freeze_base": c.train.freeze_base,
            }
            for c in study.candidates
        ],
        "failed": dict(failures or {}),
        # For reports rebuilt later: what the data audit said, and where the search lives.
        "notes": list(run.notes),
        "storage": study.search.storage or None,
        "data_root": str(run.data_root) if run.data_root else None,
    }
    if store is not None:
        store.save_run({k: v for k, v in info.items() if k not in LOCAL_RUN_KEYS})
    path = run.results_dir / RUN_FILE
    tmp = path.with_name(f"{path.name}.{os.getpid()}.tmp")  # unique: two processes may write at once
    tmp.write_text(json.dumps(info, indent=2))
    tmp.replace(path)


#: What run.json says about this machine rather than the study: kept out of the shared description.
LOCAL_RUN_KEYS = ("data_root", "storage")


def local_run_settings(run: RunContext) -> dict[str, Any]:
    return {"data_root": str(run.data_root) if run.data_root else None, "storage": run.study.search.storage or None}


class _Progress:
    """Bars for trials, folds and epochs; a line per finished trial."""

    def __init__(self, console: Console, disable: bool = False):
        self.bars = Progress(
            TextColumn("{task.description}"),
            BarColumn(bar_width=24),
            MofNCompleteColumn(),
            TimeElapsedColumn(),
            console=console,
            transient=True,
            disable=disable,
        )
        self.console = console

    def __enter__(self):
        self.bars.__enter__()
        self.trials = self.bars.add_task("trials", total=1)
        self.folds = self.bars.add_task("  folds", total=1)
        self.epochs = self.bars.add_task("    epochs", total=1)
        return self

    def __exit__(self, *exc):
        return self.bars.__exit__(*exc)


def run_search(
    run: RunContext,
    plugins: Plugins,
    storage: str | optuna.storages.BaseStorage | None = None,
    console: Console | None = None,
    worker: int | None = None,
    memory: MemoryGuard | None = None,
) -> dict[str, str]:
    """Run every candidate's search until it has its trials; resumes whatever a previous run left.

    Several processes may run this at once on one study (``worker`` = 0, 1, ...; bars off, lines
    labelled) when the storage is safe for it; a trial whose process died is retried by whichever
    process sees it first. A candidate whose every trial fails does not stop the others: the
    result maps each such candidate's name to the reason (see ``candidate_failures``). With
    ``memory``, a process grown past its budget stops between trials with RestartForMemory.
    """
    study = run.study
    console = console or Console(stderr=True)
    storage = storage or open_storage(study, run.results_dir)
    records = ResultStore(storage, study.name, mirror_dir=run.results_dir)
    optuna.logging.set_verbosity(optuna.logging.WARNING)
    _keep_reported_failures_out_of_optunas_log()
    splits = [(r, f) for r in range(study.cv.repeats) for f in range(study.cv.folds)]
    extra_metrics = [plugins.metrics.get(m) for m in study.metrics.extra]
    label = "" if worker is None else escape(f"[worker {worker}] ")
    with _Progress(console, disable=worker is not None) as progress:
        while True:
            _search_each_candidate(
                run, plugins, storage, records, console, progress, label, splits, extra_metrics, memory
            )
            if not _wait_for_other_workers(study, storage, console, label):
                break
    return candidate_failures(study, storage)


def _wait_for_other_workers(study: Study, storage, console: Console, label: str) -> bool:
    """Once this worker has nothing left to start, wait while trials run elsewhere: True as soon as
    one of them is queued again (its worker stopped beating, so this one finishes it), False when
    none runs any more."""
    studies = []
    for candidate in study.candidates:
        try:
            studies.append(optuna.load_study(study_name=search_id(study, candidate), storage=storage))
        except KeyError:
            continue
    announced = False
    while True:
        for optuna_study in studies:
            _retry_cut_off(optuna_study)
        states = [t.state for s in studies for t in s.get_trials(deepcopy=False)]
        if any(_finished(s) < study.search.trials and _has_waiting(s) for s in studies):
            return True
        if TrialState.RUNNING not in states:
            return False
        if not announced:
            running = states.count(TrialState.RUNNING)
            console.print(f"[dim]{label}waiting for {running} trial(s) running elsewhere (a worker silent for "
                          f"{study.search.grace_seconds} s counts as gone and its trial is run here)[/]")
            announced = True
        stop_if_requested()
        time.sleep(min(1.0, study.search.heartbeat_seconds))


def _has_waiting(optuna_study: optuna.Study) -> bool:
    return any(t.state == TrialState.WAITING for t in optuna_study.get_trials(deepcopy=False))


def _search_each_candidate(run, plugins, storage, records, console, progress, label, splits, extra_metrics, memory):
    """Each candidate's search until its budget is taken (run, running or queued)."""
    study = run.study
    for candidate in study.candidates:
        sid = search_id(study, candidate)
        spec = plugins.models.get(candidate.model)
        optuna_study = _open_study(study, sid, storage, plugins, candidate.name)
        done = _finished(optuna_study)
        remaining = max(0, study.search.trials - done)
        progress.bars.update(
            progress.trials, description=f"{candidate.name}: trials", total=study.search.trials, completed=done
        )
        if remaining == 0:
            console.print(f"[dim]{label}{candidate.name}: {done} trials already done[/]")
            continue

        last_error = ""  # of this process's previous trial of this candidate ("" if it did not fail)

        def objective(trial: optuna.Trial, candidate=candidate, sid=sid, spec=spec) -> float:
            nonlocal last_error
            if over_budget(trial.study.get_trials(deepcopy=False), trial.number, study.search.trials):
                trial.set_user_attr(SURPLUS, True)  # another worker took the last place: not run
                trial.study.stop()
                raise OverBudget(f"trial {trial.number} is over the budget of {study.search.trials}")
            sampled = {name: dim.suggest(trial) for name, dim in candidate.space.items()}
            params, train = effective_params(candidate, sampled)
            cid = config_id(sid, sampled)
            trial.set_user_attr("config_id", cid)
            trial.set_user_attr(OWNER, _owner())
            trial_records: list[FoldRecord] = []
            progress.bars.update(progress.folds, total=len(splits), completed=0)
            try:
                for step, (repeat, fold) in enumerate(splits):
                    trial_records.append(fold_record(
                        run, plugins, records, spec, candidate, params, train, sampled, sid, cid, trial.number,
                        repeat, fold, extra_metrics, progress,
                    ))
                    progress.bars.update(progress.folds, completed=step + 1)
                    running = float(np.mean([r.metrics[study.metrics.objective] for r in trial_records]))
                    trial.report(running, step)
                    if step + 1 < len(splits) and trial.should_prune():
                        _trial_line(console, label, candidate, trial.number, "pruned", running, sampled, trial_records, study)
                        _trial_end(plugins, run, candidate, trial.number, "pruned", running, sampled, trial_records)
                        raise optuna.TrialPruned()
            except HarnessError as exc:
                trial.set_user_attr(ERROR, str(exc))
                console.print(f"[red]{label}{candidate.name} trial {trial.number} failed:[/] {escape(str(exc))}")
                _trial_end(plugins, run, candidate, trial.number, "failed", None, sampled, trial_records)
                if str(exc) == last_error:  # missing weights, bad data: every trial would fail so
                    console.print(
                        f"[red]{label}{candidate.name}: two trials in a row failed with the same error; its "
                        "search stops here.[/] Fix it and run the same command again: finished trials are kept."
                    )
                    trial.study.stop()
                last_error = str(exc)
                raise
            except (KeyboardInterrupt, OSError):  # Ctrl-C, a full disk: the next run retries this configuration
                try:
                    trial.set_user_attr(INTERRUPTED, True)
                except OSError:  # the storage is on the full disk too: its trial stays RUNNING, retried as dead
                    pass
                raise
            value = float(np.mean([r.metrics[study.metrics.objective] for r in trial_records]))
            _trial_line(console, label, candidate, trial.number, "complete", value, sampled, trial_records, study)
            _trial_end(plugins, run, candidate, trial.number, "complete", value, sampled, trial_records)
            progress.bars.advance(progress.trials)
            last_error = ""
            return value

        def after_trial(optuna_study: optuna.Study, _trial) -> None:
            nonlocal restart
            _retry_cut_off(optuna_study)
            if _finished(optuna_study) >= study.search.trials:
                optuna_study.stop()  # other workers may have done the rest
            restart = memory.over_budget() if memory is not None else None
            if restart:
                optuna_study.stop()

        restart: str | None = None

        try:
            optuna_study.optimize(
                objective, n_trials=remaining, catch=(HarnessError,), callbacks=[after_trial], gc_after_trial=False
            )
        except AssertionError as exc:
            cause = _file_system_cause(exc)
            if cause is None:
                raise
            _name_the_folder(cause, run.results_dir)
            raise cause from None
        except OSError as exc:
            _name_the_folder(exc, run.results_dir)
            raise
        if restart:
            raise RestartForMemory(restart)


def _name_the_folder(exc: OSError, folder: Path) -> None:
    """A write to an open file fails without a file name: name the results folder it was in."""
    if exc.filename is None:
        exc.filename = str(folder)


def _file_system_cause(exc: BaseException) -> OSError | None:
    """The OSError under an exception, if any. Optuna, failing to write a trial's end to a storage on
    a full or read-only disk, raises AssertionError("Should not reach.") over the real error."""
    seen = exc.__context__
    while seen is not None and not isinstance(seen, OSError):
        seen = seen.__context__
    return seen


class OverBudget(HarnessError):
    """A trial started when the budget was already taken by running or finished trials."""


def over_budget(trials: list[optuna.trial.FrozenTrial], number: int, budget: int) -> bool:
    """Whether trial ``number`` is beyond the budget: trials that count (finished, or running or
    queued to run) are ranked by number, so of two workers racing for the last place exactly one
    runs, whichever way their checks interleave."""
    live = (TrialState.COMPLETE, TrialState.PRUNED, TrialState.RUNNING, TrialState.WAITING)
    replaced = _replaced(trials)
    return sum(t.number < number and t.state in live and t.number not in replaced for t in trials) >= budget


def _replaced(trials: list[optuna.trial.FrozenTrial]) -> set[int]:
    """Numbers of the trials a retry stands for: they no longer count against the budget."""
    return {t.user_attrs[RETRY_OF] for t in trials if RETRY_OF in t.user_attrs}


def candidate_failures(study: Study, storage) -> dict[str, str]:
    """Candidates without a completed trial in the storage, each with the error of its last failed trial."""
    pairs = [(c.name, search_id(study, c)) for c in study.candidates]
    return store_module.candidate_failures(storage, pairs, ERROR)


def _not_a_reported_failure(record: logging.LogRecord) -> bool:
    """Optuna logs a trial that raised with the exception's traceback, then its value (None). A
    HarnessError is a message for the user, which the objective has already printed; an interrupt
    and a file-system fault (a full or read-only disk) are the command line's to announce, in one
    line; any other error reaches the command line with its traceback anyway."""
    reported = record.exc_info and isinstance(record.exc_info[1], (HarnessError, KeyboardInterrupt, OSError))
    return not reported and not record.getMessage().endswith("failed with value None.")


def _keep_reported_failures_out_of_optunas_log() -> None:
    logger = logging.getLogger("optuna.study._optimize")  # where Optuna logs failed trials
    if _not_a_reported_failure not in logger.filters:
        logger.addFilter(_not_a_reported_failure)


def sampler_seed(seed: int, candidate: str) -> int:
    """A candidate's own sampler seed: two candidates of one study never draw the same sequence."""
    return int.from_bytes(hashlib.sha256(f"{seed}/{candidate}".encode()).digest()[:4], "little") % (2**31 - 1)


def _open_study(study: Study, sid: str, storage, plugins: Plugins, candidate: str) -> optuna.Study:
    try:
        optuna_study = optuna.create_study(
            study_name=sid,
            storage=storage,
            load_if_exists=True,
            direction=direction(study, plugins),
            pruner=make_pruner(study.search.pruner),
        )
    except (ValueError, ImportError, optuna.exceptions.StorageInternalError) as exc:
        raise HarnessError(f"cannot open the Optuna storage '{storage}': {exc}") from exc
    _retry_cut_off(optuna_study)
    optuna_study.sampler = study_sampler(study.search.sampler, sampler_seed(study.seed, candidate))
    return optuna_study


def _owner() -> str:
    return f"{socket.gethostname()}:{os.getpid()}"


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
        _retry_cut_off(optuna_study, every_running_trial_is_dead=every_running_trial_is_dead)
        trials = optuna_study.get_trials(deepcopy=False)
        replaced = _replaced(trials)
        for t in trials:
            config = t.user_attrs.get("config_id")
            if t.state == TrialState.COMPLETE and config and t.number not in replaced:
                if records.count(sid, config) < splits:
                    optuna_study.enqueue_trial(t.params, user_attrs={RETRY_OF: t.number})


def _retry_cut_off(optuna_study: optuna.Study, every_running_trial_is_dead: bool = False) -> None:
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


def stop_if_requested() -> None:
    if STOP_REQUESTED.is_set():
        raise KeyboardInterrupt


def _finished(optuna_study: optuna.Study) -> int:
    """Finished configurations: complete or pruned trials that no retry replaced."""
    trials = optuna_study.get_trials(deepcopy=False)
    replaced = _replaced(trials)
    return sum(t.state in (TrialState.COMPLETE, TrialState.PRUNED) and t.number not in replaced for t in trials)


def fold_record(
    run, plugins, records, spec, candidate, params, train, sampled, sid, cid, number, repeat, fold, extra_metrics, progress
) -> FoldRecord:
    """One fold's record: reused when an earlier run or worker finished it, else trained and appended now."""
    record = records.get(sid, cid, repeat, fold)
    if record is None:
        record = _run_fold(
            run, records, spec, candidate, params, train, sampled, sid, cid, number, repeat, fold, extra_metrics,
            progress,
        )
        records.append(record)
        plugins.hook.on_fold_end(run=run_info(run), record=record)
    return record


def _run_fold(run, records, spec, candidate, params, train, sampled, sid, cid, number, repeat, fold, extra_metrics,
              progress):
    study, dataset = run.study, run.dataset
    stop_if_requested()
    train_idx, val_idx = fold_indices(run.folds, repeat, fold)
    progress.bars.update(progress.epochs, total=train.total_epochs, completed=0)
    result = fit_fold(
        spec, dataset, candidate.image_size, params, train, train_idx, val_idx,
        seed=fold_seed(study.seed, cid, repeat, fold), cache=run.features,
        on_epoch=lambda epoch, logs: (progress.bars.update(progress.epochs, completed=epoch + 1), stop_if_requested()),
    )
    metrics = fold_metrics(dataset.labels[val_idx], result.probabilities, study.metrics.top_k, extra_metrics)
    settings = params | {k: getattr(train, k) for k in ("epochs", "batch_size", "optimizer", "learning_rate")}
    if result.backbone:
        settings |= {"weights": train.weights, "freeze_base": train.freeze_base, "fine_tune": train.fine_tune is not None}
    dead = learned_nothing(result.probabilities)
    record = FoldRecord(
        candidate=candidate.name, search_id=sid, config_id=cid, trial=number, repeat=repeat, fold=fold,
        params=settings, tuned=dict(sampled), metrics=metrics, fit_seconds=round(result.fit_seconds, 3),
        epochs_run=result.epochs_run, train_size=len(train_idx), val_size=len(val_idx),
        warnings=[f"learned nothing: {dead}"] if dead else [], history=result.history,
    )
    records.write_predictions(record.key, val_idx, dataset.labels[val_idx], result.probabilities)
    return record


def _trial_line(console, label, candidate, number, state, value, sampled, records, study):
    values = [r.metrics[study.metrics.objective] for r in records]
    spread = f" ± {np.std(values, ddof=1):.3f}" if len(values) > 1 else ""
    shown = ", ".join(f"{k}={_short(v)}" for k, v in sampled.items()) or "fixed settings"
    console.print(
        f"{label}{candidate.name} trial {number} {state}: {study.metrics.objective} {value:.3f}{spread} "
        f"over {len(records)} fold(s) [dim]({shown})[/]"
    )
    flagged = [r for r in records if r.warnings]
    if flagged:
        console.print(
            f"[yellow]warning:[/] {label}{escape(candidate.name)} trial {number}: {len(flagged)} of {len(records)} "
            f"fold(s) {escape(flagged[0].warnings[0])}. Its score is no evidence of learning: check the learning "
            "rate, the weights and freeze_base."
        )


def _short(value: Any) -> str:
    return f"{value:.3g}" if isinstance(value, float) else json.dumps(value) if isinstance(value, (list, tuple)) else str(value)


def _trial_end(plugins, run, candidate, number, state, value, sampled, records):
    plugins.hook.on_trial_end(
        run=run_info(run), trial=TrialSummary(candidate.name, number, state, value, dict(sampled), list(records))
    )


