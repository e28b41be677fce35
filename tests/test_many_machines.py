"""One study on several machines: every worker has its own results folder and caches and shares
only the storage (PostgreSQL, or a journal file on a shared disk)."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from collections import Counter
from pathlib import Path

import optuna
import pandas as pd
import pytest
from optuna.trial import TrialState

from harness.cli import main
from harness.config import load_study
from harness.leaderboard import build_leaderboard
from harness.plugins import get_plugins
from harness.search import search_id
from harness.storage import RUN_STUDY_PREFIX, ResultStore, open_storage

from conftest import tiny_study_text

TRIALS = 4
FOLDS = 2


def _study(tmp_path: Path, name: str = "many") -> Path:
    path = tmp_path / f"{name}.toml"
    beats = "[search]\nheartbeat_seconds = 1\ngrace_seconds = 4"
    path.write_text(tiny_study_text(name=name, trials=TRIALS).replace("[search]", beats))
    return path


def _machine(study: Path, storage: str, home: Path) -> subprocess.Popen:
    """A `harness worker` as another machine would run it: its own results folder and cache."""
    env = dict(os.environ, HARNESS_CACHE=str(home / "cache"))
    return subprocess.Popen(
        [sys.executable, "-m", "harness", "worker", str(study), "--storage", storage, "--results", str(home / "results")],
        env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
    )


def _one_study_on_machines(tmp_path: Path, storage: str, machines: int) -> None:
    study = _study(tmp_path)
    homes = [tmp_path / f"machine{i}" for i in range(machines)]
    procs = [_machine(study, storage, home) for home in homes]
    victim_records = homes[0] / "results" / "many" / "records.jsonl"
    deadline = time.time() + 300
    while time.time() < deadline and not (victim_records.exists() and victim_records.read_text().count("\n") >= 1):
        assert procs[0].poll() is None, procs[0].communicate()[1][-3000:]
        time.sleep(0.05)
    procs[0].send_signal(signal.SIGKILL)  # a machine that vanishes mid-run: no goodbye in the storage
    procs[0].wait()
    for proc in procs[1:]:
        _, err = proc.communicate(timeout=600)
        assert proc.returncode == 0, err[-3000:]
        assert "Traceback" not in err

    # every configuration whole, no fold twice, the budget kept, nothing left running
    loaded = load_study(study, get_plugins())
    sid = search_id(loaded, loaded.candidates[0])
    backend = open_storage(storage, tmp_path)
    records = ResultStore(backend, "many").records([sid])
    keys = Counter(r.key for r in records)
    assert max(keys.values()) == 1
    per_config = Counter(r.config_id for r in records)
    trials = optuna.load_study(study_name=sid, storage=backend).get_trials()
    replaced = {t.user_attrs.get("retry_of") for t in trials}
    finished = [t for t in trials if t.state in (TrialState.COMPLETE, TrialState.PRUNED) and t.number not in replaced]
    assert len(finished) == TRIALS, Counter(t.state.name for t in trials)
    assert not [t for t in trials if t.state == TrialState.RUNNING]
    assert {t.user_attrs["config_id"] for t in finished if t.state == TrialState.COMPLETE} <= {
        c for c, n in per_config.items() if n == FOLDS
    }
    assert any(t.state == TrialState.FAIL for t in trials), "the vanished machine's trial was failed and retried"

    # `harness leaderboard` from any machine's folder (the killed one's too) is one table
    tables = []
    for home in homes:
        folder = home / "results" / "many"
        assert main(["leaderboard", str(folder)]) == 0
        tables.append(build_leaderboard(folder))
        assert len(pd.read_csv(folder / "folds.csv")) == 36
    assert tables[0].loc[0, "complete"] == TRIALS
    for table in tables[1:]:
        pd.testing.assert_frame_equal(tables[0], table)


@pytest.mark.run_machinery
def test_machines_share_one_postgres_study_and_survive_a_killed_worker(tmp_path, postgres):
    _one_study_on_machines(tmp_path, postgres(), machines=3)


@pytest.mark.run_machinery
def test_machines_share_one_journal_file_and_survive_a_killed_worker(tmp_path):
    _one_study_on_machines(tmp_path, f"journal:{tmp_path / 'shared' / 'study.journal'}", machines=2)
