"""The Conus study: its file compares Xception with and without location; a fixture run trains both."""

from __future__ import annotations

from pathlib import Path

import pandas as pd

from harness.cli import main
from harness.config.study import load_study
from harness.plugins import get_plugins
from harness.results.records import read_records

from fixtures.image_layouts import conus_layout

ROOT = Path(__file__).resolve().parents[1]
HEADS = [[600], [1024], [2000], [1024, 600]]

FIXTURE_STUDY = """
[study]
name = "conus-fixture"
seed = 42

[dataset]
name = "conus"
root = "Conus"
image_size = [71, 71]     # Xception's minimum

[cv]
folds = 2

[train]
epochs = 1
batch_size = 16
weights = "none"

[search]
trials = 1

[[candidates]]
model = "xception"
head = [16]

[[candidates]]
model = "xception_location"
head = [16]
"""


def test_study_file_compares_xception_with_and_without_location_over_the_heads(monkeypatch):
    monkeypatch.setenv("HARNESS_WEIGHTS", "none")
    study = load_study(ROOT / "studies" / "conus.toml", get_plugins())
    seen = {(c.model, tuple(c.params["head"])) for c in study.candidates}
    for model in ("xception", "xception_location"):
        for head in HEADS:
            assert (model, tuple(head)) in seen
    assert all(c.train.weights == "none" for c in study.candidates)
    monkeypatch.delenv("HARNESS_WEIGHTS")
    assert all(c.train.weights == "imagenet" for c in load_study(ROOT / "studies" / "conus.toml", get_plugins()).candidates)


def test_conus_fixture_study_trains_both_xception_candidates(tmp_path):
    conus_layout(tmp_path / "data" / "Conus")
    study = tmp_path / "conus-fixture.toml"
    study.write_text(FIXTURE_STUDY)
    code = main(["run", str(study), "--results", str(tmp_path / "r"), "--data-root", str(tmp_path / "data")])
    assert code == 0
    out = tmp_path / "r" / "conus-fixture"
    board = pd.read_csv(out / "leaderboard.csv")
    assert set(board["candidate"]) == {"xception", "xception_location"}
    assert (board["complete"] == 1).all() and (board["folds"] == 2).all()
    records = read_records(out / "records.jsonl")
    assert sorted((r.candidate, r.fold) for r in records) == [
        ("xception", 0), ("xception", 1), ("xception_location", 0), ("xception_location", 1),
    ]
