"""harness: compare image-classification backbones with honest cross-validated leaderboards.

The public API for plugin authors is what this module exports.
"""

from harness.core import compat as _compat
from harness.errors import HarnessError
from harness.hookspecs import hookimpl
from harness.specs import (
    REQUIRED,
    BuildContext,
    DatasetContext,
    DatasetSpec,
    FoldRecord,
    Leaderboard,
    LeaderboardRow,
    MetricSpec,
    ModelSpec,
    RunInfo,
    Samples,
    TestRecord,
    TrialSummary,
)

__version__ = "0.1.0"

_compat.install()  # the 0.1 module names (harness.train, harness.records, ...) for a release

__all__ = [
    "REQUIRED",
    "BuildContext",
    "DatasetContext",
    "DatasetSpec",
    "FoldRecord",
    "HarnessError",
    "Leaderboard",
    "LeaderboardRow",
    "MetricSpec",
    "ModelSpec",
    "RunInfo",
    "Samples",
    "TestRecord",
    "TrialSummary",
    "__version__",
    "hookimpl",
]
