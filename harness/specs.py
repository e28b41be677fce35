"""The plugin API's types: what a plugin hands to the harness (a dataset, a model, a metric) and
what the lifecycle hooks receive (a run, a fold record, a trial, the leaderboard).

Every type here is a plain dataclass: no engine object (no Optuna study, no Keras model) inside.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any, TypeAlias

import numpy as np

if TYPE_CHECKING:  # pandas costs ~1 s and 75 MiB at import: predict and serve on ONNX never need it
    import pandas as pd

#: Marks a parameter a study file must set (a default of REQUIRED in a params mapping).
REQUIRED = object()

#: A value as a study file or a JSON file holds it: parameters, tuned settings, history entries.
JSONValue: TypeAlias = "str | int | float | bool | None | list[JSONValue] | dict[str, JSONValue]"


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
    #: How the model turns 0–255 pixels into its input: "model" (its own way), or one of the study
    #: file's [train] preprocess modes (see ``harness.toolkit.backbones.Preprocess``).
    preprocess: str = "model"


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
    #: The layer whose feature map Grad-CAM explains (``harness.toolkit.gradcam``), by name; it may lie
    #: inside the nested backbone. None: the backbone's output, else the last 4-D (feature map) output.
    explain_layer: str | None = None


@dataclass(frozen=True)
class MetricSpec:
    """A named metric: ``fn(y_true, y_prob) -> float`` from integer labels and class probabilities."""

    name: str
    fn: Callable[[np.ndarray, np.ndarray], float]
    greater_is_better: bool = True
    description: str = ""


@dataclass
class FoldRecord:
    """One fold of one configuration of one candidate, scored: a line of ``records.jsonl``."""

    candidate: str
    #: The candidate's search (its Optuna study's name) and the configuration's id within it.
    search_id: str
    config_id: str
    #: The trial that ran this fold (a retried trial keeps its configuration id).
    trial: int
    repeat: int
    fold: int
    #: Every setting the model was trained with, and the ones the search tuned.
    params: dict[str, JSONValue]
    tuned: dict[str, JSONValue]
    #: Metric name -> value on the fold's validation images.
    metrics: dict[str, float]
    fit_seconds: float
    epochs_run: int
    train_size: int
    val_size: int
    finished_at: float = field(default_factory=time.time)
    #: Findings about the fold a user must see, e.g. that its model learned nothing.
    warnings: list[str] = field(default_factory=list)
    #: Per epoch: phase, learning rate, loss and accuracy on the fit and early-stopping rows.
    history: dict[str, list[JSONValue]] = field(default_factory=dict)

    @property
    def key(self) -> tuple[str, str, int, int]:
        return (self.search_id, self.config_id, self.repeat, self.fold)


@dataclass
class TestRecord:
    """A candidate's selected configuration scored once on images no step of its search saw: the
    locked test set (``outer`` None) or one outer fold of nested cross-validation. A line of
    ``test.jsonl``."""

    __test__ = False  # not a pytest test class

    candidate: str
    #: The search the configuration was selected in (an outer fold's search has its own) and its id.
    search_id: str
    config_id: str
    #: "refit": one model refit on every row the search could use; "folds": its fold models averaged.
    model: str
    #: The outer fold of nested cross-validation; None for the locked test set.
    outer: int | None
    #: How many images were scored, and metric name -> value on them.
    n: int
    metrics: dict[str, float]
    #: The selected configuration's cross-validated objective (what it was chosen on), and how many
    #: complete configurations it was chosen from.
    cv_score: float
    configurations: int
    params: dict[str, JSONValue]
    tuned: dict[str, JSONValue]
    train_size: int
    fit_seconds: float
    finished_at: float = field(default_factory=time.time)


@dataclass(frozen=True)
class CrossValidation:
    """How a run's folds were cut."""

    scheme: str
    folds: int
    repeats: int
    seed: int
    #: Whether images sharing a group key were kept on one side (the dataset has groups and cv.grouped).
    grouped: bool
    stratified: bool
    #: The locked test set in words (e.g. 'the dataset's split "test"'), or None without one; its size.
    test: str | None = None
    test_images: int = 0
    #: Nested cross-validation's outer folds (0: none).
    outer: int = 0


@dataclass(frozen=True)
class Override:
    """A setting that a command-line option or an environment variable set over the study file."""

    name: str
    value: JSONValue
    #: Where it came from, e.g. "--trials" or "$HARNESS_WEIGHTS".
    source: str


@dataclass(frozen=True)
class RunInfo:
    """What lifecycle hooks see of a run."""

    study: str
    study_file: Path
    description: str
    #: The study's results folder (reporters write their files here).
    results_dir: Path
    #: The folder the dataset's root is relative to.
    data_root: Path | None
    dataset: str
    classes: tuple[str, ...]
    images: int
    cv: CrossValidation
    #: The metric the search optimises, e.g. "accuracy".
    objective: str
    overrides: tuple[Override, ...]
    #: One row per image: ``id``, ``label``, ``group`` and its validation fold in each repeat
    #: (``repeat_0``, ``repeat_1``, ...).
    folds: pd.DataFrame
    #: Warnings about the data and the run a user must see (audit findings, dropped classes).
    notes: tuple[str, ...] = ()
    #: ``thumbnails(rows) -> uint8 array (n, 112, 112, 3)`` of the images at these rows, or None.
    thumbnails: Callable[[Sequence[int]], np.ndarray] | None = None


@dataclass(frozen=True)
class TrialSummary:
    """A trial (one configuration on all folds) that completed, was pruned or failed."""

    candidate: str
    number: int
    #: "complete", "pruned" or "fail".
    state: str
    #: The objective's mean over the folds, or None when the trial did not complete.
    value: float | None
    params: dict[str, JSONValue]
    records: list[FoldRecord]


@dataclass(frozen=True)
class MetricSummary:
    """A metric over the folds of a candidate's best configuration."""

    mean: float
    #: Standard deviation over folds (ddof = 1; 0 for one fold).
    std: float


@dataclass(frozen=True)
class LeaderboardRow:
    """One candidate on the leaderboard, as ``leaderboard.csv`` has it, with its settings as data."""

    #: 1 for the best; None for a candidate without a complete configuration.
    rank: int | None
    candidate: str
    model: str
    #: "ok", "incomplete" or "failed" (then ``error`` says why).
    status: str
    error: str
    #: Configurations tried, and how many of them completed all folds.
    trials: int
    complete: int
    metrics: dict[str, MetricSummary]
    #: The objective's corrected 95 % interval, or None.
    interval: tuple[float, float] | None = None
    #: The corrected resampled t-test against the leader, and its verdict ("best", "worse",
    #: "not distinguishable", "no shared folds" or "").
    p_vs_best: float | None = None
    vs_best: str = ""
    folds: int | None = None
    fit_seconds: float | None = None
    best_trial: int | None = None
    config_id: str | None = None
    best_params: dict[str, JSONValue] = field(default_factory=dict)
    config: dict[str, JSONValue] = field(default_factory=dict)
    #: The weights and how the backbone was trained, e.g. "imagenet, frozen".
    base: str = ""
    warnings: str = ""
    #: The objective's mean of every complete configuration, best first.
    config_means: tuple[float, ...] = ()
    #: The locked test set (empty without one): metric -> value of the configuration scored once,
    #: its images, accuracy's exact 95 % interval and the exact McNemar p against the CV leader.
    test: dict[str, float] = field(default_factory=dict)
    test_n: int | None = None
    test_interval: tuple[float, float] | None = None
    test_p_vs_best: float | None = None
    #: Nested cross-validation (empty without it): metric -> pooled estimate, accuracy's interval,
    #: and the optimism of the selected configuration's CV score.
    nested: dict[str, float] = field(default_factory=dict)
    nested_interval: tuple[float, float] | None = None
    optimism: float | None = None


@dataclass(frozen=True)
class Leaderboard:
    """The final ranking handed to ``on_study_end``."""

    objective: str
    rows: tuple[LeaderboardRow, ...]
    #: Notes a reader must see under the table (e.g. damaged record lines skipped).
    notes: tuple[str, ...] = ()

    def to_frame(self) -> pd.DataFrame:
        """The rows as a DataFrame: one column per field, metrics as ``<name>_mean`` / ``<name>_std``."""
        flat = []
        for row in self.rows:
            item = {k: v for k, v in asdict(row).items() if k != "metrics"}
            for name, summary in row.metrics.items():
                item[f"{name}_mean"], item[f"{name}_std"] = summary.mean, summary.std
            flat.append(item)
        import pandas as pd

        return pd.DataFrame(flat)
