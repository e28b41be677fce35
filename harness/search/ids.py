"""The names and seeds a search derives from a study: search ids, configuration ids, seeds, direction."""

from __future__ import annotations

import hashlib
import json
from typing import Any

from harness.config.study import Candidate, Study
from harness.core.seeds import fold_seed  # noqa: F401  (its home before harness.core.seeds)
from harness.plugins import Plugins


def search_id(study: Study, candidate: Candidate) -> str:
    """The Optuna study name of a candidate: a new one whenever its fixed settings change."""
    return f"{candidate.name}-{candidate.fingerprint(study)}"


def config_id(search: str, params: dict[str, Any]) -> str:
    """A configuration's id within a search: the same sampled values give the same id."""
    text = json.dumps([search, params], sort_keys=True, default=str)
    return hashlib.sha256(text.encode()).hexdigest()[:12]


def sampler_seed(seed: int, candidate: str) -> int:
    """A candidate's own sampler seed: two candidates of one study never draw the same sequence."""
    return int.from_bytes(hashlib.sha256(f"{seed}/{candidate}".encode()).digest()[:4], "little") % (2**31 - 1)


def direction(study: Study, plugins: Plugins) -> str:
    """"minimize" for the loss and metrics where lower is better, else "maximize"."""
    objective = study.metrics.objective
    if objective == "loss":
        return "minimize"
    if objective in plugins.metrics and not plugins.metrics.get(objective).greater_is_better:
        return "minimize"
    return "maximize"
