"""A tiny study end to end: leaderboard files, resume after kill -9, same seed → same results."""

from __future__ import annotations

import json
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

from harness.results.storage import RUN_STUDY_PREFIX

from harness.cli import main
from harness.results.records import read_records

from conftest import tiny_study_text, wait_for_records


def _run(study: Path, results: Path, *extra: str) -> int:
    return main(["run", str(study), "--results", str(results), *extra])


def test_run_writes_leaderboard_folds_records_and_reports(tiny_study, tmp_path, capsys):
    assert _run(tiny_study, tmp_path / "r") == 0
    out = tmp_path / "r" / "tiny"
    for name in ("leaderboard.csv", "leaderboard.md", "folds.csv", "records.jsonl", "optuna.journal", "study.toml", "run.json", "report.md"):
        assert (out / name).exists(), name
    board = pd.read_csv(out / "leaderboard.csv")
    for metric in ("accuracy", "top_1_accuracy", "top_2_accuracy", "loss"):
        assert {f"{metric}_mean", f"{metric}_std"} <= set(board.columns)
    # k above the 3 classes: 1 for every model, so recorded (not a crash) but left off the leaderboard
    assert not [c for c in board.columns if c.startswith("top_5")]
    assert "top-5" not in (out / "leaderboard.md").read_text() and "top-2" in (out / "leaderboard.md").read_text()
    assert "top_5" not in (out / "report.md").read_text() and "top_2_accuracy" in (out / "report.md").read_text()
    assert board.loc[0, "complete"] == 2 and board.loc[0, "folds"] == 2
    assert "learning_rate" in json.loads(board.loc[0, "best_params"])
    records = read_records(out / "records.jsonl")
    assert len(records) == 4 and {r.fold for r in records} == {0, 1}
    assert all(r.metrics["top_5_accuracy"] == 1.0 for r in records)
    # the leaderboard is the mean and spread of the best configuration's fold records
    best = [r for r in records if json.dumps(r.tuned, sort_keys=True) == board.loc[0, "best_params"]]
    acc = pd.Series([r.metrics["accuracy"] for r in best])
    assert board.loc[0, "accuracy_mean"] == pytest.approx(acc.mean(), abs=1e-6)
    assert board.loc[0, "accuracy_std"] == pytest.approx(acc.std(), abs=1e-6)

    capsys.readouterr()
    assert main(["leaderboard", str(out)]) == 0
    assert "cnn5" in capsys.readouterr().out

    # a second run with the same settings has nothing left to do and keeps every record once
    assert _run(tiny_study, tmp_path / "r") == 0
    assert len(read_records(out / "records.jsonl")) == 4


@pytest.mark.run_machinery
def test_more_trials_continue_the_same_search(tiny_study, tmp_path):
    assert _run(tiny_study, tmp_path / "r", "--trials", "1") == 0
    assert _run(tiny_study, tmp_path / "r", "--trials", "2") == 0
    records = read_records(tmp_path / "r" / "tiny" / "records.jsonl")
    assert sorted(Counter(r.trial for r in records).values()) == [2, 2]


@pytest.mark.run_machinery
def test_changed_cv_in_the_same_results_folder_is_refused(tiny_study, tmp_path, capsys):
    assert _run(tiny_study, tmp_path / "r", "--trials", "1") == 0
    capsys.readouterr()
    assert _run(tiny_study, tmp_path / "r", "--trials", "1", "--folds", "3") == 2
    assert "different folds" in capsys.readouterr().err


def test_same_seed_same_folds_and_leaderboard(tiny_study, tmp_path):
    assert _run(tiny_study, tmp_path / "a") == 0
    assert _run(tiny_study, tmp_path / "b") == 0
    a, b = tmp_path / "a" / "tiny", tmp_path / "b" / "tiny"
    assert (a / "folds.csv").read_text() == (b / "folds.csv").read_text()
    board_a = pd.read_csv(a / "leaderboard.csv").drop(columns=["fit_seconds"])
    board_b = pd.read_csv(b / "leaderboard.csv").drop(columns=["fit_seconds"])
    pd.testing.assert_frame_equal(board_a, board_b)


@pytest.mark.run_machinery
@pytest.mark.parametrize("stop", [signal.SIGKILL, signal.SIGINT], ids=["kill-9", "ctrl-c"])
def test_interrupted_run_resumes_without_missing_or_doubled_folds(tmp_path, stop):
    study = tmp_path / "kill.toml"
    study.write_text(tiny_study_text(name="kill", trials=3))
    results = tmp_path / "r"
    records_path = results / "kill" / "records.jsonl"
    command = [sys.executable, "-m", "harness", "run", str(study), "--results", str(results)]
    env = dict(os.environ, TF_CPP_MIN_LOG_LEVEL="3")
    proc = subprocess.Popen(command, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    wait_for_records(proc, records_path)
    proc.send_signal(stop)
    assert proc.wait(timeout=120) == (130 if stop == signal.SIGINT else -signal.SIGKILL)
    killed = read_records(records_path)
    assert 1 <= len(killed) < 6

    done = subprocess.run(command, env=env, capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stderr
    records = read_records(records_path)
    keys = Counter((r.search_id, r.config_id, r.repeat, r.fold) for r in records)
    assert max(keys.values()) == 1, "a fold record was written twice"
    by_config = Counter(r.config_id for r in records)
    board = pd.read_csv(results / "kill" / "leaderboard.csv")
    assert board.loc[0, "complete"] == 3
    assert sorted(by_config.values()) == [2, 2, 2], "every configuration has all its folds, none is partial"
    # the trial cut off by the kill was retried with its configuration, reusing its finished fold
    assert killed[0].config_id in by_config
    storage = optuna.storages.JournalStorage(optuna.storages.journal.JournalFileBackend(str(results / "kill" / "optuna.journal")))
    name = next(n for n in optuna.get_all_study_names(storage) if not n.startswith(RUN_STUDY_PREFIX))
    states = Counter(t.state.name for t in optuna.load_study(study_name=name, storage=storage).trials)
    assert states["COMPLETE"] == 3 and states.get("RUNNING", 0) == 0


def _run_with_failing_folds(tmp_path, trials: int, message: str) -> subprocess.CompletedProcess:
    """``harness run`` in a fresh process where every fold raises HarnessError(message.format(n))."""
    study = tmp_path / "tiny.toml"
    study.write_text(tiny_study_text(trials=trials))
    code = (
        "import itertools, sys, harness.search.trial as search\n"
        "from harness.errors import HarnessError\n"
        "calls = itertools.count()\n"
        f"def fail(*args, **kwargs):\n    raise HarnessError({message!r}.format(next(calls)))\n"
        "search.fit_fold = fail\n"
        "from harness.cli import main\n"
        "sys.exit(main(sys.argv[1:]))\n"
    )
    return subprocess.run(
        [sys.executable, "-c", code, "run", str(study), "--results", str(tmp_path / "r")],
        capture_output=True, text=True, timeout=300,
    )


@pytest.mark.run_machinery
def test_a_trial_failing_with_a_user_error_says_so_in_one_message_without_a_traceback(tmp_path):
    """E.g. ImageNet weights missing offline: the harness prints the message; Optuna's own log of
    the failed trial (with the exception's traceback) is not shown."""
    done = _run_with_failing_folds(tmp_path, 5, "the weights file is missing: fetch it")
    assert done.returncode == 2
    assert done.stderr.count("failed: the weights file is missing: fetch it") == 2  # once per failed trial
    # the same error twice in a row: the candidate's other 3 trials are not tried
    assert "two trials in a row failed with the same error" in " ".join(done.stderr.split())
    assert "trial 2" not in done.stderr and "1 of 1 candidate(s) failed" in " ".join(done.stderr.split())
    assert "Traceback" not in done.stderr and "failed with value None" not in done.stderr


@pytest.mark.run_machinery
def test_optunas_own_line_about_the_run_study_reaches_the_output_and_no_other(tmp_path):
    """Optuna announces the study that carries the run ("harness:<study>") in its own INFO line;
    each candidate's study is made quietly, so the rest of the output is the harness's own."""
    done = _run_with_failing_folds(tmp_path, 1, "cannot run")
    lines = [line for line in done.stderr.splitlines() if "A new study created" in line]
    assert len(lines) == 1, done.stderr[-3000:]
    assert f"with name: {RUN_STUDY_PREFIX}" in lines[0]


@pytest.mark.run_machinery
def test_trials_failing_with_different_errors_are_all_tried(tmp_path):
    done = _run_with_failing_folds(tmp_path, 3, "this configuration cannot run ({})")
    assert done.returncode == 2
    assert [f"cannot run ({n})" in done.stderr for n in range(3)] == [True, True, True]
    assert "in a row" not in done.stderr and "Traceback" not in done.stderr


@pytest.mark.run_machinery
def test_kill_9_and_resume_end_with_the_clean_runs_leaderboard(tmp_path):
    """The sampler's proposals depend on the seed, the candidate and the trial history only, so a
    search killed at any moment and resumed proposes what an uninterrupted one does."""
    study = tmp_path / "kill.toml"
    study.write_text(tiny_study_text(name="kill", trials=7))
    env = dict(os.environ, TF_CPP_MIN_LOG_LEVEL="3")

    def command(results):
        return [sys.executable, "-m", "harness", "run", str(study), "--results", str(results)]

    clean = subprocess.run(command(tmp_path / "clean"), env=env, capture_output=True, text=True, timeout=600)
    assert clean.returncode == 0, clean.stderr[-3000:]
    records_path = tmp_path / "crashed" / "kill" / "records.jsonl"
    for kill_after in (1, 4, 9):  # mid-trial, between folds of a later trial, after the random start
        proc = subprocess.Popen(command(tmp_path / "crashed"), env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        deadline = time.time() + 300
        while time.time() < deadline and proc.poll() is None:
            if records_path.exists() and records_path.read_text().count("\n") >= kill_after:
                break
            time.sleep(0.01)
        proc.kill()
        proc.wait()
    resumed = subprocess.run(command(tmp_path / "crashed"), env=env, capture_output=True, text=True, timeout=600)
    assert resumed.returncode == 0, resumed.stderr[-3000:]

    def board(results):
        return pd.read_csv(results / "kill" / "leaderboard.csv").drop(columns=["fit_seconds", "best_trial"])

    pd.testing.assert_frame_equal(board(tmp_path / "clean"), board(tmp_path / "crashed"))
    configs = [
        {json.dumps(r.tuned, sort_keys=True) for r in read_records(results / "kill" / "records.jsonl")}
        for results in (tmp_path / "clean", tmp_path / "crashed")
    ]
    assert configs[0] == configs[1] and len(configs[0]) == 7
