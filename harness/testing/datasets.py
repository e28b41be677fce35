"""The dataset contract: checks a dataset plugin's ``DatasetSpec`` and the ``Samples`` it loads pass.

Parameters have typed defaults (or ``REQUIRED``); ``load`` returns a ``Samples`` whose table has a
``label`` for every row, and either a ``path`` per row that exists or a ``pixels`` function that
gives uint8 images of shape (n, height, width, 3) at the size asked.
"""

from __future__ import annotations

from collections.abc import Mapping
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from harness.specs import REQUIRED, DatasetContext, DatasetSpec, Samples

#: The types a parameter's default may have: what a study file (TOML) can hold.
PARAM_TYPES = (str, int, float, bool, list, dict)
#: The image size ``pixels`` is asked for: small, and not square, so swapped sides show.
PIXELS_SIZE = (6, 8)


def check_spec(spec: DatasetSpec) -> None:
    """A name, a ``load`` callable and parameters whose defaults are ``REQUIRED`` or of a study-file type."""
    assert isinstance(spec.name, str) and spec.name, f"a dataset needs a name: {spec!r}"
    assert callable(spec.load), f"dataset '{spec.name}': load is not callable"
    assert isinstance(spec.params, Mapping), f"dataset '{spec.name}': params must be a mapping"
    for key, default in spec.params.items():
        assert isinstance(key, str) and key, f"dataset '{spec.name}': parameter name {key!r} is not a string"
        assert default is REQUIRED or isinstance(default, PARAM_TYPES), (
            f"dataset '{spec.name}': the default of '{key}' is a {type(default).__name__}; a study file can "
            f"only give {', '.join(t.__name__ for t in PARAM_TYPES)} (or mark it harness.REQUIRED)")


def default_params(spec: DatasetSpec, **params: Any) -> dict[str, Any]:
    """The defaults, overridden by ``params``; every ``REQUIRED`` parameter must be given."""
    merged = {k: v for k, v in spec.params.items() if v is not REQUIRED} | params
    missing = [k for k, v in spec.params.items() if v is REQUIRED and k not in merged]
    assert not missing, f"dataset '{spec.name}' needs {missing}: pass them to the check"
    return merged


def check_samples(samples: Samples, image_size: tuple[int, int] = PIXELS_SIZE, rows: int = 4) -> None:
    """A non-empty table with a label per row; paths that exist, or ``pixels`` giving uint8 (n, h, w, 3)."""
    assert isinstance(samples, Samples), f"load must return harness.Samples, got {type(samples).__name__}"
    table = samples.table
    assert isinstance(table, pd.DataFrame) and len(table), "the sample table is empty"
    assert "label" in table.columns, f"the sample table has no 'label' column: {list(table.columns)}"
    assert table["label"].notna().all(), "some rows have no label"
    if "group" in table.columns:
        assert table["group"].notna().all(), "some rows have no group"
    if "path" in table.columns:
        missing = [p for p in table["path"] if not Path(p).exists()]
        assert not missing, f"{len(missing)} paths do not exist, e.g. {missing[:3]}"
        return
    assert samples.pixels is not None, "the table has no 'path' column and Samples has no pixels function"
    head = table.head(rows)
    images = samples.pixels(head, image_size)
    assert isinstance(images, np.ndarray) and images.dtype == np.uint8, "pixels must return a uint8 array"
    assert images.shape == (len(head), *image_size, 3), (
        f"pixels gave shape {images.shape} for {len(head)} rows at {image_size}; expected {(len(head), *image_size, 3)}")


def check_dataset(spec: DatasetSpec, data_root: Path, cache_dir: Path, **params: Any) -> Samples:
    """The spec, then ``load`` with its defaults (overridden by ``params``) and the samples it gives."""
    check_spec(spec)
    samples = spec.load(default_params(spec, **params), DatasetContext(Path(data_root), Path(cache_dir), seed=0))
    check_samples(samples)
    return samples
