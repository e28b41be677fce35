"""Fit one fold: build (or take the kept model), train in one or two phases, score the held-out rows.

Phase one trains with the backbone (the layer named ``backbone``, see ``harness.toolkit.backbones``)
frozen unless ``freeze_base = false``; the optional fine-tuning phase unfreezes it from a layer
index or for its last layers and goes on at a lower learning rate, continuing the epoch count.
"""

from __future__ import annotations

import os
import time
import warnings
from collections.abc import Callable
from dataclasses import dataclass, field, replace
from typing import Any

import numpy as np

from harness.config.study import TrainConfig
from harness.data.dataset import Dataset
from harness.specs import ModelSpec
from harness.training.batches import ImageRows
from harness.training.build import augmented, compile_model, load_keras
from harness.training.epochs import fit_head
from harness.training.features import FeatureCache
from harness.training.fold import Fold
from harness.training.inference import call_in_batches, head_predict, predict_once
from harness.training.keeper import FrozenSplit, ModelKeeper
from harness.training.phases import TopPhase, boundary_phase, cached_phase_possible, feature_phase


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
    #: What the fold's record should say about how it was trained (e.g. that its scored rows steered it).
    warnings: list[str] = field(default_factory=list)


@dataclass
class Trained:
    """A fold's model through its phases: as built (``unaugmented``, what is saved), as fitted end
    to end (``model``, with its augmentation), and how the phases left it to be scored."""

    unaugmented: Any
    model: Any
    base: Any
    split: FrozenSplit | None
    epochs_run: int = 0
    head_inputs: Callable | None = None
    top: TopPhase | None = None


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
    tensorboard: str | os.PathLike | None = None,
    steer_idx: np.ndarray | None = None,
) -> FoldResult:
    """Build, fit on ``train_idx`` (one or two phases) and predict ``val_idx`` (may be empty).
    ``save_model``: also save the trained model, without augmentation layers, as a ``.keras`` file.
    ``keeper``: where the model is kept between folds (see ``ModelKeeper``); by default the
    cache's own, and with no cache none is kept. ``tensorboard``: a folder for the fold's TensorBoard
    event file (see harness.training.tensorboard). ``steer_idx``: the rows that steer training under
    validation_data = "scored_fold": a CV fold's scored rows (``val_idx``), or, for a locked test
    set's fold models, the fold's validation rows; never a test row.

    Runs under the study's precision policy; out of accelerator memory, it retries the fold with
    half the batch size, down to 1.
    """
    keras = load_keras()
    keeper = _keeper_for(keeper, cache)
    batch_size = train.batch_size
    previous = keras.config.dtype_policy()
    keras.config.set_dtype_policy(train.precision)
    try:
        while True:
            try:
                return _fit_fold(
                    spec, dataset, image_size, params, replace(train, batch_size=batch_size),
                    train_idx, val_idx, seed, on_epoch, cache, save_model, keeper, tensorboard, steer_idx,
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


def _keeper_for(keeper: ModelKeeper | None, cache: FeatureCache | None) -> ModelKeeper:
    """``keeper``, else the cache's own (fits sharing a cache share its kept model), else a new one:
    a model is kept only for a phase on cached features."""
    if keeper is not None:
        return keeper
    if cache is None:
        return ModelKeeper()
    if cache.keeper is None:
        cache.keeper = ModelKeeper()
    return cache.keeper


def release_device_memory() -> None:
    """Clear Keras's session, and with PyTorch on a GPU empty torch's cache of freed blocks too,
    which it otherwise keeps from other processes (workers sharing the GPU)."""
    keras = load_keras()
    keras.backend.clear_session()
    if keras.backend.backend() == "torch":
        import torch

        if torch.cuda.is_available():
            torch.cuda.empty_cache()


def _fit_fold(spec, dataset, image_size, params, train, train_idx, val_idx, seed, on_epoch, cache,
              save_model=None, keeper=None, tensorboard=None, steer_idx=None) -> FoldResult:
    """One try of ``fit_fold`` at ``train``'s batch size."""
    fold = Fold.plan(spec, dataset, image_size, params, train, train_idx, seed,
                     scored_idx=steer_idx, on_epoch=on_epoch, cache=cache,
                     keeper=keeper or ModelKeeper(), tensorboard=tensorboard)
    model, base, split = fold.keeper.model_for_fold(spec, fold.context, train, seed, cached_phase_possible(cache, train))
    if train.preprocess == "dataset":
        from harness.toolkit.backbones import set_dataset_stats

        set_dataset_stats(model, ImageRows(dataset.images(image_size), train_idx))  # the training fold's alone
    fold.owner = model
    trained = Trained(model, model, base, split)
    started = time.perf_counter()
    if split is not None:
        _train_head(fold, trained)
    else:
        _train_end_to_end(fold, trained)
    if train.fine_tune is not None:
        _fine_tune(fold, trained)
    fit_seconds = time.perf_counter() - started
    if save_model is not None:
        _save_model(trained.unaugmented, save_model)
    probabilities = _scores(fold, trained, val_idx)
    return FoldResult(np.asarray(probabilities, dtype="float64"), fit_seconds, trained.epochs_run, base is not None,
                      fold.history, fold.warnings)


def _train_head(fold: Fold, trained: Trained) -> None:
    """Phase one on cached features: the head alone; with fine-tuning to follow, the kept model
    wrapped in its augmentation layers (once per setting) for an end-to-end phase."""
    split, train = trained.split, fold.train
    trained.head_inputs, views = feature_phase(fold, split)
    split.compile_head(train)
    trained.epochs_run = fit_head(
        split, views or [trained.head_inputs(fold.fit_idx)], fold.y, fold.sample_weights,
        fold.validation(trained.head_inputs), train.epochs, train.batch_size, fold.seed, fold.callbacks("train"),
    )
    if train.fine_tune is not None:
        setting = repr(train.augment)
        if setting not in split.augmented:
            split.augmented[setting] = augmented(trained.model, train)
        trained.model = split.augmented[setting]


def _train_end_to_end(fold: Fold, trained: Trained) -> None:
    """Phase one end to end, on the images through the model's augmentation."""
    train = fold.train
    trained.model = augmented(trained.model, train)
    compile_model(trained.model, train.optimizer, train.learning_rate, train.label_smoothing, train=train,
                  jit_compile=train.jit_compile)
    trained.epochs_run = len(_fit_end_to_end(fold, trained, epochs=train.epochs).epoch)


def _fit_end_to_end(fold: Fold, trained: Trained, **epochs):
    images = fold.image_inputs
    return fold.fit_phase(trained.model, trained.unaugmented, images, [images(fold.fit_idx)], **epochs)


def _fine_tune(fold: Fold, trained: Trained) -> None:
    """The fine-tuning phase: the backbone unfrozen from its first trainable layer on, the top part
    trained on the boundary cache where it can be, else the whole model end to end."""
    from harness.toolkit.backbones import first_trainable_layer, random_weights, set_base_trainable

    train, base = fold.train, trained.base
    ft = train.fine_tune
    set_base_trainable(
        base, True, from_layer=ft.from_layer, last=ft.last,
        train_batchnorm=ft.batchnorm_trainable or random_weights(fold.context.weights),
    )
    start = first_trainable_layer(base, ft.from_layer, ft.last)
    trained.top = top = boundary_phase(fold, trained.split, trained.unaugmented, base, start)
    # total_epochs: on to that count, however many epochs phase one ran before it stopped.
    end = ft.total_epochs if ft.total_epochs is not None else trained.epochs_run + ft.epochs
    epochs = {"initial_epoch": trained.epochs_run, "epochs": end}
    if top is None:
        # Recompiling makes the new trainable set take effect; the phase goes on from where phase one stopped.
        compile_model(trained.model, train.optimizer, ft.learning_rate, train.label_smoothing, train=train,
                      jit_compile=train.jit_compile)
        history = _fit_end_to_end(fold, trained, **epochs)
    else:
        history = fold.fit_phase(top.top, top.top, top.inputs, top.views or [top.inputs(fold.fit_idx)], **epochs)
    trained.epochs_run += len(history.epoch)


def _scores(fold: Fold, trained: Trained, val_idx: np.ndarray) -> np.ndarray:
    """The class probabilities of ``val_idx`` from whichever net the last phase trained."""
    batch_size = fold.train.batch_size
    if len(val_idx) == 0:
        return np.zeros((0, fold.num_classes))
    if trained.split is not None and fold.train.fine_tune is None:
        return head_predict(trained.split.head, trained.head_inputs(val_idx), batch_size)
    if trained.top is not None:
        return call_in_batches(trained.top.top, trained.top.inputs(val_idx), batch_size)
    return predict_once(trained.model, fold.image_inputs(val_idx), batch_size)


def _save_model(model, path) -> None:
    """Save a trained model as a ``.keras`` file. A model split for the cached phase shares its
    extra inputs with the head model, which Keras cannot serialise: a clone with the same weights can."""
    try:
        model.save(path)
    except RuntimeError:
        clone = load_keras().models.clone_model(model)
        clone.set_weights(model.get_weights())
        clone.save(path)
