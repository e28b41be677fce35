"""Several worker processes on one study: shared journal storage, no trial or fold doubled."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from collections import Counter

import optuna
import pandas as pd
import pytest

from harness.results.storage import RUN_STUDY_PREFIX

from harness.results.records import read_records
from harness.workflows.run import worker_env

from conftest import tiny_study_text


def _check(results_dir, trials: int) -> list:
    records = read_records(results_dir / "records.jsonl")
    keys = Counter((r.search_id, r.config_id, r.repeat, r.fold) for r in records)
    assert max(keys.values()) == 1, "a fold record was written twice"
    per_config = Counter(r.config_id for r in records)
    board = pd.read_csv(results_dir / "leaderboard.csv")
    assert board.loc[0, "complete"] == trials, "the trial budget holds with several workers"
    assert board.loc[0, "trials"] == trials
    complete = [c for c, n in per_config.items() if n == 2]
    assert len(complete) == board.loc[0, "complete"]
    assert (results_dir / "optuna.journal").exists() and not (results_dir / "optuna.db").exists()
    return records


def _command(study, results):
    return [sys.executable, "-m", "harness", "run", str(study), "--results", str(results), "--workers", "2"]


def test_two_workers_finish_one_study(tmp_path):
    study = tmp_path / "w.toml"
    study.write_text(tiny_study_text(name="w", trials=4))
    done = subprocess.run(_command(study, tmp_path / "r"), capture_output=True, text=True, timeout=400)
    assert done.returncode == 0, done.stderr[-3000:]
    assert "[worker 0]" in done.stderr and "[worker 1]" in done.stderr
    _check(tmp_path / "r" / "w", trials=4)
    storage = optuna.storages.JournalStorage(
        optuna.storages.journal.JournalFileBackend(str(tmp_path / "r" / "w" / "optuna.journal"))
    )
    name = next(n for n in optuna.get_all_study_names(storage) if not n.startswith(RUN_STUDY_PREFIX))
    states = Counter(t.state.name for t in optuna.load_study(study_name=name, storage=storage).trials)
    assert states["COMPLETE"] + states.get("PRUNED", 0) == 4, states


def test_over_budget_ranks_racing_trials_by_number():
    from optuna.trial import TrialState, create_trial

    from harness.search.engine import over_budget

    def trial(number, state):
        t = create_trial(state=state, params={}, distributions={}, value=0.5 if state == TrialState.COMPLETE else None)
        t.number = number
        return t

    done = [trial(i, TrialState.COMPLETE) for i in range(3)]
    racing = [trial(3, TrialState.RUNNING), trial(4, TrialState.RUNNING)]
    trials = done + racing
    # two workers took trials 3 and 4 for the last place of 4: only the lower number runs
    assert not over_budget(trials, 3, 4) and over_budget(trials, 4, 4)
    # a failed trial frees its place
    trials[3] = trial(3, TrialState.FAIL)
    assert not over_budget(trials, 4, 4)


def _alive(pid: int) -> bool:
    """Running, not a zombie waiting for a parent that will never reap it."""
    try:
        with open(f"/proc/{pid}/status") as fh:
            return not any(line.startswith("State:") and "Z" in line.split()[1] for line in fh)
    except FileNotFoundError:
        return False


def _start_and_wait_for_records(study, results, name="w"):
    records_path = results / name / "records.jsonl"
    parent = subprocess.Popen(_command(study, results), stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
    deadline = time.time() + 300
    while time.time() < deadline and not (records_path.exists() and records_path.read_text().count("\n") >= 1):
        time.sleep(0.05)
    children = subprocess.run(["pgrep", "-P", str(parent.pid)], capture_output=True, text=True).stdout.split()
    assert len(children) == 2, children
    return parent, [int(c) for c in children]


def _wait_until_gone(pids, seconds=60.0) -> list[int]:
    deadline = time.time() + seconds
    while time.time() < deadline and any(_alive(p) for p in pids):
        time.sleep(0.2)
    return [p for p in pids if _alive(p)]


@pytest.mark.run_machinery
def test_workers_end_with_their_parent_killed(tmp_path):
    study = tmp_path / "w.toml"
    study.write_text(tiny_study_text(name="w", trials=12))
    parent, children = _start_and_wait_for_records(study, tmp_path / "r")
    parent.kill()
    parent.wait()
    assert _wait_until_gone(children) == [], "workers outlived their parent"
    # the same command resumes and runs exactly the asked trials
    done = subprocess.run(_command(study, tmp_path / "r"), capture_output=True, text=True, timeout=600)
    assert done.returncode == 0, done.stderr[-3000:]
    _check(tmp_path / "r" / "w", trials=12)


@pytest.mark.run_machinery
@pytest.mark.parametrize("stop, code", [(signal.SIGTERM, 143), (signal.SIGINT, 130)], ids=["sigterm", "sigint"])
def test_a_stopped_parent_stops_its_workers_and_writes_the_leaderboard_so_far(tmp_path, stop, code):
    study = tmp_path / "w.toml"
    study.write_text(tiny_study_text(name="w", trials=12))
    parent, children = _start_and_wait_for_records(study, tmp_path / "r")
    parent.send_signal(stop)
    _, stderr = parent.communicate(timeout=300)
    assert parent.returncode == code, stderr[-3000:]
    assert "interrupted." in stderr and "Traceback" not in stderr
    assert _wait_until_gone(children, 10) == []
    assert (tmp_path / "r" / "w" / "leaderboard.csv").exists()
    assert len(read_records(tmp_path / "r" / "w" / "records.jsonl")) < 24


@pytest.mark.run_machinery
def test_a_second_run_on_the_same_results_folder_is_refused(tmp_path):
    study = tmp_path / "w.toml"
    study.write_text(tiny_study_text(name="w", trials=12))
    parent, _ = _start_and_wait_for_records(study, tmp_path / "r")
    try:
        second = subprocess.run(
            [sys.executable, "-m", "harness", "run", str(study), "--results", str(tmp_path / "r")],
            capture_output=True, text=True, timeout=120,
        )
        assert second.returncode == 2, second.stderr[-3000:]
        assert "in use by another `harness run`" in " ".join(second.stderr.split())
        assert f"pid {parent.pid}" in second.stderr
    finally:
        parent.send_signal(signal.SIGTERM)
        parent.communicate(timeout=300)


@pytest.mark.run_machinery
def test_a_dead_worker_loses_nothing_and_its_trial_is_retried(tmp_path):
    study = tmp_path / "w.toml"
    study.write_text(tiny_study_text(name="w", trials=4).replace("[search]", "[search]\nheartbeat_seconds = 1\ngrace_seconds = 4"))
    records_path = tmp_path / "r" / "w" / "records.jsonl"
    parent = subprocess.Popen(_command(study, tmp_path / "r"), stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
    deadline = time.time() + 300
    while time.time() < deadline and not (records_path.exists() and records_path.read_text().count("\n") >= 1):
        time.sleep(0.02)
    children = subprocess.run(["pgrep", "-P", str(parent.pid)], capture_output=True, text=True).stdout.split()
    assert len(children) == 2, children
    victim = int(children[0])
    os.kill(victim, signal.SIGKILL)
    _, stderr = parent.communicate(timeout=400)
    assert parent.returncode == 0, stderr[-3000:]
    assert "stopped with exit code -9" in stderr
    _check(tmp_path / "r" / "w", trials=4)


def test_workers_get_one_gpu_each_when_there_are_several():
    assert worker_env(3, ["0", "1"])["CUDA_VISIBLE_DEVICES"] == "1"
    env = worker_env(1, ["0"])  # one GPU: shared, without grabbing all its memory
    assert env.get("CUDA_VISIBLE_DEVICES") == os.environ.get("CUDA_VISIBLE_DEVICES")
    assert env["XLA_PYTHON_CLIENT_PREALLOCATE"] == "false"


@pytest.mark.run_machinery
def test_trials_of_an_old_sqlite_storage_are_carried_into_the_journal(tmp_path):
    import optuna

    from harness.config.study import load_study
    from harness.plugins import get_plugins
    from harness.search.engine import open_storage

    study_file = tmp_path / "s.toml"
    study_file.write_text(tiny_study_text(name="s", trials=1))
    study = load_study(study_file, get_plugins())
    old = f"sqlite:///{tmp_path / 'optuna.db'}"
    previous = optuna.create_study(study_name="cand-abc", storage=old)
    previous.add_trial(optuna.trial.create_trial(params={}, distributions={}, value=0.7))
    storage = open_storage(study, tmp_path)
    carried = optuna.load_study(study_name="cand-abc", storage=storage)
    assert [t.value for t in carried.trials] == [0.7]
    assert (tmp_path / "optuna.journal").exists()
    again = open_storage(study, tmp_path)  # copied once: a second open does not double it
    assert len(optuna.load_study(study_name="cand-abc", storage=again).trials) == 1


@pytest.mark.run_machinery
@pytest.mark.filterwarnings("ignore:Heartbeat of storage")
def test_a_trial_is_retried_when_its_heartbeat_stops_not_before(tmp_path):
    """Dead workers are found by the age of their last beat in the storage (any machine), not by a
    process id."""
    import time as clock

    from optuna.trial import TrialState

    from harness.search.engine import _retry_cut_off, queue_again
    from harness.results.optuna_storage import HEARTBEAT_ATTR, open_storage

    storage = open_storage(f"journal:{tmp_path / 's.journal'}", tmp_path, heartbeat_interval=1, grace_period=5,
                           on_stale=queue_again)
    study = optuna.create_study(study_name="beats", storage=storage)
    alive, silent, never_beat = (study.ask({"x": optuna.distributions.FloatDistribution(0, 1)}) for _ in range(3))
    storage.record_heartbeat(alive._trial_id)
    storage.set_trial_system_attr(silent._trial_id, HEARTBEAT_ATTR, clock.time() - 6)
    _retry_cut_off(study)
    states = [t.state for t in study.get_trials()]
    assert states == [TrialState.RUNNING, TrialState.FAIL, TrialState.RUNNING, TrialState.WAITING], states
    assert study.get_trials()[3].user_attrs["retry_of"] == silent.number
    assert study.get_trials()[3].system_attrs["fixed_params"] == silent.params
    # a worker that died before its first beat is judged by its start time
    storage.record_heartbeat(alive._trial_id)
    clock.sleep(5.5)
    storage.record_heartbeat(alive._trial_id)
    _retry_cut_off(study)
    states = [t.state for t in study.get_trials()]
    assert states[0] == TrialState.RUNNING and states[2] == TrialState.FAIL, states
    assert [t.user_attrs.get("retry_of") for t in study.get_trials()[4:]] == [never_beat.number]
