"""Evidence kept by every fold: out-of-fold predictions, per-epoch history; and the leaderboard's
corrected intervals and paired tests against the best candidate."""

from __future__ import annotations

import math

import numpy as np
import pandas as pd
import pytest
from scipy import stats as scipy_stats

from harness.cli import main
from harness.reports.leaderboard import build_leaderboard
from harness.results.records import predictions_path, read_predictions, read_records
from harness.evaluation.stats import corrected_interval, corrected_paired_test, plain_paired_test

from conftest import harness_cache, tiny_study_text


def test_corrected_test_is_the_nadeau_bengio_formula_and_less_confident_than_the_plain_one():
    best = [0.83, 0.80, 0.85, 0.79, 0.84]
    other = [0.78, 0.79, 0.80, 0.77, 0.81]
    ratio = 1 / 4  # 5-fold: each test fold is a quarter of its training set
    t, p = corrected_paired_test(best, other, ratio)
    d = np.subtract(best, other)
    expected_t = d.mean() / math.sqrt((1 / 5 + ratio) * d.var(ddof=1))
    assert t == pytest.approx(expected_t)
    assert p == pytest.approx(2 * scipy_stats.t.sf(abs(expected_t), 4))
    _, plain_p = plain_paired_test(best, other)
    assert plain_p < 0.05 < p  # the plain test calls this a difference; the corrected one does not
    assert corrected_paired_test(best, best, ratio) == (0.0, 1.0)


def test_corrected_interval_is_wider_than_the_naive_one_and_centred_on_the_mean():
    scores = [0.70, 0.74, 0.69, 0.72, 0.75]
    low, high = corrected_interval(scores, 1 / 4)
    naive = scipy_stats.t.ppf(0.975, 4) * np.std(scores, ddof=1) / math.sqrt(5)
    assert (low + high) / 2 == pytest.approx(np.mean(scores))
    assert (high - low) / 2 == pytest.approx(naive * math.sqrt((1 / 5 + 1 / 4) * 5))
    assert corrected_interval([0.5], 0.25) == (0.5, 0.5)


@pytest.fixture(scope="module")
def finished_study(tmp_path_factory):
    """A finished two-candidate study, run once for the module (its tests only read it)."""
    tmp_path = tmp_path_factory.mktemp("evidence")
    extra = ('filters = [4, 4, 4, 4, 4]\ndense = [8]\nbn_momentum = 0.5\n\n'
             '[[candidates]]\nname = "small"\nmodel = "cnn5"\nfilters = [2, 2, 2, 2, 2]\ndense = [4]\nbn_momentum = 0.5\n')
    study = tmp_path / "tiny.toml"
    study.write_text(tiny_study_text(trials=2, extra=extra).replace("epochs = 2", "epochs = 3")
                     .replace("[train]\n", "[train]\nearly_stopping = { monitor = \"val_loss\", patience = 5 }\n"))
    with harness_cache(tmp_path / "cache"):
        assert main(["run", str(study), "--results", str(tmp_path / "r")]) == 0
    return tmp_path / "r" / "tiny"


def test_every_fold_keeps_its_predictions_and_history(finished_study):
    records = read_records(finished_study / "records.jsonl")
    folds = pd.read_csv(finished_study / "folds.csv")
    assert records
    for record in records:
        stored = read_predictions(finished_study, record.key)
        assert stored is not None, predictions_path(finished_study, record.key)
        rows, labels, probabilities = stored["rows"], stored["labels"], stored["probabilities"]
        assert len(rows) == record.val_size and probabilities.shape == (len(rows), 3)
        assert (folds["repeat_0"].to_numpy()[rows] == record.fold).all()  # the fold's own validation rows
        accuracy = float((probabilities.argmax(1) == labels).mean())
        assert accuracy == pytest.approx(record.metrics["accuracy"], abs=1e-6)  # the record's score, recomputable
        history = record.history
        assert len(history["loss"]) == record.epochs_run == len(history["learning_rate"])
        assert set(history["phase"]) == {"train"}
        assert {"accuracy", "val_loss", "val_accuracy"} <= history.keys()
    # No temporary file is left beside the predictions.
    assert not list((finished_study / "predictions").rglob(".*"))


def test_leaderboard_has_intervals_and_p_values_against_the_best(finished_study):
    board = build_leaderboard(finished_study)
    assert {"accuracy_ci_low", "accuracy_ci_high", "p_vs_best", "vs_best"} <= set(board.columns)
    assert board.loc[0, "vs_best"] == "best" and math.isnan(board.loc[0, "p_vs_best"])
    second = board.loc[1]
    assert second["vs_best"] in ("worse", "not distinguishable") and 0 <= second["p_vs_best"] <= 1
    for _, row in board.iterrows():
        assert row["accuracy_ci_low"] <= row["accuracy_mean"] <= row["accuracy_ci_high"]
    markdown = (finished_study / "leaderboard.md").read_text()
    assert "95% CI" in markdown and "vs best (p)" in markdown
    csv = pd.read_csv(finished_study / "leaderboard.csv")
    assert "p_vs_best" in csv.columns
