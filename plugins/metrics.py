"""Extra metrics a study can ask for under ``metrics.extra``."""

from __future__ import annotations

import numpy as np
from sklearn.metrics import balanced_accuracy_score, f1_score

from harness import MetricSpec, hookimpl


def _balanced_accuracy(y_true: np.ndarray, y_prob: np.ndarray) -> float:
    return balanced_accuracy_score(y_true, y_prob.argmax(axis=1))


def _macro_f1(y_true: np.ndarray, y_prob: np.ndarray) -> float:
    return f1_score(y_true, y_prob.argmax(axis=1), average="macro", labels=np.arange(y_prob.shape[1]), zero_division=0)


@hookimpl
def register_metrics() -> list[MetricSpec]:
    return [
        MetricSpec("balanced_accuracy", _balanced_accuracy, description="mean recall over classes"),
        MetricSpec("macro_f1", _macro_f1, description="unweighted mean F1 over classes"),
    ]
