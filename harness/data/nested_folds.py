"""Nested cross-validation's folds: outer folds over the rows the study may tune on, and inside
each outer training part its own inner folds, all from the study's seed.

Outer fold k is a fold table like the study's own (see ``harness.data.folds``): the outer part's
rows are its "test" rows, the other tunable rows carry the inner folds, everything else is out.
"""

from __future__ import annotations

import numpy as np
import pandas as pd

from harness.config.study import CVConfig
from harness.data.dataset import Dataset
from harness.data.folds import OUTSIDE, assign_folds, cv_indices
from harness.data.protocols import CV, TEST, UNUSED

#: Seed offsets: the outer cut and each outer fold's inner folds draw their own sequences.
OUTER_SEED, INNER_SEED = 7919, 104729


def outer_assignment(dataset: Dataset, cv: CVConfig, folds: pd.DataFrame) -> np.ndarray:
    """Each row's outer fold (0..outer-1), -1 for rows outside the study's folds (test, unused)."""
    rows = cv_indices(folds)
    assignment = np.full(len(folds), OUTSIDE, dtype=int)
    assignment[rows] = assign_folds(dataset, cv, rows, cv.seed + OUTER_SEED, kfold=cv.outer)
    return assignment


def outer_fold_table(dataset: Dataset, cv: CVConfig, folds: pd.DataFrame, outer: np.ndarray, k: int) -> pd.DataFrame:
    """The fold table of outer fold ``k``: its rows are the test part, the rest of the tunable rows
    are split into the study's inner folds (same scheme, folds and repeats)."""
    table = folds[["id", "label", "group"]].copy()
    part = np.where(outer == k, TEST, np.where(outer == OUTSIDE, UNUSED, CV))
    table["part"] = part
    inside = np.flatnonzero(part == CV)
    for repeat in range(cv.repeats):
        assignment = np.full(len(table), OUTSIDE, dtype=int)
        assignment[inside] = assign_folds(dataset, cv, inside, cv.seed + INNER_SEED * (k + 1) + repeat)
        table[f"repeat_{repeat}"] = assignment
    return table
