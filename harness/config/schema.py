"""The study file's tables as pydantic models: each key's type, default and allowed values, declared once.

The models are pydantic dataclasses, so code (and tests) build them as before (``CVConfig(folds=5,
seed=1)``, ``dataclasses.replace(train, batch_size=8)``) and get the same checks a study file gets.
Values are strict (no "5" for 5; an integer is taken where a number is expected), and every mistake
carries the wording ``harness.config.messages`` turns into one line naming file and key.
"""

from __future__ import annotations

from dataclasses import field, fields
from typing import Annotated, Any, Optional, Union

from pydantic import AfterValidator, BeforeValidator, PlainValidator, StrictBool, StrictInt, StrictStr, ValidationInfo, create_model, model_validator
from pydantic.dataclasses import dataclass

from harness.config.checks import (
    TABLE,
    ImageSize,
    Number,
    at_least,
    is_budget,
    check_jit_compile,
    must,
    one_of,
    resolve_weights,
    switch,
    unknown_value,
)
from harness.config.messages import problem, show
from harness.config.recipe import PREPROCESS, VALIDATION_DATA, WATCHED, KeepBest, check_probability, check_recipe
from harness.config.test_set import TEST_MODELS, TestSet  # noqa: F401  ([cv] test, in a module of its own)
from harness.core.choices import NEAR_DUPLICATES, RESIZE_POLICIES
from harness.errors import did_you_mean
from harness.toolkit.augment import FILL_MODES, FLIPS, Augment

#: Training settings a search space may tune (a candidate may fix any [train] setting).
TRAIN_PARAMS = ("epochs", "batch_size", "optimizer", "learning_rate", "label_smoothing")
OPTIMIZERS = ("adam", "rmsprop", "sgd")
PRECISIONS = ("float32", "mixed_bfloat16", "mixed_float16")
CLASS_WEIGHTS = ("none", "balanced")
ENGINES = ("optuna", "keras_tuner")
ORACLES = ("bayesian", "hyperband", "random")
CV_SCHEMES = ("kfold", "holdout", "given")
SAMPLERS = ("tpe", "random", "cmaes", "qmc")
PRUNERS = ("median", "percentile", "hyperband", "successive_halving", "none")
SMALL_CLASS_POLICIES = ("error", "drop")
MONITORS = ("val_loss", "val_accuracy")

@dataclass(config=TABLE)
class EarlyStopping:
    monitor: Annotated[StrictStr, one_of(WATCHED)] = "val_loss"
    patience: at_least(0) = 5
    #: Share of each training fold held out for early stopping; the scored fold is never used.
    validation_fraction: Annotated[Number, must(lambda v: 0 < v < 0.5, "must be between 0 and 0.5, got {}.")] = 0.1
    #: k of monitor = "val_top_k".
    top_k: at_least(1) = 5


@dataclass(config=TABLE)
class ReduceLR:
    """Keras ReduceLROnPlateau on the early-stopping split."""

    monitor: Annotated[StrictStr, one_of(MONITORS)] = "val_loss"
    factor: Annotated[
        Number, must(lambda v: 0 < v < 1, "must be between 0 and 1 (the learning rate is multiplied by it), got {}.")
    ] = 0.1
    patience: at_least(0) = 5
    min_lr: Annotated[Number, must(lambda v: v >= 0, "must not be negative, got {}.")] = 1e-7


@dataclass(config=TABLE)
class FineTune:
    """A second phase: unfreeze the backbone from layer ``from_layer`` (or its ``last`` layers; the
    whole backbone when neither is set) and train ``epochs`` more at ``learning_rate``."""

    epochs: at_least(1) = 10
    learning_rate: Annotated[Number, must(lambda v: v > 0, "must be positive, got {}.")] = 1e-5
    from_layer: Optional[StrictInt] = None
    last: Optional[at_least(1)] = None
    #: BatchNormalization layers in the unfrozen part train too (Keras's guidance: keep them frozen).
    batchnorm_trainable: StrictBool = False
    #: Instead of ``epochs``: go on to this many epochs in all, the callbacks continuing.
    total_epochs: Optional[at_least(1)] = None

    @model_validator(mode="wrap")
    @classmethod
    def _one_way_to_unfreeze(cls, data: Any, handler) -> FineTune:
        ft = handler(data)
        if ft.from_layer is not None and ft.last is not None:
            raise problem("give from_layer or last, not both (neither unfreezes the whole backbone).")
        if ft.total_epochs is not None and "epochs" in _given(data):
            raise problem("give epochs (this phase's) or total_epochs (the count to go on to), not both.",
                          "total_epochs")
        return ft


_STRICT = {str: StrictStr, float: Number}
#: [train.augment]: the keys and defaults of ``harness.toolkit.augment.Augment``, strictly typed.
AugmentTable = create_model(
    "AugmentTable", __config__=TABLE, probability=(dict[StrictStr, Any], {}),
    **{f.name: (_STRICT[type(f.default)], f.default) for f in fields(Augment) if f.name != "probability"},
)
_AT_MOST_ONE = ("saturation", "blur", "noise")


def _augment(table: Any) -> Augment:
    values = table.model_dump()
    values["probability"] = check_probability(values["probability"], values)
    for name, value in values.items():
        if isinstance(value, float) and value < 0:
            raise problem(f"must not be negative, got {value}.", name)
    if values["flip"] and values["flip"] not in FLIPS:
        raise unknown_value(values["flip"], FLIPS, "flip")
    if values["fill_mode"] not in FILL_MODES:
        raise unknown_value(values["fill_mode"], FILL_MODES, "fill_mode")
    for name in _AT_MOST_ONE:
        if values[name] > 1:
            raise problem(f"must be between 0 and 1, got {values[name]}.", name)
    return Augment(**values)


def _sub_table(table: Any) -> Any:
    return Annotated[Optional[table], BeforeValidator(switch)]


@dataclass(config=TABLE)
class TrainConfig:
    epochs: at_least(1) = 10
    batch_size: at_least(1) = 32
    optimizer: Annotated[StrictStr, one_of(OPTIMIZERS)] = "adam"
    learning_rate: Annotated[Number, must(lambda v: v > 0, "must be positive, got {}.")] = 1e-3
    #: SGD's or RMSprop's momentum (unset: SGD 0.9, RMSprop 0); Keras 2's decay: lr / (1 + decay · step).
    momentum: Optional[Number] = None
    decay: Number = 0.0
    #: Restore the best epoch's weights by a watched metric (see harness.config.recipe).
    keep_best: _sub_table(KeepBest) = None
    #: Which rows steer training: "held_out" (a share of the training fold) or "scored_fold".
    validation_data: Annotated[StrictStr, one_of(VALIDATION_DATA)] = "held_out"
    #: The held-out share when keep_best or reduce_lr watch it without early_stopping (default 0.1).
    validation_fraction: Optional[Number] = None
    #: "model" (its own), or "unit", "symmetric", "caffe", "torch", "lite", "per_image", "dataset".
    preprocess: Annotated[StrictStr, one_of(PREPROCESS)] = "model"
    early_stopping: _sub_table(EarlyStopping) = None
    reduce_lr: _sub_table(ReduceLR) = None
    label_smoothing: Annotated[Number, must(lambda v: 0 <= v < 1, "must be at least 0 and below 1, got {}.")] = 0.0
    class_weight: Annotated[StrictStr, one_of(CLASS_WEIGHTS)] = "none"
    #: "imagenet" (Keras's cache), "none" (random initialisation) or a weights file.
    weights: Annotated[StrictStr, AfterValidator(resolve_weights)] = "imagenet"
    #: Train the head on a frozen backbone first; false trains the backbone from the start.
    freeze_base: StrictBool = True
    fine_tune: _sub_table(FineTune) = None
    augment: _sub_table(Annotated[AugmentTable, AfterValidator(_augment)]) = None
    #: Train a frozen backbone's head on cached pooled features (see harness.training.features).
    feature_cache: StrictBool = True
    #: Fine-tune the trained top part on activations cached at the cut (see harness.training.boundary).
    boundary_cache: StrictBool = True
    #: The most one cut's boundary cache may add: "N%" of the free disk where the cache lives, or a
    #: size such as "20G" or "500MiB" ($HARNESS_BOUNDARY_CACHE_BUDGET overrides it).
    boundary_cache_budget: Annotated[
        StrictStr,
        must(is_budget, "'{}' is neither a share of the free disk such as \"50%\" nor a size such as \"20G\" or \"500MiB\"."),
    ] = "50%"
    #: Augmented views precomputed per training image for the cached phase (0: none).
    views: at_least(0) = 0
    #: "float32", or "mixed_bfloat16" / "mixed_float16" (the softmax stays float32).
    precision: Annotated[StrictStr, one_of(PRECISIONS)] = "float32"
    #: XLA compilation: "auto" (where the backend supports it), true or false.
    jit_compile: Annotated[Union[bool, str], PlainValidator(check_jit_compile)] = "auto"
    #: Per-epoch scalars of each fold as TensorBoard event files (see harness.training.tensorboard);
    #: left out of fingerprints: it changes what is written, not what is trained.
    tensorboard: StrictBool = False

    @model_validator(mode="after")
    def _frozen_to_fine_tune(self) -> TrainConfig:
        if self.fine_tune is not None and not self.freeze_base:
            raise problem(
                "fine-tuning unfreezes a frozen backbone, but freeze_base = false trains it from the start; "
                "drop one of the two.",
                "fine_tune",
            )
        check_recipe(self)
        return self

    @property
    def total_epochs(self) -> int:
        ft = self.fine_tune
        if ft is not None and ft.total_epochs is not None:
            return ft.total_epochs
        return self.epochs + (ft.epochs if ft else 0)


#: Settings a candidate may set to replace the [train] value.
TRAIN_KEYS = tuple(TrainConfig.__dataclass_fields__)


@dataclass(config=TABLE)
class CVConfig:
    folds: at_least(2) = 5
    repeats: at_least(1) = 1
    seed: StrictInt = 0
    stratified: StrictBool = True
    grouped: StrictBool = True
    #: One of SMALL_CLASS_POLICIES (checked with the scheme's settings, after every value's type).
    small_classes: StrictStr = "error"
    #: "kfold": cv.folds folds; "holdout": one split holding out validation_fraction of the data;
    #: "given": train on the dataset's split ``train_split``, validate on ``valid_split`` (one fold).
    scheme: Annotated[StrictStr, one_of(CV_SCHEMES)] = "kfold"
    validation_fraction: Number = 0.2
    #: Holdout as shares of the data: [train, validation] or [train, validation, test] (the last the
    #: locked test set), e.g. [0.72, 0.18, 0.10].
    ratios: Optional[list[Number]] = None
    train_split: StrictStr = "train"
    valid_split: StrictStr = "valid"
    #: The locked test set (see TestSet); none by default.
    test: Optional[TestSet] = None
    #: Nested cross-validation: this many outer folds, each searched on its own (0: none).
    outer: StrictInt = 0

    @model_validator(mode="wrap")
    @classmethod
    def _scheme_settings(cls, data: Any, handler) -> CVConfig:
        cv, given = handler(data), _given(data)
        if cv.small_classes not in SMALL_CLASS_POLICIES:
            raise unknown_value(cv.small_classes, SMALL_CLASS_POLICIES, "small_classes")
        if cv.scheme != "kfold" and "folds" in given:
            raise problem(f'does not apply to cv.scheme = "{cv.scheme}" (one split); remove it or use "kfold".', "folds")
        if cv.scheme == "holdout":
            _holdout_settings(cv, given)
            cv.folds = 1
        elif cv.scheme == "given":
            cv.folds = 1
        for key in ("validation_fraction", "ratios"):
            if key in given and cv.scheme != "holdout":
                where = "each fold" if cv.scheme == "kfold" else "the dataset's valid split"
                raise problem(f'applies to cv.scheme = "holdout" only; "{cv.scheme}" validates on {where}.', key)
        for key in ("train_split", "valid_split"):
            if key in given and cv.scheme != "given":
                raise problem('applies to cv.scheme = "given" only (the dataset\'s own train and valid splits).', key)
        if cv.outer == 1 or cv.outer < 0:
            raise problem(f"must be 0 (no nested cross-validation) or at least 2 outer folds, got {cv.outer}.", "outer")
        if cv.outer and cv.scheme == "given":
            raise problem('nested cross-validation makes its own outer folds; it cannot use cv.scheme = "given".', "outer")
        return cv

    @property
    def test_fraction(self) -> float | None:
        """The locked test set's share, from ``test.fraction`` or a three-way ``ratios``."""
        if self.test is not None and self.test.fraction is not None:
            return self.test.fraction
        return self.ratios[2] if self.ratios and len(self.ratios) == 3 else None

    @property
    def has_test(self) -> bool:
        return self.test is not None or self.test_fraction is not None

    @property
    def test_source(self) -> str | None:
        """Where the locked test set comes from, in words (None without one)."""
        if self.test is not None:
            return self.test.source
        return f"the last of the holdout ratios {self.ratios}" if self.has_test else None

    @property
    def test_model(self) -> str:
        return self.test.model if self.test is not None else "refit"


def _holdout_settings(cv: CVConfig, given: dict[str, Any]) -> None:
    if "ratios" in given and "validation_fraction" in given:
        raise problem("give ratios or validation_fraction, not both.", "ratios")
    if cv.ratios is not None:
        ratios = cv.ratios
        if len(ratios) not in (2, 3) or any(r <= 0 for r in ratios) or abs(sum(ratios) - 1) > 1e-6:
            raise problem(f"expected [train, validation] or [train, validation, test], positive and adding up to 1, "
                          f"got {show(ratios)}.", "ratios")
        if len(ratios) == 3 and cv.test is not None:
            raise problem("a third ratio is the test set, and cv.test gives one too; keep one of them.", "ratios")
        cv.validation_fraction = ratios[1] / (ratios[0] + ratios[1])
    elif not 0 < cv.validation_fraction < 1:
        raise problem(f"must be between 0 and 1, got {cv.validation_fraction}.", "validation_fraction")


def _given(data: Any) -> dict[str, Any]:
    """The keys a table was given (a dict from a file; keyword arguments from code)."""
    if isinstance(data, dict):
        return data
    return getattr(data, "kwargs", None) or {}


@dataclass(config=TABLE)
class SearchConfig:
    engine: Annotated[StrictStr, one_of(ENGINES)] = "optuna"
    #: keras_tuner's oracle (engine = "keras_tuner" only).
    oracle: Annotated[StrictStr, one_of(ORACLES)] = "bayesian"
    trials: at_least(1) = 10
    sampler: Annotated[StrictStr, one_of(SAMPLERS)] = "tpe"
    pruner: Annotated[StrictStr, one_of(PRUNERS)] = "median"
    storage: Optional[StrictStr] = None
    #: Seconds between a running trial's signs of life in the storage.
    heartbeat_seconds: at_least(1) = 10
    #: Seconds without a sign of life after which a trial's worker counts as gone and another
    #: worker runs its configuration again (finished folds are kept).
    grace_seconds: at_least(1) = 60
    #: Name -> Dimension once loaded (the file's tables are parsed by harness.config.space).
    space: dict[str, Any] = field(default_factory=dict)

    @model_validator(mode="wrap")
    @classmethod
    def _engine_settings(cls, data: Any, handler) -> SearchConfig:
        search, given = handler(data), _given(data)
        if search.grace_seconds <= search.heartbeat_seconds:
            raise problem(
                f"must be longer than search.heartbeat_seconds ({search.heartbeat_seconds}), or a live worker "
                "would be taken for gone between two beats.",
                "grace_seconds",
            )
        if search.engine == "optuna" and "oracle" in given:
            raise problem('is keras_tuner\'s setting; add engine = "keras_tuner" or remove it.', "oracle")
        for optuna_only in ("sampler", "pruner"):
            if search.engine == "keras_tuner" and optuna_only in given:
                raise problem("is Optuna's setting; with engine = \"keras_tuner\" set search.oracle.", optuna_only)
        return search


def _whole_k(k: Any) -> int:
    if isinstance(k, bool) or not isinstance(k, int) or k < 1:
        raise problem(f"expected a whole number k >= 1, got {show(k)}.")
    return k


def _known_metric(name: Any, info: ValidationInfo) -> Any:
    """A metric some plugin registers (checked where the registries are in the context)."""
    plugins = (info.context or {}).get("plugins")
    if plugins is not None and name not in plugins.metrics:
        raise problem(plugins.metrics.unknown_message(str(name)))
    return name


@dataclass(config=TABLE)
class MetricsConfig:
    objective: StrictStr = "accuracy"
    top_k: Annotated[list[Annotated[Any, AfterValidator(_whole_k)]], AfterValidator(lambda ks: sorted(set(ks)))] = field(
        default_factory=lambda: [1, 3]
    )
    extra: list[Annotated[Any, AfterValidator(_known_metric)]] = field(default_factory=list)

    @model_validator(mode="after")
    def _objective_is_reported(self) -> MetricsConfig:
        known = ["accuracy", "loss", *(f"top_{k}_accuracy" for k in self.top_k), *self.extra]
        if self.objective not in known:
            raise problem(
                f"'{self.objective}' is not among the metrics this study reports.{did_you_mean(self.objective, known)} "
                f"Choose one of: {', '.join(known)} (or add it to metrics.extra / metrics.top_k).",
                "objective",
            )
        return self


def _folder_name(name: str) -> str:
    if not name or any(ch in name for ch in "/\\:") or name.startswith("."):
        raise problem(f"{show(name)} cannot name a results folder; use letters, digits, - and _.")
    return name


@dataclass(config=TABLE)
class StudyTable:
    """[study]; the name defaults to the file's stem (the loader fills it in)."""

    name: Annotated[StrictStr, AfterValidator(_folder_name)]
    seed: StrictInt = 0
    description: StrictStr = ""


@dataclass(config=TABLE)
class DatasetConfig:
    name: StrictStr
    image_size: ImageSize
    params: dict[str, Any]
    #: How images reach image_size: "stretch", "crop" (centre) or "pad" (see harness.data.images).
    resize: Annotated[StrictStr, one_of(RESIZE_POLICIES)] = "stretch"
    #: Unreadable files are an error instead of skipped with a warning.
    strict: StrictBool = False
    #: Near-duplicate threshold as a share of perceptual-hash bits (0 = exact duplicates only).
    near_duplicates: Annotated[
        Number, must(lambda v: 0 <= v < 0.5, "must be a share of hash bits in [0, 0.5), got {}.")
    ] = NEAR_DUPLICATES
