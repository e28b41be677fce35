"""Search-space dimensions as written in a study file, and how a trial samples them."""

from __future__ import annotations

import json
from dataclasses import dataclass
from typing import Any

from harness.errors import HarnessError, did_you_mean

_PLAIN = (str, int, float, bool, type(None))


@dataclass(frozen=True)
class Dimension:
    """One tuned parameter: ``choices``, or a ``low``..``high`` range (int or float)."""

    name: str
    low: float | None = None
    high: float | None = None
    step: float | None = None
    log: bool = False
    choices: tuple[Any, ...] | None = None

    def suggest(self, trial) -> Any:
        if self.choices is not None:
            if all(isinstance(c, _PLAIN) for c in self.choices):
                return trial.suggest_categorical(self.name, list(self.choices))
            # Optuna stores only plain values: lists such as head = [1024, 600] go as JSON text.
            text = trial.suggest_categorical(self.name, [json.dumps(c) for c in self.choices])
            return json.loads(text)
        if isinstance(self.low, int) and isinstance(self.high, int) and not isinstance(self.step, float):
            return trial.suggest_int(self.name, self.low, self.high, step=self.step or 1, log=self.log)
        return trial.suggest_float(self.name, float(self.low), float(self.high), step=self.step, log=self.log)

    def decode(self, stored: Any) -> Any:
        """The value a trial's stored parameter stands for (undoes the JSON encoding)."""
        if self.choices is not None and not all(isinstance(c, _PLAIN) for c in self.choices):
            return json.loads(stored)
        return stored

    def describe(self) -> str:
        if self.choices is not None:
            return "choice of " + ", ".join(json.dumps(c) for c in self.choices)
        return f"{self.low}..{self.high}" + (" (log)" if self.log else "") + (f" step {self.step}" if self.step else "")


_KEYS = ("choices", "low", "high", "step", "log")


def parse_dimension(name: str, raw: Any, where: str) -> Dimension:
    """Parse ``{ choices = [...] }`` or ``{ low = .., high = .., step = .., log = .. }``."""
    if isinstance(raw, list):
        raw = {"choices": raw}
    if not isinstance(raw, dict):
        raise HarnessError(
            f"{where}: expected a table such as {{ low = 1e-4, high = 1e-2, log = true }} or "
            f"{{ choices = [...] }}, got {json.dumps(raw)}."
        )
    for key in raw:
        if key not in _KEYS:
            raise HarnessError(f"{where}: unknown key '{key}'.{did_you_mean(key, _KEYS)} Allowed: {', '.join(_KEYS)}.")
    if "choices" in raw:
        extra = set(raw) - {"choices"}
        if extra:
            raise HarnessError(f"{where}: 'choices' cannot be combined with {', '.join(sorted(extra))}.")
        choices = raw["choices"]
        if not isinstance(choices, list) or not choices:
            raise HarnessError(f"{where}.choices: expected a non-empty list.")
        return Dimension(name, choices=tuple(_freeze(c) for c in choices))
    if "low" not in raw or "high" not in raw:
        missing = "low" if "low" not in raw else "high"
        raise HarnessError(f"{where}: missing key '{missing}' (a range needs low and high; or give choices).")
    low, high, step, log = raw["low"], raw["high"], raw.get("step"), raw.get("log", False)
    for key, value in (("low", low), ("high", high)) + ((("step", step),) if step is not None else ()):
        if isinstance(value, bool) or not isinstance(value, (int, float)):
            raise HarnessError(f"{where}.{key}: expected a number, got {json.dumps(value)}.")
    if not isinstance(log, bool):
        raise HarnessError(f"{where}.log: expected true or false, got {json.dumps(log)}.")
    if low > high:
        raise HarnessError(f"{where}: low ({low}) is greater than high ({high}).")
    if log and low <= 0:
        raise HarnessError(f"{where}: a log range needs low > 0 (got {low}).")
    if log and step is not None:
        raise HarnessError(f"{where}: 'step' and 'log = true' cannot be combined (Optuna does not support it).")
    return Dimension(name, low=low, high=high, step=step, log=log)


def _freeze(value: Any) -> Any:
    return tuple(_freeze(v) for v in value) if isinstance(value, list) else value


def thaw(value: Any) -> Any:
    """Tuples (from frozen choices) back to lists, for model builders and JSON."""
    return [thaw(v) for v in value] if isinstance(value, tuple) else value
