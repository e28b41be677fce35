"""Fold records: one JSON line per (candidate, configuration, repeat, fold), appended as each fold ends.

Append-only: a record is flushed and fsynced before the search moves on, so a crash loses at most
the fold in progress; a torn last line is ignored on reading; a key already present is never
written again, so a resumed study reuses finished folds instead of doubling them.
"""

from __future__ import annotations

import json
import os
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

RECORDS_FILE = "records.jsonl"


@dataclass
class FoldRecord:
    candidate: str
    search_id: str
    config_id: str
    trial: int
    repeat: int
    fold: int
    params: dict[str, Any]
    tuned: dict[str, Any]
    metrics: dict[str, float]
    fit_seconds: float
    epochs_run: int
    train_size: int
    val_size: int
    finished_at: float = field(default_factory=time.time)

    @property
    def key(self) -> tuple[str, str, int, int]:
        return (self.search_id, self.config_id, self.repeat, self.fold)


class RecordStore:
    """The records file of one results folder."""

    def __init__(self, results_dir: Path):
        self.path = Path(results_dir) / RECORDS_FILE
        self._by_key: dict[tuple[str, str, int, int], FoldRecord] = {}
        for record in read_records(self.path):
            self._by_key.setdefault(record.key, record)

    def get(self, search_id: str, config_id: str, repeat: int, fold: int) -> FoldRecord | None:
        return self._by_key.get((search_id, config_id, repeat, fold))

    def append(self, record: FoldRecord) -> bool:
        """Write the record unless its key is already there; True when written."""
        if record.key in self._by_key:
            return False
        self.path.parent.mkdir(parents=True, exist_ok=True)
        line = json.dumps(asdict(record), sort_keys=True) + "\n"
        with self.path.open("ab") as fh:
            if fh.tell() > 0 and not _ends_with_newline(self.path):
                fh.write(b"\n")  # a torn line from a crash stays alone on its line
            fh.write(line.encode())
            fh.flush()
            os.fsync(fh.fileno())
        self._by_key[record.key] = record
        return True

    def all(self) -> list[FoldRecord]:
        return list(self._by_key.values())


def _ends_with_newline(path: Path) -> bool:
    with path.open("rb") as fh:
        fh.seek(-1, os.SEEK_END)
        return fh.read(1) == b"\n"


def read_records(path: Path) -> list[FoldRecord]:
    """Every complete record in the file, in order; torn lines are skipped."""
    if not path.exists():
        return []
    records = []
    for line in path.read_text(encoding="utf-8").splitlines():
        try:
            records.append(FoldRecord(**json.loads(line)))
        except (json.JSONDecodeError, TypeError):
            continue
    return records
