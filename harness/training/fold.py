"""One fold's plan: its build context, the rows it trains on and the early-stopping share, its
targets and class weights, and how each of its phases calls ``fit``."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from harness.config.study import TrainConfig
from harness.data.dataset import Dataset
from harness.specs import BuildContext, ModelSpec
from harness.training.batches import ImageRows, make_batches, model_rows
from harness.training.build import balanced_class_weight, extra_input_widths, inner_split, load_keras, targets
from harness.training.epochs import batchnorm_calibration, epoch_history, fit_in_order, phase_callbacks
from harness.training.features import FeatureCache
from harness.training.inference import read_rows
from harness.training.keeper import ModelKeeper
from harness.training.tensorboard import epoch_scalars
from harness.training.watch import restored_exactly, watchers

#: The batch size Keras's ``fit`` gives validation arrays when it is not told one (it is not: the
#: training rows come as a PyDataset); images read from the cache are served in batches of it too.
VALIDATION_BATCH = 32

#: A fold record's note when its own scored rows chose the epoch.
SCORED_FOLD_STEERS = ('steered by its scored fold (validation_data = "scored_fold", the study\'s way: '
                      "the scored fold chose the epoch, so its score is optimistic)")


@dataclass
class Fold:
    """What one fold trains on and with: ``fit_idx`` the rows it fits, ``stop_idx`` the held-out
    share that early stopping and learning-rate plateaus watch (None without either), ``y`` and
    ``sample_weights`` the fitted rows' targets and class weights; ``history`` collects its epochs."""

    spec: ModelSpec
    dataset: Dataset
    image_size: tuple[int, int]
    train: TrainConfig
    seed: int
    context: BuildContext
    fit_idx: np.ndarray
    stop_idx: np.ndarray | None
    y: np.ndarray
    sample_weights: np.ndarray | None
    on_epoch: Callable[[int, dict], None] | None = None
    cache: FeatureCache | None = None
    keeper: ModelKeeper = field(default_factory=ModelKeeper)
    history: dict[str, list] = field(default_factory=dict)
    #: The folder of the fold's TensorBoard event file, or None (see harness.training.tensorboard).
    tensorboard: Path | None = None
    #: The model as built (all phases train parts of it), and the early-stopping and keep-best
    #: callbacks a fine-tuning phase to ``total_epochs`` continues with.
    owner: object = None
    carried: list | None = None
    #: What the results should say about how this fold was trained.
    warnings: list[str] = field(default_factory=list)

    @classmethod
    def plan(cls, spec: ModelSpec, dataset: Dataset, image_size, params: dict, train: TrainConfig,
             train_idx: np.ndarray, seed: int, scored_idx: np.ndarray | None = None, **where) -> Fold:
        """The fold of ``train_idx``; ``where``: ``on_epoch``, ``cache``, ``keeper`` and ``tensorboard``.
        ``scored_idx``: the scored rows that may steer training with validation_data = "scored_fold"
        (None: none may)."""
        num_classes = len(dataset.classes)
        context = BuildContext(
            num_classes=num_classes,
            image_size=tuple(image_size),
            params=dict(params),
            extra_inputs=extra_input_widths(spec, dataset),
            weights=train.weights,
            preprocess=train.preprocess,
        )
        fit_idx, stop_idx, notes = _steering_rows(dataset, train, train_idx, scored_idx, seed)
        class_weight = balanced_class_weight(dataset.labels[fit_idx]) if train.class_weight == "balanced" else None
        sample_weights = None
        if class_weight is not None:
            sample_weights = np.array([class_weight[int(c)] for c in dataset.labels[fit_idx]], dtype="float32")
        y = targets(dataset.labels[fit_idx], num_classes, train.label_smoothing)
        return cls(spec, dataset, image_size, train, seed, context, fit_idx, stop_idx, y, sample_weights, **where,
                   warnings=notes)

    @property
    def num_classes(self) -> int:
        return len(self.dataset.classes)

    def image_inputs(self, index: np.ndarray):
        """The model's own inputs (images [+ one-hot extras]) for the rows ``index``, the images as
        ``ImageRows``: read a batch at a time, never as a copy of the fold."""
        return model_rows(self.dataset, self.spec.inputs, self.image_size, index)

    def extras(self, net) -> list[np.ndarray]:
        """The one-hot arrays of ``net``'s inputs after its first (a head's or top part's extra inputs)."""
        return [self.dataset.one_hot(t.name.split(":")[0]) for t in net.inputs[1:]]

    def validation(self, inputs_of: Callable[[np.ndarray], object]):
        """``(inputs, targets)`` of the early-stopping share, or None without one."""
        if self.stop_idx is None:
            return None
        return inputs_of(self.stop_idx), targets(self.dataset.labels[self.stop_idx], self.num_classes,
                                                 self.train.label_smoothing)

    def callbacks(self, phase: str) -> list:
        """A phase's callbacks, recording its epochs in ``history`` under ``phase``: fresh ones, but
        up to fine_tune.total_epochs the same early stopping (starting over each phase) and keep-best
        (its best epoch the whole run's), see ``harness.training.watch``."""
        ft, watching = self.train.fine_tune, None
        if ft is not None and ft.total_epochs is not None:
            if self.carried is None:
                self.carried = watchers(self.train, self.owner)
            watching = self.carried
            for watcher in watching:
                watcher.hold = phase == "train"  # the best epoch is restored after the last phase
        return phase_callbacks(self.train, self.on_epoch, epoch_history(self.history, phase), watching) + epoch_scalars(
            self.history, self.tensorboard
        )

    def fit_phase(self, net, calibrated, inputs_of, views: list, **epochs):
        """Fit ``net`` on ``views`` (each the training rows' inputs; ``inputs_of(index)`` gives any
        rows' inputs), BatchNormalization statistics recalibrated on ``calibrated`` (the model as
        scored) where they train; returns the History."""
        train = self.train
        callbacks = self.callbacks("fine-tune" if "initial_epoch" in epochs else "train")
        callbacks += batchnorm_calibration(calibrated, inputs_of(self.fit_idx), train.batch_size, self.seed,
                                           unless=lambda: restored_exactly(callbacks))
        held_out = self.validation(inputs_of)
        held_out = None if held_out is None else _served(*held_out)
        return fit_in_order(
            net, views, self.y, self.sample_weights, train.batch_size, self.seed, callbacks,
            validation_data=held_out, **epochs,
        )


def _served(inputs, y):
    """Validation data for ``fit``: images read from the cache as batches (of the size Keras gives
    arrays), else arrays (memory-mapped boundary rows read)."""
    if any(isinstance(a, ImageRows) for a in load_keras().tree.flatten(inputs)):
        return make_batches([inputs], y, batch_size=VALIDATION_BATCH)
    return read_rows(inputs), y


def _steering_rows(dataset: Dataset, train: TrainConfig, train_idx: np.ndarray, scored_idx: np.ndarray | None,
                   seed: int) -> tuple[np.ndarray, np.ndarray | None, list[str]]:
    """``(fit_idx, stop_idx, notes)``: the rows fitted and the rows early stopping, keep-best and
    learning-rate plateaus watch (None when nothing watches): a share held out of the training fold,
    or with validation_data = "scored_fold" the scored rows when ``scored_idx`` gives some (a locked
    test set never does: its fits hold a share out instead)."""
    if train.early_stopping is None and train.reduce_lr is None and train.keep_best is None:
        return train_idx, None, []
    if train.validation_data == "scored_fold" and scored_idx is not None and len(scored_idx):
        return train_idx, scored_idx, [SCORED_FOLD_STEERS]
    from harness.config.recipe import held_out_fraction

    fit_pos, stop_pos = inner_split(dataset.labels[train_idx], dataset.groups[train_idx], held_out_fraction(train), seed)
    return train_idx[fit_pos], train_idx[stop_pos], []
