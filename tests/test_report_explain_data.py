"""Issue 28, items 2 and 3: how confident right and wrong predictions are (report.html and report.md),
and the data drawn (images per class and fold, part and split; source image sizes; augmented
training images as the study's [train.augment] makes them)."""

from __future__ import annotations

import json
import re
import shutil
from pathlib import Path
from types import SimpleNamespace

import numpy as np
import pandas as pd
import pytest

from harness.evaluation.evidence import OutOfFold
from harness.reports.confidence import (
    CONFIDENT,
    confidence,
    confidence_markdown,
    confidence_rows,
)
from harness.reports.data_figures import (
    augmented_variants,
    count_tables,
    data_figures,
    image_sizes,
    strip_rows,
    study_augment,
    study_settings,
)
from harness.reports.html import write_html_report
from harness.reports.leaderboard import build_leaderboard
from harness.toolkit.augment import Augment

from conftest import headless_chromium


def read_folds(results: Path) -> pd.DataFrame:
    return pd.read_csv(results / "folds.csv", dtype={"id": str, "label": str, "group": str}, keep_default_na=False)


def confident_errors_by_hand(results: Path) -> dict[str, tuple[int, int, int]]:
    """Per candidate's best configuration, straight from the stored .npz files: (predictions,
    errors, errors above 90 %)."""
    board = pd.read_csv(results / "leaderboard.csv")
    info = json.loads((results / "run.json").read_text())
    search = {c["name"]: c["search_id"] for c in info["candidates"]}
    out = {}
    for _, row in board.iterrows():
        files = sorted((results / "predictions" / search[row["candidate"]]).glob(f"{row['config_id']}-r*-f*.npz"))
        assert files
        probabilities = np.concatenate([np.load(f)["probabilities"] for f in files])
        labels = np.concatenate([np.load(f)["labels"] for f in files])
        wrong = probabilities.argmax(axis=1) != labels
        out[row["candidate"]] = (len(labels), int(wrong.sum()), int((wrong & (probabilities.max(axis=1) > 0.9)).sum()))
    return out


def test_confident_errors_are_counted_above_90_percent():
    probabilities = np.array([[0.95, 0.05], [0.2, 0.8], [0.05, 0.95], [0.4, 0.6], [0.91, 0.09], [0.9, 0.1]])
    labels = np.array([1, 1, 0, 0, 0, 1])  # wrong at 0.95, 0.95, 0.6 and exactly 0.9 (not above)
    found = confidence(OutOfFold(np.arange(6), labels, probabilities))
    assert CONFIDENT == 0.9
    assert (found.predictions, found.errors, found.confident_errors) == (6, 4, 2)
    assert found.confident_share == pytest.approx(0.5)
    assert sorted(found.right.tolist()) == pytest.approx([0.8, 0.91])
    assert found.sentence().startswith("2 of 4 errors (50%) above 90% confidence")


def test_the_demos_confidence_in_report_html_and_report_md_matches_its_predictions(demo_results):
    expected = confident_errors_by_hand(demo_results)
    board = build_leaderboard(demo_results)
    found = {r["candidate"]: r["confidence"] for r in confidence_rows(demo_results, board)}
    assert {name: (c.predictions, c.errors, c.confident_errors) for name, c in found.items()} == expected
    page = (demo_results / "report.html").read_text()
    markdown = (demo_results / "report.md").read_text()
    assert "## Confidence of the out-of-fold predictions" in markdown
    assert confidence_markdown(demo_results, board) in markdown
    for name, (n, errors, confident) in expected.items():
        assert re.search(rf'alt="confidence of {re.escape(name)}" src="data:image/png;base64,', page)
        assert f"{confident} of {errors} errors" in page
        assert re.search(rf"^\| {re.escape(name)} \| {n} \| {errors} \| {confident} \| ", markdown, re.MULTILINE)


def test_class_counts_per_fold_part_and_split():
    folds = pd.DataFrame({"id": [f"i{k}" for k in range(8)], "label": list("aabbabab"),
                          "part": ["cv", "cv", "cv", "cv", "test", "test", "cv", "unused"],
                          "repeat_0": [0, 1, 0, 1, -1, -1, 1, -1]})
    table = pd.DataFrame({"split": ["train"] * 5 + ["valid"] * 3})
    tables = count_tables(folds, ["a", "b", "c"], table)
    assert tables["fold"].to_dict() == {0: {"a": 1, "b": 1, "c": 0}, 1: {"a": 2, "b": 1, "c": 0}}
    assert tables["part"].to_dict() == {"cv": {"a": 3, "b": 2, "c": 0}, "test": {"a": 1, "b": 1, "c": 0},
                                        "unused": {"a": 0, "b": 1, "c": 0}}
    assert tables["split"].to_dict() == {"train": {"a": 3, "b": 2, "c": 0}, "valid": {"a": 1, "b": 2, "c": 0}}
    assert list(count_tables(folds.drop(columns="part"), ["a", "b"])) == ["fold"]
    assert strip_rows(folds, ["a", "b", "c"]) == [0, 2]  # the first cross-validation image per class


def test_image_sizes_come_from_the_probes_or_the_files(tmp_path):
    from PIL import Image

    sizes = [(30, 20), (30, 20), (64, 48)]
    paths = []
    for k, (w, h) in enumerate(sizes):
        paths.append(tmp_path / f"{k}.png")
        Image.new("RGB", (w, h)).save(paths[-1])
    files = SimpleNamespace(name="folder", table=pd.DataFrame({"path": [str(p) for p in paths]}),
                            samples=SimpleNamespace(pixels=None), store=None)
    found, note = image_sizes(files)
    assert found.tolist() == [list(s) for s in sizes] and "3 opened" in note
    probed = {"h1": SimpleNamespace(width=640, height=480), "h2": SimpleNamespace(width=100, height=200)}
    stored = SimpleNamespace(name="folder", table=pd.DataFrame({"path": ["x", "y", "z"], "hash": ["h1", "h2", "h1"]}),
                             samples=SimpleNamespace(pixels=None), store=SimpleNamespace(cached=lambda hashes: probed))
    found, note = image_sizes(stored)
    assert found.tolist() == [[640, 480], [100, 200], [640, 480]] and "probed" in note
    made = SimpleNamespace(name="synthetic", table=files.table, samples=SimpleNamespace(pixels=lambda t, s: None), store=None)
    assert image_sizes(made)[0] is None


def test_the_demo_page_says_what_it_cannot_draw(demo_results, tmp_path):
    page = (demo_results / "report.html").read_text()
    assert 'alt="images per class and fold"' in page
    assert "makes its pixels itself (no source files)" in page  # the synthetic dataset, reachable
    assert 'alt="augmented training images"' in page  # the demo augments (studies/demo.toml)
    moved = tmp_path / "demo"
    shutil.copytree(demo_results, moved)
    write_html_report(moved)  # no images reachable
    assert "images are not reachable from here: their sizes are not shown" in (moved / "report.html").read_text()


def test_augmented_variants_are_the_training_layers_drawn_independently():
    rng = np.random.default_rng(0)
    images = rng.integers(0, 255, (3, 16, 16, 3)).astype("uint8")
    flipped = augmented_variants(Augment(flip="horizontal"), images, variants=8)
    assert flipped.shape == (8, 3, 16, 16, 3)
    for variant in flipped:
        for image, drawn in zip(images, variant):
            assert np.array_equal(drawn, image) or np.array_equal(drawn, image[:, ::-1])
    assert any(np.array_equal(d, images[0][:, ::-1]) for d in flipped[:, 0]) or \
        any(np.array_equal(d, images[1][:, ::-1]) for d in flipped[:, 1])
    brighter = augmented_variants(Augment(brightness=0.3), images, variants=3)
    assert not np.allclose(brighter[0], brighter[1])


def augmented_copy(demo_results: Path, tmp_path: Path) -> Path:
    """The demo's results folder with a study file that augments."""
    return _with_augment(demo_results, tmp_path / "augmented", {"flip": "horizontal", "rotation": 0.1, "contrast": 0.2})


def _with_augment(demo_results: Path, results: Path, augment: dict | None) -> Path:
    """A copy of the demo's results folder whose study file has ``augment`` as [train.augment] (none: no augmentation)."""
    import tomli_w
    import tomllib

    shutil.copytree(demo_results, results)
    study = tomllib.loads((results / "study.toml").read_text())
    study["train"].pop("augment", None)
    if augment:
        study["train"]["augment"] = augment
    (results / "study.toml").write_text(tomli_w.dumps(study))
    return results


def test_a_study_without_augmentation_says_so_instead_of_the_strip(demo_results, tmp_path):
    results = _with_augment(demo_results, tmp_path / "plain", None)
    info = json.loads((results / "run.json").read_text())
    figures = data_figures(results, info, read_folds(results), lambda rows: np.zeros((len(rows), 8, 8, 3), "uint8"))
    assert figures["augment_plot"] is None and "trains without augmentation" in figures["augment_note"]


def test_the_augmentation_strip_in_headless_chromium(demo_results, tmp_path):
    results = augmented_copy(demo_results, tmp_path)
    assert study_augment(study_settings(results)) == Augment(flip="horizontal", rotation=0.1, contrast=0.2)
    info = json.loads((results / "run.json").read_text())
    asked = []

    def thumbnails(rows):
        asked.append(list(rows))
        return np.full((len(rows), 24, 24, 3), 120, dtype="uint8")

    figures = data_figures(results, info, read_folds(results), thumbnails)
    assert figures["augment_plot"].startswith("data:image/png;base64,")
    assert asked == [strip_rows(read_folds(results), info["classes"])] and len(asked[0]) == 4
    assert 'flip = "horizontal"' in figures["augment_note"] and "rotation = 0.1" in figures["augment_note"]
    gone = data_figures(results, info, read_folds(results), None)
    assert gone["augment_plot"] is None and "no strip of augmented images" in gone["augment_note"]

    write_html_report(results, thumbnails=thumbnails)
    browser = headless_chromium()
    try:
        browser.get((results / "report.html").as_uri())
        images = browser.execute_script(
            "return Array.from(document.images).map(i => [i.alt, i.complete, i.naturalWidth]);")
        alts = {alt for alt, _, _ in images}
        assert {"augmented training images", "images per class and fold"} <= alts
        assert sum(alt.startswith("confidence of") for alt in alts) == len(info["candidates"])
        assert not [alt for alt, complete, width in images if not complete or width == 0]
        errors = [e for e in browser.get_log("browser") if e["level"] in ("SEVERE", "ERROR")]
        assert not errors, errors
    finally:
        browser.quit()
