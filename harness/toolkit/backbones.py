"""What the pretrained-backbone models share: preprocessing as a layer, weights, size checks, heads.

Model plugins import this module inside ``build`` (it imports Keras). A saved model that holds a
``Preprocess`` layer loads after ``import harness.toolkit.backbones``.
"""

from __future__ import annotations

import os
import re
from contextlib import nullcontext
from pathlib import Path
from typing import Any

import keras
import numpy as np
from keras import layers, ops

from harness.errors import HarnessError
from harness.specs import BuildContext

#: The nested pretrained base of every backbone model is named so; the core's freezing rules find it.
BACKBONE = "backbone"
#: Seed of the initial weights of a backbone built with weights = "none".
RANDOM_BASE_SEED = 0
#: How each family wants its input (Keras's ``preprocess_input`` modes, and EfficientNet-Lite's
#: "lite"); "none": the base takes 0–255. A study's [train] preprocess may replace it with these or
#: "unit" ([0, 1]), "per_image" (per-image standardisation) or "dataset" (the training fold's
#: per-channel mean and std, held in the layer's weights).
PREPROCESSING = ("caffe", "tf", "torch", "lite", "none", "unit", "per_image", "dataset")
#: The study file's names for modes the layer calls otherwise.
STUDY_MODES = {"symmetric": "tf"}
POOLING = ("avg", "max", "flatten")

_IMAGENET_MEAN = (0.485, 0.456, 0.406)
_IMAGENET_STD = (0.229, 0.224, 0.225)
_CAFFE_MEAN_BGR = (103.939, 116.779, 123.68)


@keras.saving.register_keras_serializable(package="harness")
class Preprocess(layers.Layer):
    """Raw 0–255 RGB pixels to a backbone's input: Keras's ``preprocess_input`` as a layer.

    ``caffe``: RGB→BGR minus the ImageNet means (VGG, ResNet); ``tf``: to [-1, 1] (Xception,
    MobileNet, Inception); ``torch``: to [0, 1], then ImageNet mean and std (DenseNet); ``lite``:
    (x − 127) / 128, the input of Google's EfficientNet-Lite checkpoints; ``none``: unchanged
    (EfficientNet, ConvNeXt, MobileNetV3 normalise inside).
    """

    def __init__(self, mode: str, **kwargs):
        super().__init__(**kwargs)
        if mode not in PREPROCESSING:
            raise ValueError(f"unknown preprocessing '{mode}'; expected one of {PREPROCESSING}")
        self.mode = mode
        if mode == "dataset":
            # Set per fold from its training images (set_dataset_stats); saved with the model.
            self.mean = self.add_weight(shape=(3,), initializer="zeros", trainable=False, name="mean")
            self.std = self.add_weight(shape=(3,), initializer="ones", trainable=False, name="std")

    def call(self, x):
        x = ops.cast(x, self.compute_dtype)
        if self.mode == "unit":
            return x / 255.0
        if self.mode == "per_image":
            # TensorFlow's per_image_standardization: (x - mean) / max(std, 1 / sqrt(pixels × channels)).
            # In float32 whatever the precision: float16 overflows summing an image (and its pixel count).
            wide = ops.cast(x, "float32")
            mean = ops.mean(wide, axis=(-3, -2, -1), keepdims=True)
            std = ops.std(wide, axis=(-3, -2, -1), keepdims=True)
            count = ops.cast(ops.prod(ops.shape(wide)[-3:]), "float32")
            return ops.cast((wide - mean) / ops.maximum(std, ops.rsqrt(count)), self.compute_dtype)
        if self.mode == "dataset":
            return (x - ops.cast(self.mean, x.dtype)) / ops.cast(self.std, x.dtype)
        if self.mode == "tf":
            return x / 127.5 - 1.0
        if self.mode == "torch":
            return (x / 255.0 - ops.array(_IMAGENET_MEAN, x.dtype)) / ops.array(_IMAGENET_STD, x.dtype)
        if self.mode == "caffe":
            return ops.flip(x, axis=-1) - ops.array(_CAFFE_MEAN_BGR, x.dtype)
        if self.mode == "lite":
            return (x - 127.0) / 128.0
        return x

    def get_config(self):
        return {**super().get_config(), "mode": self.mode}


def scratch_preprocess(context: BuildContext):
    """The first layer of a model trained from scratch: Rescaling(1/255) as the built-in CNNs have
    always had, or the ``Preprocess`` of the study's [train] preprocess."""
    if context.preprocess == "model":
        return layers.Rescaling(1.0 / 255)
    return Preprocess(STUDY_MODES.get(context.preprocess, context.preprocess), name="preprocess")


def padding(model: str, params: dict, key: str = "padding") -> str:
    """``params[key]``, "same" or "valid" (a one-line error otherwise); "same", as the built-in CNNs
    always padded, where ``params`` predate the key (fold records leave it out at its default)."""
    from harness.errors import did_you_mean

    value = params.get(key, "same")
    if value not in ("same", "valid"):
        raise HarnessError(f"model '{model}': {key} = {value!r} is unknown.{did_you_mean(str(value), ('same', 'valid'))} "
                           'Use "same" or "valid".')
    return value


def set_dataset_stats(model, images: np.ndarray) -> bool:
    """Give every ``Preprocess`` of mode "dataset" in ``model`` the per-channel mean and std of
    ``images`` (0–255, the training fold's); returns whether there was one."""
    found = [layer for layer in _all_layers(model) if isinstance(layer, Preprocess) and layer.mode == "dataset"]
    if found:
        total, squares, count = np.zeros(3), np.zeros(3), 0
        for start in range(0, len(images), 64):  # in chunks: a float64 copy of every image is large
            pixels = images[start : start + 64].reshape(-1, images.shape[-1]).astype("float64")
            total, squares, count = total + pixels.sum(0), squares + (pixels**2).sum(0), count + len(pixels)
        mean = total / count
        std = np.maximum(np.sqrt(np.maximum(squares / count - mean**2, 0)), 1e-3)
        for layer in found:
            layer.mean.assign(mean.astype("float32"))
            layer.std.assign(std.astype("float32"))
    return bool(found)


def check_size(model: str, size: tuple[int, int], minimum: int) -> None:
    """A clear error when an image side is below what the architecture accepts."""
    if min(size) < minimum:
        raise HarnessError(
            f"model '{model}' needs images of at least {minimum}×{minimum} pixels, got {size[0]}×{size[1]}. "
            f"Set image_size = [{max(minimum, size[0])}, {max(minimum, size[1])}] (or larger) on the candidate "
            "or in [dataset]."
        )


def random_weights(weights: str | None) -> bool:
    """Whether a study's weights setting starts the backbone from random weights ("none")."""
    return weights in (None, "none")


def weights_argument(weights: str | None) -> str | None:
    """The study's weights setting as Keras's ``weights`` argument: None, "imagenet" or a file."""
    if random_weights(weights):
        return None
    if weights == "imagenet":
        return "imagenet"
    if not Path(weights).is_file():
        raise HarnessError(f"weights file '{weights}' not found (weights is \"imagenet\", \"none\" or a file path).")
    return str(weights)


def keras_cache_dir() -> Path:
    """Where Keras keeps downloaded weights: $KERAS_HOME/models, by default ~/.keras/models."""
    try:
        from keras.src.backend.config import keras_home

        home = keras_home()
    except ImportError:  # a Keras without the private accessor: its documented rule
        home = os.environ.get("KERAS_HOME", os.path.join(os.path.expanduser("~"), ".keras"))
    return Path(home) / "models"


def missing_weights_error(model: str, exc: Exception) -> HarnessError | None:
    """The one message for weights Keras could not fetch; None when ``exc`` is something else."""
    text = str(exc)
    url = re.search(r"https?://\S+?(?=[:\s]|$)", text)
    if url is None or "fetch failure" not in text.lower():
        return None
    fname = url.group(0).rsplit("/", 1)[-1]
    target = keras_cache_dir() / fname
    return HarnessError(
        f"model '{model}': the ImageNet weights are not in the Keras cache and could not be downloaded "
        f"(offline?). Keras expects the file {fname} at {target} (the cache folder is $KERAS_HOME/models, "
        f"by default ~/.keras/models). Fetch it from {url.group(0)} on a machine with network and copy it "
        'there; or set weights = "path/to/that/file.h5"; or train from random weights with weights = "none" '
        "(HARNESS_WEIGHTS=none for a whole run)."
    )


def pretrained_base(application: Any, context: BuildContext, model: str, minimum: int, **kwargs):
    """``application(include_top=False)`` named ``backbone``, with the study's weights.

    ``application`` is a ``keras.applications`` constructor; ``minimum`` its smallest image side.
    """
    check_size(model, context.image_size, minimum)
    weights = weights_argument(context.weights)
    if weights is None:
        # Random weights are drawn the same way in every fold and trial (seed RANDOM_BASE_SEED),
        # as ImageNet weights would be the same: a frozen random base then has one set of
        # cached features. The head still gets the fold's own seed, drawn first.
        head_seed = int(np.random.randint(2**31 - 1))
        keras.utils.set_random_seed(RANDOM_BASE_SEED)
    try:
        base = application(include_top=False, weights=weights, input_shape=(*context.image_size, 3), **kwargs)
    except Exception as exc:
        error = missing_weights_error(model, exc)
        if error is None:
            raise
        raise error from None
    finally:
        if weights is None:
            keras.utils.set_random_seed(head_seed)
    base.name = BACKBONE
    return base


def pool(x, pooling: str):
    if pooling == "avg":
        return layers.GlobalAveragePooling2D(name="pool")(x)
    if pooling == "max":
        return layers.GlobalMaxPooling2D(name="pool")(x)
    if pooling == "flatten":
        return layers.Flatten(name="pool")(x)
    raise HarnessError(f"pooling must be one of {', '.join(POOLING)}, got '{pooling}'.")


def classifier(x, num_classes: int, head: list[int], dropout: float):
    """Dense ReLU layers of the given widths (each followed by dropout), then the softmax."""
    for i, units in enumerate(head):
        x = layers.Dense(int(units), activation="relu", name=f"head_{i}")(x)
        if dropout:
            x = layers.Dropout(dropout, name=f"head_dropout_{i}")(x)
    return layers.Dense(num_classes, activation="softmax", dtype="float32", name="probabilities")(x)


def build_pretrained(
    context: BuildContext,
    application: Any,
    *,
    name: str,
    preprocessing: str,
    minimum: int = 32,
    extra_inputs: tuple[str, ...] = (),
    **kwargs,
):
    """Image → Preprocess → backbone → pooling [→ concatenated extra inputs] → head → softmax.

    Extra inputs (one-hot metadata such as ``location``) join the pooled image features before
    the head. The model takes a dict by input name when it has extra inputs.
    """
    params = context.params
    image = keras.Input(shape=(*context.image_size, 3), name="image")
    base = pretrained_base(application, context, name, minimum, **kwargs)
    if context.preprocess != "model":
        preprocessing = STUDY_MODES.get(context.preprocess, context.preprocess)
    preprocessed = Preprocess(preprocessing, name="preprocess")(image)
    if random_weights(context.weights):
        # Trained from random weights, the base's BatchNormalization must run in training mode (see
        # set_base_trainable), so the call leaves the mode to the outer call.
        x = base(preprocessed)
    else:
        # A pretrained base's BatchNormalization keeps its ImageNet statistics. training=False states
        # that intent; what enforces it is the freezing rule keeping those layers frozen, because
        # Keras 3 passes the outer call's training flag through to nested models.
        x = base(preprocessed, training=False)
    x = pool(x, params["pooling"])
    inputs: Any = image
    if extra_inputs:
        inputs = {"image": image}
        for input_name in extra_inputs:
            if input_name not in context.extra_inputs:
                raise HarnessError(f"model '{name}' needs the input '{input_name}', but the dataset gives none.")
            inputs[input_name] = keras.Input(shape=(context.extra_inputs[input_name],), name=input_name)
        x = layers.Concatenate(name="features")([x, *(inputs[n] for n in extra_inputs)])
    outputs = classifier(x, context.num_classes, params["head"], params["dropout"])
    return keras.Model(inputs, outputs, name=name)


def find_backbone(model):
    """The layer named ``backbone`` anywhere in the model (nested models included), or None."""
    for layer in model.layers:
        if layer.name == BACKBONE:
            return layer
        if hasattr(layer, "layers"):
            found = find_backbone(layer)
            if found is not None:
                return found
    return None


def set_base_trainable(
    base,
    trainable: bool,
    from_layer: int | None = None,
    last: int | None = None,
    train_batchnorm: bool = False,
) -> list[str]:
    """Freeze the base, or make it trainable from layer ``from_layer`` / for its ``last`` layers.

    BatchNormalization layers stay frozen unless ``train_batchnorm``, which in Keras 3 also keeps
    them in inference mode: right for pretrained weights, whose moving statistics they keep. A base
    trained from random weights needs ``train_batchnorm``: frozen at their initial statistics (mean
    0, variance 1) its BatchNormalization layers normalise nothing and the signal of a deep random
    network fades to nothing (MobileNetV2's pooled features: ~1e-12), so nothing learns. Returns the
    names of the layers left trainable.
    """
    base.trainable = trainable
    if not trainable:
        return []
    start = first_trainable_layer(base, from_layer, last)
    for index, layer in enumerate(base.layers):
        if index < start or (isinstance(layer, layers.BatchNormalization) and not train_batchnorm):
            layer.trainable = False
    return [layer.name for layer in base.layers if layer.trainable]


def first_trainable_layer(base, from_layer: int | None = None, last: int | None = None) -> int:
    """The index in ``base.layers`` from which ``set_base_trainable`` unfreezes the base."""
    count = len(base.layers)
    start = 0
    if from_layer is not None:
        start = from_layer if from_layer >= 0 else count + from_layer
    elif last is not None:
        start = max(0, count - last)
    if not 0 <= start <= count:
        raise HarnessError(f"fine_tune.from_layer = {from_layer} is outside the backbone's {count} layers.")
    return start


def trainable_batchnorm(model) -> list:
    """The BatchNormalization layers of ``model``, nested models included, that train: those of a
    model or backbone trained from random weights; a pretrained base's stay frozen (see
    ``set_base_trainable``)."""
    return [layer for layer in _all_layers(model) if isinstance(layer, layers.BatchNormalization) and layer.trainable]


def calibrate_batchnorm(model, batchnorm: list, batches) -> None:
    """Set the moving statistics of ``batchnorm`` (layers of ``model``) to the mean of their batch
    statistics over ``batches`` of ``model``'s inputs under the current weights ("precise BN").

    Trained from random weights for a few hundred steps, moving averages of momentum 0.99–0.9997
    (keras.applications) still hold mostly their initial statistics, with which inference loses
    the signal as a frozen random base does. Other BatchNormalization layers keep their statistics.
    """
    chosen = {id(layer) for layer in batchnorm}
    others = [
        layer for layer in _all_layers(model) if isinstance(layer, layers.BatchNormalization) and id(layer) not in chosen
    ]
    momentum = {id(layer): layer.momentum for layer in (*batchnorm, *others)}
    try:
        for layer in others:
            layer.momentum = 1.0
        seen = 0
        with _no_gradients():
            for batch in batches:
                rows = len(keras.tree.flatten(batch)[0])
                for layer in batchnorm:  # a running mean over all rows so far, weighted by batch size
                    layer.momentum = seen / (seen + rows)
                model(batch, training=True)
                seen += rows
    finally:
        for layer in (*batchnorm, *others):
            layer.momentum = momentum[id(layer)]


def _all_layers(model) -> list:
    found = []
    for layer in getattr(model, "layers", []):
        found.append(layer)
        found.extend(_all_layers(layer))
    return found


def _no_gradients():
    """A context without gradient recording where the backend records by default (PyTorch)."""
    if keras.backend.backend() == "torch":
        import torch

        return torch.no_grad()
    return nullcontext()
