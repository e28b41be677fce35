"""Memory over a long search stays flat: training runs in a worker replaced by a fresh one as it grows;
the command restarting itself is the last guard."""

from __future__ import annotations

import os
import re
import subprocess
import sys

import pandas as pd
import psutil

import harness.core.memory as memory
from harness.core.memory import MemoryGuard

from conftest import tiny_study_text

#: What a 30-trial search may grow by after its fifth trial (issue 30); here after the third of 10.
FLAT_MB = 150


def _tree_mb(root: psutil.Process) -> float:
    """Resident MB of ``root`` and every process under it (the command and its training worker)."""
    total = 0.0
    for proc in [root, *root.children(recursive=True)]:
        try:
            total += proc.memory_info().rss / 2**20
        except psutil.Error:
            continue
    return total


def _run_watched(tmp_path, trials: int, env: dict[str, str]) -> tuple[list[float], str, subprocess.Popen]:
    """`harness run` of a tiny study; the process tree's memory at each trial's line, and stderr."""
    study = tmp_path / "soak.toml"
    study.write_text(tiny_study_text(name="soak", trials=trials).replace("epochs = 2", "epochs = 1"))
    command = [sys.executable, "-m", "harness", "run", str(study), "--results", str(tmp_path / "r")]
    proc = subprocess.Popen(command, env=dict(os.environ, TF_CPP_MIN_LOG_LEVEL="3", **env),
                            stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
    root, readings, lines = psutil.Process(proc.pid), [], []
    for line in proc.stderr:
        lines.append(line)
        if re.search(r"trial \d+ (complete|pruned|failed)", line):
            readings.append(_tree_mb(root))
    proc.wait()
    return readings, "".join(lines), proc


def test_a_long_search_trains_in_workers_replaced_as_they_grow_so_its_memory_stays_flat(tmp_path):
    readings, stderr, proc = _run_watched(tmp_path, 10, {})
    assert proc.returncode == 0, stderr[-3000:]
    assert "a fresh worker continues" in stderr  # the worker grew and was replaced...
    assert "continuing in a fresh process" not in stderr  # ...the command itself never restarted
    board = pd.read_csv(tmp_path / "r" / "soak" / "leaderboard.csv")
    assert board.loc[0, "complete"] == 10 and board.loc[0, "trials"] == 10
    assert len(readings) == 10
    # in one process this grows by ~45 MB per trial: ~300 MB over the last 7 trials
    assert max(readings[3:]) - readings[2] <= FLAT_MB, readings


def test_without_workers_the_command_restarts_itself_past_the_last_guard(tmp_path):
    readings, stderr, proc = _run_watched(
        tmp_path, 2, {memory.WORKER_GROWTH_ENV: "0", memory.GROWTH_ENV: "1"}
    )
    assert proc.returncode == 0, stderr[-3000:]
    assert "continuing in a fresh process" in stderr and "a fresh worker" not in stderr
    board = pd.read_csv(tmp_path / "r" / "soak" / "leaderboard.csv")
    assert board.loc[0, "complete"] == 2


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


def test_the_guard_hands_over_before_one_more_trial_would_pass_the_budget(monkeypatch):
    readings = iter([900.0, 980.0, 1060.0])
    monkeypatch.setattr(memory, "resident_mb", lambda: next(readings))
    guard = MemoryGuard(budget_mb=200)
    assert guard.over_budget() is None and guard.over_budget() is None  # 80 grown, 80 more: 160
    assert "grew by 160 MB in 2 trial(s) (up to 80 MB in one)" in guard.over_budget()  # 240 > 200


def test_a_worker_guard_falls_back_to_the_last_guard_when_workers_are_off(monkeypatch):
    monkeypatch.setenv(memory.WORKER_GROWTH_ENV, "0")
    monkeypatch.setenv(memory.GROWTH_ENV, "700")
    assert MemoryGuard.for_worker().budget_mb == 700
    monkeypatch.setenv(memory.WORKER_GROWTH_ENV, "90")
    assert MemoryGuard.for_worker().budget_mb == 90 and MemoryGuard.for_worker().setting == memory.WORKER_GROWTH_ENV
