"""Study files: TOML in, a validated ``Study`` out, or one clear error naming file and key.

The names other packages import from here; they live in ``schema`` (the tables), ``loading``
(``load_study``), ``overrides`` (command line and $HARNESS_WEIGHTS) and ``resolved`` (``Study``).
"""

from __future__ import annotations

from harness.config.checks import parse_budget
from harness.config.loading import load_study, read_toml
from harness.config.overrides import WEIGHTS_ENV
from harness.config.resolved import Candidate, Study, effective_params
from harness.config.schema import (
    CLASS_WEIGHTS,
    CV_SCHEMES,
    ENGINES,
    MONITORS,
    OPTIMIZERS,
    ORACLES,
    PRECISIONS,
    PRUNERS,
    SAMPLERS,
    SMALL_CLASS_POLICIES,
    TRAIN_KEYS,
    TRAIN_PARAMS,
    CVConfig,
    DatasetConfig,
    EarlyStopping,
    FineTune,
    MetricsConfig,
    ReduceLR,
    SearchConfig,
    TrainConfig,
)
from harness.toolkit.augment import Augment

__all__ = [
    "CLASS_WEIGHTS",
    "CV_SCHEMES",
    "ENGINES",
    "MONITORS",
    "OPTIMIZERS",
    "ORACLES",
    "PRECISIONS",
    "PRUNERS",
    "SAMPLERS",
    "SMALL_CLASS_POLICIES",
    "TRAIN_KEYS",
    "TRAIN_PARAMS",
    "WEIGHTS_ENV",
    "Augment",
    "CVConfig",
    "Candidate",
    "DatasetConfig",
    "EarlyStopping",
    "FineTune",
    "MetricsConfig",
    "ReduceLR",
    "SearchConfig",
    "Study",
    "TrainConfig",
    "effective_params",
    "load_study",
    "parse_budget",
    "read_toml",
]
