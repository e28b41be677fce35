"""The study's storage: the one place every worker, on any machine, reads and writes.

It holds the Optuna trials and, beside them, what a leaderboard needs: each fold's record, its
out-of-fold predictions, the folds and the run's description. Optuna's own storage API keeps them
(study attributes), so one database or one journal file is the whole study:

- a candidate's search (an Optuna study named by its search id) carries its fold records as user
  attributes ``fold/<config>/r<repeat>/f<fold>`` and their predictions as system attributes
  ``oof/...`` (a compressed .npz, base64; read back without pickle);
- a study named ``harness:<study name>`` carries the run's description and its folds.

A key is written once per fold, so no record can be doubled, whichever workers race for it.
The results folder is a view of this: records.jsonl, predictions/, folds.csv and run.json are
written from the storage (``write_results_folder``) for the reports to read.
"""

from __future__ import annotations

import base64
import io
import json
import os
import time
import warnings
from collections.abc import Callable
from dataclasses import asdict
from pathlib import Path
from typing import Any

import numpy as np
import optuna
import pandas as pd
import sqlalchemy.exc
from optuna.storages import BaseStorage, JournalStorage, RDBStorage
from optuna.storages._heartbeat import BaseHeartbeat
from optuna.trial import FrozenTrial, TrialState

from harness.errors import HarnessError
from harness.results.layout import FOLDS_FILE
from harness.results.records import (
    RECORDS_FILE, FoldRecord, append_record_line, load_records, predictions_path, read_predictions,
    write_predictions,
)

RUN_FILE = "run.json"
SQLITE_FILE, JOURNAL_FILE = "optuna.db", "optuna.journal"
#: The prefix of a journal file given as the storage: ``journal:/shared/study.journal``.
JOURNAL_PREFIX = "journal:"
#: A trial's last sign of life in a journal storage (a system attribute, seconds since the epoch).
HEARTBEAT_ATTR = "harness:heartbeat"
RECORD_PREFIX, PREDICTIONS_PREFIX = "fold/", "oof/"
RUN_ATTR, FOLDS_ATTR = "run", "folds"
#: The Optuna study that carries a harness study's description and folds: ``harness:<name>``.
RUN_STUDY_PREFIX = "harness:"
#: Seconds a database connection attempt may take before the run says it cannot reach it.
CONNECT_TIMEOUT_S = 10
TABLE_CREATION_ATTEMPTS = 5

StaleCallback = Callable[[optuna.Study, FrozenTrial], None]


def describe_storage(url: str | None) -> str:
    """The storage as a user may see it: a database URL without its password."""
    if not url:
        return "the results folder's optuna.journal"
    if "://" in url and "@" in url:
        scheme, rest = url.split("://", 1)
        credentials, host = rest.rsplit("@", 1)
        user = credentials.split(":", 1)[0]
        return f"{scheme}://{user}:***@{host}" if ":" in credentials else url
    return url


def is_shared(url: str | None) -> bool:
    """Whether other machines or other results folders may run trials in this storage (anything
    but the results folder's own journal)."""
    return bool(url)


def journal_path(url: str | None, results_dir: Path) -> Path | None:
    """The journal file a storage setting names (None for a database URL)."""
    if not url:
        return Path(results_dir) / JOURNAL_FILE
    if url.startswith(JOURNAL_PREFIX):
        return Path(url[len(JOURNAL_PREFIX):]).expanduser()
    if "://" not in url and url.endswith(".journal"):
        return Path(url).expanduser()
    return None


def database_url(url: str) -> str:
    """A PostgreSQL URL runs on psycopg 3 (the ``postgres`` extra) unless it names its driver."""
    if url.startswith(("postgresql://", "postgres://")):
        try:
            import psycopg2  # noqa: F401  SQLAlchemy's default driver, when installed
        except ImportError:
            return "postgresql+psycopg://" + url.split("://", 1)[1]
    return url


class HeartbeatJournalStorage(JournalStorage, BaseHeartbeat):
    """A journal storage whose running trials beat: Optuna's heartbeat protocol (which it offers
    for databases only) on a journal file, so a worker that vanished on any machine is found by
    the age of its last beat rather than by a process id."""

    def __init__(self, path: Path, heartbeat_interval: int, grace_period: int, on_stale: StaleCallback | None):
        backend = optuna.storages.journal.JournalFileBackend(str(path))
        super().__init__(backend)
        self._heartbeat_interval, self._grace_period, self._on_stale = heartbeat_interval, grace_period, on_stale

    def record_heartbeat(self, trial_id: int) -> None:
        try:
            self.set_trial_system_attr(trial_id, HEARTBEAT_ATTR, time.time())
        except (optuna.exceptions.UpdateFinishedTrialError, KeyError):
            pass  # another worker judged it dead and failed it: its retry runs elsewhere

    def _get_stale_trial_ids(self, study_id: int) -> list[int]:
        now = time.time()
        stale = []
        for trial in self.get_all_trials(study_id, deepcopy=False, states=(TrialState.RUNNING,)):
            beat = trial.system_attrs.get(HEARTBEAT_ATTR)
            if beat is None:  # died between starting its trial and its first beat
                beat = trial.datetime_start.timestamp() if trial.datetime_start else now
            if now - beat > self._grace_period:
                stale.append(trial._trial_id)
        return stale

    def get_heartbeat_interval(self) -> int | None:
        return self._heartbeat_interval

    def get_heartbeat_stale_trial_callback(self) -> StaleCallback | None:
        return self._on_stale


class QuietHeartbeatRDBStorage(RDBStorage):
    """A database storage whose heartbeat thread never dies with a traceback: when the server goes
    away, the run's own next write reports it, in one line."""

    def record_heartbeat(self, trial_id: int) -> None:
        try:
            super().record_heartbeat(trial_id)
        except Exception:  # noqa: BLE001  the main thread meets the same fault and says so
            pass


def is_storage_fault(exc: BaseException) -> bool:
    """Whether an error comes from the storage's database (gone, unreachable, refusing)."""
    return isinstance(exc, (sqlalchemy.exc.SQLAlchemyError, optuna.exceptions.StorageInternalError))


def open_storage(
    url: str | None, results_dir: Path, heartbeat_interval: int = 10, grace_period: int = 60,
    on_stale: StaleCallback | None = None,
) -> BaseStorage:
    """The study's storage, with heartbeats: a database URL (PostgreSQL for many machines), a
    journal file (``journal:PATH``), or by default the results folder's optuna.journal.

    A results folder from an older harness keeps its trials: an optuna.db found without a journal
    is copied over once. A server that cannot be reached, a wrong password or a missing driver is
    one HarnessError naming the storage.
    """
    path = journal_path(url, results_dir)
    if path is not None:
        return _open_journal(path, url is None, heartbeat_interval, grace_period, on_stale)
    if "://" not in url:
        raise HarnessError(
            f"search.storage = '{url}' is neither a database URL (e.g. postgresql://user:password@host/db) nor "
            f"a journal file ({JOURNAL_PREFIX}PATH or a path ending in .journal). Fix the study file or --storage."
        )
    full = database_url(url)
    engine_kwargs = {"connect_args": {"connect_timeout": CONNECT_TIMEOUT_S}} if full.startswith("postgresql") else None
    try:
        for attempt in range(TABLE_CREATION_ATTEMPTS):
            try:
                with warnings.catch_warnings():
                    warnings.simplefilter("ignore", optuna.exceptions.ExperimentalWarning)
                    return QuietHeartbeatRDBStorage(
                        full, engine_kwargs=engine_kwargs, heartbeat_interval=heartbeat_interval,
                        grace_period=grace_period, heartbeat_stale_trial_callback=on_stale,
                    )
            except (sqlalchemy.exc.IntegrityError, sqlalchemy.exc.ProgrammingError):
                # Workers starting together on an empty database race to create Optuna's tables
                # ("duplicate key", "relation already exists"); the losers find them made a moment later.
                if attempt + 1 == TABLE_CREATION_ATTEMPTS:
                    raise
                time.sleep(0.5 * (attempt + 1))
    except ImportError as exc:
        raise HarnessError(
            f"cannot open the storage {describe_storage(url)}: its database driver is missing ({exc}). "
            "For PostgreSQL: pip install 'harness[postgres]'."
        ) from None
    except Exception as exc:  # SQLAlchemy's errors: unreachable server, wrong password, unknown database
        reason = str(getattr(exc, "orig", None) or exc).strip().splitlines()[0]
        raise HarnessError(
            f"cannot open the storage {describe_storage(url)}: {reason}. Check the URL, that the database server "
            "runs and accepts this machine, and the user's password."
        ) from None


def _open_journal(path: Path, in_results_folder: bool, heartbeat_interval, grace_period, on_stale) -> BaseStorage:
    first_time = not path.exists()
    path.parent.mkdir(parents=True, exist_ok=True)
    journal = HeartbeatJournalStorage(path, heartbeat_interval, grace_period, on_stale)
    sqlite_path = path.parent / SQLITE_FILE
    if in_results_folder and first_time and sqlite_path.exists():
        sqlite_url = f"sqlite:///{sqlite_path.resolve()}"
        for summary in optuna.get_all_study_summaries(sqlite_url):
            optuna.copy_study(from_study_name=summary.study_name, from_storage=sqlite_url, to_storage=journal)
    return journal


def folds_grouped(info: dict, folds) -> bool:
    """Whether a run's folds kept groups together: from its run file, or for runs written before
    it said so, whether any image's group differs from its id."""
    if "grouped" in info:
        return bool(info["grouped"])
    return bool((folds["group"] != folds["id"]).any())


def record_key(config: str, repeat: int, fold: int) -> str:
    return f"{config}/r{repeat}/f{fold}"


def _study_id(storage: BaseStorage, name: str) -> int | None:
    try:
        return storage.get_study_id_from_name(name)
    except KeyError:
        return None


class ResultStore:
    """Fold records, out-of-fold predictions, folds and run description of one study, kept in its
    storage; the same interface whichever storage it is."""

    def __init__(self, storage: BaseStorage, study_name: str, mirror_dir: Path | None = None):
        self.storage = storage
        self.study_name = study_name
        #: A results folder that shows each record and its predictions as soon as they are stored.
        self.mirror_dir = Path(mirror_dir) if mirror_dir is not None else None
        self._ids: dict[str, int] = {}
        self._records: dict[str, dict[str, FoldRecord]] = {}

    # -- the search's studies: fold records and predictions --------------------------------------
    def _sid(self, search_id: str) -> int | None:
        if search_id not in self._ids:
            found = _study_id(self.storage, search_id)
            if found is None:
                return None
            self._ids[search_id] = found
        return self._ids[search_id]

    def _refresh(self, search_id: str) -> dict[str, FoldRecord]:
        study_id = self._sid(search_id)
        records: dict[str, FoldRecord] = {}
        if study_id is not None:
            for key, value in self.storage.get_study_user_attrs(study_id).items():
                if key.startswith(RECORD_PREFIX):
                    records[key[len(RECORD_PREFIX):]] = FoldRecord(**value)
        self._records[search_id] = records
        return records

    def get(self, search_id: str, config_id: str, repeat: int, fold: int) -> FoldRecord | None:
        key = record_key(config_id, repeat, fold)
        known = self._records.get(search_id, {})
        if key not in known:
            known = self._refresh(search_id)
        return known.get(key)

    def count(self, search_id: str, config_id: str) -> int:
        """How many folds of one configuration are recorded."""
        return sum(r.config_id == config_id for r in self._refresh(search_id).values())

    def append(self, record: FoldRecord) -> bool:
        """Store the record unless its fold is already there; True when stored."""
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
        buffer = io.BytesIO()
        np.savez_compressed(buffer, rows=np.asarray(rows, dtype="int64"), labels=np.asarray(labels, dtype="int64"),
                            probabilities=np.asarray(probabilities, dtype="float32"))
        encoded = base64.b64encode(buffer.getvalue()).decode("ascii")
        self.storage.set_study_system_attr(study_id, PREDICTIONS_PREFIX + record_key(config, repeat, fold), encoded)
        if self.mirror_dir is not None:
            write_predictions(self.mirror_dir, key, rows, labels, probabilities)

    def predictions(self, search_id: str) -> dict[str, dict[str, np.ndarray]]:
        """Every stored fold's predictions of one search, by record key; never unpickles."""
        study_id = self._sid(search_id)
        if study_id is None:
            return {}
        found = {}
        for key, value in self.storage.get_study_system_attrs(study_id).items():
            if key.startswith(PREDICTIONS_PREFIX):
                try:
                    with np.load(io.BytesIO(base64.b64decode(value)), allow_pickle=False) as data:
                        found[key[len(PREDICTIONS_PREFIX):]] = {n: data[n] for n in ("rows", "labels", "probabilities")}
                except (ValueError, KeyError, OSError):
                    continue  # damaged: the report shows the fold without its predictions
        return found

    # -- the run: description and folds ----------------------------------------------------------
    def _meta(self, create: bool) -> int | None:
        name = RUN_STUDY_PREFIX + self.study_name
        study_id = _study_id(self.storage, name)
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


def candidate_failures(storage: BaseStorage, candidates: list[tuple[str, str]], error_attr: str) -> dict[str, str]:
    """Candidates (name, search id) without a completed trial, each with its last failed trial's error."""
    failures = {}
    for name, search_id in candidates:
        study_id = _study_id(storage, search_id)
        trials = [] if study_id is None else storage.get_all_trials(study_id, deepcopy=False)
        if any(t.state == TrialState.COMPLETE for t in trials):
            continue
        errors = [t.user_attrs[error_attr] for t in trials if t.state == TrialState.FAIL and error_attr in t.user_attrs]
        failures[name] = errors[-1] if errors else "no trial completed"
    return failures


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
    _write_atomically(results_dir / RUN_FILE, json.dumps(info, indent=2).encode())
    folds = store.folds()
    if folds is not None:
        _write_atomically(results_dir / FOLDS_FILE, folds.to_csv(index=False).encode())
    records = store.records(search_ids)
    lines = "".join(json.dumps(asdict(r), sort_keys=True) + "\n" for r in records)
    _write_atomically(results_dir / RECORDS_FILE, lines.encode())
    for search_id in search_ids:
        for key, arrays in store.predictions(search_id).items():
            config, repeat, fold = key.split("/")
            full_key = (search_id, config, int(repeat[1:]), int(fold[1:]))
            if not predictions_path(results_dir, full_key).exists():
                write_predictions(results_dir, full_key, arrays["rows"], arrays["labels"], arrays["probabilities"])
    return True


def _write_atomically(path: Path, data: bytes) -> None:
    tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")  # unique: two processes may write at once
    try:
        tmp.write_bytes(data)
        tmp.replace(path)
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise


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
