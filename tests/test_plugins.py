"""Plugin discovery: built-ins, a third-party package through a (faked) entry point, blocking."""

from __future__ import annotations

import sys
import textwrap
from pathlib import Path

import pandas as pd
import pytest

from harness import HarnessError, hookimpl
from harness.cli import main
from harness.plugins import get_plugins

from conftest import tiny_study_text

PLUGIN_SOURCE = '''
from harness import ModelSpec, hookimpl


def build(context):
    import keras

    inputs = keras.Input(shape=(*context.image_size, 3), name="image")
    x = keras.layers.Rescaling(1 / 255)(inputs)
    x = keras.layers.GlobalAveragePooling2D()(x)
    x = keras.layers.Dense(context.params["units"], activation="relu")(x)
    outputs = keras.layers.Dense(context.num_classes, activation="softmax")(x)
    return keras.Model(inputs, outputs)


@hookimpl
def register_models():
    return [ModelSpec(name="tinynet", build=build, image_size=(16, 16), params={"units": 8})]
'''


@pytest.fixture
def third_party_plugin(tmp_path, monkeypatch) -> Path:
    """An installed distribution 'harness-tinynet' with an entry point in group 'harness'."""
    site = tmp_path / "site"
    site.mkdir()
    (site / "harness_tinynet.py").write_text(PLUGIN_SOURCE)
    dist = site / "harness_tinynet-0.3.1.dist-info"
    dist.mkdir()
    (dist / "METADATA").write_text("Metadata-Version: 2.1\nName: harness-tinynet\nVersion: 0.3.1\n")
    (dist / "entry_points.txt").write_text("[harness]\ntinynet = harness_tinynet\n")
    monkeypatch.syspath_prepend(str(site))
    yield site
    sys.modules.pop("harness_tinynet", None)


def test_builtins_are_registered():
    plugins = get_plugins()
    assert "synthetic" in plugins.datasets and "cnn5" in plugins.models
    assert plugins.source("cnn5") == "built-in"
    assert plugins.registrations("cnn5") == {"models": ["cnn5"]}


def test_entry_point_plugin_is_found_and_listed(third_party_plugin, capsys):
    plugins = get_plugins()
    assert "tinynet" in plugins.models
    assert plugins.models.owner("tinynet") == "tinynet"
    assert plugins.source("tinynet") == "harness-tinynet 0.3.1"
    assert main(["plugins"]) == 0
    out = capsys.readouterr().out
    assert "tinynet" in out and "harness-tinynet 0.3.1" in out


def test_autoload_can_be_switched_off(third_party_plugin, monkeypatch):
    monkeypatch.setenv("HARNESS_DISABLE_PLUGIN_AUTOLOAD", "1")
    plugins = get_plugins()
    assert "tinynet" not in plugins.models and "cnn5" in plugins.models


def test_single_plugins_can_be_blocked(third_party_plugin, monkeypatch):
    monkeypatch.setenv("HARNESS_BLOCK_PLUGINS", "tinynet, cnn5")
    plugins = get_plugins()
    assert "tinynet" not in plugins.models and "cnn5" not in plugins.models
    assert "synthetic" in plugins.datasets


def test_duplicate_model_from_a_plugin_names_both(monkeypatch):
    class Clash:
        @hookimpl
        def register_models(self):
            from harness import ModelSpec

            return [ModelSpec(name="cnn5", build=lambda ctx: None)]

    with pytest.raises(HarnessError) as err:
        get_plugins(extra=[Clash()])
    assert "'cnn5' is registered twice" in str(err.value) and "by plugin 'cnn5'" in str(err.value)


def test_broken_entry_point_is_a_clear_error(tmp_path, monkeypatch, capsys):
    site = tmp_path / "site"
    (site / "broken_plugin-1.0.dist-info").mkdir(parents=True)
    (site / "broken_plugin-1.0.dist-info" / "METADATA").write_text("Metadata-Version: 2.1\nName: broken-plugin\nVersion: 1.0\n")
    (site / "broken_plugin-1.0.dist-info" / "entry_points.txt").write_text("[harness]\nbroken = broken_plugin_missing\n")
    monkeypatch.syspath_prepend(str(site))
    assert main(["plugins"]) == 2
    err = capsys.readouterr().err
    assert "could not load plugin 'broken'" in err and "HARNESS_BLOCK_PLUGINS" in err and "Traceback" not in err


def test_a_study_uses_a_third_party_model_end_to_end(third_party_plugin, tmp_path):
    study = tmp_path / "third.toml"
    study.write_text(tiny_study_text(name="third", trials=1, model="tinynet", extra="units = 4"))
    assert main(["run", str(study), "--results", str(tmp_path / "results")]) == 0
    board = pd.read_csv(tmp_path / "results" / "third" / "leaderboard.csv")
    assert board.loc[0, "model"] == "tinynet" and board.loc[0, "complete"] == 1


def test_lifecycle_hooks_are_called(tiny_study, tmp_path):
    from harness.config.study import load_study
    from harness.workflows.run import run_study

    seen = {"folds": 0, "trials": [], "end": None}

    class Reporter:
        @hookimpl
        def on_fold_end(self, run, record):
            seen["folds"] += 1

        @hookimpl
        def on_trial_end(self, run, trial):
            seen["trials"].append((trial.candidate, trial.state, len(trial.records)))

        @hookimpl
        def on_study_end(self, run, leaderboard):
            seen["end"] = (run.results_dir, [row.candidate for row in leaderboard.rows])

    plugins = get_plugins(extra=[Reporter()])
    study = load_study(tiny_study, plugins, {"trials": 1})
    run_study(study, plugins, tmp_path / "results", tmp_path)
    assert seen["folds"] == 2
    assert seen["trials"] == [("cnn5", "complete", 2)]
    assert seen["end"] == (tmp_path / "results" / "tiny", ["cnn5"])
    assert (tmp_path / "results" / "tiny" / "report.md").exists()
