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
from harness.config.study import load_study
from harness.reports.leaderboard import build_leaderboard
from harness.plugins import get_plugins
from harness.search.engine import search_id
from harness.results.optuna_storage import open_storage
from harness.results.storage import ResultStore

from conftest import tiny_study_text, wait_for_records

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


FOLDER_STUDY = """
[study]
name = "shapes"
seed = 3

[dataset]
name = "folder"
root = "shapes"
image_size = [16, 16]

[cv]
folds = 2

[search]
trials = 1

[[candidates]]
model = "cnn5"
"""


def _shapes(root: Path, skip: str | None = None, extra: str | None = None) -> Path:
    """Two classes of distinct noise images (no near copies for the audit to join)."""
    import numpy as np
    from PIL import Image

    rng = np.random.default_rng(0)
    names = [f"{label}/{label}{i}.png" for label in ("red", "blue") for i in range(6)] + ([f"red/{extra}"] if extra else [])
    for name in names:
        pixels = rng.integers(0, 255, (16, 16, 3), dtype=np.uint8)
        if not name.endswith(skip or "-"):
            (root / "shapes" / name).parent.mkdir(parents=True, exist_ok=True)
            Image.fromarray(pixels).save(root / "shapes" / name)
    return root


@pytest.mark.run_machinery
def test_a_machine_whose_images_differ_is_stopped_naming_them(tmp_path, capsys):
    """Folds are computed on each machine from the seed and checked against the stored ones."""
    from rich.console import Console

    from harness.workflows.run import _start

    study_file = tmp_path / "shapes.toml"
    storage = f"journal:{tmp_path / 'shared.journal'}"
    study_file.write_text(FOLDER_STUDY.replace("[search]", f'[search]\nstorage = "{storage}"'))
    study = load_study(study_file, get_plugins())
    _start(study, get_plugins(), tmp_path / "a", _shapes(tmp_path / "data-a"), Console(quiet=True))  # stores the folds

    other = _shapes(tmp_path / "data-b", skip="blue3.png", extra="stray.png")
    code = main(["worker", str(study_file), "--results", str(tmp_path / "b"), "--data-root", str(other)])
    err = " ".join(capsys.readouterr().err.split())
    assert code == 2, err
    assert "this machine's folds differ from the study's folds in the storage" in err
    assert "1 image(s) missing here (blue/blue3.png)" in err and "1 image(s) only here (red/stray.png)" in err
    assert "Traceback" not in err


def test_a_wrong_password_or_an_unreachable_database_is_one_line(tmp_path, capsys, postgres):
    study = _study(tmp_path)
    good = postgres()
    wrong_password = good.replace("harness-test-password", "not-the-password")
    nobody_listens = "postgresql://harness:secret@127.0.0.1:1/nothing"
    for url, reason in ((wrong_password, "password authentication failed"), (nobody_listens, "Connection refused")):
        code = main(["worker", str(study), "--storage", url, "--results", str(tmp_path / "r")])
        err = capsys.readouterr().err
        assert code == 2
        assert reason in err and "Traceback" not in err
        assert "not-the-password" not in err and "secret" not in err, "the password is never shown"
        assert len(err.strip().splitlines()[-1]) > 0


def test_a_worker_needs_a_shared_storage(tmp_path, capsys):
    assert main(["worker", str(_study(tmp_path)), "--results", str(tmp_path / "r")]) == 2
    assert "joins a shared storage" in capsys.readouterr().err


@pytest.mark.run_machinery
def test_a_run_killed_on_postgres_resumes_to_the_leaderboard_of_a_clean_run(tmp_path, postgres):
    """The Reliability guarantees on a database: kill -9 mid-run, the same command resumes, no fold
    lost or doubled, and the leaderboard is the one an uninterrupted run (on the journal) gives."""
    url = postgres()
    study = tmp_path / "kill.toml"
    beats = f'[search]\nstorage = "{url}"\nheartbeat_seconds = 1\ngrace_seconds = 3'
    study.write_text(tiny_study_text(name="kill", trials=3).replace("[search]", beats))
    results = tmp_path / "r"
    command = [sys.executable, "-m", "harness", "run", str(study), "--results", str(results)]
    proc = subprocess.Popen(command, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    records_path = results / "kill" / "records.jsonl"
    wait_for_records(proc, records_path)
    proc.kill()
    proc.wait()
    done = subprocess.run(command, capture_output=True, text=True, timeout=400)
    assert done.returncode == 0, done.stderr[-3000:]

    loaded = load_study(study, get_plugins())
    sid = search_id(loaded, loaded.candidates[0])
    records = ResultStore(open_storage(url, tmp_path), "kill").records([sid])
    assert sorted(Counter(r.config_id for r in records).values()) == [2, 2, 2]
    assert max(Counter(r.key for r in records).values()) == 1

    clean = tmp_path / "clean.toml"
    clean.write_text(tiny_study_text(name="kill", trials=3))
    assert main(["run", str(clean), "--results", str(tmp_path / "clean")]) == 0
    drop = ["fit_seconds", "best_trial"]
    pd.testing.assert_frame_equal(
        pd.read_csv(results / "kill" / "leaderboard.csv").drop(columns=drop),
        pd.read_csv(tmp_path / "clean" / "kill" / "leaderboard.csv").drop(columns=drop),
    )


@pytest.mark.run_machinery
def test_a_database_that_goes_away_mid_run_is_one_line(tmp_path):
    import postgres_server

    why = postgres_server.missing()
    if why:
        pytest.skip(why)
    with postgres_server.postgres_server() as new_database:
        url = new_database()
        proc = _machine(_study(tmp_path), url, tmp_path / "m")
        records = tmp_path / "m" / "results" / "many" / "records.jsonl"
        deadline = time.time() + 240
        while time.time() < deadline and proc.poll() is None and not records.exists():
            time.sleep(0.05)
        assert proc.poll() is None, proc.communicate()[1][-3000:]
        postgres_server.stop(new_database)  # the server goes away while a trial runs
        _, err = proc.communicate(timeout=300)
    assert proc.returncode == 2, err[-3000:]
    assert "lost the study's storage mid-run" in err and "run the same command again" in err
    assert "Traceback" not in err and postgres_server.PASSWORD not in err
