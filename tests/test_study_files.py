"""The five study files: each validates with the studies' recipes, and runs end to end with random
weights at a small size on its data (the shared real photos where HARNESS_TEST_DATA has them, the
fixture layouts elsewhere). The runs take minutes on a CPU: HARNESS_SLOW_TESTS=1 runs them."""

from __future__ import annotations

import os
from pathlib import Path

import pandas as pd
import pytest

from harness.config.study import load_study
from harness.plugins import get_plugins
from harness.workflows.run import run_study

from fixtures import image_layouts

ROOT = Path(__file__).resolve().parents[1]
STUDIES = ["rocks", "minerals", "minerals_holdout", "gems", "sports", "conus"]
#: Real data per study folder name (../shared/datasets), used when HARNESS_TEST_DATA points there.
REAL = {"minerals": "minerals", "minerals_holdout": "minerals", "sports": "sports15"}
SMALL = {"conus": 71}
SLOW = bool(os.environ.get("HARNESS_SLOW_TESTS"))


def test_study_files_carry_the_studies_recipes(monkeypatch):
    monkeypatch.delenv("HARNESS_WEIGHTS", raising=False)
    plugins = get_plugins()
    studies = {name: load_study(ROOT / "studies" / f"{name}.toml", plugins) for name in STUDIES}
    by_model = {c.model: c for s in studies.values() for c in s.candidates}
    assert by_model["resnet50"].train.fine_tune.from_layer == 120
    assert by_model["resnet50"].params == {"head": [128], "dropout": 0.3, "pooling": "avg"}
    assert by_model["vgg16"].train.fine_tune.last == 4
    assert by_model["mobilenetv2"].train.fine_tune.last == 3
    assert {"densenet121", "efficientnetb1"} <= set(by_model)
    for name, study in studies.items():
        for cand in study.candidates:
            if cand.model not in ("cnn4", "cnn5"):
                assert cand.train.weights == "imagenet", (name, cand.name)
                assert cand.train.fine_tune is None or cand.train.fine_tune.learning_rate == 1e-5
    assert studies["minerals"].cv.folds == 5 and studies["minerals_holdout"].cv.scheme == "holdout"
    assert [c.name for c in studies["minerals"].candidates] == [c.name for c in studies["minerals_holdout"].candidates]
    augmented = {c.name for c in studies["minerals"].candidates if c.train.augment is not None}
    assert augmented == {"cnn4-dropout-augment"}


@pytest.mark.skipif(not SLOW, reason="minutes on a CPU: HARNESS_SLOW_TESTS=1 runs it")
@pytest.mark.parametrize("name", STUDIES)
def test_study_runs_end_to_end_with_random_weights_at_a_small_size(name, tmp_path):
    shared = Path(os.environ.get("HARNESS_TEST_DATA", "/nonexistent"))
    if name in REAL and (shared / REAL[name]).is_dir():
        data_root = shared
    else:
        data_root = image_layouts.all_layouts(tmp_path / "data")
    size = SMALL.get(name, 32)
    overrides = {"weights": "none", "image_size": [size, size], "epochs": 1, "folds": 2, "trials": 1}
    if name == "minerals_holdout":
        overrides.pop("folds")
    plugins = get_plugins()
    study = load_study(ROOT / "studies" / f"{name}.toml", plugins, overrides)
    board = run_study(study, plugins, tmp_path / "results", data_root)
    assert isinstance(board, pd.DataFrame)
    assert (board["complete"] >= 1).all(), board
