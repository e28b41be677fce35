"""The study as ``load_study`` resolves it: every candidate with its own training settings and search
space, and what makes a candidate's trials comparable (its fingerprint)."""

from __future__ import annotations

import copy
import hashlib
import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from harness.config import overrides as outside
from harness.config.recipe import params_without_defaults, without_defaults
from harness.config.schema import TRAIN_PARAMS, CVConfig, DatasetConfig, MetricsConfig, SearchConfig, TrainConfig
from harness.config.space import Dimension, thaw


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
            "params": params_without_defaults(self.params),
            "train": without_defaults(_plain(self.train)),
            "space": {k: _plain(v) for k, v in sorted(self.space.items())},
            "dataset": _plain(study.dataset),
            "cv": cv_fingerprint(study.cv),
            "metrics": _plain(study.metrics),
            "search": [study.search.engine, study.search.sampler, study.search.pruner],
        }
        payload["train"].pop("tensorboard", None)  # what is written, not what is trained: ids stay
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
        """The study file's tables with the overrides written in: what was really run. A test list
        is named by its full path, so the copy in the results folder finds it too."""
        raw = outside.written_into(self.raw, self.overrides)
        test = raw.get("cv", {}).get("test")
        if isinstance(test, dict) and "list" in test and self.cv.test is not None and self.cv.test.file:
            raw = copy.deepcopy(raw)
            raw["cv"]["test"]["list"] = self.cv.test.file
        return raw

    def effective_toml(self) -> str:
        """``effective_raw`` as TOML, headed by where it came from and which overrides it holds."""
        import tomli_w

        header = [f"# The study as run: {self.path}"]
        header += [f"# with {name} = {o['value']!r} from {o['from']}" for name, o in self.overrides.items()]
        return "\n".join(header) + "\n\n" + tomli_w.dumps(self.effective_raw())


#: [cv] settings of the protocols, left out of a fingerprint at their defaults, so a study that does
#: not use them keeps the search ids (and results) it had before they existed.
_PROTOCOL_DEFAULTS = {"ratios": None, "train_split": "train", "valid_split": "valid", "test": None}


def cv_fingerprint(cv: CVConfig) -> dict[str, Any]:
    """What of [cv] shapes a search's trials: not ``outer`` (each outer fold's search has its own
    id) nor how the test set is scored; the protocols' settings only where they are used."""
    plain = _plain(cv)
    plain.pop("outer", None)
    if plain.get("test"):
        plain["test"].pop("model", None)
        if plain["test"].get("file"):  # the list's content, not where it lies: the same on every machine
            plain["test"]["file"] = hashlib.sha256(Path(plain["test"]["file"]).read_bytes()).hexdigest()
    return {k: v for k, v in plain.items() if k not in _PROTOCOL_DEFAULTS or v != _PROTOCOL_DEFAULTS[k]}


def _plain(obj: Any) -> Any:
    if hasattr(obj, "__dataclass_fields__"):
        return {k: _plain(getattr(obj, k)) for k in obj.__dataclass_fields__}
    if isinstance(obj, (list, tuple)):
        return [_plain(v) for v in obj]
    if isinstance(obj, dict):
        return {k: _plain(v) for k, v in obj.items()}
    return obj


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
