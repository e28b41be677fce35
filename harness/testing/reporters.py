"""The reporter contract: a plugin's ``on_study_end`` writes its files for a tiny finished study.

``tiny_study(results_dir)`` writes the smallest results folder a study leaves (run.json, folds.csv,
two candidates' fold records) and returns the ``RunInfo`` and ``Leaderboard`` the hook gets;
``check_reporter(plugin, results_dir)`` calls the hook with them and returns the files it wrote.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pandas as pd

from harness.specs import CrossValidation, FoldRecord, Leaderboard, LeaderboardRow, MetricSummary, RunInfo

CLASSES = ("a", "b")
FOLDS = 2
#: (candidate, accuracy on each fold) of the tiny study.
CANDIDATES = (("first", (0.75, 0.75)), ("second", (0.5, 0.25)))


def _records() -> list[FoldRecord]:
    return [
        FoldRecord(candidate=name, search_id=f"{name}-0", config_id="c0", trial=0, repeat=0, fold=fold,
                   params={"dropout": 0.0}, tuned={}, metrics={"accuracy": accuracy, "loss": 1.0 - accuracy},
                   fit_seconds=1.0, epochs_run=1, train_size=4, val_size=4, finished_at=0.0)
        for name, scores in CANDIDATES for fold, accuracy in enumerate(scores)
    ]


def _run_file(results_dir: Path) -> dict[str, Any]:
    return {
        "study": "tiny", "study_file": str(results_dir / "study.toml"), "overrides": {}, "objective": "accuracy",
        "direction": "maximize", "top_k": [1], "folds": FOLDS, "repeats": 1, "scheme": "kfold", "grouped": False,
        "classes": list(CLASSES), "failed": {}, "notes": [], "storage": None, "data_root": None,
        "candidates": [{"name": n, "model": "cnn5", "search_id": f"{n}-0", "weights": "none", "freeze_base": False}
                       for n, _ in CANDIDATES],
    }


def tiny_study(results_dir: Path) -> tuple[RunInfo, Leaderboard]:
    """Write a finished two-candidate, two-fold study into ``results_dir``; the hook's arguments for it."""
    from harness.results.records import RECORDS_FILE, append_record_line

    results_dir = Path(results_dir)
    results_dir.mkdir(parents=True, exist_ok=True)
    (results_dir / "run.json").write_text(json.dumps(_run_file(results_dir), indent=2))
    ids = [f"{label}/{i}" for label in CLASSES for i in range(4)]
    folds = pd.DataFrame({"id": ids, "label": [i.split("/")[0] for i in ids], "group": ids,
                          "repeat_0": [i % FOLDS for i in range(len(ids))]})
    folds.to_csv(results_dir / "folds.csv", index=False)
    for record in _records():
        append_record_line(results_dir / RECORDS_FILE, record)
    cv = CrossValidation("kfold", FOLDS, 1, 0, grouped=False, stratified=True)
    run = RunInfo(study="tiny", study_file=results_dir / "study.toml", description="A tiny study for reporters.",
                  results_dir=results_dir, data_root=None, dataset="synthetic", classes=CLASSES, images=len(ids),
                  cv=cv, objective="accuracy", overrides=(), folds=folds)
    rows = tuple(
        LeaderboardRow(rank=rank, candidate=name, model="cnn5", status="ok", error="", trials=1, complete=1,
                       metrics={"accuracy": MetricSummary(float(pd.Series(scores).mean()), float(pd.Series(scores).std()))},
                       folds=FOLDS, best_trial=0, config_id="c0", best_params={"dropout": 0.0})
        for rank, (name, scores) in enumerate(CANDIDATES, start=1)
    )
    return run, Leaderboard("accuracy", rows)


def check_reporter(plugin: Any, results_dir: Path) -> list[Path]:
    """Call ``plugin.on_study_end`` on a tiny study in ``results_dir``; the files it wrote there (some)."""
    run, leaderboard = tiny_study(results_dir)
    before = set(Path(results_dir).rglob("*"))
    plugin.on_study_end(run=run, leaderboard=leaderboard)
    written = sorted(set(Path(results_dir).rglob("*")) - before)
    assert written, f"{getattr(plugin, '__name__', plugin)}.on_study_end wrote nothing into {results_dir}"
    return written
