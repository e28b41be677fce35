"""Augmentation from the study file: parsed strictly, Keras layers, active only in training."""

from __future__ import annotations

import keras
import numpy as np
import pytest

from harness import HarnessError
from harness.toolkit.augment import Augment, augmentation_layers, with_augmentation
from harness.config.study import load_study
from harness.plugins import get_plugins

from conftest import tiny_study_text

EVERYTHING = Augment(
    flip="horizontal", rotation=0.1, zoom=0.1, translation=0.1, brightness=0.2, contrast=0.2,
    saturation=0.3, blur=0.5, noise=0.02,
)


def study_with(tmp_path, train_extra: str = "", candidate_extra: str = ""):
    text = tiny_study_text(extra='filters = [4, 4, 4, 4, 4]\ndense = [8]\n' + candidate_extra)
    text = text.replace("[train]\n", "[train]\n" + train_extra + "\n")
    path = tmp_path / "aug.toml"
    path.write_text(text)
    return load_study(path, get_plugins())


def test_study_file_sets_augmentation_and_a_candidate_replaces_it(tmp_path):
    study = study_with(
        tmp_path,
        'augment = { flip = "horizontal", rotation = 0.1, zoom = 0.2, noise = 0.02 }',
        "augment = false",
    )
    assert study.train.augment == Augment(flip="horizontal", rotation=0.1, zoom=0.2, noise=0.02)
    assert study.candidates[0].train.augment is None


@pytest.mark.parametrize(
    "setting, message",
    [
        ("augment = { rotate = 0.1 }", r"train\.augment\.rotate: unknown key 'rotate'\. Did you mean 'rotation'\?"),
        ('augment = { flip = "sideways" }', r"train\.augment\.flip: unknown value \"sideways\""),
        ("augment = { zoom = -0.1 }", r"train\.augment\.zoom: must not be negative"),
        ("augment = { saturation = 2.0 }", r"train\.augment\.saturation: must be between 0 and 1"),
        ('augment = { zoom = "a lot" }', r"train\.augment\.zoom: expected a number"),
    ],
)
def test_bad_augmentation_settings_name_file_and_key(tmp_path, setting, message):
    with pytest.raises(HarnessError, match=r"aug\.toml: " + message):
        study_with(tmp_path, setting)


def test_every_setting_is_a_keras_layer():
    kinds = [type(layer).__name__ for layer in augmentation_layers(EVERYTHING)]
    assert kinds == [
        "RandomFlip", "RandomRotation", "RandomZoom", "RandomTranslation", "RandomBrightness", "RandomContrast",
        "RandomSaturation", "RandomGaussianBlur", "Rescaling", "GaussianNoise", "Rescaling",
    ]
    assert augmentation_layers(Augment()) == [] and not Augment().active()


def test_augmentation_acts_in_training_only():
    images = np.random.default_rng(0).integers(0, 256, (4, 24, 24, 3)).astype("float32")
    pipeline = keras.Sequential(augmentation_layers(EVERYTHING))
    np.testing.assert_allclose(keras.ops.convert_to_numpy(pipeline(images, training=False)), images, atol=1e-3)
    trained = keras.ops.convert_to_numpy(pipeline(images, training=True))
    assert trained.shape == images.shape and not np.allclose(trained, images)


def test_wrapped_model_keeps_its_inputs_and_predictions():
    image = keras.Input((24, 24, 3), name="image")
    location = keras.Input((3,), name="location")
    x = keras.layers.Concatenate()([keras.layers.GlobalAveragePooling2D()(image), location])
    model = keras.Model({"image": image, "location": location}, keras.layers.Dense(2, activation="softmax")(x))
    wrapped = with_augmentation(model, EVERYTHING)
    assert sorted(t.name for t in wrapped.inputs) == ["image", "location"]
    rng = np.random.default_rng(1)
    x = {"image": rng.integers(0, 256, (2, 24, 24, 3)).astype("float32"), "location": np.eye(3, dtype="float32")[:2]}
    np.testing.assert_allclose(
        keras.ops.convert_to_numpy(wrapped(x, training=False)), keras.ops.convert_to_numpy(model(x)), atol=1e-5
    )
    assert with_augmentation(model, Augment()) is model
