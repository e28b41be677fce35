"""Contract checks for plugin authors: run them on your own plugin, as the harness runs them on its own.

One module per kind of plugin, each a set of plain functions that raise ``AssertionError`` (or
``harness.HarnessError``) naming what is wrong, usable from pytest or any test runner:

- ``harness.testing.datasets``: ``check_spec(spec)`` (typed parameter defaults),
  ``check_samples(samples)`` (a label per row; paths that exist or uint8 (n, h, w, 3) pixels),
  ``check_dataset(spec, data_root, cache_dir, **params)`` (both, on a real ``load``).
- ``harness.testing.models``: ``check_spec(spec)`` (defaults, a space that parses and tunes only
  the model's params), ``check_model(spec, folder=None, train_step=True)`` (builds with random
  weights at 32 px or the smallest size it accepts, declared inputs, softmax over the classes, one
  training step, and a .keras save/load when given a folder); and the parts, for your own tests.
- ``harness.testing.metrics``: ``check_metric(spec)`` (a float for perfect and random
  predictions, ordered as ``greater_is_better`` says).
- ``harness.testing.reporters``: ``check_reporter(plugin, results_dir)`` (``on_study_end`` on a
  tiny finished study writes its files); ``tiny_study(results_dir)`` gives that study.

A third-party plugin's test file, complete::

    import pytest
    from harness.plugins import get_plugins
    from harness.testing import datasets, metrics, models, reporters
    import my_plugin

    PLUGINS = get_plugins(extra=[my_plugin])  # or installed through the "harness" entry point

    @pytest.mark.parametrize("name", ["my-model"])
    def test_model(name, tmp_path):
        models.check_model(PLUGINS.models.get(name), folder=tmp_path)

    def test_dataset_metric_and_reporter(tmp_path):
        datasets.check_dataset(PLUGINS.datasets.get("my-data"), tmp_path / "data", tmp_path / "cache", root="x")
        metrics.check_metric(PLUGINS.metrics.get("my-metric"))
        reporters.check_reporter(my_plugin, tmp_path / "results")

Nothing in harness imports this package at run time: it is test support (it imports the training
code to prepare a model as the core does), at the top of the import contract's layers.
"""
