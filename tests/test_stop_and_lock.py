"""The stop token a run is given, and the lock a run holds on its results folder."""

from __future__ import annotations

import signal
import subprocess
import sys
import textwrap

import pytest

from harness.core.stop import StopToken
from harness.errors import HarnessError
from harness.workflows.lock import LOCK_FILE, run_lock


def test_a_stop_token_remembers_the_signal_and_raises_only_once_asked():
    stop = StopToken()
    assert not stop.requested and stop.signum == signal.SIGINT
    stop.raise_if_requested()  # nothing asked: no exception
    stop.request(signal.SIGTERM)
    assert stop.requested and stop.signum == signal.SIGTERM
    with pytest.raises(KeyboardInterrupt):
        stop.raise_if_requested()
    stop.clear()
    assert not stop.requested


def test_two_tokens_are_independent_and_no_module_holds_one():
    from harness.search import engine

    mine = StopToken()
    mine.request()
    assert not StopToken().requested
    assert not any(isinstance(v, StopToken) for v in vars(engine).values())


def test_a_stop_request_ends_a_trial_before_its_next_fold(monkeypatch):
    """The fold loop checks the token it is given (not a module global) before training a fold."""
    from harness.search import trial as trial_module

    trained = []
    monkeypatch.setattr(trial_module, "fit_fold", lambda *a, **k: trained.append(1))

    class Records:
        def get(self, *key):
            return None

    stop = StopToken()
    stop.request()
    context = trial_module.TrialContext.__new__(trial_module.TrialContext)
    context.records, context.search, context.config, context.stop = Records(), "s", "c", stop
    with pytest.raises(KeyboardInterrupt):
        trial_module.fold_record(context, 0, 0)
    assert trained == []


def test_a_second_run_on_a_held_results_folder_is_refused_naming_the_holder(tmp_path):
    holder = textwrap.dedent(f"""
        import sys, time
        from pathlib import Path
        from harness.workflows.lock import run_lock
        with run_lock(Path({str(tmp_path)!r})):
            print("held", flush=True)
            sys.stdin.readline()
    """)
    proc = subprocess.Popen([sys.executable, "-c", holder], stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True)
    try:
        assert proc.stdout.readline().strip() == "held"
        with pytest.raises(HarnessError, match=rf"in use by another `harness run` \(pid {proc.pid} on "):
            with run_lock(tmp_path):
                pass
    finally:
        proc.communicate("\n", timeout=30)
    with run_lock(tmp_path):  # the holder ended: the folder is free again
        assert (tmp_path / LOCK_FILE).read_text().startswith("pid ")


def test_an_error_inside_the_locked_block_is_not_taken_for_a_lock_fault(tmp_path):
    with pytest.raises(FileNotFoundError):
        with run_lock(tmp_path):
            open(tmp_path / "missing" / "file")


def test_one_model_keeper_serves_every_fold_of_a_search_process(tmp_path, monkeypatch):
    """run_search makes one ModelKeeper and hands it to every fit_fold it runs (both trials, all folds)."""
    import numpy as np

    from conftest import tiny_study_text
    from harness.cli import main
    from harness.search import trial as trial_module
    from harness.training.keeper import ModelKeeper
    from harness.training.train import FoldResult

    keepers = []

    def fit_fold(spec, dataset, image_size, params, train, train_idx, val_idx, seed, on_epoch=None, cache=None,
                 keeper=None, **_):
        keepers.append(keeper)
        return FoldResult(np.full((len(val_idx), len(dataset.classes)), 1 / len(dataset.classes)), 0.01, 1)

    monkeypatch.setattr(trial_module, "fit_fold", fit_fold)
    study = tmp_path / "tiny.toml"
    study.write_text(tiny_study_text(trials=2))
    assert main(["run", str(study), "--results", str(tmp_path / "r")]) == 0
    assert len(keepers) == 4 and isinstance(keepers[0], ModelKeeper)
    assert all(k is keepers[0] for k in keepers)
