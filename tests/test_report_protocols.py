"""report.html and `harness compare` for scores on unseen images: the locked test set ([cv] test)
and nested cross-validation (test.jsonl records with ``outer`` set)."""

from __future__ import annotations

import html
import io
import json
import re
import shutil
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from conftest import harness_cache, headless_chromium
from rich.console import Console
from scipy import stats
from sklearn.metrics import precision_recall_fscore_support

from harness.cli import main
from harness.reports.compare import compare, print_comparison
from harness.reports.html import write_html_report
from harness.results.records import TEST_FILE, read_test_predictions, read_test_records

ROOT = Path(__file__).resolve().parents[1]


@pytest.fixture(scope="module")
def test_results(tmp_path_factory) -> Path:
    """The demo with a locked test set (a quarter of the images), run once for the module."""
    tmp = tmp_path_factory.mktemp("protocols")
    text = (ROOT / "studies" / "demo.toml").read_text()
    text = text.replace('name = "demo"', 'name = "demo-test"')
    text = text.replace("[cv]\nfolds = 3", "[cv]\nfolds = 3\ntest = { fraction = 0.25 }")
    assert "test = { fraction = 0.25 }" in text
    study = tmp / "demo_test.toml"
    study.write_text(text)
    with harness_cache(tmp / "cache"):
        # a shorter run than the demo's: the tests recompute every number from what it stored
        assert main(["run", str(study), "--results", str(tmp / "r"), "--trials", "2", "--epochs", "1", "--image-size", "32"]) == 0
    return tmp / "r" / "demo-test"


@pytest.fixture
def results(test_results, tmp_path) -> Path:
    """A copy each test may change."""
    return Path(shutil.copytree(test_results, tmp_path / "demo-test"))


def section(page: str, anchor: str) -> str:
    match = re.search(rf'<section id="{anchor}">(.*?)</section>', page, re.DOTALL)
    assert match, f"no section {anchor}"
    return re.sub(r"\s+", " ", html.unescape(match.group(1)))


def table_rows(text: str) -> list[list[str]]:
    """The first table's body rows, as cell texts."""
    body = re.search(r"<tbody>(.*?)</tbody>", text, re.DOTALL).group(1)
    return [re.findall(r"<td[^>]*>(.*?)</td>", row) for row in re.findall(r"<tr>(.*?)</tr>", body, re.DOTALL)]


def hits(results: Path, search_id: str) -> pd.Series:
    predictions = read_test_predictions(results, search_id)
    right = predictions["probabilities"].argmax(axis=1) == predictions["labels"]
    return pd.Series(right, index=predictions["rows"])


def exact_interval(k: int, n: int) -> str:
    interval = stats.binomtest(k, n).proportion_ci(0.95, method="exact")
    return f"{k / n:.3f} ({interval.low:.3f}–{interval.high:.3f})"


def test_report_has_a_test_set_section_with_the_numbers_from_the_stored_predictions(results):
    page = write_html_report(results).read_text()
    info = json.loads((results / "run.json").read_text())
    folds = pd.read_csv(results / "folds.csv")
    test = section(page, "test-set")
    assert "Test set" in test and "never ranks" in test
    n_test, n_cv = int((folds["part"] == "test").sum()), int((folds["part"] == "cv").sum())
    assert f"Locked test set: {n_test} images" in test and f"{n_cv} images in cross-validation" in test
    assert "refit on every cross-validation image" in test  # the demo's test model: refit
    rows = table_rows(test)
    records = {r.candidate: r for r in read_test_records(results)}
    assert sorted(r[1] for r in rows) == sorted(records) and [r[0] for r in rows] == ["1", "2"]  # CV order
    leader, other = records[rows[0][1]], records[rows[1][1]]
    search = {c["name"]: c["search_id"] for c in info["candidates"]}
    right = {name: hits(results, search[name]) for name in records}
    for row in rows:
        record, mine = records[row[1]], right[row[1]]
        assert row[3] == str(record.n) == str(len(mine))
        assert row[4] == exact_interval(int(mine.sum()), len(mine))  # accuracy with its exact binomial CI
        assert row[5] == f"{record.metrics['top_2_accuracy']:.3f}" and row[6] == f"{record.metrics['loss']:.3f}"
        assert row[-1] == record.config_id
    # McNemar against the best by CV, from the predictions by hand
    a, b = right[leader.candidate], right[other.candidate]
    only_a, only_b = int((a & ~b).sum()), int((~a & b).sum())
    p = stats.binomtest(only_a, only_a + only_b, 0.5).pvalue if only_a + only_b else 1.0
    assert rows[0][7] == "best by CV" and rows[1][7] == f"{p:.2g}"
    # per-class recall and precision and a confusion matrix per candidate
    predictions = read_test_predictions(results, search[leader.candidate])
    precision, recall, _, support = precision_recall_fscore_support(
        predictions["labels"], predictions["probabilities"].argmax(axis=1), labels=range(len(info["classes"])),
        zero_division=0)
    per_class = table_rows(test.split(f"<h3>{leader.candidate} on the test set</h3>")[1])
    assert per_class == [[name, f"{r:.3f}", f"{q:.3f}", str(s)]
                         for name, r, q, s in zip(info["classes"], recall, precision, support)]
    assert test.count('alt="test confusion matrix of') == 2
    # the data section counts CV folds only, and says what is held out
    assert "<th>fold -1</th>" not in page
    assert f"({n_cv} in cross-validation, {n_test} in the locked test set)" in page
    assert 'id="nested-cv"' not in page
    # where the test set came from, when run.json says
    info["test"] = {"source": "the list held_out.txt", "model": "refit"}
    (results / "run.json").write_text(json.dumps(info))
    assert "Locked test set: 48 images (the list held_out.txt), taken out" in section(
        write_html_report(results).read_text(), "test-set")


def test_a_results_folder_without_a_test_set_renders_without_the_sections(results):
    """An older folder: no test.jsonl, no test predictions, no ``part`` column."""
    (results / TEST_FILE).unlink()
    for path in results.glob("predictions/*/test.npz"):
        path.unlink()
    folds = pd.read_csv(results / "folds.csv", dtype=str, keep_default_na=False)
    folds.loc[folds["part"] != "cv", "repeat_0"] = "0"  # every row in a fold; rows keep their positions
    folds.drop(columns="part").to_csv(results / "folds.csv", index=False)
    page = write_html_report(results).read_text()
    assert "Test set" not in page and 'id="test-set"' not in page and 'id="nested-cv"' not in page
    assert "test accuracy" not in page and "locked test set" not in page
    assert re.search(r"<p>192 images, 4 classes; 3-fold", page) and "<th>fold -1</th>" not in page
    assert "<h2>Leaderboard</h2>" in page and page.count('<section class="candidate"') == 2


def add_nested(results: Path) -> dict[str, list[dict]]:
    """Fabricated nested CV: two outer folds per candidate, in test.jsonl and run.json."""
    info = json.loads((results / "run.json").read_text())
    base = json.loads((results / TEST_FILE).read_text().splitlines()[0])
    lines, outer = [], {}
    for i, cand in enumerate(info["candidates"]):
        cand["outer_search_ids"] = [f"{cand['search_id']}-outer{k}" for k in range(2)]
        outer[cand["name"]] = []
        for k, sid in enumerate(cand["outer_search_ids"]):
            n, right = (30, 18 + i) if k == 0 else (20, 11 + i)
            line = dict(base, candidate=cand["name"], search_id=sid, outer=k, n=n, cv_score=0.7 + 0.04 * k,
                        metrics={"accuracy": right / n, "loss": 0.9 - 0.1 * k})
            lines.append(json.dumps(line))
            outer[cand["name"]].append(line)
    (results / "run.json").write_text(json.dumps(info))
    with open(results / TEST_FILE, "a") as file:
        file.write("\n".join(lines) + "\n")
    return outer


def test_nested_cross_validation_section_pools_the_outer_folds(results):
    outer = add_nested(results)
    page = write_html_report(results).read_text()
    nested = section(page, "nested-cv")
    assert "Nested cross-validation" in nested and "optimism" in nested
    rows = {row[1]: row for row in table_rows(nested)}
    assert set(rows) == set(outer)
    board = pd.read_csv(results / "leaderboard.csv").set_index("candidate")
    for name, folds in outer.items():
        n = sum(f["n"] for f in folds)
        right = round(sum(f["metrics"]["accuracy"] * f["n"] for f in folds))
        selected = np.mean([f["cv_score"] for f in folds])
        assert rows[name][2] == "2" and rows[name][3] == exact_interval(right, n)
        assert rows[name][4] == f"{selected:.3f}" and rows[name][5] == f"{selected - right / n:+.3f}"
        assert rows[name][6] == f"{board.loc[name, 'accuracy_mean']:.3f}"
    assert 'id="test-set"' in page  # the locked test set's section stays


def test_compare_shows_test_and_nested_accuracy_of_both_studies(results, tmp_path, capsys):
    other = Path(shutil.copytree(results, tmp_path / "other"))
    # the command line: the test set as run (it refreshes both folders from their storage first)
    capsys.readouterr()
    assert main(["compare", str(results), str(other)]) == 0
    out = capsys.readouterr().out
    assert "A test accuracy (95% CI)" in out and "B test accuracy (95% CI)" in out and "nested accuracy" not in out
    assert "in a locked test set" in out
    records = {r.candidate: r for r in read_test_records(results) if r.outer is None}
    for record in records.values():
        assert exact_interval(round(record.metrics["accuracy"] * record.n), record.n) in out
    # with nested CV as well (fabricated, so straight from the folders, not refreshed from storage)
    for folder in (results, other):
        add_nested(folder)
    table, notes = compare(results, other)
    assert not notes and table.attrs["scores"] == ["test", "nested"]
    for _, row in table.iterrows():
        record = records[row["candidate"]]
        assert row["a_test"] == pytest.approx(record.metrics["accuracy"]) == pytest.approx(row["b_test"])
        assert row["a_test_low"] < row["a_test"] < row["a_test_high"]
        assert row["a_nested"] == row["b_nested"] == pytest.approx(0.58 if row["candidate"] == "cnn5" else 0.62)
    console = Console(file=io.StringIO(), width=300)
    print_comparison(table, notes, console)
    printed = console.file.getvalue()
    assert "A nested accuracy (95% CI)" in printed and "B test accuracy (95% CI)" in printed
    assert exact_interval(29, 50) in printed and exact_interval(31, 50) in printed


def test_compare_notes_a_test_set_only_one_study_has(results, tmp_path):
    older = Path(shutil.copytree(results, tmp_path / "older"))
    (older / TEST_FILE).unlink()
    table, notes = compare(older, results)
    assert table.attrs["scores"] == [] and "a_test" not in table.columns
    assert notes == ["only demo-test has a locked test set: its test accuracy is not compared"]
    console = Console(file=io.StringIO(), width=300)
    print_comparison(table, notes, console)
    printed = console.file.getvalue()
    assert "test accuracy (95% CI)" not in printed and "only demo-test has a locked test set" in printed


def test_the_test_set_report_opens_in_headless_chromium_with_every_image(results):
    page = write_html_report(results)
    browser = headless_chromium()
    try:
        browser.get(page.as_uri())
        images = browser.execute_script(
            "return Array.from(document.images).map(i => [i.alt, i.complete, i.naturalWidth]);")
        assert sum(alt.startswith("test confusion matrix of") for alt, _, _ in images) == 2
        assert not [alt for alt, complete, width in images if not complete or width == 0]
        errors = [entry for entry in browser.get_log("browser") if entry["level"] in ("SEVERE", "ERROR")]
        assert not errors, errors
    finally:
        browser.quit()
