from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from harness import HarnessError, Samples
from harness.config.study import CVConfig
from harness.data.dataset import Dataset, apply_small_class_policy
from harness.data.folds import fold_indices, make_folds
from harness.results.layout import save_or_check_folds


def _dataset(counts: dict[str, int], views: int = 1) -> Dataset:
    rows = []
    for label, n in counts.items():
        for i in range(n):
            group = f"{label}-{i // views}" if views > 1 else f"{label}/{i}"
            rows.append({"id": f"{label}/{i}", "label": label, "group": group})
    table = pd.DataFrame(rows)
    classes = sorted(counts)
    labels = pd.Categorical(table["label"], categories=classes).codes.astype("int64")
    return Dataset("t", table, classes, labels, Samples(table))


def test_groups_never_straddle_folds_and_classes_are_stratified():
    dataset = _dataset({"a": 30, "b": 20, "c": 10}, views=2)
    folds = make_folds(dataset, CVConfig(folds=5, repeats=2, seed=3))
    for repeat in (0, 1):
        assert folds.groupby("group")[f"repeat_{repeat}"].nunique().max() == 1
        per_fold = pd.crosstab(folds["label"], folds[f"repeat_{repeat}"])
        assert (per_fold.loc["a"] == 6).all() and (per_fold.loc["c"] == 2).all()
    assert not folds["repeat_0"].equals(folds["repeat_1"])


def test_same_seed_same_folds_other_seed_other_folds():
    dataset = _dataset({"a": 20, "b": 20})
    one = make_folds(dataset, CVConfig(folds=4, seed=1))
    assert one.equals(make_folds(dataset, CVConfig(folds=4, seed=1)))
    assert not one.equals(make_folds(dataset, CVConfig(folds=4, seed=2)))


def test_fold_indices_partition_the_data():
    dataset = _dataset({"a": 10, "b": 10})
    folds = make_folds(dataset, CVConfig(folds=5))
    seen = []
    for fold in range(5):
        train, val = fold_indices(folds, 0, fold)
        assert not set(train) & set(val)
        assert len(train) + len(val) == 20
        seen.extend(val)
    assert sorted(seen) == list(range(20))


def test_too_few_images_in_a_class_is_a_clear_error():
    dataset = _dataset({"a": 10, "rare": 2})
    with pytest.raises(HarnessError) as err:
        apply_small_class_policy(dataset, CVConfig(folds=5))
    message = str(err.value)
    assert "'rare' (2 images)" in message and "cv.folds = 5" in message and 'small_classes = "drop"' in message


def test_drop_policy_removes_small_classes_with_a_note():
    dataset = _dataset({"a": 10, "b": 10, "rare": 2})
    kept, notes = apply_small_class_policy(dataset, CVConfig(folds=5, small_classes="drop"))
    assert kept.classes == ["a", "b"] and len(kept.table) == 20
    assert np.array_equal(np.unique(kept.labels), [0, 1])
    assert "rare" in notes[0]


def test_grouped_policy_counts_groups_not_images():
    dataset = _dataset({"a": 10, "b": 8}, views=4)  # b: 8 images but only 2 specimens
    with pytest.raises(HarnessError, match="'b' \\(2 groups\\)"):
        apply_small_class_policy(dataset, CVConfig(folds=3))


def test_saved_folds_must_match_on_rerun(tmp_path: Path):
    dataset = _dataset({"a": 10, "b": 10})
    save_or_check_folds(make_folds(dataset, CVConfig(folds=5, seed=1)), tmp_path)
    save_or_check_folds(make_folds(dataset, CVConfig(folds=5, seed=1)), tmp_path)  # same: fine
    with pytest.raises(HarnessError, match="different folds"):
        save_or_check_folds(make_folds(dataset, CVConfig(folds=5, seed=2)), tmp_path)
