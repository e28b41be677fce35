"""The data a plugin hands to the harness: what a dataset, a model or a metric is."""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

#: Marks a parameter a study file must set (a default of REQUIRED in a params mapping).
REQUIRED = object()


@dataclass(frozen=True)
class DatasetContext:
    """What a dataset plugin gets besides its parameters."""

    data_root: Path
    cache_dir: Path
    seed: int


@dataclass
class Samples:
    """A dataset's sample table.

    ``table`` has one row per image and the columns ``label`` (class name, kept as spelt) and,
    where the dataset has them, ``path`` (an image file the core decodes), ``group`` (images with
    the same group key never straddle folds), ``split`` and metadata columns (such as
    ``location``) that models can take as extra inputs. A dataset without files gives
    ``pixels(table, (height, width)) -> uint8 array (n, height, width, 3)`` instead of paths.
    """

    table: pd.DataFrame
    pixels: Callable[[pd.DataFrame, tuple[int, int]], np.ndarray] | None = None


@dataclass(frozen=True)
class DatasetSpec:
    """A named dataset: ``load(params, context) -> Samples``.

    ``params`` maps each parameter the study file may set under ``[dataset]`` to its default
    (``REQUIRED`` when it has none); the default's type is the expected type.
    """

    name: str
    load: Callable[[dict[str, Any], DatasetContext], Samples]
    params: Mapping[str, Any] = field(default_factory=dict)
    description: str = ""


@dataclass(frozen=True)
class BuildContext:
    """What a model plugin gets to build one model."""

    num_classes: int
    image_size: tuple[int, int]
    params: dict[str, Any]
    #: Width of each extra input (one-hot metadata), by input name, e.g. {"location": 5}.
    extra_inputs: dict[str, int] = field(default_factory=dict)
    weights: str | None = None


@dataclass(frozen=True)
class ModelSpec:
    """A named model: ``build(context) -> keras.Model`` (uncompiled, softmax output).

    ``inputs`` names the model's inputs: "image" (raw 0-255 pixels, the model preprocesses) and
    any metadata columns of the dataset, given one-hot. ``params`` are the parameters a study can
    fix per candidate or tune, with their defaults; ``space`` is a default search space in the
    study-file format, which a study can narrow or replace.
    """

    name: str
    build: Callable[[BuildContext], Any]
    inputs: tuple[str, ...] = ("image",)
    image_size: tuple[int, int] = (224, 224)
    params: Mapping[str, Any] = field(default_factory=dict)
    space: Mapping[str, Any] = field(default_factory=dict)
    description: str = ""
    #: For a model with pretrained weights: ``() -> str``, where they come from and whether they are
    #: installed (shown by ``harness plugins``).
    weights_status: Callable[[], str] | None = None


@dataclass(frozen=True)
class MetricSpec:
    """A named metric: ``fn(y_true, y_prob) -> float`` from integer labels and class probabilities."""

    name: str
    fn: Callable[[np.ndarray, np.ndarray], float]
    greater_is_better: bool = True
    description: str = ""
