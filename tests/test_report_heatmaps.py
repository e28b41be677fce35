"""report.html's Grad-CAM heat maps (issue 28): per candidate, its most confidently wrong and one
right image per class, from a refit of its best configuration that is saved once and reused; the
test set's refit is saved where the report looks for it."""

from __future__ import annotations

import html
import json
import re
import shutil
from pathlib import Path
from types import SimpleNamespace

import numpy as np
import pandas as pd
import pytest
from conftest import headless_chromium

from harness.cli import main
from harness.evaluation.evidence import confidently_wrong, out_of_fold
from harness.reports.heatmaps import model_path, refit_seed
from harness.reports.html import write_html_report
from harness.results.records import fold_predictions, read_records
from harness.search import final_score
from harness.search.ids import fold_seed
from harness.training.fit import FoldResult

ALT = re.compile(r'<img alt="heat map of ([^:"]+): ([^,"]+), true ([^,"]+), predicted ([^"]+)" src="data:image/png;base64,')


def _best(results: Path) -> list[tuple[str, str, str]]:
    """(candidate, search id, config id) of each ranked candidate."""
    board = pd.read_csv(results / "leaderboard.csv")
    info = json.loads((results / "run.json").read_text())
    searches = {c["name"]: c["search_id"] for c in info["candidates"]}
    return [(row.candidate, searches[row.candidate], row.config_id) for row in board.itertuples()]


def _heat_maps(page: str) -> dict[str, list[tuple[str, str, str]]]:
    found: dict[str, list] = {}
    for name, image_id, true, predicted in ALT.findall(html.unescape(page)):
        found.setdefault(name, []).append((image_id, true, predicted))
    return found


def test_refit_seed_is_the_seed_of_the_export_and_test_set_refit():
    for seed, config in ((42, "0123456789ab"), (7, "c0ffee000000"), (0, "x")):
        assert refit_seed(seed, config) == fold_seed(seed, config, -1, -1)


def test_the_demos_report_explains_each_candidates_wrong_and_right_images(demo_results):
    page = (demo_results / "report.html").read_text()
    info = json.loads((demo_results / "run.json").read_text())
    folds = pd.read_csv(demo_results / "folds.csv", dtype={"id": str}, keep_default_na=False)
    classes, records = info["classes"], read_records(demo_results / "records.jsonl")
    maps = _heat_maps(page)
    assert "No heat maps" not in page
    for name, search, config in _best(demo_results):
        assert f"Grad-CAM heat maps of {name}" in page
        assert (f"from a refit of the best configuration on the {len(folds)} cross-validation images "
                f"(seed {fold_seed(42, config, -1, -1)})") in page
        assert model_path(demo_results, search, config).is_file()
        mine = [r for r in records if r.candidate == name and r.config_id == config]
        oof = out_of_fold(fold_predictions(demo_results, mine))
        row_of = {image_id: i for i, image_id in enumerate(folds["id"])}
        truth = {int(r): (classes[t], classes[p]) for r, t, p in zip(oof.rows, oof.labels, oof.predicted)}
        wrong = [m for m in maps[name] if m[1] != m[2]]
        right = [m for m in maps[name] if m[1] == m[2]]
        assert len(wrong) == len(confidently_wrong(oof)) == min(8, int((oof.predicted != oof.labels).sum()))
        ever_right = {classes[t] for t, p in zip(oof.labels, oof.predicted) if t == p}
        assert sorted(t for _, t, _ in right) == sorted(ever_right) and len(ever_right) >= 2
        for image_id, true, predicted in maps[name]:  # the captions are the out-of-fold predictions
            assert truth[row_of[image_id]] == (true, predicted)


def test_a_rebuilt_report_reuses_the_saved_models_and_says_why_without_them(demo_results, tmp_path, monkeypatch):
    results = tmp_path / "demo"
    shutil.copytree(demo_results, results)
    files = {path: path.stat().st_mtime_ns for path in (results / "models").glob("*.keras")}
    assert len(files) == 2

    def no_refit(*args, **kwargs):
        raise RuntimeError("the report refitted a model it has")

    monkeypatch.setattr("harness.training.fit.fit_fold", no_refit)
    assert main(["report", str(results)]) == 0
    page = (results / "report.html").read_text()
    assert {n: len(m) for n, m in _heat_maps(page).items()} == {
        n: len(m) for n, m in _heat_maps((demo_results / "report.html").read_text()).items()}
    assert {path: path.stat().st_mtime_ns for path in files} == files
    # Without its model (and unable to refit), one candidate's section says why; the page is whole.
    first = next(iter(sorted(files)))
    first.unlink()
    assert main(["report", str(results)]) == 0
    page = (results / "report.html").read_text()
    assert page.count("No heat maps: the refit model could not be had or explained (RuntimeError: the report "
                      "refitted a model it has).") == 1
    assert len(_heat_maps(page)) == 1 and "Most confidently wrong" in page and "Leaderboard" in page
    assert not list((results / "models").glob(".*partial*"))
    # Without the images (no dataset given): a note per candidate, no refit tried.
    page = html.unescape(write_html_report(results).read_text())
    assert not _heat_maps(page) and page.count("No heat maps: the study's images are not available") == 2


def test_the_heat_maps_load_in_headless_chromium(demo_results):
    browser = headless_chromium()
    try:
        browser.get((demo_results / "report.html").as_uri())
        images = browser.execute_script(
            "return Array.from(document.querySelectorAll('figure.heatmap img')).map(i => [i.alt, i.complete, i.naturalWidth]);")
        assert len(images) >= 2 * 4
        assert all(complete and width >= 112 for _, complete, width in images), images
        errors = [entry for entry in browser.get_log("browser") if entry["level"] in ("SEVERE", "ERROR")]
        assert not errors, errors
    finally:
        browser.quit()


@pytest.mark.parametrize("outer", [None, 1])
def test_the_test_sets_refit_is_saved_where_the_report_looks(tmp_path, monkeypatch, outer):
    saved = []

    def fit(spec, dataset, size, params, train, train_idx, val_idx, seed, cache=None, on_epoch=None, save_model=None, **_):
        saved.append((seed, save_model))
        if save_model is not None:
            Path(save_model).write_text("a model")
        return FoldResult(np.full((len(val_idx), 2), 0.5), 0.0, 1)

    monkeypatch.setattr(final_score, "fit_fold", fit)
    monkeypatch.setattr(final_score, "effective_params", lambda candidate, tuned: ({}, None))
    study = SimpleNamespace(seed=42, cv=SimpleNamespace(test_model="refit", folds=2),
                            metrics=SimpleNamespace(extra=[], top_k=[1]))
    run = SimpleNamespace(study=study, dataset=SimpleNamespace(classes=["a", "b"], labels=np.array([0, 1, 0, 1])),
                          results_dir=tmp_path, features=None)
    plugins = SimpleNamespace(models=SimpleNamespace(get=lambda name: None))
    target = final_score.FinalScore(run, plugins, None, SimpleNamespace(name="c", model="cnn5", image_size=(8, 8)), "c-abc",
                                    np.array([0, 1]), np.array([2, 3]), outer=outer)
    selection = SimpleNamespace(records=[SimpleNamespace(tuned={}, params={})], config_id="cfg1", score=0.5, means=[0.5])
    record, _ = final_score._score(target, selection, None, SimpleNamespace(raise_if_requested=lambda: None))
    assert [seed for seed, _ in saved] == [refit_seed(42, "cfg1")] and record.model == "refit"
    kept = model_path(tmp_path, "c-abc", "cfg1")
    if outer is None:
        assert kept.read_text() == "a model" and saved[0][1] != kept  # written under another name, then renamed
        assert sorted(p.name for p in kept.parent.iterdir()) == [kept.name]
    else:
        assert saved[0][1] is None and not kept.exists()
