"""The Layout refactor changed where code lives, not what it computes: the demo's leaderboard is the
one the harness made before it (tests/fixtures/demo_leaderboard_before_layout.csv, written by
`harness run studies/demo.toml --trials 2 --epochs 2` at commit c204e82 on this project's CPU)."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd

from harness.cli import main

ROOT = Path(__file__).resolve().parents[1]
BEFORE = ROOT / "tests" / "fixtures" / "demo_leaderboard_before_layout.csv"
#: Columns that must match exactly: which candidate ranks where, with which configuration.
EXACT = ["rank", "candidate", "model", "status", "trials", "complete", "folds", "best_trial", "config_id",
         "best_params", "config", "base", "vs_best", "config_means"]
#: Timing differs between runs; everything else is a number the same seed reproduces.
TIMING = ["fit_seconds"]


def test_the_demos_leaderboard_is_the_one_from_before_the_layout(tmp_path):
    assert main(["run", str(ROOT / "studies" / "demo.toml"), "--results", str(tmp_path / "r"),
                 "--trials", "2", "--epochs", "2"]) == 0
    now = pd.read_csv(tmp_path / "r" / "demo" / "leaderboard.csv")
    before = pd.read_csv(BEFORE)
    assert list(now.columns) == list(before.columns)
    pd.testing.assert_frame_equal(now[EXACT], before[EXACT])
    numbers = [c for c in before.columns if c not in EXACT + TIMING and pd.api.types.is_float_dtype(before[c])]
    assert "accuracy_mean" in numbers and "loss_mean" in numbers
    np.testing.assert_allclose(now[numbers].to_numpy(float), before[numbers].to_numpy(float), rtol=1e-5, equal_nan=True)
