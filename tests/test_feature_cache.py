"""The frozen-backbone feature cache: same predictions as end to end, computed once, reused."""

from __future__ import annotations

import json
from dataclasses import replace
from pathlib import Path

import numpy as np
import pytest

from harness.toolkit.augment import Augment
from harness.config.study import DatasetConfig, EarlyStopping, FineTune, ReduceLR, TrainConfig
from harness.data.dataset import load_dataset
from harness.training.features import FeatureCache, backbone_key, split_model
from harness.plugins import get_plugins
from harness.specs import BuildContext, DatasetContext
from harness.training.train import fit_fold

SIZE = (32, 32)
PARAMS = {"head": [16], "dropout": 0.0, "pooling": "avg"}


@pytest.fixture(scope="module")
def plugins():
    return get_plugins()


def _dataset(plugins, tmp_path: Path, locations: int = 0):
    params = {"classes": 3, "images_per_class": 10, "views": 1, "locations": locations, "noise": 0.08, "seed": 0}
    config = DatasetConfig("synthetic", SIZE, params)
    return load_dataset(config, plugins, DatasetContext(tmp_path, tmp_path / "cache", 0))


def _split(n: int):
    order = np.random.default_rng(0).permutation(n)
    return np.sort(order[: n * 2 // 3]), np.sort(order[n * 2 // 3 :])


def _fit(plugins, dataset, train, cache, model="mobilenetv2", params=PARAMS, seed=3):
    train_idx, val_idx = _split(len(dataset.labels))
    return fit_fold(plugins.models.get(model), dataset, SIZE, dict(params), train, train_idx, val_idx, seed, cache=cache)


@pytest.mark.parametrize("extras", [{}, {"class_weight": "balanced", "label_smoothing": 0.1, "stopping": True}])
def test_cached_head_training_matches_end_to_end_frozen_training(plugins, tmp_path, extras):
    dataset = _dataset(plugins, tmp_path)
    extras = dict(extras)
    if extras.pop("stopping", False):
        # both paths must compute the same held-out logs to stop and lower the rate alike
        extras |= {"early_stopping": EarlyStopping(patience=1, validation_fraction=0.2),
                   "reduce_lr": ReduceLR(patience=1, factor=0.5)}
    # Several batches per epoch, the last one short: both paths take them in the same order. A rate
    # of 1e-2 let one step kill every ReLU of the head with PyTorch's initial draws (it learnt nothing).
    train = TrainConfig(epochs=4, batch_size=6, weights="none", learning_rate=1e-3, **extras)
    # VGG16 has no BatchNormalization: its random features still tell the images apart.
    params = {"head": [16], "dropout": 0.0, "pooling": "avg"}
    end_to_end = _fit(plugins, dataset, train, cache=None, model="vgg16", params=params)
    cache = FeatureCache(tmp_path / "cache")
    cached = _fit(plugins, dataset, train, cache=cache, model="vgg16", params=params)
    assert cache.computed == len(dataset.labels)
    assert cached.epochs_run == end_to_end.epochs_run
    np.testing.assert_allclose(cached.probabilities, end_to_end.probabilities, atol=1e-4)
    assert not np.allclose(cached.probabilities, cached.probabilities.mean(axis=0))  # it did learn something
    other_seed = _fit(plugins, dataset, train, cache=cache, model="vgg16", params=params, seed=4)
    assert not np.allclose(other_seed.probabilities, cached.probabilities, atol=1e-4)


def test_features_are_computed_once_and_reused_across_trials_and_processes(plugins, tmp_path):
    dataset = _dataset(plugins, tmp_path)
    train = TrainConfig(epochs=1, batch_size=8, weights="none")
    cache = FeatureCache(tmp_path / "cache")
    _fit(plugins, dataset, train, cache, seed=1)
    _fit(plugins, dataset, train, cache, params={**PARAMS, "head": [8]}, seed=2)  # another configuration
    assert cache.computed == len(dataset.labels) and cache.loaded == 0
    again = FeatureCache(tmp_path / "cache")  # a later run: read from disk
    _fit(plugins, dataset, train, again, seed=4)
    assert again.computed == 0 and again.loaded == len(dataset.labels)


def test_cache_turned_off_or_not_frozen_trains_end_to_end(plugins, tmp_path):
    dataset = _dataset(plugins, tmp_path)
    cache = FeatureCache(tmp_path / "cache")
    _fit(plugins, dataset, TrainConfig(epochs=1, batch_size=8, weights="none", feature_cache=False), cache)
    _fit(plugins, dataset, TrainConfig(epochs=1, batch_size=8, weights="none", freeze_base=False), cache)
    _fit(plugins, dataset, TrainConfig(epochs=1, batch_size=8, weights="none", augment=Augment(flip="horizontal")), cache)
    assert cache.computed == 0


def test_augmented_views_are_cached_per_view_and_give_the_same_result_warm(plugins, tmp_path):
    dataset = _dataset(plugins, tmp_path)
    train = TrainConfig(epochs=2, batch_size=8, weights="none", augment=Augment(flip="horizontal", rotation=0.1), views=2)
    cold_cache = FeatureCache(tmp_path / "cache")
    cold = _fit(plugins, dataset, train, cold_cache)
    n_train = len(_split(len(dataset.labels))[0])
    assert cold_cache.computed == len(dataset.labels) + 2 * n_train
    [listing] = (tmp_path / "cache" / "features").glob("*/2/*.json")  # one file of rows per computed batch
    assert len(json.loads(listing.read_text())) == np.load(listing.with_suffix(".npy")).shape[0] == n_train
    warm_cache = FeatureCache(tmp_path / "cache")
    warm = _fit(plugins, dataset, train, warm_cache)
    assert warm_cache.computed == 0
    np.testing.assert_allclose(warm.probabilities, cold.probabilities, atol=1e-6)


def test_fine_tuning_continues_after_a_cached_head_phase(plugins, tmp_path):
    dataset = _dataset(plugins, tmp_path)
    train = TrainConfig(epochs=1, batch_size=8, weights="none", fine_tune=FineTune(epochs=1, last=3))
    cache = FeatureCache(tmp_path / "cache")
    result = _fit(plugins, dataset, train, cache)
    assert cache.computed == len(dataset.labels) and result.epochs_run == 2


def test_location_input_joins_cached_features(plugins, tmp_path):
    dataset = _dataset(plugins, tmp_path, locations=3)
    params = {"head": [8], "dropout": 0.0, "pooling": "avg"}
    train = TrainConfig(epochs=1, batch_size=8, weights="none")
    size = (71, 71)
    train_idx, val_idx = _split(len(dataset.labels))
    spec = plugins.models.get("xception_location")
    cache = FeatureCache(tmp_path / "cache")
    result = fit_fold(spec, dataset, size, params, train, train_idx, val_idx, 0, cache=cache)
    assert result.probabilities.shape == (len(val_idx), 3) and cache.computed == len(dataset.labels)


def test_backbone_key_tracks_weights_and_size(plugins):
    spec = plugins.models.get("mobilenetv2")

    def key(size, scale=1.0):
        model = spec.build(BuildContext(3, size, dict(PARAMS), weights="none"))
        extractor, _ = split_model(model)
        if scale != 1.0:
            w = extractor.weights[-1]
            w.assign(np.asarray(w) * scale)
        return backbone_key(extractor, size)

    assert key(SIZE) == key(SIZE)  # random weights are drawn the same way every time
    assert key(SIZE) != key((48, 48))
    assert key(SIZE) != key(SIZE, scale=2.0)


def test_models_without_a_pool_layer_are_not_split(plugins):
    model = plugins.models.get("cnn5").build(
        BuildContext(3, SIZE, {"filters": [4] * 5, "dense": [8], "dropout": 0.0, "bn_momentum": 0.9})
    )
    assert split_model(model) is None


def test_a_kept_model_gives_each_fold_what_a_fresh_build_gives(plugins, tmp_path):
    """The split model is built once and kept between folds; a fold's result depends on its seed only."""
    import dataclasses

    dataset = _dataset(plugins, tmp_path)
    spec = plugins.models.get("mobilenetv2")
    builds = []
    counting = dataclasses.replace(spec, build=lambda context: builds.append(1) or spec.build(context))
    params = {"head": [16], "dropout": 0.5, "pooling": "avg"}  # dropout: its seed is reset too
    train = TrainConfig(epochs=2, batch_size=8, weights="none", learning_rate=1e-2)
    cache = FeatureCache(tmp_path / "cache")
    train_idx, val_idx = _split(len(dataset.labels))

    def fit(seed, config=train):
        return fit_fold(counting, dataset, SIZE, dict(params), config, train_idx, val_idx, seed, cache=cache).probabilities

    first = fit(7)
    fit(9, TrainConfig(epochs=1, batch_size=8, weights="none", learning_rate=3e-3, optimizer="sgd"))
    other = fit(8)
    fit(10, TrainConfig(epochs=1, batch_size=8, weights="none", learning_rate=3e-3))  # same optimizer: reset, not recompiled
    again = fit(7)
    assert len(builds) == 1, "the model was rebuilt although only the head changes"
    np.testing.assert_array_equal(first, again)
    assert not np.array_equal(first, other)
    cache.keeper.forget()
    assert np.array_equal(fit(7), first) and len(builds) == 2


def test_stored_rows_serve_any_later_list_of_images_and_lost_files_are_recomputed(tmp_path):
    import keras

    from harness.training.features import content_ids

    images = np.random.default_rng(0).integers(0, 255, (8, 4, 4, 3), dtype="uint8")
    ids = content_ids(images)
    extractor = keras.Sequential([keras.Input((4, 4, 3)), keras.layers.GlobalAveragePooling2D()])
    expected = images.astype("float32").mean(axis=(1, 2))
    first = FeatureCache(tmp_path)
    np.testing.assert_allclose(first.features(extractor, "k", images[:6], ids[:6]), expected[:6], rtol=1e-6)
    later = FeatureCache(tmp_path)  # another run: two rows stored, one new
    rows = [5, 2, 7]
    got = later.features(extractor, "k", images[rows], [ids[i] for i in rows])
    np.testing.assert_allclose(got, expected[rows], rtol=1e-6)
    assert (later.loaded, later.computed) == (2, 1)
    for stored in (tmp_path / "features" / "k" / "0").glob("*.npy"):
        stored.unlink()
    lost = FeatureCache(tmp_path)
    np.testing.assert_allclose(lost.features(extractor, "k", images[:3], ids[:3]), expected[:3], rtol=1e-6)
    assert (lost.loaded, lost.computed) == (0, 3)


def test_with_tensorflow_heads_train_in_one_traced_loop_not_fit(plugins, tmp_path, monkeypatch):
    import keras

    if keras.backend.backend() != "tensorflow":
        pytest.skip("the traced loop exists only under the TensorFlow backend (other backends train heads with "
                    "fit, run by test_backends.py::test_model_tests_pass_on)")
    fits = []
    original = keras.Model.fit
    monkeypatch.setattr(keras.Model, "fit", lambda self, *a, **k: fits.append(self) or original(self, *a, **k))
    dataset = _dataset(plugins, tmp_path)
    train = TrainConfig(epochs=2, batch_size=4, weights="none")
    cache = FeatureCache(tmp_path / "cache")
    train_idx, val_idx = _split(len(dataset.labels))
    spec = plugins.models.get("mobilenetv2")
    for seed, rows in ((1, train_idx), (2, train_idx[:-3])):  # folds of different sizes
        fit_fold(spec, dataset, SIZE, dict(PARAMS), train, rows, val_idx, seed, cache=cache)
    assert fits == []
    loops = cache.keeper.split.loops
    assert {name: f.experimental_get_tracing_count() for name, f in loops._traced.items()} == {"train": 1}


def test_feature_pass_matches_predict_and_with_tensorflow_is_traced_once_not_predict(monkeypatch):
    import keras

    from harness.training.train import forward_pass

    images = np.random.default_rng(0).integers(0, 255, (11, 8, 8, 3), dtype="uint8")
    keras.utils.set_random_seed(0)
    extractor = keras.Sequential([
        keras.Input((8, 8, 3)), keras.layers.Rescaling(1 / 255), keras.layers.Conv2D(4, 3, activation="relu"),
        keras.layers.BatchNormalization(), keras.layers.Dropout(0.5), keras.layers.GlobalAveragePooling2D(),
    ])
    expected = extractor.predict(images, batch_size=4, verbose=0)
    predicts, original = [], keras.Model.predict
    monkeypatch.setattr(keras.Model, "predict", lambda self, *a, **k: predicts.append(self) or original(self, *a, **k))
    for rows, batch in ((11, 4), (5, 4), (11, 64)):  # a short last batch, fewer rows, one batch
        np.testing.assert_allclose(forward_pass(extractor, images[:rows], batch), expected[:rows], rtol=1e-5, atol=1e-7)
    # float rows too (augmented views are float32 images)
    np.testing.assert_allclose(forward_pass(extractor, images.astype("float32"), 4), expected, rtol=1e-5, atol=1e-7)
    if keras.backend.backend() == "tensorflow":
        from harness.training.loops import forward_passes

        assert predicts == []
        assert [f.experimental_get_tracing_count() for f in forward_passes(extractor).values()] == [1, 1]
        import gc
        import weakref

        gone = weakref.ref(extractor)
        del extractor
        gc.collect()
        assert gone() is None, "the traced pass keeps its model alive"
    else:
        assert len(predicts) == 4


def test_views_of_another_augmentation_are_never_reused(plugins, tmp_path):
    """Stored views belong to the augmentation that made them: a changed [train.augment] computes its own."""
    dataset = _dataset(plugins, tmp_path)
    first = TrainConfig(epochs=1, batch_size=8, weights="none", augment=Augment(flip="horizontal"), views=1)
    _fit(plugins, dataset, first, FeatureCache(tmp_path / "cache"))
    other = FeatureCache(tmp_path / "cache")
    _fit(plugins, dataset, replace(first, augment=Augment(rotation=0.2)), other)
    assert other.computed == len(_split(len(dataset.labels))[0])  # the new views; the plain features are reused
    again = FeatureCache(tmp_path / "cache")
    _fit(plugins, dataset, first, again)
    assert again.computed == 0
