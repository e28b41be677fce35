"""The tables whose keys depend on a plugin: [dataset] holds the dataset's parameters and each
[[candidates]] table its model's, next to the keys every such table has."""

from __future__ import annotations

import copy
import functools
from typing import Annotated, Any, Optional

from pydantic import BaseModel, Field, InstanceOf, StrictBool, StrictInt, StrictStr, create_model

from harness.config.checks import TABLE, ImageSize, Number
from harness.config.schema import TRAIN_KEYS, DatasetConfig
from harness.specs import REQUIRED


class StudyFile(BaseModel, extra="forbid"):
    """The file's top level: which tables there are (each is checked on its own, in this order)."""

    study: Any = {}
    #: Required, but reported as missing only when the tables before it are found sound.
    dataset: Any = None
    candidates: Any = None
    cv: Any = {}
    train: Any = {}
    search: Any = {}
    metrics: Any = {}
    #: Where results go besides the results folder (see harness.config.report).
    report: Any = {}


class DatasetName(BaseModel, extra="ignore"):
    """[dataset].name, read first: it says which dataset's parameters the table may hold."""

    name: StrictStr


class CandidateModel(BaseModel, extra="ignore"):
    """[[candidates]].model, read first: it says which model's parameters the table may hold."""

    model: StrictStr


#: A parameter's default -> the values it takes (a list default takes any list, and so on).
_KINDS = {bool: StrictBool, int: StrictInt, float: Number, str: StrictStr, list: list, tuple: list, dict: dict}


def param_field(default: Any) -> tuple[Any, dict[str, Any]]:
    """A plugin parameter as a field: typed after its default; REQUIRED or None take any value."""
    if default is REQUIRED:
        return Any, {}
    kind = Any if default is None else _KINDS.get(type(default), InstanceOf[type(default)])
    return kind, {"default_factory": functools.partial(copy.deepcopy, default)}


def keyed_table(name: str, fields: dict[str, tuple[Any, dict[str, Any]]]) -> type[BaseModel]:
    """A table with these keys -> (type, pydantic Field arguments; none when required).

    The keys are aliases of numbered field names, so that no plugin parameter can clash with an
    attribute of pydantic's BaseModel (``copy``, ``json``, ...); read a validated table with
    ``values(table)``."""
    model_fields = {f"key_{i}": (kind, Field(alias=key, **how)) for i, (key, (kind, how)) in enumerate(fields.items())}
    return create_model(name, __config__=TABLE, **model_fields)


def values(table: BaseModel) -> dict[str, Any]:
    """A validated ``keyed_table`` as key -> value."""
    return {info.alias: getattr(table, name) for name, info in type(table).model_fields.items()}


def dataset_table(params: dict[str, Any]) -> type[BaseModel]:
    """[dataset] for a dataset with these parameters."""
    core = {
        name: (Annotated[(info.annotation, *info.metadata)] if info.metadata else info.annotation, {"default": info.default})
        for name, info in DatasetConfig.__pydantic_fields__.items()
        if name not in ("name", "image_size", "params")
    }
    core = {"name": (StrictStr, {}), "image_size": (ImageSize, {"default": None})} | core
    return keyed_table("DatasetTable", core | {name: param_field(default) for name, default in params.items()})


#: Keys every [[candidates]] table may hold before the [train] keys and the model's parameters.
_CANDIDATE_CORE = {
    "model": (StrictStr, {}),
    "name": (Optional[StrictStr], {"default": None}),
    "image_size": (ImageSize, {"default": None}),
    # checked after the training settings, as a table of dimensions
    "space": (Any, {"default_factory": dict}),
}


def candidate_table(params: dict[str, Any]) -> type[BaseModel]:
    """[[candidates]] for a model with these parameters: its own keys, any [train] key (checked
    against the study's [train] afterwards) and the model's parameters."""
    train = {name: (Any, {"default": None}) for name in TRAIN_KEYS}
    own = {name: param_field(default) for name, default in params.items()}
    return keyed_table("CandidateTable", _CANDIDATE_CORE | train | own)
