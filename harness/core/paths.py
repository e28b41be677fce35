"""Where harness looks for data and keeps its caches, unless told otherwise."""

from __future__ import annotations

import os
from pathlib import Path

DATA_ROOT_ENV = "HARNESS_DATA_ROOT"
CACHE_ENV = "HARNESS_CACHE"


def default_data_root() -> Path:
    return Path(os.environ.get(DATA_ROOT_ENV, "."))


def default_cache_dir() -> Path:
    return Path(os.environ.get(CACHE_ENV, Path.home() / ".cache" / "harness"))
