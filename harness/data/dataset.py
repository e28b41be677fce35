"""From a dataset plugin's sample table to labels, groups, pixels and extra inputs."""

from __future__ import annotations

from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from harness.data import images
from harness.data.image_store import ImageStore
from harness.data.leakage import find_leakage
from harness.config.study import CVConfig, DatasetConfig
from harness.errors import HarnessError
from harness.core.paths import default_cache_dir
from harness.plugins import Plugins
from harness.specs import DatasetContext, Samples

#: Columns the core fills or reads; the rest are metadata (extra model inputs). ``hash`` is the
#: file's content hash, ``pixel_hash`` one of its pixels in any orientation (``pixel_orientation``
#: the turn it took), ``phash`` its perceptual hash and ``oriented_phashes`` that in each orientation
#: (see harness.data.probes.Probe).
HASH_COLUMNS = ("hash", "pixel_hash", "pixel_orientation", "phash", "oriented_phashes")
CORE_COLUMNS = ("id", "label", "group", "split", "path", *HASH_COLUMNS)


@dataclass
class Dataset:
    """A loaded dataset: one row per image, in a fixed order that folds refer to."""

    name: str
    table: pd.DataFrame
    classes: list[str]
    labels: np.ndarray
    samples: Samples
    skipped: list[tuple[str, str]] = field(default_factory=list)
    #: The decode-once cache (datasets of files), the resize policy, and what ties images together.
    store: ImageStore | None = field(default=None, repr=False)
    resize: str = "stretch"
    leakage: Any = field(default=None, repr=False)
    notes: list[str] = field(default_factory=list)
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
        """All images as uint8 (n, height, width, 3), decoded once per size: for a dataset of
        files the read-only memory map of the image cache's stacked file (gather rows with
        ``harness.data.stacked.read_rows``), never the whole array in memory; else the plugin's array."""
        size = tuple(size)
        if size not in self._pixels:
            if self.samples.pixels is not None:
                pixels = np.asarray(self.samples.pixels(self.table, size))
            else:
                store = self.store or ImageStore(images_cache_dir())
                pixels = store.pixels(self.table["path"].tolist(), self.table["hash"].tolist(), size, self.resize)
            expected = (len(self.table), size[0], size[1], 3)
            if pixels.shape != expected or pixels.dtype != np.uint8:
                raise HarnessError(
                    f"dataset '{self.name}' gave pixels of shape {pixels.shape} and type {pixels.dtype}; "
                    f"expected uint8 {expected}."
                )
            self._pixels[size] = pixels
        return self._pixels[size]

    def thumbnails(self, rows: list[int], size: tuple[int, int] = (112, 112)) -> np.ndarray:
        """A few rows' images as uint8 (len(rows), height, width, 3), decoded now (not cached)."""
        table = self.table.iloc[list(rows)]
        if self.samples.pixels is not None:
            return np.asarray(self.samples.pixels(table, tuple(size)))
        return np.stack([images.decode_file(path, tuple(size), self.resize) for path in table["path"]])

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


def images_cache_dir() -> Path:
    return default_cache_dir()


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
    store = None
    if samples.pixels is None:
        store = ImageStore(context.cache_dir)
        table["path"] = table["path"].astype(str)
        probes = store.probe(table["path"].tolist(), config.image_size, config.resize)
        skipped = [(p, probe.reason) for p, probe in zip(table["path"], probes) if not probe.ok]
        if skipped and config.strict:
            listing = "; ".join(f"{p} ({why})" for p, why in skipped[:10]) + (" …" if len(skipped) > 10 else "")
            raise HarnessError(
                f"{where}: {len(skipped)} unreadable file(s): {listing}. Fix or remove them, or set "
                "dataset.strict = false to skip them with a warning."
            )
        for column in HASH_COLUMNS:
            table[column] = [getattr(probe, column) for probe in probes]
        table = table[[probe.ok for probe in probes]].reset_index(drop=True)
        if table.empty:
            raise HarnessError(f"{where}: none of the {len(skipped)} files is a readable image (e.g. {skipped[0][0]}: {skipped[0][1]}).")
    if "id" not in table.columns:
        table["id"] = table["path"] if "path" in table.columns else [f"{i:06d}" for i in range(len(table))]
    table["id"] = table["id"].astype(str)
    if table["id"].duplicated().any():
        dup = table.loc[table["id"].duplicated(), "id"].iloc[0]
        raise HarnessError(f"{where}: sample id '{dup}' appears twice; ids must be unique.")
    table["label"] = table["label"].astype(str)
    table["group"] = table["group"].astype(str) if "group" in table.columns else table["id"]
    leakage = find_leakage(table, config.near_duplicates)
    table["group"] = leakage.groups
    classes = sorted(table["label"].unique())
    if len(classes) < 2:
        raise HarnessError(f"{where}: found {len(classes)} class(es); a classifier needs at least 2.")
    labels = pd.Categorical(table["label"], categories=classes).codes.astype("int64")
    notes = leakage.notes(dict(zip(table["id"], table["label"])))
    return Dataset(config.name, table, classes, labels, samples, skipped, store, config.resize, leakage, notes)


def apply_small_class_policy(dataset: Dataset, cv: CVConfig) -> tuple[Dataset, list[str]]:
    """Classes with fewer images (or groups) than folds: an error with advice, or dropped with a warning."""
    unit = "groups" if cv.grouped and dataset.has_groups else "images"
    counts = dataset.table.groupby("label")["group" if unit == "groups" else "id"].nunique()
    small = counts[counts < cv.folds]
    if small.empty:
        return dataset, list(dataset.notes)
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
    kept = replace(dataset, table=table, classes=classes, labels=labels, _pixels={})
    return kept, [*dataset.notes, f"dropped {len(small)} class(es) with fewer {unit} than {cv.folds} folds: {listing}"]

