"""One study from start to finish: data → folds → search → leaderboard → reports."""

from __future__ import annotations

import os
import shutil
import signal
import subprocess
from pathlib import Path

import pandas as pd
from rich.console import Console

from harness.backend import start_backend
from harness.config import Study
from harness.data import Dataset, apply_small_class_policy, load_dataset
from harness.features import FeatureCache
from harness.folds import make_folds, save_or_check_folds
from harness.leaderboard import build_leaderboard, print_leaderboard, write_leaderboard
from harness.plugins import Plugins
from harness.errors import HarnessError
from harness.search import STOP_REQUESTED, RunInfo, open_storage, run_search, write_run_file
from harness.specs import DatasetContext

DATA_ROOT_ENV = "HARNESS_DATA_ROOT"
CACHE_ENV = "HARNESS_CACHE"


def default_data_root() -> Path:
    return Path(os.environ.get(DATA_ROOT_ENV, "."))


def default_cache_dir() -> Path:
    return Path(os.environ.get(CACHE_ENV, Path.home() / ".cache" / "harness"))


def prepare(study: Study, plugins: Plugins, data_root: Path, console: Console) -> tuple[Dataset, list[str]]:
    """Load the dataset and apply the small-class policy; return it and the notes to show."""
    context = DatasetContext(data_root=Path(data_root), cache_dir=default_cache_dir(), seed=study.seed)
    dataset = load_dataset(study.dataset, plugins, context)
    dataset, notes = apply_small_class_policy(dataset, study.cv)
    if dataset.skipped:
        notes.append(
            f"skipped {len(dataset.skipped)} unreadable file(s): "
            + "; ".join(f"{p} ({why})" for p, why in dataset.skipped[:5])
            + (" …" if len(dataset.skipped) > 5 else "")
        )
    return dataset, notes


def describe(dataset: Dataset) -> str:
    counts = dataset.table["label"].value_counts()
    groups = f", {dataset.table['group'].nunique()} groups" if dataset.has_groups else ""
    return (
        f"{len(dataset.table)} images, {len(dataset.classes)} classes "
        f"({counts.min()}–{counts.max()} per class){groups}"
    )


def _start(study: Study, plugins: Plugins, results_root: Path, data_root: Path, console: Console) -> RunInfo:
    results_dir = Path(results_root) / study.name
    dataset, notes = prepare(study, plugins, data_root, console)
    console.print(f"[bold]{study.name}[/]: {describe(dataset)}")
    for note in notes:
        console.print(f"[yellow]warning:[/] {note}")
    folds = make_folds(dataset, study.cv)
    save_or_check_folds(folds, results_dir)
    return RunInfo(study, results_dir, dataset, folds, notes, FeatureCache(default_cache_dir()))


def run_study(
    study: Study,
    plugins: Plugins,
    results_root: Path,
    data_root: Path,
    console: Console | None = None,
    workers: int = 1,
    worker_command: list[str] | None = None,
) -> pd.DataFrame:
    """Run (or resume) a study and return its leaderboard.

    With ``workers`` > 1, ``worker_command`` + ``[index]`` starts each worker process (see
    ``run_worker``); this process waits for them and then writes the leaderboard.
    """
    console = console or Console(stderr=True)
    run = _start(study, plugins, results_root, data_root, console)
    shutil.copyfile(study.path, run.results_dir / "study.toml")
    write_run_file(run, plugins)
    console.print(
        f"{len(study.candidates)} candidate(s) × {study.search.trials} trial(s) × "
        f"{study.cv.folds * study.cv.repeats} fold(s); results in {run.results_dir}"
    )
    if workers > 1 and study.search.engine != "keras_tuner":
        open_storage(study, run.results_dir)  # create the shared storage before the workers race for it
        _run_workers(workers, worker_command or [], console)
    else:
        console.print(start_backend())
        if study.search.engine == "keras_tuner":
            from harness.tuner_search import run_tuner_search

            run_tuner_search(run, plugins, console=console, workers=workers)
        else:
            run_search(run, plugins, console=console)
    table = build_leaderboard(run.results_dir)
    write_leaderboard(table, run.results_dir)
    plugins.hook.on_study_end(run=run, leaderboard=table)
    print_leaderboard(table, Console(), title=f"{study.name} leaderboard")
    return table


def run_worker(study: Study, plugins: Plugins, results_root: Path, data_root: Path, index: int) -> None:
    """One of several processes searching one study through a shared storage."""
    console = Console(stderr=True)
    run = _start(study, plugins, results_root, data_root, Console(stderr=True, quiet=True))
    console.print(f"worker {index}: {start_backend()}")
    run_search(run, plugins, storage=open_storage(study, run.results_dir), console=console, worker=index)


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
    procs = [subprocess.Popen([*command, str(i)], env=worker_env(i, gpus)) for i in range(workers)]
    try:
        codes = [p.wait() for p in procs]
    except KeyboardInterrupt:
        for p in procs:
            p.send_signal(signal.SIGINT)
        for p in procs:
            p.wait()
        raise
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
