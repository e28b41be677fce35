"""What a run carries down to its trials (the engine's own objects), and what hooks are shown of it."""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

import pandas as pd

from harness.config.study import Study
from harness.data.dataset import Dataset
from harness.data.folds import part_counts
from harness.specs import CrossValidation, Override, RunInfo
from harness.training.features import FeatureCache


@dataclass
class RunContext:
    """A run as the search engines use it: the study, its dataset and folds, the shared caches."""

    study: Study
    results_dir: Path
    dataset: Dataset
    #: One row per image: id, label, group and its validation fold in each repeat (repeat_0, ...).
    folds: pd.DataFrame
    notes: list[str] = field(default_factory=list)
    #: Pooled backbone features shared by every fold, trial and candidate of the run.
    features: FeatureCache | None = None
    #: The folder the dataset's root is relative to (for reports rebuilt later).
    data_root: Path | None = None


def run_info(run: RunContext) -> RunInfo:
    """The plain view of ``run`` that lifecycle hooks receive (the plugin API's ``RunInfo``)."""
    study, dataset, cv = run.study, run.dataset, run.study.cv
    return RunInfo(
        study=study.name,
        study_file=Path(study.path),
        description=study.description,
        results_dir=run.results_dir,
        data_root=run.data_root,
        dataset=study.dataset.name,
        classes=tuple(dataset.classes),
        images=len(dataset.table),
        cv=CrossValidation(scheme=cv.scheme, folds=cv.folds, repeats=cv.repeats, seed=cv.seed,
                           grouped=bool(cv.grouped and dataset.has_groups), stratified=cv.stratified,
                           test=cv.test_source, test_images=part_counts(run.folds)["test"], outer=cv.outer),
        objective=study.metrics.objective,
        overrides=tuple(Override(name, o["value"], o["from"]) for name, o in study.overrides.items()),
        folds=run.folds,
        notes=tuple(run.notes),
        thumbnails=dataset.thumbnails,
    )
