"""Portable where it can be: the leaderboard, reports and predict import without Unix-only modules,
records are appended under a cross-platform lock, and the memory guard measures through psutil."""

from __future__ import annotations

import subprocess
import sys
import textwrap
from pathlib import Path

import psutil

from harness.core import memory
from harness.core.memory import MemoryGuard

ROOT = Path(__file__).resolve().parents[1]

#: Makes ``import fcntl`` fail as it does on Windows (a None in sys.modules raises ImportError).
WITHOUT_FCNTL = "import sys; sys.modules['fcntl'] = None\n"


def _run_without_fcntl(code: str, tmp_path: Path) -> subprocess.CompletedProcess:
    script = tmp_path / "check.py"
    script.write_text(WITHOUT_FCNTL + textwrap.dedent(code))
    return subprocess.run([sys.executable, str(script)], cwd=tmp_path, capture_output=True, text=True, timeout=300)


def test_reports_predict_and_records_work_where_fcntl_cannot_be_imported(tmp_path):
    done = _run_without_fcntl(
        f"""
        import importlib
        try:
            import fcntl
        except ImportError:
            pass
        else:
            raise SystemExit("the prelude did not hide fcntl")
        for name in ("harness.results.records", "harness.reports.leaderboard", "harness.reports.html",
                     "harness.serving.predict"):
            importlib.import_module(name)

        from pathlib import Path
        from harness.results.records import FoldRecord, RecordStore, append_record_line, read_records

        folder = Path({str(tmp_path / "results")!r})
        record = FoldRecord("cand", "cand-1", "c0", 0, 0, 0, {{}}, {{}}, {{"accuracy": 0.5}}, 1.0, 1, 8, 4)
        store = RecordStore(folder)
        assert store.append(record) is True
        assert store.append(record) is False  # a key is written once
        append_record_line(folder / "mirror.jsonl", record)
        assert RecordStore(folder).all() == [record]
        assert read_records(folder / "records.jsonl") == [record]
        assert read_records(folder / "mirror.jsonl") == [record]
        print("ok")
        """,
        tmp_path,
    )
    assert done.returncode == 0, done.stdout + done.stderr
    assert done.stdout.strip().endswith("ok")


def test_decoding_imports_neither_the_image_store_nor_training_libraries(tmp_path):
    """Serving decodes through harness.data.images: the store, scikit-learn and Optuna stay unloaded."""
    code = (
        "import sys, harness.data.images\n"
        "heavy = {'sklearn', 'optuna', 'sqlite3', 'harness.data.image_store', 'harness.data.near_pairs'}\n"
        "print(sorted(heavy & set(sys.modules)))\n"
    )
    done = subprocess.run([sys.executable, "-c", code], cwd=tmp_path, capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stderr
    assert done.stdout.strip() == "[]"


def test_the_memory_guard_reads_this_process_resident_memory_through_psutil():
    measured = memory.resident_mb()
    assert measured is not None and measured > 1
    expected = psutil.Process().memory_info().rss / (1024 * 1024)
    assert abs(measured - expected) < 64  # the same measure, taken a moment apart
    guard = MemoryGuard(budget_mb=1e9)
    assert guard.over_budget() is None  # the first measure is the baseline
    assert guard.baseline is not None and abs(guard.baseline - measured) < 64


def test_the_growth_budget_is_read_through_the_settings(monkeypatch):
    monkeypatch.setenv(memory.GROWTH_ENV, "300")
    assert memory.growth_budget_mb() == 300 and MemoryGuard().budget_mb == 300
    monkeypatch.setenv(memory.GROWTH_ENV, "not a number")
    assert memory.growth_budget_mb() == memory.DEFAULT_GROWTH_MB


def test_atomic_writer_streams_into_place_and_leaves_the_old_file_on_a_fault(tmp_path):
    import numpy as np
    import pytest

    from harness.core.files import atomic_write, atomic_writer

    target = tmp_path / "array.npy"
    atomic_write(target, b"old")
    with pytest.raises(RuntimeError):
        with atomic_writer(target, fsync=False) as fh:
            fh.write(b"half of a new")
            raise RuntimeError("the disk filled up")
    assert target.read_bytes() == b"old" and [p.name for p in tmp_path.iterdir()] == ["array.npy"]
    with atomic_writer(target) as fh:
        np.save(fh, np.arange(5), allow_pickle=False)
    assert np.load(target).tolist() == [0, 1, 2, 3, 4] and [p.name for p in tmp_path.iterdir()] == ["array.npy"]


def test_names_moved_out_of_images_and_storage_still_import_for_a_release():
    import pytest

    from harness.data import images
    from harness.data.image_store import ImageStore
    from harness.results import storage
    from harness.results.optuna_storage import open_storage

    with pytest.warns(DeprecationWarning, match="harness.data.image_store.ImageStore"):
        assert images.ImageStore is ImageStore
    with pytest.warns(DeprecationWarning, match="harness.results.optuna_storage.open_storage"):
        assert storage.open_storage is open_storage
    with pytest.raises(AttributeError):
        images.no_such_name  # noqa: B018
