"""One study from start to finish: data → folds → search → leaderboard → reports."""

from __future__ import annotations

import os
import shutil
from pathlib import Path

import pandas as pd
from rich.console import Console

from harness.config import Study
from harness.data import Dataset, apply_small_class_policy, load_dataset
from harness.folds import make_folds, save_or_check_folds
from harness.leaderboard import build_leaderboard, print_leaderboard, write_leaderboard
from harness.plugins import Plugins
from harness.search import RunInfo, run_search, write_run_file
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


def run_study(
    study: Study, plugins: Plugins, results_root: Path, data_root: Path, console: Console | None = None
) -> pd.DataFrame:
    """Run (or resume) a study and return its leaderboard."""
    console = console or Console(stderr=True)
    results_dir = Path(results_root) / study.name
    dataset, notes = prepare(study, plugins, data_root, console)
    console.print(f"[bold]{study.name}[/]: {describe(dataset)}")
    for note in notes:
        console.print(f"[yellow]warning:[/] {note}")
    folds = make_folds(dataset, study.cv)
    save_or_check_folds(folds, results_dir)
    shutil.copyfile(study.path, results_dir / "study.toml")
    run = RunInfo(study, results_dir, dataset, folds, notes)
    write_run_file(run, plugins)
    console.print(
        f"{len(study.candidates)} candidate(s) × {study.search.trials} trial(s) × "
        f"{study.cv.folds * study.cv.repeats} fold(s); results in {results_dir}"
    )
    run_search(run, plugins, console=console)
    table = build_leaderboard(results_dir)
    write_leaderboard(table, results_dir)
    plugins.hook.on_study_end(run=run, leaderboard=table)
    print_leaderboard(table, Console(), title=f"{study.name} leaderboard")
    return table
