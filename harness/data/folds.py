"""Cross-validation folds: computed once per study from the seed, saved, and shared by every candidate."""

from __future__ import annotations

import numpy as np
import pandas as pd
from sklearn.model_selection import GroupKFold, KFold, StratifiedGroupKFold, StratifiedKFold

from harness.config.study import CVConfig
from harness.data.dataset import Dataset
from harness.errors import HarnessError

def make_folds(dataset: Dataset, cv: CVConfig) -> pd.DataFrame:
    """One row per image: id, label, group, and its validation fold in each repeat (repeat_0, ...).

    With ``cv.scheme = "holdout"`` there is one validation fold, 0, of about ``validation_fraction``
    of the data (1 / round(1 / fraction), cut like a k-fold part); the other rows are marked 1 and
    only train.
    """
    n = len(dataset.table)
    grouped = cv.grouped and dataset.has_groups
    units = dataset.table["group"].nunique() if grouped else n
    holdout = cv.scheme == "holdout"
    n_splits = max(2, round(1 / cv.validation_fraction)) if holdout else cv.folds
    if units < n_splits:
        raise HarnessError(
            f"dataset '{dataset.name}' has {units} {'groups' if grouped else 'images'}, fewer than "
            f"cv.folds = {cv.folds}. Lower cv.folds or add images."
            if not holdout
            else f"dataset '{dataset.name}' has {units} {'groups' if grouped else 'images'}, too few to hold out "
            f"cv.validation_fraction = {cv.validation_fraction} of them."
        )
    folds = dataset.table[["id", "label", "group"]].copy()
    x = np.zeros((n, 1))
    for repeat in range(cv.repeats):
        seed = cv.seed + repeat
        if grouped and cv.stratified:
            splitter = StratifiedGroupKFold(n_splits, shuffle=True, random_state=seed)
        elif grouped:
            splitter = GroupKFold(n_splits, shuffle=True, random_state=seed)
        elif cv.stratified:
            splitter = StratifiedKFold(n_splits, shuffle=True, random_state=seed)
        else:
            splitter = KFold(n_splits, shuffle=True, random_state=seed)
        assignment = np.full(n, -1, dtype=int)
        for fold, (_, val_idx) in enumerate(splitter.split(x, dataset.labels, dataset.groups if grouped else None)):
            assignment[val_idx] = fold
        if holdout:
            assignment = np.where(assignment == 0, 0, 1)
        folds[f"repeat_{repeat}"] = assignment
    return folds


def fold_indices(folds: pd.DataFrame, repeat: int, fold: int) -> tuple[np.ndarray, np.ndarray]:
    """(train indices, validation indices) of one fold of one repeat."""
    column = folds[f"repeat_{repeat}"].to_numpy()
    return np.flatnonzero(column != fold), np.flatnonzero(column == fold)
