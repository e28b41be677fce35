"""pydantic's ValidationError as the one-line HarnessError a study file's author reads: file, dotted
key, what was expected and a did-you-mean."""

from __future__ import annotations

import json
import types
from pathlib import Path
from typing import Annotated, Any, Union, get_args, get_origin

from pydantic import TypeAdapter, ValidationError
from pydantic_core import PydanticCustomError

from harness.errors import HarnessError, did_you_mean

#: pydantic error type -> what the study file should have held there.
_KINDS = {
    "int_type": "an integer",
    "float_type": "a number",
    "string_type": "a string",
    "bool_type": "true or false",
    "list_type": "a list",
    "dict_type": "a table",
    "dataclass_type": "a table",
    "model_type": "a table",
    "model_attributes_type": "a table",
}
_UNKNOWN_KEY = ("extra_forbidden", "unexpected_keyword_argument")
_MISSING = ("missing", "missing_argument")
MISSING_KEY = "missing key; this key is required."
#: The error type of a message written in full by a validator (see ``problem``).
_OURS = "harness"


def show(value: Any) -> str:
    """A value as the study file would spell it."""
    return json.dumps(value, default=str)


def problem(message: str, key: str | None = None) -> PydanticCustomError:
    """An error a validator raises with its final wording; ``key`` names the field when a check on
    a whole table is about one of its keys."""
    return PydanticCustomError(_OURS, "{message}", {"message": message, "key": key})


def fail(path: Path, key: str, message: str) -> HarnessError:
    """The one line for a mistake at ``key`` (dotted; empty for the file as a whole)."""
    return HarnessError(f"{path}: {key}: {message}" if key else f"{path}: {message}")


def validate(schema: Any, data: Any, path: Path, key: str = "", context: dict[str, Any] | None = None) -> Any:
    """``data`` validated as ``schema``, or the HarnessError for its first mistake under ``key``."""
    try:
        return TypeAdapter(schema).validate_python(data, context=context)
    except ValidationError as exc:
        error = first_error(exc.errors())
        loc, message = describe(error, schema)
        raise fail(path, dotted((key, *loc) if key else loc), message) from None


def first_error(errors: list[dict[str, Any]], depth: int = 0) -> dict[str, Any]:
    """The mistake the author meets first: within each table, an unknown key before the values."""
    unknown = [e for e in errors if len(e["loc"]) == depth + 1 and e["type"] in _UNKNOWN_KEY]
    if unknown:
        return unknown[0]
    head = errors[0]
    if len(head["loc"]) <= depth + 1:
        return head
    return first_error([e for e in errors if e["loc"][: depth + 1] == head["loc"][: depth + 1]], depth + 1)


def describe(error: dict[str, Any], schema: Any) -> tuple[tuple[Any, ...], str]:
    """Where (a pydantic loc) and what, in the study file's words."""
    kind, loc, value, ctx = error["type"], tuple(error["loc"]), error.get("input"), error.get("ctx") or {}
    if kind == _OURS:
        return (*loc, ctx["key"]) if ctx.get("key") else loc, ctx["message"]
    if kind in _UNKNOWN_KEY:
        allowed = allowed_keys(schema, loc[:-1])
        name = str(loc[-1])
        return loc, f"unknown key '{name}'.{did_you_mean(name, allowed)} Allowed here: {', '.join(allowed)}."
    if kind in _MISSING:
        return loc, MISSING_KEY
    if kind == "greater_than_equal":
        return loc, f"must be at least {ctx['ge']}, got {value}."
    if kind in _KINDS:
        return loc, f"expected {_KINDS[kind]}, got {show(value)}."
    if kind == "is_instance_of":
        return loc, f"expected {ctx['class']}, got {show(value)}."
    return loc, f"{error['msg']}, got {show(value)}."


def dotted(loc: tuple[Any, ...]) -> str:
    """('candidates[0]', 'fine_tune', 'last') -> 'candidates[0].fine_tune.last'; list indices in brackets."""
    text = ""
    for part in loc:
        text += f"[{part}]" if isinstance(part, int) else (f".{part}" if text else str(part))
    return text


def allowed_keys(schema: Any, loc: tuple[Any, ...]) -> list[str]:
    """The keys the table at ``loc`` inside ``schema`` may hold, in the schema's order."""
    table = _unwrap(schema)
    for part in loc:
        if isinstance(part, int):
            args = get_args(table)
            table = _unwrap(args[-1] if args else Any)
            continue
        table = _unwrap(_fields(table)[part].annotation)
    return list(_fields(table))


def _fields(table: Any) -> dict[str, Any]:
    """Key -> field info; a field's key is its alias where it has one."""
    return {info.alias or name: info for name, info in getattr(table, "__pydantic_fields__", {}).items()}


def _unwrap(annotation: Any) -> Any:
    """The table class inside Annotated[...] and ``X | None``."""
    while True:
        origin = get_origin(annotation)
        if origin is Annotated:
            annotation = get_args(annotation)[0]
        elif origin in (Union, types.UnionType):
            annotation = next(a for a in get_args(annotation) if a is not type(None))
        else:
            return annotation
