"""`harness compare`: two protocols over the same images, candidate by candidate."""

from __future__ import annotations

import re

import pytest

from harness.cli import main
from harness.reports.compare import compare

from conftest import tiny_study_text


def run(tmp_path, name: str, cv: str, images: int = 12) -> object:
    study = tmp_path / f"{name}.toml"
    text = tiny_study_text(name=name, trials=1).replace("[cv]\nfolds = 2", cv)
    study.write_text(text.replace("images_per_class = 12", f"images_per_class = {images}"))
    assert main(["run", str(study), "--results", str(tmp_path / "r")]) == 0
    return tmp_path / "r" / name


def test_one_split_against_k_fold_cv_side_by_side(tmp_path, capsys):
    cv = run(tmp_path, "cv", "[cv]\nfolds = 3")
    split = run(tmp_path, "split", "[cv]\nscheme = \"holdout\"\nvalidation_fraction = 0.25")
    table, notes = compare(split, cv)
    assert not notes  # the same images, the same candidate
    row = table.iloc[0]
    assert row["candidate"] == "cnn5" and row["a_folds"] == 1 and row["b_folds"] == 3
    assert row["difference"] == pytest.approx(row["a_mean"] - row["b_mean"])
    assert row["b_ci_low"] <= row["b_mean"] <= row["b_ci_high"]
    assert re.match(r"one split \(2\d% validation\), grouped, 36 images", table.attrs["a"].description)
    assert table.attrs["b"].description.startswith("3-fold CV")
    capsys.readouterr()
    assert main(["compare", str(split), str(cv)]) == 0
    out = capsys.readouterr().out
    assert "one split" in out and "3-fold CV" in out and "A − B" in out and "cnn5" in out


def test_different_images_are_named_and_a_missing_folder_is_one_line(tmp_path, capsys):
    small = run(tmp_path, "small", "[cv]\nfolds = 2", images=10)
    large = run(tmp_path, "large", "[cv]\nfolds = 2", images=12)
    _, notes = compare(small, large)
    assert any("not the same images" in n for n in notes)
    capsys.readouterr()
    assert main(["compare", str(small), str(tmp_path / "nowhere")]) == 2
    err = capsys.readouterr().err
    assert "not a results folder" in err and "Traceback" not in err


def test_grouped_against_ungrouped_folds_are_told_apart(tmp_path):
    """Both studies' folds.csv list the same groups; only the run says whether folds kept them."""
    grouped = run(tmp_path, "grouped", "[cv]\nfolds = 3")
    ungrouped = run(tmp_path, "ungrouped", "[cv]\nfolds = 3\ngrouped = false")
    table, notes = compare(ungrouped, grouped)
    assert not notes
    assert ", ungrouped," in table.attrs["a"].description and ", grouped," in table.attrs["b"].description
