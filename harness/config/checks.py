"""Building blocks of the study file's schema: strict values, choices with a did-you-mean, ranges
with their own wording, image sizes, weights files and cache budgets."""

from __future__ import annotations

import re
from dataclasses import asdict
from pathlib import Path
from typing import Annotated, Any, Optional

from pydantic import AfterValidator, ConfigDict, Field, PlainValidator, Strict, StrictInt, ValidationInfo

from harness.config.messages import problem, show
from harness.errors import did_you_mean
from harness.toolkit.augment import Augment

#: A table: unknown keys are mistakes.
TABLE = ConfigDict(extra="forbid")


def one_of(allowed: tuple[str, ...]) -> AfterValidator:
    """A value from ``allowed``, or "unknown value" with a did-you-mean."""

    def check(value: str) -> str:
        if value not in allowed:
            raise unknown_value(value, allowed)
        return value

    return AfterValidator(check)


def unknown_value(value: Any, allowed: tuple[str, ...], key: str | None = None) -> Exception:
    return problem(f"unknown value {show(value)}.{did_you_mean(value, allowed)} Allowed: {', '.join(allowed)}.", key)


def must(holds, message: str) -> AfterValidator:
    """A value for which ``holds`` is true, or ``message`` (``{}`` stands for the value)."""

    def check(value: Any) -> Any:
        if not holds(value):
            raise problem(message.format(value))
        return value

    return AfterValidator(check)


def at_least(minimum: int) -> Any:
    """A whole number (not true/false) no smaller than ``minimum``."""
    return Annotated[StrictInt, Field(ge=minimum)]


#: A number: an integer is taken (as a float), true/false and strings are not.
Number = Annotated[float, Strict()]


def _size(value: Any) -> tuple[int, int] | None:
    if value is None:
        return None
    if isinstance(value, int) and not isinstance(value, bool):
        value = [value, value]
    if (
        not isinstance(value, (list, tuple))
        or len(value) != 2
        or not all(isinstance(v, int) and not isinstance(v, bool) and v > 0 for v in value)
    ):
        raise problem(f"expected [height, width] in pixels, e.g. [224, 224], got {show(value)}.")
    return (value[0], value[1])


#: [height, width] in pixels; one number for a square.
ImageSize = Annotated[Optional[tuple[int, int]], PlainValidator(_size)]


def resolve_weights(value: Any, info: ValidationInfo) -> Any:
    """ "imagenet", "none", or an existing weights file, relative to the context's ``base_dir`` (the
    study's folder); without one (code building a TrainConfig) the value is taken as given."""
    base_dir = (info.context or {}).get("base_dir")
    if base_dir is None:
        return value
    if not isinstance(value, str) or not value:
        raise problem(f'expected "imagenet", "none" or a weights file path, got {show(value)}.')
    if value.lower() in ("imagenet", "none"):
        return value.lower()
    file = Path(value).expanduser()
    file = file if file.is_absolute() else Path(base_dir) / file
    if not file.is_file():
        raise problem(f'weights file {file} not found; give "imagenet", "none" or an existing file.')
    return str(file.resolve())


#: A weights setting from outside the file ($HARNESS_WEIGHTS, --weights): no string check first.
WeightsOverride = Annotated[Any, AfterValidator(resolve_weights)]

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


def is_budget(text: str) -> bool:
    try:
        parse_budget(text, free_bytes=1)
    except ValueError:
        return False
    return True


def check_jit_compile(value: Any) -> bool | str:
    if not isinstance(value, (bool, str)):
        raise problem(f"expected true or false or a string, got {show(value)}.")
    if value not in (True, False, "auto"):
        raise problem(f'expected true, false or "auto", got {show(value)}.')
    return value


def switch(value: Any) -> Any:
    """A sub-table that ``false`` turns off and ``true`` turns on with its defaults."""
    if value is True:
        return {}
    if value is False:
        return None
    return asdict(value) if isinstance(value, Augment) else value


