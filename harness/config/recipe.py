"""The study recipes' [train] settings: the best epoch kept by a watched metric, which rows steer
training, preprocessing per candidate, optimizer momentum and Keras 2's ``decay``, and the checks
between them. Left out of a candidate's fingerprint at their defaults, so studies that do not use
them keep their search ids."""

from __future__ import annotations

from typing import Annotated, Any

from pydantic import StrictStr
from pydantic.dataclasses import dataclass

from harness.config.checks import TABLE, at_least, one_of, unknown_value
from harness.config.messages import problem

#: What early stopping, keep-best and learning-rate plateaus may watch ("val_top_k": top-k accuracy).
WATCHED = ("val_loss", "val_accuracy", "val_top_k")
#: "held_out": a share of the training fold steers training; "scored_fold": the scored fold itself
#: does, as the studies did (optimistic, and labelled so in the results).
VALIDATION_DATA = ("held_out", "scored_fold")
#: "model": the model's own preprocessing; the others replace it (see harness.toolkit.backbones.Preprocess).
PREPROCESS = ("model", "unit", "symmetric", "caffe", "torch", "lite", "per_image", "dataset")
#: Augmentation settings a probability may be given for (each transform's own switch).
PROBABLE = ("flip", "rotation", "zoom", "translation", "brightness", "contrast", "saturation", "blur", "noise")
#: The optimizers momentum applies to.
MOMENTUM_OPTIMIZERS = ("sgd", "rmsprop")
#: SGD's momentum when the study sets none (the harness's choice before ``momentum`` existed).
SGD_MOMENTUM = 0.9

#: [train] and sub-table settings left out of a fingerprint at these values.
TRAIN_DEFAULTS = {
    "momentum": None, "decay": 0.0, "keep_best": None, "validation_data": "held_out",
    "validation_fraction": None, "preprocess": "model",
}
SUB_DEFAULTS = {
    "early_stopping": {"top_k": 5},
    "fine_tune": {"batchnorm_trainable": False, "total_epochs": None},
    "augment": {"probability": {}},
}

#: Model parameters added for the recipes (cnn4/cnn5 padding), left out of search ids and fold
#: records at these values: the models built as before.
PARAM_DEFAULTS = {"padding": "same", "pool_padding": ""}


@dataclass(config=TABLE)
class KeepBest:
    """[train.keep_best]: restore the weights of the best epoch by ``monitor`` when training ends."""

    monitor: Annotated[StrictStr, one_of(WATCHED)] = "val_loss"
    #: k of "val_top_k".
    top_k: at_least(1) = 5


def without_defaults(plain: dict[str, Any]) -> dict[str, Any]:
    """A plain [train] dict (see ``harness.config.resolved``) without the recipe settings at their defaults."""
    out = {k: v for k, v in plain.items() if k not in TRAIN_DEFAULTS or v != TRAIN_DEFAULTS[k]}
    for table, defaults in SUB_DEFAULTS.items():
        if isinstance(out.get(table), dict):
            out[table] = {k: v for k, v in out[table].items() if k not in defaults or v != defaults[k]}
    return out


def params_without_defaults(params: dict[str, Any]) -> dict[str, Any]:
    """Model parameters without those of ``PARAM_DEFAULTS`` at their defaults."""
    return {k: v for k, v in params.items() if k not in PARAM_DEFAULTS or v != PARAM_DEFAULTS[k]}


def check_probability(probability: dict[str, Any], values: dict[str, Any]) -> dict[str, float]:
    """[train.augment] probability: a share in [0, 1] per transform that is set."""
    for name, p in probability.items():
        if name not in PROBABLE:
            raise unknown_value(name, PROBABLE, "probability")
        if isinstance(p, bool) or not isinstance(p, (int, float)) or not 0 <= p <= 1:
            raise problem(f"must be a probability between 0 and 1, got {p!r}.", f"probability.{name}")
        if not values.get(name):
            raise problem(f"is given a probability, but {name} itself is off; set {name} too.", f"probability.{name}")
    return {name: float(p) for name, p in probability.items()}


def check_recipe(train: Any) -> None:
    """The checks between [train]'s recipe settings (``train``: a TrainConfig)."""
    if train.momentum is not None:
        if not 0 <= train.momentum < 1:
            raise problem(f"must be at least 0 and below 1, got {train.momentum}.", "momentum")
        if train.optimizer not in MOMENTUM_OPTIMIZERS:
            raise problem(f'applies to optimizer = "sgd" or "rmsprop", not "{train.optimizer}".', "momentum")
    if train.decay < 0:
        raise problem(f"must not be negative, got {train.decay}.", "decay")
    if train.decay and train.reduce_lr is not None:
        raise problem("decay is a learning-rate schedule and reduce_lr changes the rate too; keep one of them.",
                      "decay")
    watchers = [t for t in (train.early_stopping, train.keep_best, train.reduce_lr) if t is not None]
    if train.validation_data == "scored_fold" and not watchers:
        raise problem("nothing watches a validation set (set early_stopping, keep_best or reduce_lr), "
                      'so the scored fold would steer nothing; remove it.', "validation_data")
    if train.validation_fraction is not None:
        if train.early_stopping is not None:
            raise problem("early stopping has its own; set early_stopping.validation_fraction instead.",
                          "validation_fraction")
        if train.validation_data == "scored_fold":
            raise problem('the scored fold steers training with validation_data = "scored_fold"; '
                          "no share is held out, remove it.", "validation_fraction")
        if not watchers:
            raise problem("nothing watches the held-out share; set keep_best or reduce_lr, or remove it.",
                          "validation_fraction")
        if not 0 < train.validation_fraction < 0.5:
            raise problem(f"must be between 0 and 0.5, got {train.validation_fraction}.", "validation_fraction")
    ks = {t.top_k for t in (train.keep_best, train.early_stopping) if t is not None and t.monitor == "val_top_k"}
    if len(ks) > 1:
        raise problem(f"early_stopping and keep_best watch val_top_k with different k ({sorted(ks)}); use one k.",
                      "keep_best.top_k")
    if train.views and (train.augment is None or not train.augment.active()):
        raise problem(f"{train.views} augmented views need [train.augment] settings; set some, or views = 0.", "views")
    ft = train.fine_tune
    if ft is not None and ft.total_epochs is not None and ft.total_epochs <= train.epochs:
        raise problem(f"must be above [train] epochs ({train.epochs}): the phase continues to that many in all.",
                      "fine_tune.total_epochs")


def held_out_fraction(train: Any) -> float:
    """The share of a training fold held out to steer training (early stopping's own, else [train]'s)."""
    if train.early_stopping is not None:
        return train.early_stopping.validation_fraction
    return train.validation_fraction if train.validation_fraction is not None else 0.1


def watched_top_k(train: Any) -> int | None:
    """k when some callback watches "val_top_k" (the model then reports top-k accuracy), else None."""
    for table in (train.keep_best, train.early_stopping):
        if table is not None and table.monitor == "val_top_k":
            return table.top_k
    return None
