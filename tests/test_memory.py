"""Memory over a long search stays bounded: past a growth budget the process continues as a fresh one."""

from __future__ import annotations

import os
import subprocess
import sys
import time

import pandas as pd

import harness.core.memory as memory
from harness.core.memory import MemoryGuard

from conftest import tiny_study_text

BUDGET_MB = 150
#: One trial's growth and the sampling interval's lag, on top of the budget.
SLACK_MB = 150


def _rss_mb(pid: int) -> float | None:
    try:
        with open(f"/proc/{pid}/status") as fh:
            return next(int(line.split()[1]) / 1024 for line in fh if line.startswith("VmRSS:"))
    except (OSError, StopIteration):
        return None


def test_a_16_trial_search_keeps_its_memory_within_the_growth_budget(tmp_path):
    study = tmp_path / "soak.toml"
    study.write_text(tiny_study_text(name="soak", trials=16).replace("epochs = 2", "epochs = 1"))
    records = tmp_path / "r" / "soak" / "records.jsonl"
    env = dict(os.environ, HARNESS_MEMORY_GROWTH_MB=str(BUDGET_MB), TF_CPP_MIN_LOG_LEVEL="3")
    command = [sys.executable, "-m", "harness", "run", str(study), "--results", str(tmp_path / "r")]
    proc = subprocess.Popen(command, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
    first_trial, peak = None, 0.0
    while proc.poll() is None:
        rss = _rss_mb(proc.pid)  # the same pid across restarts: the process replaces itself
        if rss is not None:
            peak = max(peak, rss)
            if first_trial is None and records.exists() and records.read_text().count("\n") >= 2:
                first_trial = rss
        time.sleep(0.05)
    stderr = proc.stderr.read()
    assert proc.returncode == 0, stderr[-3000:]
    assert "continuing in a fresh process" in stderr
    board = pd.read_csv(tmp_path / "r" / "soak" / "leaderboard.csv")
    assert board.loc[0, "complete"] == 16 and board.loc[0, "trials"] == 16
    assert first_trial is not None
    # without restarts this grows by ~44 MB per trial: ~700 MB over 16 trials (restarts every ~4)
    assert peak <= first_trial + BUDGET_MB + SLACK_MB, (first_trial, peak)


def test_the_guard_measures_growth_from_the_first_trial(monkeypatch):
    readings = iter([900.0, 950.0, 1000.0, 1150.0])
    monkeypatch.setattr(memory, "resident_mb", lambda: next(readings))
    guard = MemoryGuard(budget_mb=200)
    assert [guard.over_budget() for _ in range(3)] == [None, None, None]
    assert "grew by 250 MB in 3 trial(s)" in guard.over_budget()


def test_a_zero_budget_turns_restarts_off(monkeypatch):
    monkeypatch.setenv(memory.GROWTH_ENV, "0")
    monkeypatch.setattr(memory, "resident_mb", lambda: 10_000.0)
    guard = MemoryGuard()
    assert guard.over_budget() is None and guard.over_budget() is None
