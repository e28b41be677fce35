"""The results folder as a view of the study's storage: records.jsonl, predictions/, folds.csv and
run.json are written from the storage (``write_results_folder``) for the reports to read, and a
results folder of an older harness is moved into the storage once (``import_results_folder``).
"""

from __future__ import annotations

import json
from dataclasses import asdict
from pathlib import Path
from typing import Any

from harness.core.files import atomic_write
from harness.errors import HarnessError
from harness.results.layout import FOLDS_FILE, RUN_FILE
from harness.results.optuna_storage import describe_storage, journal_path, open_storage
from harness.results.records import (
    RECORDS_FILE, load_records, predictions_path, read_predictions, test_predictions_path, write_predictions,
    write_test_file, TEST_FILE, write_predictions_file,
)
from harness.results.storage import ResultStore


def import_results_folder(store: ResultStore, results_dir: Path, search_ids: list[str]) -> int:
    """Move a results folder of an older harness (records.jsonl, predictions/) into the storage
    once, so a resumed study keeps its finished folds; returns the records imported."""
    if any(store._refresh(sid) for sid in search_ids):
        return 0
    records, _ = load_records(Path(results_dir) / RECORDS_FILE)
    imported = 0
    for record in records:
        if record.search_id in search_ids and store._sid(record.search_id) is not None:
            stored = read_predictions(results_dir, record.key)
            if stored is not None:
                store.write_predictions(record.key, stored["rows"], stored["labels"], stored["probabilities"])
            imported += store.append(record)
    return imported


def write_results_folder(store: ResultStore, results_dir: Path, local: dict[str, Any] | None = None) -> bool:
    """Write the results folder from the storage: run.json (with this machine's ``local``
    settings, e.g. where its data is), folds.csv, records.jsonl and predictions/. False when the
    storage holds no run of this study (a folder of an older harness stays as it is)."""
    info = store.run()
    if info is None:
        return False
    results_dir = Path(results_dir)
    results_dir.mkdir(parents=True, exist_ok=True)
    info = info | (local or {})
    search_ids = [c["search_id"] for c in info.get("candidates", [])]
    atomic_write(results_dir / RUN_FILE, json.dumps(info, indent=2), fsync=False)
    folds = store.folds()
    if folds is not None:
        atomic_write(results_dir / FOLDS_FILE, folds.to_csv(index=False), fsync=False)
    records = store.records(search_ids)
    lines = "".join(json.dumps(asdict(r), sort_keys=True) + "\n" for r in records)
    atomic_write(results_dir / RECORDS_FILE, lines, fsync=False)
    for search_id in search_ids:
        _write_missing_predictions(store, results_dir, search_id)
    _write_test_results(store, results_dir, search_ids + [sid for c in info.get("candidates", [])
                                                          for sid in c.get("outer_search_ids", [])])
    return True


def _write_missing_predictions(store: ResultStore, results_dir: Path, search_id: str) -> None:
    """predictions/: each fold's .npz the folder lacks, fetched from the storage one fold at a time
    (the folds already there are not read again)."""
    for key, stored in store.stored_predictions(search_id).items():
        config, repeat, fold = key.split("/")
        full_key = (search_id, config, int(repeat[1:]), int(fold[1:]))
        if predictions_path(results_dir, full_key).exists():
            continue
        arrays = store.load_predictions(search_id, key, stored)
        if arrays is not None:  # damaged: the report shows the fold without its predictions
            write_predictions(results_dir, full_key, arrays["rows"], arrays["labels"], arrays["probabilities"])


def _write_test_results(store: ResultStore, results_dir: Path, search_ids: list[str]) -> None:
    """test.jsonl and each scored search's test predictions, when the study has any."""
    records = store.test_records(search_ids)
    if not records and not (results_dir / TEST_FILE).exists():
        return
    for record in records:
        path = test_predictions_path(results_dir, record.search_id)
        arrays = None if path.exists() else store.test_predictions(record.search_id)
        if arrays is not None:
            path.parent.mkdir(parents=True, exist_ok=True)
            write_predictions_file(path, arrays)
    write_test_file(results_dir, records)


def refresh_results_folder(results_dir: Path) -> str | None:
    """Bring a results folder up to date with its study's storage (other machines' folds
    included) before a report reads it. Returns a warning when the storage cannot be read (the
    folder's own copy is used), else None. A folder without a storage run is left as it is."""
    results_dir = Path(results_dir)
    try:
        local = json.loads((results_dir / RUN_FILE).read_text())
    except (OSError, ValueError):
        return None  # not a results folder, or a damaged one: the report says so itself
    url = local.get("storage")
    path = journal_path(url, results_dir)
    if path is not None and not path.exists():
        return None
    try:
        store = ResultStore(open_storage(url, results_dir), local.get("study", ""))
        write_results_folder(store, results_dir, {k: local.get(k) for k in ("data_root", "storage")})
    except HarnessError as exc:
        return f"{exc} Showing the copy in {results_dir}, which may lack other machines' folds."
    except Exception as exc:  # the database went away mid-read
        return (f"cannot read the storage {describe_storage(url)} ({type(exc).__name__}: {exc}); showing the "
                f"copy in {results_dir}, which may lack other machines' folds.")
    return None
