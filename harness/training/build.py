"""Build, freeze and compile a model, and what ``fit`` takes: optimizers, targets, class weights,
inputs, the early-stopping share of a training fold."""

from __future__ import annotations

import json
import os
import warnings

import numpy as np
from sklearn.model_selection import GroupShuffleSplit, StratifiedGroupKFold
from sklearn.utils.class_weight import compute_class_weight

from harness.config.study import TrainConfig
from harness.data.dataset import Dataset
from harness.errors import HarnessError
from harness.specs import BuildContext, ModelSpec


def load_keras():
    """The ``keras`` module, imported on first training, so `harness validate` stays fast."""
    from harness.core.backend import import_keras

    return import_keras()


def head_steps_per_execution() -> int:
    """Batches per call of the head's train function where it trains with ``fit`` (backends other
    than TensorFlow): 64 instead of one (identical arithmetic), but 1 with PyTorch, whose Keras
    trainer takes no more."""
    return 1 if load_keras().backend.backend() == "torch" else 64


def make_optimizer(name: str, learning_rate: float, momentum: float | None = None, decay: float = 0.0):
    """Adam, RMSprop or SGD (``momentum`` None: SGD 0.9, RMSprop 0); ``decay``: Keras 2's
    inverse-time decay per step, lr / (1 + decay · iterations)."""
    from harness.config.recipe import SGD_MOMENTUM

    keras = load_keras()
    rate = learning_rate
    if decay:
        rate = keras.optimizers.schedules.InverseTimeDecay(learning_rate, decay_steps=1, decay_rate=decay)
    if name == "adam":
        return keras.optimizers.Adam(rate)
    if name == "rmsprop":
        return keras.optimizers.RMSprop(rate, momentum=momentum or 0.0)
    return keras.optimizers.SGD(rate, momentum=SGD_MOMENTUM if momentum is None else momentum)


def compile_model(model, optimizer: str, learning_rate: float, label_smoothing: float = 0.0, *,
                  train: TrainConfig | None = None, **kwargs) -> None:
    """Compile for integer labels, or one-hot labels when smoothing them (Keras's sparse loss cannot).
    ``train``: the study's settings for the optimizer's momentum and decay and a watched top-k."""
    from harness.config.recipe import watched_top_k

    keras = load_keras()
    if label_smoothing:
        loss = keras.losses.CategoricalCrossentropy(label_smoothing=label_smoothing)
        accuracy = keras.metrics.CategoricalAccuracy(name="accuracy")
    else:
        loss = keras.losses.SparseCategoricalCrossentropy()
        accuracy = keras.metrics.SparseCategoricalAccuracy(name="accuracy")
    metrics = [accuracy]
    k = None if train is None else watched_top_k(train)
    if k is not None:  # early stopping or keep-best watch "val_top_k"
        top_k = keras.metrics.TopKCategoricalAccuracy if label_smoothing else keras.metrics.SparseTopKCategoricalAccuracy
        metrics.append(top_k(k, name="top_k"))
    momentum, decay = (None, 0.0) if train is None else (train.momentum, train.decay)
    model.compile(optimizer=make_optimizer(optimizer, learning_rate, momentum, decay), loss=loss, metrics=metrics,
                  **kwargs)


def compile_kept(holder, model, train: TrainConfig, learning_rate: float, **kwargs) -> bool:
    """Compile a kept ``model`` once per optimizer setting (remembered on ``holder``, with the
    optimizer's initial state); later folds restore that state instead, which keeps the traced
    train function. Sets the learning rate; returns whether it compiled."""
    from harness.config.recipe import watched_top_k

    # With decay the rate is a schedule made at compile time: a new rate is a new compile.
    setting = (train.optimizer, train.label_smoothing, train.jit_compile, train.momentum, train.decay,
               watched_top_k(train), learning_rate if train.decay else None)
    compiled = holder.compiled != setting
    if compiled:
        compile_model(model, train.optimizer, learning_rate, train.label_smoothing, train=train,
                      jit_compile=train.jit_compile, **kwargs)
        model.optimizer.build(model.trainable_variables)
        holder.optimizer_start = [np.array(v) for v in model.optimizer.variables]
        holder.compiled = setting
    else:
        for variable, start in zip(model.optimizer.variables, holder.optimizer_start):
            variable.assign(start)
    if not train.decay:
        model.optimizer.learning_rate = learning_rate
    return compiled


def targets(labels: np.ndarray, num_classes: int, label_smoothing: float) -> np.ndarray:
    """What ``fit`` takes as y for a model compiled by ``compile_model``."""
    return np.eye(num_classes, dtype="float32")[labels] if label_smoothing else labels


def balanced_class_weight(labels: np.ndarray) -> dict[int, float]:
    """scikit-learn's "balanced" weights: n_samples / (n_classes * count), for the classes present."""
    classes = np.unique(labels)
    weights = compute_class_weight("balanced", classes=classes, y=labels)
    return {int(c): float(w) for c, w in zip(classes, weights)}


def model_inputs(spec: ModelSpec, dataset: Dataset, image_size: tuple[int, int], index: np.ndarray):
    """The arrays a model takes for the given rows: the image array alone, or a dict by input name."""
    arrays = {}
    for name in spec.inputs:
        if name == "image":
            arrays[name] = dataset.images(image_size)[index]
        else:
            arrays[name] = dataset.one_hot(name)[index]
    return arrays["image"] if tuple(spec.inputs) == ("image",) else arrays


def extra_input_widths(spec: ModelSpec, dataset: Dataset) -> dict[str, int]:
    return {name: dataset.one_hot(name).shape[1] for name in spec.inputs if name != "image"}


def build_model(spec: ModelSpec, context: BuildContext):
    """Build a model and check that it is a softmax over the classes."""
    try:
        model = spec.build(context)
    except HarnessError:
        raise
    except Exception as exc:
        raise HarnessError(
            f"model '{spec.name}' could not be built with {context.params} at {context.image_size}: "
            f"{type(exc).__name__}: {exc}"
        ) from exc
    shape = tuple(model.outputs[0].shape)
    if len(model.outputs) != 1 or shape[-1] != context.num_classes:
        raise HarnessError(
            f"model '{spec.name}' outputs {shape}; expected one output of {context.num_classes} class probabilities."
        )
    if context.preprocess != "model":
        from harness.toolkit.backbones import Preprocess, STUDY_MODES

        mode = STUDY_MODES.get(context.preprocess, context.preprocess)
        if not any(isinstance(layer, Preprocess) and layer.mode == mode for layer in _layers(model)):
            raise HarnessError(
                f"model '{spec.name}' does not take [train] preprocess = \"{context.preprocess}\" (its build ignores "
                'BuildContext.preprocess); remove it from this candidate or use preprocess = "model".'
            )
    return model


def _layers(model) -> list:
    return [inner for layer in model.layers for inner in (layer, *_layers(layer))] if hasattr(model, "layers") else []


def prepare_model(spec: ModelSpec, context: BuildContext, train: TrainConfig, augment: bool = True):
    """Build the model, add the study's augmentation (unless ``augment`` is false) and apply the
    phase-one freezing rule. Returns the model and its backbone (None for models trained from scratch).

    A backbone built from random weights (weights = "none") that trains also trains its
    BatchNormalization layers; a pretrained one keeps them frozen (see ``set_base_trainable``).
    """
    from harness.toolkit.backbones import find_backbone, random_weights, set_base_trainable

    model = build_model(spec, context)
    if augment:
        model = augmented(model, train)
    base = find_backbone(model)
    if base is None and train.fine_tune is not None:
        raise HarnessError(
            f"model '{spec.name}' has no pretrained backbone (no layer named 'backbone') to fine-tune; "
            "remove fine_tune from this candidate."
        )
    if base is not None:
        set_base_trainable(base, not train.freeze_base, train_batchnorm=random_weights(context.weights))
    return model, base


def augmented(model, train: TrainConfig):
    """``model`` wrapped in the study's augmentation layers (itself when there are none)."""
    from harness.toolkit.augment import with_augmentation

    return with_augmentation(model, train.augment)


def model_key(spec: ModelSpec, context: BuildContext, train: TrainConfig) -> str:
    """What a built model depends on: the model, its build context and the precision policy."""
    weights = context.weights
    if weights not in (None, "none", "imagenet"):
        try:
            stat = os.stat(weights)
            weights = [weights, stat.st_size, stat.st_mtime_ns]  # a replaced weights file is a new model
        except OSError:
            pass
    build = f"{getattr(spec.build, '__module__', '')}.{getattr(spec.build, '__qualname__', '')}"
    return json.dumps(
        [spec.name, build, context.image_size, context.params, context.extra_inputs, context.num_classes,
         weights, train.precision, context.preprocess], sort_keys=True, default=str,
    )


def inner_split(labels: np.ndarray, groups: np.ndarray, fraction: float, seed: int) -> tuple[np.ndarray, np.ndarray]:
    """Positions (fit, stop) within a training fold: a held-out share for early stopping only."""
    n_splits = max(2, round(1 / fraction))
    x = np.zeros((len(labels), 1))
    try:
        splitter = StratifiedGroupKFold(n_splits, shuffle=True, random_state=seed)
        with warnings.catch_warnings():
            # A class with fewer images than 1 / fraction is expected in small folds: stratifying the
            # early-stopping share is best effort, and scikit-learn's warning would repeat every fold.
            warnings.filterwarnings("ignore", message="The least populated class", category=UserWarning)
            fit, stop = next(splitter.split(x, labels, groups))
    except ValueError:  # too few groups per class to stratify: keep the groups together at least
        fit, stop = next(GroupShuffleSplit(1, test_size=fraction, random_state=seed).split(x, labels, groups))
    return fit, stop
