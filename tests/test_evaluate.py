import numpy as np
import pytest
from sklearn.metrics import log_loss

from harness.evaluation.scores import fold_metrics, top_k_accuracy


def test_accuracy_top_k_and_loss():
    y = np.array([0, 1, 2, 2])
    p = np.array([[0.7, 0.2, 0.1], [0.5, 0.3, 0.2], [0.1, 0.2, 0.7], [0.35, 0.4, 0.25]])
    m = fold_metrics(y, p, [1, 2])
    assert m["accuracy"] == pytest.approx(0.5)
    assert m["top_1_accuracy"] == pytest.approx(0.5)
    assert m["top_2_accuracy"] == pytest.approx(0.75)  # the last image: class 2 is third
    assert m["loss"] == pytest.approx(log_loss(y, p))


def test_top_k_larger_than_classes_is_perfect_not_a_crash():
    y = np.array([0, 1, 1])
    p = np.array([[0.9, 0.1], [0.8, 0.2], [0.3, 0.7]])
    assert top_k_accuracy(y, p, 5) == 1.0
    assert top_k_accuracy(y, p, 1) == pytest.approx(2 / 3)  # binary case goes through sklearn's 1-d form


def test_loss_with_a_class_missing_from_the_fold():
    y = np.array([0, 0])
    p = np.array([[0.6, 0.3, 0.1], [0.8, 0.1, 0.1]])
    m = fold_metrics(y, p, [1])
    assert m["loss"] == pytest.approx(-(np.log(0.6) + np.log(0.8)) / 2)


def test_probabilities_are_renormalised():
    y = np.array([0, 1])
    p = np.array([[0.7000001, 0.3], [0.2, 0.8]], dtype="float32")
    assert fold_metrics(y, p, [1])["accuracy"] == 1.0


def test_leaderboard_leaves_out_top_k_accuracies_that_cannot_tell_models_apart():
    from harness.reports.leaderboard import metric_names

    info = {"top_k": [1, 3, 4, 5], "classes": ["a", "b", "c", "d"], "objective": "accuracy"}
    assert metric_names(info) == ["accuracy", "top_1_accuracy", "top_3_accuracy", "loss"]
    assert metric_names({**info, "objective": "top_5_accuracy"}) == [
        "accuracy", "top_1_accuracy", "top_3_accuracy", "top_5_accuracy", "loss"
    ]
