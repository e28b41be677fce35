"""report.html's sections for scores on images no search saw: the locked test set and nested CV.

Built from the leaderboard's test and nested columns (``final_columns``) and the test predictions
stored beside the fold predictions. The test score never ranks: rows stay in cross-validated order.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd

from harness.data.folds import part_counts
from harness.evaluation.evidence import OutOfFold, confusion, most_confused, per_class
from harness.results.records import read_test_predictions, read_test_records

#: How a TestRecord's ``model`` scored the test images, in words.
TEST_MODELS = {
    "refit": "one model of the selected configuration, refit on every cross-validation image",
    "folds": "the selected configuration's fold models, their probabilities averaged",
}


def test_source(info: dict) -> str | None:
    """Where the test set came from, if run.json says (a string, or a table with ``source``)."""
    given = info.get("test")
    if isinstance(given, dict):
        given = given.get("source")
    return given if isinstance(given, str) and given else None


def _number(value: object, digits: int = 3) -> str:
    if value is None or isinstance(value, str) or pd.isna(value):
        return "—"
    return f"{float(value):.{digits}f}"


def _interval(row: pd.Series, value: str, prefix: str) -> str:
    if pd.isna(row.get(value, np.nan)):
        return "—"
    low, high = row.get(f"{prefix}_low", np.nan), row.get(f"{prefix}_high", np.nan)
    return _number(row[value]) + ("" if pd.isna(low) else f" ({low:.3f}–{high:.3f})")


def _p_value(row: pd.Series, leader: str) -> str:
    if row["candidate"] == leader:
        return "best by CV"
    p = row.get("test_p_vs_best", np.nan)
    return "—" if pd.isna(p) else f"{p:.2g}"


def _top_k_metrics(board: pd.DataFrame) -> list[str]:
    """The test top-k accuracies (k > 1) the leaderboard has."""
    return [c[len("test_"):] for c in board.columns
            if c.startswith("test_top_") and c.endswith("_accuracy") and c != "test_top_1_accuracy"]


def test_section(results_dir: Path, info: dict, board: pd.DataFrame, folds: pd.DataFrame) -> dict | None:
    """The "Test set" section's data, or None when the results folder has no locked test set."""
    if "test_n" not in board.columns or board["test_n"].isna().all():
        return None
    objective = info["objective"]
    by_search = {r.search_id: r for r in read_test_records(results_dir) if r.outer is None}
    records = {c["name"]: by_search[c["search_id"]] for c in info["candidates"] if c["search_id"] in by_search}
    models = sorted({r.model for r in records.values()})
    top = _top_k_metrics(board)
    leader = board.loc[0, "candidate"] if len(board) and not pd.isna(board.loc[0, "rank"]) else None
    headers = ["CV rank", "candidate", f"CV {objective}", "test images", "test accuracy (95% CI)",
               *(f"test {m.replace('_accuracy', '').replace('top_', 'top-')}" for m in top), "test loss",
               "McNemar p vs best by CV", "configuration scored"]
    rows, details = [], []
    for _, row in board.iterrows():
        if pd.isna(row.get("test_n")):
            continue
        rank = row.get("rank")
        config = row.get("test_config_id")
        scored = str(config) + ("" if config == row.get("config_id") else f" (CV best now {row.get('config_id')})")
        rows.append(["—" if pd.isna(rank) else str(rank), str(row["candidate"]),
                     _number(row.get(f"{objective}_mean")), str(int(row["test_n"])),
                     _interval(row, "test_accuracy", "test_accuracy"),
                     *(_number(row.get(f"test_{m}")) for m in top), _number(row.get("test_loss")),
                     _p_value(row, leader), scored])
        record = records.get(row["candidate"])
        if record is not None:
            details.append(_test_evidence(results_dir, record, info["classes"]))
    return {
        "counts": {part: n for part, n in part_counts(folds).items() if n}, "source": test_source(info),
        "models": [TEST_MODELS.get(m, m) for m in models],
        "headers": headers, "rows": rows, "candidates": [d for d in details if d is not None],
    }


def _test_evidence(results_dir: Path, record, classes: list[str]) -> dict | None:
    """Per class recall and precision and the confusion matrix of one candidate's test predictions."""
    predictions = read_test_predictions(results_dir, record.search_id)
    if predictions is None:
        return {"name": record.candidate, "per_class": None, "matrix": None, "confused": [],
                "note": "No test predictions are stored for this candidate: per-class evidence needs them."}
    scored = OutOfFold(predictions["rows"], predictions["labels"], np.asarray(predictions["probabilities"], "float64"))
    matrix = confusion(scored, classes)
    return {"name": record.candidate, "per_class": per_class(scored, classes).to_dict("records"),
            "matrix": matrix, "confused": most_confused(matrix, classes), "note": None}


def nested_section(info: dict, board: pd.DataFrame) -> dict | None:
    """The "Nested cross-validation" section's data, or None when no candidate has nested columns."""
    if "nested_accuracy_mean" not in board.columns or board["nested_accuracy_mean"].isna().all():
        return None
    objective = info["objective"]
    estimate = f"nested_{objective}_mean"
    headers = ["CV rank", "candidate", "outer folds", "nested accuracy (95% CI)"]
    if objective != "accuracy":
        headers.append(f"nested {objective}")
    headers += [f"selected CV {objective}", "optimism", f"CV {objective} (whole data)"]
    rows = []
    for _, row in board.iterrows():
        if pd.isna(row.get("nested_accuracy_mean")):
            continue
        rank = row.get("rank")
        cells = ["—" if pd.isna(rank) else str(rank), str(row["candidate"]), str(int(row["nested_outer_folds"])),
                 _interval(row, "nested_accuracy_mean", "nested_accuracy")]
        if objective != "accuracy":
            cells.append(_number(row.get(estimate)))
        optimism = row.get("optimism")
        cells += [_number(row.get("nested_selected_cv")), "—" if pd.isna(optimism) else f"{optimism:+.3f}",
                  _number(row.get(f"{objective}_mean"))]
        rows.append(cells)
    return {"headers": headers, "rows": rows}
