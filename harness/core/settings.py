"""Every ``HARNESS_*`` environment variable, read in this one place.

Read afresh on each call (no copy kept at import), so a test or a parent process that sets a
variable before calling in is always heard.
"""

from __future__ import annotations

import os
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path

DATA_ROOT_ENV = "HARNESS_DATA_ROOT"
CACHE_ENV = "HARNESS_CACHE"
DISABLE_AUTOLOAD_ENV = "HARNESS_DISABLE_PLUGIN_AUTOLOAD"
BLOCK_ENV = "HARNESS_BLOCK_PLUGINS"
GROWTH_ENV = "HARNESS_MEMORY_GROWTH_MB"
WORKER_GROWTH_ENV = "HARNESS_WORKER_GROWTH_MB"
WEIGHTS_ENV = "HARNESS_WEIGHTS"
BUDGET_ENV = "HARNESS_BOUNDARY_CACHE_BUDGET"
ARTIFACT_DIR_ENV = "HARNESS_ARTIFACT_DIR"

#: A process whose memory grew by more than this since its first trial is replaced (0: never).
DEFAULT_GROWTH_MB = 2048
#: A training worker whose memory grew by more than this since its first trial hands its place to a
#: fresh one (0: `harness run` trains in its own process, the restart above its only guard).
DEFAULT_WORKER_GROWTH_MB = 100


@dataclass(frozen=True)
class Settings:
    """The harness's environment settings (see the README's "Environment variables")."""

    #: The folder dataset roots are relative to (``--data-root`` overrides it).
    data_root: Path
    #: Where decoded images, features and boundary caches live.
    cache_dir: Path
    #: Load third-party plugins from entry points.
    plugin_autoload: bool
    #: Plugins not to register, built-in or third-party.
    blocked_plugins: frozenset[str]
    #: Memory growth (MB) after which a run continues as a fresh process; 0 turns it off.
    memory_growth_mb: float
    #: Memory growth (MB) after which a training worker is replaced by a fresh one; 0: no workers.
    worker_growth_mb: float
    #: Weights for every candidate (``none``, ``imagenet`` or a file), or None.
    weights: str | None
    #: The boundary cache's budget (a share of free disk such as ``50%``, or a size), or None.
    boundary_cache_budget: str | None
    #: Where fold predictions are kept as Optuna artifacts, whatever the storage (None: beside a
    #: journal or SQLite file, else in the storage itself); see harness.results.prediction_blobs.
    artifact_dir: Path | None = None


def _truthy(value: str | None) -> bool:
    return (value or "").strip().lower() in {"1", "true", "yes", "on"}


def _growth(text: str, default: float = DEFAULT_GROWTH_MB) -> float:
    try:
        return max(0.0, float(text)) if text.strip() else float(default)
    except ValueError:
        return float(default)


def current(environ: Mapping[str, str] | None = None) -> Settings:
    """The settings of ``environ`` (default: this process's environment)."""
    env = os.environ if environ is None else environ
    return Settings(
        data_root=Path(env.get(DATA_ROOT_ENV, ".")),
        cache_dir=Path(env.get(CACHE_ENV) or Path.home() / ".cache" / "harness"),
        plugin_autoload=not _truthy(env.get(DISABLE_AUTOLOAD_ENV)),
        blocked_plugins=frozenset(n.strip() for n in env.get(BLOCK_ENV, "").split(",") if n.strip()),
        memory_growth_mb=_growth(env.get(GROWTH_ENV, "")),
        worker_growth_mb=_growth(env.get(WORKER_GROWTH_ENV, ""), DEFAULT_WORKER_GROWTH_MB),
        weights=env.get(WEIGHTS_ENV) or None,
        boundary_cache_budget=env.get(BUDGET_ENV) or None,
        artifact_dir=Path(env[ARTIFACT_DIR_ENV]).expanduser() if env.get(ARTIFACT_DIR_ENV) else None,
    )
