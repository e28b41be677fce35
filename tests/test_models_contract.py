"""The model contract, for every registered model: a new plugin is tested by being registered.

Each model builds with random weights at a small size, has the inputs it declares, outputs
probabilities over the classes, takes a training step (with the core's freezing rule), and
round-trips through save/load (the checks are harness.testing.models, which plugin authors run
on their own models). The keras.applications rows share one build function: every row
builds and predicts in each run, the smaller ones take a training step and two of them a save/load;
the big rows' training step and the other rows' save/load (seconds each on a CPU) run with
HARNESS_SLOW_TESTS=1.
"""

from __future__ import annotations

import os
import urllib.error

import keras
import numpy as np
import pytest

from harness import BuildContext, HarnessError
from harness.config.study import TrainConfig
from harness.plugins import get_plugins
from harness.config.space import thaw
from harness.testing import models as contract
from harness.testing.models import CLASSES, SMALL
from harness.training.train import build_model, prepare_model
from harness_plugins.models.applications import APPLICATIONS

#: keras.applications rows whose save/load takes seconds each on a CPU; two cheap rows of the shared
#: build function stay in the default run (the own models cover the other preprocessing modes).
ROUND_TRIP_SLOW = {row[0] for row in APPLICATIONS} - {"vgg19", "mobilenet"}
#: The big rows, whose one eager training step alone takes 3–20 s on a CPU.
STEP_SLOW = {
    "convnextsmall", "convnextbase", "convnextlarge", "convnextxlarge", "efficientnetb5", "efficientnetb6",
    "efficientnetb7", "efficientnetv2s", "efficientnetv2m", "efficientnetv2l", "nasnetlarge", "nasnetmobile",
    "inceptionresnetv2", "resnet101", "resnet152", "resnet101v2", "resnet152v2", "densenet169", "densenet201",
}
SLOW = bool(os.environ.get("HARNESS_SLOW_TESTS"))
slow = pytest.mark.skipif(not SLOW, reason="slow on a CPU: HARNESS_SLOW_TESTS=1 runs it")

PLUGINS = get_plugins()
MODELS = PLUGINS.models.names()
#: (backend, model) pairs Keras refuses to build: the harness passes Keras's reason on, as an error.
UNAVAILABLE = {("torch", "nasnetmobile")}


def models_to_build() -> list[str]:
    """Every model under TensorFlow. Under another backend (tests/test_backends.py re-runs this
    module), the ones whose building is the harness's own code: its own models and the studies'
    backbones; the other keras.applications rows share one build function with those, so building
    them again tests Keras, not the harness (HARNESS_SLOW_TESTS=1 builds them all)."""
    backend = keras.backend.backend()
    if backend == "tensorflow" or SLOW:
        return MODELS
    return [n for n in MODELS if PLUGINS.models.owner(n) != "applications" or (backend, n) in UNAVAILABLE]


@pytest.fixture(autouse=True)
def _fresh_keras():
    keras.backend.clear_session()
    keras.utils.set_random_seed(0)
    yield
    keras.backend.clear_session()


def context_for(name: str, size: int = SMALL) -> BuildContext:
    return contract.context_for(PLUGINS.models.get(name), size)


def test_every_study_backbone_is_registered():
    for name in ("cnn4", "cnn5", "vgg16", "resnet50", "xception", "xception_location", "mobilenetv2"):
        assert name in MODELS
    assert {"densenet121", "efficientnetb1"} <= set(MODELS)


@pytest.mark.parametrize("name", MODELS)
def test_model_spec_contract(name):
    """Parameters defaulted, the space parses and tunes only the model's parameters."""
    contract.check_spec(PLUGINS.models.get(name))


@pytest.mark.parametrize("name", models_to_build())
def test_model_contract(name):
    """Builds, has its declared inputs, outputs probabilities; trains a step (big rows: see below)."""
    spec = PLUGINS.models.get(name)
    if (keras.backend.backend(), name) in UNAVAILABLE:
        with pytest.raises(HarnessError, match=f"model '{name}' could not be built .* not available with the torch"):
            prepare_model(spec, context_for(name), TrainConfig(weights="none"))
        return
    contract.check_model(spec, train_step=name not in STEP_SLOW)


@slow
@pytest.mark.parametrize("name", sorted(STEP_SLOW))
def test_big_application_trains_one_step(name):
    spec = PLUGINS.models.get(name)
    context, (model, base) = contract.prepare_small(spec)
    contract.check_training_step(model, base, contract.sample_batch(spec, context))


ROUND_TRIP = [pytest.param(n, marks=slow) if n in ROUND_TRIP_SLOW else n for n in models_to_build()]


@pytest.mark.parametrize("name", ROUND_TRIP)
def test_save_load_round_trip(name, tmp_path):
    spec = PLUGINS.models.get(name)
    context, model = contract.build_small(spec, lambda c: build_model(spec, c))
    contract.check_save_load(model, contract.sample_batch(spec, context), tmp_path)


def test_minimum_size_is_checked_with_a_clear_message():
    with pytest.raises(HarnessError, match=r"model 'xception' needs images of at least 71×71 pixels, got 32×32"):
        build_model(PLUGINS.models.get("xception"), context_for("xception", 32))


def test_missing_imagenet_weights_name_the_file_and_the_cache(tmp_path, monkeypatch):
    from keras.src.backend import config as keras_config
    from keras.src.utils import file_utils

    def offline(url, *args, **kwargs):
        raise urllib.error.URLError("no network")

    monkeypatch.setattr(file_utils, "urlretrieve", offline)
    monkeypatch.setattr(keras_config, "keras_home", lambda: str(tmp_path / "keras-home"))
    context = BuildContext(CLASSES, (71, 71), {"head": [8], "dropout": 0.0, "pooling": "avg"}, weights="imagenet")
    with pytest.raises(HarnessError) as raised:
        build_model(PLUGINS.models.get("xception"), context)
    message = str(raised.value)
    expected = tmp_path / "keras-home" / "models" / "xception_weights_tf_dim_ordering_tf_kernels_notop.h5"
    assert str(expected) in message
    assert "https://" in message and 'weights = "none"' in message
    assert message.count("\n") == 0


def test_local_weights_file_is_loaded(tmp_path):
    base = keras.applications.VGG16(include_top=False, weights=None, input_shape=(SMALL, SMALL, 3))
    file = tmp_path / "vgg16-notop.weights.h5"
    base.save_weights(file)
    context = BuildContext(CLASSES, (SMALL, SMALL), {"head": [8], "dropout": 0.0, "pooling": "flatten"}, weights=str(file))
    model = build_model(PLUGINS.models.get("vgg16"), context)
    loaded = model.get_layer("backbone").get_weights()
    assert all(np.array_equal(a, b) for a, b in zip(base.get_weights(), loaded))


# --- learning from scratch: every model trained from random weights learns a separable set ---

#: A colour per class under per-pixel noise: separable by any model that passes a signal on.
COLOURS = np.array([[220, 40, 40], [40, 220, 40], [40, 40, 220]])
#: Rows per class.
PER_CLASS = 16


def separable_dataset(name: str, size: int):
    from harness import Samples
    from harness.data.dataset import Dataset

    import pandas as pd

    labels = np.repeat(np.arange(CLASSES), PER_CLASS)
    table = pd.DataFrame({"id": [str(i) for i in range(len(labels))], "label": labels.astype(str)})
    table["group"] = table["id"]
    for extra in PLUGINS.models.get(name).inputs[1:]:
        table[extra] = "a"  # one value: the extra input carries nothing about the class

    def pixels(rows, image_size):
        def image(row):  # the same noise for a row whenever it is loaded
            noise = np.random.default_rng(row).integers(-60, 61, (*image_size, 3))
            return np.clip(COLOURS[labels[row]] + noise, 0, 255)

        return np.stack([image(row) for row in rows.index]).astype(np.uint8)

    return Dataset("separable", table, [str(c) for c in range(CLASSES)], labels, Samples(table, pixels))


def smallest_size(name: str) -> int:
    spec = PLUGINS.models.get(name)
    context, _ = contract.build_small(spec, lambda c: build_model(spec, c))
    keras.backend.clear_session()
    return context.image_size[0]


#: Trained in every run: a from-scratch model and a backbone, both with BatchNormalization (both
#: scored chance before the fix). The others take 14–40 s each on a CPU, minutes for the biggest:
#: they run with HARNESS_SLOW_TESTS=1.
LEARN_ALWAYS = {"cnn5", "mobilenetv2"}
#: EfficientNet B0–B7, V2-B1 and V2-S from scratch reach training accuracy 0.8–0.94 here, but their
#: inference-mode loss stays above ln(K) after 60 steps (confident errors): an open finding.
LEARN_OPEN = {f"efficientnetb{i}" for i in range(8)} | {"efficientnetv2b1", "efficientnetv2s"}
OPEN_REASON = (
    "open finding, not a harness fault hidden: this EfficientNet learns from scratch (training accuracy "
    "0.8-0.94) but its inference-mode loss on the learned rows stays above ln 3 at learning rates 1e-4 and "
    "1e-3 (confident errors); it passes once it learns the set within 10 epochs (pytest then reports XPASS)"
)
LEARN = [
    n if n in LEARN_ALWAYS
    else pytest.param(n, marks=[slow, pytest.mark.xfail(reason=OPEN_REASON)])
    if n in LEARN_OPEN
    else pytest.param(n, marks=slow)
    for n in MODELS
]


#: Learning rates a search would try, in order: VGG16 from scratch diverges at 1e-3, EfficientNetB0
#: barely moves in 60 steps at 1e-4. A model passes when one of them teaches it the set.
LEARNING_RATES = (1e-4, 1e-3)


@pytest.mark.parametrize("name", LEARN)
def test_model_trained_from_scratch_learns_a_separable_set(name):
    """Random weights, freeze_base = false: at one of LEARNING_RATES, the loss of the rows it
    learned, scored as a fold is (inference mode), falls below ln(K) and the predictions are not
    constant. Scoring the training
    rows tests learning, not how 48 images generalise: EfficientNetV2B0 reached loss 0.004 on
    them and ~1.2 on 12 new rows, which is overfitting, not a dead network. A deep backbone whose
    BatchNormalization runs in inference mode at its initial statistics fails this: its signal
    fades, its predictions are uniform and its loss is ln(K)."""
    from harness.evaluation.scores import learned_nothing
    from harness.training.train import fit_fold

    if (keras.backend.backend(), name) in UNAVAILABLE:
        pytest.skip(
            f"Keras offers no {name} under {keras.backend.backend()}: nothing to train; test_model_contract "
            "checks that the harness says so in one error"
        )
    size = smallest_size(name)
    dataset = separable_dataset(name, size)
    rows = np.arange(len(dataset.labels))
    spec = PLUGINS.models.get(name)
    params = {k: thaw(v) for k, v in spec.params.items()}
    tried = []
    for learning_rate in LEARNING_RATES:
        train = TrainConfig(epochs=10, batch_size=8, learning_rate=learning_rate, weights="none", freeze_base=False)
        keras.utils.set_random_seed(0)
        result = fit_fold(spec, dataset, (size, size), params, train, rows, rows, seed=0)
        loss = -np.mean(np.log(np.clip(result.probabilities[rows, dataset.labels], 1e-7, 1)))
        dead = learned_nothing(result.probabilities)
        if loss < np.log(CLASSES) and not dead:
            return
        tried.append(f"learning rate {learning_rate}: loss {loss:.3f}{f' ({dead})' if dead else ''}")
    pytest.fail(f"{name} learned nothing, ln(K) = {np.log(CLASSES):.3f}: " + "; ".join(tried))
