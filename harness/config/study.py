"""Study files: TOML in, a validated ``Study`` out, or one clear error naming file and key."""

from __future__ import annotations

import copy
import hashlib
import json
import os
import re
import tomllib
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from harness.toolkit.augment import FILL_MODES, FLIPS, Augment
from harness.errors import HarnessError, did_you_mean
from harness.core.choices import NEAR_DUPLICATES, RESIZE_POLICIES
from harness.config.space import Dimension, parse_dimension, thaw
from harness.registry import Registries
from harness.specs import REQUIRED

#: Training settings a search space may tune (a candidate may fix any [train] setting).
TRAIN_PARAMS = ("epochs", "batch_size", "optimizer", "learning_rate", "label_smoothing")
OPTIMIZERS = ("adam", "rmsprop", "sgd")
PRECISIONS = ("float32", "mixed_bfloat16", "mixed_float16")
CLASS_WEIGHTS = ("none", "balanced")
#: Overrides every candidate's weights for a run, e.g. HARNESS_WEIGHTS=none for random initialisation.
WEIGHTS_ENV = "HARNESS_WEIGHTS"
ENGINES = ("optuna", "keras_tuner")
ORACLES = ("bayesian", "hyperband", "random")
CV_SCHEMES = ("kfold", "holdout")
SAMPLERS = ("tpe", "random", "cmaes", "qmc")
PRUNERS = ("median", "percentile", "hyperband", "successive_halving", "none")
SMALL_CLASS_POLICIES = ("error", "drop")
MONITORS = ("val_loss", "val_accuracy")

_ANY = object()


@dataclass
class EarlyStopping:
    monitor: str = "val_loss"
    patience: int = 5
    #: Share of each training fold held out for early stopping; the scored fold is never used.
    validation_fraction: float = 0.1


@dataclass
class ReduceLR:
    """Keras ReduceLROnPlateau on the early-stopping split."""

    monitor: str = "val_loss"
    factor: float = 0.1
    patience: int = 5
    min_lr: float = 1e-7


@dataclass
class FineTune:
    """A second phase: unfreeze the backbone from layer ``from_layer`` (or its ``last`` layers; the
    whole backbone when neither is set) and train ``epochs`` more at ``learning_rate``."""

    epochs: int = 10
    learning_rate: float = 1e-5
    from_layer: int | None = None
    last: int | None = None


@dataclass
class TrainConfig:
    epochs: int = 10
    batch_size: int = 32
    optimizer: str = "adam"
    learning_rate: float = 1e-3
    early_stopping: EarlyStopping | None = None
    reduce_lr: ReduceLR | None = None
    label_smoothing: float = 0.0
    class_weight: str = "none"
    #: "imagenet" (Keras's cache), "none" (random initialisation) or a weights file.
    weights: str = "imagenet"
    #: Train the head on a frozen backbone first; false trains the backbone from the start.
    freeze_base: bool = True
    fine_tune: FineTune | None = None
    augment: Augment | None = None
    #: Train a frozen backbone's head on cached pooled features (see harness.training.features).
    feature_cache: bool = True
    #: Fine-tune the trained top part on activations cached at the cut (see harness.training.boundary).
    boundary_cache: bool = True
    #: The most one cut's boundary cache may add: "N%" of the free disk where the cache lives, or a
    #: size such as "20G" or "500MiB" ($HARNESS_BOUNDARY_CACHE_BUDGET overrides it).
    boundary_cache_budget: str = "50%"
    #: Augmented views precomputed per training image for the cached phase (0: none).
    views: int = 0
    #: "float32", or "mixed_bfloat16" / "mixed_float16" (the softmax stays float32).
    precision: str = "float32"
    #: XLA compilation: "auto" (where the backend supports it), true or false.
    jit_compile: bool | str = "auto"

    @property
    def total_epochs(self) -> int:
        return self.epochs + (self.fine_tune.epochs if self.fine_tune else 0)


_SIZE_UNITS = {"": 1, "K": 2**10, "M": 2**20, "G": 2**30, "T": 2**40}


def parse_budget(text: str, free_bytes: int) -> int:
    """Bytes from a budget: "N%" of ``free_bytes``, or a size with an optional K/M/G/T suffix."""
    text = text.strip().upper().removesuffix("B")
    share = re.fullmatch(r"(\d+(?:\.\d+)?)\s*%", text)
    if share and 0 < float(share.group(1)) <= 100:
        return int(free_bytes * float(share.group(1)) / 100)
    size = re.fullmatch(r"(\d+(?:\.\d+)?)\s*([KMGT]?)I?", text)
    if size is None:
        raise ValueError(f"{text!r}: expected a share of free disk such as '50%' or a size such as '20G'")
    return int(float(size.group(1)) * _SIZE_UNITS[size.group(2)])


#: Settings a candidate may set to replace the [train] value.
TRAIN_KEYS = tuple(TrainConfig.__dataclass_fields__)


@dataclass
class CVConfig:
    folds: int = 5
    repeats: int = 1
    seed: int = 0
    stratified: bool = True
    grouped: bool = True
    small_classes: str = "error"
    #: "kfold": cv.folds folds; "holdout": one split holding out validation_fraction of the data.
    scheme: str = "kfold"
    validation_fraction: float = 0.2


@dataclass
class SearchConfig:
    engine: str = "optuna"
    #: keras_tuner's oracle (engine = "keras_tuner" only).
    oracle: str = "bayesian"
    trials: int = 10
    sampler: str = "tpe"
    pruner: str = "median"
    storage: str | None = None
    #: Seconds between a running trial's signs of life in the storage.
    heartbeat_seconds: int = 10
    #: Seconds without a sign of life after which a trial's worker counts as gone and another
    #: worker runs its configuration again (finished folds are kept).
    grace_seconds: int = 60
    space: dict[str, Dimension] = field(default_factory=dict)


@dataclass
class MetricsConfig:
    objective: str = "accuracy"
    top_k: list[int] = field(default_factory=lambda: [1, 3])
    extra: list[str] = field(default_factory=list)


@dataclass
class DatasetConfig:
    name: str
    image_size: tuple[int, int] | None
    params: dict[str, Any]
    #: How images reach image_size: "stretch", "crop" (centre) or "pad" (see harness.data.images).
    resize: str = "stretch"
    #: Unreadable files are an error instead of skipped with a warning.
    strict: bool = False
    #: Near-duplicate threshold as a share of perceptual-hash bits (0 = exact duplicates only).
    near_duplicates: float = NEAR_DUPLICATES


@dataclass
class Candidate:
    """One model to compare, with its fixed parameters and the space its search explores."""

    name: str
    model: str
    image_size: tuple[int, int]
    params: dict[str, Any]
    train: TrainConfig
    space: dict[str, Dimension]

    def fingerprint(self, study: Study) -> str:
        """Changes when anything that shapes this candidate's trials changes (not the trial count)."""
        payload = {
            "model": self.model,
            "image_size": self.image_size,
            "params": self.params,
            "train": _plain(self.train),
            "space": {k: _plain(v) for k, v in sorted(self.space.items())},
            "dataset": _plain(study.dataset),
            "cv": _plain(study.cv),
            "metrics": _plain(study.metrics),
            "search": [study.search.engine, study.search.sampler, study.search.pruner],
        }
        return hashlib.sha256(json.dumps(payload, sort_keys=True, default=str).encode()).hexdigest()[:10]


@dataclass
class Study:
    path: Path
    name: str
    seed: int
    description: str
    dataset: DatasetConfig
    candidates: list[Candidate]
    cv: CVConfig
    train: TrainConfig
    search: SearchConfig
    metrics: MetricsConfig
    raw: dict[str, Any]
    #: Command-line and environment settings applied over the file: name -> {"value", "from"}.
    overrides: dict[str, dict[str, Any]] = field(default_factory=dict)

    def effective_raw(self) -> dict[str, Any]:
        """The study file's tables with the overrides written in: what was really run."""
        raw = copy.deepcopy(self.raw)
        values = {name: o["value"] for name, o in self.overrides.items()}
        tables = [raw.setdefault("train", {}), *raw.get("candidates", [])]
        if "folds" in values:
            cv = raw.setdefault("cv", {})
            cv["folds"] = values["folds"]
            if "scheme" in cv:
                cv["scheme"] = "kfold"
        if "trials" in values:
            raw.setdefault("search", {})["trials"] = values["trials"]
        if "epochs" in values:
            for i, table in enumerate(tables):
                if i == 0 or "epochs" in table:
                    table["epochs"] = values["epochs"]
                if table.get("fine_tune") is True:
                    table["fine_tune"] = {}
                if isinstance(table.get("fine_tune"), dict):
                    fine_tune = table["fine_tune"]
                    fine_tune["epochs"] = min(fine_tune.get("epochs", FineTune.epochs), values["epochs"])
        if "weights" in values:
            raw["train"]["weights"] = values["weights"]
            for table in tables[1:]:
                table.pop("weights", None)
        if "image_size" in values:
            for table in tables[1:]:
                table["image_size"] = [values["image_size"]] * 2
        return raw

    def effective_toml(self) -> str:
        """``effective_raw`` as TOML, headed by where it came from and which overrides it holds."""
        import tomli_w

        header = [f"# The study as run: {self.path}"]
        header += [f"# with {name} = {o['value']!r} from {o['from']}" for name, o in self.overrides.items()]
        return "\n".join(header) + "\n\n" + tomli_w.dumps(self.effective_raw())


def _plain(obj: Any) -> Any:
    if hasattr(obj, "__dataclass_fields__"):
        return {k: _plain(getattr(obj, k)) for k in obj.__dataclass_fields__}
    if isinstance(obj, (list, tuple)):
        return [_plain(v) for v in obj]
    if isinstance(obj, dict):
        return {k: _plain(v) for k, v in obj.items()}
    return obj


class _Checker:
    """Type and key checks that report the file and the dotted key."""

    def __init__(self, path: Path):
        self.path = path

    def fail(self, key: str, message: str) -> HarnessError:
        return HarnessError(f"{self.path}: {key}: {message}" if key else f"{self.path}: {message}")

    def table(self, value: Any, key: str) -> dict[str, Any]:
        if not isinstance(value, dict):
            raise self.fail(key, f"expected a table, got {_show(value)}.")
        return value

    def keys(self, table: dict[str, Any], key: str, allowed: list[str] | tuple[str, ...]) -> None:
        for name in table:
            if name not in allowed:
                where = f"{key}.{name}" if key else name
                raise self.fail(
                    where,
                    f"unknown key '{name}'.{did_you_mean(name, allowed)} Allowed here: {', '.join(allowed)}.",
                )

    def value(self, table: dict[str, Any], name: str, key: str, kind: Any, default: Any = REQUIRED) -> Any:
        where = f"{key}.{name}" if key else name
        if name not in table:
            if default is REQUIRED:
                raise self.fail(where, "missing key; this key is required.")
            return copy.deepcopy(default)
        return self.check(table[name], where, kind)

    def check(self, value: Any, where: str, kind: Any) -> Any:
        if kind is _ANY:
            return value
        if kind is float and isinstance(value, int) and not isinstance(value, bool):
            return float(value)
        if kind is int and isinstance(value, bool):
            raise self.fail(where, f"expected an integer, got {_show(value)}.")
        if not isinstance(value, kind):
            raise self.fail(where, f"expected {_kind_name(kind)}, got {_show(value)}.")
        return value

    def choice(self, value: Any, where: str, allowed: tuple[str, ...]) -> str:
        if value not in allowed:
            raise self.fail(where, f"unknown value {_show(value)}.{did_you_mean(value, allowed)} Allowed: {', '.join(allowed)}.")
        return value

    def positive(self, value: int, where: str, minimum: int = 1) -> int:
        if value < minimum:
            raise self.fail(where, f"must be at least {minimum}, got {value}.")
        return value

    def size(self, value: Any, where: str) -> tuple[int, int] | None:
        if value is None:
            return None
        if isinstance(value, int) and not isinstance(value, bool):
            value = [value, value]
        if (
            not isinstance(value, list)
            or len(value) != 2
            or not all(isinstance(v, int) and not isinstance(v, bool) and v > 0 for v in value)
        ):
            raise self.fail(where, f"expected [height, width] in pixels, e.g. [224, 224], got {_show(value)}.")
        return (value[0], value[1])


def _kind_name(kind: Any) -> str:
    names = {str: "a string", int: "an integer", float: "a number", bool: "true or false", list: "a list", dict: "a table"}
    if isinstance(kind, tuple):
        return " or ".join(names.get(k, k.__name__) for k in kind)
    return names.get(kind, kind.__name__)


def _show(value: Any) -> str:
    return json.dumps(value, default=str)


def read_toml(path: Path) -> dict[str, Any]:
    if not path.is_file():
        hint = " (a folder; give the study file inside it)" if path.is_dir() else ""
        raise HarnessError(f"{path}: no such study file{hint}.")
    try:
        with path.open("rb") as fh:
            return tomllib.load(fh)
    except tomllib.TOMLDecodeError as exc:
        raise HarnessError(f"{path}: invalid TOML: {exc}. Fix the syntax there and run again.") from None
    except UnicodeDecodeError:
        raise HarnessError(f"{path}: not a text file (TOML must be UTF-8).") from None


_TOP = ("study", "dataset", "candidates", "cv", "train", "search", "metrics")


def load_study(path: str | Path, plugins: Registries, overrides: dict[str, Any] | None = None) -> Study:
    """Read, validate and resolve a study file. ``overrides`` are the command line's quick settings:
    trials, folds, epochs, weights ("none" for random initialisation) and image_size (every candidate's)."""
    path = Path(path)
    raw = read_toml(path)
    c = _Checker(path)
    c.keys(raw, "", _TOP)
    overrides = dict(overrides or {})
    sources = {name: f"--{name.replace('_', '-')}" for name in overrides}
    if os.environ.get(WEIGHTS_ENV) and "weights" not in overrides:
        overrides["weights"], sources["weights"] = os.environ[WEIGHTS_ENV], f"${WEIGHTS_ENV}"
    if "weights" in overrides:
        overrides["weights"] = _weights(c, overrides["weights"], f"{WEIGHTS_ENV} / --weights", Path.cwd())

    study_t = c.table(c.value(raw, "study", "", dict, {}), "study")
    c.keys(study_t, "study", ("name", "seed", "description"))
    name = c.value(study_t, "name", "study", str, path.stem)
    if not name or any(ch in name for ch in "/\\:") or name.startswith("."):
        raise c.fail("study.name", f"{_show(name)} cannot name a results folder; use letters, digits, - and _.")
    seed = c.value(study_t, "seed", "study", int, 0)
    description = c.value(study_t, "description", "study", str, "")

    dataset = _dataset(c, c.table(c.value(raw, "dataset", "", dict), "dataset"), plugins)
    cv = _cv(c, c.table(c.value(raw, "cv", "", dict, {}), "cv"), seed)
    train = _train(c, c.table(c.value(raw, "train", "", dict, {}), "train"), "train", TrainConfig())
    metrics = _metrics(c, c.table(c.value(raw, "metrics", "", dict, {}), "metrics"), plugins)
    search = _search(c, c.table(c.value(raw, "search", "", dict, {}), "search"))

    if "folds" in overrides:
        cv.folds, cv.scheme = overrides["folds"], "kfold"
    if "trials" in overrides:
        search.trials = overrides["trials"]
    if "epochs" in overrides:
        train.epochs = overrides["epochs"]
    if "weights" in overrides:
        train.weights = overrides["weights"]

    cand_raw = c.value(raw, "candidates", "", list)
    if not cand_raw:
        raise c.fail("candidates", "no candidates; add at least one [[candidates]] table with a model.")
    candidates = [
        _candidate(c, c.table(item, f"candidates[{i}]"), f"candidates[{i}]", plugins, dataset, train, search, overrides)
        for i, item in enumerate(cand_raw)
    ]
    seen: dict[str, int] = {}
    for i, cand in enumerate(candidates):
        if cand.name in seen:
            raise c.fail(
                f"candidates[{i}].name",
                f"'{cand.name}' is used by candidates[{seen[cand.name]}] too; give each candidate a distinct name.",
            )
        seen[cand.name] = i
    _check_global_space(c, search.space, candidates, plugins)
    _check_engine(c, search, candidates)
    applied = {name: {"value": value, "from": sources[name]} for name, value in overrides.items()}
    return Study(path, name, seed, description, dataset, candidates, cv, train, search, metrics, raw, applied)


def _dataset(c: _Checker, t: dict[str, Any], plugins: Registries) -> DatasetConfig:
    name = c.value(t, "name", "dataset", str)
    if name not in plugins.datasets:
        raise c.fail("dataset.name", plugins.datasets.unknown_message(name))
    spec = plugins.datasets.get(name)
    core = ("name", "image_size", "resize", "strict", "near_duplicates")
    c.keys(t, "dataset", list(core) + list(spec.params))
    image_size = c.size(t.get("image_size"), "dataset.image_size")
    resize = c.choice(c.value(t, "resize", "dataset", str, "stretch"), "dataset.resize", RESIZE_POLICIES)
    strict = c.value(t, "strict", "dataset", bool, False)
    near = c.value(t, "near_duplicates", "dataset", float, NEAR_DUPLICATES)
    if not 0 <= near < 0.5:
        raise c.fail("dataset.near_duplicates", f"must be a share of hash bits in [0, 0.5), got {near}.")
    params = {}
    for key, default in spec.params.items():
        kind = _ANY if default is None or default is REQUIRED else _type_of(default)
        params[key] = c.value(t, key, "dataset", kind, default)
    return DatasetConfig(name, image_size, params, resize, strict, near)


def _type_of(default: Any) -> Any:
    if isinstance(default, bool):
        return bool
    if isinstance(default, float):
        return float
    if isinstance(default, int):
        return int
    if isinstance(default, (list, tuple)):
        return list
    return type(default)


def _cv(c: _Checker, t: dict[str, Any], seed: int) -> CVConfig:
    c.keys(t, "cv", tuple(CVConfig.__dataclass_fields__))
    cv = CVConfig(
        folds=c.positive(c.value(t, "folds", "cv", int, 5), "cv.folds", 2),
        repeats=c.positive(c.value(t, "repeats", "cv", int, 1), "cv.repeats"),
        seed=c.value(t, "seed", "cv", int, seed),
        stratified=c.value(t, "stratified", "cv", bool, True),
        grouped=c.value(t, "grouped", "cv", bool, True),
        small_classes=c.value(t, "small_classes", "cv", str, "error"),
        scheme=c.choice(c.value(t, "scheme", "cv", str, "kfold"), "cv.scheme", CV_SCHEMES),
        validation_fraction=c.value(t, "validation_fraction", "cv", float, 0.2),
    )
    c.choice(cv.small_classes, "cv.small_classes", SMALL_CLASS_POLICIES)
    if cv.scheme == "holdout":
        if "folds" in t:
            raise c.fail("cv.folds", 'does not apply to cv.scheme = "holdout" (one split); remove it or use "kfold".')
        if not 0 < cv.validation_fraction < 1:
            raise c.fail("cv.validation_fraction", f"must be between 0 and 1, got {cv.validation_fraction}.")
        cv.folds = 1
    elif "validation_fraction" in t:
        raise c.fail("cv.validation_fraction", 'applies to cv.scheme = "holdout" only; k-fold validates on each fold.')
    return cv


def _train(c: _Checker, t: dict[str, Any], key: str, base: TrainConfig) -> TrainConfig:
    c.keys(t, key, TRAIN_KEYS)
    train = copy.deepcopy(base)
    train.epochs = c.positive(c.value(t, "epochs", key, int, base.epochs), f"{key}.epochs")
    train.batch_size = c.positive(c.value(t, "batch_size", key, int, base.batch_size), f"{key}.batch_size")
    train.optimizer = c.choice(c.value(t, "optimizer", key, str, base.optimizer), f"{key}.optimizer", OPTIMIZERS)
    train.learning_rate = c.value(t, "learning_rate", key, float, base.learning_rate)
    if train.learning_rate <= 0:
        raise c.fail(f"{key}.learning_rate", f"must be positive, got {train.learning_rate}.")
    train.label_smoothing = c.value(t, "label_smoothing", key, float, base.label_smoothing)
    if not 0 <= train.label_smoothing < 1:
        raise c.fail(f"{key}.label_smoothing", f"must be at least 0 and below 1, got {train.label_smoothing}.")
    train.class_weight = c.choice(
        c.value(t, "class_weight", key, str, base.class_weight), f"{key}.class_weight", CLASS_WEIGHTS
    )
    if "weights" in t:
        train.weights = _weights(c, c.value(t, "weights", key, str), f"{key}.weights", c.path.parent)
    train.freeze_base = c.value(t, "freeze_base", key, bool, base.freeze_base)
    train.feature_cache = c.value(t, "feature_cache", key, bool, base.feature_cache)
    train.boundary_cache = c.value(t, "boundary_cache", key, bool, base.boundary_cache)
    train.boundary_cache_budget = c.value(t, "boundary_cache_budget", key, str, base.boundary_cache_budget)
    try:
        parse_budget(train.boundary_cache_budget, free_bytes=1)
    except ValueError:
        raise c.fail(
            f"{key}.boundary_cache_budget",
            f"'{train.boundary_cache_budget}' is neither a share of the free disk such as \"50%\" nor a size such "
            "as \"20G\" or \"500MiB\".",
        ) from None
    train.views = c.positive(c.value(t, "views", key, int, base.views), f"{key}.views", 0)
    train.precision = c.choice(c.value(t, "precision", key, str, base.precision), f"{key}.precision", PRECISIONS)
    train.jit_compile = c.value(t, "jit_compile", key, (bool, str), base.jit_compile)
    if train.jit_compile not in (True, False, "auto"):
        raise c.fail(f"{key}.jit_compile", f'expected true, false or "auto", got {_show(train.jit_compile)}.')
    if "early_stopping" in t:
        train.early_stopping = _optional(c, t["early_stopping"], f"{key}.early_stopping", _early_stopping)
    if "reduce_lr" in t:
        train.reduce_lr = _optional(c, t["reduce_lr"], f"{key}.reduce_lr", _reduce_lr)
    if "fine_tune" in t:
        train.fine_tune = _optional(c, t["fine_tune"], f"{key}.fine_tune", _fine_tune)
    if "augment" in t:
        train.augment = _optional(c, t["augment"], f"{key}.augment", _augment)
    if train.fine_tune is not None and not train.freeze_base:
        raise c.fail(
            f"{key}.fine_tune",
            "fine-tuning unfreezes a frozen backbone, but freeze_base = false trains it from the start; "
            "drop one of the two.",
        )
    return train


def _weights(c: _Checker, value: Any, where: str, relative_to: Path) -> str:
    """ "imagenet", "none", or an existing weights file (a relative path is relative to ``relative_to``)."""
    if not isinstance(value, str) or not value:
        raise c.fail(where, f'expected "imagenet", "none" or a weights file path, got {_show(value)}.')
    if value.lower() in ("imagenet", "none"):
        return value.lower()
    file = Path(value).expanduser()
    file = file if file.is_absolute() else relative_to / file
    if not file.is_file():
        raise c.fail(where, f'weights file {file} not found; give "imagenet", "none" or an existing file.')
    return str(file.resolve())


def _optional(c: _Checker, value: Any, where: str, parse) -> Any:
    """A sub-table that ``false`` turns off and ``true`` turns on with its defaults."""
    if value is False:
        return None
    return parse(c, {} if value is True else c.table(value, where), where)


def _fields(c: _Checker, t: dict[str, Any], where: str, cls) -> None:
    c.keys(t, where, tuple(cls.__dataclass_fields__))


def _early_stopping(c: _Checker, t: dict[str, Any], where: str) -> EarlyStopping:
    _fields(c, t, where, EarlyStopping)
    fraction = c.value(t, "validation_fraction", where, float, 0.1)
    if not 0 < fraction < 0.5:
        raise c.fail(f"{where}.validation_fraction", f"must be between 0 and 0.5, got {fraction}.")
    return EarlyStopping(
        monitor=c.choice(c.value(t, "monitor", where, str, "val_loss"), f"{where}.monitor", MONITORS),
        patience=c.positive(c.value(t, "patience", where, int, 5), f"{where}.patience", 0),
        validation_fraction=fraction,
    )


def _reduce_lr(c: _Checker, t: dict[str, Any], where: str) -> ReduceLR:
    _fields(c, t, where, ReduceLR)
    d = ReduceLR()
    r = ReduceLR(
        monitor=c.choice(c.value(t, "monitor", where, str, d.monitor), f"{where}.monitor", MONITORS),
        factor=c.value(t, "factor", where, float, d.factor),
        patience=c.positive(c.value(t, "patience", where, int, d.patience), f"{where}.patience", 0),
        min_lr=c.value(t, "min_lr", where, float, d.min_lr),
    )
    if not 0 < r.factor < 1:
        raise c.fail(f"{where}.factor", f"must be between 0 and 1 (the learning rate is multiplied by it), got {r.factor}.")
    if r.min_lr < 0:
        raise c.fail(f"{where}.min_lr", f"must not be negative, got {r.min_lr}.")
    return r


def _fine_tune(c: _Checker, t: dict[str, Any], where: str) -> FineTune:
    _fields(c, t, where, FineTune)
    d = FineTune()
    f = FineTune(
        epochs=c.positive(c.value(t, "epochs", where, int, d.epochs), f"{where}.epochs"),
        learning_rate=c.value(t, "learning_rate", where, float, d.learning_rate),
        from_layer=c.value(t, "from_layer", where, int, None),
        last=c.value(t, "last", where, int, None),
    )
    if f.learning_rate <= 0:
        raise c.fail(f"{where}.learning_rate", f"must be positive, got {f.learning_rate}.")
    if f.from_layer is not None and f.last is not None:
        raise c.fail(where, "give from_layer or last, not both (neither unfreezes the whole backbone).")
    if f.last is not None:
        c.positive(f.last, f"{where}.last")
    return f


def _augment(c: _Checker, t: dict[str, Any], where: str) -> Augment:
    _fields(c, t, where, Augment)
    d, values = Augment(), {}
    for name in Augment.__dataclass_fields__:
        default = getattr(d, name)
        values[name] = c.value(t, name, where, str if isinstance(default, str) else float, default)
        if isinstance(default, float) and values[name] < 0:
            raise c.fail(f"{where}.{name}", f"must not be negative, got {values[name]}.")
    if values["flip"]:
        c.choice(values["flip"], f"{where}.flip", FLIPS)
    c.choice(values["fill_mode"], f"{where}.fill_mode", FILL_MODES)
    for name in ("saturation", "blur", "noise"):
        if values[name] > 1:
            raise c.fail(f"{where}.{name}", f"must be between 0 and 1, got {values[name]}.")
    return Augment(**values)


def _metrics(c: _Checker, t: dict[str, Any], plugins: Registries) -> MetricsConfig:
    c.keys(t, "metrics", tuple(MetricsConfig.__dataclass_fields__))
    top_k = c.value(t, "top_k", "metrics", list, [1, 3])
    for i, k in enumerate(top_k):
        if isinstance(k, bool) or not isinstance(k, int) or k < 1:
            raise c.fail(f"metrics.top_k[{i}]", f"expected a whole number k >= 1, got {_show(k)}.")
    top_k = sorted(set(top_k))
    extra = c.value(t, "extra", "metrics", list, [])
    for i, m in enumerate(extra):
        if m not in plugins.metrics:
            raise c.fail(f"metrics.extra[{i}]", plugins.metrics.unknown_message(str(m)))
    objective = c.value(t, "objective", "metrics", str, "accuracy")
    known = ["accuracy", "loss", *(f"top_{k}_accuracy" for k in top_k), *extra]
    if objective not in known:
        raise c.fail(
            "metrics.objective",
            f"'{objective}' is not among the metrics this study reports.{did_you_mean(objective, known)} "
            f"Choose one of: {', '.join(known)} (or add it to metrics.extra / metrics.top_k).",
        )
    return MetricsConfig(objective, top_k, extra)


def _search(c: _Checker, t: dict[str, Any]) -> SearchConfig:
    c.keys(t, "search", tuple(SearchConfig.__dataclass_fields__))
    search = SearchConfig(
        engine=c.choice(c.value(t, "engine", "search", str, "optuna"), "search.engine", ENGINES),
        oracle=c.choice(c.value(t, "oracle", "search", str, "bayesian"), "search.oracle", ORACLES),
        trials=c.positive(c.value(t, "trials", "search", int, 10), "search.trials"),
        sampler=c.choice(c.value(t, "sampler", "search", str, "tpe"), "search.sampler", SAMPLERS),
        pruner=c.choice(c.value(t, "pruner", "search", str, "median"), "search.pruner", PRUNERS),
        storage=c.value(t, "storage", "search", str, None),
        heartbeat_seconds=c.positive(c.value(t, "heartbeat_seconds", "search", int, 10), "search.heartbeat_seconds"),
        grace_seconds=c.positive(c.value(t, "grace_seconds", "search", int, 60), "search.grace_seconds"),
    )
    if search.grace_seconds <= search.heartbeat_seconds:
        raise c.fail(
            "search.grace_seconds",
            f"must be longer than search.heartbeat_seconds ({search.heartbeat_seconds}), or a live worker "
            "would be taken for gone between two beats.",
        )
    space = c.table(c.value(t, "space", "search", dict, {}), "search.space")
    search.space = _space(c, space, "search.space")
    if search.engine == "optuna" and "oracle" in t:
        raise c.fail("search.oracle", 'is keras_tuner\'s setting; add engine = "keras_tuner" or remove it.')
    for optuna_only in ("sampler", "pruner"):
        if search.engine == "keras_tuner" and optuna_only in t:
            raise c.fail(f"search.{optuna_only}", "is Optuna's setting; with engine = \"keras_tuner\" set search.oracle.")
    return search


def _space(c: _Checker, space: dict[str, Any], key: str) -> dict[str, Dimension]:
    return {name: parse_dimension(name, raw, f"{c.path}: {key}.{name}") for name, raw in space.items()}


def _candidate(
    c: _Checker,
    t: dict[str, Any],
    key: str,
    plugins: Registries,
    dataset: DatasetConfig,
    train: TrainConfig,
    search: SearchConfig,
    overrides: dict[str, Any],
) -> Candidate:
    model = c.value(t, "model", key, str)
    if model not in plugins.models:
        raise c.fail(f"{key}.model", plugins.models.unknown_message(model))
    spec = plugins.models.get(model)
    core = ("model", "name", "image_size", "space")
    c.keys(t, key, list(core) + list(TRAIN_KEYS) + list(spec.params))
    name = c.value(t, "name", key, str, model)
    image_size = c.size(t.get("image_size"), f"{key}.image_size") or dataset.image_size or tuple(spec.image_size)
    if "image_size" in overrides:
        image_size = c.size(overrides["image_size"], "image size override")
    params = {}
    for pname, default in spec.params.items():
        kind = _ANY if default is None or default is REQUIRED else _type_of(default)
        params[pname] = c.value(t, pname, key, kind, default)
    train_t = {k: t[k] for k in TRAIN_KEYS if k in t}
    cand_train = _train(c, train_t, key, train)
    if "epochs" in overrides:  # a quick run: every phase at most that long
        cand_train.epochs = overrides["epochs"]
        if cand_train.fine_tune is not None:
            cand_train.fine_tune.epochs = min(cand_train.fine_tune.epochs, overrides["epochs"])
    if "weights" in overrides:
        cand_train.weights = overrides["weights"]
    own_space = _space(c, c.table(t.get("space", {}), f"{key}.space"), f"{key}.space")
    tunable = set(spec.params) | set(TRAIN_PARAMS)
    for pname in own_space:
        if pname not in tunable:
            raise c.fail(
                f"{key}.space.{pname}",
                f"'{pname}' is not a parameter of model '{model}' nor a training setting."
                f"{did_you_mean(pname, tunable)} Tunable: {', '.join(sorted(tunable))}.",
            )
    merged: dict[str, Dimension] = {}
    for pname, raw in spec.space.items():
        merged[pname] = parse_dimension(pname, raw, f"model '{model}' default space.{pname}")
    merged.update({k: v for k, v in search.space.items() if k in tunable})
    merged.update(own_space)
    fixed = set(t) & tunable
    space = {k: v for k, v in merged.items() if k not in fixed}
    return Candidate(name, model, image_size, params, cand_train, space)


def _check_global_space(c: _Checker, space: dict[str, Dimension], candidates: list[Candidate], plugins: Registries) -> None:
    for pname in space:
        usable = set(TRAIN_PARAMS)
        for cand in candidates:
            usable |= set(plugins.models.get(cand.model).params)
        if pname not in usable:
            raise c.fail(
                f"search.space.{pname}",
                f"'{pname}' is not a training setting nor a parameter of any candidate's model."
                f"{did_you_mean(pname, usable)} Tunable: {', '.join(sorted(usable))}.",
            )


def _check_engine(c: _Checker, search: SearchConfig, candidates: list[Candidate]) -> None:
    if search.engine != "keras_tuner" or search.oracle != "hyperband":
        return
    for i, cand in enumerate(candidates):
        if "epochs" in cand.space:
            raise c.fail(
                f"candidates[{i}]",
                f"'{cand.name}' tunes epochs, but the Hyperband oracle sets each trial's epochs itself "
                "(up to train.epochs); remove epochs from the search space.",
            )


def effective_params(candidate: Candidate, sampled: dict[str, Any]) -> tuple[dict[str, Any], TrainConfig]:
    """Model parameters and training settings of one configuration: fixed values plus sampled ones."""
    params = {k: thaw(v) for k, v in candidate.params.items()}
    train = copy.deepcopy(candidate.train)
    for key, value in sampled.items():
        value = thaw(value)
        if key in TRAIN_PARAMS:
            setattr(train, key, value)
        else:
            params[key] = value
    return params, train
