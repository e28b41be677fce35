"""Nested cross-validation: an honest estimate of "search, then pick".

Training is replaced by a model that guesses (seeded noise), so every configuration is worth the
same and any spread between them is luck. Selecting the best of many such configurations by CV
flatters it (the winner's curse); nested CV scores the pick on outer parts its search never saw, so
its estimate stays at chance and the optimism is positive. With nothing tuned there is nothing to
flatter: the two agree within noise. The fake fit also checks, on every call, that no held-out
row reaches training.
"""

from __future__ import annotations

import json
import math
import textwrap
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from rich.console import Console

from harness.config.study import load_study
from harness.plugins import get_plugins
from harness.reports.leaderboard import build_leaderboard
from harness.reports.rows import leaderboard_of
from harness.training.fit import FoldResult
from harness.workflows.run import run_study

CLASSES, PER_CLASS = 4, 150


def _study(folder: Path, trials: int, outer: int = 4) -> Path:
    path = folder / "nested.toml"
    path.write_text(textwrap.dedent(f"""
        [study]
        name = "nested"
        seed = 3

        [dataset]
        name = "synthetic"
        classes = {CLASSES}
        images_per_class = {PER_CLASS}
        views = 2
        image_size = [8, 8]

        [cv]
        folds = 3
        outer = {outer}

        [train]
        epochs = 1

        [search]
        trials = {trials}
        sampler = "random"
        pruner = "none"
        space.learning_rate = {{ low = 1e-4, high = 1e-2, log = true }}

        [[candidates]]
        model = "cnn4"
    """))
    return path


@pytest.fixture
def guessing_fit(monkeypatch):
    """fit_fold replaced by seeded guesses; returns the (train rows, predicted rows) of every call."""
    calls: list[tuple[np.ndarray, np.ndarray]] = []

    def fake_fit(spec, dataset, image_size, params, train, train_idx, val_idx, seed, **_):
        assert not set(train_idx) & set(val_idx), "a held-out row reached training"
        calls.append((np.asarray(train_idx), np.asarray(val_idx)))
        rng = np.random.default_rng(seed)
        return FoldResult(rng.dirichlet(np.ones(len(dataset.classes)), size=len(val_idx)), 0.0, 1)

    monkeypatch.setattr("harness.search.trial.fit_fold", fake_fit)
    monkeypatch.setattr("harness.search.final_score.fit_fold", fake_fit)
    return calls


def _run(tmp_path: Path, trials: int) -> tuple[pd.Series, Path]:
    plugins = get_plugins()
    study = load_study(_study(tmp_path, trials), plugins)
    run_study(study, plugins, tmp_path / "results", tmp_path, Console(quiet=True))
    results = tmp_path / "results" / "nested"
    return build_leaderboard(results).iloc[0], results


def test_nested_estimate_removes_the_winners_curse(tmp_path, guessing_fit):
    row, results = _run(tmp_path, trials=40)
    n = CLASSES * PER_CLASS
    sd = math.sqrt(0.25 * 0.75 / n)  # of a pooled accuracy of guesses on every image
    assert row["nested_outer_folds"] == 4
    assert abs(row["nested_accuracy_mean"] - 1 / CLASSES) < 3 * sd  # chance: the pick knows nothing
    assert row["nested_accuracy_low"] < row["nested_accuracy_mean"] < row["nested_accuracy_high"]
    # the best of 40 guessers looks better than chance under CV, in every outer fold's search
    assert row["nested_selected_cv"] > 1 / CLASSES + 2 * sd
    assert row["optimism"] > 0
    assert row["optimism"] == pytest.approx(row["nested_selected_cv"] - row["nested_accuracy_mean"])
    records = [json.loads(line) for line in (results / "test.jsonl").read_text().splitlines()]
    assert sorted(r["outer"] for r in records) == [0, 1, 2, 3]
    assert all(r["configurations"] == 40 for r in records)
    # every image the study may tune on is scored exactly once, by the outer fold that held it out
    scored = np.concatenate([np.load(results / "predictions" / r["search_id"] / "test.npz")["rows"] for r in records])
    assert sorted(scored) == list(range(n))
    # the ordinary CV score of the main search's pick is as flattered as the outer searches' picks
    assert row["accuracy_mean"] > row["nested_accuracy_mean"]


def test_nothing_tuned_means_nothing_to_flatter(tmp_path, guessing_fit):
    row, _ = _run(tmp_path, trials=1)
    sd = math.sqrt(0.25 * 0.75 / (CLASSES * PER_CLASS))
    assert abs(row["optimism"]) < 3 * math.sqrt(2) * sd


def test_nested_rerun_reads_back_without_fitting(tmp_path, guessing_fit):
    first, _ = _run(tmp_path, trials=3)
    fits = len(guessing_fit)
    again, _ = _run(tmp_path, trials=3)
    assert len(guessing_fit) == fits  # every search and every outer score was read back
    assert again["nested_accuracy_mean"] == first["nested_accuracy_mean"]
    assert again["optimism"] == first["optimism"]


def test_reporters_receive_the_nested_estimate(tmp_path, guessing_fit):
    _, results = _run(tmp_path, trials=2)
    row = leaderboard_of(build_leaderboard(results), "accuracy").rows[0]
    table = build_leaderboard(results).iloc[0]
    assert row.nested["accuracy"] == table["nested_accuracy_mean"]
    assert row.nested_interval == (table["nested_accuracy_low"], table["nested_accuracy_high"])
    assert row.optimism == table["optimism"]
    assert row.test == {} and row.test_n is None  # no locked test set in this study
    assert "nested_accuracy" not in row.metrics
