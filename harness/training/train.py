"""Train and score one configuration on one fold: the same way for every model.

A fold is fitted in up to two phases. Phase one trains with the backbone (the layer named
``backbone``, see ``harness.toolkit.backbones``) frozen unless ``freeze_base = false``; the optional
fine-tuning phase unfreezes it from a layer index or for its last layers and goes on at a lower
learning rate, continuing the epoch count. Early stopping and ReduceLROnPlateau watch a share of
the training fold held out for that purpose; the scored fold never steers training.
"""

from __future__ import annotations

import json
import os
import time
import warnings
from collections.abc import Callable
from dataclasses import dataclass, field, replace
from typing import Any

import numpy as np
from sklearn.model_selection import GroupShuffleSplit, StratifiedGroupKFold
from sklearn.utils.class_weight import compute_class_weight

from harness.config.study import TrainConfig
from harness.data.dataset import Dataset
from harness.errors import HarnessError
from harness.training.features import FeatureCache, backbone_key, reset_head, split_model
from harness.training.keeper import FrozenSplit, ModelKeeper, TopPart
from harness.specs import BuildContext, ModelSpec


def head_steps_per_execution() -> int:
    """Batches per call of the head's train function where it trains with ``fit`` (backends other
    than TensorFlow): 64 instead of one (identical arithmetic), but 1 with PyTorch, whose Keras
    trainer takes no more."""
    return 1 if _keras().backend.backend() == "torch" else 64


@dataclass
class FoldResult:
    probabilities: np.ndarray
    fit_seconds: float
    epochs_run: int
    #: Whether the model has a backbone (a layer named ``backbone``), so its weights setting applies.
    backbone: bool = False
    #: Per epoch, over every phase: "phase", "learning_rate" and Keras's logs (loss, accuracy, and
    #: val_loss, val_accuracy on the early-stopping split when there is one), one list each.
    history: dict[str, list] = field(default_factory=dict)


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


def prepare_model(spec: ModelSpec, context: BuildContext, train: TrainConfig, augment: bool = True):
    """Build the model, add the study's augmentation (unless ``augment`` is false) and apply the
    phase-one freezing rule. Returns the model and its backbone (None for models trained from scratch).

    A backbone built from random weights (weights = "none") that trains also trains its
    BatchNormalization layers; a pretrained one keeps them frozen (see ``set_base_trainable``).
    """
    from harness.toolkit.backbones import find_backbone, random_weights, set_base_trainable

    model = build_model(spec, context)
    if augment:
        model = _augmented(model, train)
    base = find_backbone(model)
    if base is None and train.fine_tune is not None:
        raise HarnessError(
            f"model '{spec.name}' has no pretrained backbone (no layer named 'backbone') to fine-tune; "
            "remove fine_tune from this candidate."
        )
    if base is not None:
        set_base_trainable(base, not train.freeze_base, train_batchnorm=random_weights(context.weights))
    return model, base


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


def epoch_history(history: dict[str, list], phase: str):
    """A callback that appends each epoch's logs, its phase and the learning rate it trained with
    to ``history`` (a list per key; a key missing in an epoch gets None there)."""
    keras = _keras()

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


def _callbacks(train: TrainConfig, on_epoch: Callable[[int, dict], None] | None, history=None) -> list:
    """Fresh callbacks for one phase (their patience and best values start over); ``history`` an
    ``epoch_history`` callback, first so that it sees each epoch's learning rate unchanged."""
    keras = _keras()
    callbacks = [] if history is None else [history]
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


def _batchnorm_calibration(model, inputs, batch_size: int, seed: int) -> list:
    """A callback that recomputes the moving statistics of ``model``'s training BatchNormalization
    layers (a model or backbone trained from random weights) on the rows of ``inputs``, before each
    validation pass and when training ends; none when no such layer trains.

    Goes after EarlyStopping: statistics of the weights it restores. ``model`` is the model without
    its augmentation, so the statistics are those of the images as scored.
    """
    from harness.toolkit.backbones import calibrate_batchnorm, trainable_batchnorm

    batchnorm = trainable_batchnorm(model)
    if not batchnorm:
        return []
    keras = _keras()
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
            calibrate()

    return [BatchNormCalibration()]


def is_out_of_memory(exc: BaseException) -> bool:
    """An accelerator out-of-memory error, whatever the backend calls it."""
    text = f"{type(exc).__name__}: {exc}"
    return any(m in text for m in ("RESOURCE_EXHAUSTED", "ResourceExhausted", "OutOfMemory", "out of memory"))


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
    cache: FeatureCache | None = None,
    save_model: str | os.PathLike | None = None,
    *,
    keeper: ModelKeeper | None = None,
) -> FoldResult:
    """Build, fit on ``train_idx`` (one or two phases) and predict ``val_idx`` (may be empty).
    ``save_model``: also save the trained model, without augmentation layers, as a ``.keras`` file.

    Runs under the study's precision policy; out of accelerator memory, it retries the fold with
    half the batch size, down to 1.
    """
    keras = _keras()
    keeper = _keeper_for(keeper, cache)
    batch_size = train.batch_size
    previous = keras.config.dtype_policy()
    keras.config.set_dtype_policy(train.precision)
    try:
        while True:
            try:
                return _fit_fold(
                    spec, dataset, image_size, params, replace(train, batch_size=batch_size),
                    train_idx, val_idx, seed, on_epoch, cache, save_model, keeper,
                )
            except Exception as exc:
                keeper.forget()  # a fold that failed part-way may leave it in any state
                if not is_out_of_memory(exc) or batch_size == 1:
                    raise
                batch_size //= 2
                warnings.warn(f"out of accelerator memory: retrying the fold with batch size {batch_size}")
            finally:
                # Release device memory between folds and trials, unless the model is kept for the
                # next fold. clear_session() runs gc.collect(): ~0.35 s with a backbone in memory.
                if keeper.split is None:
                    release_device_memory()
    finally:
        keras.config.set_dtype_policy(previous)


def release_device_memory() -> None:
    """Clear Keras's session, and with PyTorch on a GPU empty torch's cache of freed blocks too,
    which it otherwise keeps from other processes (workers sharing the GPU)."""
    keras = _keras()
    keras.backend.clear_session()
    if keras.backend.backend() == "torch":
        import torch

        if torch.cuda.is_available():
            torch.cuda.empty_cache()


def _keeper_for(keeper: ModelKeeper | None, cache: FeatureCache | None) -> ModelKeeper:
    """``keeper``, else the cache's own (fits sharing a cache share its kept model), else a new one."""
    if keeper is not None:
        return keeper
    return ModelKeeper() if cache is None else cache.keeper


def _fit_fold(spec, dataset, image_size, params, train, train_idx, val_idx, seed, on_epoch, cache,
              save_model=None, keeper=None) -> FoldResult:
    keeper = keeper or ModelKeeper()
    num_classes = len(dataset.classes)
    context = BuildContext(
        num_classes=num_classes,
        image_size=tuple(image_size),
        params=dict(params),
        extra_inputs=extra_input_widths(spec, dataset),
        weights=train.weights,
    )
    smoothing = train.label_smoothing
    fit_idx, stop_idx = train_idx, None
    if train.early_stopping is not None or train.reduce_lr is not None:
        fraction = train.early_stopping.validation_fraction if train.early_stopping else 0.1
        fit_pos, stop_pos = inner_split(dataset.labels[train_idx], dataset.groups[train_idx], fraction, seed)
        fit_idx, stop_idx = train_idx[fit_pos], train_idx[stop_pos]
    class_weight = balanced_class_weight(dataset.labels[fit_idx]) if train.class_weight == "balanced" else None
    sample_weights = None
    if class_weight is not None:
        sample_weights = np.array([class_weight[int(c)] for c in dataset.labels[fit_idx]], dtype="float32")
    y = targets(dataset.labels[fit_idx], num_classes, smoothing)

    def validation(index_inputs):
        if stop_idx is None:
            return None
        return index_inputs(stop_idx), targets(dataset.labels[stop_idx], num_classes, smoothing)

    def image_inputs(index):
        return model_inputs(spec, dataset, image_size, index)

    def fit_phase(net, calibrated, inputs_of, views, **epochs):
        """Fit ``net`` on ``views`` (each the training rows' inputs), BatchNormalization statistics
        recalibrated on ``calibrated`` (the model as scored) where they train."""
        calibration = _batchnorm_calibration(calibrated, inputs_of(fit_idx), train.batch_size, seed)
        phase = "fine-tune" if "initial_epoch" in epochs else "train"
        callbacks = _callbacks(train, on_epoch, epoch_history(epoch_log, phase)) + calibration
        held_out = validation(lambda index: _read_rows(inputs_of(index)))
        return fit_in_order(
            net, views, y, sample_weights, train.batch_size, seed, callbacks, validation_data=held_out, **epochs
        )

    def fit_end_to_end(**epochs):
        return fit_phase(model, unaugmented, image_inputs, [image_inputs(fit_idx)], **epochs)

    model, base, split = _model_for_fold(spec, context, train, seed, cache, keeper)
    unaugmented = model
    epoch_log: dict[str, list] = {}
    started = time.perf_counter()
    if split is not None:
        head_inputs, views = _cached_features(cache, split, spec, dataset, image_size, train, fit_idx)
        _compile_head(split, train)
        epochs_run = fit_head(
            split, views or [head_inputs(fit_idx)], y, sample_weights, validation(head_inputs), train.epochs,
            train.batch_size, seed, _callbacks(train, on_epoch, epoch_history(epoch_log, "train")),
        )
        if train.fine_tune is not None:
            setting = repr(train.augment)
            if setting not in split.augmented:
                split.augmented[setting] = _augmented(model, train)
            model = split.augmented[setting]
    else:
        model = _augmented(model, train)
        compile_model(model, train.optimizer, train.learning_rate, smoothing, jit_compile=train.jit_compile)
        history = fit_end_to_end(epochs=train.epochs)
        epochs_run = len(history.epoch)
    boundary = None
    if train.fine_tune is not None:
        ft = train.fine_tune
        from harness.toolkit.backbones import first_trainable_layer, random_weights, set_base_trainable

        set_base_trainable(
            base, True, from_layer=ft.from_layer, last=ft.last, train_batchnorm=random_weights(context.weights)
        )
        start = first_trainable_layer(base, ft.from_layer, ft.last)
        boundary = _boundary_phase(cache, split, unaugmented, base, start, dataset, image_size, train, fit_idx)
        fine_tune_epochs = {"initial_epoch": epochs_run, "epochs": epochs_run + ft.epochs}
        if boundary is None:
            # Recompiling makes the new trainable set take effect; the phase goes on from where phase one stopped.
            compile_model(model, train.optimizer, ft.learning_rate, smoothing, jit_compile=train.jit_compile)
            history = fit_end_to_end(**fine_tune_epochs)
        else:
            top, top_inputs, top_views = boundary
            history = fit_phase(top, top, top_inputs, top_views or [top_inputs(fit_idx)], **fine_tune_epochs)
        epochs_run += len(history.epoch)
    fit_seconds = time.perf_counter() - started
    if save_model is not None:
        _save_model(unaugmented, save_model)
    if len(val_idx) == 0:
        probabilities = np.zeros((0, num_classes))
    elif split is not None and train.fine_tune is None:
        probabilities = _head_predict(split.head, head_inputs(val_idx), train.batch_size)
    elif boundary is not None:
        probabilities = _call_in_batches(boundary[0], boundary[1](val_idx), train.batch_size)
    else:
        probabilities = predict_once(model, image_inputs(val_idx), train.batch_size)
    return FoldResult(np.asarray(probabilities, dtype="float64"), fit_seconds, epochs_run, base is not None, epoch_log)


def _save_model(model, path) -> None:
    """Save a trained model as a ``.keras`` file. A model split for the cached phase shares its
    extra inputs with the head model, which Keras cannot serialise: a clone with the same weights can."""
    try:
        model.save(path)
    except RuntimeError:
        clone = _keras().models.clone_model(model)
        clone.set_weights(model.get_weights())
        clone.save(path)


def _model_key(spec: ModelSpec, context: BuildContext, train: TrainConfig) -> str:
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
         weights, train.precision], sort_keys=True, default=str,
    )


def _model_for_fold(spec, context, train, seed, cache, keeper: ModelKeeper) -> tuple[Any, Any, FrozenSplit | None]:
    """``(model, base, split)`` with the head starting from ``seed``; split is set when the first
    phase trains the head on cached features.

    The model of the last such fold is kept and reused while the configuration's model is the
    same (only optimizer settings differ): without fine-tuning only the head changes, and with it
    each fold restores the weights as built. The head's start depends on the seed alone, whether
    the model is new or kept.
    """
    keras = _keras()
    keep = cached = _cached_phase_possible(cache, train)
    key = _model_key(spec, context, train) if keep else ""
    kept = keeper.split
    if keep and kept is not None and kept.key == key:
        session = keras.backend.get_uid("harness_kept_model")
        if session == kept.session + 1:  # no clear_session() since: the kept model is whole
            kept.session = session
            if train.fine_tune is not None and kept.initial_weights is None:
                kept.initial_weights = _built_weights(kept)
            kept.restore(seed)
            return kept.model, kept.base, kept
    keeper.forget()
    # A kept model must not depend on which fold built it; its head is reset per fold anyway.
    keras.utils.set_random_seed(0 if keep else seed)
    model, base = prepare_model(spec, context, train, augment=False)
    parts = split_model(model)
    if not cached or base is None or parts is None:
        reset_head(parts[1] if parts else None, seed)
        return model, base, None
    extractor, head = parts
    split = FrozenSplit(key, model, base, extractor, head, backbone_key(extractor, context.image_size))
    if train.fine_tune is not None:
        split.initial_weights = _built_weights(split)
    split.reset_head(seed)
    if keep:
        keeper.split = split
        split.session = keras.backend.get_uid("harness_kept_model")
    return model, base, split


def _built_weights(split: FrozenSplit) -> list:
    """The weights of a split model as built (kept before any fold changes them)."""
    return [np.array(w) for w in split.model.get_weights()]


def _compile_head(split: FrozenSplit, train: TrainConfig) -> None:
    """Compile the head once per optimizer setting; later folds restore the optimizer's initial
    state instead, which keeps the traced train function."""
    if _compile_kept(split, split.head, train, train.learning_rate, steps_per_execution=head_steps_per_execution()):
        split.loops = None


def _compile_kept(holder, model, train: TrainConfig, learning_rate: float, **kwargs) -> bool:
    """Compile a kept ``model`` once per optimizer setting (remembered on ``holder``, with the
    optimizer's initial state); later folds restore that state instead, which keeps the traced
    train function. Sets the learning rate; returns whether it compiled."""
    setting = (train.optimizer, train.label_smoothing, train.jit_compile)
    compiled = holder.compiled != setting
    if compiled:
        compile_model(model, train.optimizer, learning_rate, train.label_smoothing, jit_compile=train.jit_compile, **kwargs)
        model.optimizer.build(model.trainable_variables)
        holder.optimizer_start = [np.array(v) for v in model.optimizer.variables]
        holder.compiled = setting
    else:
        for variable, start in zip(model.optimizer.variables, holder.optimizer_start):
            variable.assign(start)
    model.optimizer.learning_rate = learning_rate
    return compiled


def _head_predict(head, inputs, batch_size: int) -> np.ndarray:
    """The head's probabilities, called directly batch by batch: ``predict`` would trace a new
    predict function for every fold (~0.2 s on a CPU, more than the head's arithmetic)."""
    parts = inputs if isinstance(inputs, list) else [inputs]  # split_model's head takes a list
    return _call_in_batches(head, parts, max(batch_size, 256))


def predict_once(model, inputs, batch_size: int) -> np.ndarray:
    """The probabilities of a model that predicts once (a fold's own model): with TensorFlow called
    directly batch by batch, else with ``predict``.

    Keras's ``predict`` traces a predict function for each new model, and again for a short last
    batch: with a new model per fold, one or two calls per trace, which TensorFlow reports as
    frequent retracing, and which costs more than it saves over a fold's rows (a traced pass of
    its own, see ``forward_pass``, would still be one trace for a few calls per fold).
    """
    if _keras().backend.backend() != "tensorflow":
        return model.predict(inputs, batch_size=batch_size, verbose=0)
    return _call_in_batches(model, inputs, batch_size)


def _call_in_batches(model, inputs, batch_size: int) -> np.ndarray:
    """``model(batch, training=False)`` over the rows of ``inputs`` (an array, or a list or dict
    of arrays), as one array."""
    keras = _keras()
    rows = len(keras.tree.flatten(inputs)[0])
    out = []
    for start in range(0, rows, batch_size):
        batch = keras.tree.map_structure(lambda a: a[start : start + batch_size], inputs)
        out.append(keras.ops.convert_to_numpy(model(batch, training=False)))
    return np.concatenate(out)


def _augmented(model, train: TrainConfig):
    from harness.toolkit.augment import with_augmentation

    return with_augmentation(model, train.augment)


def _cached_phase_possible(cache: FeatureCache | None, train: TrainConfig) -> bool:
    """A frozen first phase (on a backbone, checked later), with no augmentation or with precomputed views."""
    augmenting = train.augment is not None and train.augment.active()
    return cache is not None and train.feature_cache and train.freeze_base and (not augmenting or train.views > 0)


def _cached_features(cache, split, spec, dataset, image_size, train, fit_idx):
    """``(inputs(index), views | None)`` for the head, from cached features.

    ``inputs(index)`` gives the head's inputs (un-augmented features [+ one-hot extras]) for any
    rows; with ``train.views`` > 0, ``views`` holds the head's training inputs for each augmented view.
    """
    images = dataset.images(image_size)
    ids = cache.ids(images)
    extractor, head, key = split.extractor, split.head, split.backbone_key
    batch_size = max(train.batch_size, 64)
    features = cache.features(extractor, key, images, ids, batch_size=batch_size, predict=forward_pass)
    extras = [dataset.one_hot(t.name.split(":")[0]) for t in head.inputs[1:]]

    def inputs(index):
        return [features[index], *(e[index] for e in extras)] if extras else features[index]

    if train.views == 0:
        return inputs, None
    from harness.toolkit.augment import augmentation_layers

    def make_augmenter():
        keras = _keras()
        return keras.Sequential(augmentation_layers(train.augment))

    views = []
    for view in range(1, train.views + 1):
        computed = cache.features(
            extractor, key, images[fit_idx], [ids[i] for i in fit_idx], view, make_augmenter, batch_size, forward_pass
        )
        views.append([computed, *(e[fit_idx] for e in extras)] if extras else computed)
    return inputs, views


def _boundary_phase(cache, kept: FrozenSplit | None, model, base, start, dataset, image_size, train, fit_idx):
    """``(top, inputs(index), views | None)`` to fine-tune ``model``'s top part on the boundary
    cache (see ``harness.training.boundary``), compiled for the phase, or None (logging why) when the phase
    runs end to end. ``kept``: the split model when the model is kept between folds, which keeps
    its top parts (and their traced train functions) too.

    ``inputs(index)`` gives the top's inputs (un-augmented boundary rows [+ one-hot extras]); with
    augmentation, ``views`` holds the training rows' inputs for each precomputed view, served by
    epoch as the cached head phase serves its features.
    """
    from harness.training.boundary import boundary_cache_for, budget_bytes, say_end_to_end, split_at_boundary

    if cache is None:
        return None
    augmenting = train.augment is not None and train.augment.active()
    if not train.feature_cache:
        return say_end_to_end("feature_cache = false")
    if not train.boundary_cache:
        return say_end_to_end("boundary_cache = false")
    if not train.freeze_base:
        return say_end_to_end("freeze_base = false: phase one trains the frozen part, so it differs per fold")
    if augmenting and train.views == 0:
        return say_end_to_end("augmentation without precomputed views (views = 0)")
    top_part = None if kept is None else kept.tops.get(start)
    if top_part is None:
        split = split_at_boundary(model, base, start, image_size)
        if isinstance(split, str):
            return say_end_to_end(split)
        top_part = TopPart(split)
        if kept is not None:
            kept.tops[start] = top_part
    split = top_part.split
    boundary_cache = boundary_cache_for(cache)
    images = dataset.images(image_size)
    ids = cache.ids(images)
    fit_ids = [ids[i] for i in fit_idx]
    rows = boundary_cache.missing(split.key, ids) + sum(
        boundary_cache.missing(split.key, fit_ids, view) for view in range(1, train.views + 1)
    )
    budget = budget_bytes(boundary_cache.root, train.boundary_cache_budget)
    if rows * split.row_bytes > budget:
        return say_end_to_end(
            f"the boundary cache at backbone layer {split.cut} would add {rows * split.row_bytes / 2**20:.0f} MiB "
            f"({rows} rows of {split.row_bytes} bytes), over its budget of {budget / 2**20:.0f} MiB "
            "($HARNESS_BOUNDARY_CACHE_BUDGET)"
        )
    batch_size = max(train.batch_size, 64)
    boundary = boundary_cache.rows(split, images, ids, batch_size=batch_size, predict=forward_pass)
    _compile_kept(top_part, split.top, train, train.fine_tune.learning_rate)
    extras = [dataset.one_hot(t.name.split(":")[0]) for t in split.top.inputs[1:]]

    def inputs(index):
        return [boundary.take(index), *(e[index] for e in extras)] if extras else boundary.take(index)

    if not augmenting:
        return split.top, inputs, None
    from harness.toolkit.augment import augmentation_layers

    def make_augmenter():
        return _keras().Sequential(augmentation_layers(train.augment))

    views = []
    for view in range(1, train.views + 1):
        computed = boundary_cache.rows(
            split, images[fit_idx], fit_ids, view, make_augmenter, batch_size, forward_pass
        )
        views.append([computed, *(e[fit_idx] for e in extras)] if extras else computed)
    return split.top, inputs, views


def _read_rows(inputs):
    """``inputs`` with any memory-mapped rows (``harness.training.boundary.MappedRows``) read into arrays."""
    return _keras().tree.map_structure(lambda a: a if isinstance(a, np.ndarray) else np.asarray(a), inputs)


def forward_pass(model, x, batch_size: int) -> np.ndarray:
    """``model``'s outputs for the rows of ``x`` (an array, or a dict of arrays by input; inference
    mode): with TensorFlow in a lean function of its own (see ``harness.tf_loops.predict``), else
    with ``predict``."""
    if _keras().backend.backend() != "tensorflow":
        return model.predict(x, batch_size=batch_size, verbose=0)
    from harness.training.loops import predict

    return predict(model, x, batch_size)


def epoch_order(seed: int, epoch: int, n: int) -> np.ndarray:
    """The order of the ``n`` training rows in an epoch: a permutation drawn from the fold seed and
    the epoch. Every training path takes its batches in this order, so they all see the same batches."""
    return np.random.default_rng([seed, epoch]).permutation(n)


def shuffled_batches(views: list, y: np.ndarray, sample_weights: np.ndarray | None, batch_size: int, seed: int):
    """A ``keras.utils.PyDataset`` of training batches in ``epoch_order``; epoch e serves
    ``views[e % len(views)]`` (augmented views of the features). Fit it with ``shuffle=False`` and
    its ``follow_epochs()`` callback, which tells it the epoch (Keras may peek at batches first)."""
    keras = _keras()

    class ShuffledBatches(keras.utils.PyDataset):
        def __init__(self):
            super().__init__()
            self.epoch, self.order = 0, epoch_order(seed, 0, len(y))

        def __len__(self):
            return -(-len(y) // batch_size)

        def __getitem__(self, i):
            rows = self.order[i * batch_size : (i + 1) * batch_size]
            x = keras.tree.map_structure(lambda a: a[rows], views[self.epoch % len(views)])
            return (x, y[rows]) if sample_weights is None else (x, y[rows], sample_weights[rows])

        def follow_epochs(self):
            def begin(epoch, logs=None):
                self.epoch, self.order = epoch, epoch_order(seed, epoch, len(y))

            return keras.callbacks.LambdaCallback(on_epoch_begin=begin)

    return ShuffledBatches()


def fit_in_order(model, views: list, y, sample_weights, batch_size: int, seed: int, callbacks: list, **fit_kwargs):
    """``model.fit`` on ``shuffled_batches`` (batches in ``epoch_order``), every random seed set from
    ``seed`` as training begins; returns its History."""
    keras = _keras()
    batches = shuffled_batches(views, y, sample_weights, batch_size, seed)
    # Seeded after what fit builds first: with PyTorch, Keras's dropout draws from torch's global
    # generator, which that build (and predict) also draw from, but only on a model's first fit.
    seeding = keras.callbacks.LambdaCallback(on_train_begin=lambda logs=None: keras.utils.set_random_seed(seed))
    return model.fit(
        batches, shuffle=False, verbose=0, callbacks=[seeding, batches.follow_epochs(), *callbacks], **fit_kwargs
    )


def fit_head(split: FrozenSplit, views: list, y, sample_weights, validation, epochs: int, batch_size: int,
             seed: int, callbacks: list) -> int:
    """Train the head on in-memory features for up to ``epochs``; returns the epochs run.

    With TensorFlow each epoch is one call of a traced loop over the head's own ``train_step``
    (see ``harness.training.loops``); other backends use ``fit``. Both take the batches in
    ``epoch_order`` and run the same callbacks.
    """
    keras = _keras()
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
