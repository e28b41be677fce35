"""Scores of one fold, from its validation labels and predicted class probabilities."""

from __future__ import annotations

import numpy as np
from sklearn.metrics import accuracy_score, log_loss, top_k_accuracy_score

from harness.specs import MetricSpec


def top_k_accuracy(y_true: np.ndarray, y_prob: np.ndarray, k: int) -> float:
    """Share of images whose class is among the k most probable; 1.0 when k >= the number of classes."""
    n_classes = y_prob.shape[1]
    if k >= n_classes:
        return 1.0
    scores = y_prob[:, 1] if n_classes == 2 else y_prob
    return float(top_k_accuracy_score(y_true, scores, k=k, labels=np.arange(n_classes)))


#: Probabilities that differ by less than this across images count as the same prediction.
CONSTANT_TOLERANCE = 1e-4


def learned_nothing(y_prob: np.ndarray) -> str | None:
    """Why a fold's predictions show that its model learned nothing, or None.

    The same probabilities for every image (a dead network: a uniform softmax gives loss ln K,
    the prior's gives the class shares) mean the score is chance or the majority class however
    high it looks.
    """
    y_prob = np.asarray(y_prob, dtype="float64")
    if len(y_prob) < 2 or np.ptp(y_prob, axis=0).max() >= CONSTANT_TOLERANCE:
        return None
    n_classes = y_prob.shape[1]
    if np.abs(y_prob[0] - 1.0 / n_classes).max() < CONSTANT_TOLERANCE:
        return f"the same uniform probabilities (1/{n_classes}) for every image: loss ln {n_classes} = {np.log(n_classes):.3f}"
    return f"the same probabilities for every image (always class {int(y_prob[0].argmax())})"


#: How a fold record's warning that its model learned nothing begins (see ``learned_nothing``).
LEARNED_NOTHING = "learned nothing"


def dead_warnings(warnings: list[str]) -> list[str]:
    """The warnings of one fold record that say its model learned nothing (others, such as the
    scored fold steering it, are labels of how it was trained, not failures)."""
    return [w for w in warnings if w.startswith(LEARNED_NOTHING)]


def folds_findings(records: list) -> str:
    """Each kind of warning on these fold records once, with how many folds carry it: "2 of 5 folds
    learned nothing: …; 5 of 5 folds steered by …"."""
    counted: dict[str, list] = {}
    for record in records:
        for warning in dict.fromkeys(record.warnings):
            kind = LEARNED_NOTHING if warning.startswith(LEARNED_NOTHING) else warning
            counted.setdefault(kind, [0, warning])[0] += 1
    return "; ".join(f"{n} of {len(records)} folds {first}" for n, first in counted.values())


def fold_metrics(
    y_true: np.ndarray, y_prob: np.ndarray, top_k: list[int], extra: list[MetricSpec] = ()
) -> dict[str, float]:
    """accuracy, top_<k>_accuracy for each k, loss (cross-entropy) and any extra metrics."""
    y_prob = np.asarray(y_prob, dtype="float64")
    y_prob = y_prob / y_prob.sum(axis=1, keepdims=True)  # float32 softmax sums to 1 only within rounding
    n_classes = y_prob.shape[1]
    metrics = {"accuracy": float(accuracy_score(y_true, y_prob.argmax(axis=1)))}
    for k in top_k:
        metrics[f"top_{k}_accuracy"] = top_k_accuracy(y_true, y_prob, k)
    metrics["loss"] = float(log_loss(y_true, y_prob, labels=np.arange(n_classes)))
    for spec in extra:
        metrics[spec.name] = float(spec.fn(y_true, y_prob))
    return metrics
