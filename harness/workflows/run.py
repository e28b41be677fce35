"""One study from start to finish: data → folds → search → leaderboard → reports."""

from __future__ import annotations

import contextlib
import ctypes
import fcntl
import os
import signal
import socket
import subprocess
import threading
import time
from pathlib import Path

import pandas as pd
from rich.console import Console

from harness.core.backend import start_backend
from harness.config.study import Study
from harness.data.dataset import Dataset, apply_small_class_policy, load_dataset
from harness.training.features import FeatureCache
from harness.data.folds import make_folds
from harness.results.layout import FOLDS_FILE, save_or_check_folds
from harness.reports.leaderboard import build_leaderboard, print_leaderboard, write_leaderboard
from harness.core.memory import MemoryGuard
from harness.core.paths import CACHE_ENV, DATA_ROOT_ENV, default_cache_dir, default_data_root  # noqa: F401
from harness.plugins import Plugins
from harness.errors import HarnessError, file_system_error
from harness.results.records import RECORDS_FILE
from harness.search.engine import (
    JOURNAL_FILE, RUN_FILE, STOP_REQUESTED, candidate_failures, local_run_settings, open_storage,
    repair_journal, requeue_unfinished_trials, run_search, search_id, stop_signal, write_run_file,
)
from harness.results.folder import import_results_folder, write_results_folder
from harness.results.optuna_storage import describe_storage, is_shared
from harness.results.storage import ResultStore
from harness.reports.rows import leaderboard_of
from harness.search.context import RunContext, run_info
from harness.specs import DatasetContext

#: prctl's option that sends a signal to this process when its parent dies (Linux).
PR_SET_PDEATHSIG = 1


def prepare(study: Study, plugins: Plugins, data_root: Path, console: Console) -> tuple[Dataset, list[str]]:
    """Load the dataset and apply the small-class policy; return it and the notes to show."""
    context = DatasetContext(data_root=Path(data_root), cache_dir=default_cache_dir(), seed=study.seed)
    dataset = load_dataset(study.dataset, plugins, context)
    dataset, notes = apply_small_class_policy(dataset, study.cv)
    notes += metric_notes(study, len(dataset.classes))
    if dataset.skipped:
        notes.append(
            f"skipped {len(dataset.skipped)} unreadable file(s): "
            + "; ".join(f"{p} ({why})" for p, why in dataset.skipped[:5])
            + (" …" if len(dataset.skipped) > 5 else "")
        )
    return dataset, notes


def metric_notes(study: Study, classes: int) -> list[str]:
    """Top-k settings that cannot tell models apart on this many classes: an objective among them
    is an error, a top-k column the user asked for a warning (the leaderboard leaves it out)."""
    useless = [k for k in study.metrics.top_k if k >= classes]
    objective = study.metrics.objective
    if objective in {f"top_{k}_accuracy" for k in useless}:
        raise HarnessError(
            f"{study.path}: metrics.objective = \"{objective}\" cannot tell models apart: the data has {classes} "
            f"classes, so every model scores 1. Use \"accuracy\", \"loss\" or a top-k below {classes}."
        )
    if useless and "top_k" in study.raw.get("metrics", {}):
        shown = ", ".join(map(str, useless))
        return [
            f"metrics.top_k {shown}: at or above the {classes} classes, every model scores 1; "
            "left off the leaderboard (kept in the fold records)"
        ]
    return []


def build_problems(study: Study, plugins: Plugins, dataset: Dataset) -> dict[str, str]:
    """Build each candidate once as its trials would (fixed parameters, weights, freezing, extra
    inputs, augmentation) and return why each that cannot be built fails; trains nothing."""
    from harness.specs import BuildContext
    from harness.training.train import extra_input_widths, prepare_model, release_device_memory

    problems: dict[str, str] = {}
    backend_started = False
    for cand in study.candidates:
        spec = plugins.models.get(cand.model)
        try:
            extra = extra_input_widths(spec, dataset)
            if not backend_started:
                start_backend()
                backend_started = True
            context = BuildContext(len(dataset.classes), cand.image_size, dict(cand.params), extra, cand.train.weights)
            prepare_model(spec, context, cand.train)
        except HarnessError as exc:
            problems[cand.name] = str(exc)
        finally:
            if backend_started:
                release_device_memory()
    return problems


def describe(dataset: Dataset) -> str:
    counts = dataset.table["label"].value_counts()
    groups = f", {dataset.table['group'].nunique()} groups" if dataset.has_groups else ""
    return (
        f"{len(dataset.table)} images, {len(dataset.classes)} classes "
        f"({counts.min()}–{counts.max()} per class){groups}"
    )


def check_results_folder(results_dir: Path) -> None:
    """Fail early, in one line, when the results folder or its files cannot be written: a
    read-only or full disk, no permission, a file where the folder should be, a folder where a
    file should be (Optuna's journal and the records would fail later and less clearly)."""
    probe = results_dir / f".write-test-{os.getpid()}"
    try:
        results_dir.mkdir(parents=True, exist_ok=True)
        probe.write_bytes(b"probe")
        probe.unlink()
        for name in (RECORDS_FILE, JOURNAL_FILE, FOLDS_FILE, RUN_FILE):
            path = results_dir / name
            if path.is_dir():
                raise HarnessError(f"{path} is a folder where harness keeps a file: move it away and run again.")
            if path.exists():
                with path.open("ab"):
                    pass
    except OSError as exc:
        if exc.filename == str(probe):
            exc.filename = str(results_dir)
        raise file_system_error(exc) from None


def _start(study: Study, plugins: Plugins, results_root: Path, data_root: Path, console: Console):
    """Load the data, make the folds and check them against the results folder and the storage;
    returns the run, its storage and its result store."""
    results_dir = Path(results_root) / study.name
    check_results_folder(results_dir)
    dataset, notes = prepare(study, plugins, data_root, console)
    console.print(f"[bold]{study.name}[/]: {describe(dataset)}")
    for note in notes:
        console.print(f"[yellow]warning:[/] {note}")
    folds = make_folds(dataset, study.cv)
    if not is_shared(study.search.storage):
        save_or_check_folds(folds, results_dir)
    storage = open_storage(study, results_dir)
    store = ResultStore(storage, study.name)
    store.save_or_check_folds(folds, f"{study.path} on {describe_storage(study.search.storage)}")
    run = RunContext(study, results_dir, dataset, folds, notes, FeatureCache(default_cache_dir()), Path(data_root).resolve())
    return run, storage, store


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
) -> pd.DataFrame:
    """Run (or resume) a study and return its leaderboard.

    With ``workers`` > 1, ``worker_command`` + ``[index]`` starts each worker process (see
    ``run_worker``); this process waits for them and then writes the leaderboard. ``restartable``:
    the caller replaces the process on RestartForMemory (see harness.core.memory), as the CLI does.
    """
    console = console or Console(stderr=True)
    results_dir = Path(results_root) / study.name
    check_results_folder(results_dir)
    with run_lock(results_dir):
        return _run_study(study, plugins, results_root, data_root, console, workers, worker_command, restartable)


def _run_study(
    study, plugins, results_root, data_root, console, workers, worker_command, restartable
) -> pd.DataFrame:
    results_dir = Path(results_root) / study.name
    torn = 0 if is_shared(study.search.storage) else repair_journal(results_dir)  # this run holds the folder
    if torn:
        console.print(
            f"[yellow]warning:[/] {results_dir / JOURNAL_FILE}: dropped a torn last entry ({torn} bytes) "
            "left by a crash or a full disk"
        )
    run, storage, store = _start(study, plugins, results_root, data_root, console)
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
        if study.search.engine == "keras_tuner":
            console.print(start_backend())
            from harness.search.tuner import run_tuner_search

            failures = run_tuner_search(run, plugins, console=console, workers=workers)
        else:
            _carry_old_records(study, storage, store, run.results_dir, console)
            # With the folder's own journal, this run holds the whole study: no trial is running.
            requeue_unfinished_trials(study, storage, store, every_running_trial_is_dead=not is_shared(study.search.storage))
            if workers > 1:
                _run_workers(workers, worker_command or [], console)
                failures = candidate_failures(study, storage)
            else:
                console.print(start_backend())
                memory = MemoryGuard() if restartable else None
                failures = run_search(run, plugins, storage=storage, console=console, memory=memory)
    except KeyboardInterrupt:
        # What finished so far, ranked; the reporters run when the study ends.
        table = write_results(run, plugins, store, None) if study.search.engine != "keras_tuner" else None
        if table is None:
            table = build_leaderboard(run.results_dir)
            write_leaderboard(table, run.results_dir)
        print_leaderboard(table, Console(), title=f"{study.name} leaderboard so far (interrupted)")
        raise
    if study.search.engine == "keras_tuner":  # its own records file is its results
        write_run_file(run, plugins, failures)
        table = build_leaderboard(run.results_dir)
        write_leaderboard(table, run.results_dir)
    else:
        table = write_results(run, plugins, store, failures)
    plugins.hook.on_study_end(run=run_info(run), leaderboard=leaderboard_of(table, study.metrics.objective))
    print_leaderboard(table, Console(), title=f"{study.name} leaderboard")
    if failures:
        listing = "; ".join(f"'{name}': {reason.rstrip('.')}" for name, reason in failures.items())
        raise HarnessError(
            f"{len(failures)} of {len(study.candidates)} candidate(s) failed and are marked so in "
            f"{run.results_dir / 'leaderboard.md'}: {listing}. Fix the cause and run the same command again "
            "to resume: finished trials are kept."
        )
    return table


#: The lock file a `harness run` holds in its results folder while it runs.
LOCK_FILE = ".run.lock"


@contextlib.contextmanager
def run_lock(results_dir: Path):
    """Hold the results folder for this run: a second `harness run` on it is refused (its workers
    are this run's). The lock goes with the process, however it ends."""
    path = results_dir / LOCK_FILE
    try:
        handle = path.open("a+")
    except OSError as exc:
        raise file_system_error(exc) from None
    try:
        try:
            fcntl.flock(handle, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            handle.seek(0)
            holder = handle.read().strip() or "another process"
            raise HarnessError(
                f"{results_dir} is in use by another `harness run` ({holder}). Wait for it to finish, or give "
                "this run another --results folder; to share one search between processes, use --workers N."
            ) from None
        handle.seek(0)
        handle.truncate()
        handle.write(f"pid {os.getpid()} on {socket.gethostname()}")
        handle.flush()
        yield
    finally:
        handle.close()


def end_with_parent() -> None:
    """A worker stops (as on SIGTERM: at the end of its epoch, finished folds kept) when its parent
    dies, even by kill -9: Linux's parent-death signal, and a watchdog where that is missing."""
    parent = os.getppid()
    try:
        ctypes.CDLL(None, use_errno=True).prctl(PR_SET_PDEATHSIG, signal.SIGTERM)
    except (OSError, AttributeError):  # not Linux: the watchdog alone
        pass

    def watch() -> None:
        while os.getppid() == parent:
            time.sleep(1.0)
        if not STOP_REQUESTED.is_set():  # the parent-death signal may have come first: one is enough
            os.kill(os.getpid(), signal.SIGTERM)

    threading.Thread(target=watch, name="parent-watchdog", daemon=True).start()


def _carry_old_records(study: Study, storage, store: ResultStore, results_dir: Path, console: Console) -> None:
    imported = import_results_folder(store, results_dir, [search_id(study, c) for c in study.candidates])
    if imported:
        console.print(f"moved {imported} fold record(s) of {results_dir / RECORDS_FILE} into the study's storage")


def run_worker(
    study: Study, plugins: Plugins, results_root: Path, data_root: Path, index: int, restartable: bool = False
) -> None:
    """One of the processes of `harness run --workers N`, sharing its parent's results folder."""
    end_with_parent()
    console = Console(stderr=True)
    run, storage, _ = _start(study, plugins, results_root, data_root, Console(stderr=True, quiet=True))
    console.print(f"worker {index}: {start_backend()}")
    memory = MemoryGuard() if restartable else None
    run_search(run, plugins, storage=storage, console=console, worker=index, memory=memory)


def join_study(
    study: Study, plugins: Plugins, results_root: Path, data_root: Path, console: Console | None = None,
    restartable: bool = False,
) -> pd.DataFrame:
    """`harness worker`: join a study whose storage other machines share. This machine decodes and
    caches its own images, checks its folds against the stored ones, runs trials until the budget
    is taken and no trial runs elsewhere (finishing those whose worker vanished), then writes its
    results folder (every machine's folds) and the leaderboard."""
    console = console or Console(stderr=True)
    if not is_shared(study.search.storage):
        raise HarnessError(
            f"{study.path}: `harness worker` joins a shared storage, and this study has none. Give --storage "
            "postgresql://user:password@host/db (or journal:PATH on a shared disk), or set search.storage."
        )
    if study.search.engine == "keras_tuner":
        raise HarnessError(f"{study.path}: search.engine = \"keras_tuner\" keeps its trials in one folder; "
                           "`harness worker` needs the Optuna engine.")
    run, storage, store = _start(study, plugins, results_root, data_root, console)
    (run.results_dir / "study.toml").write_text(study.effective_toml(), encoding="utf-8")
    write_run_file(run, plugins, store=store)
    console.print(f"joined {study.name} on {describe_storage(study.search.storage)}; results in {run.results_dir}")
    console.print(start_backend())
    requeue_unfinished_trials(study, storage, store, every_running_trial_is_dead=False)
    memory = MemoryGuard() if restartable else None
    try:
        failures = run_search(run, plugins, storage=storage, console=console, memory=memory)
    except KeyboardInterrupt:
        table = write_results(run, plugins, store, None)
        print_leaderboard(table, Console(), title=f"{study.name} leaderboard so far (interrupted)")
        raise
    table = write_results(run, plugins, store, failures)
    plugins.hook.on_study_end(run=run_info(run), leaderboard=leaderboard_of(table, study.metrics.objective))
    print_leaderboard(table, Console(), title=f"{study.name} leaderboard")
    return table


def gpu_ids() -> list[str]:
    """The GPUs this process may use: CUDA_VISIBLE_DEVICES, else what nvidia-smi lists."""
    visible = os.environ.get("CUDA_VISIBLE_DEVICES")
    if visible is not None:
        return [g for g in visible.split(",") if g.strip() and g.strip() != "-1"]
    try:
        listing = subprocess.run(["nvidia-smi", "-L"], capture_output=True, text=True, timeout=10).stdout
    except (OSError, subprocess.SubprocessError):
        return []
    return [str(i) for i, line in enumerate(listing.splitlines()) if line.startswith("GPU ")]


def _signal_workers(procs: list[subprocess.Popen], signum: int) -> int:
    """Send ``signum`` to each worker still running; returns the signal."""
    for p in procs:
        if p.poll() is None:
            p.send_signal(signum)
    return signum


def worker_env(index: int, gpus: list[str]) -> dict[str, str]:
    """One GPU per worker when there are several; otherwise the workers share what there is."""
    env = dict(os.environ)
    # Workers sharing one GPU must not each grab all of its memory up front.
    env.setdefault("XLA_PYTHON_CLIENT_PREALLOCATE", "false")
    env.setdefault("TF_FORCE_GPU_ALLOW_GROWTH", "true")
    if len(gpus) > 1:
        env["CUDA_VISIBLE_DEVICES"] = gpus[index % len(gpus)]
    return env


def _run_workers(workers: int, command: list[str], console: Console) -> None:
    gpus = gpu_ids()
    where = f"{len(gpus)} GPU(s)" if gpus else "the CPU"
    console.print(f"starting {workers} workers on {where}")
    # Each worker in a session of its own: a terminal's Ctrl-C reaches the parent alone, which passes
    # it on once (twice would stop the workers at once instead of at the epoch end).
    procs = [
        subprocess.Popen([*command, str(i)], env=worker_env(i, gpus), start_new_session=True)
        for i in range(workers)
    ]
    forwarded = 0
    try:
        while any(p.poll() is None for p in procs):
            if STOP_REQUESTED.is_set() and not forwarded:
                forwarded = _signal_workers(procs, stop_signal())
            time.sleep(0.2)
    except KeyboardInterrupt:  # a second Ctrl-C: the workers stop at once too
        _signal_workers(procs, stop_signal())
        for p in procs:
            p.wait()
        raise
    codes = [p.returncode for p in procs]
    if STOP_REQUESTED.is_set():
        raise KeyboardInterrupt
    failed = [(i, c) for i, c in enumerate(codes) if c != 0]
    if failed and len(failed) == len(procs):
        raise HarnessError(
            "every worker stopped with an error (exit codes "
            + ", ".join(str(c) for _, c in failed)
            + "; see above). Finished folds are kept: fix the cause and run again to resume."
        )
    for i, code in failed:
        console.print(f"[yellow]warning:[/] worker {i} stopped with exit code {code}; the others finished its work.")
