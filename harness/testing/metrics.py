"""The metric contract: a ``MetricSpec``'s function gives a finite float, and ranks perfect
predictions above random ones in the direction ``greater_is_better`` says."""

from __future__ import annotations

import numbers

import numpy as np

from harness.specs import MetricSpec


def predictions(num_classes: int = 3, n: int = 60, seed: int = 0) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """(y_true, perfect, random): integer labels with every class present, and two probability tables."""
    rng = np.random.default_rng(seed)
    y_true = np.arange(n) % num_classes
    perfect = np.eye(num_classes)[y_true]
    random = rng.dirichlet(np.ones(num_classes), n)
    return y_true, perfect, random


def score(spec: MetricSpec, y_true: np.ndarray, y_prob: np.ndarray) -> float:
    """The metric's value, checked to be a finite real number."""
    value = spec.fn(y_true, y_prob)
    assert isinstance(value, numbers.Real) and not isinstance(value, bool), (
        f"metric '{spec.name}' returned {type(value).__name__}; expected a float")
    assert np.isfinite(value), f"metric '{spec.name}' returned {value}"
    return float(value)


def check_metric(spec: MetricSpec, num_classes: int = 3) -> None:
    """A name; a float for perfect and random predictions; perfect is better per greater_is_better."""
    assert isinstance(spec.name, str) and spec.name, f"a metric needs a name: {spec!r}"
    assert isinstance(spec.greater_is_better, bool)
    y_true, perfect, random = predictions(num_classes)
    best, chance = score(spec, y_true, perfect), score(spec, y_true, random)
    better = best > chance if spec.greater_is_better else best < chance
    direction = "higher" if spec.greater_is_better else "lower"
    assert better, (f"metric '{spec.name}' (greater_is_better={spec.greater_is_better}) scores perfect predictions "
                    f"{best} and random ones {chance}: perfect should be {direction}")
