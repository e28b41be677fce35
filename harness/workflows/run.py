"""One study from start to finish: data → folds → search → leaderboard → reports.

``run_study`` (`harness run`), ``run_worker`` (one of its --workers processes) and ``join_study``
(`harness worker` on a shared storage). Each takes ``stop``, the token a signal handler sets to stop
the run at the next epoch end.
"""

from __future__ import annotations

from pathlib import Path

import pandas as pd
from rich.console import Console

from harness.config.study import Study
from harness.core.backend import start_backend
from harness.core.memory import MemoryGuard, worker_budget_mb
from harness.core.paths import CACHE_ENV, DATA_ROOT_ENV, default_cache_dir, default_data_root  # noqa: F401
from harness.core.stop import StopToken
from harness.errors import HarnessError
from harness.plugins import Plugins
from harness.reports.leaderboard import build_leaderboard, print_leaderboard, write_leaderboard
from harness.reports.rows import leaderboard_of
from harness.results.folder import import_results_folder, write_results_folder
from harness.results.layout import JOURNAL_FILE
from harness.results.optuna_storage import describe_storage, is_shared
from harness.results.records import RECORDS_FILE
from harness.results.storage import ResultStore
from harness.search.context import RunContext, run_info
from harness.search.engine import run_search
from harness.search.final_score import score_test_set
from harness.search.nested import run_nested
from harness.search.ids import search_id
from harness.search.recovery import candidate_failures, repair_journal, requeue_unfinished_trials
from harness.search.run_file import local_run_settings, write_run_file
from harness.workflows.lock import LOCK_FILE, run_lock  # noqa: F401
from harness.workflows.prepare import (  # noqa: F401  (the names `harness.workflows.run` always had)
    build_problems, check_results_folder, describe, metric_notes, prepare, start_run,
)
from harness.workflows.processes import end_with_parent, gpu_ids, run_workers, worker_env  # noqa: F401

_start = start_run  # the name tests and tools import


def write_results(run: RunContext, plugins: Plugins, store: ResultStore, failures: dict[str, str] | None) -> pd.DataFrame:
    """The results folder from the storage (every machine's folds), and its leaderboard."""
    write_run_file(run, plugins, failures, store=store)
    write_results_folder(store, run.results_dir, local_run_settings(run))
    table = build_leaderboard(run.results_dir)
    write_leaderboard(table, run.results_dir)
    return table


def run_study(
    study: Study,
    plugins: Plugins,
    results_root: Path,
    data_root: Path,
    console: Console | None = None,
    workers: int = 1,
    worker_command: list[str] | None = None,
    restartable: bool = False,
    *,
    stop: StopToken | None = None,
) -> pd.DataFrame:
    """Run (or resume) a study and return its leaderboard.

    With ``workers`` > 1, ``worker_command`` (a `harness run` of the same study) starts each worker
    process (see ``run_worker``); this process waits for them and then writes the leaderboard.
    ``restartable``: the caller replaces the process on RestartForMemory (see harness.core.memory),
    as the CLI does; then a single worker trains too, replaced by a fresh one when it grows.
    ``stop``: a request stops the run at the next epoch end (KeyboardInterrupt), finished folds kept.
    """
    console = console or Console(stderr=True)
    results_dir = Path(results_root) / study.name
    check_results_folder(results_dir)
    stop = stop or StopToken()
    with run_lock(results_dir) as lock_fd:
        keep_open = () if lock_fd is None else (lock_fd,)
        return _run_study(study, plugins, results_root, data_root, console, workers, worker_command, restartable, stop,
                          keep_open)


def _run_study(
    study, plugins, results_root, data_root, console, workers, worker_command, restartable, stop, keep_open=()
) -> pd.DataFrame:
    results_dir = Path(results_root) / study.name
    torn = 0 if is_shared(study.search.storage) else repair_journal(results_dir)  # this run holds the folder
    if torn:
        console.print(
            f"[yellow]warning:[/] {results_dir / JOURNAL_FILE}: dropped a torn last entry ({torn} bytes) "
            "left by a crash or a full disk"
        )
    run, storage, store = start_run(study, plugins, results_root, data_root, console)
    (run.results_dir / "study.toml").write_text(study.effective_toml(), encoding="utf-8")
    # keras-tuner keeps its own records in the folder: no run in the storage to rewrite them from.
    write_run_file(run, plugins, store=store if study.search.engine != "keras_tuner" else None)
    for name, o in study.overrides.items():
        console.print(f"[dim]{name} = {o['value']} (from {o['from']}; saved in {run.results_dir / 'study.toml'})[/]")
    console.print(
        f"{len(study.candidates)} candidate(s) × {study.search.trials} trial(s) × "
        f"{study.cv.folds * study.cv.repeats} fold(s); results in {run.results_dir}"
    )
    try:
        failures = _search(run, plugins, storage, store, console, workers, worker_command, restartable, stop, keep_open)
    except KeyboardInterrupt:
        _show_interrupted(run, plugins, store)
        raise
    if study.search.engine == "keras_tuner":  # its own records file is its results
        write_run_file(run, plugins, failures)
        table = build_leaderboard(run.results_dir)
        write_leaderboard(table, run.results_dir)
    else:
        table = write_results(run, plugins, store, failures)
    _finish(run, plugins, table)
    _raise_for(failures, run)
    return table


def _search(run, plugins, storage, store, console, workers, worker_command, restartable, stop,
            keep_open=()) -> dict[str, str]:
    """The study's search by its engine, here or in worker processes; the candidates that failed."""
    study = run.study
    if study.search.engine == "keras_tuner":
        console.print(start_backend())
        from harness.search.tuner import run_tuner_search  # imports keras-tuner: only when asked for

        return run_tuner_search(run, plugins, console=console, workers=workers, stop=stop)
    _carry_old_records(study, storage, store, run.results_dir, console)
    # With the folder's own journal, this run holds the whole study: no trial is running.
    requeue_unfinished_trials(study, storage, store, every_running_trial_is_dead=not is_shared(study.search.storage))
    memory = MemoryGuard() if restartable else None
    # The command line trains in a worker process it replaces when it grows (harness.core.memory).
    solo = workers == 1 and restartable and worker_budget_mb() > 0 and worker_command is not None
    if workers > 1 or solo:
        run_workers(workers, worker_command or [], console, stop, solo=solo, keep_open=keep_open)
        failures = candidate_failures(study, storage)
        if solo:  # the worker scored the test set and ran the nested searches too
            return failures
        if study.cv.has_test or study.cv.outer:  # the final scores and nested CV run here
            console.print(start_backend())
    else:
        console.print(start_backend())
        failures = run_search(run, plugins, storage=storage, console=console, memory=memory, stop=stop)
    score_test_set(run, plugins, store, console, stop)
    run_nested(run, plugins, storage, store, console, stop, memory)
    return failures


def _show_interrupted(run: RunContext, plugins: Plugins, store: ResultStore) -> None:
    """What finished so far, ranked; the reporters run when the study ends."""
    if run.study.search.engine != "keras_tuner":
        table = write_results(run, plugins, store, None)
    else:
        table = build_leaderboard(run.results_dir)
        write_leaderboard(table, run.results_dir)
    print_leaderboard(table, Console(), title=f"{run.study.name} leaderboard so far (interrupted)")


def _finish(run: RunContext, plugins: Plugins, table: pd.DataFrame) -> None:
    """The reporters' hook and the leaderboard on the console."""
    plugins.hook.on_study_end(run=run_info(run), leaderboard=leaderboard_of(table, run.study.metrics.objective))
    print_leaderboard(table, Console(), title=f"{run.study.name} leaderboard")


def _raise_for(failures: dict[str, str], run: RunContext) -> None:
    if failures:
        listing = "; ".join(f"'{name}': {reason.rstrip('.')}" for name, reason in failures.items())
        raise HarnessError(
            f"{len(failures)} of {len(run.study.candidates)} candidate(s) failed and are marked so in "
            f"{run.results_dir / 'leaderboard.md'}: {listing}. Fix the cause and run the same command again "
            "to resume: finished trials are kept."
        )


def _carry_old_records(study: Study, storage, store: ResultStore, results_dir: Path, console: Console) -> None:
    imported = import_results_folder(store, results_dir, [search_id(study, c) for c in study.candidates])
    if imported:
        console.print(f"moved {imported} fold record(s) of {results_dir / RECORDS_FILE} into the study's storage")


def run_worker(
    study: Study, plugins: Plugins, results_root: Path, data_root: Path, index: int, *, solo: bool = False,
    stop: StopToken | None = None,
) -> None:
    """One of the worker processes of `harness run`, sharing its parent's results folder. Raises
    RestartForMemory, between trials, once it grew past its budget: its parent starts a fresh one.
    ``solo``: the one worker of a plain `harness run` (bars on, no label), which also scores the test
    set and runs the nested searches."""
    stop = stop or StopToken()
    end_with_parent()
    console = Console(stderr=True)
    run, storage, store = start_run(study, plugins, results_root, data_root, Console(stderr=True, quiet=True))
    backend = start_backend()
    console.print(f"[dim]{backend}[/]" if solo else f"worker {index}: {backend}")
    memory = MemoryGuard.for_worker()
    run_search(run, plugins, storage=storage, console=console, worker=None if solo else index, memory=memory,
               stop=stop)
    if solo:
        score_test_set(run, plugins, store, console, stop)
        run_nested(run, plugins, storage, store, console, stop, memory)


def join_study(
    study: Study, plugins: Plugins, results_root: Path, data_root: Path, console: Console | None = None,
    restartable: bool = False, *, stop: StopToken | None = None,
) -> pd.DataFrame:
    """`harness worker`: join a study whose storage other machines share. This machine decodes and
    caches its own images, checks its folds against the stored ones, runs trials until the budget
    is taken and no trial runs elsewhere (finishing those whose worker vanished), then writes its
    results folder (every machine's folds) and the leaderboard."""
    console = console or Console(stderr=True)
    run, storage, store = _enter_study(study, plugins, results_root, data_root, console)
    console.print(f"joined {study.name} on {describe_storage(study.search.storage)}; results in {run.results_dir}")
    console.print(start_backend())
    requeue_unfinished_trials(study, storage, store, every_running_trial_is_dead=False)
    memory = MemoryGuard() if restartable else None
    try:
        failures = run_search(run, plugins, storage=storage, console=console, memory=memory,
                              stop=stop or StopToken())
        score_test_set(run, plugins, store, console, stop or StopToken())
        run_nested(run, plugins, storage, store, console, stop or StopToken(), memory)
    except KeyboardInterrupt:
        _show_interrupted(run, plugins, store)
        raise
    table = write_results(run, plugins, store, failures)
    _finish(run, plugins, table)
    return table


def prepare_study(study: Study, plugins: Plugins, results_root: Path, data_root: Path, console: Console) -> None:
    """`harness worker --prepare-only`: create the study in its shared storage once, before the
    workers start (Optuna's tables, the folds, the run's description, each candidate's search),
    checking the study file and its data on the way; trains nothing."""
    from harness.search.optuna_setup import open_candidate_study

    run, storage, _ = _enter_study(study, plugins, results_root, data_root, console)
    for candidate in study.candidates:
        open_candidate_study(study, search_id(study, candidate), storage, plugins, candidate.name)
    console.print(f"prepared {study.name} on {describe_storage(study.search.storage)}: "
                  f"{len(study.candidates)} candidate search(es), folds stored; start the workers")


def _enter_study(study: Study, plugins: Plugins, results_root: Path, data_root: Path, console: Console):
    """The shared study opened (created the first time) with this machine's folds checked, and this
    machine's results folder started: the run, its storage and its result store."""
    _check_joinable(study)
    run, storage, store = start_run(study, plugins, results_root, data_root, console)
    (run.results_dir / "study.toml").write_text(study.effective_toml(), encoding="utf-8")
    write_run_file(run, plugins, store=store)
    return run, storage, store


def _check_joinable(study: Study) -> None:
    if not is_shared(study.search.storage):
        raise HarnessError(
            f"{study.path}: `harness worker` joins a shared storage, and this study has none. Give --storage "
            "postgresql://user:password@host/db (or journal:PATH on a shared disk), or set search.storage."
        )
    if study.search.engine == "keras_tuner":
        raise HarnessError(f"{study.path}: search.engine = \"keras_tuner\" keeps its trials in one folder; "
                           "`harness worker` needs the Optuna engine.")
