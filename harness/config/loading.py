"""Study files: TOML in, a validated ``Study`` out, or one clear error naming file and key.

The tables are checked in the order an author reads them ([study], [dataset], [cv], [train],
[metrics], [search], then each candidate), so that the first mistake is the one reported.
"""

from __future__ import annotations

import copy
import tomllib
from pathlib import Path
from typing import Any

from harness.config import overrides as outside
from harness.config.messages import MISSING_KEY, fail, validate
from harness.config.report import ReportConfig
from harness.config.resolved import Candidate, Study
from harness.config.schema import (
    TRAIN_KEYS,
    TRAIN_PARAMS,
    CVConfig,
    DatasetConfig,
    MetricsConfig,
    SearchConfig,
    StudyTable,
    TrainConfig,
)
from harness.config.space import Dimension, parse_dimension, thaw
from harness.config.tables import CandidateModel, DatasetName, StudyFile, candidate_table, dataset_table, values
from harness.errors import HarnessError, did_you_mean
from harness.registry import Registries


def read_toml(path: Path) -> dict[str, Any]:
    """The study file's tables, or one line on why it cannot be read."""
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


def load_study(path: str | Path, plugins: Registries, overrides: dict[str, Any] | None = None) -> Study:
    """Read, validate and resolve a study file. ``overrides`` are the command line's quick settings:
    trials, folds, epochs, weights ("none" for random initialisation) and image_size (every candidate's)."""
    path = Path(path)
    raw = read_toml(path)
    top = validate(StudyFile, raw, path)
    applied = outside.collect(path, overrides)
    context = {"base_dir": path.parent, "plugins": plugins}
    head = validate(StudyTable, _with_default(top.study, "name", path.stem), path, "study")
    dataset = _dataset(path, _required(path, top.dataset, "dataset"), plugins)
    cv = validate(CVConfig, _with_default(top.cv, "seed", head.seed), path, "cv", context)
    train = validate(TrainConfig, top.train, path, "train", context)
    metrics = validate(MetricsConfig, top.metrics, path, "metrics", context)
    search = validate(SearchConfig, top.search, path, "search")
    validate(ReportConfig, top.report, path, "report")  # read by the reporters from the results folder's copy
    search.space = _space(path, search.space, "search.space")
    cand_raw = validate(list, _required(path, top.candidates, "candidates"), path, "candidates")
    if not cand_raw:
        raise fail(path, "candidates", "no candidates; add at least one [[candidates]] table with a model.")
    candidates = [
        _candidate(path, item, f"candidates[{i}]", plugins, dataset, train, search) for i, item in enumerate(cand_raw)
    ]
    _check_names(path, candidates)
    _check_global_space(path, search.space, candidates, plugins)
    _check_engine(path, search, candidates)
    _check_protocol(path, cv, search)
    outside.apply(applied, cv, search, train, candidates)
    return Study(path, head.name, head.seed, head.description, dataset, candidates, cv, train, search, metrics, raw, applied)


def _required(path: Path, table: Any, key: str) -> Any:
    if table is None:  # TOML has no null: the key is absent
        raise fail(path, key, MISSING_KEY)
    return table


def _with_default(table: Any, key: str, default: Any) -> Any:
    """``table`` with a default that depends on the file (anything but a table is reported as is)."""
    return {key: default} | table if isinstance(table, dict) else table


def _dataset(path: Path, t: Any, plugins: Registries) -> DatasetConfig:
    name = validate(DatasetName, t, path, "dataset").name
    if name not in plugins.datasets:
        raise fail(path, "dataset.name", plugins.datasets.unknown_message(name))
    spec = plugins.datasets.get(name)
    table = values(validate(dataset_table(spec.params), t, path, "dataset"))
    params = {key: table[key] for key in spec.params}
    return DatasetConfig(name, table["image_size"], params, table["resize"], table["strict"], table["near_duplicates"])


def _space(path: Path, space: dict[str, Any], key: str) -> dict[str, Dimension]:
    return {name: parse_dimension(name, raw, f"{path}: {key}.{name}") for name, raw in space.items()}


def _candidate(
    path: Path,
    t: Any,
    key: str,
    plugins: Registries,
    dataset: DatasetConfig,
    base: TrainConfig,
    search: SearchConfig,
) -> Candidate:
    model = validate(CandidateModel, t, path, key).model
    if model not in plugins.models:
        raise fail(path, f"{key}.model", plugins.models.unknown_message(model))
    spec = plugins.models.get(model)
    table = values(validate(candidate_table(spec.params), t, path, key))
    image_size = table["image_size"] or dataset.image_size or tuple(spec.image_size)
    params = {name: table[name] for name in spec.params}
    inherited = {name: copy.deepcopy(getattr(base, name)) for name in TRAIN_KEYS if name not in t}
    own = {name: t[name] for name in TRAIN_KEYS if name in t}
    train = validate(TrainConfig, inherited | own, path, key, {"base_dir": path.parent})
    own_space = _space(path, validate(dict, table["space"], path, f"{key}.space"), f"{key}.space")
    tunable = set(spec.params) | set(TRAIN_PARAMS)
    for pname in own_space:
        if pname not in tunable:
            raise fail(
                path,
                f"{key}.space.{pname}",
                f"'{pname}' is not a parameter of model '{model}' nor a training setting."
                f"{did_you_mean(pname, tunable)} Tunable: {', '.join(sorted(tunable))}.",
            )
    merged = {pname: parse_dimension(pname, raw, f"model '{model}' default space.{pname}") for pname, raw in spec.space.items()}
    merged.update({k: v for k, v in search.space.items() if k in tunable})
    merged.update(own_space)
    fixed = set(t) & tunable
    space = {k: v for k, v in merged.items() if k not in fixed}
    where = {name: f"{key}.space.{name}" if name in own_space else f"search.space.{name}" if name in search.space
             else f"model '{model}' default space.{name}" for name in space}
    _check_sampled_training(path, key, inherited | own, space, where)
    return Candidate(table["name"] or model, model, image_size, params, train, space)


def _check_sampled_training(path: Path, key: str, train: dict, space: dict[str, Dimension], where: dict[str, str]) -> None:
    """Each training setting the space samples (each choice; a range's ends) checked with the rest
    of the candidate's [train], as if written there: a search must not find out mid-run that, say,
    momentum does not apply to an optimizer it chose, or that its epochs pass fine_tune.total_epochs."""
    for name, dim in space.items():
        if name not in TRAIN_PARAMS:
            continue
        for value in dim.choices if dim.choices is not None else (dim.low, dim.high):
            try:
                validate(TrainConfig, train | {name: thaw(value)}, path, key, {"base_dir": path.parent})
            except HarnessError as exc:
                why = str(exc).removeprefix(f"{path}: ")
                raise fail(path, where[name], f"samples {name} = {thaw(value)!r}, with which {why}") from None


def _check_names(path: Path, candidates: list[Candidate]) -> None:
    seen: dict[str, int] = {}
    for i, cand in enumerate(candidates):
        if cand.name in seen:
            raise fail(
                path,
                f"candidates[{i}].name",
                f"'{cand.name}' is used by candidates[{seen[cand.name]}] too; give each candidate a distinct name.",
            )
        seen[cand.name] = i


def _check_global_space(path: Path, space: dict[str, Dimension], candidates: list[Candidate], plugins: Registries) -> None:
    for pname in space:
        usable = set(TRAIN_PARAMS)
        for cand in candidates:
            usable |= set(plugins.models.get(cand.model).params)
        if pname not in usable:
            raise fail(
                path,
                f"search.space.{pname}",
                f"'{pname}' is not a training setting nor a parameter of any candidate's model."
                f"{did_you_mean(pname, usable)} Tunable: {', '.join(sorted(usable))}.",
            )


def _check_protocol(path: Path, cv: CVConfig, search: SearchConfig) -> None:
    """A test set and nested cross-validation live in the Optuna engine's storage."""
    if search.engine != "keras_tuner":
        return
    for key, used in (("cv.test", cv.has_test), ("cv.outer", cv.outer)):
        if used:
            raise fail(path, key, 'is scored from the study\'s storage, which the keras_tuner engine does not keep; '
                                  'use search.engine = "optuna" (the default).')


def _check_engine(path: Path, search: SearchConfig, candidates: list[Candidate]) -> None:
    if search.engine != "keras_tuner" or search.oracle != "hyperband":
        return
    for i, cand in enumerate(candidates):
        if "epochs" in cand.space:
            raise fail(
                path,
                f"candidates[{i}]",
                f"'{cand.name}' tunes epochs, but the Hyperband oracle sets each trial's epochs itself "
                "(up to train.epochs); remove epochs from the search space.",
            )
