"""From a dataset plugin's sample table to labels, groups, pixels and extra inputs."""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import pandas as pd
from PIL import Image, ImageOps, UnidentifiedImageError

from harness.config import CVConfig, DatasetConfig
from harness.errors import HarnessError
from harness.plugins import Plugins
from harness.specs import DatasetContext, Samples

CORE_COLUMNS = ("id", "label", "group", "split", "path")


@dataclass
class Dataset:
    """A loaded dataset: one row per image, in a fixed order that folds refer to."""

    name: str
    table: pd.DataFrame
    classes: list[str]
    labels: np.ndarray
    samples: Samples
    skipped: list[tuple[str, str]] = field(default_factory=list)
    _pixels: dict[tuple[int, int], np.ndarray] = field(default_factory=dict, repr=False)

    @property
    def groups(self) -> np.ndarray:
        return self.table["group"].to_numpy()

    @property
    def has_groups(self) -> bool:
        return bool((self.table["group"] != self.table["id"]).any())

    def metadata_columns(self) -> list[str]:
        return [c for c in self.table.columns if c not in CORE_COLUMNS]

    def images(self, size: tuple[int, int]) -> np.ndarray:
        """All images as uint8 (n, height, width, 3), decoded once per size."""
        size = tuple(size)
        if size not in self._pixels:
            if self.samples.pixels is not None:
                pixels = np.asarray(self.samples.pixels(self.table, size))
            else:
                pixels = np.stack([decode_image(Path(p), size) for p in self.table["path"]])
            expected = (len(self.table), size[0], size[1], 3)
            if pixels.shape != expected or pixels.dtype != np.uint8:
                raise HarnessError(
                    f"dataset '{self.name}' gave pixels of shape {pixels.shape} and type {pixels.dtype}; "
                    f"expected uint8 {expected}."
                )
            self._pixels[size] = pixels
        return self._pixels[size]

    def one_hot(self, column: str) -> np.ndarray:
        """A metadata column as float32 one-hot vectors (categories in sorted order)."""
        if column not in self.table.columns:
            raise HarnessError(
                f"a model needs the input '{column}', but dataset '{self.name}' has no '{column}' column "
                f"(it has: {', '.join(self.metadata_columns()) or 'no metadata'})."
            )
        values = self.table[column].astype(str)
        categories = sorted(values.unique())
        codes = pd.Categorical(values, categories=categories).codes
        return np.eye(len(categories), dtype="float32")[codes]


def decode_image(path: Path, size: tuple[int, int]) -> np.ndarray:
    """Decode one image file to uint8 RGB, EXIF-oriented and resized to (height, width)."""
    with Image.open(path) as image:
        image = ImageOps.exif_transpose(image).convert("RGB")
        image = image.resize((size[1], size[0]), Image.Resampling.BILINEAR)
        return np.asarray(image, dtype=np.uint8)


def _readable(path: str) -> str | None:
    try:
        with Image.open(path) as image:
            image.verify()
        return None
    except (OSError, UnidentifiedImageError, SyntaxError, ValueError) as exc:
        return f"{type(exc).__name__}: {exc}"


def load_dataset(config: DatasetConfig, plugins: Plugins, context: DatasetContext) -> Dataset:
    """Run the dataset plugin and check its sample table."""
    spec = plugins.datasets.get(config.name)
    samples = spec.load(dict(config.params), context)
    where = f"dataset '{config.name}' (plugin '{plugins.datasets.owner(config.name)}')"
    if not isinstance(samples, Samples) or not isinstance(samples.table, pd.DataFrame):
        raise HarnessError(f"{where} returned {type(samples).__name__}; expected harness.Samples with a DataFrame.")
    table = samples.table.reset_index(drop=True).copy()
    if "label" not in table.columns:
        raise HarnessError(f"{where}: the sample table has no 'label' column.")
    if samples.pixels is None and "path" not in table.columns:
        raise HarnessError(f"{where}: the sample table has no 'path' column and the dataset gives no pixels.")
    if table.empty:
        raise HarnessError(f"{where}: no images found. Check the dataset's root and --data-root.")
    skipped: list[tuple[str, str]] = []
    if samples.pixels is None:
        table["path"] = table["path"].astype(str)
        reasons = table["path"].map(_readable)
        skipped = [(p, r) for p, r in zip(table["path"], reasons) if r is not None]
        table = table[reasons.isna()].reset_index(drop=True)
    if "id" not in table.columns:
        table["id"] = table["path"] if "path" in table.columns else [f"{i:06d}" for i in range(len(table))]
    table["id"] = table["id"].astype(str)
    if table["id"].duplicated().any():
        dup = table.loc[table["id"].duplicated(), "id"].iloc[0]
        raise HarnessError(f"{where}: sample id '{dup}' appears twice; ids must be unique.")
    table["label"] = table["label"].astype(str)
    table["group"] = table["group"].astype(str) if "group" in table.columns else table["id"]
    classes = sorted(table["label"].unique())
    if len(classes) < 2:
        raise HarnessError(f"{where}: found {len(classes)} class(es); a classifier needs at least 2.")
    labels = pd.Categorical(table["label"], categories=classes).codes.astype("int64")
    return Dataset(config.name, table, classes, labels, samples, skipped)


def apply_small_class_policy(dataset: Dataset, cv: CVConfig) -> tuple[Dataset, list[str]]:
    """Classes with fewer images (or groups) than folds: an error with advice, or dropped with a warning."""
    unit = "groups" if cv.grouped and dataset.has_groups else "images"
    counts = dataset.table.groupby("label")["group" if unit == "groups" else "id"].nunique()
    small = counts[counts < cv.folds]
    if small.empty:
        return dataset, []
    listing = ", ".join(f"'{name}' ({n} {unit})" for name, n in small.items())
    if cv.small_classes == "error":
        raise HarnessError(
            f"dataset '{dataset.name}': {len(small)} class(es) have fewer {unit} than cv.folds = {cv.folds}: "
            f"{listing}. Every class needs at least one per fold: lower cv.folds, add images, or set "
            f'cv.small_classes = "drop" to leave these classes out.'
        )
    keep = ~dataset.table["label"].isin(small.index)
    table = dataset.table[keep].reset_index(drop=True)
    if table["label"].nunique() < 2:
        raise HarnessError(f"dataset '{dataset.name}': dropping small classes ({listing}) leaves fewer than 2 classes.")
    classes = sorted(table["label"].unique())
    labels = pd.Categorical(table["label"], categories=classes).codes.astype("int64")
    kept = Dataset(dataset.name, table, classes, labels, dataset.samples, dataset.skipped)
    return kept, [f"dropped {len(small)} class(es) with fewer {unit} than {cv.folds} folds: {listing}"]

