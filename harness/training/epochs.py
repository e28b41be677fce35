"""The epoch loop: batches in a seeded order per epoch, ``fit`` on them, the head's traced loop,
and the callbacks every phase runs (early stopping, learning-rate plateaus, per-epoch history,
BatchNormalization recalibration)."""

from __future__ import annotations

from collections.abc import Callable

import numpy as np

from harness.config.study import TrainConfig
from harness.training.batches import epoch_order, make_batches
from harness.training.build import load_keras


def epoch_history(history: dict[str, list], phase: str):
    """A callback that appends each epoch's logs, its phase and the learning rate it trained with
    to ``history`` (a list per key; a key missing in an epoch gets None there)."""
    keras = load_keras()

    class EpochHistory(keras.callbacks.Callback):
        def on_epoch_end(self, epoch, logs=None):
            # Before ReduceLROnPlateau (later in the list) changes it: the rate this epoch used.
            rate = float(keras.ops.convert_to_numpy(self.model.optimizer.learning_rate))
            row = {"phase": phase, "learning_rate": rate, **{k: float(v) for k, v in (logs or {}).items()}}
            epochs = len(history.get("phase", []))
            for key in row.keys() - history.keys():
                history[key] = [None] * epochs
            for key, values in history.items():
                values.append(row.get(key))

    return EpochHistory()


def phase_callbacks(train: TrainConfig, on_epoch: Callable[[int, dict], None] | None, history=None,
                    watching: list | None = None) -> list:
    """Fresh callbacks for one phase (their patience and best values start over); ``history`` an
    ``epoch_history`` callback, first so that it sees each epoch's learning rate unchanged;
    ``watching``: the early stopping and keep-best of the phase before, going on to a total (see
    ``harness.training.watch``), else fresh ones."""
    from harness.training.watch import watchers

    keras = load_keras()
    callbacks = [] if history is None else [history]
    callbacks += watchers(train) if watching is None else watching
    if train.reduce_lr is not None:
        r = train.reduce_lr
        callbacks.append(
            keras.callbacks.ReduceLROnPlateau(monitor=r.monitor, factor=r.factor, patience=r.patience, min_lr=r.min_lr)
        )
    if on_epoch is not None:
        callbacks.append(keras.callbacks.LambdaCallback(on_epoch_end=on_epoch))
    return callbacks


def batchnorm_calibration(model, inputs, batch_size: int, seed: int,
                          unless: Callable[[], bool] | None = None) -> list:
    """A callback that recomputes the moving statistics of ``model``'s training BatchNormalization
    layers (a model or backbone trained from random weights) on the rows of ``inputs``, before each
    validation pass and when training ends (unless ``unless()`` then: a kept epoch restored with the
    statistics its validation used); none when no such layer trains.

    Goes after EarlyStopping: statistics of the weights it restores. ``model`` is the model without
    its augmentation, so the statistics are those of the images as scored.
    """
    from harness.toolkit.backbones import calibrate_batchnorm, trainable_batchnorm

    batchnorm = trainable_batchnorm(model)
    if not batchnorm:
        return []
    keras = load_keras()
    order = epoch_order(seed, 0, len(keras.tree.flatten(inputs)[0]))

    def calibrate():
        batches = (
            keras.tree.map_structure(lambda a: a[order[start : start + batch_size]], inputs)
            for start in range(0, len(order), batch_size)
        )
        calibrate_batchnorm(model, batchnorm, batches)

    class BatchNormCalibration(keras.callbacks.Callback):
        def on_test_begin(self, logs=None):
            calibrate()

        def on_train_end(self, logs=None):
            if unless is None or not unless():
                calibrate()

    return [BatchNormCalibration()]


def shuffled_batches(views: list, y: np.ndarray, sample_weights: np.ndarray | None, batch_size: int, seed: int):
    """A ``keras.utils.PyDataset`` of training batches in ``epoch_order``; epoch e serves
    ``views[e % len(views)]`` (augmented views of the features, or images read from the cache as
    ``ImageRows``). Fit it with ``shuffle=False`` and its ``follow_epochs()`` callback, which tells
    it the epoch (Keras may peek at batches first). See ``harness.training.batches.make_batches``."""
    return make_batches(views, y, sample_weights, batch_size, seed)


def fit_in_order(model, views: list, y, sample_weights, batch_size: int, seed: int, callbacks: list, **fit_kwargs):
    """``model.fit`` on ``shuffled_batches`` (batches in ``epoch_order``), every random seed set from
    ``seed`` as training begins; returns its History."""
    keras = load_keras()
    batches = shuffled_batches(views, y, sample_weights, batch_size, seed)
    # Seeded after what fit builds first: with PyTorch, Keras's dropout draws from torch's global
    # generator, which that build (and predict) also draw from, but only on a model's first fit.
    seeding = keras.callbacks.LambdaCallback(on_train_begin=lambda logs=None: keras.utils.set_random_seed(seed))
    return model.fit(
        batches, shuffle=False, verbose=0, callbacks=[seeding, batches.follow_epochs(), *callbacks], **fit_kwargs
    )


def fit_head(split, views: list, y, sample_weights, validation, epochs: int, batch_size: int,
             seed: int, callbacks: list) -> int:
    """Train ``split``'s head (a ``FrozenSplit``) on in-memory features for up to ``epochs``;
    returns the epochs run.

    With TensorFlow each epoch is one call of a traced loop over the head's own ``train_step``
    (see ``harness.training.loops``); other backends use ``fit``. Both take the batches in
    ``epoch_order`` and run the same callbacks.
    """
    keras = load_keras()
    head = split.head
    if keras.backend.backend() != "tensorflow":
        history = fit_in_order(
            head, views, y, sample_weights, batch_size, seed, callbacks, validation_data=validation, epochs=epochs
        )
        return len(history.epoch)
    from harness.training.loops import EpochLoops

    if split.loops is None:
        split.loops = EpochLoops(head)
    loops = split.loops
    views = [loops.tensors(v) for v in views]
    y = loops.tensors(y)
    sample_weights = None if sample_weights is None else loops.tensors(sample_weights)
    validation = None if validation is None else loops.tensors(validation)
    callback_list = keras.callbacks.CallbackList(callbacks, model=head, epochs=epochs, verbose=0)
    head.stop_training = False
    callback_list.on_train_begin()
    epoch = 0
    for epoch in range(epochs):
        callback_list.on_epoch_begin(epoch)
        head.reset_metrics()
        order = epoch_order(seed, epoch, len(y))
        loops.train_epoch(views[epoch % len(views)], y, sample_weights, order, batch_size)
        logs = {name: float(value) for name, value in head.get_metrics_result().items()}
        if validation is not None:
            head.reset_metrics()
            loops.test(*validation, batch_size)
            logs |= {f"val_{name}": float(value) for name, value in head.get_metrics_result().items()}
        callback_list.on_epoch_end(epoch, logs)
        if head.stop_training:
            break
    callback_list.on_train_end()
    return epoch + 1
