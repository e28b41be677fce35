"""The studies' own protocols as study files (studies/protocols/): each validates on its data and
makes the split its study describes; two of them run end to end at a small size with random weights.

Real photos where HARNESS_TEST_DATA has them (sports15, minerals); the Conus list against a fixture
tree with the thesis's real file names (its photos are not public)."""

from __future__ import annotations

import os
import sys
from pathlib import Path

import pandas as pd
import pytest
from rich.console import Console

from harness.config.study import load_study
from harness.data.folds import make_folds
from harness.plugins import get_plugins
from harness.workflows.prepare import prepare
from harness.workflows.run import run_study

sys.path.insert(0, str(Path(__file__).parent))
from fixtures.image_layouts import conus_layout, conus_manifest  # noqa: E402

ROOT = Path(__file__).resolve().parents[1]
PROTOCOLS = ROOT / "studies" / "protocols"
SHARED = Path(os.environ.get("HARNESS_TEST_DATA", "/nonexistent"))
needs_shared = pytest.mark.skipif(
    not (SHARED / "sports15").is_dir(),
    reason="set HARNESS_TEST_DATA to the shared datasets folder (../shared/datasets): the protocols are "
           "checked on the studies' real photos (.ci/run sets it)",
)


def _parts(name: str, data_root: Path, **overrides) -> tuple[pd.DataFrame, object]:
    plugins = get_plugins()
    study = load_study(PROTOCOLS / f"{name}.toml", plugins, {"weights": "none", **overrides})
    dataset, _ = prepare(study, plugins, data_root, Console(quiet=True))
    return make_folds(dataset, study.cv), dataset


@needs_shared
def test_sports_given_split_is_the_datasets_own():
    folds, dataset = _parts("sports_given", SHARED, image_size=[32, 32])
    split = dataset.table["split"]
    assert (folds.loc[split == "test", "part"] == "test").all() and (split == "test").sum() == 75
    cv = folds["part"] == "cv"
    assert (folds.loc[cv & (split == "valid"), "repeat_0"] == 0).all()
    assert (folds.loc[cv & (split == "train"), "repeat_0"] == 1).all()
    # the one train photo that mirrors a test photo stays out (sports15's README: near-identical pairs)
    assert (folds["part"] == "unused").sum() == 1


@needs_shared
@pytest.mark.parametrize("name, shares", [("minerals_72_18_10", (0.72, 0.18, 0.10)),
                                          ("minerals_40_20_40", (0.40, 0.20, 0.40))])
def test_minerals_three_way_splits_have_the_studys_shares(name, shares):
    folds, _ = _parts(name, SHARED, image_size=[32, 32])
    n = len(folds)
    train = ((folds["part"] == "cv") & (folds["repeat_0"] == 1)).sum()
    valid = ((folds["part"] == "cv") & (folds["repeat_0"] == 0)).sum()
    test = (folds["part"] == "test").sum()
    for got, want in zip((train, valid, test), shares):
        assert abs(got / n - want) < 0.02, (name, train, valid, test)
    assert folds.groupby("group")["part"].nunique().max() == 1  # duplicates on one side


def test_conus_thesis_list_is_its_locked_test_set(tmp_path):
    manifest = Path(os.environ.get("HARNESS_TEST_DATA", "/nonexistent")) / "conus_layout" / "manifest.csv"
    if not manifest.is_file():
        pytest.skip("set HARNESS_TEST_DATA to the shared datasets folder: the Conus file list is there (.ci/run sets it)")
    conus_layout(tmp_path / "Conus", conus_manifest(manifest))
    folds, _ = _parts("conus_thesis_list", tmp_path, image_size=[16, 16])
    thesis = pd.read_csv(manifest)
    listed = set(thesis.loc[thesis["split"] == "val", "relpath"])
    assert set(folds.loc[folds["part"] == "test", "id"]) == listed
    # a shell photographed dorsal and ventral across the thesis's split: its other view stays out of CV
    assert (folds["part"] == "unused").sum() >= 1


@needs_shared
def test_minerals_72_18_10_runs_and_scores_its_test_part_once(tmp_path):
    plugins = get_plugins()
    overrides = {"weights": "none", "image_size": [32, 32], "epochs": 1, "trials": 1}
    study = load_study(PROTOCOLS / "minerals_72_18_10.toml", plugins, overrides)
    board = run_study(study, plugins, tmp_path / "results", SHARED, Console(quiet=True))
    row = board.iloc[0]
    assert row["test_n"] == 40 and row["folds"] == 1
    assert row["test_accuracy_low"] <= row["test_accuracy"] <= row["test_accuracy_high"]
