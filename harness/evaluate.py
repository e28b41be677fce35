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
