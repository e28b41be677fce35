"""The Optuna storage a study's trials live in: a database (PostgreSQL for many machines), a
journal file, or by default the results folder's optuna.journal; all with heartbeats, so a worker
that vanished on any machine has its trial failed and retried elsewhere.
"""

from __future__ import annotations

import contextlib
import time
import warnings
from collections.abc import Callable, Iterator
from pathlib import Path

import optuna
import sqlalchemy
import sqlalchemy.exc
import sqlalchemy.pool
from optuna.storages import BaseStorage, JournalStorage, RDBStorage
from optuna.storages._heartbeat import BaseHeartbeat
from optuna.trial import FrozenTrial, TrialState

from harness.errors import HarnessError
from harness.results.layout import JOURNAL_FILE, SQLITE_FILE

#: The prefix of a journal file given as the storage: ``journal:/shared/study.journal``.
JOURNAL_PREFIX = "journal:"
#: A trial's last sign of life in a journal storage (a system attribute, seconds since the epoch).
HEARTBEAT_ATTR = "harness:heartbeat"
#: Seconds a database connection attempt may take before the run says it cannot reach it.
CONNECT_TIMEOUT_S = 10
TABLE_CREATION_ATTEMPTS = 5
#: The PostgreSQL advisory lock (per database) under which one process at a time creates or checks
#: Optuna's tables: workers started together on an empty database would race to create them.
TABLE_LOCK_KEY = 0x6861726E657373  # "harness"

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
        return _open_database(full, engine_kwargs, heartbeat_interval, grace_period, on_stale)
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


def _open_database(full: str, engine_kwargs, heartbeat_interval, grace_period, on_stale) -> RDBStorage:
    """Optuna's database storage. Workers starting together on an empty database race to create its
    tables ("duplicate key", "relation already exists"): on PostgreSQL one process at a time creates
    or checks them; elsewhere the losers try again and find them made a moment later."""
    for attempt in range(1, TABLE_CREATION_ATTEMPTS):
        try:
            return _rdb_storage(full, engine_kwargs, heartbeat_interval, grace_period, on_stale)
        except (sqlalchemy.exc.IntegrityError, sqlalchemy.exc.ProgrammingError):
            time.sleep(0.5 * attempt)
    return _rdb_storage(full, engine_kwargs, heartbeat_interval, grace_period, on_stale)


def _rdb_storage(full: str, engine_kwargs, heartbeat_interval, grace_period, on_stale) -> RDBStorage:
    with warnings.catch_warnings(), _one_at_a_time(full, engine_kwargs):
        warnings.simplefilter("ignore", optuna.exceptions.ExperimentalWarning)
        return QuietHeartbeatRDBStorage(
            full, engine_kwargs=engine_kwargs, heartbeat_interval=heartbeat_interval,
            grace_period=grace_period, heartbeat_stale_trial_callback=on_stale,
        )


@contextlib.contextmanager
def _one_at_a_time(full: str, engine_kwargs) -> Iterator[None]:
    """On PostgreSQL, the block runs under the tables' advisory lock (released with its transaction,
    or by the server when the process dies); elsewhere, as it is."""
    if not full.startswith("postgresql"):
        yield
        return
    engine = sqlalchemy.create_engine(full, poolclass=sqlalchemy.pool.NullPool, **(engine_kwargs or {}))
    try:
        with engine.begin() as connection:
            connection.execute(sqlalchemy.text("SELECT pg_advisory_xact_lock(:key)"), {"key": TABLE_LOCK_KEY})
            yield
    finally:
        engine.dispose()


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


def find_study_id(storage: BaseStorage, name: str) -> int | None:
    """The id of the Optuna study called ``name`` in ``storage``, or None when there is none."""
    try:
        return storage.get_study_id_from_name(name)
    except KeyError:
        return None


def candidate_failures(storage: BaseStorage, candidates: list[tuple[str, str]], error_attr: str) -> dict[str, str]:
    """Candidates (name, search id) without a completed trial, each with its last failed trial's error."""
    failures = {}
    for name, search_id in candidates:
        found = find_study_id(storage, search_id)
        trials = [] if found is None else storage.get_all_trials(found, deepcopy=False)
        if any(t.state == TrialState.COMPLETE for t in trials):
            continue
        errors = [t.user_attrs[error_attr] for t in trials if t.state == TrialState.FAIL and error_attr in t.user_attrs]
        failures[name] = errors[-1] if errors else "no trial completed"
    return failures


