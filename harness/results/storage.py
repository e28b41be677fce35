"""The study's results in its storage: the one place every worker, on any machine, reads and writes.

It holds the Optuna trials and, beside them, what a leaderboard needs: each fold's record, its
out-of-fold predictions, the folds and the run's description. Optuna's own storage API keeps them
(study attributes), so one database or one journal file is the whole study:

- a candidate's search (an Optuna study named by its search id) carries its fold records as user
  attributes ``fold/<config>/r<repeat>/f<fold>`` and their predictions as system attributes
  ``oof/...``: the id of a compressed .npz in the study's Optuna artifact store (``artifacts/``
  beside a journal or SQLite file, or ``HARNESS_ARTIFACT_DIR``), or, for a database server without
  a shared artifact folder, the .npz itself in base64 as in studies written before artifacts
  (``harness.results.prediction_blobs`` says which, and why); read back without pickle;
- a study named ``harness:<study name>`` carries the run's description and its folds.

A key is written once per fold, so no record can be doubled, whichever workers race for it.
A fold costs the same to store whether it is the search's first or its thousandth: records read
are held and a missing one is looked up alone, and the storage holds no bulky predictions.
The storage itself is opened in ``harness.results.optuna_storage``; the results folder is a view
of it, written by ``harness.results.folder``.
"""

from __future__ import annotations

import copy
import json
import time
from dataclasses import asdict
from pathlib import Path
from typing import Any

import numpy as np
import optuna
import pandas as pd
from optuna.storages import BaseStorage

from harness.core.compat import forwarding
from harness.errors import HarnessError
from harness.results.attr_reads import read_system_attr, read_user_attr
from harness.results.optuna_storage import find_study_id
from harness.results.prediction_blobs import default_artifact_store, load_predictions, save_predictions
from harness.results.records import RECORDS_FILE, FoldRecord, append_record_line, write_predictions
from harness.specs import TestRecord

RECORD_PREFIX, PREDICTIONS_PREFIX = "fold/", "oof/"
RUN_ATTR, FOLDS_ATTR = "run", "folds"
#: A search's one test record and its predictions (study attributes of the search).
TEST_ATTR, TEST_PREDICTIONS_ATTR = "test", "test-predictions"
#: The Optuna study whose creation claims a search's test scoring for one process: ``harness-claim:<search>``.
CLAIM_PREFIX = "harness-claim:"
#: The Optuna study that carries a harness study's description and folds: ``harness:<name>``.
RUN_STUDY_PREFIX = "harness:"


def record_key(config: str, repeat: int, fold: int) -> str:
    return f"{config}/r{repeat}/f{fold}"



class ResultStore:
    """Fold records, out-of-fold predictions, folds and run description of one study, kept in its
    storage; the same interface whichever storage it is.

    A fold costs the same whether it is the study's first or its thousandth: records already read
    are held, a missing one is looked up alone (``harness.results.attr_reads``), and predictions
    live in an artifact store with only their id in the storage (``harness.results.prediction_blobs``).
    ``artifacts``: the artifact store ("auto": the storage's default there; None: in the storage)."""

    def __init__(self, storage: BaseStorage, study_name: str, mirror_dir: Path | None = None,
                 artifacts: Any = "auto"):
        self.storage = storage
        self.study_name = study_name
        #: A results folder that shows each record and its predictions as soon as they are stored.
        self.mirror_dir = Path(mirror_dir) if mirror_dir is not None else None
        self.artifacts = default_artifact_store(storage) if artifacts == "auto" else artifacts
        self._ids: dict[str, int] = {}
        self._records: dict[str, dict[str, FoldRecord]] = {}
        #: Searches whose records were all read once (``count`` answers from what is held).
        self._read_whole: set[str] = set()

    # -- the search's studies: fold records and predictions --------------------------------------
    def _sid(self, search_id: str) -> int | None:
        if search_id not in self._ids:
            found = find_study_id(self.storage, search_id)
            if found is None:
                return None
            self._ids[search_id] = found
        return self._ids[search_id]

    def _refresh(self, search_id: str) -> dict[str, FoldRecord]:
        """Every record of the search, read whole (and held)."""
        study_id = self._sid(search_id)
        records: dict[str, FoldRecord] = {}
        if study_id is not None:
            for key, value in self.storage.get_study_user_attrs(study_id).items():
                if key.startswith(RECORD_PREFIX):
                    records[key[len(RECORD_PREFIX):]] = FoldRecord(**copy.deepcopy(value))
            self._read_whole.add(search_id)
        self._records[search_id] = records
        return records

    def get(self, search_id: str, config_id: str, repeat: int, fold: int) -> FoldRecord | None:
        """The fold's record: held, or looked up alone (another worker may have stored it)."""
        key = record_key(config_id, repeat, fold)
        held = self._records.setdefault(search_id, {})
        if key not in held:
            study_id = self._sid(search_id)
            stored = None if study_id is None else read_user_attr(self.storage, study_id, RECORD_PREFIX + key)
            if stored is None:
                return None
            held[key] = FoldRecord(**stored)
        return held[key]

    def count(self, search_id: str, config_id: str) -> int:
        """How many folds of one configuration are recorded: the search's records are read whole
        the first time, then counted from those held (and those this store appended since)."""
        if search_id not in self._read_whole:
            self._refresh(search_id)
        return sum(r.config_id == config_id for r in self._records.get(search_id, {}).values())

    def append(self, record: FoldRecord) -> bool:
        """Store the record unless its fold is already there; True when stored. The look-up reads
        that one key: a key is written once per fold, whichever workers race for it."""
        if self.get(*record.key) is not None:
            return False
        study_id = self._sid(record.search_id)
        if study_id is None:
            raise HarnessError(f"the storage has no search '{record.search_id}' to record a fold of")
        key = record_key(record.config_id, record.repeat, record.fold)
        self.storage.set_study_user_attr(study_id, RECORD_PREFIX + key, asdict(record))
        self._records.setdefault(record.search_id, {})[key] = record
        if self.mirror_dir is not None:
            append_record_line(self.mirror_dir / RECORDS_FILE, record)
        return True

    def records(self, search_ids: list[str]) -> list[FoldRecord]:
        """Every stored record of these searches, in a fixed order (search, trial, repeat, fold)."""
        found = [r for sid in search_ids for r in self._refresh(sid).values()]
        order = {sid: i for i, sid in enumerate(search_ids)}
        return sorted(found, key=lambda r: (order[r.search_id], r.trial, r.config_id, r.repeat, r.fold))

    def write_predictions(self, key: tuple[str, str, int, int], rows, labels, probabilities) -> None:
        """Keep one fold's validation predictions, before its record (a record always has them)."""
        search_id, config, repeat, fold = key
        study_id = self._sid(search_id)
        stored = save_predictions(self.artifacts, rows, labels, probabilities)
        self.storage.set_study_system_attr(study_id, PREDICTIONS_PREFIX + record_key(config, repeat, fold), stored)
        if self.mirror_dir is not None:
            write_predictions(self.mirror_dir, key, rows, labels, probabilities)

    def stored_predictions(self, search_id: str) -> dict[str, Any]:
        """What the storage holds of each fold's predictions, by record key: artifact ids (or, in
        the older layout, the predictions themselves); ``load_predictions`` reads one."""
        study_id = self._sid(search_id)
        if study_id is None:
            return {}
        return {key[len(PREDICTIONS_PREFIX):]: value
                for key, value in self.storage.get_study_system_attrs(study_id).items()
                if key.startswith(PREDICTIONS_PREFIX)}

    def load_predictions(self, search_id: str, key: str, stored: Any) -> dict[str, np.ndarray] | None:
        """One fold's predictions from what ``stored_predictions`` gave for it; None when damaged."""
        return load_predictions(self.artifacts, stored, f"the predictions of fold {search_id}/{key}")

    def fold_predictions(self, key: tuple[str, str, int, int]) -> dict[str, np.ndarray] | None:
        """One fold's predictions, read alone; None when there are none."""
        search_id, config, repeat, fold = key
        study_id, name = self._sid(search_id), record_key(config, repeat, fold)
        stored = None if study_id is None else read_system_attr(self.storage, study_id, PREDICTIONS_PREFIX + name)
        return None if stored is None else self.load_predictions(search_id, name, stored)

    def predictions(self, search_id: str) -> dict[str, dict[str, np.ndarray]]:
        """Every stored fold's predictions of one search, by record key; never unpickles. (All at
        once: a reader of many folds takes ``stored_predictions`` and loads one at a time.)"""
        found = {}
        for key, stored in self.stored_predictions(search_id).items():
            arrays = self.load_predictions(search_id, key, stored)
            if arrays is not None:  # damaged: the report shows the fold without its predictions
                found[key] = arrays
        return found

    # -- the test set: scored once per search, after selection -----------------------------------
    def get_test(self, search_id: str) -> TestRecord | None:
        """The search's test record, if it was scored."""
        study_id = self._sid(search_id)
        stored = None if study_id is None else read_user_attr(self.storage, study_id, TEST_ATTR)
        return None if stored is None else TestRecord(**stored)

    def append_test(self, record: TestRecord, rows, labels, probabilities) -> bool:
        """Store the search's test predictions, then its record, unless one is there; True when stored."""
        if self.get_test(record.search_id) is not None:
            return False
        study_id = self._sid(record.search_id)
        if study_id is None:
            raise HarnessError(f"the storage has no search '{record.search_id}' to record a test score of")
        stored = save_predictions(self.artifacts, rows, labels, probabilities)
        self.storage.set_study_system_attr(study_id, TEST_PREDICTIONS_ATTR, stored)
        self.storage.set_study_user_attr(study_id, TEST_ATTR, asdict(record))
        return True

    def test_records(self, search_ids: list[str]) -> list[TestRecord]:
        return [r for r in (self.get_test(sid) for sid in search_ids) if r is not None]

    def test_predictions(self, search_id: str) -> dict[str, np.ndarray] | None:
        """The search's test predictions, read alone; None when there are none or they are damaged."""
        study_id = self._sid(search_id)
        stored = None if study_id is None else read_system_attr(self.storage, study_id, TEST_PREDICTIONS_ATTR)
        return None if stored is None else load_predictions(
            self.artifacts, stored, f"the test predictions of {search_id}")

    def claim_test(self, search_id: str, owner: str, stale_after: float) -> bool:
        """Claim the search's test scoring for ``owner``: True for the one process that gets it; a
        claim without a sign of life (``beat_test_claim``) for ``stale_after`` seconds is taken over.
        Creating an Optuna study is the atomic step: its name is unique in every storage."""
        name = CLAIM_PREFIX + search_id
        for _ in range(2):
            try:
                claim = self.storage.create_new_study([optuna.study.StudyDirection.MAXIMIZE], name)
            except optuna.exceptions.DuplicatedStudyError:
                held = self.storage.get_study_id_from_name(name)
                beat = self.storage.get_study_user_attrs(held).get("beat", 0.0)
                if time.time() - beat < stale_after:
                    return False
                try:
                    self.storage.delete_study(held)
                except KeyError:  # another process took it over first
                    pass
                continue
            self.storage.set_study_user_attr(claim, "owner", owner)
            self.storage.set_study_user_attr(claim, "beat", time.time())
            return True
        return False

    def release_test_claim(self, search_id: str) -> None:
        """Remove the claim once the record is stored (nothing is left in the storage's study list)."""
        held = find_study_id(self.storage, CLAIM_PREFIX + search_id)
        if held is not None:
            try:
                self.storage.delete_study(held)
            except KeyError:
                pass

    def beat_test_claim(self, search_id: str) -> None:
        """A sign of life of the process scoring the search's test set."""
        held = find_study_id(self.storage, CLAIM_PREFIX + search_id)
        if held is not None:
            self.storage.set_study_user_attr(held, "beat", time.time())

    # -- the run: description and folds ----------------------------------------------------------
    def _meta(self, create: bool) -> int | None:
        name = RUN_STUDY_PREFIX + self.study_name
        study_id = find_study_id(self.storage, name)
        if study_id is None and create:
            try:
                study_id = self.storage.create_new_study([optuna.study.StudyDirection.MAXIMIZE], name)
            except optuna.exceptions.DuplicatedStudyError:  # another worker made it first
                study_id = self.storage.get_study_id_from_name(name)
        return study_id

    def save_run(self, info: dict[str, Any]) -> None:
        self.storage.set_study_user_attr(self._meta(create=True), RUN_ATTR, info)

    def run(self) -> dict[str, Any] | None:
        study_id = self._meta(create=False)
        return None if study_id is None else self.storage.get_study_user_attrs(study_id).get(RUN_ATTR)

    def folds(self) -> pd.DataFrame | None:
        study_id = self._meta(create=False)
        stored = None if study_id is None else self.storage.get_study_user_attrs(study_id).get(FOLDS_ATTR)
        return None if stored is None else pd.DataFrame(stored["rows"], columns=stored["columns"])

    def save_or_check_folds(self, folds: pd.DataFrame, where: str) -> None:
        """Store the folds the first time; afterwards insist this machine's folds are the stored
        ones, naming the images that differ (other files on this machine, or changed settings)."""
        stored = self.folds()
        if stored is None:
            table = json.loads(folds.to_json(orient="split", index=False))
            self.storage.set_study_user_attr(
                self._meta(create=True), FOLDS_ATTR, {"columns": table["columns"], "rows": table["data"]}
            )
            stored = self.folds()  # a worker elsewhere may have stored first: compare with what won
        difference = describe_fold_difference(stored, folds)
        if difference:
            raise HarnessError(
                f"{where}: this machine's folds differ from the study's folds in the storage: {difference}. Every "
                "worker must see the same images with the same [cv] settings: fix the data on this machine (or "
                "its --data-root) and start it again."
            )


def describe_fold_difference(stored: pd.DataFrame, mine: pd.DataFrame) -> str:
    """'' when two fold tables agree; else which images differ, and how."""
    stored = stored.astype(str).set_index("id")
    mine = mine.astype(str).set_index("id")
    missing = [i for i in stored.index if i not in mine.index]
    extra = [i for i in mine.index if i not in stored.index]
    parts = []
    if missing:
        parts.append(f"{len(missing)} image(s) missing here ({_first(missing)})")
    if extra:
        parts.append(f"{len(extra)} image(s) only here ({_first(extra)})")
    if list(stored.columns) != list(mine.columns):
        parts.append(f"other columns ({', '.join(stored.columns)} stored, {', '.join(mine.columns)} here)")
    elif not parts:
        common = stored.index.intersection(mine.index)
        differs = (stored.loc[common] != mine.loc[common]).any(axis=1)
        changed = list(differs[differs].index)
        if changed:
            parts.append(f"{len(changed)} image(s) with another label, group or fold ({_first(changed)})")
        elif list(stored.index) != list(mine.index):
            parts.append("the images are listed in another order")
    return "; ".join(parts)


def _first(items: list[str], shown: int = 5) -> str:
    return ", ".join(items[:shown]) + (" …" if len(items) > shown else "")


#: Names this module held until the storage was split by job, and where they live now.
_MOVED = {
    **dict.fromkeys(("RUN_FILE", "SQLITE_FILE", "JOURNAL_FILE", "folds_grouped"), "harness.results.layout"),
    **dict.fromkeys((
        "JOURNAL_PREFIX", "HEARTBEAT_ATTR", "CONNECT_TIMEOUT_S", "TABLE_CREATION_ATTEMPTS", "StaleCallback",
        "describe_storage", "is_shared", "journal_path", "database_url", "HeartbeatJournalStorage",
        "QuietHeartbeatRDBStorage", "is_storage_fault", "open_storage", "candidate_failures",
    ), "harness.results.optuna_storage"),
    **dict.fromkeys(("import_results_folder", "write_results_folder", "refresh_results_folder"),
                    "harness.results.folder"),
}

__getattr__ = forwarding(__name__, _MOVED)
