"""The dataset, metric and reporter contracts (harness.testing) on every registered plugin of each
kind: a new plugin is tested by being registered. The model contract is tests/test_models_contract.py."""

from __future__ import annotations

import pytest
from fixtures import image_layouts as layouts

from harness.errors import HarnessError
from harness.plugins import get_plugins
from harness.specs import MetricSpec, ModelSpec
from harness.testing import datasets, metrics, models, reporters

PLUGINS = get_plugins()
#: Parameters the built-in datasets need on the fixture layouts (tests/fixtures/image_layouts.py).
FIXTURE_PARAMS = {"folder": {"root": "rocks"}, "sports": {"root": "sports15"}}
BUILT_IN = {spec.name for spec in PLUGINS.datasets if PLUGINS.source(PLUGINS.datasets.owner(spec.name)) == "built-in"}
#: Reporters that write files into the results folder (mlflow sends to its server: tests/test_mlflow.py).
REPORTERS = [impl.plugin_name for impl in PLUGINS.hook.on_study_end.get_hookimpls() if impl.plugin_name != "mlflow"]


@pytest.fixture(scope="module")
def data_root(tmp_path_factory):
    return layouts.all_layouts(tmp_path_factory.mktemp("data"))


@pytest.mark.parametrize("name", PLUGINS.datasets.names())
def test_dataset_contract(name, data_root, tmp_path):
    spec = PLUGINS.datasets.get(name)
    try:
        datasets.check_dataset(spec, data_root, tmp_path / "cache", **FIXTURE_PARAMS.get(name, {}))
    except HarnessError as exc:
        if name in BUILT_IN:  # every built-in dataset has a fixture layout: its failure is a real one
            raise
        # A third-party dataset installed in this environment needs its own data, which these
        # fixtures cannot guess; its package runs harness.testing.datasets.check_dataset on it.
        pytest.skip(f"third-party dataset '{name}' needs its own data (its tests run "
                    f"harness.testing.datasets.check_dataset): {exc}")


@pytest.mark.parametrize("name", PLUGINS.metrics.names())
def test_metric_contract(name):
    metrics.check_metric(PLUGINS.metrics.get(name))


@pytest.mark.parametrize("plugin_name", REPORTERS)
def test_reporter_contract(plugin_name, tmp_path):
    written = reporters.check_reporter(PLUGINS.manager.get_plugin(plugin_name), tmp_path / "results")
    assert all(path.stat().st_size for path in written)


def test_the_checks_catch_a_broken_plugin(tmp_path):
    """Each contract fails a plugin that breaks it (the checks are not vacuous)."""
    from harness import DatasetSpec, Samples
    from harness.specs import REQUIRED

    import pandas as pd

    with pytest.raises(AssertionError, match="perfect should be higher"):
        metrics.check_metric(MetricSpec("inverted", lambda y, p: -float((p.argmax(1) == y).mean())))
    with pytest.raises(AssertionError, match="expected a float"):
        metrics.check_metric(MetricSpec("text", lambda y, p: "1.0"))
    with pytest.raises(AssertionError, match="default of 'size' is a tuple"):
        datasets.check_spec(DatasetSpec("bad", lambda p, c: None, {"size": (1, 2), "root": REQUIRED}))
    no_label = Samples(pd.DataFrame({"path": ["x"]}))
    with pytest.raises(AssertionError, match="no 'label' column"):
        datasets.check_samples(no_label)
    wrong_size = Samples(pd.DataFrame({"label": ["a", "b"]}), pixels=lambda t, s: __import__("numpy").zeros((2, 4, 4, 3), "uint8"))
    with pytest.raises(AssertionError, match="pixels gave shape"):
        datasets.check_samples(wrong_size)
    missing = Samples(pd.DataFrame({"label": ["a"], "path": [str(tmp_path / "gone.jpg")]}))
    with pytest.raises(AssertionError, match="paths do not exist"):
        datasets.check_samples(missing)

    def build(context):
        return None

    with pytest.raises(AssertionError, match=r"tunes \['width'\], which are not among its params"):
        models.check_spec(ModelSpec("m", build, params={"dropout": 0.0}, space={"width": [8, 16]}))
    with pytest.raises(HarnessError, match="missing key 'high'"):
        models.check_spec(ModelSpec("m", build, params={"dropout": 0.0}, space={"dropout": {"low": 0.0}}))
    with pytest.raises(AssertionError, match="required params"):
        models.check_spec(ModelSpec("m", build, params={"dropout": REQUIRED}))

    class Silent:
        @staticmethod
        def on_study_end(run, leaderboard):
            pass

    with pytest.raises(AssertionError, match="wrote nothing"):
        reporters.check_reporter(Silent, tmp_path / "silent")
