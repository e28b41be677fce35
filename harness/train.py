"""Train and score one configuration on one fold: the same way for every model.

A fold is fitted in up to two phases. Phase one trains with the backbone (the layer named
``backbone``, see ``harness.backbones``) frozen unless ``freeze_base = false``; the optional
fine-tuning phase unfreezes it from a layer index or for its last layers and goes on at a lower
learning rate, continuing the epoch count. Early stopping and ReduceLROnPlateau watch a share of
the training fold held out for that purpose; the scored fold never steers training.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass

import numpy as np
from sklearn.model_selection import GroupShuffleSplit, StratifiedGroupKFold
from sklearn.utils.class_weight import compute_class_weight

from harness.config import TrainConfig
from harness.data import Dataset
from harness.errors import HarnessError
from harness.specs import BuildContext, ModelSpec


@dataclass
class FoldResult:
    probabilities: np.ndarray
    fit_seconds: float
    epochs_run: int


def _keras():
    import keras  # imported on first training, so `harness validate` stays fast

    return keras


def make_optimizer(name: str, learning_rate: float):
    keras = _keras()
    if name == "adam":
        return keras.optimizers.Adam(learning_rate)
    if name == "rmsprop":
        return keras.optimizers.RMSprop(learning_rate)
    return keras.optimizers.SGD(learning_rate, momentum=0.9)


def compile_model(model, optimizer: str, learning_rate: float, label_smoothing: float = 0.0, **kwargs) -> None:
    """Compile for integer labels, or one-hot labels when smoothing them (Keras's sparse loss cannot)."""
    keras = _keras()
    if label_smoothing:
        loss = keras.losses.CategoricalCrossentropy(label_smoothing=label_smoothing)
        accuracy = keras.metrics.CategoricalAccuracy(name="accuracy")
    else:
        loss = keras.losses.SparseCategoricalCrossentropy()
        accuracy = keras.metrics.SparseCategoricalAccuracy(name="accuracy")
    model.compile(optimizer=make_optimizer(optimizer, learning_rate), loss=loss, metrics=[accuracy], **kwargs)


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
    return model


def prepare_model(spec: ModelSpec, context: BuildContext, train: TrainConfig):
    """Build the model, add the study's augmentation and apply the phase-one freezing rule.

    Returns the model and its backbone (None for models trained from scratch).
    """
    from harness.augment import with_augmentation
    from harness.backbones import find_backbone, set_base_trainable

    model = with_augmentation(build_model(spec, context), train.augment)
    base = find_backbone(model)
    if base is None and train.fine_tune is not None:
        raise HarnessError(
            f"model '{spec.name}' has no pretrained backbone (no layer named 'backbone') to fine-tune; "
            "remove fine_tune from this candidate."
        )
    if base is not None:
        set_base_trainable(base, not train.freeze_base)
    return model, base


def inner_split(labels: np.ndarray, groups: np.ndarray, fraction: float, seed: int) -> tuple[np.ndarray, np.ndarray]:
    """Positions (fit, stop) within a training fold: a held-out share for early stopping only."""
    n_splits = max(2, round(1 / fraction))
    x = np.zeros((len(labels), 1))
    try:
        splitter = StratifiedGroupKFold(n_splits, shuffle=True, random_state=seed)
        fit, stop = next(splitter.split(x, labels, groups))
    except ValueError:  # too few groups per class to stratify: keep the groups together at least
        fit, stop = next(GroupShuffleSplit(1, test_size=fraction, random_state=seed).split(x, labels, groups))
    return fit, stop


def _callbacks(train: TrainConfig, on_epoch: Callable[[int, dict], None] | None) -> list:
    """Fresh callbacks for one phase (their patience and best values start over)."""
    keras = _keras()
    callbacks = []
    if train.early_stopping is not None:
        es = train.early_stopping
        callbacks.append(
            keras.callbacks.EarlyStopping(monitor=es.monitor, patience=es.patience, restore_best_weights=True)
        )
    if train.reduce_lr is not None:
        r = train.reduce_lr
        callbacks.append(
            keras.callbacks.ReduceLROnPlateau(monitor=r.monitor, factor=r.factor, patience=r.patience, min_lr=r.min_lr)
        )
    if on_epoch is not None:
        callbacks.append(keras.callbacks.LambdaCallback(on_epoch_end=on_epoch))
    return callbacks


def fit_fold(
    spec: ModelSpec,
    dataset: Dataset,
    image_size: tuple[int, int],
    params: dict,
    train: TrainConfig,
    train_idx: np.ndarray,
    val_idx: np.ndarray,
    seed: int,
    on_epoch: Callable[[int, dict], None] | None = None,
) -> FoldResult:
    """Build, fit on ``train_idx`` (one or two phases) and predict ``val_idx``."""
    keras = _keras()
    keras.backend.clear_session()
    keras.utils.set_random_seed(seed)
    num_classes = len(dataset.classes)
    context = BuildContext(
        num_classes=num_classes,
        image_size=tuple(image_size),
        params=dict(params),
        extra_inputs=extra_input_widths(spec, dataset),
        weights=train.weights,
    )
    model, base = prepare_model(spec, context, train)
    smoothing = train.label_smoothing

    fit_idx, validation_data = train_idx, None
    if train.early_stopping is not None or train.reduce_lr is not None:
        fraction = train.early_stopping.validation_fraction if train.early_stopping else 0.1
        fit_pos, stop_pos = inner_split(dataset.labels[train_idx], dataset.groups[train_idx], fraction, seed)
        fit_idx, stop_idx = train_idx[fit_pos], train_idx[stop_pos]
        validation_data = (
            model_inputs(spec, dataset, image_size, stop_idx),
            targets(dataset.labels[stop_idx], num_classes, smoothing),
        )
    x = model_inputs(spec, dataset, image_size, fit_idx)
    y = targets(dataset.labels[fit_idx], num_classes, smoothing)
    class_weight = balanced_class_weight(dataset.labels[fit_idx]) if train.class_weight == "balanced" else None
    fit_args = dict(
        x=x, y=y, validation_data=validation_data, batch_size=train.batch_size,
        class_weight=class_weight, shuffle=True, verbose=0,
    )

    started = time.perf_counter()
    compile_model(model, train.optimizer, train.learning_rate, smoothing)
    history = model.fit(epochs=train.epochs, callbacks=_callbacks(train, on_epoch), **fit_args)
    epochs_run = len(history.epoch)
    if train.fine_tune is not None:
        ft = train.fine_tune
        from harness.backbones import set_base_trainable

        set_base_trainable(base, True, from_layer=ft.from_layer, last=ft.last)
        # Recompiling makes the new trainable set take effect; the phase goes on from where phase one stopped.
        compile_model(model, train.optimizer, ft.learning_rate, smoothing)
        history = model.fit(
            initial_epoch=epochs_run, epochs=epochs_run + ft.epochs, callbacks=_callbacks(train, on_epoch), **fit_args
        )
        epochs_run += len(history.epoch)
    fit_seconds = time.perf_counter() - started
    probabilities = model.predict(
        model_inputs(spec, dataset, image_size, val_idx), batch_size=train.batch_size, verbose=0
    )
    del model
    keras.backend.clear_session()
    return FoldResult(np.asarray(probabilities, dtype="float64"), fit_seconds, epochs_run)
