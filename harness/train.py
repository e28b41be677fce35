"""Train and score one configuration on one fold: the same way for every model."""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass

import numpy as np
from sklearn.model_selection import GroupShuffleSplit, StratifiedGroupKFold

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
    """Build, fit on ``train_idx`` and predict ``val_idx``; the scored fold never steers training."""
    keras = _keras()
    keras.backend.clear_session()
    keras.utils.set_random_seed(seed)
    context = BuildContext(
        num_classes=len(dataset.classes),
        image_size=tuple(image_size),
        params=dict(params),
        extra_inputs=extra_input_widths(spec, dataset),
    )
    model = build_model(spec, context)
    model.compile(
        optimizer=make_optimizer(train.optimizer, train.learning_rate),
        loss="sparse_categorical_crossentropy",
        metrics=["accuracy"],
    )
    callbacks = []
    fit_idx, validation_data = train_idx, None
    if train.early_stopping is not None:
        es = train.early_stopping
        fit_pos, stop_pos = inner_split(
            dataset.labels[train_idx], dataset.groups[train_idx], es.validation_fraction, seed
        )
        fit_idx, stop_idx = train_idx[fit_pos], train_idx[stop_pos]
        validation_data = (model_inputs(spec, dataset, image_size, stop_idx), dataset.labels[stop_idx])
        callbacks.append(
            keras.callbacks.EarlyStopping(monitor=es.monitor, patience=es.patience, restore_best_weights=True)
        )
    if on_epoch is not None:
        callbacks.append(keras.callbacks.LambdaCallback(on_epoch_end=on_epoch))
    started = time.perf_counter()
    history = model.fit(
        model_inputs(spec, dataset, image_size, fit_idx),
        dataset.labels[fit_idx],
        validation_data=validation_data,
        epochs=train.epochs,
        batch_size=train.batch_size,
        callbacks=callbacks,
        shuffle=True,
        verbose=0,
    )
    fit_seconds = time.perf_counter() - started
    probabilities = model.predict(
        model_inputs(spec, dataset, image_size, val_idx), batch_size=train.batch_size, verbose=0
    )
    del model
    keras.backend.clear_session()
    return FoldResult(np.asarray(probabilities, dtype="float64"), fit_seconds, len(history.epoch))
