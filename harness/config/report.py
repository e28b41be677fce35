"""[report]: where results go besides the results folder. ``mlflow`` sends the study to an MLflow
tracking server (the built-in ``mlflow`` reporter plugin, ``harness_plugins.reports.mlflow``)."""

from __future__ import annotations

from typing import Annotated, Optional

from pydantic import BeforeValidator, StrictStr
from pydantic.dataclasses import dataclass

from harness.config.checks import TABLE, must, switch

_NOT_EMPTY = must(lambda v: bool(v.strip()), "must not be empty; leave the key out for the default.")


@dataclass(config=TABLE)
class MlflowTable:
    """[report] mlflow = { tracking_uri = "http://host:5000", experiment = "..." }: unset, the
    tracking URI is $MLFLOW_TRACKING_URI and the experiment is named after the study."""

    tracking_uri: Optional[Annotated[StrictStr, _NOT_EMPTY]] = None
    experiment: Optional[Annotated[StrictStr, _NOT_EMPTY]] = None


@dataclass(config=TABLE)
class ReportConfig:
    """[report]; ``mlflow`` is a table, true (its defaults) or false (off even with $MLFLOW_TRACKING_URI).
    Checked when the study loads; the reporter reads the table from the results folder's study.toml.
    Without the key, a study goes to $MLFLOW_TRACKING_URI when that is set (MLflow's own variable)."""

    mlflow: Annotated[Optional[MlflowTable], BeforeValidator(switch)] = None
