"""The search: one Optuna study per candidate; one trial = one configuration scored on every fold."""

from __future__ import annotations

import logging
import time
from dataclasses import dataclass
from pathlib import Path

import optuna
from optuna.trial import TrialState
from rich.console import Console
from rich.markup import escape

from harness.config.study import Candidate, Study, effective_params
from harness.core.memory import MemoryGuard, RestartForMemory
from harness.core.stop import StopToken
from harness.errors import HarnessError
from harness.plugins import Plugins
from harness.results.layout import JOURNAL_FILE, RUN_FILE, SQLITE_FILE, folds_grouped
from harness.results.storage import ResultStore
from harness.search.context import RunContext
from harness.search.ids import config_id, direction, fold_seed, sampler_seed, search_id  # noqa: F401
from harness.search.optuna_setup import (  # noqa: F401
    SeededPerTrial, configuration_number, make_pruner, make_sampler, open_candidate_study, study_sampler,
)
from harness.search.progress import SearchProgress
from harness.search.recovery import (  # noqa: F401
    ERROR, INTERRUPTED, OWNER, RETRY_OF, SURPLUS, OverBudget, candidate_failures, finished, has_waiting,
    open_storage, over_budget, owner, queue_again, repair_journal, requeue_unfinished_trials, retry_cut_off,
)
from harness.search.run_file import LOCAL_RUN_KEYS, local_run_settings, write_run_file  # noqa: F401
from harness.search.trial import TrialContext, announce, fold_record, run_trial, trial_end  # noqa: F401
from harness.training.keeper import ModelKeeper

__all__ = ["JOURNAL_FILE", "RUN_FILE", "SQLITE_FILE", "folds_grouped"]

_retry_cut_off = retry_cut_off  # the 0.1 name, which tests and tools import

@dataclass
class SearchSession:
    """One process's search of a study: what each candidate's trials share."""

    run: RunContext
    plugins: Plugins
    storage: optuna.storages.BaseStorage
    records: ResultStore
    progress: SearchProgress
    stop: StopToken
    keeper: ModelKeeper
    #: "[worker N] " before each line when several workers share a console.
    label: str = ""
    memory: MemoryGuard | None = None

    def __post_init__(self) -> None:
        self.extra_metrics = [self.plugins.metrics.get(m) for m in self.run.study.metrics.extra]

    @property
    def splits(self) -> list[tuple[int, int]]:
        cv = self.run.study.cv
        return [(r, f) for r in range(cv.repeats) for f in range(cv.folds)]


def run_search(
    run: RunContext,
    plugins: Plugins,
    storage: str | optuna.storages.BaseStorage | None = None,
    console: Console | None = None,
    worker: int | None = None,
    memory: MemoryGuard | None = None,
    *,
    stop: StopToken | None = None,
) -> dict[str, str]:
    """Run every candidate's search until it has its trials; resumes whatever a previous run left.

    Several processes may run this at once on one study (``worker`` = 0, 1, ...; bars off, lines
    labelled) when the storage is safe for it; a trial whose process died is retried by whichever
    process sees it first. A candidate whose every trial fails does not stop the others: the
    result maps each such candidate's name to the reason (see ``candidate_failures``). With
    ``memory``, a process grown past its budget stops between trials with RestartForMemory.
    ``stop``: checked between epochs; a request stops the search with KeyboardInterrupt.
    """
    study = run.study
    console = console or Console(stderr=True)
    storage = storage or open_storage(study, run.results_dir)
    records = ResultStore(storage, study.name, mirror_dir=run.results_dir)
    # Optuna's INFO lines for each candidate's study would drown the trial lines; the run's own
    # "harness:<study>" study was created (and announced) before this.
    optuna.logging.set_verbosity(optuna.logging.WARNING)
    _keep_reported_failures_out_of_optunas_log()
    label = "" if worker is None else escape(f"[worker {worker}] ")
    with SearchProgress(console, disable=worker is not None) as progress:
        session = SearchSession(run, plugins, storage, records, progress, stop or StopToken(),
                                ModelKeeper(), label, memory)  # one kept model per worker process
        while True:
            for candidate in study.candidates:
                CandidateSearch(session, candidate).search()
            if not _wait_for_other_workers(session):
                break
    return candidate_failures(study, storage)


def _wait_for_other_workers(session: SearchSession) -> bool:
    """Once this worker has nothing left to start, wait while trials run elsewhere: True as soon as
    one of them is queued again (its worker stopped beating, so this one finishes it), False when
    none runs any more."""
    study, console, label = session.run.study, session.progress.console, session.label
    studies = _started_studies(study, session.storage)
    announced = False
    while True:
        for optuna_study in studies:
            retry_cut_off(optuna_study)
        states = [t.state for s in studies for t in s.get_trials(deepcopy=False)]
        if any(finished(s) < study.search.trials and has_waiting(s) for s in studies):
            return True
        if TrialState.RUNNING not in states:
            return False
        if not announced:
            running = states.count(TrialState.RUNNING)
            console.print(f"[dim]{label}waiting for {running} trial(s) running elsewhere (a worker silent for "
                          f"{study.search.grace_seconds} s counts as gone and its trial is run here)[/]")
            announced = True
        session.stop.raise_if_requested()
        time.sleep(min(1.0, study.search.heartbeat_seconds))


def _started_studies(study: Study, storage) -> list[optuna.Study]:
    studies = []
    for candidate in study.candidates:
        try:
            studies.append(optuna.load_study(study_name=search_id(study, candidate), storage=storage))
        except KeyError:
            continue
    return studies


class CandidateSearch:
    """One candidate's Optuna search in this process, until its budget is taken (run, running or queued)."""

    def __init__(self, session: SearchSession, candidate: Candidate):
        self.session, self.candidate = session, candidate
        self.study = session.run.study
        self.sid = search_id(self.study, candidate)
        self.spec = session.plugins.models.get(candidate.model)
        self.last_error = ""  # of this process's previous trial of this candidate ("" if it did not fail)
        self.restart: str | None = None  # why this process must restart (its memory budget), if it must

    def search(self) -> None:
        """Run the candidate's remaining trials; RestartForMemory when the memory budget is spent."""
        session, study = self.session, self.study
        optuna_study = open_candidate_study(study, self.sid, session.storage, session.plugins, self.candidate.name)
        done = finished(optuna_study)
        remaining = max(0, study.search.trials - done)
        progress = session.progress
        progress.bars.update(
            progress.trials, description=f"{self.candidate.name}: trials", total=study.search.trials, completed=done
        )
        if remaining == 0:
            progress.console.print(f"[dim]{session.label}{self.candidate.name}: {done} trials already done[/]")
            return
        self._optimize(optuna_study, remaining)
        if self.restart:
            raise RestartForMemory(self.restart)

    def _optimize(self, optuna_study: optuna.Study, remaining: int) -> None:
        try:
            optuna_study.optimize(
                self.objective, n_trials=remaining, catch=(HarnessError,), callbacks=[self.after_trial],
                gc_after_trial=False,
            )
        except AssertionError as exc:
            cause = _file_system_cause(exc)
            if cause is None:
                raise
            _name_the_folder(cause, self.session.run.results_dir)
            raise cause from None
        except OSError as exc:
            _name_the_folder(exc, self.session.run.results_dir)
            raise

    def objective(self, trial: optuna.Trial) -> float:
        """One Optuna trial: the sampled configuration on every fold; its mean objective."""
        context = self._start_trial(trial)
        try:
            value = run_trial(context, self.session.splits, after_fold=lambda step, _: self._pruned(trial, context, step))
        except HarnessError as exc:
            self._failed(trial, context, exc)
            raise
        except (KeyboardInterrupt, OSError):  # Ctrl-C, a full disk: the next run retries this configuration
            try:
                trial.set_user_attr(INTERRUPTED, True)
            except OSError:  # the storage is on the full disk too: its trial stays RUNNING, retried as dead
                pass
            raise
        if value is None:
            raise optuna.TrialPruned()
        self.last_error = ""
        return value

    def _start_trial(self, trial: optuna.Trial) -> TrialContext:
        budget = self.study.search.trials
        if over_budget(trial.study.get_trials(deepcopy=False), trial.number, budget):
            trial.set_user_attr(SURPLUS, True)  # another worker took the last place: not run
            trial.study.stop()
            raise OverBudget(f"trial {trial.number} is over the budget of {budget}")
        sampled = {name: dim.suggest(trial) for name, dim in self.candidate.space.items()}
        params, train = effective_params(self.candidate, sampled)
        cid = config_id(self.sid, sampled)
        trial.set_user_attr("config_id", cid)
        trial.set_user_attr(OWNER, owner())
        s = self.session
        return TrialContext(
            s.run, s.plugins, s.records, self.candidate, self.spec, params, train, sampled, self.sid, cid,
            trial.number, s.extra_metrics, s.progress, s.stop,
            keeper=s.keeper, label=s.label,
        )

    def _pruned(self, trial: optuna.Trial, context: TrialContext, step: int) -> bool:
        """Report the running mean after fold ``step``; True (announced) when Optuna prunes the trial."""
        running = context.mean()
        trial.report(running, step)
        if step + 1 < len(self.session.splits) and trial.should_prune():
            announce(context, "pruned", running)
            return True
        return False

    def _failed(self, trial: optuna.Trial, context: TrialContext, exc: HarnessError) -> None:
        label, name, console = self.session.label, self.candidate.name, self.session.progress.console
        trial.set_user_attr(ERROR, str(exc))
        console.print(f"[red]{label}{name} trial {trial.number} failed:[/] {escape(str(exc))}")
        trial_end(context, "failed", None)
        if str(exc) == self.last_error:  # missing weights, bad data: every trial would fail so
            console.print(
                f"[red]{label}{name}: two trials in a row failed with the same error; its "
                "search stops here.[/] Fix it and run the same command again: finished trials are kept."
            )
            trial.study.stop()
        self.last_error = str(exc)

    def after_trial(self, optuna_study: optuna.Study, _trial) -> None:
        """After each trial: retry what was cut off; stop at the budget or when memory runs out."""
        retry_cut_off(optuna_study)
        if finished(optuna_study) >= self.study.search.trials:
            optuna_study.stop()  # other workers may have done the rest
        memory = self.session.memory
        self.restart = memory.over_budget() if memory is not None else None
        if self.restart:
            optuna_study.stop()


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
