"""One study attribute read without the others, where the storage allows it.

Optuna's storage API hands back a study's attributes all at once, so a study with thousands of
fold records would be read whole for each fold. A journal storage keeps them in memory (it reads
only the new lines of its file), so a look-up there is cheap already; a database is asked for the
one row by its unique (study, key) index. Any other storage falls back to the whole read.
"""

from __future__ import annotations

import copy
import json
from typing import Any

from optuna.storages import BaseStorage, JournalStorage, RDBStorage


def read_user_attr(storage: BaseStorage, study_id: int, key: str) -> Any | None:
    """The study's user attribute ``key`` (None when unset)."""
    return _read(storage, study_id, key, system=False)


def read_system_attr(storage: BaseStorage, study_id: int, key: str) -> Any | None:
    """The study's system attribute ``key`` (None when unset)."""
    return _read(storage, study_id, key, system=True)


def _read(storage: BaseStorage, study_id: int, key: str, system: bool) -> Any | None:
    database = database_of(storage)
    if database is not None:
        found = _database_read(database, study_id, key, system)
        if found is not _UNREADABLE:
            return found
    attrs = storage.get_study_system_attrs(study_id) if system else storage.get_study_user_attrs(study_id)
    value = attrs.get(key)
    # a journal storage hands out its own live dict: what the caller keeps must not change it
    return copy.deepcopy(value) if isinstance(storage, JournalStorage) else value


def database_of(storage: BaseStorage) -> RDBStorage | None:
    """The database behind a storage (None for a journal or memory)."""
    if isinstance(storage, RDBStorage):
        return storage
    backend = getattr(storage, "_backend", None)  # Optuna's cache in front of a database
    return backend if isinstance(backend, RDBStorage) else None


#: Optuna's database layout could not be used (another Optuna version): read the usual way.
_UNREADABLE = object()


def _database_read(storage: RDBStorage, study_id: int, key: str, system: bool) -> Any:
    try:
        from optuna.storages._rdb import models
        from optuna.storages._rdb.storage import _create_scoped_session
    except ImportError:
        return _UNREADABLE
    model = models.StudySystemAttributeModel if system else models.StudyUserAttributeModel
    with _create_scoped_session(storage.scoped_session) as session:
        row = session.query(model.value_json).filter(model.study_id == study_id, model.key == key).one_or_none()
    return None if row is None else json.loads(row[0])
