"""run.json: what `harness leaderboard` needs to rebuild the table from the records alone."""

from __future__ import annotations

import json
from typing import Any

from harness.core.files import atomic_write
from harness.plugins import Plugins
from harness.results.layout import RUN_FILE
from harness.results.storage import ResultStore
from harness.data.folds import part_counts
from harness.search.context import RunContext
from harness.search.ids import direction, search_id

#: What run.json says about this machine rather than the study: kept out of the shared description.
LOCAL_RUN_KEYS = ("data_root", "storage")


def run_description(run: RunContext, plugins: Plugins, failures: dict[str, str] | None = None) -> dict[str, Any]:
    """The settings as run (overrides listed) and the candidates that failed, with their reasons."""
    study = run.study
    return {
        "study": study.name,
        "study_file": str(study.path),
        "overrides": study.overrides,
        "objective": study.metrics.objective,
        "direction": direction(study, plugins),
        "top_k": study.metrics.top_k,
        "folds": study.cv.folds,
        "repeats": study.cv.repeats,
        "scheme": study.cv.scheme,
        **_protocol(run),
        # Whether folds kept groups together, as run: a dataset without groups splits by image either way.
        "grouped": bool(study.cv.grouped and run.dataset.has_groups),
        "classes": run.dataset.classes,
        "candidates": [
            {
                "name": c.name, "model": c.model, "search_id": search_id(study, c),
                "weights": c.train.weights, "freeze_base": c.train.freeze_base,
                **({"outer_search_ids": [f"{search_id(study, c)}.outer{k}" for k in range(study.cv.outer)]}
                   if study.cv.outer else {}),
            }
            for c in study.candidates
        ],
        "failed": dict(failures or {}),
        # For reports rebuilt later: what the data audit said, and where the search lives.
        "notes": list(run.notes),
        "storage": study.search.storage or None,
        "data_root": str(run.data_root) if run.data_root else None,
    }


def _protocol(run: RunContext) -> dict[str, Any]:
    """The test set and nested CV as run (absent when the study has neither, as before they existed)."""
    cv, found = run.study.cv, {}
    if "part" in run.folds.columns:
        found["parts"] = {part: n for part, n in part_counts(run.folds).items() if n}
    if cv.has_test:
        found["test"] = {"source": cv.test_source, "model": cv.test_model}
    if cv.outer:
        found["outer"] = cv.outer
    return found


def write_run_file(run: RunContext, plugins: Plugins, failures: dict[str, str] | None = None,
                   store: ResultStore | None = None) -> None:
    """Write run.json (see ``run_description``). With ``store``, the storage keeps it too (for every
    machine of the study)."""
    info = run_description(run, plugins, failures)
    if store is not None:
        store.save_run({k: v for k, v in info.items() if k not in LOCAL_RUN_KEYS})
    atomic_write(run.results_dir / RUN_FILE, json.dumps(info, indent=2))


def local_run_settings(run: RunContext) -> dict[str, Any]:
    """This machine's part of run.json: where its data and the search's storage are."""
    return {"data_root": str(run.data_root) if run.data_root else None, "storage": run.study.search.storage or None}
