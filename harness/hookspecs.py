"""Every hook of harness. This module is the plugin API's reference.

A plugin is a module or object with functions decorated by ``harness.hookimpl`` whose names are
the hooks below. Registration hooks return data; lifecycle hooks observe a run and return nothing.
Built-in plugins (``harness_plugins``) use exactly these hooks; third-party plugins are found
through the entry-point group ``harness``.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

import pluggy

if TYPE_CHECKING:
    from harness.specs import DatasetSpec, FoldRecord, Leaderboard, MetricSpec, ModelSpec, RunInfo, TrialSummary

PROJECT = "harness"
hookspec = pluggy.HookspecMarker(PROJECT)
hookimpl = pluggy.HookimplMarker(PROJECT)


@hookspec
def register_datasets() -> list[DatasetSpec]:
    """Return the datasets this plugin provides.

    Each ``DatasetSpec`` has a unique ``name`` (the study file's ``[dataset] name``), the
    parameters the study file may set, and ``load(params, context) -> Samples``.
    """


@hookspec
def register_models() -> list[ModelSpec]:
    """Return the models this plugin provides.

    Each ``ModelSpec`` names its inputs, its default image size, its parameters with defaults
    and a default search space; ``build(context)`` returns an uncompiled ``keras.Model`` whose
    output is a softmax over ``context.num_classes``. The core compiles, trains and scores it.
    """


@hookspec
def register_metrics() -> list[MetricSpec]:
    """Return extra metrics: ``fn(y_true, y_prob) -> float`` on one fold's validation predictions."""


@hookspec
def on_fold_end(run: RunInfo, record: FoldRecord) -> None:
    """Called after one fold of one trial has been scored and its record appended."""


@hookspec
def on_trial_end(run: RunInfo, trial: TrialSummary) -> None:
    """Called after a trial (one configuration on all folds) completes, is pruned or fails."""


@hookspec
def on_study_end(run: RunInfo, leaderboard: Leaderboard) -> None:
    """Called once every candidate's search is done; reporters write their files here.

    ``run.results_dir`` is the study's results folder; ``leaderboard.rows`` is the final ranking
    (``leaderboard.to_frame()`` gives it as a DataFrame).
    """
