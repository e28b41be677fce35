"""Fold records: one JSON line per (candidate, configuration, repeat, fold), appended as each fold ends.

Append-only: a record is flushed and fsynced before the search moves on, so a crash loses at most
the fold in progress; a torn last line is ignored on reading; a key already present is never
written again, so a resumed study reuses finished folds instead of doubling them.
"""

from __future__ import annotations

import io
import json
import os
from dataclasses import asdict
from pathlib import Path

import numpy as np

from harness.core.files import atomic_write
from harness.core.locks import exclusive
from harness.errors import HarnessError
from harness.specs import FoldRecord, TestRecord

RECORDS_FILE = "records.jsonl"
#: Each search's one score on images it never saw (the locked test set, nested CV's outer folds).
TEST_FILE = "test.jsonl"


class RecordStore:
    """The records file of one results folder, shared safely by the processes of one study."""

    def __init__(self, results_dir: Path):
        self.path = Path(results_dir) / RECORDS_FILE
        self._by_key: dict[tuple[str, str, int, int], FoldRecord] = {}
        self._offset = 0
        self._lines = 0
        #: Line numbers (from 1) that hold no readable record: torn by a crash, or damaged.
        self.skipped: list[int] = []
        self._refresh()

    def _refresh(self) -> None:
        """Read what other processes appended since the last look (complete lines only)."""
        if not self.path.exists():
            return
        with self.path.open("rb") as fh:
            fh.seek(self._offset)
            data = fh.read()
        complete = data[: data.rfind(b"\n") + 1]
        self._offset += len(complete)
        records, skipped = _parse(complete, first_line=self._lines + 1)
        self._lines += complete.count(b"\n")
        self.skipped += skipped
        for record in records:
            self._by_key.setdefault(record.key, record)

    def get(self, search_id: str, config_id: str, repeat: int, fold: int) -> FoldRecord | None:
        key = (search_id, config_id, repeat, fold)
        if key not in self._by_key:
            self._refresh()
        return self._by_key.get(key)

    def count(self, search_id: str, config_id: str) -> int:
        """How many folds of one configuration are recorded."""
        self._refresh()
        return sum(key[:2] == (search_id, config_id) for key in self._by_key)

    def append(self, record: FoldRecord) -> bool:
        """Write the record unless its key is already there; True when written."""
        self.path.parent.mkdir(parents=True, exist_ok=True)
        with exclusive(lock_path(self.path)), self.path.open("ab") as fh:
            # one writer at a time: the check and the write are one step
            self._refresh()
            if record.key in self._by_key:
                return False
            _write_line(fh, self.path, record)
            self._offset = fh.tell()
        self._by_key[record.key] = record
        return True

    def all(self) -> list[FoldRecord]:
        self._refresh()
        return list(self._by_key.values())

    def write_predictions(self, key: tuple[str, str, int, int], rows, labels, probabilities) -> None:
        """Keep a fold's out-of-fold predictions beside the records file (before its record)."""
        write_predictions(self.path.parent, key, rows, labels, probabilities)


def append_record_line(path: Path, record: FoldRecord) -> None:
    """Append one record to a records file, whole, however many processes append at once."""
    path.parent.mkdir(parents=True, exist_ok=True)
    with exclusive(lock_path(path)), path.open("ab") as fh:
        _write_line(fh, path, record)


def lock_path(path: Path) -> Path:
    """The lock file beside a records file that its writers take turns on (a file of its own: a
    lock on the records file itself would be Unix-only)."""
    return path.with_name(f".{path.name}.lock")


def _write_line(fh, path: Path, record: FoldRecord) -> None:
    """Append ``record`` as one JSON line to ``fh`` (``path`` opened for appending, under its lock), durably."""
    if fh.tell() > 0 and not _ends_with_newline(path):
        fh.write(b"\n")  # a torn line from a crash stays alone on its line
    fh.write((json.dumps(asdict(record), sort_keys=True) + "\n").encode())
    fh.flush()
    os.fsync(fh.fileno())


PREDICTIONS_DIR = "predictions"


def predictions_path(results_dir: Path, key: tuple[str, str, int, int]) -> Path:
    """Where the out-of-fold predictions of the fold record with ``key`` are kept."""
    search_id, config_id, repeat, fold = key
    return Path(results_dir) / PREDICTIONS_DIR / search_id / f"{config_id}-r{repeat}-f{fold}.npz"


def write_predictions(results_dir: Path, key: tuple[str, str, int, int], rows: np.ndarray, labels: np.ndarray,
                      probabilities: np.ndarray) -> Path:
    """Keep one fold's validation predictions: the dataset rows (positions in folds.csv), their true
    labels and the predicted probabilities. Written whole or not at all (a temporary file renamed),
    before the fold's record, so a record always has its predictions."""
    path = predictions_path(results_dir, key)
    path.parent.mkdir(parents=True, exist_ok=True)
    return write_predictions_file(path, {"rows": rows, "labels": labels, "probabilities": probabilities})


def write_predictions_file(path: Path, arrays: dict[str, np.ndarray]) -> Path:
    """``rows``, ``labels`` and ``probabilities`` as one .npz, written whole or not at all."""
    buffer = io.BytesIO()
    np.savez_compressed(buffer, rows=np.asarray(arrays["rows"], dtype="int64"),
                        labels=np.asarray(arrays["labels"], dtype="int64"),
                        probabilities=np.asarray(arrays["probabilities"], dtype="float32"))
    return atomic_write(path, buffer.getvalue())


def read_predictions(results_dir: Path, key: tuple[str, str, int, int]) -> dict[str, np.ndarray] | None:
    """The fold's stored predictions (``rows``, ``labels``, ``probabilities``), or None when the
    record predates them or the file is unreadable. Never unpickles."""
    path = predictions_path(results_dir, key)
    try:
        with np.load(path, allow_pickle=False) as data:
            return {name: data[name] for name in ("rows", "labels", "probabilities")}
    except (OSError, ValueError, KeyError):
        return None


def fold_predictions(results_dir: Path, records: list[FoldRecord]) -> list[dict[str, np.ndarray] | None]:
    """The stored predictions of ``records`` in (repeat, fold) order; None for a fold without them."""
    return [read_predictions(results_dir, r.key) for r in sorted(records, key=lambda r: (r.repeat, r.fold))]


def _ends_with_newline(path: Path) -> bool:
    with path.open("rb") as fh:
        fh.seek(-1, os.SEEK_END)
        return fh.read(1) == b"\n"


def _parse(data: bytes, first_line: int = 1) -> tuple[list[FoldRecord], list[int]]:
    """The records in ``data`` and the numbers of the non-empty lines that hold none."""
    records, skipped = [], []
    for number, line in enumerate(data.split(b"\n"), start=first_line):
        if not line.strip():
            continue
        try:
            records.append(FoldRecord(**json.loads(line.decode("utf-8"))))
        except (UnicodeDecodeError, json.JSONDecodeError, TypeError):
            skipped.append(number)
    return records, skipped


def load_records(path: Path) -> tuple[list[FoldRecord], list[int]]:
    """Every record in the file, in order, and the line numbers skipped as unreadable (torn by a
    crash, damaged, not UTF-8)."""
    if not path.exists():
        return [], []
    try:
        return _parse(path.read_bytes())
    except IsADirectoryError:
        raise HarnessError(f"{path} is a folder, not a records file: move it away and run again.") from None
    except OSError as exc:
        raise HarnessError(f"cannot read {path}: {exc.strerror or exc}. Fix its permissions and run again.") from None


def read_records(path: Path) -> list[FoldRecord]:
    """Every complete record in the file, in order; unreadable lines are skipped."""
    return load_records(path)[0]


def skipped_lines_note(path: Path, skipped: list[int]) -> str:
    """The warning for unreadable record lines, naming where they are."""
    shown = ", ".join(map(str, skipped[:10])) + (" …" if len(skipped) > 10 else "")
    return (
        f"{path}: skipped {len(skipped)} unreadable line(s) (line {shown}): torn by a crash or damaged. "
        "The folds they held count as not done and are trained again."
    )


def test_predictions_path(results_dir: Path, search_id: str) -> Path:
    """Where a search's test predictions are kept (beside its folds' predictions)."""
    return Path(results_dir) / PREDICTIONS_DIR / search_id / "test.npz"


def write_test_file(results_dir: Path, records: list[TestRecord]) -> None:
    """test.jsonl: one line per scored search (rewritten whole from the storage)."""
    lines = "".join(json.dumps(asdict(r), sort_keys=True) + "\n" for r in records)
    atomic_write(Path(results_dir) / TEST_FILE, lines, fsync=False)


def read_test_records(results_dir: Path) -> list[TestRecord]:
    """The test records of a results folder (none when it has no test set); unreadable lines skipped."""
    path = Path(results_dir) / TEST_FILE
    try:
        data = path.read_bytes()
    except FileNotFoundError:
        return []
    except OSError as exc:
        raise HarnessError(f"cannot read {path}: {exc.strerror or exc}. Fix its permissions and run again.") from None
    records = []
    for line in data.split(b"\n"):
        try:
            records.append(TestRecord(**json.loads(line.decode("utf-8")))) if line.strip() else None
        except (UnicodeDecodeError, json.JSONDecodeError, TypeError):
            continue
    return records


def read_test_predictions(results_dir: Path, search_id: str) -> dict[str, np.ndarray] | None:
    """A search's test predictions (``rows``, ``labels``, ``probabilities``), or None. Never unpickles."""
    try:
        with np.load(test_predictions_path(results_dir, search_id), allow_pickle=False) as data:
            return {name: data[name] for name in ("rows", "labels", "probabilities")}
    except (OSError, ValueError, KeyError):
        return None
