"""The result storage at scale (issue 30): a fold costs the same to store and read whether it is the
search's first or its thousandth; predictions live in an artifact store, one fold read at a time."""

from __future__ import annotations

import base64
import io
import json

import numpy as np
import optuna
import pytest

from harness.errors import HarnessError
from harness.results import storage as storage_module
from harness.results.folder import write_results_folder
from harness.results.prediction_blobs import ARTIFACT_DIR_ENV, REFERENCE
from harness.results.records import FoldRecord, predictions_path, read_predictions
from harness.results.storage import PREDICTIONS_PREFIX, TEST_PREDICTIONS_ATTR, ResultStore
from harness.specs import TestRecord

SEARCH = "m-1"


def _record(fold: int, config: str = "c1") -> FoldRecord:
    return FoldRecord(candidate="m", search_id=SEARCH, config_id=config, trial=0, repeat=0, fold=fold,
                      params={"lr": 0.1}, tuned={"lr": 0.1}, metrics={"accuracy": 0.5}, fit_seconds=1.0,
                      epochs_run=1, train_size=10, val_size=5, finished_at=1.0)


def _arrays(fold: int) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    rng = np.random.default_rng(fold)
    return np.arange(fold, fold + 6), rng.integers(0, 3, 6), rng.random((6, 3)).astype("float32")


def _storage(kind: str, tmp_path):
    if kind == "journal":
        backend = optuna.storages.journal.JournalFileBackend(str(tmp_path / "optuna.journal"))
        storage = optuna.storages.JournalStorage(backend)
    else:
        storage = optuna.storages.RDBStorage(f"sqlite:///{tmp_path / 'optuna.db'}")
    optuna.create_study(study_name=SEARCH, storage=storage)
    return storage


def _store_fold(store: ResultStore, fold: int) -> bool:
    record = _record(fold)
    if store.get(*record.key) is not None:
        return False
    store.write_predictions(record.key, *_arrays(fold))
    return store.append(record)


@pytest.mark.parametrize("kind", ["journal", "sqlite"])
def test_records_and_predictions_round_trip_through_the_artifact_store(kind, tmp_path):
    storage = _storage(kind, tmp_path)
    store = ResultStore(storage, "s")
    assert all(_store_fold(store, f) for f in range(3)) and not _store_fold(store, 1)
    again = ResultStore(storage, "s")  # another process, or another worker
    assert again.records([SEARCH]) == [_record(f) for f in range(3)] and again.count(SEARCH, "c1") == 3
    stored = again.stored_predictions(SEARCH)
    assert sorted(stored) == [f"c1/r0/f{f}" for f in range(3)]
    assert all(set(v) == {REFERENCE} for v in stored.values())  # only an id in the storage
    assert (tmp_path / "artifacts" / stored["c1/r0/f2"][REFERENCE]).is_file()  # beside the storage's file
    rows, labels, probabilities = _arrays(2)
    one = again.fold_predictions(_record(2).key)
    assert one["rows"].tolist() == rows.tolist() and one["labels"].tolist() == labels.tolist()
    assert np.array_equal(one["probabilities"], probabilities)
    assert sorted(again.predictions(SEARCH)) == sorted(stored)
    test = TestRecord(candidate="m", search_id=SEARCH, config_id="c1", model="refit", outer=None, n=6,
                      metrics={"accuracy": 0.5}, cv_score=0.6, configurations=1, params={}, tuned={},
                      train_size=8, fit_seconds=1.0)
    assert store.append_test(test, rows, labels, probabilities) and not again.append_test(test, rows, labels, probabilities)
    assert set(storage.get_study_system_attrs(store._sid(SEARCH))[TEST_PREDICTIONS_ATTR]) == {REFERENCE}
    assert again.get_test(SEARCH) == test and np.array_equal(again.test_predictions(SEARCH)["probabilities"], probabilities)


def test_a_study_of_the_older_layout_still_reads(tmp_path):
    """Predictions written before artifacts: a base64 .npz in the study attribute."""
    storage = _storage("journal", tmp_path)
    study_id = storage.get_study_id_from_name(SEARCH)
    rows, labels, probabilities = _arrays(0)
    buffer = io.BytesIO()
    np.savez_compressed(buffer, rows=rows, labels=labels, probabilities=probabilities)
    old = base64.b64encode(buffer.getvalue()).decode("ascii")
    storage.set_study_system_attr(study_id, PREDICTIONS_PREFIX + "c1/r0/f0", old)
    storage.set_study_user_attr(study_id, "fold/c1/r0/f0", json.loads(json.dumps(_record(0).__dict__)))
    storage.set_study_system_attr(study_id, TEST_PREDICTIONS_ATTR, old)
    store = ResultStore(storage, "s")
    assert store.get(SEARCH, "c1", 0, 0) == _record(0)
    assert np.array_equal(store.fold_predictions(_record(0).key)["probabilities"], probabilities)
    assert np.array_equal(store.test_predictions(SEARCH)["rows"], rows)
    assert _store_fold(store, 1)  # new folds of an old study go to the artifact store
    assert set(store.stored_predictions(SEARCH)) == {"c1/r0/f0", "c1/r0/f1"}
    assert sorted(store.predictions(SEARCH)) == ["c1/r0/f0", "c1/r0/f1"]


def _count_calls(monkeypatch, obj, *names) -> dict[str, int]:
    calls = dict.fromkeys(names, 0)
    for name in names:
        original = getattr(obj, name)

        def counted(*args, _name=name, _original=original, **kwargs):
            calls[_name] += 1
            return _original(*args, **kwargs)

        monkeypatch.setattr(obj, name, counted)
    return calls


@pytest.mark.parametrize("kind", ["journal", "sqlite"])
def test_a_fold_reads_the_same_whether_it_is_the_first_or_the_fortieth(kind, tmp_path, monkeypatch):
    """Per fold (looked up before training, stored after): no whole read of the search's attributes
    on a database, two look-ups in memory on a journal (which reads only its file's new lines), and
    no record decoded, however many folds are stored."""
    storage = _storage(kind, tmp_path)
    store = ResultStore(storage, "s")
    calls = _count_calls(monkeypatch, storage, "get_study_user_attrs", "get_study_system_attrs")
    decoded = []
    monkeypatch.setattr(storage_module, "FoldRecord", lambda **fields: decoded.append(1) or FoldRecord(**fields))
    per_fold = []
    for fold in range(40):
        before = (calls["get_study_user_attrs"], calls["get_study_system_attrs"], len(decoded))
        assert _store_fold(store, fold)
        after = (calls["get_study_user_attrs"], calls["get_study_system_attrs"], len(decoded))
        per_fold.append(tuple(b - a for a, b in zip(before, after)))
    assert len(set(per_fold)) == 1, per_fold  # the 40th fold costs what the first did
    whole_reads, system_reads, records_decoded = per_fold[0]
    assert whole_reads == (2 if kind == "journal" else 0) and system_reads == 0 and records_decoded == 0
    other = ResultStore(storage, "s")  # a record another worker stored is found, decoded alone
    decoded.clear()
    assert other.get(SEARCH, "c1", 0, 39) == _record(39) and len(decoded) == 1
    assert other.fold_predictions(_record(39).key) is not None and calls["get_study_system_attrs"] == (kind == "journal")
    before = calls["get_study_user_attrs"]
    assert [other.count(SEARCH, "c1") for _ in range(5)] == [40] * 5  # one whole read, then from what is held
    assert calls["get_study_user_attrs"] == before + 1


def test_the_results_folder_fetches_only_the_folds_it_lacks(tmp_path, monkeypatch):
    storage = _storage("journal", tmp_path)
    store = ResultStore(storage, "s")
    store.save_run({"candidates": [{"search_id": SEARCH}]})
    for fold in range(4):
        _store_fold(store, fold)
    reads = _count_calls(monkeypatch, store.artifacts, "open_reader")
    results = tmp_path / "results"
    assert write_results_folder(store, results) and reads["open_reader"] == 4
    assert np.array_equal(read_predictions(results, _record(3).key)["probabilities"], _arrays(3)[2])
    predictions_path(results, _record(2).key).unlink()
    write_results_folder(store, results)
    assert reads["open_reader"] == 5  # the one fold missing, not the four


def test_without_a_file_beside_the_storage_predictions_stay_in_it_unless_a_shared_folder_is_set(tmp_path, monkeypatch):
    storage = optuna.storages.RDBStorage("sqlite://")  # as a database server: no folder of its own
    optuna.create_study(study_name=SEARCH, storage=storage)
    store = ResultStore(storage, "s")
    assert store.artifacts is None and _store_fold(store, 0)
    assert isinstance(store.stored_predictions(SEARCH)["c1/r0/f0"], str)  # base64, as before artifacts
    assert store.fold_predictions(_record(0).key)["rows"].tolist() == _arrays(0)[0].tolist()
    monkeypatch.setenv(ARTIFACT_DIR_ENV, str(tmp_path / "shared"))
    shared = ResultStore(storage, "s")
    assert _store_fold(shared, 1) and len(list((tmp_path / "shared").iterdir())) == 1
    with pytest.raises(HarnessError, match=ARTIFACT_DIR_ENV) as error:  # a machine not told where they are
        ResultStore(storage, "s", artifacts=None).fold_predictions(_record(1).key)
    assert "\n" not in str(error.value)


def test_a_missing_artifact_is_one_line_naming_the_store(tmp_path):
    storage = _storage("journal", tmp_path)
    store = ResultStore(storage, "s")
    _store_fold(store, 0)
    for artifact in (tmp_path / "artifacts").iterdir():
        artifact.unlink()
    with pytest.raises(HarnessError, match="missing from the artifact store") as error:
        store.fold_predictions(_record(0).key)
    assert "\n" not in str(error.value) and str(tmp_path / "artifacts") in str(error.value)
