"""Where harness looks for data and keeps its caches, unless told otherwise."""

from __future__ import annotations

from pathlib import Path

from harness.core import settings
from harness.core.settings import CACHE_ENV, DATA_ROOT_ENV

__all__ = ["CACHE_ENV", "DATA_ROOT_ENV", "default_cache_dir", "default_data_root"]


def default_data_root() -> Path:
    """The folder dataset roots are relative to: $HARNESS_DATA_ROOT, else the working directory."""
    return settings.current().data_root


def default_cache_dir() -> Path:
    """Where decoded images and features are cached: $HARNESS_CACHE, else ~/.cache/harness."""
    return settings.current().cache_dir
