"""The leaderboard's columns for scores on unseen images: the locked test set and nested CV.

Test columns (a candidate's selected configuration, scored once on the test set): ``test_n``,
``test_<metric>`` for every metric, ``test_<accuracy metric>_low`` / ``_high`` (the exact binomial
95 % interval) and ``test_<accuracy metric>_p_vs_best`` (the exact McNemar test on the shared test
images against the best candidate by cross-validation); ``test_p_vs_best`` is that of accuracy.
Nested columns: ``nested_<metric>_mean`` pooled over the outer folds (each image scored once),
``nested_accuracy_low`` / ``_high`` and ``optimism`` (the inner searches' selected CV score minus
the nested estimate of the objective, signed so that positive means CV flattered the selection).
The test score never ranks: the table stays in cross-validated order.
"""

from __future__ import annotations

import re
from pathlib import Path

import numpy as np
import pandas as pd

from harness.evaluation.stats import binomial_interval, exact_mcnemar
from harness.results.records import read_test_predictions, read_test_records
from harness.specs import TestRecord


def is_proportion(metric: str) -> bool:
    """Accuracy and top-k accuracy: a share of images, with an exact binomial interval."""
    return metric == "accuracy" or re.fullmatch(r"top_\d+_accuracy", metric) is not None


def add_final_columns(table: pd.DataFrame, info: dict, results_dir: Path, metrics: list[str]) -> None:
    """Add the test and nested columns to ``table`` (in place) where the results folder has them."""
    records = read_test_records(results_dir)
    if not records or table.empty:
        return
    by_name = {c["name"]: c for c in info["candidates"]}
    locked = {r.search_id: r for r in records if r.outer is None}
    nested: dict[str, list[TestRecord]] = {}
    for r in records:
        if r.outer is not None:
            nested.setdefault(r.search_id, []).append(r)
    correct: dict[str, dict[str, np.ndarray]] = {}
    for index, row in table.iterrows():
        cand = by_name.get(row["candidate"], {})
        record = locked.get(cand.get("search_id"))
        if record is not None:
            correct[row["candidate"]] = _test_cells(table, index, record, results_dir, metrics)
        outer = [r for sid in cand.get("outer_search_ids", []) for r in nested.get(sid, [])]
        if outer:
            _nested_cells(table, index, outer, info)
    _mcnemar_against_best(table, correct)


def _test_cells(table: pd.DataFrame, index, record: TestRecord, results_dir: Path, metrics: list[str]) -> dict:
    """One candidate's test columns; returns, per proportion metric, which test images it got right."""
    table.loc[index, "test_n"] = record.n
    table.loc[index, "test_config_id"] = record.config_id
    predictions = read_test_predictions(results_dir, record.search_id)
    right = {}
    for metric in [m for m in metrics if m in record.metrics]:
        value = record.metrics[metric]
        table.loc[index, f"test_{metric}"] = value
        if is_proportion(metric):
            low, high = binomial_interval(round(value * record.n), record.n)
            table.loc[index, f"test_{metric}_low"], table.loc[index, f"test_{metric}_high"] = low, high
            if predictions is not None:
                right[metric] = _hits(predictions, metric)
    return right


def _hits(predictions: dict[str, np.ndarray], metric: str) -> pd.Series:
    """Per test image (by dataset row), whether its class is the top one (or among the top k)."""
    k = 1 if metric == "accuracy" else int(metric.split("_")[1])
    top = np.argsort(-predictions["probabilities"], axis=1, kind="stable")[:, :k]
    hit = (top == predictions["labels"][:, None]).any(axis=1)
    return pd.Series(hit, index=predictions["rows"])


def _mcnemar_against_best(table: pd.DataFrame, correct: dict[str, dict[str, pd.Series]]) -> None:
    """``test_<metric>_p_vs_best``: the exact McNemar test against the leader by cross-validation."""
    if not correct or table.empty or pd.isna(table.loc[0, "rank"]):
        return
    leader = correct.get(table.loc[0, "candidate"])
    if leader is None:
        return
    for index, row in table.iterrows():
        if index == 0:
            continue  # the leader itself
        mine = correct.get(row["candidate"], {})
        for metric, hits in mine.items():
            if metric not in leader:
                continue
            shared = hits.index.intersection(leader[metric].index)
            p = exact_mcnemar(leader[metric][shared].to_numpy(), hits[shared].to_numpy())
            table.loc[index, f"test_{metric}_p_vs_best"] = p
            if metric == "accuracy":
                table.loc[index, "test_p_vs_best"] = p


def _nested_cells(table: pd.DataFrame, index, outer: list[TestRecord], info: dict) -> None:
    """Nested CV's estimate: each metric pooled over the outer folds (weighted by their images)."""
    n = sum(r.n for r in outer)
    table.loc[index, "nested_outer_folds"] = len(outer)
    for metric in outer[0].metrics:
        pooled = sum(r.metrics[metric] * r.n for r in outer) / n
        table.loc[index, f"nested_{metric}_mean"] = pooled
        if is_proportion(metric):
            low, high = binomial_interval(round(pooled * n), n)
            table.loc[index, f"nested_{metric}_low"], table.loc[index, f"nested_{metric}_high"] = low, high
    objective = info["objective"]
    selected = float(np.mean([r.cv_score for r in outer]))
    estimate = table.loc[index, f"nested_{objective}_mean"]
    sign = 1 if info["direction"] == "maximize" else -1
    table.loc[index, "nested_selected_cv"] = selected
    table.loc[index, "optimism"] = sign * (selected - estimate)


def final_cells(row: pd.Series, objective: str) -> dict[str, str]:
    """The test and nested cells of one row for the terminal and Markdown tables (none when absent)."""
    cells = {}
    if "test_accuracy" in row.index:
        cells["test accuracy (95% CI)"] = _with_interval(row, "test_accuracy", "test_accuracy")
        p = row.get("test_p_vs_best")
        cells["test vs best (McNemar p)"] = "—" if p is None or pd.isna(p) else f"{p:.2g}"
    if "nested_accuracy_mean" in row.index:
        cells["nested accuracy (95% CI)"] = _with_interval(row, "nested_accuracy_mean", "nested_accuracy")
        optimism = row.get("optimism")
        cells[f"optimism ({objective})"] = "—" if optimism is None or pd.isna(optimism) else f"{optimism:+.3f}"
    return cells


def _with_interval(row: pd.Series, value_column: str, prefix: str) -> str:
    value, low, high = row.get(value_column), row.get(f"{prefix}_low"), row.get(f"{prefix}_high")
    if value is None or pd.isna(value):
        return "—"
    return f"{value:.3f} ({low:.3f}–{high:.3f})" if low is not None and not pd.isna(low) else f"{value:.3f}"
