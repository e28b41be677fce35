"""Per-class evidence from out-of-fold predictions, report.html, `harness report`, and the page in a
real browser (Debian's headless Chromium, driven by selenium)."""

from __future__ import annotations

import re
import shutil
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from sklearn.metrics import classification_report

from harness.cli import main
from harness.evaluation.evidence import OutOfFold, calibration, confidently_wrong, confusion, most_confused, per_class, top_k

from conftest import headless_chromium, tiny_study_text

ROOT = Path(__file__).resolve().parents[1]
CLASSES = ["a", "b", "c"]


def oof_example() -> OutOfFold:
    labels = np.array([0, 0, 0, 1, 1, 1, 2, 2])
    probabilities = np.array([
        [0.9, 0.05, 0.05], [0.6, 0.3, 0.1], [0.2, 0.7, 0.1],   # a: one taken for b (0.7)
        [0.1, 0.8, 0.1], [0.05, 0.9, 0.05], [0.95, 0.02, 0.03],  # b: one taken for a (0.95)
        [0.1, 0.1, 0.8], [0.3, 0.3, 0.4],
    ])
    return OutOfFold(np.arange(8), labels, probabilities)


def test_per_class_evidence_agrees_with_scikit_learn_and_by_hand():
    oof = oof_example()
    table = per_class(oof, CLASSES)
    reference = classification_report(oof.labels, oof.predicted, output_dict=True, zero_division=0)
    for i, name in enumerate(CLASSES):
        row = table.iloc[i]
        assert row["class"] == name and row["support"] == reference[str(i)]["support"]
        assert row["recall"] == pytest.approx(reference[str(i)]["recall"])
        assert row["precision"] == pytest.approx(reference[str(i)]["precision"])
    matrix = confusion(oof, CLASSES)
    assert matrix.tolist() == [[2, 1, 0], [1, 2, 0], [0, 0, 2]]
    assert most_confused(matrix, CLASSES) == [("b", "a", 1), ("a", "b", 1)]
    assert confidently_wrong(oof) == [5, 2]  # wrong with 0.95, then with 0.7
    assert top_k(oof, [2, 3]) == {2: pytest.approx(7 / 8)}  # k = 3 classes tells nothing: left out


def test_calibration_is_the_count_weighted_gap_between_confidence_and_accuracy():
    oof = oof_example()
    curve = calibration(oof, bins=10)
    confidence = oof.probabilities.max(axis=1)
    correct = oof.predicted == oof.labels
    index = np.minimum((confidence * 10).astype(int), 9)
    expected = sum(abs(correct[index == b].mean() - confidence[index == b].mean()) * (index == b).sum()
                   for b in np.unique(index)) / len(confidence)
    assert curve.ece == pytest.approx(expected)
    assert curve.count.sum() == 8 and len(curve.confidence) == len(np.unique(index))


def two_candidate_study(tmp_path: Path) -> Path:
    extra = ('filters = [4, 4, 4, 4, 4]\ndense = [8]\nbn_momentum = 0.5\n\n'
             '[[candidates]]\nname = "small"\nmodel = "cnn5"\nfilters = [2, 2, 2, 2, 2]\ndense = [4]\nbn_momentum = 0.5\n')
    study = tmp_path / "tiny.toml"
    study.write_text(tiny_study_text(trials=2, extra=extra))
    return study


def images_in(page: str) -> list[str]:
    return re.findall(r'<img [^>]*src="([^"]*)"', page)


def test_run_writes_a_self_contained_report_that_harness_report_rebuilds_also_mid_run(tmp_path, capsys):
    assert main(["run", str(two_candidate_study(tmp_path)), "--results", str(tmp_path / "r")]) == 0
    results = tmp_path / "r" / "tiny"
    page = (results / "report.html").read_text()
    assert re.search(r"[12]\. cnn5 ", page) and re.search(r"[12]\. small ", page)
    for text in ("Data", "Validation images per class and fold", "Leaderboard", "95% CI", "vs best (p)", "Most confidently wrong",
                 "precision", "Most confused", "expected calibration error", "winner"):
        assert text in page, text
    sources = images_in(page)
    # Per candidate: curves, confusion, reliability, Optuna history and importances, and the strip.
    assert len(sources) >= 2 * 5 + 2
    assert all(src.startswith("data:image/png;base64,") for src in sources)
    assert not re.search(r'(src|href)="(https?:)?//', page), "the page must not fetch anything"

    # `harness report` rebuilds the page from what the folder stores.
    first = page
    (results / "report.html").unlink()
    assert main(["report", str(results)]) == 0
    rebuilt = (results / "report.html").read_text()
    assert images_in(rebuilt) and len(images_in(rebuilt)) == len(images_in(first))
    # Mid-run: only the first candidate's folds are recorded so far (a copy of the folder without
    # its storage, so the report reads the files as they are).
    midrun = tmp_path / "midrun"
    shutil.copytree(results, midrun, ignore=shutil.ignore_patterns("optuna.journal"))
    records = (midrun / "records.jsonl").read_text().splitlines()
    (midrun / "records.jsonl").write_text("\n".join(r for r in records if '"candidate": "cnn5"' in r) + "\n")
    assert main(["report", str(midrun)]) == 0
    partial = (midrun / "report.html").read_text()
    assert "1. cnn5 " in partial and ". small " not in partial
    # Images gone: the page still builds, with captions and a note saying why.
    moved = tmp_path / "elsewhere"
    shutil.copytree(results, moved)
    capsys.readouterr()
    assert main(["report", str(moved), "--data-root", str(tmp_path / "no-such-folder")]) == 0


def test_harness_report_on_a_folder_that_is_no_results_folder_is_one_line(tmp_path, capsys):
    assert main(["report", str(tmp_path)]) == 2
    err = capsys.readouterr().err
    assert "not a results folder" in err and "Traceback" not in err


def test_the_demos_report_opens_in_headless_chromium_with_every_image_and_no_console_error(demo_results, tmp_path):
    browser = headless_chromium()
    try:
        page = demo_results / "report.html"
        browser.get(page.as_uri())
        assert browser.title.startswith("demo")
        images = browser.execute_script(
            "return Array.from(document.images).map(i => [i.alt, i.complete, i.naturalWidth]);")
        assert len(images) >= 2 * 5 + 2
        broken = [alt for alt, complete, width in images if not complete or width == 0]
        assert not broken, f"broken images: {broken}"
        # Issue 28: the data drawn, and each candidate's confidence of right and wrong predictions.
        alts = [alt for alt, _, _ in images]
        assert "images per class and fold" in alts
        assert sorted(a for a in alts if a.startswith("confidence of ")) == ["confidence of cnn5", "confidence of cnn5-small-head"]
        errors = [entry for entry in browser.get_log("browser") if entry["level"] in ("SEVERE", "ERROR")]
        assert not errors, errors
        shot = tmp_path / "report.png"
        assert browser.save_screenshot(str(shot)) and shot.stat().st_size > 10_000
    finally:
        browser.quit()


# --- refactors change where code lives, not what it computes: the demo's leaderboard is the one the
# harness made before them (written by `harness run studies/demo.toml --trials 2 --epochs 2`,
# conftest's DEMO_ARGS, on this project's CPU). First written at commit c204e82, before the Layout
# refactor, and reproduced after it and after the Protocols work; written again when the demo gained
# augmentation (issue 28, so its report shows the augmentation strip) ---

BEFORE = ROOT / "tests" / "fixtures" / "demo_leaderboard.csv"
#: Columns that must match exactly: which candidate ranks where, with which configuration.
EXACT = ["rank", "candidate", "model", "status", "trials", "complete", "folds", "best_trial", "config_id",
         "best_params", "config", "base", "vs_best", "config_means"]
#: Timing differs between runs; everything else is a number the same seed reproduces.
TIMING = ["fit_seconds"]


def test_the_demos_leaderboard_is_the_one_it_has_always_been(demo_results):
    """``demo_results`` runs the demo with conftest's DEMO_ARGS, the settings the file was made with."""
    now = pd.read_csv(demo_results / "leaderboard.csv")
    before = pd.read_csv(BEFORE)
    assert list(now.columns) == list(before.columns)
    pd.testing.assert_frame_equal(now[EXACT], before[EXACT])
    numbers = [c for c in before.columns if c not in EXACT + TIMING and pd.api.types.is_float_dtype(before[c])]
    assert "accuracy_mean" in numbers and "loss_mean" in numbers
    np.testing.assert_allclose(now[numbers].to_numpy(float), before[numbers].to_numpy(float), rtol=1e-5, equal_nan=True)
