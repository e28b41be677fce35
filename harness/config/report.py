"""[report]: where results go besides the results folder. ``mlflow`` sends the study to an MLflow
tracking server (the built-in ``mlflow`` reporter plugin, ``harness_plugins.reports.mlflow``)."""

from __future__ import annotations

from typing import Annotated, Optional
from urllib.parse import urlsplit

from pydantic import BeforeValidator, StrictStr
from pydantic.dataclasses import dataclass

from harness.config.checks import TABLE, must, switch

_NOT_EMPTY = must(lambda v: bool(v.strip()), "must not be empty; leave the key out for the default.")
# The study file is copied into the results folder and sent to the server as an artifact: no secret in it.
_NO_PASSWORD = must(
    lambda v: urlsplit(v).password is None,
    "'{}' holds a password, which would be copied into the results folder and the server; "
    "leave it out and set $MLFLOW_TRACKING_USERNAME and $MLFLOW_TRACKING_PASSWORD.",
)


@dataclass(config=TABLE)
class MlflowTable:
    """[report] mlflow = { tracking_uri = "http://host:5000", experiment = "..." }: unset, the
    tracking URI is $MLFLOW_TRACKING_URI and the experiment is named after the study."""

    tracking_uri: Optional[Annotated[StrictStr, _NOT_EMPTY, _NO_PASSWORD]] = None
    experiment: Optional[Annotated[StrictStr, _NOT_EMPTY]] = None


@dataclass(config=TABLE)
class ReportConfig:
    """[report]; ``mlflow`` is a table, true (its defaults) or false (off even with $MLFLOW_TRACKING_URI).
    Checked when the study loads; the reporter reads the table from the results folder's study.toml.
    Without the key, a study goes to $MLFLOW_TRACKING_URI when that is set (MLflow's own variable)."""

    mlflow: Annotated[Optional[MlflowTable], BeforeValidator(switch)] = None
