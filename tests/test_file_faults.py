"""File-system faults are one line naming the path and what to do, exit 2; fixed, the same command
resumes. Read-only and full disks are real: a tmpfs mounted in a private mount namespace."""

from __future__ import annotations

import errno
import json
import os
import shutil
import subprocess
import sys
import textwrap
from collections import Counter
from pathlib import Path

import pandas as pd
import pytest

from harness.cli import main
from harness.results.records import read_records

from conftest import tiny_study_text


def _namespaces_work() -> bool:
    if shutil.which("unshare") is None:
        return False
    probe = subprocess.run(["unshare", "-m", "true"], capture_output=True)
    return probe.returncode == 0


needs_mounts = pytest.mark.skipif(
    not _namespaces_work(),
    reason="needs `unshare -m` (root or user namespaces) to mount a read-only or full tmpfs; CI runs as root",
)


def _one_line_error(stderr: str, *expected: str) -> str:
    flat = " ".join(stderr.split())
    assert "Traceback" not in stderr and "internal error" not in stderr, stderr[-3000:]
    assert "error:" in flat
    for piece in expected:
        assert piece in flat, flat
    return flat


def _harness(*args: str) -> list[str]:
    return [sys.executable, "-m", "harness", *args]


def _study_and_results(tmp_path, trials: int, folder: str):
    """A tiny study of ``trials`` trials and an empty results folder for it."""
    study = tmp_path / "s.toml"
    study.write_text(tiny_study_text(name="s", trials=trials))
    results = tmp_path / folder
    results.mkdir()
    return study, results


@needs_mounts
def test_a_read_only_results_folder_is_one_line_and_resumes_once_writable(tmp_path):
    study, results = _study_and_results(tmp_path, 1, "r")
    run = " ".join(_harness("run", str(study), "--results", str(results)))
    script = f"mount --bind {results} {results} && mount -o remount,ro,bind {results} && exec {run}"
    done = subprocess.run(["unshare", "-m", "sh", "-c", script], capture_output=True, text=True, timeout=300)
    assert done.returncode == 2
    _one_line_error(done.stderr, str(results / "s"), "Read-only file system", "another --results folder")
    again = subprocess.run(_harness("run", str(study), "--results", str(results)), capture_output=True, text=True, timeout=300)
    assert again.returncode == 0, again.stderr[-3000:]


ORCHESTRATE = textwrap.dedent(
    """
    # Runs inside a private mount namespace: results on a 4 MB tmpfs, filled while a fold trains.
    import subprocess, sys, time, json
    from pathlib import Path
    results, command = Path(sys.argv[1]), sys.argv[2:]
    subprocess.run(["mount", "-t", "tmpfs", "-o", "size=4m", "tmpfs", str(results)], check=True)
    records = results / "s" / "records.jsonl"
    proc = subprocess.Popen(command, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
    while proc.poll() is None and not (records.exists() and records.read_text().count("\\n") >= 3):
        time.sleep(0.01)
    filler = results / "filler"
    with open(filler, "wb", buffering=0) as fh:  # the disk fills up while a fold trains
        try:
            while True:
                fh.write(b"x" * 4096)
                fh.flush()
        except OSError:
            pass
    _, stderr = proc.communicate(timeout=300)
    full = {"code": proc.returncode, "stderr": stderr}
    filler.unlink()  # space freed: the same command resumes
    again = subprocess.run(command, capture_output=True, text=True, timeout=300)
    board = (results / "s" / "leaderboard.csv").read_text() if again.returncode == 0 else ""
    records_text = records.read_text()
    print(json.dumps({"full": full, "again": {"code": again.returncode, "stderr": again.stderr},
                      "board": board, "records": records_text}))
    """
)


@needs_mounts
def test_a_disk_full_mid_fold_is_one_line_and_the_cut_off_configuration_is_rerun(tmp_path):
    study, results = _study_and_results(tmp_path, 4, "full")
    run = _harness("run", str(study), "--results", str(results))
    done = subprocess.run(
        ["unshare", "-m", sys.executable, "-c", ORCHESTRATE, str(results), *run],
        capture_output=True, text=True, timeout=900,
    )
    assert done.returncode == 0, done.stderr[-3000:]
    outcome = json.loads(done.stdout.strip().splitlines()[-1])
    assert outcome["full"]["code"] == 2, outcome["full"]["stderr"][-3000:]
    _one_line_error(outcome["full"]["stderr"], f"{results / 's'}: No space left on device", "Free some space")
    assert outcome["again"]["code"] == 0, outcome["again"]["stderr"][-3000:]
    # every configuration complete, none doubled; the cut-off one was rerun with its finished folds
    records_file = tmp_path / "records.jsonl"
    records_file.write_text(outcome["records"])
    records = read_records(records_file)
    keys = Counter((r.config_id, r.repeat, r.fold) for r in records)
    assert max(keys.values()) == 1
    assert sorted(Counter(r.config_id for r in records).values()) == [2, 2, 2, 2]
    # and the leaderboard is the one an uninterrupted run gives
    clean = tmp_path / "clean"
    assert main(["run", str(study), "--results", str(clean)]) == 0
    board_file = tmp_path / "board.csv"
    board_file.write_text(outcome["board"])
    drop = ["fit_seconds", "best_trial"]
    pd.testing.assert_frame_equal(
        pd.read_csv(board_file).drop(columns=drop), pd.read_csv(clean / "s" / "leaderboard.csv").drop(columns=drop)
    )


def test_results_under_a_regular_file_is_one_line(tiny_study, tmp_path, capsys):
    blocker = tmp_path / "afile"
    blocker.write_text("not a folder")
    assert main(["run", str(tiny_study), "--results", str(blocker / "r")]) == 2
    _one_line_error(capsys.readouterr().err, str(blocker), "Not a directory", "a file, not a folder")


def test_a_records_file_that_is_a_folder_is_one_line(tiny_study, tmp_path, capsys):
    (tmp_path / "r" / "tiny" / "records.jsonl").mkdir(parents=True)
    assert main(["run", str(tiny_study), "--results", str(tmp_path / "r")]) == 2
    _one_line_error(capsys.readouterr().err, "records.jsonl is a folder", "move it away")


def test_permission_denied_and_a_full_disk_say_what_to_do():
    from harness.errors import file_system_error

    denied = str(file_system_error(PermissionError(errno.EACCES, "Permission denied", "/r/x/records.jsonl")))
    assert denied.startswith("/r/x/records.jsonl: Permission denied. Make it writable")
    assert "run the same command again to resume" in denied
    full = str(file_system_error(OSError(errno.ENOSPC, "No space left on device", "/r/x")))
    assert "Free some space on that disk" in full


def test_damaged_record_lines_are_named_and_repaired_from_the_storage(tiny_study, tmp_path, capsys):
    import shutil

    from harness.results.records import load_records

    results = tmp_path / "r"
    assert main(["run", str(tiny_study), "--results", str(results), "--trials", "1"]) == 0
    path = results / "tiny" / "records.jsonl"
    intact = read_records(path)
    lines = path.read_bytes().split(b"\n")
    lines[1] = b"\xff\xfe not utf-8 " + lines[1][:40]  # a damaged record
    path.write_bytes(b"\n".join(lines[:2] + [b'{"torn": ', *lines[2:]]))
    records, skipped = load_records(path)
    assert len(records) == 1 and skipped == [2, 3]
    # A copy of the folder without its storage: the reader names the damaged lines.
    copy = tmp_path / "copy"
    shutil.copytree(results / "tiny", copy, ignore=shutil.ignore_patterns("optuna.journal"))
    capsys.readouterr()
    assert main(["leaderboard", str(copy)]) == 0
    out = " ".join(capsys.readouterr().out.split())
    assert "skipped 2 unreadable line(s) (line 2, 3)" in out and str(copy / "records.jsonl") in out
    # The folder itself is a view of its storage: rewritten whole, nothing lost, nothing retrained.
    assert main(["leaderboard", str(results / "tiny")]) == 0
    assert "skipped" not in capsys.readouterr().out
    assert sorted((r.key, r.finished_at) for r in read_records(path)) == sorted((r.key, r.finished_at) for r in intact)
    assert main(["run", str(tiny_study), "--results", str(results), "--trials", "1"]) == 0
    assert "trial 1" not in capsys.readouterr().err
    assert len(read_records(path)) == 2


def test_a_torn_journal_entry_is_dropped_before_resuming(tiny_study, tmp_path, capsys):
    results = tmp_path / "r"
    assert main(["run", str(tiny_study), "--results", str(results), "--trials", "1"]) == 0
    journal = results / "tiny" / "optuna.journal"
    journal.write_bytes(journal.read_bytes() + b'{"op_code": 5, "worker_id": "x", "tri')  # cut mid-write
    assert main(["run", str(tiny_study), "--results", str(results), "--trials", "2"]) == 0
    assert "dropped a torn last entry" in " ".join(capsys.readouterr().err.split())
    assert pd.read_csv(results / "tiny" / "leaderboard.csv").loc[0, "complete"] == 2
