"""[train] tensorboard = true: each fold's epochs as TensorBoard event files, read back with
TensorBoard's own reader; the setting is checked like any other and leaves search ids alone."""

from __future__ import annotations

from pathlib import Path

import pytest

from harness.cli import main
from harness.config.study import load_study
from harness.errors import HarnessError
from harness.plugins import get_plugins
from harness.results.records import read_records
from harness.search.ids import search_id

from conftest import tiny_study_text


def _study(tmp_path: Path, train_extra: str, name: str = "tb") -> Path:
    text = tiny_study_text(name=name, trials=1).replace("batch_size = 8\n", f"batch_size = 8\n{train_extra}\n")
    path = tmp_path / f"{name}.toml"
    path.write_text(text)
    return path


def test_tensorboard_is_a_checked_bool_and_leaves_search_ids_alone(tmp_path):
    plugins = get_plugins()
    with pytest.raises(HarnessError, match=r"train\.tensorboard: expected true or false, got \"yes\"") as err:
        load_study(_study(tmp_path, 'tensorboard = "yes"'), plugins)
    assert "\n" not in str(err.value)
    plain = load_study(_study(tmp_path, "", name="plain"), plugins)
    logged = load_study(_study(tmp_path, "tensorboard = true", name="plain"), plugins)
    assert logged.train.tensorboard and not plain.train.tensorboard
    assert [search_id(logged, c) for c in logged.candidates] == [search_id(plain, c) for c in plain.candidates]


def test_each_folds_epochs_are_event_files_tensorboard_reads(tmp_path, monkeypatch):
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    monkeypatch.setenv("HARNESS_BLOCK_PLUGINS", "html-report")  # its page is checked elsewhere

    assert main(["run", str(_study(tmp_path, "tensorboard = true")), "--results", str(tmp_path / "r")]) == 0
    records = read_records(tmp_path / "r" / "tb" / "records.jsonl")
    assert len(records) == 2  # one trial, two folds
    for record in records:
        logdir = tmp_path / "r" / "tb" / "tensorboard" / record.candidate / f"trial_{record.trial}" / f"fold_{record.fold}"
        events = EventAccumulator(str(logdir))
        events.Reload()
        expected = {k for k, v in record.history.items() if k != "phase" and v[0] is not None}
        assert expected >= {"loss", "accuracy", "learning_rate"}
        assert set(events.Tags()["scalars"]) == expected
        for tag in expected:
            scalars = events.Scalars(tag)
            assert [s.step for s in scalars] == list(range(record.epochs_run))
            assert [s.value for s in scalars] == pytest.approx(record.history[tag], rel=1e-6)
