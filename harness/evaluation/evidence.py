"""Per-class evidence from out-of-fold predictions: where a model fails, not only how often.

Every function takes the true labels and predicted probabilities of the images a configuration
never trained on (its folds' validation rows, pooled), as stored beside its fold records.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import pandas as pd
from sklearn.metrics import confusion_matrix, precision_recall_fscore_support, top_k_accuracy_score



@dataclass
class OutOfFold:
    """Pooled out-of-fold predictions of one configuration: one row per (repeat, validation image)."""

    rows: np.ndarray
    labels: np.ndarray
    probabilities: np.ndarray
    #: Records whose predictions were not stored (recorded before predictions were kept).
    missing: int = 0

    @property
    def predicted(self) -> np.ndarray:
        return self.probabilities.argmax(axis=1)


def out_of_fold(parts: list[dict[str, np.ndarray] | None]) -> OutOfFold | None:
    """One configuration's stored fold predictions (``None`` for a fold whose predictions were not
    stored), pooled; None if none is stored. ``harness.results.records.fold_predictions`` reads them."""
    found = [p for p in parts if p is not None]
    if not found:
        return None
    return OutOfFold(
        np.concatenate([p["rows"] for p in found]),
        np.concatenate([p["labels"] for p in found]),
        np.concatenate([p["probabilities"] for p in found]).astype("float64"),
        missing=len(parts) - len(found),
    )


def per_class(oof: OutOfFold, classes: list[str]) -> pd.DataFrame:
    """Precision, recall, F1 and support per class (scikit-learn; 0 where a class is never predicted)."""
    precision, recall, f1, support = precision_recall_fscore_support(
        oof.labels, oof.predicted, labels=range(len(classes)), zero_division=0
    )
    return pd.DataFrame({"class": classes, "precision": precision, "recall": recall, "f1": f1, "support": support})


def confusion(oof: OutOfFold, classes: list[str]) -> np.ndarray:
    """Counts: row = true class, column = predicted class."""
    return confusion_matrix(oof.labels, oof.predicted, labels=range(len(classes)))


def most_confused(matrix: np.ndarray, classes: list[str], k: int = 5) -> list[tuple[str, str, int]]:
    """The ``k`` largest off-diagonal cells: (true class, predicted as, images)."""
    off = matrix.copy()
    np.fill_diagonal(off, 0)
    order = np.argsort(off, axis=None, kind="stable")[::-1][:k]
    cells = [np.unravel_index(i, off.shape) for i in order]
    return [(classes[t], classes[p], int(off[t, p])) for t, p in cells if off[t, p] > 0]


def confidently_wrong(oof: OutOfFold, k: int = 8) -> list[int]:
    """Positions (into ``oof``) of the ``k`` wrong predictions made with the highest probability."""
    wrong = np.flatnonzero(oof.predicted != oof.labels)
    confidence = oof.probabilities[wrong, oof.predicted[wrong]]
    return [int(i) for i in wrong[np.argsort(-confidence, kind="stable")][:k]]


@dataclass
class Calibration:
    """Expected calibration error and the reliability curve over equal-width confidence bins."""

    ece: float
    confidence: np.ndarray  # mean confidence per non-empty bin
    accuracy: np.ndarray  # accuracy per non-empty bin
    count: np.ndarray  # images per non-empty bin


def calibration(oof: OutOfFold, bins: int = 10) -> Calibration:
    """Top-label calibration: how often a prediction made with confidence c is right.

    scikit-learn's ``calibration_curve`` is binary only; the multi-class top-label version (Guo et
    al. 2017) is this: bin by the top probability, compare each bin's mean confidence with its
    accuracy, ECE = the count-weighted mean gap.
    """
    confidence = oof.probabilities.max(axis=1)
    correct = (oof.predicted == oof.labels).astype("float64")
    index = np.minimum((confidence * bins).astype(int), bins - 1)
    count = np.bincount(index, minlength=bins)
    kept = count > 0
    mean_confidence = np.bincount(index, weights=confidence, minlength=bins)[kept] / count[kept]
    accuracy = np.bincount(index, weights=correct, minlength=bins)[kept] / count[kept]
    ece = float(np.sum(count[kept] * np.abs(accuracy - mean_confidence)) / len(confidence))
    return Calibration(ece, mean_confidence, accuracy, count[kept])


def top_k(oof: OutOfFold, ks: list[int]) -> dict[int, float]:
    """Top-k accuracy for each k below the number of classes."""
    classes = oof.probabilities.shape[1]
    return {
        k: float(top_k_accuracy_score(oof.labels, oof.probabilities, k=k, labels=range(classes)))
        for k in ks if k < classes
    }
