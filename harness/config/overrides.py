"""Settings from outside the study file, applied over it in this one place: the command line's quick
settings (trials, folds, epochs, weights, image_size) and $HARNESS_WEIGHTS."""

from __future__ import annotations

import copy
from pathlib import Path
from typing import Any

from pydantic import TypeAdapter

from harness.config.checks import ImageSize, WeightsOverride
from harness.config.messages import validate
from harness.config.schema import CVConfig, FineTune, SearchConfig, TrainConfig
from harness.core import settings
from harness.core.settings import WEIGHTS_ENV

__all__ = ["WEIGHTS_ENV", "collect", "apply", "written_into"]

#: Where a bad weights override is reported (it may come from either).
WEIGHTS_KEY = f"{WEIGHTS_ENV} / --weights"


def collect(path: Path, given: dict[str, Any] | None) -> dict[str, dict[str, Any]]:
    """The overrides for the study at ``path``: name -> {"value", "from"}, the command line's first,
    then $HARNESS_WEIGHTS unless --weights was given. A weights file is resolved against the
    working folder and checked, as is an image size."""
    values = dict(given or {})
    sources = {name: f"--{name.replace('_', '-')}" for name in values}
    weights = settings.current().weights
    if weights and "weights" not in values:
        values["weights"], sources["weights"] = weights, f"${WEIGHTS_ENV}"
    if "weights" in values:
        values["weights"] = validate(WeightsOverride, values["weights"], path, WEIGHTS_KEY, {"base_dir": Path.cwd()})
    if "image_size" in values:
        validate(ImageSize, values["image_size"], path, "image size override")
    return {name: {"value": value, "from": sources[name]} for name, value in values.items()}


def apply(
    overrides: dict[str, dict[str, Any]],
    cv: CVConfig,
    search: SearchConfig,
    train: TrainConfig,
    candidates: list[Any],
) -> None:
    """Write the overrides into the loaded settings and ``candidates`` (``resolved.Candidate``s): a
    quick run's epochs bound every phase of every candidate; weights and image size replace every
    candidate's own."""
    values = {name: o["value"] for name, o in overrides.items()}
    if "folds" in values:
        cv.folds, cv.scheme = values["folds"], "kfold"
    if "trials" in values:
        search.trials = values["trials"]
    if "epochs" in values:
        train.epochs = values["epochs"]
    if "weights" in values:
        train.weights = values["weights"]
    image_size = TypeAdapter(ImageSize).validate_python(values["image_size"]) if "image_size" in values else None
    for candidate in candidates:
        if image_size is not None:
            candidate.image_size = image_size
        if "epochs" in values:
            before, candidate.train.epochs = candidate.train.epochs, values["epochs"]
            fine_tune = candidate.train.fine_tune
            if fine_tune is not None and fine_tune.total_epochs is not None:
                fine_tune.total_epochs = shortened_total(fine_tune.total_epochs, before, values["epochs"])
            elif fine_tune is not None:
                fine_tune.epochs = min(fine_tune.epochs, values["epochs"])
        if "weights" in values:
            candidate.train.weights = values["weights"]


def shortened_total(total: int, epochs_before: int, epochs: int) -> int:
    """``fine_tune.total_epochs`` under ``--epochs``: the first phase's new count, then the fine-tuning
    phase's own length, capped by ``epochs`` as a fine-tuning phase's ``epochs`` is."""
    return epochs + max(1, min(total - epochs_before, epochs))


def written_into(raw: dict[str, Any], overrides: dict[str, dict[str, Any]]) -> dict[str, Any]:
    """The study file's tables with the overrides written in: what was really run."""
    raw = copy.deepcopy(raw)
    values = {name: o["value"] for name, o in overrides.items()}
    tables = [raw.setdefault("train", {}), *raw.get("candidates", [])]
    if "folds" in values:
        cv = raw.setdefault("cv", {})
        cv["folds"] = values["folds"]
        if "scheme" in cv:
            cv["scheme"] = "kfold"
    if "trials" in values:
        raw.setdefault("search", {})["trials"] = values["trials"]
    if "epochs" in values:
        study_epochs = raw["train"].get("epochs", TrainConfig.__dataclass_fields__["epochs"].default)
        for i, table in enumerate(tables):
            before = table.get("epochs", study_epochs)
            if i == 0 or "epochs" in table:
                table["epochs"] = values["epochs"]
            if table.get("fine_tune") is True:
                table["fine_tune"] = {}
            if isinstance(table.get("fine_tune"), dict) and "total_epochs" in table["fine_tune"]:
                fine_tune = table["fine_tune"]
                fine_tune["total_epochs"] = shortened_total(fine_tune["total_epochs"], before, values["epochs"])
            elif isinstance(table.get("fine_tune"), dict):
                fine_tune = table["fine_tune"]
                fine_tune["epochs"] = min(fine_tune.get("epochs", FineTune().epochs), values["epochs"])
    if "weights" in values:
        raw["train"]["weights"] = values["weights"]
        for table in tables[1:]:
            table.pop("weights", None)
    if "image_size" in values:
        for table in tables[1:]:
            table["image_size"] = [values["image_size"]] * 2
    return raw
