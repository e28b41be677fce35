"""The leaderboard table as the plugin API's ``Leaderboard``: typed rows, settings as data, not JSON text."""

from __future__ import annotations

import json
import math

import pandas as pd

from harness.specs import JSONValue, Leaderboard, LeaderboardRow, MetricSummary


def _number(value: object) -> float | None:
    if value is None or isinstance(value, str):
        return None
    number = float(value)
    return None if math.isnan(number) else number


def _whole(value: object) -> int | None:
    number = _number(value)
    return None if number is None else int(number)


def _json(text: object) -> dict[str, JSONValue]:
    return json.loads(text) if isinstance(text, str) and text else {}


def _text(value: object) -> str:
    return value if isinstance(value, str) else ""


def _metrics(row: pd.Series) -> dict[str, MetricSummary]:
    names = [c[: -len("_mean")] for c in row.index if c.endswith("_mean") and not c.startswith("nested_")]
    found = {}
    for name in names:
        mean, std = _number(row.get(f"{name}_mean")), _number(row.get(f"{name}_std"))
        if mean is not None:
            found[name] = MetricSummary(mean, std if std is not None else 0.0)
    return found


def leaderboard_row(row: pd.Series, objective: str) -> LeaderboardRow:
    """One row of ``build_leaderboard``'s table as a ``LeaderboardRow``."""
    low, high = _number(row.get(f"{objective}_ci_low")), _number(row.get(f"{objective}_ci_high"))
    return LeaderboardRow(
        rank=_whole(row.get("rank")) if not pd.isna(row.get("rank")) else None,
        candidate=str(row["candidate"]),
        model=str(row["model"]),
        status=str(row["status"]),
        error=_text(row.get("error")),
        trials=_whole(row.get("trials")) or 0,
        complete=_whole(row.get("complete")) or 0,
        metrics=_metrics(row),
        interval=(low, high) if low is not None and high is not None else None,
        p_vs_best=_number(row.get("p_vs_best")),
        vs_best=_text(row.get("vs_best")),
        folds=_whole(row.get("folds")),
        fit_seconds=_number(row.get("fit_seconds")),
        best_trial=_whole(row.get("best_trial")),
        config_id=_text(row.get("config_id")) or None,
        best_params=_json(row.get("best_params")),
        config=_json(row.get("config")),
        base=_text(row.get("base")),
        warnings=_text(row.get("warnings")),
        config_means=tuple(json.loads(row["config_means"])) if isinstance(row.get("config_means"), str) else (),
        **_final_scores(row),
    )


def _pair(row: pd.Series, low: str, high: str) -> tuple[float, float] | None:
    low, high = _number(row.get(low)), _number(row.get(high))
    return (low, high) if low is not None and high is not None else None


def _final_scores(row: pd.Series) -> dict:
    """The test and nested fields of a row (see ``harness.reports.final_columns``)."""
    test = {c[len("test_"):]: _number(row[c]) for c in row.index
            if c.startswith("test_") and not c.endswith(("_low", "_high", "p_vs_best", "_n", "config_id"))}
    nested = {c[len("nested_"):-len("_mean")]: _number(row[c]) for c in row.index
              if c.startswith("nested_") and c.endswith("_mean")}
    return {
        "test": {k: v for k, v in test.items() if v is not None},
        "test_n": _whole(row.get("test_n")),
        "test_interval": _pair(row, "test_accuracy_low", "test_accuracy_high"),
        "test_p_vs_best": _number(row.get("test_p_vs_best")),
        "nested": {k: v for k, v in nested.items() if v is not None},
        "nested_interval": _pair(row, "nested_accuracy_low", "nested_accuracy_high"),
        "optimism": _number(row.get("optimism")),
    }


def leaderboard_of(table: pd.DataFrame, objective: str) -> Leaderboard:
    """The leaderboard that ``on_study_end`` hooks receive, from the table ``build_leaderboard`` made."""
    rows = tuple(leaderboard_row(row, objective) for _, row in table.iterrows())
    return Leaderboard(objective=objective, rows=rows, notes=tuple(table.attrs.get("warnings", [])))
