"""Protocols without training: [cv] test / scheme "given" / three-way ratios in the study file, the
parts and folds they make, and the exact statistics of the test-set columns."""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from conftest import tiny_study_text
from fixtures import image_layouts as layouts
from scipy.stats import beta, binom

from harness import HarnessError, Samples
from harness.config import schema
from harness.config.study import CVConfig, DatasetConfig, load_study
from harness.data.dataset import Dataset, load_dataset
from harness.data.folds import OUTSIDE, cv_indices, fold_indices, make_folds
from harness.data.folds import test_indices as rows_of_test
from harness.data.protocols import listed_rows
from harness.evaluation.stats import binomial_interval, exact_mcnemar
from harness.plugins import get_plugins
from harness.search.ids import search_id
from harness.specs import REQUIRED, DatasetContext

ROOT = Path(__file__).resolve().parents[1]
DATA = Path(os.environ.get("HARNESS_TEST_DATA") or "/nonexistent")
needs_data = pytest.mark.skipif(not DATA.is_dir(), reason="set HARNESS_TEST_DATA to the shared datasets folder "
                                "(../shared/datasets; .ci/run sets it): these splits are checked on the real photos")
CONUS_ROOT = "/srv/image-classification-tf/data/images/Conus"  # where the thesis's lists say the images were


@pytest.fixture(scope="module")
def plugins():
    return get_plugins()


def _load(plugins, name: str, data_root: Path, cache: Path, **params) -> Dataset:
    spec = plugins.datasets.get(name)
    merged = {k: v for k, v in spec.params.items() if v is not REQUIRED} | params
    return load_dataset(DatasetConfig(name, None, merged), plugins, DatasetContext(Path(data_root), cache, seed=0))


def _dataset(counts: dict[str, int], views: int = 1, split: dict[str, str] | None = None) -> Dataset:
    """A table-only dataset: ``views`` images a group; ``split`` maps an image's index modulo 5 to a split."""
    rows = []
    for label, n in counts.items():
        for i in range(n):
            row = {"id": f"{label}/{i}.jpg", "label": label, "group": f"{label}/{i // views}"}
            if split is not None:
                row["split"] = split[i % 5]
            rows.append(row)
    table = pd.DataFrame(rows)
    classes = sorted(counts)
    labels = pd.Categorical(table["label"], categories=classes).codes.astype("int64")
    return Dataset("t", table, classes, labels, Samples(table))


# -- the study file: each mistake one line naming the file and the key ---------------------------

CV_MISTAKES = {
    "two sources": ('test = { split = "test", fraction = 0.1 }', "cv.test", "not split and fraction"),
    "no source": ('test = { model = "refit" }', "cv.test", 'give one of split = "test"'),
    "fraction above 1": ("test = { fraction = 1.5 }", "cv.test.fraction", "between 0 and 1, got 1.5"),
    "fraction 0": ("test = { fraction = 0 }", "cv.test.fraction", "between 0 and 1"),
    "unknown test key": ("test = { fractoin = 0.1 }", "cv.test.fractoin", "Did you mean 'fraction'?"),
    "unknown cv key": ("tets = { fraction = 0.1 }", "cv.tets", "Did you mean 'test'?"),
    "test model": ('test = { fraction = 0.1, model = "refti" }', "cv.test.model", "Did you mean 'refit'?"),
    "missing list": ('test = { list = "no-such-list.txt" }', "cv.test.list", "no-such-list.txt not found"),
    "ratios not adding up": ('scheme = "holdout"\nratios = [0.7, 0.2, 0.2]', "cv.ratios", "adding up to 1"),
    "three ratios and cv.test": ('scheme = "holdout"\nratios = [0.7, 0.2, 0.1]\ntest = { fraction = 0.1 }',
                                 "cv.ratios", "keep one of them"),
    "given with folds": ('folds = 2\nscheme = "given"', "cv.folds", 'does not apply to cv.scheme = "given"'),
    "outer = 1": ("outer = 1", "cv.outer", "at least 2 outer folds, got 1"),
    "train_split with kfold": ('train_split = "training"', "cv.train_split", 'applies to cv.scheme = "given" only'),
    "valid_split with holdout": ('scheme = "holdout"\nvalid_split = "val"', "cv.valid_split", '"given" only'),
}


@pytest.mark.parametrize("case", list(CV_MISTAKES))
def test_each_cv_mistake_is_one_line_naming_the_file_and_key(tmp_path, plugins, case):
    setting, key, words = CV_MISTAKES[case]
    path = tmp_path / "study.toml"
    path.write_text(tiny_study_text().replace("folds = 2", setting if "folds" in setting or "scheme" in setting
                                              else f"folds = 2\n{setting}", 1))
    with pytest.raises(HarnessError) as caught:
        load_study(path, plugins)
    message = str(caught.value)
    assert "\n" not in message
    assert message.startswith(f"{path}: {key}: "), message
    assert words in message, message


def test_keras_tuner_with_a_test_set_is_refused(tmp_path, plugins):
    path = tmp_path / "study.toml"
    text = tiny_study_text().replace("folds = 2", "folds = 2\ntest = { fraction = 0.2 }")
    path.write_text(text.replace("[search]", '[search]\nengine = "keras_tuner"').replace("space.learning_rate", "# "))
    with pytest.raises(HarnessError) as caught:
        load_study(path, plugins)
    assert str(caught.value).startswith(f"{path}: cv.test: ") and 'engine = "optuna"' in str(caught.value)


def _ids(plugins, tmp_path: Path, cv_lines: str = "") -> list[str]:
    # the demo as it was before the protocols (studies/demo.toml has gained augmentation since)
    text = (ROOT / "tests" / "fixtures" / "demo_before_protocols.toml").read_text()
    text = text.replace("folds = 3", f"folds = 3\n{cv_lines}", 1)
    path = tmp_path / "demo.toml"
    path.write_text(text)
    study = load_study(path, plugins)
    return [search_id(study, c) for c in study.candidates]


def test_a_study_without_the_protocols_keeps_its_search_ids(tmp_path, plugins):
    # The pre-protocols values: computed with the code before commit 8908ae4 (harness/config at
    # 8908ae4^) from studies/demo.toml as it was then; results of such studies must keep resuming.
    assert _ids(plugins, tmp_path) == ["cnn5-698e23b0be", "cnn5-small-head-8dc554b4dc"]
    same = _ids(plugins, tmp_path)
    assert _ids(plugins, tmp_path, "outer = 3") == same  # each outer fold's search has its own id
    with_test = _ids(plugins, tmp_path, "test = { fraction = 0.1 }")
    assert with_test[0] != same[0] and with_test[1] != same[1]  # other rows to tune on: another search
    assert _ids(plugins, tmp_path, 'test = { fraction = 0.1, model = "folds" }') == with_test  # how it is scored
    assert _ids(plugins, tmp_path, "test = { fraction = 0.2 }") != with_test


def test_a_test_list_study_reloads_from_its_results_copy_with_the_same_ids(tmp_path, plugins):
    """The results folder's study.toml names the list by its full path (a report or export reloads
    it from there), and the search id depends on the list's content, not on where it lies."""
    here, there = tmp_path / "here", tmp_path / "there"
    for folder in (here, there):
        folder.mkdir()
        (folder / "test.txt").write_text("a/1.jpg\n")
    text = '[dataset]\nname = "synthetic"\n[cv]\ntest = { list = "test.txt" }\n[[candidates]]\nmodel = "cnn4"\n'
    (here / "s.toml").write_text(text)
    (there / "s.toml").write_text(text)
    first = load_study(here / "s.toml", plugins)
    copy = tmp_path / "results-study.toml"
    copy.write_text(first.effective_toml())
    again = load_study(copy, plugins)
    assert again.cv.test.file == first.cv.test.file == str((here / "test.txt").resolve())
    assert search_id(again, again.candidates[0]) == search_id(first, first.candidates[0])
    moved = load_study(there / "s.toml", plugins)  # the same list in another folder: the same search
    assert search_id(moved, moved.candidates[0]) == search_id(first, first.candidates[0])
    (there / "test.txt").write_text("a/2.jpg\n")
    changed = load_study(there / "s.toml", plugins)
    assert search_id(changed, changed.candidates[0]) != search_id(first, first.candidates[0])


# -- folds -----------------------------------------------------------------------------------------

def test_given_split_on_a_table_and_unused_splits_noted():
    dataset = _dataset({"a": 10, "b": 10}, split={0: "train", 1: "train", 2: "valid", 3: "test", 4: "extra"})
    folds = make_folds(dataset, CVConfig(scheme="given", test=schema.TestSet(split="test")))
    split = dataset.table["split"]
    assert (folds["part"] == "test").equals(split == "test")
    assert (folds["part"] == "unused").equals(split == "extra")
    expected = split.map({"valid": 0, "train": 1, "test": OUTSIDE, "extra": OUTSIDE})
    assert folds["repeat_0"].tolist() == expected.tolist()
    assert any("'extra'" in note for note in folds.attrs["notes"])
    # without a test set the test split is unused too, and said so
    plain = make_folds(dataset, CVConfig(scheme="given"))
    assert set(plain.loc[split == "test", "part"]) == {"unused"}
    assert any("'test'" in note for note in plain.attrs["notes"])


@needs_data
def test_given_split_reproduces_the_sports_split_exactly(plugins, tmp_path):
    sports = _load(plugins, "sports", DATA, tmp_path / "cache", root="sports15")
    folds = make_folds(sports, schema.CVConfig(scheme="given", test=schema.TestSet(split="test")))
    split = sports.table["split"].astype(str)
    assert split.value_counts().to_dict() == {"train": 2235, "valid": 75, "test": 75}
    assert (folds["part"] == "test").tolist() == (split == "test").tolist()
    # one train photo nearly copies a test photo (found by the near-duplicate check, same group):
    # it stays out of cross-validation, and the run says so
    copy = folds["id"] == "train/rollerblade racing/079.jpg"
    assert folds.loc[copy, "group"].tolist() == ["test/rollerblade racing/4.jpg"]
    assert folds["part"].where(~copy, "cv").isin(["cv", "test"]).all() and folds.loc[copy, "part"].item() == "unused"
    expected = split.map({"valid": 0, "train": 1, "test": OUTSIDE}).where(~copy, OUTSIDE)
    assert folds["repeat_0"].tolist() == expected.tolist()
    assert len(folds.attrs["notes"]) == 1 and "1 image outside the test set" in folds.attrs["notes"][0]


def _check_ratios(folds: pd.DataFrame, ratios: list[float], tolerance: int) -> None:
    assert folds.groupby("group")["part"].nunique().max() == 1
    assert folds.groupby("group")["repeat_0"].nunique().max() == 1
    for label, rows in folds.groupby("label"):
        n = len(rows)
        shares = [(rows["repeat_0"] == 1).sum(), (rows["repeat_0"] == 0).sum(), (rows["part"] == "test").sum()]
        for got, ratio in zip(shares, ratios):
            assert abs(got - ratio * n) <= tolerance, (label, shares, n)


def test_three_way_ratios_keep_groups_whole_and_the_shares_per_class():
    dataset = _dataset({"a": 40, "b": 60, "c": 100}, views=2)
    folds = make_folds(dataset, CVConfig(scheme="holdout", ratios=[0.6, 0.2, 0.2], seed=3))
    _check_ratios(folds, [0.6, 0.2, 0.2], tolerance=2)


@needs_data
def test_three_way_ratios_keep_both_views_of_a_seashell_together(plugins, tmp_path):
    shells = _load(plugins, "folder", DATA, tmp_path / "cache", root="seashells8", group_pattern=r"^(.*)_[AB]\.")
    assert shells.table["group"].nunique() == 80 and len(shells.table) == 160
    folds = make_folds(shells, CVConfig(scheme="holdout", ratios=[0.6, 0.2, 0.2], seed=1))
    _check_ratios(folds, [0.6, 0.2, 0.2], tolerance=2)  # one specimen: two images


def test_test_fraction_is_stratified_and_group_aware():
    dataset = _dataset({"a": 30, "b": 90, "c": 180}, views=3)
    folds = make_folds(dataset, CVConfig(folds=3, test=schema.TestSet(fraction=0.2), seed=5))
    assert folds.groupby("group")["part"].nunique().max() == 1
    test = folds[folds["part"] == "test"]
    for label, n in {"a": 30, "b": 90, "c": 180}.items():
        assert abs((test["label"] == label).sum() - 0.2 * n) <= 1.5, label  # within half a group of 3
    assert (folds.loc[folds["part"] == "test", "repeat_0"] == OUTSIDE).all()


def test_fold_indices_never_give_a_test_row_and_cover_the_cv_rows():
    dataset = _dataset({"a": 24, "b": 36, "c": 30}, views=2)
    folds = make_folds(dataset, CVConfig(folds=3, repeats=2, test=schema.TestSet(fraction=0.25), seed=2))
    test, cv = set(rows_of_test(folds)), set(cv_indices(folds))
    assert test and not test & cv and len(test) + len(cv) == len(folds)
    for repeat in range(2):
        seen = []
        for fold in range(3):
            train_idx, val_idx = fold_indices(folds, repeat, fold)
            assert not test & set(train_idx) and not test & set(val_idx)
            assert set(train_idx) | set(val_idx) == cv
            seen += list(val_idx)
        assert sorted(seen) == sorted(cv)


def test_same_seed_same_folds_and_test_set_other_seed_another():
    dataset = _dataset({"a": 24, "b": 36, "c": 30}, views=2)
    one = make_folds(dataset, CVConfig(folds=3, test=schema.TestSet(fraction=0.2), seed=4))
    assert one.equals(make_folds(dataset, CVConfig(folds=3, test=schema.TestSet(fraction=0.2), seed=4)))
    other = make_folds(dataset, CVConfig(folds=3, test=schema.TestSet(fraction=0.2), seed=5))
    assert not np.array_equal(rows_of_test(one), rows_of_test(other))


def test_a_copy_of_a_test_image_is_left_out_of_cross_validation_with_a_note(tmp_path):
    dataset = _dataset({"a": 12, "b": 12})
    dataset.table.loc[dataset.table["id"] == "a/7.jpg", "group"] = "a/0"  # a/7.jpg duplicates a/0.jpg
    listed = tmp_path / "test.txt"
    listed.write_text("a/0.jpg\nb/3.jpg\n")
    folds = make_folds(dataset, CVConfig(folds=2, test=schema.TestSet(list=str(listed))))
    part = folds.set_index("id")["part"]
    assert part["a/0.jpg"] == "test" and part["a/7.jpg"] == "unused" and part["b/3.jpg"] == "test"
    assert (folds["part"] == "cv").sum() == 21
    assert folds.attrs["notes"] and "left out of cross-validation: 1 image" in folds.attrs["notes"][0]


@needs_data
def test_the_minerals_duplicate_of_a_test_image_stays_out_of_cross_validation(plugins, tmp_path):
    minerals = _load(plugins, "minerals", DATA, tmp_path / "cache", classes=["quartz", "biotite"])
    listed = tmp_path / "test.txt"
    listed.write_text("quartz/0001.jpg\nbiotite/0002.jpg\n")
    folds = make_folds(minerals, CVConfig(folds=3, test=schema.TestSet(list=str(listed))))
    part = folds.set_index("id")["part"]
    assert part["quartz/0001.jpg"] == "test" and part["quartz/0061.jpg"] == "unused"
    assert "copy or nearly copy a test image" in " ".join(folds.attrs["notes"])


@pytest.fixture(scope="module")
def conus(plugins, tmp_path_factory):
    root = tmp_path_factory.mktemp("data")
    layouts.conus_layout(root / "Conus")
    return _load(plugins, "conus", root, root / "cache")


def test_a_thesis_style_list_of_absolute_paths_with_numbers_matches_by_id(conus, tmp_path):
    first = conus.table.groupby("label").head(1)
    lines = [f"{CONUS_ROOT}/{rel} {49 + i} {i % 3}" for i, rel in enumerate(first["id"])]
    lines[1] = first["id"].iloc[1]  # a bare id matches too
    listed = tmp_path / "test_con_location.txt"
    listed.write_text("# the thesis's test list\n\n" + "\n".join(lines) + "\n")
    assert np.flatnonzero(listed_rows(conus, listed)).tolist() == first.index.tolist()
    folds = make_folds(conus, CVConfig(folds=2, test=schema.TestSet(list=str(listed))))
    assert rows_of_test(folds).tolist() == first.index.tolist()
    # the ventral view of a listed dorsal view is the same shell: out of cross-validation
    part = folds.set_index("id")["part"]
    assert part["EASTERN_ATLANTIC/ANGOLA/flavusalbus_ANG/005-flavusalbus-EA-mocamedes_ponta_de_noronha.jpg"] == "test"


def test_list_lines_naming_no_image_are_reported_together(conus, tmp_path):
    rel = conus.table["id"].iloc[0]
    listed = tmp_path / "test.txt"
    listed.write_text(f"{CONUS_ROOT}/{rel} 49 0\n{CONUS_ROOT}/EASTERN_PACIFIC/nope_EP/001.jpg 3 1\n"
                      "MEDITERRANEAN/ventricosus_MED/999-missing.jpg 7 2\n")
    with pytest.raises(HarnessError) as caught:
        listed_rows(conus, listed)
    message = str(caught.value)
    assert "\n" not in message and message.startswith(str(listed))
    assert "2 lines" in message and "nope_EP/001.jpg" in message and "999-missing.jpg" in message
    assert " 49 0" not in message and " 3 1" not in message  # trailing numbers are not part of the path


def test_a_listed_dorsal_view_takes_its_ventral_view_out_of_cross_validation(conus, tmp_path):
    ids = conus.table["id"]
    dorsal = "EASTERN_ATLANTIC/ANGOLA/flavusalbus_ANG/011-flavusalbus_d.jpg"
    ventral = "EASTERN_ATLANTIC/ANGOLA/flavusalbus_ANG/012-flavusalbus_v.jpg"
    others = conus.table[conus.table["label"] != "flavusalbus"].groupby("label").head(1)["id"]
    listed = tmp_path / "test.txt"
    listed.write_text("\n".join([f"{CONUS_ROOT}/{dorsal} 1 0", *others]) + "\n")
    folds = make_folds(conus, CVConfig(folds=2, test=schema.TestSet(list=str(listed))))
    part = folds.set_index("id")["part"]
    assert ids.isin([dorsal, ventral]).sum() == 2
    assert part[dorsal] == "test" and part[ventral] == "unused"
    assert (folds.loc[folds["id"] == ventral, "repeat_0"] == OUTSIDE).all()


# -- statistics ----------------------------------------------------------------------------------

@pytest.mark.parametrize("k,n", [(8, 10), (0, 10), (10, 10), (45, 50), (1, 3), (171, 200)])
def test_binomial_interval_is_clopper_pearson(k, n):
    low = 0.0 if k == 0 else beta.ppf(0.025, k, n - k + 1)
    high = 1.0 if k == n else beta.ppf(0.975, k + 1, n - k)
    assert binomial_interval(k, n) == pytest.approx((low, high), abs=1e-9)


def test_binomial_interval_matches_statsmodels():
    # statsmodels.stats.proportion.proportion_confint(k, n, method="beta")
    assert binomial_interval(8, 10) == pytest.approx((0.4439045, 0.9747893), abs=1e-6)
    assert binomial_interval(0, 10) == pytest.approx((0.0, 0.3084971), abs=1e-6)
    assert binomial_interval(45, 50) == pytest.approx((0.7818646, 0.9667249), abs=1e-6)
    low, high = binomial_interval(0, 0)
    assert np.isnan(low) and np.isnan(high)


def _pairs(only_a: int, only_b: int, both: int = 5, neither: int = 2) -> tuple[list[bool], list[bool]]:
    a = [True] * only_a + [False] * only_b + [True] * both + [False] * neither
    b = [False] * only_a + [True] * only_b + [True] * both + [False] * neither
    return a, b


@pytest.mark.parametrize("only_a,only_b,p", [
    (1, 6, 0.125),  # statsmodels mcnemar([[5, 1], [6, 2]], exact=True).pvalue
    (0, 5, 0.0625),
    (6, 1, 0.125),
    (3, 3, 1.0),
    (0, 0, 1.0),
])
def test_exact_mcnemar_matches_statsmodels(only_a, only_b, p):
    assert exact_mcnemar(*_pairs(only_a, only_b)) == pytest.approx(p, abs=1e-12)


@pytest.mark.parametrize("only_a,only_b", [(2, 10), (10, 20), (7, 9), (0, 1)])
def test_exact_mcnemar_is_the_two_sided_binomial_of_the_discordant_pairs(only_a, only_b):
    n, k = only_a + only_b, min(only_a, only_b)
    assert exact_mcnemar(*_pairs(only_a, only_b)) == pytest.approx(min(1.0, 2 * binom.cdf(k, n, 0.5)), abs=1e-12)


def test_a_test_share_that_leaves_too_few_images_for_the_folds_is_one_line(tmp_path, capsys):
    from harness.cli import main

    text = tiny_study_text().replace("images_per_class = 12", "images_per_class = 6").replace("views = 2\n", "").replace(
        "folds = 2", "folds = 5\ntest = { fraction = 0.4 }")
    path = tmp_path / "small.toml"
    path.write_text(text)
    assert main(["validate", str(path)]) == 2
    err = " ".join(capsys.readouterr().err.split())
    assert "what the locked test set left" in err and "5 stratified folds" in err and "Traceback" not in err
