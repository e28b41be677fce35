"""Before a search: the data loaded and audited, the folds made and checked, the results folder writable."""

from __future__ import annotations

import os
from pathlib import Path

from rich.console import Console

from harness.config.study import Study
from harness.core.backend import start_backend
from harness.core.paths import default_cache_dir
from harness.data.dataset import Dataset, apply_small_class_policy, load_dataset
from harness.data.folds import make_folds
from harness.errors import HarnessError, file_system_error
from harness.plugins import Plugins
from harness.results.layout import FOLDS_FILE, JOURNAL_FILE, RUN_FILE, save_or_check_folds
from harness.results.optuna_storage import describe_storage, is_shared
from harness.results.records import RECORDS_FILE
from harness.results.storage import ResultStore
from harness.search.context import RunContext
from harness.search.recovery import open_storage
from harness.specs import DatasetContext
from harness.training.features import FeatureCache


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
    from harness.training.build import extra_input_widths, prepare_model
    from harness.training.fit import release_device_memory

    problems: dict[str, str] = {}
    backend_started = False
    for cand in study.candidates:
        spec = plugins.models.get(cand.model)
        try:
            extra = extra_input_widths(spec, dataset)
            if not backend_started:
                start_backend()
                backend_started = True
            context = BuildContext(len(dataset.classes), cand.image_size, dict(cand.params), extra, cand.train.weights,
                                   preprocess=cand.train.preprocess)
            prepare_model(spec, context, cand.train)
        except HarnessError as exc:
            problems[cand.name] = str(exc)
        finally:
            if backend_started:
                release_device_memory()
    return problems


def describe(dataset: Dataset) -> str:
    """The dataset in one line: images, classes, images per class, groups."""
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


def start_run(
    study: Study, plugins: Plugins, results_root: Path, data_root: Path, console: Console
) -> tuple[RunContext, object, ResultStore]:
    """Load the data, make the folds and check them against the results folder and the storage;
    returns the run, its storage and its result store."""
    results_dir = Path(results_root) / study.name
    check_results_folder(results_dir)
    dataset, notes = prepare(study, plugins, data_root, console)
    console.print(f"[bold]{study.name}[/]: {describe(dataset)}")
    for note in notes:
        console.print(f"[yellow]warning:[/] {note}")
    folds = make_folds(dataset, study.cv)
    for note in folds.attrs.get("notes", []):
        console.print(f"[yellow]warning:[/] {note}")
        notes.append(note)
    if not is_shared(study.search.storage):
        save_or_check_folds(folds, results_dir)
    storage = open_storage(study, results_dir)
    store = ResultStore(storage, study.name)
    store.save_or_check_folds(folds, f"{study.path} on {describe_storage(study.search.storage)}")
    run = RunContext(study, results_dir, dataset, folds, notes, FeatureCache(default_cache_dir()), Path(data_root).resolve())
    return run, storage, store
