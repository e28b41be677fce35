"""keras-tuner behind the same study file and folds: the same records, the same leaderboard."""

from __future__ import annotations

import json

import pandas as pd
import pytest

from harness import HarnessError
from harness.cli import main
from harness.config.study import load_study
from harness.plugins import get_plugins
from harness.results.records import read_records
from harness.config.space import parse_dimension
from harness.search.tuner import hyperparameters, sampled_values

from conftest import tiny_study_text

CNN = 'filters = [4, 4, 4, 4, 4]\nbn_momentum = 0.5\nspace.dense = { choices = [[8], [16, 8]] }'


def study_file(tmp_path, name: str, search: str, extra: str = CNN):
    text = tiny_study_text(name=name, trials=2, extra=extra).replace("[search]\n", "[search]\n" + search + "\n")
    path = tmp_path / f"{name}.toml"
    path.write_text(text)
    return path


def run(path, tmp_path) -> pd.DataFrame:
    assert main(["run", str(path), "--results", str(tmp_path / "r")]) == 0
    return pd.read_csv(tmp_path / "r" / path.stem / "leaderboard.csv")


def test_bayesian_search_writes_the_leaderboard_optuna_would(tmp_path):
    tuned = run(study_file(tmp_path, "kt", 'engine = "keras_tuner"\noracle = "bayesian"'), tmp_path)
    plain = run(study_file(tmp_path, "op", ""), tmp_path)
    assert list(tuned.columns) == list(plain.columns)
    assert tuned.loc[0, "complete"] == 2 and tuned.loc[0, "folds"] == 2
    records = read_records(tmp_path / "r" / "kt" / "records.jsonl")
    assert len(records) == 4 and sorted({r.trial for r in records}) == [0, 1]
    for r in records:
        assert set(r.tuned) == {"learning_rate", "dense"} and isinstance(r.tuned["dense"], list)
    # the folds are the study's, shared by both engines
    assert (tmp_path / "r" / "kt" / "folds.csv").read_text() == (tmp_path / "r" / "op" / "folds.csv").read_text()
    # a rerun resumes the tuner's state: nothing left to do, every record kept once
    run(study_file(tmp_path, "kt", 'engine = "keras_tuner"\noracle = "bayesian"'), tmp_path)
    assert len(read_records(tmp_path / "r" / "kt" / "records.jsonl")) == 4
    # its records file is its results: `harness leaderboard` does not rewrite it from the Optuna storage
    assert main(["leaderboard", str(tmp_path / "r" / "kt")]) == 0
    assert len(read_records(tmp_path / "r" / "kt" / "records.jsonl")) == 4


def test_hyperband_sets_each_trials_epochs(tmp_path):
    board = run(study_file(tmp_path, "hb", 'engine = "keras_tuner"\noracle = "hyperband"'), tmp_path)
    records = read_records(tmp_path / "r" / "hb" / "records.jsonl")
    assert records and all(1 <= r.params["epochs"] <= 2 and r.tuned["epochs"] == r.params["epochs"] for r in records)
    assert json.loads(board.loc[0, "best_params"])["epochs"] >= 1


@pytest.mark.parametrize(
    "search, message",
    [
        ('oracle = "hyperband"', r"search\.oracle: is keras_tuner's setting"),
        ('engine = "keras_tuner"\nsampler = "tpe"', r"search\.sampler: is Optuna's setting"),
        ('engine = "keras_tuner"\noracle = "hyperbnd"', r"search\.oracle: unknown value \"hyperbnd\"\. Did you mean 'hyperband'\?"),
        ('engine = "kerastuner"', r"search\.engine: unknown value \"kerastuner\"\. Did you mean 'keras_tuner'\?"),
    ],
)
def test_engine_settings_are_checked(tmp_path, search, message):
    with pytest.raises(HarnessError, match=message):
        load_study(study_file(tmp_path, "bad", search), get_plugins())


def test_hyperband_refuses_a_tuned_epoch_count(tmp_path):
    path = study_file(tmp_path, "bad", 'engine = "keras_tuner"\noracle = "hyperband"', CNN + "\nspace.epochs = { low = 1, high = 3 }")
    with pytest.raises(HarnessError, match="Hyperband oracle sets each trial's epochs"):
        load_study(path, get_plugins())


def test_search_space_translates_to_keras_tuner_and_back():
    space = {
        "head": parse_dimension("head", {"choices": [[600], [1024, 600]]}, "x"),
        "optimizer": parse_dimension("optimizer", {"choices": ["adam", "sgd"]}, "x"),
        "batch_size": parse_dimension("batch_size", {"low": 8, "high": 64, "step": 8}, "x"),
        "learning_rate": parse_dimension("learning_rate", {"low": 1e-4, "high": 1e-2, "log": True}, "x"),
    }
    hp = hyperparameters(space)
    kinds = {p.name: type(p).__name__ for p in hp.space}
    assert kinds == {"head": "Choice", "optimizer": "Choice", "batch_size": "Int", "learning_rate": "Float"}
    values = {"head": "[1024, 600]", "optimizer": "sgd", "batch_size": 16, "learning_rate": 1e-3, "tuner/epochs": 4}
    assert sampled_values(space, values) == {
        "head": [1024, 600], "optimizer": "sgd", "batch_size": 16, "learning_rate": 1e-3, "epochs": 4,
    }


@pytest.mark.run_machinery
def test_a_candidate_failing_under_keras_tuner_is_marked_and_the_others_ranked(tmp_path, capsys):
    path = study_file(tmp_path, "ktfail", 'engine = "keras_tuner"\noracle = "random"')
    path.write_text(path.read_text() + '\n[[candidates]]\nname = "small"\nmodel = "mobilenetv2"\nweights = "none"\n')
    assert main(["run", str(path), "--results", str(tmp_path / "r")]) == 2
    assert "1 of 2 candidate(s) failed" in " ".join(capsys.readouterr().err.split())
    board = pd.read_csv(tmp_path / "r" / "ktfail" / "leaderboard.csv").set_index("candidate")
    assert board.loc["cnn5", "status"] == "ok" and board.loc["cnn5", "rank"] == 1
    assert board.loc["small", "status"] == "failed" and "at least 32×32" in board.loc["small", "error"]
