"""The boundary cache: fine-tuning the top part on cached boundary tensors gives the predictions
of end-to-end fine-tuning, for a sequential, an inverted-residual and a residual cut (which moves
down to its block's input), and falls back to end to end, saying why, where it cannot gain."""

from __future__ import annotations

import json
import logging
from functools import partial
from pathlib import Path

import keras
import numpy as np
import pytest
from keras import layers

from harness.training.boundary import BUDGET_ENV, boundary_cache_for, crossing_tensors, parse_budget, single_tensor_cut
from harness.config.study import DatasetConfig, FineTune, TrainConfig
from harness.data.dataset import load_dataset
from harness.training.features import FeatureCache
from harness.plugins import get_plugins
from harness.specs import BuildContext, DatasetContext, ModelSpec
from harness.training.train import fit_fold

SIZE = (32, 32)
PARAMS = {"head": [8], "dropout": 0.0, "pooling": "avg"}


def conv(x, filters, name, kernel=3, stride=1, batchnorm=False, activation="relu"):
    x = layers.Conv2D(filters, kernel, stride, padding="same", use_bias=not batchnorm, name=f"{name}_conv")(x)
    if batchnorm:
        x = layers.BatchNormalization(name=f"{name}_bn")(x)
    return layers.Activation(activation, name=f"{name}_act")(x) if activation else x


def vgg_like(x):
    """Two blocks of convolutions and max pooling, as VGG16's; fine-tuned: the last block."""
    for block, filters in ((1, 8), (2, 12)):
        for i in (1, 2):
            x = conv(x, filters, f"block{block}_{i}")
        x = layers.MaxPooling2D(name=f"block{block}_pool")(x)
    return x


def inverted_residual_like(x):
    """A stem, MobileNetV2's inverted-residual block with its Add, and a 1×1 top convolution (the
    sports study fine-tunes MobileNetV2's last 3 layers: the top's conv, BN, ReLU)."""
    x = conv(x, 8, "stem", stride=2, batchnorm=True)
    block_input = x
    x = conv(x, 24, "expand", kernel=1, batchnorm=True)
    x = layers.DepthwiseConv2D(3, padding="same", use_bias=False, name="depthwise")(x)
    x = layers.BatchNormalization(name="depthwise_bn")(x)
    x = layers.ReLU(6.0, name="depthwise_relu")(x)
    x = conv(x, 8, "project", kernel=1, batchnorm=True, activation=None)
    x = layers.Add(name="block_add")([x, block_input])
    return conv(x, 16, "top", kernel=1, batchnorm=True)


def residual_like(x):
    """A stem, then a ResNet basic block: conv-BN-ReLU-conv-BN plus a projection shortcut, Add, ReLU."""
    x = conv(x, 8, "stem_1", batchnorm=True)
    x = conv(x, 8, "stem", stride=2, batchnorm=True)
    shortcut = layers.Conv2D(12, 1, name="shortcut_conv")(x)
    shortcut = layers.BatchNormalization(name="shortcut_bn")(shortcut)
    x = conv(x, 12, "branch_1", batchnorm=True)
    x = conv(x, 12, "branch_2", batchnorm=True, activation=None)
    x = layers.Add(name="block_add")([x, shortcut])
    return layers.Activation("relu", name="block_out")(x)


def tiny_application(body, include_top=False, weights=None, input_shape=None):
    """A ``keras.applications``-style constructor: ``weights`` None (random) or a weights file."""
    pixels = keras.Input(shape=input_shape, name="pixels")
    base = keras.Model(pixels, body(pixels), name=body.__name__)
    if weights is not None:
        base.load_weights(weights)
    return base


def tiny_spec(body) -> ModelSpec:
    def build(context: BuildContext):
        from harness.toolkit.backbones import build_pretrained

        return build_pretrained(context, partial(tiny_application, body), name=body.__name__, preprocessing="tf")

    return ModelSpec(name=body.__name__, build=build, image_size=SIZE, params=PARAMS)


def layer_index(body, name: str) -> int:
    base = tiny_application(body, input_shape=(*SIZE, 3))
    return [layer.name for layer in base.layers].index(name)


@pytest.fixture(scope="module")
def dataset(tmp_path_factory):
    tmp = tmp_path_factory.mktemp("boundary_data")
    params = {"classes": 3, "images_per_class": 10, "views": 1, "locations": 0, "noise": 0.08, "seed": 0}
    return load_dataset(DatasetConfig("synthetic", SIZE, params), get_plugins(), DatasetContext(tmp, tmp / "c", 0))


def fit(dataset, spec, train, cache, seed=3):
    order = np.random.default_rng(0).permutation(len(dataset.labels))
    train_idx, val_idx = np.sort(order[:20]), np.sort(order[20:])
    return fit_fold(spec, dataset, SIZE, dict(PARAMS), train, train_idx, val_idx, seed, cache=cache)


def end_to_end_and_cached(dataset, spec, train, tmp_path, monkeypatch, caplog):
    """The same fold fine-tuned end to end (boundary cache over budget) and from the boundary cache."""
    monkeypatch.setenv(BUDGET_ENV, "0")
    with caplog.at_level(logging.WARNING, logger="harness.training.boundary"):
        end_to_end = fit(dataset, spec, train, FeatureCache(tmp_path / "end_to_end"))
    assert "over its budget" in caplog.text
    assert not (tmp_path / "end_to_end" / "boundary").exists()
    monkeypatch.delenv(BUDGET_ENV)
    cache = FeatureCache(tmp_path / "cached")
    cached = fit(dataset, spec, train, cache)
    assert boundary_cache_for(cache).computed == len(dataset.labels)  # the top part trained on the boundary cache
    return end_to_end, cached, cache


def weights_file(body, tmp_path: Path) -> str:
    """A weights file for the tiny base: its weights then count as pretrained (BatchNorm frozen)."""
    keras.utils.set_random_seed(11)
    path = tmp_path / f"{body.__name__}.weights.h5"
    tiny_application(body, input_shape=(*SIZE, 3)).save_weights(path)
    return str(path)


@pytest.mark.parametrize(
    ("body", "pretrained", "fine_tune"),
    [
        (vgg_like, False, {"last": 3}),  # block2's second conv and its pool: a sequential cut
        (inverted_residual_like, True, {"last": 3}),  # after the block's Add; BatchNorm in inference mode
        (residual_like, False, {"from_layer": "branch_2_conv"}),  # inside the block: moves to its input
    ],
    ids=["sequential", "inverted-residual-pretrained", "residual-moved"],
)
def test_fine_tuning_from_the_boundary_cache_gives_the_end_to_end_predictions(
    dataset, tmp_path, monkeypatch, caplog, body, pretrained, fine_tune
):
    if "from_layer" in fine_tune:
        fine_tune = {"from_layer": layer_index(body, fine_tune["from_layer"])}
    weights = weights_file(body, tmp_path) if pretrained else "none"
    train = TrainConfig(
        epochs=1, batch_size=6, weights=weights, learning_rate=1e-2, fine_tune=FineTune(epochs=2, learning_rate=1e-2, **fine_tune)
    )
    spec = tiny_spec(body)
    end_to_end, cached, cache = end_to_end_and_cached(dataset, spec, train, tmp_path, monkeypatch, caplog)
    assert cached.epochs_run == end_to_end.epochs_run == 3
    np.testing.assert_allclose(cached.probabilities, end_to_end.probabilities, atol=1e-5)
    assert not np.allclose(cached.probabilities, cached.probabilities.mean(axis=0), atol=1e-3)  # it learnt
    # the stored rows: .npy files that load without pickle, beside the list of their image ids
    [listing] = (tmp_path / "cached" / "boundary").glob("*/0/*.json")
    rows = np.load(listing.with_suffix(".npy"), mmap_mode="r", allow_pickle=False)
    assert rows.shape[0] == len(json.loads(listing.read_text())) == len(dataset.labels)
    # another fold (another seed) reuses them, and the model kept between folds starts each fold as built
    computed = boundary_cache_for(cache).computed
    other = fit(dataset, spec, train, cache, seed=4)
    assert boundary_cache_for(cache).computed == computed
    assert not np.allclose(other.probabilities, cached.probabilities, atol=1e-4)
    again = fit(dataset, spec, train, cache)
    np.testing.assert_allclose(again.probabilities, cached.probabilities, atol=1e-6)


def test_a_cut_inside_a_residual_block_moves_down_to_the_blocks_input():
    base = tiny_application(residual_like, input_shape=(*SIZE, 3))
    names = [layer.name for layer in base.layers]
    inside = names.index("branch_2_conv")
    assert len(crossing_tensors(base, inside)) == 2  # the branch and the shortcut's input
    cut = single_tensor_cut(base, inside)
    assert names[cut - 1] == "stem_act"  # the block's input is the one tensor crossing the moved cut
    assert crossing_tensors(base, cut)[0] is base.get_layer("stem_act").output


def test_over_budget_cut_runs_end_to_end_and_says_why(dataset, tmp_path, monkeypatch, caplog):
    train = TrainConfig(epochs=1, batch_size=8, weights="none", fine_tune=FineTune(epochs=1, last=3))
    monkeypatch.setenv(BUDGET_ENV, "1K")  # 30 rows of 8×8×8 float32 (2 KiB each) do not fit
    cache = FeatureCache(tmp_path / "cache")
    with caplog.at_level(logging.WARNING, logger="harness.training.boundary"):
        result = fit(dataset, tiny_spec(vgg_like), train, cache)
    assert result.epochs_run == 2
    assert "over its budget of 0 MiB" in caplog.text and "$HARNESS_BOUNDARY_CACHE_BUDGET" in caplog.text
    assert boundary_cache_for(cache).computed == 0 and not (tmp_path / "cache" / "boundary").exists()


def test_a_cut_too_low_to_gain_runs_end_to_end_and_says_why(dataset, tmp_path, caplog):
    # from the first convolution on: nothing but the input below the cut
    train = TrainConfig(epochs=1, batch_size=8, weights="none", fine_tune=FineTune(epochs=1, from_layer=1))
    cache = FeatureCache(tmp_path / "cache")
    with caplog.at_level(logging.WARNING, logger="harness.training.boundary"):
        fit(dataset, tiny_spec(vgg_like), train, cache)
    assert "too low to gain" in caplog.text
    assert boundary_cache_for(cache).computed == 0


def test_budget_is_a_share_of_free_disk_or_a_size():
    assert parse_budget("50%", 1000) == 500
    assert parse_budget("2G", 0) == 2 * 2**30
    assert parse_budget("500 MiB", 0) == 500 * 2**20
    assert parse_budget("0", 10) == 0
    with pytest.raises(ValueError, match="50%"):
        parse_budget("lots", 10)


def test_the_model_kept_between_folds_does_not_grow_with_augmentation(dataset, tmp_path):
    """Wrapping the kept model in augmentation layers each fold would add a node to it per fold."""
    from harness.toolkit.augment import Augment

    train = TrainConfig(epochs=1, batch_size=6, weights="none", augment=Augment(flip="horizontal"), views=1,
                        fine_tune=FineTune(epochs=1, learning_rate=1e-3, last=3))
    cache = FeatureCache(tmp_path / "cache")
    nodes = []
    for seed in (3, 4, 5):
        fit(dataset, tiny_spec(vgg_like), train, cache, seed=seed)
        nodes.append(len(cache.keeper.split.model._inbound_nodes))
    assert nodes[1] == nodes[2] == nodes[0], nodes


def test_a_keeper_passed_to_fit_fold_holds_the_kept_model_and_says_each_reason_once(dataset, tmp_path, caplog):
    """A worker's ModelKeeper, not the cache's, keeps the model between its folds (built once) and
    logs each reason for an end-to-end fine-tuning phase once; another keeper builds and says anew."""
    import dataclasses

    from harness.training.keeper import ModelKeeper

    spec = tiny_spec(vgg_like)
    builds = []
    counting = dataclasses.replace(spec, build=lambda context: builds.append(1) or spec.build(context))
    train = TrainConfig(epochs=1, batch_size=8, weights="none", boundary_cache=False, fine_tune=FineTune(epochs=1, last=3))
    cache = FeatureCache(tmp_path / "cache")
    order = np.random.default_rng(0).permutation(len(dataset.labels))
    train_idx, val_idx = np.sort(order[:20]), np.sort(order[20:])

    def fit_with(keeper, seed):
        with caplog.at_level(logging.WARNING, logger="harness.training.boundary"):
            return fit_fold(counting, dataset, SIZE, dict(PARAMS), train, train_idx, val_idx, seed, cache=cache,
                            keeper=keeper).probabilities

    worker = ModelKeeper()
    first = fit_with(worker, 3)
    fit_with(worker, 4)
    assert len(builds) == 1 and worker.split is not None and cache.keeper is None
    assert caplog.text.count("boundary_cache = false") == 1
    np.testing.assert_allclose(fit_with(worker, 3), first, atol=1e-6)
    other = ModelKeeper()
    np.testing.assert_allclose(fit_with(other, 3), first, atol=1e-6)
    assert len(builds) == 2 and other.split is not None
    assert caplog.text.count("boundary_cache = false") == 2


def test_fit_fold_without_a_keeper_keeps_the_model_on_its_cache_and_without_a_cache_keeps_none(dataset, tmp_path):
    spec = tiny_spec(vgg_like)
    train = TrainConfig(epochs=1, batch_size=8, weights="none")
    cache = FeatureCache(tmp_path / "cache")
    fit(dataset, spec, train, cache)
    kept = cache.keeper.split
    assert kept is not None
    fit(dataset, spec, train, cache, seed=4)
    assert cache.keeper.split is kept  # the next fold on this cache reuses it
    fit(dataset, spec, train, None)  # end to end: nothing kept, nothing reused
    fit(dataset, spec, train, cache)
    assert cache.keeper.split is not kept  # the session was cleared since: rebuilt
