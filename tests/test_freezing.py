"""Freezing rules freeze and unfreeze exactly the layers they name; a pretrained base's BatchNorm
stays in inference mode, a base trained from random weights trains its BatchNorm."""

from __future__ import annotations

import keras
import numpy as np
import pytest

from harness import BuildContext, HarnessError
from harness.toolkit.backbones import find_backbone, set_base_trainable
from harness.config.study import FineTune, TrainConfig
from harness.plugins import get_plugins
from harness.training.train import compile_model, prepare_model

PLUGINS = get_plugins()


def built(name: str, size: int = 32, train: TrainConfig | None = None):
    spec = PLUGINS.models.get(name)
    context = BuildContext(3, (size, size), dict(spec.params), weights="none")
    return prepare_model(spec, context, train or TrainConfig(weights="none"))


def is_bn(layer) -> bool:
    return isinstance(layer, keras.layers.BatchNormalization)


@pytest.fixture(autouse=True)
def _fresh_keras():
    keras.backend.clear_session()
    yield
    keras.backend.clear_session()


def test_phase_one_freezes_the_whole_backbone_and_only_it():
    model, base = built("resnet50")
    assert base is find_backbone(model) and base.name == "backbone"
    assert base.trainable_weights == []
    in_base = {id(w) for w in base.weights}
    head = model.trainable_weights
    assert head and not any(id(w) in in_base for w in head)


def test_resnet50_from_layer_120_unfreezes_layers_120_on_but_batchnorm():
    model, base = built("resnet50")
    assert len(base.layers) == 175
    named = set_base_trainable(base, True, from_layer=120)
    expected = [layer.name for layer in base.layers[120:] if not is_bn(layer)]
    assert named == expected
    assert all(not layer.trainable for layer in base.layers[:120])
    assert all(not layer.trainable for layer in base.layers if is_bn(layer))
    trainable = {id(w) for w in base.trainable_weights}
    assert trainable == {id(w) for layer in base.layers[120:] if not is_bn(layer) for w in layer.trainable_weights}


def test_vgg16_last_4_and_mobilenetv2_last_3():
    model, base = built("vgg16")
    assert set_base_trainable(base, True, last=4) == ["block5_conv1", "block5_conv2", "block5_conv3", "block5_pool"]
    keras.backend.clear_session()
    model, base = built("mobilenetv2")
    # MobileNetV2's last three layers are Conv_1, Conv_1_bn and out_relu; the BatchNorm stays frozen.
    assert set_base_trainable(base, True, last=3) == ["Conv_1", "out_relu"]
    assert [w.path for w in base.trainable_weights] == ["Conv_1/kernel"]


def test_a_pretrained_base_trains_all_but_batchnorm():
    model, base = built("mobilenetv2")
    set_base_trainable(base, True)  # what freeze_base = false does with pretrained weights
    assert all(layer.trainable != is_bn(layer) for layer in base.layers[1:])


def test_freeze_base_false_from_random_weights_trains_every_layer_and_batchnorm_statistics_move():
    model, base = built("mobilenetv2", train=TrainConfig(weights="none", freeze_base=False))
    assert all(layer.trainable for layer in base.layers)
    bn = [layer for layer in base.layers if is_bn(layer)]
    before = [keras.ops.convert_to_numpy(layer.moving_mean) for layer in bn]
    compile_model(model, "adam", 1e-3, run_eagerly=True)
    x = np.random.default_rng(0).integers(0, 256, (4, 32, 32, 3), dtype=np.uint8)
    model.train_on_batch(x, np.array([0, 1, 2, 0]))
    after = [keras.ops.convert_to_numpy(layer.moving_mean) for layer in bn]
    assert all(not np.array_equal(b, a) for b, a in zip(before, after))


def test_out_of_range_layer_index_is_a_clear_error():
    model, base = built("vgg16")
    with pytest.raises(HarnessError, match="outside the backbone's 19 layers"):
        set_base_trainable(base, True, from_layer=40)


def test_fine_tuning_a_model_without_backbone_is_an_error():
    with pytest.raises(HarnessError, match="no pretrained backbone"):
        built("cnn4", train=TrainConfig(weights="none", fine_tune=FineTune(from_layer=3)))


def test_batchnorm_statistics_do_not_move_while_fine_tuning():
    model, base = built("mobilenetv2")
    set_base_trainable(base, True, last=20)
    bn = [layer for layer in base.layers if is_bn(layer)]
    before = [keras.ops.convert_to_numpy(layer.moving_mean) for layer in bn]
    kernels_before = [keras.ops.convert_to_numpy(w) for w in base.trainable_weights]
    compile_model(model, "adam", 1e-2, run_eagerly=True)
    x = np.random.default_rng(0).integers(0, 256, (4, 32, 32, 3), dtype=np.uint8)
    model.train_on_batch(x, np.array([0, 1, 2, 0]))
    after = [keras.ops.convert_to_numpy(layer.moving_mean) for layer in bn]
    assert all(np.array_equal(b, a) for b, a in zip(before, after))
    kernels_after = [keras.ops.convert_to_numpy(w) for w in base.trainable_weights]
    assert any(not np.array_equal(b, a) for b, a in zip(kernels_before, kernels_after))
