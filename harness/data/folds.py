"""Cross-validation folds: computed once per study from the seed, saved, and shared by every candidate.

A study with a locked test set, or the dataset's own split (``cv.scheme = "given"``), also has a
``part`` column: "cv", "test" or "unused" (see ``harness.data.protocols``). Rows outside "cv" are
-1 in every repeat column, so no fold trains or validates on them.
"""

from __future__ import annotations

import numpy as np
import pandas as pd
from sklearn.model_selection import GroupKFold, KFold, StratifiedGroupKFold, StratifiedKFold

from harness.config.study import CVConfig
from harness.data.dataset import Dataset
from harness.data.protocols import CV, TEST, UNUSED, assign_parts, take_share
from harness.errors import HarnessError

#: A row's value in a repeat column when it is in no fold (the test set, or unused).
OUTSIDE = -1


def make_folds(dataset: Dataset, cv: CVConfig) -> pd.DataFrame:
    """One row per image: id, label, group, [part,] and its validation fold in each repeat (repeat_0, ...).

    With ``cv.scheme = "holdout"`` there is one validation fold, 0, of about ``validation_fraction``
    of the data (1 / round(1 / fraction), cut like a k-fold part; with ``ratios``, that share
    exactly); the other rows are marked 1 and only train. ``"given"``: the dataset's valid split is
    fold 0 and its train split 1. What the protocol left out is said in ``folds.attrs["notes"]``.
    """
    parts, notes = assign_parts(dataset, cv)
    folds = dataset.table[["id", "label", "group"]].copy()
    if cv.has_test or cv.scheme == "given":
        folds["part"] = parts
    inside = np.flatnonzero(parts == CV)
    for repeat in range(cv.repeats):
        assignment = np.full(len(folds), OUTSIDE, dtype=int)
        assignment[inside] = assign_folds(dataset, cv, inside, cv.seed + repeat)
        folds[f"repeat_{repeat}"] = assignment
    folds.attrs["notes"] = notes
    return folds


def assign_folds(dataset: Dataset, cv: CVConfig, rows: np.ndarray, seed: int, kfold: int | None = None) -> np.ndarray:
    """The validation fold of each of ``rows`` (positions in the dataset). ``kfold``: cut that many
    k-fold folds whatever cv's scheme (nested CV's outer folds), grouped and stratified as cv says."""
    labels, groups = dataset.labels[rows], dataset.groups[rows]
    grouped = cv.grouped and dataset.has_groups
    if kfold is not None:
        return _kfold(dataset, cv, labels, groups, grouped, rows, kfold, seed,
                      f"fewer than cv.outer = {kfold}. Lower cv.outer or add images.")
    if cv.scheme == "given":
        return np.where(dataset.table["split"].astype(str).to_numpy()[rows] == cv.valid_split, 0, 1)
    if cv.scheme == "holdout" and cv.ratios is not None:
        held = take_share(labels, groups if grouped else rows, cv.validation_fraction, seed, cv.stratified)
        if held.all() or not held.any():
            raise HarnessError(f"dataset '{dataset.name}' has too few images to hold out cv.ratios = {cv.ratios}.")
        return np.where(held, 0, 1)
    holdout = cv.scheme == "holdout"
    n_splits = max(2, round(1 / cv.validation_fraction)) if holdout else cv.folds
    too_few = (f"too few to hold out cv.validation_fraction = {cv.validation_fraction} of them." if holdout
               else f"fewer than cv.folds = {cv.folds}. Lower cv.folds or add images.")
    assignment = _kfold(dataset, cv, labels, groups, grouped, rows, n_splits, seed, too_few)
    return np.where(assignment == 0, 0, 1) if holdout else assignment


def _kfold(dataset: Dataset, cv: CVConfig, labels, groups, grouped: bool, rows: np.ndarray, n_splits: int,
           seed: int, too_few: str) -> np.ndarray:
    """Each row's fold of ``n_splits`` by scikit-learn's splitter for cv's grouping and stratification;
    ``too_few`` ends the error when there are fewer units than folds."""
    units = len(set(groups)) if grouped else len(rows)
    if units < n_splits:
        raise HarnessError(f"dataset '{dataset.name}' has {units} {'groups' if grouped else 'images'}, {too_few}")
    if grouped and cv.stratified:
        splitter = StratifiedGroupKFold(n_splits, shuffle=True, random_state=seed)
    elif grouped:
        splitter = GroupKFold(n_splits, shuffle=True, random_state=seed)
    elif cv.stratified:
        splitter = StratifiedKFold(n_splits, shuffle=True, random_state=seed)
    else:
        splitter = KFold(n_splits, shuffle=True, random_state=seed)
    assignment = np.full(len(rows), -1, dtype=int)
    try:
        for fold, (_, val_idx) in enumerate(splitter.split(np.zeros((len(rows), 1)), labels, groups if grouped else None)):
            assignment[val_idx] = fold
    except ValueError as exc:  # scikit-learn's splitter refuses: every class smaller than the folds
        names, counts = np.unique(labels, return_counts=True)
        smallest = ", ".join(f"{dataset.classes[int(n)]} {c}" for n, c in sorted(zip(names, counts), key=lambda x: x[1])[:3])
        left = " (what the locked test set left)" if len(rows) < len(dataset.labels) else ""
        raise HarnessError(
            f"dataset '{dataset.name}': the classes have too few images{left} for {n_splits} stratified folds "
            f"(smallest: {smallest}; {exc}). Lower the folds, take a smaller test share, or add images."
        ) from None
    return assignment


def fold_indices(folds: pd.DataFrame, repeat: int, fold: int) -> tuple[np.ndarray, np.ndarray]:
    """(train indices, validation indices) of one fold of one repeat; rows outside the folds
    (the test set, unused rows) are in neither."""
    column = folds[f"repeat_{repeat}"].to_numpy()
    return np.flatnonzero((column != fold) & (column != OUTSIDE)), np.flatnonzero(column == fold)


def test_indices(folds: pd.DataFrame) -> np.ndarray:
    """The rows of the locked test set (none without one)."""
    if "part" not in folds.columns:
        return np.array([], dtype=int)
    return np.flatnonzero(folds["part"].to_numpy() == TEST)


test_indices.__test__ = False  # not a pytest test when a test module imports it


def part_counts(folds: pd.DataFrame) -> dict[str, int]:
    """Images per part ("cv", "test", "unused"; every image in "cv" without a ``part`` column)."""
    parts = folds["part"].astype(str) if "part" in folds.columns else pd.Series(CV, index=folds.index)
    return {part: int((parts == part).sum()) for part in (CV, TEST, UNUSED)}


def cv_indices(folds: pd.DataFrame) -> np.ndarray:
    """Every row the folds train or validate on: what a refit after selection trains on."""
    return np.flatnonzero(folds["repeat_0"].to_numpy() != OUTSIDE)
