"""Where the storage keeps each fold's (and each test score's) predictions: in an Optuna artifact
store, with only the artifact's id in the storage, so the storage stays small and a reader fetches
one fold at a time.

Which artifact store a study's storage gets (``default_artifact_store``):

- ``HARNESS_ARTIFACT_DIR``, when set: that folder, whatever the storage. For many machines it must
  be a folder every machine mounts (the same one everywhere);
- a journal file (the results folder's own ``optuna.journal`` or a shared ``journal:PATH``): the
  folder ``artifacts/`` beside it, e.g. ``results/<study>/artifacts``; a journal shared by many
  machines is on a disk they all reach, so its ``artifacts/`` is shared too;
- a SQLite database: ``artifacts/`` beside its file;
- anything else (PostgreSQL, MySQL, a Redis journal, memory) without ``HARNESS_ARTIFACT_DIR``: no
  artifact store. The predictions then stay in the storage as before, a base64 .npz per study
  attribute: every machine that reaches the database reaches them, at the cost of its size. A
  ``ResultStore`` may also be given any store with Optuna's artifact protocol (e.g.
  ``optuna.artifacts.Boto3ArtifactStore`` for S3, shared by machines with no common disk).

Studies written before artifacts (base64 attributes) read as they always did. Predictions are
.npz files read without pickle.
"""

from __future__ import annotations

import base64
import io
import uuid
from pathlib import Path
from typing import Any

import numpy as np
import sqlalchemy.engine
from optuna.artifacts import FileSystemArtifactStore
from optuna.artifacts.exceptions import ArtifactNotFound
from optuna.storages import BaseStorage, JournalStorage

from harness.core import settings
from harness.core.settings import ARTIFACT_DIR_ENV
from harness.errors import HarnessError
from harness.results.attr_reads import database_of

#: The folder beside a journal or SQLite file that holds its predictions.
ARTIFACTS_DIR = "artifacts"
#: The storage attribute of a prediction kept in the artifact store: ``{"artifact": <id>}``.
REFERENCE = "artifact"


class FolderArtifactStore(FileSystemArtifactStore):
    """Optuna's file-system artifact store, whose folder is made on the first write."""

    def __init__(self, folder: Path):
        super().__init__(Path(folder))
        self.folder = Path(folder)

    def write(self, artifact_id: str, content_body) -> None:
        self.folder.mkdir(parents=True, exist_ok=True)
        super().write(artifact_id, content_body)

    def __str__(self) -> str:
        return str(self.folder)


def default_artifact_store(storage: BaseStorage) -> FolderArtifactStore | None:
    """The artifact store of a storage (module docstring); None keeps predictions in the storage."""
    folder = settings.current().artifact_dir
    if folder is not None:
        return FolderArtifactStore(folder)
    file = _storage_file(storage)
    return None if file is None else FolderArtifactStore(file.parent / ARTIFACTS_DIR)


def _storage_file(storage: BaseStorage) -> Path | None:
    if isinstance(storage, JournalStorage):
        path = getattr(storage._backend, "_file_path", None)  # a journal file (not e.g. Redis)
        return None if path is None else Path(path)
    database = database_of(storage)
    if database is None:
        return None
    url = sqlalchemy.engine.make_url(database.url)
    if url.get_backend_name() != "sqlite" or url.database in (None, "", ":memory:"):
        return None
    return Path(url.database)


def encode(rows, labels, probabilities) -> bytes:
    """Predictions as a compressed .npz."""
    buffer = io.BytesIO()
    np.savez_compressed(buffer, rows=np.asarray(rows, dtype="int64"), labels=np.asarray(labels, dtype="int64"),
                        probabilities=np.asarray(probabilities, dtype="float32"))
    return buffer.getvalue()


def decode(data: bytes) -> dict[str, np.ndarray] | None:
    """What ``encode`` wrote, never unpickled; None when damaged."""
    try:
        with np.load(io.BytesIO(data), allow_pickle=False) as arrays:
            return {n: arrays[n] for n in ("rows", "labels", "probabilities")}
    except (ValueError, KeyError, OSError, EOFError):
        return None


def save_predictions(store, rows, labels, probabilities) -> str | dict[str, str]:
    """Keep predictions in ``store``; returns what the storage attribute holds: the artifact's id,
    or without a store the .npz itself in base64."""
    data = encode(rows, labels, probabilities)
    if store is None:
        return base64.b64encode(data).decode("ascii")
    artifact_id = f"{uuid.uuid4().hex}.npz"
    store.write(artifact_id, io.BytesIO(data))
    return {REFERENCE: artifact_id}


def load_predictions(store, value: Any, what: str) -> dict[str, np.ndarray] | None:
    """The predictions a storage attribute refers to (either layout); None when damaged. ``what``
    names them in the message when their artifact store cannot be read."""
    if isinstance(value, str):  # the older layout: the .npz in the attribute
        try:
            return decode(base64.b64decode(value))
        except ValueError:
            return None
    if not isinstance(value, dict) or not isinstance(value.get(REFERENCE), str):
        return None
    if store is None:
        raise HarnessError(
            f"{what} are kept in an artifact store this machine was not given: set {ARTIFACT_DIR_ENV} to the "
            "folder the workers keep them in (one every machine mounts) and run again."
        )
    try:
        with store.open_reader(value[REFERENCE]) as reader:
            return decode(reader.read())
    except ArtifactNotFound:
        raise HarnessError(
            f"{what} are missing from the artifact store {store} (artifact {value[REFERENCE]}): every machine "
            f"must reach the same store; set {ARTIFACT_DIR_ENV} to the shared folder, or restore the folder."
        ) from None
