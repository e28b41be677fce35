"""The cached phases' inputs: the head's from the feature cache (phase one on a frozen backbone)
and the top part's from the boundary cache (fine-tuning), or why a phase runs end to end."""

from __future__ import annotations

import hashlib
import json
from collections.abc import Callable
from dataclasses import asdict, replace
from typing import Any, NamedTuple

from harness.config.study import TrainConfig
from harness.training.batches import ImageRows
from harness.training.build import compile_kept, load_keras
from harness.training.features import FeatureCache
from harness.training.fold import Fold
from harness.training.inference import forward_pass
from harness.training.keeper import FrozenSplit, TopPart


class TopPhase(NamedTuple):
    """A fine-tuning phase on the boundary cache: the top part (compiled for the phase), its
    inputs for any rows, and its training rows' inputs per precomputed view (None: no augmentation)."""

    top: Any
    inputs: Callable
    views: list | None


def cached_phase_possible(cache: FeatureCache | None, train: TrainConfig) -> bool:
    """A frozen first phase (on a backbone, checked later), with no augmentation or with precomputed views."""
    augmenting = train.augment is not None and train.augment.active()
    if train.preprocess == "dataset":  # each fold's own statistics: its features are its own
        return False
    return cache is not None and train.feature_cache and train.freeze_base and (not augmenting or train.views > 0)


def feature_phase(fold: Fold, split: FrozenSplit) -> tuple[Callable, list | None]:
    """``(inputs(index), views | None)`` for the head, from cached features.

    ``inputs(index)`` gives the head's inputs (un-augmented features [+ one-hot extras]) for any
    rows; with ``train.views`` > 0, ``views`` holds the head's training inputs for each augmented view.
    """
    cache, train, fit_idx = fold.cache, fold.train, fold.fit_idx
    images = fold.dataset.images(fold.image_size)
    ids = cache.ids(images)
    extractor, key = split.extractor, split.backbone_key
    batch_size = max(train.batch_size, 64)
    features = cache.features(extractor, key, images, ids, batch_size=batch_size, predict=forward_pass)
    extras = fold.extras(split.head)
    inputs = _row_inputs(lambda index: features[index], extras)
    if train.views == 0:
        return inputs, None
    make_augmenter = _augmenter_maker(train)
    fit_ids = [ids[i] for i in fit_idx]

    views_key = augmented_key(key, train)

    def view(number: int):
        rows = ImageRows(images, fit_idx)
        return cache.features(extractor, views_key, rows, fit_ids, number, make_augmenter, batch_size, forward_pass)

    return inputs, _training_views(view, extras, fold)


def boundary_phase(fold: Fold, kept: FrozenSplit | None, model, base, start: int) -> TopPhase | None:
    """The phase that fine-tunes ``model``'s top part on the boundary cache (see
    ``harness.training.boundary``), or None (logging why, once per keeper) when it runs end to end.
    ``kept``: the split model when the model is kept between folds, which keeps its top parts (and
    their traced train functions) too.

    With augmentation, the phase's ``views`` are served by epoch as the cached head phase serves its features.
    """
    from harness.training.boundary import boundary_cache_for, say_end_to_end

    if fold.cache is None:
        return None
    train, said = fold.train, fold.keeper.said
    reason = _end_to_end_setting(train)
    if reason is not None:
        return say_end_to_end(reason, said)
    top_part = _top_part(kept, model, base, start, fold.image_size)
    if isinstance(top_part, str):
        return say_end_to_end(top_part, said)
    split, boundary_cache = top_part.split, boundary_cache_for(fold.cache)
    images = fold.dataset.images(fold.image_size)
    ids = fold.cache.ids(images)
    fit_ids = [ids[i] for i in fold.fit_idx]
    reason = _over_budget(boundary_cache, split, ids, fit_ids, train)
    if reason is not None:
        return say_end_to_end(reason, said)
    batch_size = max(train.batch_size, 64)
    boundary = boundary_cache.rows(split, images, ids, batch_size=batch_size, predict=forward_pass)
    compile_kept(top_part, split.top, train, train.fine_tune.learning_rate)
    extras = fold.extras(split.top)
    inputs = _row_inputs(boundary.take, extras)
    if not _augmenting(train):
        return TopPhase(split.top, inputs, None)
    make_augmenter, fit_images = _augmenter_maker(train), ImageRows(images, fold.fit_idx)
    views_split = replace(split, key=augmented_key(split.key, train))

    def view(number: int):
        return boundary_cache.rows(views_split, fit_images, fit_ids, number, make_augmenter, batch_size, forward_pass)

    return TopPhase(split.top, inputs, _training_views(view, extras, fold))


def _augmenting(train: TrainConfig) -> bool:
    return train.augment is not None and train.augment.active()


def _end_to_end_setting(train: TrainConfig) -> str | None:
    """Why the study's settings rule out the boundary cache, or None."""
    if not train.feature_cache:
        return "feature_cache = false"
    if not train.boundary_cache:
        return "boundary_cache = false"
    if not train.freeze_base:
        return "freeze_base = false: phase one trains the frozen part, so it differs per fold"
    if train.preprocess == "dataset":
        return 'preprocess = "dataset": each fold has its own statistics, so its own boundary tensors'
    if _augmenting(train) and train.views == 0:
        return "augmentation without precomputed views (views = 0)"
    return None


def _top_part(kept: FrozenSplit | None, model, base, start: int, image_size) -> TopPart | str:
    """The top part from backbone layer ``start`` on (kept on ``kept`` by ``start``), or why the
    model cannot be split there."""
    from harness.training.boundary import split_at_boundary

    top_part = None if kept is None else kept.tops.get(start)
    if top_part is None:
        split = split_at_boundary(model, base, start, image_size)
        if isinstance(split, str):
            return split
        top_part = TopPart(split)
        if kept is not None:
            kept.tops[start] = top_part
    return top_part


def _over_budget(boundary_cache, split, ids: list[str], fit_ids: list[str], train: TrainConfig) -> str | None:
    """Why the rows this phase would add to the boundary cache do not fit its budget, or None."""
    from harness.training.boundary import BUDGET_ENV, budget_bytes

    rows = boundary_cache.missing(split.key, ids) + sum(
        boundary_cache.missing(split.key, fit_ids, view) for view in range(1, train.views + 1)
    )
    budget = budget_bytes(boundary_cache.root, train.boundary_cache_budget)
    if rows * split.row_bytes <= budget:
        return None
    return (
        f"the boundary cache at backbone layer {split.cut} would add {rows * split.row_bytes / 2**20:.0f} MiB "
        f"({rows} rows of {split.row_bytes} bytes), over its budget of {budget / 2**20:.0f} MiB "
        f"(${BUDGET_ENV})"
    )


def _row_inputs(rows_of: Callable, extras: list) -> Callable:
    """``inputs(index)``: the rows ``rows_of(index)``, with the one-hot extras' rows after them if any."""

    def inputs(index):
        return [rows_of(index), *(e[index] for e in extras)] if extras else rows_of(index)

    return inputs


def _training_views(view: Callable[[int], Any], extras: list, fold: Fold) -> list:
    """The training rows' inputs for each precomputed view 1..``views`` (``view(number)`` its rows)."""
    views = []
    for number in range(1, fold.train.views + 1):
        computed = view(number)
        views.append([computed, *(e[fold.fit_idx] for e in extras)] if extras else computed)
    return views


def augmented_key(key: str, train: TrainConfig) -> str:
    """The cache key of augmented views: what makes the images (``key``) and how they are augmented,
    so a changed [train.augment] never reuses another augmentation's stored views."""
    settings = json.dumps(asdict(train.augment), sort_keys=True, default=str)
    return f"{key}-aug{hashlib.sha256(settings.encode()).hexdigest()[:12]}"


def _augmenter_maker(train: TrainConfig) -> Callable:
    """What the caches call to make the augmentation layer of a view (after seeding it)."""
    from harness.toolkit.augment import augmentation_layers

    def make_augmenter():
        return load_keras().Sequential(augmentation_layers(train.augment))

    return make_augmenter
